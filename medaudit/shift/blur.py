"""Blur corruptions as batched torch operations (no OpenCV, no ImageMagick).

- defocus: MedMNIST-C's disk kernel (itself smoothed by a small Gaussian),
  correlated with reflect-101 borders like ``cv2.filter2D``;
- motion: ImageMagick's one-sided Gaussian line kernel along a random angle
  per image in [-45, 45] degrees, as a sum of shifted copies sampled with
  edge-clamped borders;
- zoom: the mean of the image and its centre zooms, with scipy's ``zoom``
  (order 1) coordinate mapping done by ``grid_sample``;
- gaussian: torchvision's ``gaussian_blur`` (sigma = 0.3((k-1)/2 - 1) + 0.8).

In ``scaled`` mode every radius, sigma and kernel size shrinks with the image
(``ctx.px``) and sub-pixel kernels are rendered by supersampling or bilinear
taps, so severity stays continuous at 28 px instead of rounding to nothing.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from medaudit.shift.corrupt import OpContext, register


def _to_torch(x: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float64 NCHW in [0,1] (float64 keeps 8-bit truncation faithful)."""
    return torch.from_numpy(x).permute(0, 3, 1, 2).to(torch.float64) / 255.0


def _truncate(x: torch.Tensor) -> np.ndarray:
    """[0,1] NCHW -> uint8 NHWC, truncated like ``(clip(x) * 255).astype(uint8)``."""
    return (x.clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _round(x: torch.Tensor) -> np.ndarray:
    """[0,255] NCHW -> uint8 NHWC, rounded (what an 8-bit image library returns)."""
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _correlate(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Same 2D kernel on every channel, reflect-101 borders (cv2 and torchvision default)."""
    channels = x.shape[1]
    kh, kw = kernel.shape
    padded = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2), mode="reflect")
    weight = kernel.to(x.dtype).expand(channels, 1, kh, kw)
    return F.conv2d(padded, weight, groups=channels)


def _gaussian_1d(size: int, sigma: float) -> np.ndarray:
    half = (size - 1) / 2
    g = np.exp(-0.5 * (np.linspace(-half, half, size) / sigma) ** 2)
    return g / g.sum()


def disk_kernel(radius: float, alias_sigma: float, supersample: int = 1) -> np.ndarray:
    """MedMNIST-C's ``disk``: a normalised disk smoothed by a 3x3 (5x5 beyond radius 8) Gaussian.

    ``supersample`` > 1 renders the disk's area coverage per pixel instead of a
    0/1 test of the pixel centre (used for sub-pixel radii in scaled mode).
    """
    published = 8 if radius <= 8 else int(radius)  # grid -8..8, or -radius..radius beyond 8
    half = published if supersample == 1 else max(1, math.ceil(radius) + 1)
    ksize = 3 if radius <= 8 else 5
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    grid = np.arange(-half, half + 1)
    fine = (grid[:, None] + offsets[None, :]).ravel()
    xx, yy = np.meshgrid(fine, fine)
    inside = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    disk = inside.reshape(len(grid), supersample, len(grid), supersample).mean(axis=(1, 3))
    if disk.sum() == 0:  # radius below the centre pixel's reach
        disk[half, half] = 1.0
    disk /= disk.sum()
    g = _gaussian_1d(ksize, alias_sigma) if alias_sigma > 0 else np.eye(1, ksize, ksize // 2)[0]
    pad = ksize // 2
    padded = np.pad(disk, pad, mode="reflect")  # numpy 'reflect' = OpenCV's reflect-101
    rows = sum(g[i] * padded[i : i + disk.shape[0], :] for i in range(ksize))
    return sum(g[i] * rows[:, i : i + disk.shape[1]] for i in range(ksize)).astype(np.float32)


@register("defocus_blur", needs_rgb=False)
def defocus_blur(x: np.ndarray, param: tuple[float, float], ctx: OpContext) -> np.ndarray:
    radius, alias = param
    if ctx.scale == 1.0:
        kernel = disk_kernel(radius, alias)
    else:
        kernel = disk_kernel(ctx.px(radius), ctx.px(alias), supersample=8)
    return _truncate(_correlate(_to_torch(x), torch.from_numpy(kernel)))


@register("gaussian_blur", needs_rgb=False)
def gaussian_blur(x: np.ndarray, kernel_size: int, ctx: OpContext) -> np.ndarray:
    """torchvision's kernel and sigma; scaled mode shrinks sigma and sizes the kernel to 3 sigma."""
    sigma = 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8
    if ctx.scale != 1.0:
        sigma = ctx.px(sigma)
        kernel_size = 2 * math.ceil(3 * sigma) + 1
    g = torch.from_numpy(_gaussian_1d(kernel_size, sigma)).to(torch.float32)
    image = torch.from_numpy(x).permute(0, 3, 1, 2).to(torch.float32)
    return _round(_correlate(image, torch.outer(g, g)))


def _sample(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of x (NCHW) at pixel coordinates rows, cols (N,H,W), edges clamped."""
    height, width = x.shape[-2:]
    grid = torch.stack([2 * cols / (width - 1) - 1, 2 * rows / (height - 1) - 1], dim=-1)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=True)


@register("motion_blur", needs_rgb=False)
def motion_blur(x: np.ndarray, param: tuple[float, float], ctx: OpContext) -> np.ndarray:
    """ImageMagick ``MotionBlurImage(radius, sigma, angle)``, angle ~ U(-45, 45) per image.

    Taps i = 0 .. 2*ceil(radius) with weights exp(-i^2 / 2 sigma^2) along the
    angle; at 224 px the offsets are rounded to whole pixels as ImageMagick
    does, in scaled mode they shrink by ``ctx.scale`` and are sampled bilinearly.
    """
    radius, sigma = param
    width = int(2 * math.ceil(radius) + 1)
    taps = np.arange(width)
    weights = np.exp(-(taps.astype(np.float64) ** 2) / (2 * sigma * sigma))
    weights /= weights.sum()
    angles = np.deg2rad([rng.uniform(-45, 45) for rng in ctx.rngs])
    image = torch.from_numpy(x).permute(0, 3, 1, 2).to(torch.float32)
    height, side = image.shape[-2:]
    base_rows, base_cols = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(side, dtype=torch.float32), indexing="ij"
    )
    out = torch.zeros_like(image)
    for i, weight in zip(taps, weights, strict=True):
        dx, dy = i * np.cos(angles), i * np.sin(angles)
        if ctx.scale == 1.0:
            dx, dy = np.ceil(dx - 0.5), np.ceil(dy - 0.5)
        else:
            dx, dy = dx * ctx.scale, dy * ctx.scale
        rows = base_rows + torch.from_numpy(dy).float()[:, None, None]
        cols = base_cols + torch.from_numpy(dx).float()[:, None, None]
        out += float(weight) * _sample(image, rows, cols)
    return _round(out)


def _zoom_factors(spec: tuple[float, float, float]) -> np.ndarray:
    return np.arange(*spec)


@register("zoom_blur", needs_rgb=False)
def zoom_blur(x: np.ndarray, spec: tuple[float, float, float], ctx: OpContext) -> np.ndarray:
    """Mean of the image and its zooms by each factor about the centre (size-relative)."""
    image = _to_torch(x).float()
    size = image.shape[-1]
    total = image.clone()
    factors = _zoom_factors(spec)
    for factor in factors:
        crop = int(np.ceil(size / factor))
        top = (size - crop) // 2
        zoomed = round(float(crop * factor))
        trim = (zoomed - size) // 2
        step = (crop - 1) / (zoomed - 1) if zoomed > 1 else 0.0
        coords = top + (torch.arange(size, dtype=torch.float32) + trim) * step
        rows, cols = torch.meshgrid(coords, coords, indexing="ij")
        grid_rows = rows.expand(len(image), size, size)
        grid_cols = cols.expand(len(image), size, size)
        total += _sample(image, grid_rows, grid_cols)
    return _truncate((total / (len(factors) + 1)).double())
