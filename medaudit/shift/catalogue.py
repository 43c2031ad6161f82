"""The MedMNIST-C catalogue: which corruptions each dataset gets, at which parameters.

Transcribed from ``medmnistc/corruptions/registry.py`` (medmnistc 0.1.0, Apache-2.0),
first five severities only (two lists carry an unused sixth entry). Parameters in
pixel units (blur radii, kernel sizes, bubble and ink sizes) are tuned for 224 px;
``scaled`` mode multiplies them by size/224. Zoom factors are ``np.arange(start,
stop, step)`` triples; stain deposits are (max marks, ink size in px).
"""

from __future__ import annotations

from typing import Any

from medaudit.errors import ConfigError

SEVERITIES = (1, 2, 3, 4, 5)
REFERENCE_SIZE = 224

FAMILIES: dict[str, tuple[str, ...]] = {
    "digital": ("pixelate", "jpeg_compression"),
    "noise": ("gaussian_noise", "speckle_noise", "impulse_noise", "shot_noise"),
    "blur": ("defocus_blur", "motion_blur", "zoom_blur", "gaussian_blur"),
    "color": ("brightness_up", "brightness_down", "contrast_up", "contrast_down", "saturate"),
    "task-specific": (
        "stain_deposit",
        "bubble",
        "black_corner",
        "characters",
        "gamma_corr_up",
        "gamma_corr_down",
    ),
}

RGB_DATASETS = frozenset({"bloodmnist", "dermamnist", "pathmnist", "retinamnist"})

