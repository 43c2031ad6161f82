"""``corrupt()``: any MedMNIST-C corruption on a batch, reproducible per image.

Every corruption is a function ``fn(x, param, ctx) -> x`` on uint8 NHWC numpy
batches (the MedMNIST-C pipeline works on 8-bit images and stores 8-bit
results), or NCHW ones when registered ``channels_first``. Each image gets its own ``numpy.random.Generator`` seeded from
(seed, sample index, corruption, severity), so one image can be regenerated on
its own and a result never depends on batch size or order.

Grey images follow the MedMNIST-C pipeline: corruptions whose randomness or
colour acts per channel (noise, JPEG, saturation, coloured marks) run on the
grey image repeated to RGB and are converted back with PIL's L formula; the
others act on the grey channel directly, which gives the same result.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import torch

from medaudit.errors import ConfigError
from medaudit.registries import corruptions
from medaudit.shift.catalogue import PARAMS, REFERENCE_SIZE, params_source, severity_param

Mode = Literal["medmnistc", "scaled"]
Images = TypeVar("Images", torch.Tensor, np.ndarray)  # a batch comes back as the type it came in
CHUNK_VALUES = 1 << 18
MODES: tuple[str, ...] = ("medmnistc", "scaled")


@dataclass(frozen=True)
class OpContext:
    """What a corruption needs besides the images and its parameter."""

    rngs: Sequence[np.random.Generator]
    """One generator per image, in batch order."""
    scale: float
    """Factor for pixel-unit parameters: 1.0 = the published 224 px values."""

    def px(self, value: float) -> float:
        """A pixel-unit parameter at this image size."""
        return value * self.scale


CorruptionFn = Callable[[np.ndarray, Any, OpContext], np.ndarray]


@dataclass(frozen=True)
class Corruption:
    name: str
    fn: CorruptionFn
    needs_rgb: bool
    """Run grey images as RGB and convert back (randomness or colour per channel)."""
    description: str
    """One line for ``medaudit list corruptions``."""
    channels_first: bool = False
    """``fn`` takes and returns NCHW batches: marks that treat every channel alike then skip the
    NCHW->NHWC->NCHW copies, which at 224 px cost more than the marks themselves."""


# ``corruptions`` (imported above): declared in medaudit/registries.py, filled by ``register``


def register(
    name: str, description: str, *, needs_rgb: bool = False, channels_first: bool = False
) -> Callable[[CorruptionFn], CorruptionFn]:
    def add(fn: CorruptionFn) -> CorruptionFn:
        corruptions.register(name, Corruption(name, fn, needs_rgb, description, channels_first))
        return fn

    return add


def default_mode(size: int) -> Mode:
    """Published parameters at 224 px; scaled ones anywhere else."""
    return "medmnistc" if size == REFERENCE_SIZE else "scaled"


def pixel_scale(mode: str, size: int) -> float:
    if mode not in MODES:
        raise ConfigError(f"unknown mode '{mode}': choose medmnistc or scaled")
    return 1.0 if mode == "medmnistc" else size / REFERENCE_SIZE


def sample_rngs(
    seed: int, indices: Sequence[int], corruption: str, severity: int
) -> list[np.random.Generator]:
    """One generator per sample from (seed, index, corruption, severity)."""
    tag = zlib.crc32(corruption.encode())
    return [np.random.Generator(np.random.PCG64([seed, int(i), tag, severity])) for i in indices]


def grey_from_rgb(x: np.ndarray) -> np.ndarray:
    """PIL's ``convert('L')``: ITU-R 601-2 luma in 16-bit fixed point, rounded."""
    r, g, b = (x[..., c].astype(np.uint32) for c in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[..., None]


def param_source(corruption: str, dataset: str | None, modality: str | None) -> str:
    """The dataset whose table gives ``corruption``'s parameters.

    The dataset's (or modality's) own table when it lists the corruption, else
    the first MedMNIST-C dataset that does (a user may ask for any corruption).
    """
    corruptions.get(corruption)  # unknown names fail here with a suggestion
    source = params_source(dataset, modality)
    if corruption in PARAMS[source]:
        return source
    return next(name for name, table in PARAMS.items() if corruption in table)


def apply_uint8(
    images: np.ndarray,
    corruption: str,
    severity: int,
    seed: int,
    *,
    source: str,
    mode: str,
    indices: Sequence[int],
) -> np.ndarray:
    """The corruption on uint8 NHWC images (C = 1 or 3); the engine behind ``corrupt``.

    Returns NHWC; for channels-first corruptions, a transposed view of a contiguous NCHW array.

    Works through the batch in pieces of about ``CHUNK_VALUES`` values, so the
    float intermediates of an operation stay in cache (3x faster for the blurs
    at 224 px than whole-batch arrays); results do not depend on it, since
    every image has its own generator.
    """
    spec = corruptions.get(corruption)
    param = severity_param(source, corruption, severity)
    scale = pixel_scale(mode, images.shape[1])
    rngs = sample_rngs(seed, indices, corruption, severity)
    grey = images.shape[-1] == 1
    expand = grey and spec.needs_rgb
    step = max(1, CHUNK_VALUES // (images[0].size * (3 if expand else 1)))
    # channels-first corruptions write into an NCHW array seen as NHWC, so that the caller's
    # transpose back to NCHW (``on_uint8_batch``) finds it contiguous and copies nothing
    axis = 1 if spec.channels_first else -1
    if spec.channels_first:
        out = np.empty_like(images.transpose(0, 3, 1, 2), order="C").transpose(0, 2, 3, 1)
    else:
        out = np.empty_like(images)
    for start in range(0, len(images), step):
        x = images[start : start + step]
        if spec.channels_first:  # a view, contiguous when the images came from an NCHW batch
            x = x.transpose(0, 3, 1, 2)
        x = np.repeat(x, 3, axis=axis) if expand else np.ascontiguousarray(x)
        result = spec.fn(x, param, OpContext(rngs=rngs[start : start + step], scale=scale))
        assert result.dtype == np.uint8 and result.shape == x.shape, f"{corruption} changed dtype or shape"
        if spec.channels_first:
            result = result.transpose(0, 2, 3, 1)
        out[start : start + step] = grey_from_rgb(result) if expand else result
    return out


def corrupt(
    images: Images,
    corruption: str,
    severity: int,
    seed: int = 0,
    *,
    dataset: str | None = None,
    modality: str | None = None,
    mode: str | None = None,
    indices: Sequence[int] | None = None,
) -> Images:
    """Corrupt a batch of NCHW images: float in [0,1] (quantised to 8 bits) or uint8.

    ``dataset`` or ``modality`` picks the parameter table, ``mode`` the pixel
    scale (default: ``medmnistc`` at 224 px, ``scaled`` elsewhere), ``indices``
    the sample indices that seed each image (default 0..N-1). Returns the same
    type, dtype and shape.
    """
    source = param_source(corruption, dataset, modality)

    def run(nhwc: np.ndarray, sample_indices: list[int]) -> np.ndarray:
        chosen = mode or default_mode(nhwc.shape[1])
        return apply_uint8(
            nhwc, corruption, severity, seed, source=source, mode=chosen, indices=sample_indices
        )

    return on_uint8_batch(images, run, "corrupt()", indices)


def on_uint8_batch(
    images: Images,
    fn: Callable[[np.ndarray, list[int]], np.ndarray],
    caller: str,
    indices: Sequence[int] | None,
) -> Images:
    """The public-API wrapper of a uint8 NHWC batch operation (corruptions, artifacts).

    Checks NCHW square images with 1 or 3 channels and the indices that seed each
    image (default 0..N-1), quantises float images in [0,1] to 8 bits, and returns
    the same type, dtype, device and shape.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ConfigError(f"{caller} takes NCHW images with 1 or 3 channels, got shape {tuple(images.shape)}")
    n, _, height, width = images.shape
    if height != width:
        raise ConfigError(f"{caller} takes square images, got {height}x{width}")
    if indices is None:
        indices = range(n)
    elif len(indices) != n:
        raise ConfigError(f"{len(indices)} indices for {n} images")
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    floating = array.dtype != np.uint8
    if floating:
        array = np.clip(np.rint(array.astype(np.float32) * 255), 0, 255).astype(np.uint8)
    out = np.ascontiguousarray(fn(array.transpose(0, 2, 3, 1), list(indices)).transpose(0, 3, 1, 2))
    if not isinstance(images, torch.Tensor):
        return (out / 255).astype(images.dtype) if floating else out
    tensor = torch.from_numpy(out)
    return (tensor.to(images.dtype) / 255 if floating else tensor).to(images.device)
