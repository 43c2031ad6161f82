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
``cv2.putText(FONT_HERSHEY_DUPLEX, thickness=1)``, not Hershey glyphs, and at the
reference size are assembled from cached letters (see ``characters``).
"""

from __future__ import annotations

import math
import string
import sys
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
GLYPH_CACHE_EM = 2.0
"""Text with at least this em (image px) is assembled from cached letters; smaller text is rendered whole."""


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
    most of a bubble's (and a word's) cost at 224 px. Raw 32-bit values are taken from ``rng`` in
    blocks (from a fresh PCG64 as its raw 64-bit output), so the generator ends up further along
    than after scalar calls: only for the last draws from ``rng``. tests/test_shift_marks.py checks
    the values against ``Generator.integers``."""

    BLOCK = 128

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.raw: list[int] = []
        self.used = 0
        bits = rng.bit_generator
        # PCG64 hands out 32-bit values as the low, then the high half of each 64-bit output; with no
        # half left over from earlier draws, its 64-bit outputs seen as uint32 pairs (little-endian) are
        # the same stream, at less than half the cost per block (numpy's integers() overhead)
        self.raw64 = (
            bits.random_raw
            if type(bits) is np.random.PCG64 and sys.byteorder == "little" and not bits.state["has_uint32"]
            else None
        )

    def _refill(self) -> None:
        if self.raw64 is not None:
            self.raw = self.raw64(self.BLOCK // 2).view(np.uint32).tolist()
        else:  # bound 2**32: numpy hands out the raw stream
            self.raw = self.rng.integers(0, 1 << 32, size=self.BLOCK, dtype=np.uint32).tolist()
        self.used = 0

    def _next_uint32(self) -> int:
        if self.used == len(self.raw):
            self._refill()
        self.used += 1
        return self.raw[self.used - 1]

    def integers(self, low: int, high: int) -> int:
        """Uniform in [low, high), as ``rng.integers(low, high)`` with 0 < high - low < 2**32."""
        span = high - low
        if span == 1:  # numpy draws nothing for a single value
            return low
        if self.used == len(self.raw):  # _next_uint32, inlined: this is most of a mark's draws
            self._refill()
        self.used += 1
        product = self.raw[self.used - 1] * span
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


def _supersample(em: float) -> int:
    """Hi-res px per image px for text of this em (image px)."""
    return max(4, math.ceil(SUPERSAMPLE_EM / em))


Placed = tuple[int, int, np.ndarray]
"""(top row, left column, alpha) of a word's coverage in image px, cropped to the image."""


def _render_alpha(
    text: str, x: float, y: float, em: float, stroke: float, shape: tuple[int, int]
) -> Placed | None:
    """Coverage of ``text`` (left end of the baseline at x, y; image px), rendered whole by FreeType.

    Rendered supersampled over the text's bounding box only, then area-averaged
    to image pixels, so sub-pixel text at 28 px becomes a faint smear with the
    same amount of ink rather than nothing.
    """
    g = _supersample(em)
    font = default_font(round(em * g, 2))
    left, top, right, bottom = font.getbbox(text, anchor="ls", stroke_width=stroke * g)
    ox, oy = x * g, y * g
    c0, c1 = max(0, math.floor((ox + left) / g)), min(shape[1], math.ceil((ox + right) / g))
    r0, r1 = max(0, math.floor((oy + top) / g)), min(shape[0], math.ceil((oy + bottom) / g))
    if c1 <= c0 or r1 <= r0:
        return None
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
    return r0, c0, alpha


Glyph = tuple[int, int, np.ndarray, int]
"""A cached letter: first column (image px from its origin's pixel), width (image px), its coverage
sums column by column (float64, for ``np.bincount``), and its advance (hi-res px)."""


class _Letters:
    """The lowercase letters at one em and stroke (image px), supersampled g times, with their baseline
    dy hi-res px into an image pixel: per letter and horizontal offset dx (hi-res px into an image
    pixel), the summed 8-bit coverage of each image pixel's g x g hi-res px, rendered on first use.
    Every letter's array spans the same rows (the alphabet's extent), so a word is a sum of columns."""

    def __init__(self, em: float, stroke: float, dy: int) -> None:
        self.g = g = _supersample(em)
        self.font = default_font(round(em * g, 2))
        self.stroke, self.dy = stroke * g, dy
        _, top, _, bottom = self.font.getbbox(string.ascii_lowercase, anchor="ls", stroke_width=self.stroke)
        self.row = math.floor((dy + top) / g)
        """First row of every letter's array, in image px from the baseline's pixel."""
        self.rows = math.ceil((dy + bottom) / g) - self.row
        self.left = min(
            math.floor(self.font.getbbox(c, anchor="ls", stroke_width=self.stroke)[0] / g)
            for c in string.ascii_lowercase
        )
        """The leftmost first column of any letter, in image px from its origin's pixel."""
        self.table: dict[str, list[Glyph | None]] = {c: [None] * g for c in string.ascii_lowercase}
        self.spans: dict[int, np.ndarray] = {}
        """Entries of a letter's columns in a word by first column in the word << 8 | width."""

    def render(self, letter: str, dx: int) -> Glyph:
        g = self.g
        left, _, right, _ = self.font.getbbox(letter, anchor="ls", stroke_width=self.stroke)
        c0, c1 = math.floor((dx + left) / g), math.ceil((dx + right) / g)
        layer = Image.new("L", ((c1 - c0) * g, self.rows * g), 0)
        ImageDraw.Draw(layer).text(
            (dx - c0 * g, self.dy - self.row * g),
            letter,
            fill=255,
            font=self.font,
            anchor="ls",
            stroke_width=self.stroke,
            stroke_fill=255,
        )
        sums = np.asarray(layer, dtype=np.float64).reshape(self.rows, g, c1 - c0, g).sum(axis=(1, 3))
        values = np.ascontiguousarray(sums.T).ravel()  # column by column, as ``_glyph_alpha`` counts
        values.setflags(write=False)
        # whole px: the embedded font is hinted and has no kerning, so letters sit at the running sum
        glyph = self.table[letter][dx] = (c0, c1 - c0, values, round(self.font.getlength(letter)))
        return glyph


_LETTERS: dict[tuple[float, float, int], _Letters] = {}


def _letters(em: float, stroke: float, y: float) -> _Letters | None:
    """The cached letters for text at baseline y (image px), or None where y * g is not whole."""
    g = _supersample(em)
    if not (y * g).is_integer():
        return None
    key = (em, stroke, int(y * g) % g)
    found = _LETTERS.get(key)
    if found is None:
        if len(_LETTERS) >= 1024:  # many ems and baselines (``scaled`` mode at odd sizes): start again
            _LETTERS.clear()
        found = _LETTERS[key] = _Letters(em, stroke, key[2])
    return found


@lru_cache(maxsize=64)
def _alpha_table(g: int) -> np.ndarray:
    """Alpha of each coverage sum 0 .. 255 g², by the float32 operations of ``_render_alpha``'s mean
    (sum / g² / 255), so a letter alone gets the same alpha as there, bit for bit."""
    table = np.arange(255 * g * g + 1, dtype=np.float32) / (g * g) / 255
    table.setflags(write=False)
    return table


def _glyph_alpha(text: str, x: float, y: float, letters: _Letters, shape: tuple[int, int]) -> Placed | None:
    """``_render_alpha`` assembled from cached letters, for x * g and y * g whole (hi-res) px.

    The same supersampled glyphs at the same hi-res positions (a letter alone gets FreeType's
    coverage bit for bit), but where two letters' strokes overlap their coverage is added (capped
    at full) rather than composited by FreeType, and every letter loses the partial top hi-res row
    of its stroke that FreeType crops only from a word's tallest letters: where letters touch, the
    coverage is higher by up to ~0.4 (the word's worst pixel: 0.12 for a median word; measured on
    3,000 random words at 224 px), elsewhere it is the same (see ``characters``).
    """
    g, rows, table, spans = letters.g, letters.rows, letters.table, letters.spans
    pen = round(x * g)
    # one scatter-add of the letters' sums (a numpy call per letter would cost more than the sums):
    # word pixel (row, column) is entry (column - c0) * rows + row
    c0, width = pen // g + letters.left, 0
    indices, values = [], []
    for letter in text:
        col, dx = divmod(pen, g)
        c, span, value, advance = table[letter][dx] or letters.render(letter, dx)
        start = col + c - c0
        index = spans.get(start << 8 | span)
        if index is None:
            index = spans[start << 8 | span] = np.arange(start * rows, (start + span) * rows)
        indices.append(index)
        values.append(value)
        if start + span > width:
            width = start + span
        pen += advance
    r0 = round(y * g) // g + letters.row
    total = np.bincount(np.concatenate(indices), np.concatenate(values), width * rows)
    # sum -> alpha by table, capped at full coverage (the clip to the table's last entry)
    alpha = _alpha_table(g).take(total.astype(np.intp), mode="clip").reshape(width, rows).T
    r1, c1 = r0 + rows, c0 + width
    if r0 >= 0 and c0 >= 0 and r1 <= shape[0] and c1 <= shape[1]:
        return r0, c0, alpha
    alpha = alpha[max(0, -r0) : shape[0] - r0, max(0, -c0) : shape[1] - c0]
    if alpha.size == 0:
        return None
    return max(0, r0), max(0, c0), alpha


def _text_alpha(
    text: str, x: float, y: float, em: float, stroke: float, shape: tuple[int, int]
) -> Placed | None:
    """Coverage of anti-aliased text (left end of the baseline at x, y; image px), cropped to ``shape``.

    Text of at least GLYPH_CACHE_EM px whose origin lies on the supersampling grid (every word in
    ``medmnistc`` mode and at 224 px, where x and y are whole px) is assembled from cached letters,
    about 10x faster than rendering each word. Smaller text (``scaled`` mode below about 100 px: a smear
    a few pixels wide) and text between grid points is rendered whole, as it always was.
    """
    if em >= GLYPH_CACHE_EM:
        letters = _letters(em, stroke, y)
        if letters is not None and (x * letters.g).is_integer():
            return _glyph_alpha(text, x, y, letters, shape)
    return _render_alpha(text, x, y, em, stroke, shape)


def _blend_words(image: np.ndarray, words: list[tuple[Placed, np.ndarray]]) -> None:
    """Blend words (coverage, and colour as (3, 1, 1) float32) into a uint8 CHW image in place, in order.

    As blending them all on a float copy of the whole image and rounding once, bit for bit, but only
    the words' boxes are converted: words whose boxes overlap are blended together on one float copy.
    The blend of values in [0, 255] with alpha in [0, 1] stays within [-0.5, 255.5), so rounding
    needs no clip.
    """
    groups: list[tuple[int, int, int, int, list[int]]] = []  # box (r0, r1, c0, c1), word indices
    for k, ((r0, c0, alpha), _) in enumerate(words):
        r1, c1 = r0 + alpha.shape[0], c0 + alpha.shape[1]
        members = [k]
        merged = True
        while merged:  # merge every group this box meets, until it meets none
            merged = False
            for group in groups:
                if r0 < group[1] and group[0] < r1 and c0 < group[3] and group[2] < c1:
                    groups.remove(group)
                    r0, r1, c0, c1 = (
                        min(r0, group[0]),
                        max(r1, group[1]),
                        min(c0, group[2]),
                        max(c1, group[3]),
                    )
                    members += group[4]
                    merged = True
                    break
        groups.append((r0, r1, c0, c1, members))
    for r0, r1, c0, c1, members in groups:
        if len(members) == 1:  # nearly always: the same float32 operations, one pass fewer
            (_, _, alpha), colour = words[members[0]]
            patch = image[:, r0:r1, c0:c1]
            blended = colour - patch
            blended *= alpha
            blended += patch
            patch[...] = np.rint(blended, out=blended)
            continue
        region = image[:, r0:r1, c0:c1].astype(np.float32)
        for k in sorted(members):
            (wr, wc, alpha), colour = words[k]
            patch = region[:, wr - r0 : wr - r0 + alpha.shape[0], wc - c0 : wc - c0 + alpha.shape[1]]
            patch += (colour - patch) * alpha
        image[:, r0:r1, c0:c1] = np.rint(region, out=region)


@register(
    "characters",
    "random coloured words (pen marks and labels on dermoscopy images)",
    needs_rgb=True,
    channels_first=True,
)
def characters(x: np.ndarray, param: tuple[int, int, float], ctx: OpContext) -> np.ndarray:
    """Random coloured lowercase words (pen marks and labels on dermoscopy images); NCHW.

    Words are placed and coloured as medmnistc draws them. Words of at least GLYPH_CACHE_EM px
    on the supersampling grid (all of ``medmnistc`` mode, and 224 px) are assembled from cached
    letters (``_glyph_alpha``), about 10x faster at 224 px than rendering each word whole: against
    that, about a sixth of the changed pixels differ (where letters touch, see ``_glyph_alpha``),
    and the mean absolute change is about 1 % higher (cv2's ink, as recorded in the tests, is
    matched within 2 % either way). ``scaled`` mode below about 100 px renders every word whole, byte for byte as
    before (tests/test_shift_marks.py checks both).
    """
    max_words, max_letters, max_font_scale = param
    size = x.shape[2]
    ref = max(1, round(size / ctx.scale))
    out = x.copy()
    scale, stroke, shape = ctx.scale, ctx.px(FONT_STROKE), (size, size)
    alphabet = string.ascii_lowercase
    for i, generator in enumerate(ctx.rngs):
        rng = ScalarIntegers(generator)  # the image's last draws: same values, faster
        integers = rng.integers
        words = []
        for _ in range(integers(1, max_words + 1)):
            letters = integers(3, max(3, max_letters) + 1)
            font_scale = integers(14, max(14, int(max_font_scale * 100)) + 1) / 100
            text = "".join([alphabet[integers(0, 26)] for _ in range(letters)])
            col = _randint(rng, MARGIN, ref - 8 * letters)
            row = _randint(rng, MARGIN, ref - MARGIN)
            colour = [[[integers(0, 256)]], [[integers(0, 256)]], [[integers(0, 256)]]]
            em = FONT_EM * font_scale * scale  # ctx.px, as for the column and row
            placed = _text_alpha(text, col * scale, row * scale, em, stroke, shape)
            if placed is not None:
                words.append((placed, np.array(colour, dtype=np.float32)))
        _blend_words(out[i], words)
    return out
