"""Parity of ``medaudit.shift.corrupt(mode="medmnistc")`` with the reference ``medmnistc`` 0.1.0.

Not part of the normal test run (pytest collects only ``tests/``); run it by hand
with the package installed, see ``benchmarks/README.md``. Skipped when
``medmnistc`` or its image libraries are missing.

The reference is run exactly as ``medmnistc.dataset_manager.DatasetManager``
does: array -> PIL image -> ``convert('RGB')`` -> ``corruptor.apply(img,
severity - 1)`` -> ``convert('L')`` for grey datasets. Its parameter tables come
from its own ``registry.py``, so the transcription in ``medaudit.shift.catalogue``
is checked too. ``registry.py`` imports Wand (ImageMagick) for motion blur only;
without ImageMagick, stub modules stand in for the import and motion blur is
not compared.

- deterministic corruptions, 224 / 64 / 28 px, every dataset (datasets with
  identical parameters once) and severity: bit-exact for pixelate, JPEG,
  brightness, contrast, gamma and black_corner; at most 1 grey level and at
  most 1 % of values off for the float pipelines (gaussian/defocus/zoom blur,
  saturate);
- noise (random, so no pixel equality): mean and std of (corrupted - clean) and
  the fraction of changed values, paired per image, agree within 4 standard
  errors, with batches large enough that a bias of more than ~6 % fails.

With ``-s`` the measured differences per corruption, dataset, size and severity
are printed at the end.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

pytest.importorskip("cv2")
pytest.importorskip("skimage")
pytest.importorskip("torchvision")
pytest.importorskip("scipy")
for _module in ("enhance", "compression", "noise", "microscopy"):
    pytest.importorskip(f"medmnistc.corruptions.{_module}")

from medmnistc_stubs import wand_stubs  # noqa: E402
from PIL import Image  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402

from medaudit.shift.catalogue import PARAMS  # noqa: E402
from medaudit.shift.corrupt import corrupt  # noqa: E402

with wand_stubs():
    registry = importlib.import_module("medmnistc.corruptions.registry")

REFERENCE = registry.CORRUPTIONS_DS
IS_RGB = registry.DATASET_RGB
SEVERITIES = (1, 2, 3, 4, 5)

EXACT = (
    "pixelate",
    "jpeg_compression",
    "brightness_up",
    "brightness_down",
    "contrast_up",
    "contrast_down",
    "gamma_corr_up",
    "gamma_corr_down",
    "black_corner",
    "gaussian_blur",
    "defocus_blur",
    "saturate",
)
FLOAT = ("zoom_blur",)
NOISE = ("gaussian_noise", "speckle_noise", "impulse_noise", "shot_noise")
SIZES = (224, 64, 28)
FLOAT_MAX_FRACTION = 0.01
"""At most this fraction of values may be off by one grey level in the float pipelines."""

RESULTS: list[str] = []
"""One line per (corruption, dataset, size, severity) comparison, printed at the end."""


def _groups(names: tuple[str, ...]) -> list:
    """One case per distinct (corruption, parameters, RGB or grey); ids name every dataset in it.

    Datasets with the same table entry (organ a/c/s, chest and pneumonia for
    some corruptions) would repeat the same comparison; the first stands for all.
    """
    groups: dict[tuple, list[str]] = {}
    for corruption in names:
        for dataset, table in REFERENCE.items():
            if corruption in table:
                key = (corruption, repr(list(table[corruption].severity_params[:5])), IS_RGB[dataset])
                groups.setdefault(key, []).append(dataset)
    return [
        pytest.param(corruption, datasets[0], id=f"{corruption}-{'+'.join(datasets)}")
        for (corruption, _, _), datasets in groups.items()
    ]


def synthetic_images(n: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
    """uint8 (n, size, size, channels): smooth random fields, gradients, texture, flat blocks.

    Covers smooth content (the blurs' typical input), saturated regions (0 and
    255, for clipping), fine texture and sharp edges on flat regions, and for
    RGB some grey pixels (zero saturation).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    out = np.empty((n, size, size, channels), dtype=np.uint8)
    for i in range(n):
        kind = i % 4
        if kind == 0:  # smooth random field, full range
            field = gaussian_filter(rng.normal(size=(size, size, channels)), (size / 12, size / 12, 0))
            field = (field - field.min()) / (np.ptp(field) + 1e-12)
            image = 20 + 215 * field
        elif kind == 1:  # linear and radial gradients, a different mix per channel
            angle = rng.uniform(0, 2 * np.pi, channels)
            radial = np.hypot(xx - 0.5, yy - 0.5)[..., None]
            linear = np.cos(angle) * xx[..., None] + np.sin(angle) * yy[..., None]
            image = 128 + 90 * linear + rng.uniform(-150, 150, channels) * radial
        elif kind == 2:  # smooth field plus fine texture, stretched beyond range (clipped)
            coarse = gaussian_filter(rng.normal(size=(size, size, channels)), (size / 16, size / 16, 0))
            fine = gaussian_filter(rng.normal(size=(size, size, channels)), (1, 1, 0))
            image = 128 + 600 * coarse + 60 * fine
        else:  # flat blocks with sharp edges over a gradient; grey blocks in RGB
            blocks = rng.integers(0, 256, (4, 4, channels)).astype(np.float64)
            if channels == 3:
                blocks[::2, ::2] = blocks[::2, ::2, :1]
            index = np.minimum((np.mgrid[0:size, 0:size] * 4) // size, 3)
            image = blocks[index[0], index[1]] + 30 * (xx - 0.5)[..., None]
        out[i] = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return out


def reference(corruption: str, dataset: str, images: np.ndarray, severity: int) -> np.ndarray:
    """``DatasetManager``'s per-image pipeline; images uint8 NHW (grey) or NHWC (RGB)."""
    corruptor = REFERENCE[dataset][corruption]
    out = []
    for image in images:
        corrupted = corruptor.apply(Image.fromarray(image).convert("RGB"), severity - 1)
        if not IS_RGB[dataset]:
            corrupted = Image.fromarray(corrupted).convert("L")
        out.append(np.asarray(corrupted))
    return np.stack(out)


def ours(corruption: str, dataset: str, images: np.ndarray, severity: int) -> np.ndarray:
    """``corrupt`` on the same images, returned in the reference's layout."""
    nchw = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    out = corrupt(np.ascontiguousarray(nchw), corruption, severity, seed=0, dataset=dataset, mode="medmnistc")
    return out[:, 0] if images.ndim == 3 else out.transpose(0, 2, 3, 1)


def inputs(dataset: str, n: int, size: int, seed: int = 0) -> np.ndarray:
    images = synthetic_images(n, size, 3 if IS_RGB[dataset] else 1, seed)
    return images if IS_RGB[dataset] else images[..., 0]


def test_parameter_tables_match_reference_registry():
    """``catalogue.PARAMS`` holds the registry's corruptions and first five parameters."""
    assert set(PARAMS) == set(REFERENCE)
    for dataset, table in REFERENCE.items():
        assert set(PARAMS[dataset]) == set(table), dataset
        for name, corruptor in table.items():
            expected = list(corruptor.severity_params[:5])
            if name == "zoom_blur":
                ours_ = [np.arange(*spec) for spec in PARAMS[dataset][name]]
                assert all(np.array_equal(a, b) for a, b in zip(ours_, expected, strict=True)), name
            elif name == "stain_deposit":  # ours: (max marks, ink size); the ink set is keyed by severity
                inks = [corruptor.inks[str(max(3, index))] for index in range(5)]
                assert [(m, ink[0].shape[0]) for m, ink in zip(expected, inks, strict=True)] == list(
                    PARAMS[dataset][name]
                ), (dataset, name)
            else:
                assert list(PARAMS[dataset][name]) == expected, (dataset, name)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(("corruption", "dataset"), _groups(EXACT + FLOAT))
def test_deterministic_corruption_matches(corruption: str, dataset: str, size: int):
    """Same pixels (exact group) or at most one grey level on a tiny fraction (float group)."""
    n = 8 if size == 224 else 16
    images = inputs(dataset, n, size)
    failures = []
    for severity in SEVERITIES:
        expected = reference(corruption, dataset, images, severity)
        got = ours(corruption, dataset, images, severity)
        assert got.shape == expected.shape and got.dtype == expected.dtype == np.uint8
        diff = np.abs(got.astype(np.int16) - expected.astype(np.int16))
        max_diff, fraction = int(diff.max()), float((diff > 0).mean())
        line = f"{corruption:16s} {dataset:14s} {size:3d}px sev {severity}: max diff {max_diff}, {fraction:.4%} differ"
        RESULTS.append(line)
        tolerated = (0, 0.0) if corruption in EXACT else (1, FLOAT_MAX_FRACTION)
        if max_diff > tolerated[0] or fraction > tolerated[1]:
            failures.append(line)
    assert not failures, "\n".join(failures)


def _per_image_stats(clean: np.ndarray, corrupted: np.ndarray) -> np.ndarray:
    """(n, 3): mean and std of (corrupted - clean) and the fraction of changed values, per image."""
    delta = (corrupted.astype(np.float64) - clean.astype(np.float64)).reshape(len(clean), -1)
    return np.stack([delta.mean(axis=1), delta.std(axis=1), (delta != 0).mean(axis=1)], axis=1)


NOISE_BATCH = {224: 16, 28: 256}
"""Images per comparison: enough that 4 standard errors stay below NOISE_POWER of each statistic
(impulse noise changes few values, so at 28 px it needs 4x more)."""
NOISE_POWER = 0.06


@pytest.mark.parametrize("size", sorted(NOISE_BATCH, reverse=True))
@pytest.mark.parametrize(("corruption", "dataset"), _groups(NOISE))
def test_noise_distribution_matches(corruption: str, dataset: str, size: int):
    """Same distribution of (corrupted - clean): mean, std and changed fraction.

    Both sides corrupt the same images, so the per-image statistics are compared
    pairwise: the mean paired difference must be within 4 standard errors of 0
    (plus a small slack), and the batch must be large enough that 4 standard
    errors are below 6 % of the statistic (of the std for the mean), so a bias
    of more than a few percent cannot pass.
    """
    n = NOISE_BATCH[size] * (4 if corruption == "impulse_noise" and size < 224 else 1)
    images = inputs(dataset, n, size, seed=1)
    np.random.seed(0)  # the global generator medmnistc's noise draws from
    if corruption == "impulse_noise":
        REFERENCE[dataset][corruption].rng = np.random.default_rng(0)  # as DatasetManager does
    failures = []
    for severity in SEVERITIES:
        ref = _per_image_stats(images, reference(corruption, dataset, images, severity))
        got = _per_image_stats(images, ours(corruption, dataset, images, severity))
        paired = got - ref
        bias = paired.mean(axis=0)
        se = paired.std(axis=0, ddof=1) / np.sqrt(len(paired))
        (mean, std, changed), (ref_mean, ref_std, ref_changed) = got.mean(axis=0), ref.mean(axis=0)
        scale = np.array([ref_std, ref_std, ref_changed])
        line = (
            f"{corruption:16s} {dataset:14s} {size:3d}px sev {severity}: "
            f"mean {mean:+.3f} vs {ref_mean:+.3f}, std {std:.3f} vs {ref_std:.3f} ({std / ref_std - 1:+.2%}), "
            f"changed {changed:.4f} vs {ref_changed:.4f} ({changed / ref_changed - 1:+.2%}); "
            f"4 se = {np.array2string(4 * se / scale, precision=3)} of scale"
        )
        RESULTS.append(line)
        consistent = np.abs(bias) <= 4 * se + np.array([0.02, 0.005 * ref_std, 0.005 * ref_changed])
        powerful = 4 * se <= NOISE_POWER * scale
        if not (consistent.all() and powerful.all()):
            failures.append(line)
    assert not failures, "\n".join(failures)


@pytest.fixture(scope="module", autouse=True)
def _print_results():
    yield
    print("\n" + "\n".join(RESULTS))
