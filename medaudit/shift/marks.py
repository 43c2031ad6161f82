"""Task-specific marks of MedMNIST-C: black corners, stain deposits, bubbles and characters.

Re-implemented from ``medmnistc/corruptions/microscopy.py`` without cv2 and
without global random state: every draw comes from the image's own generator,
in the order medmnistc draws it. Positions and sizes are drawn in reference
pixels (224 in ``scaled`` mode, the image size in ``medmnistc`` mode) and the
marks are drawn on a canvas of at least the reference size, then
area-averaged to the image, so a 28 px image gets soft partial-coverage marks
of the same relative size instead of marks 8x too big (or a crash: medmnistc
fails below 224 px because its margin ranges become empty; here an empty range
is clamped to its midpoint).

Deviations from medmnistc a user should know: stain deposits are procedural
random blobs, not the 50 masks of ``inks.npz``; characters are FreeType text
(Pillow's embedded font) sized and thickened to match the footprint of
``cv2.putText(FONT_HERSHEY_DUPLEX, thickness=1)``, not Hershey glyphs.
"""

from __future__ import annotations

import math
import string
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from medaudit.shift.corrupt import OpContext, register

MARGIN = 10
"""Border kept free of stains and characters, in reference px (medmnistc's constant)."""
BUBBLE_RIM = 2
"""Outer ring of a bubble, in reference px."""
BUBBLE_ALPHA = 100
BUBBLE_RIM_ALPHA = 130
BLOB_GRID = 5
"""Coarse noise grid of an ink blob: about two bulges across, like the published inks."""
BLOB_ROUGHNESS = 0.5
BLOB_FILL = (0.47, 0.75)
"""Fraction of the ink square that is ink; the published 24 and 32 px masks cover 47-78 % (mean 58 %)."""
FONT_EM = 33.0
"""Font size (em, px) per unit of cv2 font scale: matches Hershey duplex's advance (18.5 px) and cap height (22 px)."""
FONT_STROKE = 0.45
"""Extra outline (px each side) that brings FreeType strokes to cv2's 1 px anti-aliased lines (measured ink per letter)."""
SUPERSAMPLE_EM = 48.0
"""Text is rendered with an em of at least this many px, then area-averaged, so tiny text keeps its ink."""
LETTERS = np.array(list(string.ascii_lowercase))


def _geometry(size: int, ctx: OpContext) -> tuple[int, int, float]:
    """(reference side, canvas side, canvas px per reference px).

    The canvas is never smaller than the reference, so marks a few reference
    pixels wide are drawn whole and become partial coverage when averaged down.
    """
    ref = max(1, round(size / ctx.scale))
    canvas = max(size, ref)
    return ref, canvas, ctx.px(1.0) * canvas / size


class ScalarIntegers:
    """``Generator.integers(low, high)`` for one scalar at a time, drawn as numpy draws it (Lemire's
    rejection method on the generator's 32-bit stream) without numpy's ~4 µs per call, which was
    most of a bubble's cost at 224 px. Raw 32-bit values are taken from ``rng`` in blocks, so the
    generator ends up further along than after scalar calls: only for the last draws from ``rng``.
    tests/test_shift_marks.py checks the values against ``Generator.integers``."""

    BLOCK = 128

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.raw: list[int] = []
        self.used = 0

    def _next_uint32(self) -> int:
        if self.used == len(self.raw):  # bound 2**32: numpy hands out the raw stream
            self.raw = self.rng.integers(0, 1 << 32, size=self.BLOCK, dtype=np.uint32).tolist()
            self.used = 0
        self.used += 1
        return self.raw[self.used - 1]

    def integers(self, low: int, high: int) -> int:
        """Uniform in [low, high), as ``rng.integers(low, high)`` with 0 < high - low < 2**32."""
        span = high - low
        if span == 1:  # numpy draws nothing for a single value
            return low
        product = self._next_uint32() * span
        if product & 0xFFFFFFFF < span:
            threshold = (1 << 32) % span
            while product & 0xFFFFFFFF < threshold:
                product = self._next_uint32() * span
        return low + (product >> 32)


def _randint(rng: np.random.Generator | ScalarIntegers, low: int, high: int) -> int:
    """Uniform integer in [low, high]; the midpoint where medmnistc's range would be empty (and crash)."""
    if high < low:
        return (low + high) // 2
    return int(rng.integers(low, high + 1))


