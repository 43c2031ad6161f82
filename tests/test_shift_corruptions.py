"""The corruption library: contracts for every corruption, and each operation against an
independent rendering (PIL, torchvision, scipy, colorsys) of the published MedMNIST-C operation."""

from __future__ import annotations

import colorsys
import io
import itertools

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageEnhance
from scipy import ndimage

from medaudit.errors import ConfigError
from medaudit.shift.blur import disk_kernel
from medaudit.shift.catalogue import PARAMS, SEVERITIES, all_corruptions
from medaudit.shift.corrupt import corrupt, corruptions, grey_from_rgb, param_source, sample_rngs

NON_MONOTONE = {"black_corner"}  # published multipliers 1.10 1.05 1.00 0.90 0.95


def smooth_images(n: int, size: int, channels: int, seed: int = 0) -> torch.Tensor:
    """Image-like uint8 NCHW: smoothed noise over a gradient (not flat, not pure noise)."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.random((n, channels, size, size)), sigma=(0, 0, size / 14, size / 14))
    ramp = np.linspace(0.2, 0.8, size)[None, None, None, :]
    x = 0.5 * ramp + 0.5 * (noise - noise.min()) / (np.ptp(noise) + 1e-9)
    return torch.from_numpy(np.clip(np.rint(x * 255), 0, 255).astype(np.uint8))


def datasets_with(name: str) -> list[str]:
    return [ds for ds, table in PARAMS.items() if name in table]


def test_catalogue_covers_every_registered_corruption() -> None:
    assert set(corruptions.names()) == set(all_corruptions())
    for table in PARAMS.values():
        for name, params in table.items():
            assert name in corruptions and len(params) == len(SEVERITIES)


@pytest.mark.parametrize("size", [28, 64, 224])
@pytest.mark.parametrize("name", all_corruptions())
def test_every_corruption_keeps_shape_dtype_and_range(name: str, size: int) -> None:
    dataset = datasets_with(name)[0]
    channels = 3 if dataset in {"pathmnist", "bloodmnist", "dermamnist", "retinamnist"} else 1
    x = smooth_images(2 if size == 224 else 4, size, channels).float() / 255
    for severity in SEVERITIES:
        out = corrupt(x, name, severity, seed=1, dataset=dataset)
        assert out.shape == x.shape and out.dtype == x.dtype
        assert float(out.min()) >= 0 and float(out.max()) <= 1
        assert torch.equal(out, torch.round(out * 255) / 255)  # 8-bit values, like MedMNIST-C files


@pytest.mark.parametrize("name", [c for c in all_corruptions() if c not in NON_MONOTONE])
def test_severity_is_monotone_in_distance_from_clean(name: str) -> None:
    dataset = datasets_with(name)[0]
    x = smooth_images(16, 64, 3)
    distances = [
        float((corrupt(x, name, s, seed=3, dataset=dataset).float() - x.float()).abs().mean())
        for s in SEVERITIES
    ]
    assert distances[-1] > distances[0], distances
    for weaker, stronger in itertools.pairwise(distances):
        assert stronger >= weaker * 0.9 - 0.05, distances


@pytest.mark.parametrize("name", all_corruptions())
def test_same_seed_same_images_whatever_the_batch(name: str) -> None:
    dataset = datasets_with(name)[0]
    x = smooth_images(6, 28, 3)
    whole = corrupt(x, name, 4, seed=7, dataset=dataset)
    chunks = [
        corrupt(x[i : i + 4], name, 4, seed=7, dataset=dataset, indices=range(i, min(i + 4, 6)))
        for i in (0, 4)
    ]
    assert torch.equal(whole, torch.cat(chunks))
    alone = corrupt(x[5:6], name, 4, seed=7, dataset=dataset, indices=[5])
    assert torch.equal(whole[5:6], alone)


def test_different_seed_or_index_gives_different_noise() -> None:
    x = smooth_images(2, 28, 1)
    a = corrupt(x, "gaussian_noise", 3, seed=0, dataset="pneumoniamnist")
    assert not torch.equal(a, corrupt(x, "gaussian_noise", 3, seed=1, dataset="pneumoniamnist"))
    same_image_twice = torch.cat([x[:1], x[:1]])
    b = corrupt(same_image_twice, "gaussian_noise", 3, seed=0, dataset="pneumoniamnist")
    assert not torch.equal(b[0], b[1])


def pil_each(x: torch.Tensor, render) -> torch.Tensor:
    """Apply a PIL rendering per image the way MedMNIST-C does (grey via RGB and back to L)."""
    out = []
    for image in x.numpy():
        grey = image.shape[0] == 1
        pil = Image.fromarray(image[0] if grey else image.transpose(1, 2, 0)).convert("RGB")
        result = render(pil)
        result = result.convert("L") if grey else result
        array = np.asarray(result)
        out.append(array[None] if grey else array.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(out))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 224])
def test_deterministic_corruptions_match_pil_and_torchvision_exactly(channels: int, size: int) -> None:
    x = smooth_images(3, size, channels, seed=5)

    def jpeg(quality: int):
        def render(image: Image.Image) -> Image.Image:
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=quality)
            return Image.open(io.BytesIO(buffer.getvalue()))

        return render

    renderers = {
        "brightness_up": lambda f: lambda im: ImageEnhance.Brightness(im).enhance(f),
        "brightness_down": lambda f: lambda im: ImageEnhance.Brightness(im).enhance(f),
        "contrast_up": lambda f: lambda im: ImageEnhance.Contrast(im).enhance(f),
        "contrast_down": lambda f: lambda im: ImageEnhance.Contrast(im).enhance(f),
        "gamma_corr_up": lambda g: lambda im: TF.adjust_gamma(im, g, gain=1),
        "gamma_corr_down": lambda g: lambda im: TF.adjust_gamma(im, g, gain=1),
        "pixelate": lambda f: (
            lambda im: im.resize((int(size * f),) * 2, Image.BOX).resize((size, size), Image.BOX)
        ),
        "jpeg_compression": jpeg,
    }
    checked = 0
    for name, make in renderers.items():
        for dataset in datasets_with(name):
            for severity in SEVERITIES:
                param = PARAMS[dataset][name][severity - 1]
                ours = corrupt(x, name, severity, dataset=dataset, mode="medmnistc")
                assert torch.equal(ours, pil_each(x, make(param))), (name, dataset, severity)
                checked += 1
    assert checked > 200


def test_gaussian_blur_is_torchvisions_at_224() -> None:
    x = smooth_images(2, 224, 3)
    for severity, k in enumerate(PARAMS["tissuemnist"]["gaussian_blur"], start=1):
        ours = corrupt(x, "gaussian_blur", severity, dataset="tissuemnist", mode="medmnistc")
        reference = TF.gaussian_blur(x, kernel_size=k)  # sigma = 0.3((k-1)/2 - 1) + 0.8
        assert torch.equal(ours, reference)


def test_defocus_blur_matches_scipy_correlation_with_reflect101() -> None:
    x = smooth_images(2, 224, 3)
    for severity, (radius, alias) in enumerate(PARAMS["dermamnist"]["defocus_blur"], start=1):
        kernel = disk_kernel(radius, alias)
        assert kernel.shape == (17, 17) and abs(float(kernel.sum()) - 1) < 0.05
        ours = corrupt(x, "defocus_blur", severity, dataset="dermamnist", mode="medmnistc")
        floats = x.double().numpy() / 255
        reference = np.stack(
            [
                [ndimage.correlate(ch, kernel.astype(np.float64), mode="mirror") for ch in img]
                for img in floats
            ]
        )
        reference = (np.clip(reference, 0, 1) * 255).astype(np.uint8)
        diff = np.abs(ours.numpy().astype(int) - reference)
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_zoom_blur_matches_scipy_zoom() -> None:
    x = smooth_images(1, 224, 3)
    for severity, spec in enumerate(PARAMS["dermamnist"]["zoom_blur"], start=1):
        img = x[0].numpy().transpose(1, 2, 0).astype(np.float32) / 255
        total = img.copy()
        factors = np.arange(*spec)
        for z in factors:
            crop = int(np.ceil(224 / z))
            top = (224 - crop) // 2
            zoomed = ndimage.zoom(img[top : top + crop, top : top + crop], (z, z, 1), order=1)
            trim = (zoomed.shape[0] - 224) // 2
            total += zoomed[trim : trim + 224, trim : trim + 224]
        reference = (np.clip(total / (len(factors) + 1), 0, 1) * 255).astype(np.uint8)
        ours = corrupt(x, "zoom_blur", severity, dataset="dermamnist")[0].numpy().transpose(1, 2, 0)
        diff = np.abs(ours.astype(int) - reference)
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_saturate_matches_colorsys_hsv() -> None:
    x = smooth_images(1, 28, 3)
    delta = PARAMS["pathmnist"]["saturate"][4]
    ours = corrupt(x, "saturate", 5, dataset="pathmnist")[0].numpy().transpose(1, 2, 0)
    expected = np.empty_like(ours)
    for (i, j), _ in np.ndenumerate(ours[..., 0]):
        h, s, v = colorsys.rgb_to_hsv(*(x[0, :, i, j].numpy() / 255.0))
        rgb = colorsys.hsv_to_rgb(h, min(s + delta, 1.0), v)
        expected[i, j] = (np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    assert np.abs(ours.astype(int) - expected).max() <= 1


def test_grey_conversion_is_pils_L() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    assert np.array_equal(grey_from_rgb(rgb)[0, ..., 0], np.asarray(Image.fromarray(rgb[0]).convert("L")))


def test_noise_distributions_follow_the_published_operations() -> None:
    flat = torch.full((8, 3, 64, 64), 128, dtype=torch.uint8)
    base = 128 / 255
    sigma = PARAMS["dermamnist"]["gaussian_noise"][2]
    g = corrupt(flat, "gaussian_noise", 3, dataset="dermamnist").double() / 255
    # truncation to 8 bits lowers the mean by half a grey level on average
    assert abs(float(g.mean()) - (base - 0.5 / 255)) < 0.003
    assert abs(float(g.std()) - sigma) < 0.01 * sigma + 0.002
    amount = PARAMS["dermamnist"]["impulse_noise"][4]
    imp = corrupt(flat, "impulse_noise", 5, dataset="dermamnist")
    flipped = (imp != 128).double().mean()
    assert abs(float(flipped) - amount) < 0.01
    assert abs(float((imp == 255).double().mean()) - amount / 2) < 0.01
    photons = PARAMS["dermamnist"]["shot_noise"][0]  # 60: counts rarely reach the clip at 1
    shot = corrupt(flat, "shot_noise", 1, dataset="dermamnist").double() / 255
    counts = shot * photons  # Poisson(base * photons) / photons, truncated to 8 bits
    assert abs(float(counts.var()) - base * photons) < 0.15 * base * photons
    sigma = PARAMS["breastmnist"]["speckle_noise"][4]
    grey = torch.full((8, 1, 64, 64), 100, dtype=torch.uint8)  # far from the clip at 1
    speckle = corrupt(grey, "speckle_noise", 5, dataset="breastmnist").double() / 255
    # grey images run as RGB and return as L: the luma weights average the three channels' noise
    luma = np.sqrt(0.299**2 + 0.587**2 + 0.114**2)
    assert abs(float(speckle.std()) - (100 / 255) * sigma * luma) < 0.005


def test_scaled_mode_shrinks_pixel_parameters_with_size() -> None:
    x224 = smooth_images(4, 224, 1)
    x28 = torch.nn.functional.interpolate(x224.float(), size=28, mode="area").round().to(torch.uint8)
    name, dataset = "motion_blur", "breastmnist"
    raw28 = corrupt(x28, name, 5, dataset=dataset, mode="medmnistc")
    scaled28 = corrupt(x28, name, 5, dataset=dataset, mode="scaled")
    change = lambda out: float((out.float() - x28.float()).abs().mean())  # noqa: E731
    assert 0 < change(scaled28) < change(raw28)
    assert corrupt(x28, name, 5, dataset=dataset).equal(scaled28)  # scaled is the default below 224


def test_errors_are_config_errors() -> None:
    x = smooth_images(1, 28, 1)
    with pytest.raises(ConfigError, match=r"unknown corruption 'gausian_noise'.*gaussian_noise"):
        corrupt(x, "gausian_noise", 1, dataset="pneumoniamnist")
    with pytest.raises(ConfigError, match="severity"):
        corrupt(x, "gaussian_noise", 6, dataset="pneumoniamnist")
    with pytest.raises(ConfigError, match="--dataset or --modality"):
        corrupt(x, "gaussian_noise", 1)
    with pytest.raises(ConfigError, match="NCHW"):
        corrupt(x[0], "gaussian_noise", 1, dataset="pneumoniamnist")
    with pytest.raises(ConfigError, match="modality"):
        corrupt(x, "gaussian_noise", 1, modality="mri")


def test_a_corruption_outside_the_dataset_list_borrows_another_table() -> None:
    assert param_source("gaussian_noise", "pneumoniamnist", None) == "pneumoniamnist"
    assert param_source("motion_blur", "pneumoniamnist", None) == "pathmnist"
    assert param_source("speckle_noise", None, "ultrasound") == "breastmnist"


def test_motion_blur_is_imagemagicks_line_of_taps() -> None:
    """Direct sum of the taps with edge pixels repeated, angles from each image's own generator."""
    x = smooth_images(3, 64, 3)
    radius, sigma = PARAMS["pathmnist"]["motion_blur"][3]
    ours = corrupt(x, "motion_blur", 4, seed=2, dataset="pathmnist", mode="medmnistc")
    taps = np.arange(2 * int(np.ceil(radius)) + 1)
    weights = np.exp(-(taps**2) / (2 * sigma**2))
    weights /= weights.sum()
    rows, cols = np.mgrid[:64, :64]
    for i in range(3):
        angle = np.deg2rad(sample_rngs(2, [i], "motion_blur", 4)[0].uniform(-45, 45))
        total = np.zeros((3, 64, 64))
        for tap, weight in zip(taps, weights, strict=True):
            dx, dy = int(np.ceil(tap * np.cos(angle) - 0.5)), int(np.ceil(tap * np.sin(angle) - 0.5))
            total += weight * x[i].numpy()[:, np.clip(rows + dy, 0, 63), np.clip(cols + dx, 0, 63)]
        assert np.abs(ours[i].numpy().astype(int) - np.rint(total)).max() <= 1
