"""Digital corruptions: pixelation and JPEG compression, through PIL per image.

PIL's C resampler and codec are the reference operations and are fast; a
batched re-implementation of BOX resampling was slower than calling PIL.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from medaudit.shift.corrupt import OpContext, register


@register("pixelate", "downsample and upsample with a box filter (blocky pixels)")
def pixelate(x: np.ndarray, factor: float, ctx: OpContext) -> np.ndarray:
    """Down to int(size * factor) and back with a box filter (size-relative: same in both modes)."""
    size = x.shape[1]
    small = (max(int(size * factor), 1),) * 2
    out = np.empty_like(x)
    for i, image in enumerate(x):
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        out[i] = np.asarray(
            pil.resize(small, Image.Resampling.BOX).resize((size, size), Image.Resampling.BOX)
        ).reshape(image.shape)
    return out


@register("jpeg_compression", "lossy JPEG encode and decode at a low quality")
def jpeg_compression(x: np.ndarray, quality: int, ctx: OpContext) -> np.ndarray:
    """PIL JPEG encode at ``quality`` and decode, one image at a time.

    Grey images are encoded as L: bit-identical to MedMNIST-C's RGB round trip
    and its conversion back (checked on 1,920 images), at half the cost.
    """
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