@lru_cache(maxsize=16)
def _area_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) weights of an area resize: each output pixel is the mean of what it covers."""
    step = src / dst
    lo = np.arange(dst)[:, None] * step
    j = np.arange(src)[None, :]
    overlap = np.clip(np.minimum(lo + step, j + 1) - np.maximum(lo, j), 0.0, None)
    return (overlap / step).astype(np.float32)


def area_downsample(mask: np.ndarray, size: int) -> np.ndarray:
    """A canvas mask (float or bool) area-averaged to the image size, as float32."""
    mask = mask.astype(np.float32)
    if mask.shape[0] == size:
        return mask
    weights = _area_matrix(mask.shape[0], size)
    return weights @ mask @ weights.T


@register(
    "black_corner", "black outside a centred disc (a microscope's round field of view)", channels_first=True
)
def black_corner(x: np.ndarray, param: float, ctx: OpContext) -> np.ndarray:
    """Zero everything outside a centred disc (a microscope's round field of view); NCHW."""
    height, width = x.shape[2:]
    cx, cy = width // 2, height // 2
    radius = int(min(cx, cy, width - cx, height - cy) * param)
    rows, cols = np.ogrid[:height, :width]
    inside = (cols - cx) ** 2 + (rows - cy) ** 2 <= radius**2
    return x * inside.astype(np.uint8)


def _ink_blob(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random ink blot in a size x size box: smooth noise plus a central bias, thresholded.

    Irregular outline, mostly filled, sometimes a hole or a detached speck,
    like the inks medmnistc ships; the same draws give the same shape at any
    resolution because the noise grid is relative to the blob.
    """
    coarse = rng.standard_normal((BLOB_GRID, BLOB_GRID))
    fill = rng.uniform(*BLOB_FILL)
    t = (np.arange(size) + 0.5) / size * (BLOB_GRID - 1)
    interp = np.clip(1 - np.abs(t[:, None] - np.arange(BLOB_GRID)[None, :]), 0.0, None)
    centred = (np.arange(size) + 0.5) / size * 2 - 1
    r2 = centred[:, None] ** 2 + centred[None, :] ** 2
    score = (1 - r2) + BLOB_ROUGHNESS * (interp @ coarse @ interp.T)
    count = max(1, round(fill * size * size))
    return score >= np.partition(score.ravel(), -count)[-count]


def _paste(canvas: np.ndarray, blob: np.ndarray, row: int, col: int) -> None:
    """OR a blob into the canvas at (row, col), cropped at the borders."""
    size = canvas.shape[0]
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + blob.shape[0], size), min(col + blob.shape[1], size)
    if r1 > r0 and c1 > c0:
        canvas[r0:r1, c0:c1] |= blob[r0 - row : r1 - row, c0 - col : c1 - col]


@register("stain_deposit", "black ink blots (dirt or stain deposits on a slide)", channels_first=True)
def stain_deposit(x: np.ndarray, param: tuple[int, int], ctx: OpContext) -> np.ndarray:
    """Black ink blots (dirt or stain deposits on a slide), 1..max_marks of them; NCHW."""
    max_marks, ink_px = param
    size = x.shape[2]
    ref, canvas_side, unit = _geometry(size, ctx)
    ink = max(1, round(ink_px * unit))
    out = np.empty_like(x)
    for i, rng in enumerate(ctx.rngs):
        marks = 1 if max_marks == 1 else int(rng.integers(1, max_marks + 1))
        canvas = np.zeros((canvas_side, canvas_side), dtype=bool)
        for _ in range(marks):
            blob = _ink_blob(rng, ink)
            col = _randint(rng, MARGIN, ref - ink_px - MARGIN)
            row = _randint(rng, MARGIN, ref - ink_px - MARGIN)
            _paste(canvas, blob, round(row * unit), round(col * unit))
        if canvas_side == size:  # whole pixels: rint(x * (1 - mask)) is x or 0, in one uint8 pass
            np.multiply(x[i], ~canvas, out=out[i])
        else:
            out[i] = np.rint(x[i] * (1 - area_downsample(canvas, size)))
    return out


@register("bubble", "translucent white discs (air bubbles under a cover slip)", channels_first=True)
def bubble(x: np.ndarray, param: tuple[int, int], ctx: OpContext) -> np.ndarray:
    """Translucent white discs with a brighter rim (air bubbles under a cover slip); NCHW.

    As in medmnistc, all bubbles go onto one alpha overlay where a later disc
    replaces (does not add to) an earlier one, and the overlay is composited once.
    """
    max_radius, max_count = param
    size = x.shape[2]
    ref, canvas_side, unit = _geometry(size, ctx)
    out = np.empty_like(x)
    for i, generator in enumerate(ctx.rngs):
        rng = ScalarIntegers(generator)  # the image's last draws: same values, faster
        overlay = Image.new("L", (canvas_side, canvas_side), 0)
        draw = ImageDraw.Draw(overlay)
        for _ in range(rng.integers(7, max(7, max_count) + 1)):
            radius = rng.integers(3, max(3, max_radius) + 1)
            cx = _randint(rng, radius, ref - radius)
            cy = _randint(rng, radius, ref - radius)
            for r, fill in ((radius + BUBBLE_RIM, BUBBLE_RIM_ALPHA), (radius, BUBBLE_ALPHA)):
                draw.ellipse(((cx - r) * unit, (cy - r) * unit, (cx + r) * unit, (cy + r) * unit), fill=fill)
        if canvas_side == size:
            out[i] = whiten(x[i], overlay)
        else:
            alpha = area_downsample(np.asarray(overlay), size) / 255
            image = x[i].astype(np.float32)
            out[i] = np.rint(image + (255 - image) * alpha)
    return out


def whiten(image: np.ndarray, alpha: Image.Image) -> np.ndarray:
    """``rint(image + (255 - image) * alpha / 255)`` for a uint8 CHW image and an 8-bit alpha, by
    PIL's paste, which rounds that exactly (``(n + 128 + ((n + 128) >> 8)) >> 8`` for n/255) in one
    C pass per channel: twice as fast as the float32 formula, with the same bytes for every
    (value, alpha) pair (tests/test_shift_marks.py checks all 65,536)."""
    out = np.empty_like(image)
    for channel in range(len(image)):
        plane = Image.fromarray(image[channel])
        plane.paste(255, None, alpha)
        out[channel] = np.asarray(plane)
    return out


@lru_cache(maxsize=64)
def default_font(em: float) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=em)


def _draw_text(
    image: np.ndarray, text: str, x: float, y: float, em: float, stroke: float, colour: np.ndarray
) -> None:
    """Blend anti-aliased text (left end of the baseline at x, y; image px) into a float CHW image in place.

    Rendered supersampled over the text's bounding box only, then area-averaged
    to image pixels, so sub-pixel text at 28 px becomes a faint smear with the
    same amount of ink rather than nothing.
    """
    g = max(4, math.ceil(SUPERSAMPLE_EM / em))
    font = default_font(round(em * g, 2))
    left, top, right, bottom = font.getbbox(text, anchor="ls", stroke_width=stroke * g)
    ox, oy = x * g, y * g
    c0, c1 = max(0, math.floor((ox + left) / g)), min(image.shape[2], math.ceil((ox + right) / g))
    r0, r1 = max(0, math.floor((oy + top) / g)), min(image.shape[1], math.ceil((oy + bottom) / g))
    if c1 <= c0 or r1 <= r0:
        return
    layer = Image.new("L", ((c1 - c0) * g, (r1 - r0) * g), 0)
    ImageDraw.Draw(layer).text(
        (ox - c0 * g, oy - r0 * g),
        text,
        fill=255,
        font=font,
        anchor="ls",
        stroke_width=stroke * g,
        stroke_fill=255,
    )
    alpha = np.asarray(layer, dtype=np.float32).reshape(r1 - r0, g, c1 - c0, g).mean(axis=(1, 3)) / 255
    patch = image[:, r0:r1, c0:c1]
    patch += (colour[:, None, None] - patch) * alpha


@register(
    "characters",
    "random coloured words (pen marks and labels on dermoscopy images)",
    needs_rgb=True,
    channels_first=True,
)
def characters(x: np.ndarray, param: tuple[int, int, float], ctx: OpContext) -> np.ndarray:
    """Random coloured lowercase words (pen marks and labels on dermoscopy images); NCHW."""
    max_words, max_letters, max_font_scale = param
    size = x.shape[2]
    ref = max(1, round(size / ctx.scale))
    out = np.empty_like(x)
    for i, rng in enumerate(ctx.rngs):
        image = x[i].astype(np.float32)
        for _ in range(int(rng.integers(1, max_words + 1))):
            letters = int(rng.integers(3, max(3, max_letters) + 1))
            font_scale = int(rng.integers(14, max(14, int(max_font_scale * 100)) + 1)) / 100
            text = "".join(LETTERS[rng.integers(0, len(LETTERS), letters)])
            col = _randint(rng, MARGIN, ref - 8 * letters)
            row = _randint(rng, MARGIN, ref - MARGIN)
            colour = rng.integers(0, 256, size=3).astype(np.float32)
            em = ctx.px(FONT_EM * font_scale)
            _draw_text(image, text, ctx.px(col), ctx.px(row), em, ctx.px(FONT_STROKE), colour)
        out[i] = np.rint(np.clip(image, 0, 255))
    return out
