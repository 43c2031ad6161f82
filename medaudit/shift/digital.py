"""Digital corruptions: pixelation and JPEG compression, bit-exact with PIL.

Pixelate is PIL's BOX resize down by a factor and back up. Instead of one PIL
call per image it applies PIL's own fixed-point resampling coefficients to the
whole batch as two matrix products (horizontal pass first, rounded to 8 bits
in between, exactly as Pillow does), which gives identical pixels much faster.
JPEG goes through PIL per image.
"""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image

from medaudit.shift.corrupt import OpContext, register

_PRECISION_BITS = 32 - 8 - 2  # Pillow's Resample.c for 8-bit images


@functools.lru_cache(maxsize=64)
def box_coefficients(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's BOX-filter weights (out_size x in_size) in its fixed-point integers."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    weights = np.zeros((out_size, in_size))
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        taps = np.array([(x - center + 0.5) / filterscale for x in range(xmin, xmax)])
        k = ((taps > -0.5) & (taps <= 0.5)).astype(np.float64)
        if k.sum():
            k /= k.sum()
        weights[xx, xmin:xmax] = k
    return np.trunc(np.where(weights < 0, -0.5, 0.5) + weights * (1 << _PRECISION_BITS))


def _resample(x: np.ndarray, coefficients: np.ndarray, axis: int) -> np.ndarray:
    """One Pillow pass along ``axis`` (1 = rows, 2 = columns): round-half-up, clip to 8 bits."""
    moved = np.moveaxis(x.astype(np.float64), axis, -1)
    acc = moved @ coefficients.T + (1 << (_PRECISION_BITS - 1))
    out = np.clip(np.floor(acc / (1 << _PRECISION_BITS)), 0, 255).astype(np.uint8)
    return np.moveaxis(out, -1, axis)


def box_resize(x: np.ndarray, size: int) -> np.ndarray:
    """``Image.resize((size, size), Image.BOX)`` on a uint8 NHWC batch of square images."""
    height = x.shape[1]
    if size == height:
        return x.copy()
    horizontal = _resample(x, box_coefficients(height, size), axis=2)
    return _resample(horizontal, box_coefficients(height, size), axis=1)


@register("pixelate")
def pixelate(x: np.ndarray, factor: float, ctx: OpContext) -> np.ndarray:
    """Down to int(size * factor) and back with a box filter (size-relative: same in both modes)."""
    size = x.shape[1]
    small = max(int(size * factor), 1)
    return box_resize(box_resize(x, small), size)


@register("jpeg_compression", needs_rgb=True)
def jpeg_compression(x: np.ndarray, quality: int, ctx: OpContext) -> np.ndarray:
    """PIL JPEG encode at ``quality`` and decode, one image at a time."""
    out = np.empty_like(x)
    for i, image in enumerate(x):
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
            buffer, "JPEG", quality=quality
        )
        buffer.seek(0)
        decoded = np.asarray(Image.open(buffer))
        out[i] = decoded.reshape(image.shape)
    return out
