"""The task-specific marks: contract, per-image reproducibility, medmnistc parity at 224, size invariance."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image

from medaudit.shift.catalogue import PARAMS
from medaudit.shift.corrupt import OpContext, apply_uint8, corruptions, sample_rngs
from medaudit.shift.marks import (
    BLOB_FILL,
    FONT_EM,
    FONT_STROKE,
    MARGIN,
    ScalarIntegers,
    _glyph_alpha,
    _letters,
    _render_alpha,
    whiten,
)


def _on_nhwc(name: str) -> Callable[[np.ndarray, Any, OpContext], np.ndarray]:
    """The registered mark on NHWC batches, as the tests below build them (the marks take NCHW)."""
    fn = corruptions.get(name).fn
    return lambda x, param, ctx: fn(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), param, ctx).transpose(
        0, 2, 3, 1
    )


black_corner, bubble, characters, stain_deposit = (
    _on_nhwc(name) for name in ("black_corner", "bubble", "characters", "stain_deposit")
)

CASES = [
    ("stain_deposit", "pathmnist"),
    ("stain_deposit", "bloodmnist"),
    ("bubble", "pathmnist"),
    ("bubble", "bloodmnist"),
    ("black_corner", "dermamnist"),
    ("characters", "dermamnist"),
]
SIZES = (28, 64, 224)
SEVERITIES = (1, 2, 3, 4, 5)

# Recorded from medmnistc 0.1.0 (opencv 4.14, Pillow 13) on the images of ``_parity_batch``, with
# microscopy.random.randint(a, b) replaced by default_rng(100 + i).integers(a, b + 1) for image i:
# the same draws in the same order as ours, so bubbles must match bit for bit.
MEDMNISTC_BLACK_CORNER_ZEROS = {  # zeroed pixels per size, multipliers 1.10 1.05 1.00 0.90 0.95
    27: (120, 200, 200, 352, 288),
    28: (101, 173, 173, 343, 255),
    64: (465, 725, 889, 1643, 1275),
    224: (5681, 8085, 10797, 18759, 14911),
}
MEDMNISTC_BUBBLE_SUMS = {  # per severity, the sum of each output image
    "pathmnist": (
        (19551370, 19421937, 19487865, 19528284, 19597281, 19445106),
        (19731108, 19520490, 19609063, 19650163, 19828588, 19593124),
        (19825636, 19609274, 19698818, 19782525, 19985168, 19682064),
        (20390896, 19921422, 20088400, 20198588, 20372933, 19963713),
        (20913780, 20136836, 20295695, 20465998, 21040651, 20154231),
    ),
    "bloodmnist": (
        (19417153, 19342656, 19351657, 19388408, 19403806, 19350975),
        (19472219, 19391840, 19421233, 19464818, 19470706, 19427429),
        (19606075, 19482978, 19504150, 19565792, 19624756, 19570916),
        (19734927, 19562715, 19653015, 19759797, 19868122, 19659856),
        (19922953, 19673253, 19811176, 19931802, 20109857, 19813924),
    ),
}
MEDMNISTC_CHARACTERS_MAD = (0.0501, 0.1038, 0.1492, 0.2438, 0.3504)
"""Mean |output - input| per severity of cv2.putText (Hershey duplex) with the same words, places and colours."""


def _images(n: int, size: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Mid-grey noise: no pixel at 0 or 255, so darkening and brightening always show."""
    return np.random.default_rng(seed).integers(40, 216, (n, size, size, channels), dtype=np.uint8)


def _ctx(n: int, size: int, *, seed: int = 100, scaled: bool = True) -> OpContext:
    return OpContext([np.random.default_rng(seed + i) for i in range(n)], scale=size / 224 if scaled else 1.0)


def _run(name: str, dataset: str, severity: int, x: np.ndarray, ctx: OpContext) -> np.ndarray:
    return _on_nhwc(name)(x, PARAMS[dataset][name][severity - 1], ctx)


def _mad(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.abs(y.astype(np.int64) - x).mean())


def _parity_batch() -> np.ndarray:
    return np.random.default_rng(7).integers(40, 216, (6, 224, 224, 3), dtype=np.uint8)


