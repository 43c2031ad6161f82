"""Intensity and colour corruptions, exactly as PIL and torchvision compute them.

Brightness and contrast are PIL's ``ImageEnhance`` (a blend with a black or a
mean-grey image, computed in 32-bit float and truncated); gamma is
torchvision's 256-entry lookup table; saturation is scikit-image's HSV round
trip. All are deterministic and size-independent.
"""

from __future__ import annotations

import numpy as np

from medaudit.shift.corrupt import OpContext, grey_from_rgb, register


def _blend(base: np.ndarray, x: np.ndarray, factor: float) -> np.ndarray:
    """PIL ``Image.blend(base, x, factor)``: float32 arithmetic, truncated to uint8."""
    out = base.astype(np.float32) + np.float32(factor) * (x.astype(np.float32) - base.astype(np.float32))
    return np.clip(out, 0, 255).astype(np.uint8)


def _brightness(x: np.ndarray, factor: float, ctx: OpContext) -> np.ndarray:
    return _blend(np.zeros_like(x), x, factor)


def _contrast(x: np.ndarray, factor: float, ctx: OpContext) -> np.ndarray:
    """Blend with the image's mean grey level (of its L conversion, rounded)."""
    grey = x if x.shape[-1] == 1 else grey_from_rgb(x)
    mean = np.floor(grey.reshape(len(x), -1).mean(axis=1, dtype=np.float64) + 0.5)
    return _blend(np.broadcast_to(mean[:, None, None, None], x.shape), x, factor)


def _gamma(x: np.ndarray, gamma: float, ctx: OpContext) -> np.ndarray:
    """torchvision ``adjust_gamma`` on a PIL image: int(255.999 * (v/255)^gamma)."""
    table = np.array([int((255 + 1 - 1e-3) * pow(v / 255.0, gamma)) for v in range(256)], dtype=np.uint8)
    return table[x]


register("brightness_up", "brighter: blend with black at a factor above 1")(_brightness)
register("brightness_down", "darker: blend with black at a factor below 1")(_brightness)
register("contrast_up", "more contrast: blend away from the mean grey level")(_contrast)
register("contrast_down", "less contrast: blend towards the mean grey level")(_contrast)
register("gamma_corr_up", "gamma above 1: darker mid-tones")(_gamma)
register("gamma_corr_down", "gamma below 1: brighter mid-tones")(_gamma)


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """scikit-image's ``rgb2hsv`` on [0,1] floats (hue in [0,1); on ties blue wins, then green)."""
    r, g, b = (rgb[..., c] for c in range(3))
    value = np.maximum(np.maximum(r, g), b)
    delta = value - np.minimum(np.minimum(r, g), b)
    flat = delta == 0
    safe = np.where(flat, 1.0, delta)
    saturation = np.where(flat, 0.0, delta / np.where(value == 0, 1.0, value))
    hue = (g - b) / safe
    hue = np.where(g == value, 2.0 + (b - r) / safe, hue)
    hue = np.where(b == value, 4.0 + (r - g) / safe, hue)
    hue = np.where(flat, 0.0, (hue / 6.0) % 1.0)
    return np.stack([hue, saturation, value], axis=-1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """scikit-image's ``hsv2rgb`` with its exact p, q, t expressions per hue sector
    (an algebraically equal closed form rounds differently and moves 8-bit values)."""
    h, s, v = (hsv[..., c] for c in range(3))
    sector = np.floor(h * 6)
    f = h * 6 - sector
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    sector = sector.astype(np.int64) % 6
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    return np.stack([np.choose(sector, [c[channel] for c in choices]) for channel in range(3)], axis=-1)


@register("saturate", "more colour saturation in HSV (grey images become tinted)", needs_rgb=True)
def saturate(x: np.ndarray, delta: float, ctx: OpContext) -> np.ndarray:
    """S <- clip(S + delta) in HSV; grey images become tinted (MedMNIST-C uses it on colour sets only)."""
    hsv = rgb_to_hsv(x / 255.0)
    hsv[..., 1] = np.clip(hsv[..., 1] + delta, 0, 1)
    return (np.clip(hsv_to_rgb(hsv), 0, 1) * 255).astype(np.uint8)
