"""The synthetic confounder library: contracts, strength behaviour, placement, seeding and option errors."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medaudit.confounders.artifacts import apply_artifact, artifacts, list_artifacts
from medaudit.errors import ConfigError
from medaudit.shift.corrupt import OpContext

NAMES = ("tag", "patch", "border", "ruler", "lowpass", "dose_noise", "stamp")
MARKS = ("tag", "patch", "border", "ruler", "stamp")
SIZES = (28, 64, 224)
DISC = (np.hypot(*np.mgrid[-8:8, -8:8] + 0.5) < 7).astype(np.float32)
"""A 16 x 16 disc mask for the stamp."""


def options(name: str) -> dict:
    return {"image": DISC} if name == "stamp" else {}


def images(
    size: int, channels: int = 1, n: int = 3, seed: int = 0, low: int = 0, high: int = 256
) -> np.ndarray:
    """Random NCHW uint8 images: texture everywhere, so every artifact changes something."""
    return np.random.default_rng(seed).integers(low, high, (n, channels, size, size), dtype=np.uint8)


def change(name: str, x: np.ndarray, strength: float, **extra) -> float:
    """Mean absolute difference from the clean images, in grey levels."""
    out = apply_artifact(x, name, strength, **options(name), **extra)
    return float(np.abs(out.astype(np.float64) - x).mean())


def test_list_artifacts_names_every_artifact_with_a_description() -> None:
    listed = dict(list_artifacts())
    assert set(listed) == set(NAMES)
    assert all(isinstance(text, str) and text and "\n" not in text for text in listed.values())


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("strength", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_range_kept_and_input_untouched(
    name: str, strength: float, size: int, channels: int
) -> None:
    x = images(size, channels, n=2)
    before = x.copy()
    out = apply_artifact(x, name, strength, **options(name))
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == x.shape
    np.testing.assert_array_equal(x, before)

    t = torch.from_numpy(x).float() / 255
    t_before = t.clone()
    out_t = apply_artifact(t, name, strength, **options(name))
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32 and out_t.shape == t.shape
    assert out_t.min() >= 0 and out_t.max() <= 1
    assert torch.equal(t, t_before)
    # the float path is the uint8 path on the quantised image
    np.testing.assert_array_equal(np.rint(out_t.numpy() * 255).astype(np.uint8), out)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", NAMES)
def test_strength_zero_is_the_identity(name: str, size: int) -> None:
    x = images(size, 3)
    np.testing.assert_array_equal(apply_artifact(x, name, 0.0, **options(name)), x)
    # the artifact function itself, not only the public shortcut
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    ctx = OpContext(rngs=[np.random.default_rng(i) for i in range(len(x))], scale=1.0)
    np.testing.assert_array_equal(artifacts.get(name).fn(nhwc, 0.0, ctx, **options(name)), nhwc)


@pytest.mark.parametrize("size", [28, 224])
@pytest.mark.parametrize("name", NAMES)
def test_change_grows_with_strength(name: str, size: int) -> None:
    x = images(size, 1, low=40, high=216)
    changes = [change(name, x, s) for s in (0.0, 0.25, 0.5, 1.0)]
    assert changes[0] == 0
    assert all(b >= a for a, b in itertools.pairwise(changes)), changes
    assert changes[-1] > changes[1] > 0, changes


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_reproduces_and_batch_composition_does_not_matter(name: str) -> None:
    x = images(32, 3, n=5)
    first = apply_artifact(x, name, 0.7, seed=3, **options(name))
    np.testing.assert_array_equal(apply_artifact(x, name, 0.7, seed=3, **options(name)), first)
    alone = apply_artifact(x[3:4], name, 0.7, seed=3, indices=[3], **options(name))
    np.testing.assert_array_equal(alone[0], first[3])
    reordered = apply_artifact(x[::-1], name, 0.7, seed=3, indices=[4, 3, 2, 1, 0], **options(name))
    np.testing.assert_array_equal(reordered[::-1], first)


def test_dose_noise_depends_on_seed_index_and_strength() -> None:
    x = np.full((2, 1, 32, 32), 128, dtype=np.uint8)
    a = apply_artifact(x, "dose_noise", 1.0, seed=0)
    assert not np.array_equal(a, apply_artifact(x, "dose_noise", 1.0, seed=1))
    assert not np.array_equal(a[0], a[1])  # two identical images, two indices, two noise draws


QUADRANTS = {
    "top-left": (slice(0, 0.5), slice(0, 0.5)),
    "top-right": (slice(0, 0.5), slice(0.5, 1)),
    "bottom-left": (slice(0.5, 1), slice(0, 0.5)),
    "bottom-right": (slice(0.5, 1), slice(0.5, 1)),
    "centre": (slice(0.25, 0.75), slice(0.25, 0.75)),
}


@pytest.mark.parametrize("size", [28, 224])
@pytest.mark.parametrize("corner", list(QUADRANTS))
@pytest.mark.parametrize("name", ["tag", "patch", "stamp"])
def test_marks_land_in_the_requested_corner(name: str, corner: str, size: int) -> None:
    x = np.zeros((1, 1, size, size), dtype=np.uint8)
    diff = apply_artifact(x, name, 1.0, corner=corner, **options(name))[0, 0].astype(np.float64)
    rows, cols = (slice(round(s.start * size), round(s.stop * size)) for s in QUADRANTS[corner])
    assert diff.sum() > 0
    assert diff[rows, cols].sum() > 0.9 * diff.sum()


def test_centre_is_accepted_as_center() -> None:
    x = images(64)
    np.testing.assert_array_equal(
        apply_artifact(x, "patch", 1.0, corner="center"), apply_artifact(x, "patch", 1.0, corner="centre")
    )


@pytest.mark.parametrize("edge", ["bottom", "top", "left", "right"])
def test_ruler_lies_along_its_edge(edge: str) -> None:
    x = np.zeros((1, 1, 64, 64), dtype=np.uint8)
    diff = apply_artifact(x, "ruler", 1.0, edge=edge)[0, 0].astype(np.float64)
    band = {"bottom": diff[48:], "top": diff[:16], "left": diff[:, :16], "right": diff[:, 48:]}[edge]
    assert band.sum() > 0.95 * diff.sum() > 0


@pytest.mark.parametrize("strength", [0.5, 1.0])
@pytest.mark.parametrize("name", MARKS)
def test_relative_size_is_the_same_at_28_and_224_px(name: str, strength: float) -> None:
    """Ink (changed area, partial pixels counted by coverage) as a fraction of the image."""
    ink = {}
    for size in (28, 224):
        x = np.zeros((1, 1, size, size), dtype=np.uint8)
        value = {"border": {"value": 1.0}}.get(name, {})
        ink[size] = apply_artifact(x, name, strength, **options(name), **value).mean() / 255
    assert ink[224] > 0
    assert 0.5 < ink[28] / ink[224] < 2, ink


def test_tag_strength_one_is_larger_than_the_papers_setting() -> None:
    x = np.zeros((1, 1, 224, 224), dtype=np.uint8)
    paper = apply_artifact(x, "tag", 0.5)[0, 0]
    strongest = apply_artifact(x, "tag", 1.0)[0, 0]
    assert paper.max() >= 240  # opaque white at the paper's setting (strokes ~1 px wide at 224 px)
    height = lambda img: np.ptp(np.nonzero(img > 127)[0]) + 1  # noqa: E731
    assert 2 < height(strongest) / height(paper) < 3  # em 0.06 -> 0.15 of the width


def high_frequency_energy(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(x.astype(np.float64), axes=(-2, -1)), axes=(-2, -1))) ** 2
    size = x.shape[-1]
    k = np.arange(size) - size // 2
    outer = np.hypot(k[:, None], k[None, :]) > 0.3 * size
    return float(spectrum[..., outer].sum())


@pytest.mark.parametrize("size", [28, 224])
def test_lowpass_removes_high_frequencies_and_keeps_the_mean(size: int) -> None:
    x = images(size, 3, low=40, high=216)
    energies = [high_frequency_energy(apply_artifact(x, "lowpass", s)) for s in (0.0, 0.5, 1.0)]
    assert energies[0] > energies[1] > energies[2]
    assert energies[2] < 0.05 * energies[0]  # the paper's 0.49 diameter leaves little beyond 0.3
    out = apply_artifact(x, "lowpass", 1.0)
    assert abs(out.astype(np.float64).mean() - x.mean()) < 1.0


def test_lowpass_diameter_option_sets_the_cut_off() -> None:
    x = images(64)
    wide = high_frequency_energy(apply_artifact(x, "lowpass", 1.0, diameter=0.9))
    narrow = high_frequency_energy(apply_artifact(x, "lowpass", 1.0, diameter=0.2))
    assert narrow < wide


def test_dose_noise_variance_grows_with_strength_and_keeps_the_mean() -> None:
    x = images(64, 1, n=4, low=64, high=192)
    variances = []
    for s in (0.25, 0.5, 1.0):
        out = apply_artifact(x, "dose_noise", s).astype(np.float64)
        assert abs(out.mean() - x.mean()) < 1.5
        variances.append((out - x).var())
    assert 0 < variances[0] < variances[1] < variances[2]
    # Poisson: the added variance is x (1/N0 - 1/N) in [0,1] units -> 3 x / 400 at strength 1
    expected = (x / 255 * 3 / 400).mean() * 255**2
    assert 0.8 < variances[2] / expected < 1.25
    black = np.zeros_like(x)
    np.testing.assert_array_equal(apply_artifact(black, "dose_noise", 1.0), black)  # no light, no noise


def test_stamp_places_the_given_mask() -> None:
    x = np.full((1, 1, 64, 64), 50, dtype=np.uint8)
    square = np.ones((8, 8), dtype=np.float32)
    out = apply_artifact(x, "stamp", 1.0, image=square, size=0.25, corner="bottom-right", margin=0.0)[0, 0]
    expected = np.full((64, 64), 50, dtype=np.uint8)
    expected[48:, 48:] = 255
    np.testing.assert_array_equal(out, expected)
    half = apply_artifact(x, "stamp", 0.5, image=square, size=0.25, corner="bottom-right", margin=0.0)[0, 0]
    assert half[60, 60] == round(50 + 0.5 * 205) and half[10, 10] == 50


def test_stamp_reads_a_png_using_its_alpha_channel(tmp_path: Path) -> None:
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[4:12, 4:12] = (10, 20, 30, 255)  # colour is ignored: the alpha channel is the mask
    path = tmp_path / "stamp.png"
    Image.fromarray(rgba).save(path)
    x = np.zeros((1, 1, 64, 64), dtype=np.uint8)
    out = apply_artifact(x, "stamp", 1.0, image=str(path), size=0.25, margin=0.0)[0, 0]
    assert out[4:12, 4:12].min() == 255 and out.sum() == 64 * 255


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x: apply_artifact(x, "tagg", 0.5), "Did you mean tag"),
        (lambda x: apply_artifact(x, "tag", 0.5, corner="upper-left"), "unknown corner 'upper-left'"),
        (lambda x: apply_artifact(x, "ruler", 0.5, edge="middle"), "unknown edge"),
        (lambda x: apply_artifact(x, "patch", 1.5), "strength must be a number in [0, 1]"),
        (lambda x: apply_artifact(x, "patch", -0.1), "strength must be a number in [0, 1]"),
        (lambda x: apply_artifact(x, "stamp", 0.5), "stamp needs image="),
        (lambda x: apply_artifact(x, "stamp", 0.0), "stamp needs image="),
        (lambda x: apply_artifact(x, "stamp", 0.5, image=np.full((4, 4), 2.0)), "values must lie in [0, 1]"),
        (lambda x: apply_artifact(x, "stamp", 0.5, image="/nonexistent/stamp.png"), "cannot read stamp"),
        (lambda x: apply_artifact(x, "patch", 0.5, colour=1.0), "has no option colour"),
        (lambda x: apply_artifact(x, "patch", 0.5, size=0.0), "size must be a number"),
        (lambda x: apply_artifact(x, "patch", 0.5, margin=0.7), "margin must be a number"),
        (lambda x: apply_artifact(x, "patch", 0.5, value=2), "value must be a grey level"),
        (lambda x: apply_artifact(x, "dose_noise", 0.5, photons=0), "photons must be"),
        (lambda x: apply_artifact(x, "tag", 0.5, text=""), "text must be"),
        (lambda x: apply_artifact(x[:, :, :, :20], "tag", 0.5), "square images"),
        (lambda x: apply_artifact(x[:, 0], "tag", 0.5), "NCHW"),
        (lambda x: apply_artifact(x, "tag", 0.5, indices=[0]), "indices for"),
    ],
)
def test_bad_options_raise_config_error(call, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        call(images(32, n=2))
    assert message in str(info.value)
    assert "\n" not in str(info.value)
