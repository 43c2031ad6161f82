"""Noise corruptions: per-element draws from each image's own generator.

As in MedMNIST-C the noisy intensity in [0,1] is multiplied by 255 and
truncated (not rounded) to 8 bits.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from medaudit.shift.corrupt import OpContext, register


def _per_image(
    x: np.ndarray, ctx: OpContext, corrupt_one: Callable[[np.random.Generator, np.ndarray], np.ndarray]
) -> np.ndarray:
    """Each image's float intensity through ``corrupt_one`` with its own generator, to 8 bits."""
    out = np.empty_like(x)
    for i, (rng, image) in enumerate(zip(ctx.rngs, x, strict=True)):
        out[i] = _to_uint8(corrupt_one(rng, image / 255.0))
    return out


def _to_uint8(intensity: np.ndarray) -> np.ndarray:
    return (np.clip(intensity, 0, 1) * 255).astype(np.uint8)


@register("gaussian_noise", "additive Gaussian noise", needs_rgb=True)
def gaussian_noise(x: np.ndarray, sigma: float, ctx: OpContext) -> np.ndarray:
    """x + N(0, sigma)."""
    return _per_image(x, ctx, lambda rng, v: v + rng.normal(scale=sigma, size=v.shape))


@register("speckle_noise", "multiplicative noise (ultrasound and OCT speckle)", needs_rgb=True)
def speckle_noise(x: np.ndarray, sigma: float, ctx: OpContext) -> np.ndarray:
    """x + x * N(0, sigma): multiplicative, as ultrasound and OCT speckle."""
    return _per_image(x, ctx, lambda rng, v: v + v * rng.normal(scale=sigma, size=v.shape))


@register("shot_noise", "Poisson photon noise", needs_rgb=True)
def shot_noise(x: np.ndarray, photons: float, ctx: OpContext) -> np.ndarray:
    """Poisson(x * photons) / photons: fewer photons, more noise."""
    return _per_image(x, ctx, lambda rng, v: rng.poisson(v * photons) / float(photons))


@register("impulse_noise", "salt and pepper: random pixels set to black or white", needs_rgb=True)
def impulse_noise(x: np.ndarray, amount: float, ctx: OpContext) -> np.ndarray:
    """Salt and pepper: each element flipped with probability ``amount``, half to 0, half to 1.

    scikit-image's ``random_noise(mode='s&p')``, which MedMNIST-C calls, per element.
    """

    def flip(rng: np.random.Generator, v: np.ndarray) -> np.ndarray:
        draws = rng.random((2, *v.shape))
        return np.where(draws[0] < amount, (draws[1] < 0.5).astype(np.float64), v)

    return _per_image(x, ctx, flip)
