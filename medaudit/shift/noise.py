"""Noise corruptions: per-element draws from each image's own generator.

As in MedMNIST-C the noisy intensity in [0,1] is multiplied by 255 and
truncated (not rounded) to 8 bits.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from medaudit.shift.corrupt import OpContext, register


def _noisy(
    x: np.ndarray, ctx: OpContext, draw: Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]
) -> np.ndarray:
    """Per-image draws (shape of one image), combined into the batch."""
    return np.stack([draw(rng, x.shape[1:]) for rng in ctx.rngs])


def _to_uint8(intensity: np.ndarray) -> np.ndarray:
    return (np.clip(intensity, 0, 1) * 255).astype(np.uint8)


@register("gaussian_noise", needs_rgb=True)
def gaussian_noise(x: np.ndarray, sigma: float, ctx: OpContext) -> np.ndarray:
    """x + N(0, sigma)."""
    noise = _noisy(x, ctx, lambda rng, shape: rng.normal(scale=sigma, size=shape))
    return _to_uint8(x / 255.0 + noise)


@register("speckle_noise", needs_rgb=True)
def speckle_noise(x: np.ndarray, sigma: float, ctx: OpContext) -> np.ndarray:
    """x + x * N(0, sigma): multiplicative, as ultrasound and OCT speckle."""
    noise = _noisy(x, ctx, lambda rng, shape: rng.normal(scale=sigma, size=shape))
    intensity = x / 255.0
    return _to_uint8(intensity + intensity * noise)


@register("shot_noise", needs_rgb=True)
def shot_noise(x: np.ndarray, photons: float, ctx: OpContext) -> np.ndarray:
    """Poisson(x * photons) / photons: fewer photons, more noise."""
    intensity = x / 255.0
    counts = np.stack([rng.poisson(img * photons) for rng, img in zip(ctx.rngs, intensity, strict=True)])
    return _to_uint8(counts / float(photons))


@register("impulse_noise", needs_rgb=True)
def impulse_noise(x: np.ndarray, amount: float, ctx: OpContext) -> np.ndarray:
    """Salt and pepper: each element flipped with probability ``amount``, half to 0, half to 1.

    scikit-image's ``random_noise(mode='s&p')``, which MedMNIST-C calls, per element.
    """
    draws = _noisy(x, ctx, lambda rng, shape: rng.random((2, *shape)))
    flipped, salt = draws[:, 0] < amount, draws[:, 1] < 0.5
    return _to_uint8(np.where(flipped, salt.astype(np.float64), x / 255.0))