PARAMS: dict[str, dict[str, tuple[Any, ...]]] = {
    "pathmnist": {
        "pixelate": (0.8, 0.6, 0.4, 0.3, 0.25),
        "jpeg_compression": (50, 30, 15, 10, 7),
        "defocus_blur": ((3, 0.1), (4, 0.1), (5, 0.2), (6, 0.2), (7, 0.3)),
        "motion_blur": ((5, 5), (10, 5), (15, 5), (15, 8), (15, 12)),
        "brightness_up": (1.1, 1.15, 1.2, 1.22, 1.25),
        "brightness_down": (0.85, 0.8, 0.75, 0.72, 0.7),
        "contrast_up": (1.1, 1.2, 1.3, 1.4, 1.6),
        "contrast_down": (0.8, 0.7, 0.6, 0.55, 0.5),
        "saturate": (0.05, 0.1, 0.15, 0.2, 0.25),
        "stain_deposit": ((1, 24), (2, 24), (3, 24), (4, 24), (5, 32)),
        "bubble": ((7, 15), (10, 15), (12, 15), (15, 20), (17, 25)),
    },
    "bloodmnist": {
        "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
        "jpeg_compression": (50, 30, 15, 10, 7),
        "defocus_blur": ((2, 0.01), (3, 0.1), (4, 0.1), (5, 0.1), (6, 0.1)),
        "motion_blur": ((3, 3), (5, 5), (10, 5), (10, 7), (10, 9)),
        "brightness_up": (1.1, 1.2, 1.3, 1.35, 1.4),
        "brightness_down": (0.9, 0.8, 0.7, 0.6, 0.5),
        "contrast_up": (1.1, 1.15, 1.2, 1.25, 1.3),
        "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.5),
        "saturate": (0.05, 0.1, 0.15, 0.17, 0.2),
        "stain_deposit": ((1, 24), (2, 24), (3, 24), (3, 24), (3, 32)),
        "bubble": ((5, 10), (7, 10), (10, 10), (12, 12), (15, 12)),
    },
    "dermamnist": {
        "pixelate": (0.7, 0.5, 0.4, 0.3, 0.25),
        "jpeg_compression": (30, 20, 15, 10, 7),
        "gaussian_noise": (0.04, 0.08, 0.12, 0.18, 0.26),
        "speckle_noise": (0.05, 0.15, 0.2, 0.35, 0.45),
        "impulse_noise": (0.01, 0.03, 0.06, 0.09, 0.17),
        "shot_noise": (60, 25, 18, 10, 5),
        "defocus_blur": ((4, 0.1), (5, 0.2), (6, 0.3), (7, 0.4), (8, 0.5)),
        "motion_blur": ((10, 5), (15, 5), (15, 8), (15, 12), (20, 15)),
        "zoom_blur": ((1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)),
        "brightness_up": (1.1, 1.2, 1.3, 1.4, 1.5),
        "brightness_down": (0.9, 0.8, 0.7, 0.6, 0.5),
        "contrast_up": (1.1, 1.2, 1.3, 1.4, 1.6),
        "contrast_down": (0.8, 0.7, 0.6, 0.5, 0.4),
        "black_corner": (1.1, 1.05, 1.0, 0.9, 0.95),
        "characters": ((1, 6, 0.14), (2, 7, 0.15), (3, 8, 0.16), (4, 9, 0.17), (6, 10, 0.18)),
    },
    "retinamnist": {
        "pixelate": (0.8, 0.6, 0.5, 0.4, 0.35),
        "jpeg_compression": (30, 25, 20, 10, 5),
        "gaussian_noise": (0.04, 0.08, 0.12, 0.16, 0.2),
        "speckle_noise": (0.1, 0.15, 0.2, 0.25, 0.3),
        "defocus_blur": ((4, 0.1), (5, 0.2), (6, 0.3), (7, 0.4), (8, 0.5)),
        "motion_blur": ((8, 5), (15, 5), (15, 8), (15, 12), (20, 15)),
        "brightness_down": (0.9, 0.8, 0.7, 0.6, 0.5),
        "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    },
    "tissuemnist": {
        "pixelate": (0.4, 0.3, 0.2, 0.15, 0.1),
        "jpeg_compression": (25, 20, 15, 10, 7),
        "impulse_noise": (0.01, 0.015, 0.02, 0.025, 0.03),
        "gaussian_blur": (13, 15, 17, 21, 25),
        "brightness_up": (1.3, 1.4, 1.5, 1.6, 1.7),
        "brightness_down": (0.8, 0.7, 0.6, 0.5, 0.4),
        "contrast_up": (1.1, 1.2, 1.3, 1.4, 1.6),
        "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    },
    "octmnist": {
        "pixelate": (0.3, 0.25, 0.2, 0.15, 0.1),
        "jpeg_compression": (30, 15, 10, 7, 5),
        "speckle_noise": (0.15, 0.3, 0.4, 0.5, 0.6),
        "defocus_blur": ((0.5, 0.6), (1, 0.5), (1.5, 0.1), (2.0, 0.5), (2.5, 0.1)),
        "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
        "contrast_down": (0.6, 0.4, 0.3, 0.2, 0.15),
    },
    "breastmnist": {
        "pixelate": (0.3, 0.25, 0.2, 0.15, 0.1),
        "jpeg_compression": (50, 30, 15, 10, 7),
        "speckle_noise": (0.1, 0.15, 0.2, 0.25, 0.3),
        "motion_blur": ((5, 5), (9, 7), (9, 10), (13, 10), (17, 12)),
        "brightness_up": (1.4, 1.5, 1.6, 1.8, 2.0),
        "brightness_down": (0.55, 0.5, 0.45, 0.4, 0.3),
        "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    },
    "chestmnist": {
        "pixelate": (0.3, 0.25, 0.2, 0.15, 0.1),
        "jpeg_compression": (50, 30, 15, 10, 7),
        "gaussian_noise": (0.04, 0.08, 0.12, 0.18, 0.26),
        "speckle_noise": (0.05, 0.15, 0.2, 0.35, 0.45),
        "impulse_noise": (0.01, 0.03, 0.06, 0.09, 0.17),
        "shot_noise": (60, 25, 18, 10, 5),
        "gaussian_blur": (3, 5, 7, 9, 11),
        "brightness_up": (1.1, 1.2, 1.3, 1.4, 1.5),
        "brightness_down": (0.9, 0.8, 0.7, 0.6, 0.5),
        "contrast_up": (1.1, 1.2, 1.3, 1.4, 1.6),
        "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
        "gamma_corr_up": (1.1, 1.2, 1.3, 1.4, 1.6),
        "gamma_corr_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    },
    "pneumoniamnist": {
        "pixelate": (0.8, 0.7, 0.6, 0.5, 0.4),
        "jpeg_compression": (50, 30, 15, 10, 7),
        "gaussian_noise": (0.04, 0.05, 0.06, 0.07, 0.08),
        "speckle_noise": (0.05, 0.07, 0.1, 0.15, 0.2),
        "impulse_noise": (0.005, 0.01, 0.013, 0.017, 0.02),
        "shot_noise": (300, 200, 150, 100, 80),
        "gaussian_blur": (3, 5, 7, 9, 11),
        "brightness_up": (1.1, 1.2, 1.3, 1.4, 1.5),
        "brightness_down": (0.9, 0.8, 0.7, 0.6, 0.5),
        "contrast_up": (1.1, 1.2, 1.3, 1.4, 1.6),
        "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
        "gamma_corr_up": (1.1, 1.2, 1.3, 1.4, 1.6),
        "gamma_corr_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    },
    "organamnist": {
        "pixelate": (0.7, 0.6, 0.5, 0.4, 0.35),
        "jpeg_compression": (50, 30, 15, 10, 7),
        "gaussian_noise": (0.04, 0.08, 0.12, 0.16, 0.2),
        "speckle_noise": (0.05, 0.1, 0.2, 0.3, 0.4),
        "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.08),
        "shot_noise": (200, 100, 50, 25, 15),
        "gaussian_blur": (11, 13, 15, 17, 21),
        "brightness_up": (1.2, 1.3, 1.4, 1.5, 1.6),
        "brightness_down": (0.8, 0.75, 0.7, 0.65, 0.6),
        "contrast_up": (1.3, 1.4, 1.6, 1.7, 1.8),
        "contrast_down": (0.8, 0.7, 0.6, 0.55, 0.5),
        "gamma_corr_up": (1.3, 1.4, 1.6, 1.8, 2.0),
        "gamma_corr_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    },
    "organcmnist": {
        "pixelate": (0.7, 0.6, 0.5, 0.4, 0.35),
        "jpeg_compression": (50, 30, 15, 10, 7),
        "gaussian_noise": (0.04, 0.08, 0.12, 0.16, 0.2),
        "speckle_noise": (0.05, 0.1, 0.2, 0.3, 0.4),
        "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.08),
        "shot_noise": (200, 100, 50, 25, 15),
        "gaussian_blur": (11, 13, 15, 17, 21),
        "brightness_up": (1.2, 1.3, 1.4, 1.5, 1.6),
        "brightness_down": (0.8, 0.75, 0.7, 0.65, 0.6),
        "contrast_up": (1.3, 1.4, 1.6, 1.7, 1.8),
        "contrast_down": (0.8, 0.7, 0.6, 0.55, 0.5),
        "gamma_corr_up": (1.3, 1.4, 1.6, 1.8, 2.0),
        "gamma_corr_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    },
    "organsmnist": {
        "pixelate": (0.7, 0.6, 0.5, 0.4, 0.35),
        "jpeg_compression": (50, 30, 15, 10, 7),
        "gaussian_noise": (0.04, 0.08, 0.12, 0.16, 0.2),
        "speckle_noise": (0.05, 0.1, 0.2, 0.3, 0.4),
        "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.08),
        "shot_noise": (200, 100, 50, 25, 15),
        "gaussian_blur": (11, 13, 15, 17, 21),
        "brightness_up": (1.2, 1.3, 1.4, 1.5, 1.6),
        "brightness_down": (0.8, 0.75, 0.7, 0.65, 0.6),
        "contrast_up": (1.3, 1.4, 1.6, 1.7, 1.8),
        "contrast_down": (0.8, 0.7, 0.6, 0.55, 0.5),
        "gamma_corr_up": (1.3, 1.4, 1.6, 1.8, 2.0),
        "gamma_corr_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    },
}

MODALITIES: dict[str, str] = {
    "xray": "pneumoniamnist",
    "ct": "organamnist",
    "ultrasound": "breastmnist",
    "fundus": "retinamnist",
    "dermoscopy": "dermamnist",
    "pathology": "pathmnist",
    "blood": "bloodmnist",
    "oct": "octmnist",
}
"""User data of a modality gets the list and parameters of this MedMNIST dataset."""


def family_of(corruption: str) -> str:
    return next(family for family, names in FAMILIES.items() if corruption in names)


def all_corruptions() -> list[str]:
    return [name for names in FAMILIES.values() for name in names]


def params_source(dataset: str | None, modality: str | None) -> str:
    """The MedMNIST-C dataset whose parameter table applies."""
    if modality is not None:
        if modality not in MODALITIES:
            raise ConfigError(f"unknown --modality '{modality}'. Choose from: {', '.join(MODALITIES)}")
        return MODALITIES[modality]
    if dataset is None:
        raise ConfigError("the corruption parameters depend on the dataset: give --dataset or --modality")
    name = dataset.removesuffix("_64").removesuffix("_128").removesuffix("_224")
    if name not in PARAMS:
        raise ConfigError(
            f"MedMNIST-C defines no corruptions for '{dataset}' (it covers {', '.join(PARAMS)}): "
            f"give --modality ({', '.join(MODALITIES)}) to borrow one dataset's table"
        )
    return name


def severity_param(source: str, corruption: str, severity: int) -> Any:
    """The published parameter of ``corruption`` at ``severity`` (1..5) for ``source``."""
    if severity not in SEVERITIES:
        raise ConfigError(f"severity must be one of 1..5, got {severity}")
    table = PARAMS[source]
    if corruption not in table:
        raise ConfigError(
            f"MedMNIST-C has no {corruption} for {source}; its corruptions are: {', '.join(table)}"
        )
    return table[corruption][severity - 1]