def test_registered_with_channel_handling() -> None:
    # only characters draws a per-channel colour; the others act on grey directly
    assert {name: corruptions.get(name).needs_rgb for name, _ in CASES} == {
        "stain_deposit": False,
        "bubble": False,
        "black_corner": False,
        "characters": True,
    }
    assert all(corruptions.get(name).channels_first for name, _ in CASES)


@pytest.mark.parametrize(("name", "dataset"), [*CASES, ("defocus_blur", "dermamnist")])
@pytest.mark.parametrize("channels", [1, 3])
def test_channels_first_engine_whatever_the_memory_layout(name: str, dataset: str, channels: int) -> None:
    """``apply_uint8`` on an NHWC view of an NCHW batch (what ``corrupt`` passes, no copies) and on a
    contiguous NHWC array gives the same bytes, and the same as the corruption run by hand on NCHW."""
    nchw = np.ascontiguousarray(_images(3, 64, channels).transpose(0, 3, 1, 2))
    options = {"source": dataset, "mode": "scaled", "indices": [4, 5, 6]}
    view = apply_uint8(nchw.transpose(0, 2, 3, 1), name, 3, 9, **options)  # type: ignore[arg-type]
    copy = apply_uint8(np.ascontiguousarray(nchw.transpose(0, 2, 3, 1)), name, 3, 9, **options)  # type: ignore[arg-type]
    np.testing.assert_array_equal(view, copy)
    assert view.transpose(0, 3, 1, 2).flags.c_contiguous  # nothing left to copy back to NCHW
    if channels == 3:
        rngs = sample_rngs(9, [4, 5, 6], name, 3)
        by_hand = corruptions.get(name).fn(nchw, PARAMS[dataset][name][2], OpContext(rngs, scale=64 / 224))
        np.testing.assert_array_equal(view.transpose(0, 3, 1, 2), by_hand)


def test_scalar_integers_draw_what_numpy_draws() -> None:
    """Every value, for spans from 1 (numpy draws nothing) to near 2**32 (rejections are likely)."""
    choose = np.random.default_rng(1)
    spans = (1, 2, 3, 7, 100, 3**19, (1 << 31) + 1, (1 << 32) - 5)
    for seed in range(40):
        numpy_rng, generator = np.random.default_rng(seed), np.random.default_rng(seed)
        if seed % 2:  # a generator holding half of a 64-bit output (from an earlier 32-bit draw)
            assert numpy_rng.integers(0, 10) == generator.integers(0, 10)
        ours = ScalarIntegers(generator)
        for _ in range(400):  # more than ScalarIntegers.BLOCK raw values: refills are covered
            low, span = int(choose.integers(-50, 300)), int(choose.choice(spans))
            assert ours.integers(low, low + span) == int(numpy_rng.integers(low, low + span))


def test_whiten_is_the_float_blend_for_every_value_and_alpha() -> None:
    values = np.tile(np.arange(256, dtype=np.uint8), (256, 1))
    alpha = values.T.copy()  # every (value, alpha) pair once
    image = values[None].astype(np.float32)
    expected = np.rint(image + (255 - image) * (alpha.astype(np.float32) / 255)).astype(np.uint8)
    np.testing.assert_array_equal(whiten(values[None], Image.fromarray(alpha)), expected)


