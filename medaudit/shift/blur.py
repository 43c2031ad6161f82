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
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from medaudit.shift.corrupt import OpContext, register


def _to_torch(x: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float64 NCHW in [0,1] (float64 keeps 8-bit truncation faithful)."""
    return torch.from_numpy(x).permute(0, 3, 1, 2).to(torch.float64) / 255.0


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[0,1] -> uint8, truncated like ``(clip(x) * 255).astype(uint8)``."""
    return (x.clamp(0, 1) * 255).to(torch.uint8)


def _truncate(x: torch.Tensor) -> np.ndarray:
    """[0,1] NCHW -> uint8 NHWC, truncated like ``(clip(x) * 255).astype(uint8)``."""
    return _to_uint8(x).permute(0, 2, 3, 1).contiguous().numpy()


def _round(x: torch.Tensor) -> np.ndarray:
    """[0,255] NCHW -> uint8 NHWC, rounded (what an 8-bit image library returns)."""
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _correlate(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Same 2D kernel on every channel, reflect-101 borders (torchvision's gaussian_blur)."""
    channels = x.shape[1]
    kh, kw = kernel.shape
    padded = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2), mode="reflect")
    weight = kernel.to(x.dtype).expand(channels, 1, kh, kw)
    return F.conv2d(padded, weight, groups=channels)


def fft_correlate(padded: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Valid correlation of padded NCHW images with one kernel per image ((N or 1), kh, kw), by FFT.

    Large and per-image kernels (a 17x17 disk, an 83x83 motion line) cost the
    same as small ones this way; float64 keeps the result within 1e-12 of a
    direct sum, so 8-bit truncation matches the reference.
    """
    return correlate_spectrum(padded, kernel_spectrum(kernels, tuple(padded.shape[-2:])), kernels.shape[-2:])


def kernel_spectrum(kernels: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """What ``fft_correlate`` multiplies the images' spectrum by, for padded images of ``size``."""
    return torch.fft.rfft2(kernels.flip(-2, -1)[:, None], s=size)


def correlate_spectrum(
    padded: torch.Tensor, spectrum: torch.Tensor, kernel_size: tuple[int, ...]
) -> torch.Tensor:
    """``fft_correlate`` with the kernels' spectrum already computed."""
    size = padded.shape[-2:]
    full = torch.fft.irfft2(torch.fft.rfft2(padded, s=size) * spectrum, s=size)
    return full[..., kernel_size[0] - 1 :, kernel_size[1] - 1 :]


def _gaussian_1d(size: int, sigma: float) -> np.ndarray:
    half = (size - 1) / 2
    g = np.exp(-0.5 * (np.linspace(-half, half, size) / sigma) ** 2)
    return g / g.sum()


def _opencv_blur3(disk: np.ndarray, sigma: float) -> np.ndarray:
    """``cv2.GaussianBlur(disk, (3, 3), sigma)`` on float32, reproducing OpenCV's arithmetic:
    separable, symmetric taps added first, float64 products rounded to float32 per pass,
    reflect-101 border. (A float64 blur differs by one float32 step, and that step decides
    8-bit truncation on flat regions.)"""
    g = np.exp(-np.array([1.0, 0.0, 1.0]) / (2 * sigma * sigma))
    g = (g / g.sum()).astype(np.float32)
    side, centre = float(g[0]), float(g[1])
    p = np.pad(disk, 1, mode="reflect")
    rows = (p[:, 1:-1].astype(np.float64) * centre + (p[:, :-2] + p[:, 2:]).astype(np.float64) * side).astype(
        np.float32
    )
    middle = (rows[1:-1] * g[1]).astype(np.float64)
    return ((rows[:-2] + rows[2:]).astype(np.float64) * side + middle).astype(np.float32)


def disk_kernel(radius: float, alias_sigma: float, supersample: int = 1) -> np.ndarray:
    """MedMNIST-C's ``disk``: a normalised disk smoothed by a 3x3 (5x5 beyond radius 8) Gaussian.

    The published kernels (``supersample`` 1, radius <= 8) are bit-exact with
    the float32 OpenCV computation. ``supersample`` > 1 renders the disk's area
    coverage per pixel instead of a 0/1 test of the pixel centre (used for
    sub-pixel radii in scaled mode).
    """
    published = 8 if radius <= 8 else int(radius)  # grid -8..8, or -radius..radius beyond 8
    half = published if supersample == 1 else max(1, math.ceil(radius) + 1)
    ksize = 3 if radius <= 8 else 5
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    grid = np.arange(-half, half + 1)
    fine = (grid[:, None] + offsets[None, :]).ravel()
    xx, yy = np.meshgrid(fine, fine)
    inside = (xx**2 + yy**2 <= radius**2).astype(np.float32)
    disk = inside.reshape(len(grid), supersample, len(grid), supersample).mean(axis=(1, 3))
    if disk.sum() == 0:  # radius below the centre pixel's reach
        disk[half, half] = 1.0
    disk /= disk.sum()
    if ksize == 3 and alias_sigma > 0:
        return _opencv_blur3(disk, alias_sigma)
    g = _gaussian_1d(ksize, alias_sigma) if alias_sigma > 0 else np.eye(1, ksize, ksize // 2)[0]
    pad = ksize // 2
    padded = np.pad(disk.astype(np.float64), pad, mode="reflect")  # numpy 'reflect' = OpenCV's reflect-101
    rows = sum(g[i] * padded[i : i + disk.shape[0], :] for i in range(ksize))
    return sum(g[i] * rows[:, i : i + disk.shape[1]] for i in range(ksize)).astype(np.float32)


@lru_cache(maxsize=16)
def _defocus_spectrum(radius: float, alias: float, scale: float, size: int) -> tuple[torch.Tensor, int]:
    """The disk kernel's spectrum for images of ``size`` px, and the kernel's side: computed once per
    batch, not per chunk of images (at 224 px a chunk is one image, and this FFT a seventh of its work)."""
    if scale == 1.0:
        kernel = disk_kernel(radius, alias)
    else:
        kernel = disk_kernel(radius * scale, alias * scale, supersample=8)
    padded = size + 2 * (kernel.shape[0] // 2)
    return kernel_spectrum(torch.from_numpy(kernel).double()[None], (padded, padded)), kernel.shape[0]


@register("defocus_blur", "disc-kernel blur of an out-of-focus lens", needs_rgb=False, channels_first=True)
def defocus_blur(x: np.ndarray, param: tuple[float, float], ctx: OpContext) -> np.ndarray:
    """NCHW in and out: the FFT works on NCHW, so no NHWC round trip."""
    radius, alias = param
    spectrum, side = _defocus_spectrum(radius, alias, ctx.scale, x.shape[-1])
    half = side // 2
    images = torch.from_numpy(x).to(torch.float64) / 255.0
    padded = F.pad(images, (half, half, half, half), mode="reflect")  # OpenCV's default border
    return _to_uint8(correlate_spectrum(padded, spectrum, (side, side))).contiguous().numpy()


@register("gaussian_blur", "Gaussian blur (torchvision's kernel and sigma)", needs_rgb=False)
def gaussian_blur(x: np.ndarray, kernel_size: int, ctx: OpContext) -> np.ndarray:
    """torchvision's kernel and sigma; scaled mode shrinks sigma and sizes the kernel to 3 sigma."""
    sigma = 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8
    if ctx.scale != 1.0:
        sigma = ctx.px(sigma)
        kernel_size = 2 * math.ceil(3 * sigma) + 1
    half = (kernel_size - 1) * 0.5
    pdf = torch.exp(
        -0.5 * (torch.linspace(-half, half, kernel_size) / sigma).pow(2)
    )  # torchvision's float32 kernel
    g = pdf / pdf.sum()
    g[g < 1e-30] = 0.0  # denormal taps (tiny sigma in scaled mode) make the convolution ~6x slower
    image = torch.from_numpy(x).permute(0, 3, 1, 2).to(torch.float32)
    return _round(_correlate(image, torch.outer(g, g)))


@register(
    "motion_blur", "blur along a random direction per image (camera or patient motion)", needs_rgb=False
)
def motion_blur(x: np.ndarray, param: tuple[float, float], ctx: OpContext) -> np.ndarray:
    """ImageMagick ``MotionBlurImage(radius, sigma, angle)``, angle ~ U(-45, 45) per image.

    Taps i = 0 .. 2*ceil(radius) with weights exp(-i^2 / 2 sigma^2) along the
    angle, edge pixels repeated beyond the border. At 224 px the offsets are
    rounded to whole pixels as ImageMagick does; in scaled mode they shrink by
    ``ctx.scale`` and are splatted bilinearly. The taps of each image form one
    line kernel, applied to the batch by FFT.
    """
    radius, sigma = param
    taps = np.arange(int(2 * math.ceil(radius) + 1), dtype=np.float64)
    weights = np.exp(-(taps**2) / (2 * sigma * sigma))
    weights /= weights.sum()
    angles = np.deg2rad([rng.uniform(-45, 45) for rng in ctx.rngs])
    dx, dy = taps[None, :] * np.cos(angles)[:, None], taps[None, :] * np.sin(angles)[:, None]
    if ctx.scale == 1.0:
        dx, dy = np.ceil(dx - 0.5), np.ceil(dy - 0.5)
    else:
        dx, dy = dx * ctx.scale, dy * ctx.scale
    reach = math.ceil(max(np.abs(dx).max(), np.abs(dy).max())) + 1
    kernels = _splat(len(x), 2 * reach + 1, reach + dy, reach + dx, weights)
    image = torch.from_numpy(x).permute(0, 3, 1, 2).to(torch.float64)
    padded = F.pad(image, (reach, reach, reach, reach), mode="replicate")
    return _round(fft_correlate(padded, torch.from_numpy(kernels)))


def _splat(n: int, side: int, rows: np.ndarray, cols: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-image kernels (n, side, side) with each tap's weight shared bilinearly among the
    four pixels around its fractional (row, col); whole-pixel taps land on one pixel."""
    kernels = np.zeros((n, side, side))
    r0, c0 = np.floor(rows), np.floor(cols)
    fr, fc = rows - r0, cols - c0
    image = np.broadcast_to(np.arange(n)[:, None], rows.shape)
    for dr, wr in ((0, 1 - fr), (1, fr)):
        for dc, wc in ((0, 1 - fc), (1, fc)):
            share = weights[None, :] * wr * wc
            used = share > 0
            np.add.at(
                kernels,
                (image[used], (r0 + dr)[used].astype(int), (c0 + dc)[used].astype(int)),
                share[used],
            )
    return kernels


@register("zoom_blur", "mean of the image and its zooms about the centre", needs_rgb=False)
def zoom_blur(x: np.ndarray, spec: tuple[float, float, float], ctx: OpContext) -> np.ndarray:
    """Mean of the image and its zooms by each factor about the centre (size-relative).

    Each zoom is scipy's ``clipped_zoom`` (crop ceil(size/f) at the centre,
    ``ndimage.zoom`` order 1, crop back): the same sampling grid for every
    image, so the whole batch goes through one ``grid_sample`` as channels.
    """
    image = _to_torch(x)
    n, channels, size, _ = image.shape
    stacked = image.reshape(1, n * channels, size, size)
    zooms = torch.zeros(stacked.shape, dtype=torch.float32)
    factors = np.arange(*spec)
    for factor in factors:
        crop = int(np.ceil(size / factor))
        top = (size - crop) // 2
        zoomed = round(float(crop * factor))
        trim = (zoomed - size) // 2
        step = (crop - 1) / (zoomed - 1) if zoomed > 1 else 0.0
        coords = top + (torch.arange(size, dtype=torch.float64) + trim) * step
        normalised = 2 * coords / (size - 1) - 1
        grid = torch.stack(torch.meshgrid(normalised, normalised, indexing="xy"), dim=-1)[None]
        sampled = F.grid_sample(
            stacked, grid.double(), mode="bilinear", padding_mode="border", align_corners=True
        )
        zooms += sampled.float()  # float32 sums in the reference's order: zooms first, then the image
    mean = (stacked.float() + zooms) / (len(factors) + 1)
    return _truncate(mean.reshape(n, channels, size, size))
