"""Synthetic confounders: marks, filters and noise a model should ignore but may have learned as shortcuts.

Following "Source Matters" (Juodelyte et al. 2024), which taught ImageNet-initialised
models to follow a laterality tag, a low-pass filter or lower-dose noise instead of the
finding. Every artifact is ``fn(x, strength, ctx, **options) -> x`` on uint8 NHWC batches
(like the shift corruptions, whose ``OpContext`` and per-image seeding it reuses) with
``strength`` in [0, 1]: 0 changes nothing, 1 is the strongest default. Sizes and positions
are fractions of the image width, and marks are drawn supersampled and area-averaged, so a
28 px and a 224 px image carry the same relative artifact (soft partial coverage when small).

Strength mappings (s = strength):

- ``tag``: opacity min(1, 2s) and font size (em) ``size`` x (1 + 1.5 max(0, 2s - 1)): s = 0.5 is
  the paper's setting (an opaque white "R", em 0.06 of the width), s = 1 grows it to 0.15 of
  the width so it stays legible at 28 px.
- ``patch``, ``ruler``, ``stamp``: opacity s at a fixed size.
- ``border``: frame width ``width`` x s of the image width, opaque.
- ``lowpass``: circular low-pass of diameter sqrt(2) - (sqrt(2) - ``diameter``) s as a fraction
  of the spectrum width: s = 0 keeps every frequency, s = 1 keeps the paper's 0.49.
- ``dose_noise``: the clean image is taken as a high-dose acquisition of ``photons`` counts per
  unit intensity; the dose is lowered to N0 = photons x (1 - 0.75 s) by binomial thinning of
  those counts, which is exactly a Poisson(x N0) / N0 acquisition and adds variance
  x (1 / N0 - 1 / photons) to the clean image. s = 1/3 is the paper's 25 % fewer photons,
  s = 1 a quarter of the dose (noise std about 16 grey levels at mid-grey by default).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from medaudit.confounders.config import CORNERS
from medaudit.errors import ConfigError
from medaudit.options import whole_number
from medaudit.registries import artifacts
from medaudit.shift.catalogue import REFERENCE_SIZE
from medaudit.shift.corrupt import CHUNK_VALUES, Images, OpContext, on_uint8_batch, sample_rngs
from medaudit.shift.marks import SUPERSAMPLE_EM, area_downsample, default_font

EDGES: tuple[str, ...] = ("bottom", "top", "left", "right")
MARGIN = 0.05
"""Gap between a mark and the image edge, as a fraction of the width (the paper's tag sits at 0.2)."""
CANVAS_MIN = 4 * REFERENCE_SIZE
"""Smallest side of the supersampled canvas that geometric marks are drawn on."""
FULL_SPECTRUM = math.sqrt(2) + 1e-6
"""Low-pass diameter (fraction of the width) that reaches the spectrum's corners: the identity."""
DOSE_DROP = 0.75
"""Fraction of the photons removed at strength 1 (the paper removes 0.25: strength 1/3)."""

ArtifactFn = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Artifact:
    name: str
    fn: ArtifactFn
    description: str

    @property
    def options(self) -> tuple[str, ...]:
        """Keyword options the artifact accepts (keyword-only parameters of ``fn``)."""
        params = inspect.signature(self.fn).parameters.values()
        return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


# ``artifacts`` (imported above): declared in medaudit/registries.py, filled by ``register_artifact``


def register_artifact(name: str, description: str) -> Callable[[ArtifactFn], ArtifactFn]:
    """Add ``fn(x, strength, ctx, *, option=default, ...)`` to the library under ``name``."""

    def add(fn: ArtifactFn) -> ArtifactFn:
        artifacts.register(name, Artifact(name, fn, description))
        return fn

    return add


def list_artifacts() -> list[tuple[str, str]]:
    """(name, one-line description) of every artifact, sorted by name."""
    return [(name, artifacts.description(name)) for name in artifacts.names()]


# -- option checks ---------------------------------------------------------------------------------


def _fraction(option: str, value: float, *, low: float = 0.0, high: float = 1.0) -> float:
    """A number in (low, high]: sizes and positions are fractions of the width."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not low < value <= high:
        raise ConfigError(f"{option} must be a number in ({low:g}, {high:g}], got {value!r}")
    return float(value)


def _margin(value: float) -> float:
    """Gap to the edge as a fraction of the width, in [0, 0.5)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 0.5:
        raise ConfigError(f"margin must be a number in [0, 0.5), got {value!r}")
    return float(value)


def _intensity(value: float) -> float:
    """A grey level in [0, 1] (0 black, 1 white) for the mark, as 8-bit."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigError(f"value must be a grey level in [0, 1], got {value!r}")
    return float(value) * 255


def _choice(option: str, value: str, choices: Sequence[str]) -> str:
    value = "centre" if value == "center" else value
    if value not in choices:
        raise ConfigError(f"unknown {option} '{value}': choose from {', '.join(choices)}")
    return value


# -- geometry ---------------------------------------------------------------------------------------


def _origin(corner: str, size: int, height: float, width: float, margin: float) -> tuple[float, float]:
    """Top-left (row, col) in px of a height x width box placed at ``corner`` with ``margin`` (fraction)."""
    m = margin * size
    rows = {"top": m, "bottom": size - m - height}
    cols = {"left": m, "right": size - m - width}
    if corner == "centre":
        return (size - height) / 2, (size - width) / 2
    vertical, horizontal = corner.split("-")
    return rows[vertical], cols[horizontal]


def _coverage(start: float, stop: float, size: int) -> np.ndarray:
    """Fraction of each pixel in [0, size) covered by the interval [start, stop): exact area averaging."""
    j = np.arange(size, dtype=np.float64)
    return np.clip(np.minimum(stop, j + 1) - np.maximum(start, j), 0.0, 1.0).astype(np.float32)


def _box(size: int, row: float, col: float, height: float, width: float) -> np.ndarray:
    """Coverage (size x size) of an axis-aligned box with sub-pixel edges."""
    return np.outer(_coverage(row, row + height, size), _coverage(col, col + width, size))


def _blend(x: np.ndarray, alpha: np.ndarray, value: float) -> np.ndarray:
    """Every image moved towards ``value`` (8-bit) by the per-pixel ``alpha`` (H x W), rounded to uint8."""
    image = x.astype(np.float32)
    image += (value - image) * alpha[None, :, :, None]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _readonly(mask: np.ndarray) -> np.ndarray:
    mask.setflags(write=False)
    return mask


# -- geometric marks ---------------------------------------------------------------------------------

TEXT_ANCHORS = {
    "top-left": "lt",
    "top-right": "rt",
    "bottom-left": "lb",
    "bottom-right": "rb",
    "centre": "mm",
}


@lru_cache(maxsize=64)
def _text_mask(text: str, size: int, em: float, corner: str, margin: float) -> np.ndarray:
    """Coverage of ``text`` (em as a fraction of the width) anchored at a corner, area-averaged to size."""
    em_px = em * size
    g = max(1, math.ceil(SUPERSAMPLE_EM / em_px))
    side = size * g
    m = margin * side
    points = {
        "top-left": (m, m),
        "top-right": (side - m, m),
        "bottom-left": (m, side - m),
        "bottom-right": (side - m, side - m),
        "centre": (side / 2, side / 2),
    }
    canvas = Image.new("L", (side, side), 0)
    font = default_font(round(em_px * g, 2))
    ImageDraw.Draw(canvas).text(points[corner], text, fill=255, font=font, anchor=TEXT_ANCHORS[corner])
    return _readonly(area_downsample(np.asarray(canvas, dtype=np.float32) / 255, size))


@register_artifact("tag", "a letter or short word (laterality marker 'R'), like the paper's text tag")
def tag(
    x: np.ndarray,
    strength: float,
    ctx: OpContext,
    *,
    text: str = "R",
    corner: str = "top-left",
    size: float = 0.06,
    margin: float = MARGIN,
    value: float = 1.0,
) -> np.ndarray:
    """Text at a corner; opacity rises to 1 at strength 0.5 (the paper's tag), then the text grows 2.5x."""
    corner = _choice("corner", corner, CORNERS)
    size, margin, level = _fraction("size", size), _margin(margin), _intensity(value)
    if not isinstance(text, str) or not text.strip() or len(text) > 16:
        raise ConfigError(f"text must be a short non-empty string (at most 16 characters), got {text!r}")
    em = size * (1 + 1.5 * max(0.0, 2 * strength - 1))
    alpha = min(1.0, 2 * strength) * _text_mask(text, x.shape[1], em, corner, margin)
    return _blend(x, alpha, level)


@register_artifact("patch", "a filled square (a sticker, electrode or burnt-in box)")
def patch(
    x: np.ndarray,
    strength: float,
    ctx: OpContext,
    *,
    corner: str = "top-left",
    size: float = 0.1,
    margin: float = MARGIN,
    value: float = 1.0,
) -> np.ndarray:
    """A square of side ``size`` x width at a corner, opacity = strength."""
    corner = _choice("corner", corner, CORNERS)
    size, margin, level = _fraction("size", size), _margin(margin), _intensity(value)
    side = x.shape[1]
    row, col = _origin(corner, side, size * side, size * side, margin)
    return _blend(x, strength * _box(side, row, col, size * side, size * side), level)


@register_artifact("border", "a frame around the image (padding or collimation edges differing by site)")
def border(
    x: np.ndarray, strength: float, ctx: OpContext, *, width: float = 0.08, value: float = 0.0
) -> np.ndarray:
    """An opaque frame ``width`` x strength of the image width wide (black by default, like padding)."""
    width, level = _fraction("width", width, high=0.5), _intensity(value)
    side = x.shape[1]
    w = width * strength * side
    inner = _box(side, w, w, side - 2 * w, side - 2 * w)
    return _blend(x, 1 - inner, level)


@lru_cache(maxsize=32)
def _ruler_mask(size: int, edge: str, length: float, ticks: int, margin: float) -> np.ndarray:
    """Coverage of a ruler (base line plus ticks, every fifth one longer) along ``edge``."""
    g = max(1, math.ceil(CANVAS_MIN / size))
    side = size * g
    thick = max(1.0, 0.008 * side)
    base = side - margin * side
    start = (side - length * side) / 2
    canvas = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((start, base - thick, start + length * side, base), fill=255)
    step = length * side / max(1, ticks - 1)
    for k in range(ticks):
        tick = (0.07 if k % 5 == 0 else 0.04) * side
        left = start + k * step - thick / 2
        draw.rectangle((left, base - tick, left + thick, base), fill=255)
    mask = np.asarray(canvas, dtype=np.float32) / 255
    mask = {"bottom": mask, "top": mask[::-1], "left": np.rot90(mask, -1), "right": np.rot90(mask, 1)}[edge]
    return _readonly(area_downsample(np.ascontiguousarray(mask), size))


@register_artifact("ruler", "a ruler / scale bar: a line of tick marks along one edge")
def ruler(
    x: np.ndarray,
    strength: float,
    ctx: OpContext,
    *,
    edge: str = "bottom",
    length: float = 0.6,
    ticks: int = 11,
    margin: float = MARGIN,
    value: float = 1.0,
) -> np.ndarray:
    """Tick marks ``length`` x width long, centred on ``edge``, opacity = strength."""
    edge = _choice("edge", edge, EDGES)
    length, margin, level = _fraction("length", length), _margin(margin), _intensity(value)
    if not whole_number(ticks, 2) or ticks > 200:
        raise ConfigError(f"ticks must be an integer in [2, 200], got {ticks!r}")
    return _blend(x, strength * _ruler_mask(x.shape[1], edge, length, ticks, margin), level)


# -- image processing and acquisition -----------------------------------------------------------------


@register_artifact("lowpass", "a circular FFT low-pass filter (a site's denoising or reconstruction kernel)")
def lowpass(x: np.ndarray, strength: float, ctx: OpContext, *, diameter: float = 0.49) -> np.ndarray:
    """Keep frequencies within a centred disc whose diameter shrinks from the whole spectrum to ``diameter``.

    As the paper: centred 2-D FFT times a binary disc, inverse FFT, real part, clipped; per channel.
    """
    diameter = _fraction("diameter", diameter, high=math.sqrt(2))
    side = x.shape[1]
    keep = FULL_SPECTRUM - (FULL_SPECTRUM - diameter) * strength
    k = np.arange(side) - side // 2
    disc = (k[:, None] ** 2 + k[None, :] ** 2) <= (keep * side / 2) ** 2
    spectrum = np.fft.fftshift(np.fft.fft2(x.astype(np.float64), axes=(1, 2)), axes=(1, 2))
    spectrum *= disc[None, :, :, None]
    image = np.fft.ifft2(np.fft.ifftshift(spectrum, axes=(1, 2)), axes=(1, 2)).real
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


@register_artifact("dose_noise", "Poisson photon noise of a lower dose (a scanner or protocol's noise)")
def dose_noise(x: np.ndarray, strength: float, ctx: OpContext, *, photons: float = 400.0) -> np.ndarray:
    """Lower the dose from ``photons`` per unit intensity to photons x (1 - 0.75 strength), per channel.

    Binomial thinning of the clean image's counts gives the lower-dose Poisson image
    exactly, so strength 0 adds nothing and the mean is kept (up to clipping at white).
    """
    if isinstance(photons, bool) or not isinstance(photons, int | float) or not 10 <= photons <= 1e9:
        raise ConfigError(f"photons must be a number in [10, 1e9], got {photons!r}")
    keep = 1 - DOSE_DROP * strength
    counts = np.rint(x.astype(np.float64) * (photons / 255)).astype(np.int64)
    out = np.empty_like(x)
    for i, rng in enumerate(ctx.rngs):
        thinned = rng.binomial(counts[i], keep)
        out[i] = np.clip(np.rint(thinned * (255 / (keep * photons))), 0, 255)
    return out


# -- user stamp --------------------------------------------------------------------------------------


def _load_stamp(image: str | Path | np.ndarray | None) -> np.ndarray:
    """A 2-D float mask in [0, 1] (1 = stamped) from a path (alpha channel if any, else grey) or array."""
    if image is None:
        raise ConfigError("stamp needs image=PATH or a 2-D array in [0, 1] (1 = stamped)")
    if isinstance(image, str | Path):
        try:
            with Image.open(image) as pil:
                pil.load()
                alpha = pil.mode in ("RGBA", "LA", "PA") or "transparency" in pil.info
                mask = pil.convert("RGBA").getchannel("A") if alpha else pil.convert("L")
        except OSError as exc:
            raise ConfigError(f"cannot read stamp image '{image}': {exc}") from exc
        return np.asarray(mask, dtype=np.float32) / 255
    mask = np.asarray(image)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2 or mask.size == 0:
        raise ConfigError(f"stamp image must be a 2-D mask (H x W), got shape {mask.shape}")
    mask = mask.astype(np.float32)
    if not np.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
        raise ConfigError("stamp image values must lie in [0, 1] (1 = stamped)")
    return mask


@register_artifact("stamp", "a user-supplied mask (a logo, a hospital stamp) placed at a corner")
def stamp(
    x: np.ndarray,
    strength: float,
    ctx: OpContext,
    *,
    image: str | Path | np.ndarray | None = None,
    corner: str = "top-left",
    size: float = 0.2,
    margin: float = MARGIN,
    value: float = 1.0,
) -> np.ndarray:
    """The mask resized (area-averaged) to ``size`` x width wide, aspect kept, opacity = strength x mask."""
    mask = _load_stamp(image)
    corner = _choice("corner", corner, CORNERS)
    size, margin, level = _fraction("size", size), _margin(margin), _intensity(value)
    side = x.shape[1]
    width = max(1, round(size * side))
    height = max(1, min(side, round(width * mask.shape[0] / mask.shape[1])))
    small = np.asarray(Image.fromarray(mask).resize((width, height), Image.Resampling.BOX), dtype=np.float32)
    row, col = (round(v) for v in _origin(corner, side, height, width, margin))
    alpha = np.zeros((side, side), dtype=np.float32)
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + height, side), min(col + width, side)
    alpha[r0:r1, c0:c1] = small[r0 - row : r1 - row, c0 - col : c1 - col]
    return _blend(x, strength * np.clip(alpha, 0, 1), level)


# -- public API --------------------------------------------------------------------------------------


def _check_options(spec: Artifact, options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ConfigError(
            f"artifact '{spec.name}' has no option {', '.join(unknown)}: choose from {', '.join(spec.options)}"
        )


def strength_level(strength: float) -> int:
    """The integer level that seeds an artifact at ``strength`` (per-mille)."""
    return round(strength * 1000)


def apply_uint8(
    images: np.ndarray,
    name: str,
    strength: float,
    seed: int = 0,
    *,
    indices: Sequence[int],
    **options: Any,
) -> np.ndarray:
    """The artifact on uint8 NHWC images, in chunks; each image has its own generator, so chunks don't matter."""
    spec = artifacts.get(name)
    _check_options(spec, options)
    rngs = sample_rngs(seed, indices, name, strength_level(strength))
    scale = images.shape[1] / REFERENCE_SIZE
    step = max(1, CHUNK_VALUES // max(1, images[0].size))
    out = np.empty_like(images)
    for start in range(0, len(images), step):
        x = np.ascontiguousarray(images[start : start + step])
        ctx = OpContext(rngs=rngs[start : start + step], scale=scale)
        result = spec.fn(x, float(strength), ctx, **options)
        assert result.dtype == np.uint8 and result.shape == x.shape, f"{name} changed dtype or shape"
        out[start : start + step] = result
    return out


def apply_artifact(
    images: Images,
    name: str,
    strength: float,
    seed: int = 0,
    *,
    indices: Sequence[int] | None = None,
    **options: Any,
) -> Images:
    """Add artifact ``name`` at ``strength`` to NCHW images (uint8, or float in [0, 1] quantised to 8 bits).

    Deterministic per (seed, sample index, artifact, strength); ``indices`` are the
    sample indices (default 0..N-1), so an image gives the same result alone or in any
    batch. Returns the same type, dtype, device and shape; strength 0 returns an
    unchanged copy of the 8-bit image (options are still checked).
    """
    if isinstance(strength, bool) or not isinstance(strength, int | float) or not 0 <= strength <= 1:
        raise ConfigError(f"strength must be a number in [0, 1], got {strength!r}")

    def run(nhwc: np.ndarray, sample_indices: list[int]) -> np.ndarray:
        if strength == 0:  # identity, but the options are still checked
            apply_uint8(nhwc[:1], name, 0.0, seed, indices=sample_indices[:1], **options)
            return nhwc.copy()
        return apply_uint8(nhwc, name, strength, seed, indices=sample_indices, **options)

    return on_uint8_batch(images, run, "apply_artifact()", indices)