@pytest.mark.parametrize(("name", "dataset"), CASES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("severity", SEVERITIES)
def test_contract(name: str, dataset: str, size: int, severity: int) -> None:
    for channels in (1, 3) if not corruptions.get(name).needs_rgb else (3,):
        x = _images(3, size, channels)
        before = x.copy()
        y = _run(name, dataset, severity, x, _ctx(3, size))
        assert y.shape == x.shape and y.dtype == np.uint8
        np.testing.assert_array_equal(x, before)  # input untouched
        assert not np.shares_memory(x, y)
        assert all((y[i] != x[i]).any() for i in range(len(x))), "an image came back unchanged"


@pytest.mark.parametrize(("name", "dataset"), [c for c in CASES if c[0] != "black_corner"])
@pytest.mark.parametrize("size", SIZES)
def test_reproducible_per_image(name: str, dataset: str, size: int) -> None:
    x = _images(4, size)
    y = _run(name, dataset, 5, x, _ctx(4, size))
    np.testing.assert_array_equal(y, _run(name, dataset, 5, x, _ctx(4, size)))
    for i in range(len(x)):  # image i alone, with its own generator only, gives the same result
        alone = OpContext([np.random.default_rng(100 + i)], scale=size / 224)
        np.testing.assert_array_equal(_run(name, dataset, 5, x[i : i + 1], alone)[0], y[i])
    # the generator drives the marks: other seeds, other marks
    assert not np.array_equal(y, _run(name, dataset, 5, x, _ctx(4, size, seed=500)))


@pytest.mark.parametrize("size", (8, 9, 27, 28, 64, 224))
@pytest.mark.parametrize("mult", (1.1, 1.05, 1.0, 0.9, 0.95))
def test_black_corner_exact(size: int, mult: float) -> None:
    x = _images(2, size, 1)
    y = black_corner(x, mult, OpContext([], scale=size / 224))
    radius = int(size // 2 * mult)  # min(cx, cy, w - cx, h - cy) of a square is size // 2
    expected = x.copy()
    for row in range(size):
        for col in range(size):
            if (col - size // 2) ** 2 + (row - size // 2) ** 2 > radius * radius:
                expected[:, row, col] = 0
    np.testing.assert_array_equal(y, expected)
    if size in MEDMNISTC_BLACK_CORNER_ZEROS:  # cv2.circle's filled disc, pixel for pixel
        assert (y[0] == 0).sum() == MEDMNISTC_BLACK_CORNER_ZEROS[size][
            (1.1, 1.05, 1.0, 0.9, 0.95).index(mult)
        ]


@pytest.mark.parametrize("dataset", ["pathmnist", "bloodmnist"])
def test_bubble_matches_medmnistc_at_224(dataset: str) -> None:
    x = _parity_batch()
    for severity in SEVERITIES:
        y = bubble(x, PARAMS[dataset]["bubble"][severity - 1], _ctx(6, 224, scaled=False))
        assert (
            tuple(int(s) for s in y.astype(np.int64).sum(axis=(1, 2, 3)))
            == MEDMNISTC_BUBBLE_SUMS[dataset][severity - 1]
        )


def test_characters_ink_matches_cv2_at_224() -> None:
    x = _parity_batch()
    for severity, expected in zip(SEVERITIES, MEDMNISTC_CHARACTERS_MAD, strict=True):
        y = characters(x, PARAMS["dermamnist"]["characters"][severity - 1], _ctx(6, 224, scaled=False))
        assert _mad(y, x) == pytest.approx(expected, rel=0.1)


def _characters_word_by_word(x: np.ndarray, param: tuple[int, int, float], ctx: OpContext) -> np.ndarray:
    """``characters`` as it was before the letter cache (NHWC): numpy's own draws, every word rendered
    whole by FreeType and blended on a float copy of the whole image, rounded once."""
    max_words, max_letters, max_font_scale = param
    ref = round(x.shape[1] / ctx.scale)
    out = np.empty_like(x)
    for i, rng in enumerate(ctx.rngs):
        image = x[i].transpose(2, 0, 1).astype(np.float32)
        for _ in range(int(rng.integers(1, max_words + 1))):
            letters = int(rng.integers(3, max(3, max_letters) + 1))
            font_scale = int(rng.integers(14, max(14, int(max_font_scale * 100)) + 1)) / 100
            text = "".join(np.array(list("abcdefghijklmnopqrstuvwxyz"))[rng.integers(0, 26, letters)])
            low, high = MARGIN, ref - 8 * letters
            col = int(rng.integers(low, high + 1)) if high >= low else (low + high) // 2
            row = int(rng.integers(MARGIN, ref - MARGIN + 1))
            colour = rng.integers(0, 256, size=3).astype(np.float32)
            em, stroke = ctx.px(FONT_EM * font_scale), ctx.px(FONT_STROKE)
            placed = _render_alpha(text, ctx.px(col), ctx.px(row), em, stroke, image.shape[1:])
            if placed is not None:
                r0, c0, alpha = placed
                patch = image[:, r0 : r0 + alpha.shape[0], c0 : c0 + alpha.shape[1]]
                patch += (colour[:, None, None] - patch) * alpha
        out[i] = np.rint(np.clip(image, 0, 255)).transpose(1, 2, 0)
    return out


@pytest.mark.parametrize("size", (28, 64))
def test_characters_in_scaled_mode_below_100_px_are_rendered_word_by_word(size: int) -> None:
    """Below ~100 px (em < 2 px) words are rendered whole, as before the letter cache: same bytes."""
    x = _images(8, size)
    for severity in SEVERITIES:
        param = PARAMS["dermamnist"]["characters"][severity - 1]
        np.testing.assert_array_equal(
            characters(x, param, _ctx(8, size)), _characters_word_by_word(x, param, _ctx(8, size))
        )


def test_characters_from_cached_letters_match_words_rendered_whole_at_224() -> None:
    """The letter cache changes only pixels where letters touch (measured: 16-18 % of the changed
    pixels, by up to 32 grey levels), and the ink by about 1 % (within 2 %)."""
    x = _parity_batch()
    for severity in SEVERITIES:
        param = PARAMS["dermamnist"]["characters"][severity - 1]
        ours = characters(x, param, _ctx(6, 224, scaled=False))
        whole = _characters_word_by_word(x, param, _ctx(6, 224, scaled=False))
        changed = (whole != x).any(axis=-1)
        assert ((ours != whole).any(axis=-1).sum()) < 0.25 * changed.sum()
        assert _mad(ours, x) == pytest.approx(_mad(whole, x), rel=0.02)


def test_a_cached_letter_is_the_letter_rendered_whole() -> None:
    """Alone, a letter's coverage from the cache is FreeType's, bit for bit (two sizes, three places)."""
    for font_scale in (0.14, 0.18):
        em = FONT_EM * font_scale
        for letter in "agjmqwz":
            for col, row in ((20, 30), (21, 31), (100, 200)):
                letters = _letters(em, FONT_STROKE, float(row))
                assert letters is not None
                r0, c0, cached = _glyph_alpha(letter, float(col), float(row), letters, (224, 224))
                whole = _render_alpha(letter, float(col), float(row), em, FONT_STROKE, (224, 224))
                assert whole is not None
                wr, wc, alpha = whole
                padded = np.zeros_like(cached)  # the cache's box spans every letter's rows
                padded[wr - r0 : wr - r0 + alpha.shape[0], wc - c0 : wc - c0 + alpha.shape[1]] = alpha
                np.testing.assert_array_equal(cached, padded)


@pytest.mark.parametrize("dataset", ["pathmnist", "bloodmnist"])
@pytest.mark.parametrize("size", SIZES)
def test_stain_only_darkens(dataset: str, size: int) -> None:
    x = _images(4, size)
    for severity in SEVERITIES:
        y = stain_deposit(x, PARAMS[dataset]["stain_deposit"][severity - 1], _ctx(4, size))
        assert (y <= x).all()
        changed = y != x
        if size == 224:  # at the reference size the ink is binary: painted black, nothing in between
            assert (y[changed] == 0).all()
        else:  # smaller images get partial coverage, not just black
            assert (y[changed] > 0).any()


@pytest.mark.parametrize("max_marks_ink", [(1, 24), (1, 32)])
def test_stain_single_blob_is_mostly_filled(max_marks_ink: tuple[int, int]) -> None:
    ink = max_marks_ink[1]
    x = _images(16, 224, 1)
    y = stain_deposit(x, max_marks_ink, _ctx(16, 224, scaled=False))
    for i in range(len(x)):
        rows, cols = np.nonzero(y[i, :, :, 0] == 0)
        assert rows.max() - rows.min() < ink and cols.max() - cols.min() < ink  # one blob inside its square
        assert 10 <= rows.min() <= rows.max() < 224 - 10  # the 10 px margin
        assert 10 <= cols.min() <= cols.max() < 224 - 10
        fill = len(rows) / ink**2
        assert BLOB_FILL[0] - 0.01 <= fill <= BLOB_FILL[1] + 0.01


@pytest.mark.parametrize("dataset", ["pathmnist", "bloodmnist"])
@pytest.mark.parametrize("size", SIZES)
def test_bubble_only_brightens(dataset: str, size: int) -> None:
    x = _images(4, size)
    for severity in SEVERITIES:
        y = bubble(x, PARAMS[dataset]["bubble"][severity - 1], _ctx(4, size))
        assert (y >= x).all()
        # never more than the rim's alpha 130/255 of the way to white
        gain = (y.astype(np.float64) - x) / (255 - x.astype(np.float64))
        assert gain.max() <= 130 / 255 + 0.5 / (255 - 215)


@pytest.mark.parametrize(("name", "dataset"), CASES)
def test_severity_5_at_least_severity_1(name: str, dataset: str) -> None:
    x = _images(16, 64)
    frac = [(_run(name, dataset, s, x, _ctx(16, 64)) != x).any(axis=-1).mean() for s in (1, 5)]
    assert frac[1] > frac[0]


def test_black_corner_severity_4_is_harsher_than_5() -> None:
    # medmnistc's published multipliers are not monotone (0.90 at severity 4, 0.95 at 5); we keep them
    x = _images(1, 64)
    zeros = [(_run("black_corner", "dermamnist", s, x, _ctx(1, 64)) == 0).sum() for s in (4, 5)]
    assert zeros[0] > zeros[1]


@pytest.mark.parametrize(("name", "dataset"), CASES)
@pytest.mark.parametrize("severity", (1, 5))
def test_scaled_mode_same_severity_at_28_and_224(name: str, dataset: str, severity: int) -> None:
    """Marks scaled to the image keep the amount of change; the published pixel sizes at 28 px do not."""
    x224 = _images(24, 224)
    x28 = x224.reshape(24, 28, 8, 28, 8, 3).mean(axis=(2, 4)).round().astype(np.uint8)
    big = _mad(_run(name, dataset, severity, x224, _ctx(24, 224)), x224)
    small = _mad(_run(name, dataset, severity, x28, _ctx(24, 28)), x28)
    assert 0.75 < small / big < 1.25  # measured 0.84 (characters: faint ink rounds away) to 1.14
    # the changed-pixel fraction: soft edges at 28 px touch more pixels (measured up to 2.7x, characters 4x)
    frac_big = (_run(name, dataset, severity, x224, _ctx(24, 224)) != x224).any(axis=-1).mean()
    frac_small = (_run(name, dataset, severity, x28, _ctx(24, 28)) != x28).any(axis=-1).mean()
    assert 1 / 1.5 < frac_small / frac_big < (5 if name == "characters" else 3)
    if name != "black_corner":  # size-relative already; the others use pixel units
        published = _mad(_run(name, dataset, severity, x28, _ctx(24, 28, scaled=False)), x28)
        assert published > 3 * small


@pytest.mark.parametrize(("name", "dataset"), CASES)
@pytest.mark.parametrize("size", (8, 9, 13, 28, 64))
def test_published_pixel_sizes_on_small_images_do_not_crash(name: str, dataset: str, size: int) -> None:
    # medmnistc raises on empty margin ranges below 224 px; we clamp them
    x = _images(2, size)
    for severity in SEVERITIES:
        for scaled in (False, True):
            y = _run(name, dataset, severity, x, _ctx(2, size, scaled=scaled))
            assert y.shape == x.shape and y.dtype == np.uint8


@pytest.mark.parametrize("size", (100, 300))
def test_non_integer_canvas_ratios(size: int) -> None:
    """Sizes whose ratio to 224 is not an integer: area weights must still conserve the ink."""
    x = _images(8, size)
    y = stain_deposit(x, (1, 24), _ctx(8, size))
    y224 = stain_deposit(_images(8, 224), (1, 24), _ctx(8, 224))
    assert _mad(y, x) == pytest.approx(_mad(y224, _images(8, 224)), rel=0.25)
