"""The intrinsic audit: a pure function of (data, optional model, config) -> ``IntrinsicResult``.

Data side: label sharpness K_F and the intrinsic dimension d_data of the
images (as [0,1] intensities, flattened C x H x W at the data's resolution).
Model side: the intrinsic dimension d_repr of a layer's features (default: the
input of the final linear layer) with the check d_repr <= d_data, and the
model's empirical local Lipschitz constant around the images.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medaudit.data import AuditData
from medaudit.intrinsic.config import IntrinsicConfig
from medaudit.intrinsic.dimension import NEAR_TWIN_RATIO, estimate
from medaudit.intrinsic.neighbours import flatten, unique_rows
from medaudit.intrinsic.sharpness import SharpnessResult, label_sharpness
from medaudit.intrinsic.smoothness import local_lipschitz
from medaudit.models import AuditModel

NEAR_TWIN_WARNING = 0.05


@dataclass
class IntrinsicResult:
    data: AuditData
    sharpness: SharpnessResult
    d_data: dict[str, Any]
    d_repr: dict[str, Any] | None = None
    lipschitz: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "representation": {
                "images": "[0,1] intensities, flattened",
                "channels": self.data.channels,
                "size": list(self.data.size),
                "dims": self.sharpness.dims,
            },
            "label_sharpness": self.sharpness.to_dict(),
            "d_data": _public(self.d_data),
            "d_repr": None if self.d_repr is None else _public(self.d_repr),
            "model_smoothness": self.lipschitz,
            "interpretation": interpretation(self),
            "notes": self.notes,
        }
        if self.d_repr is not None:
            out["d_repr_le_d_data"] = {
                name: bool(self.d_repr[name] <= self.d_data[name]) for name in ("mle", "twonn")
            }
        return out


def _public(estimate_: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in estimate_.items() if k != "nn_distances"}


def interpretation(result: IntrinsicResult) -> list[str]:
    """Plain sentences a reader can act on (no paper values are quoted: they were not transcribed)."""
    s = result.sharpness.to_dict()
    lines = []
    closest = s["closest_cross_label_distance"]
    if closest is not None:
        rms = closest / math.sqrt(s["dims"]) * 255
        lines.append(
            f"the closest differently-labelled images are {closest:.3f} apart (L2 over {s['dims']} values, "
            f"an RMS difference of {rms:.1f} grey levels per value): K_F = {s['k_f']:.3g}; higher K_F means "
            "labels change over smaller image changes, which Konz & Mazurowski (2024) found in medical more "
            "than natural data and linked to lower adversarial robustness; compare only at equal size, "
            "channels and intensity range"
        )
    if s["cross_label_duplicates"]:
        lines.append(
            f"{len(s['cross_label_duplicates'])} identical image pairs carry different labels "
            "(label noise: K_F would be infinite)"
        )
    d = result.d_data
    lines.append(
        f"the images lie near a {d['twonn']:.1f}-dimensional (TwoNN; MLE {d['mle']:.1f}) manifold "
        f"in {d['dims']} pixel dimensions; generalisation error grows with d_data, more steeply when K_F is high"
    )
    for name, estimate_ in (("images", d), ("features", result.d_repr)):
        if estimate_ is not None and estimate_["near_twin_fraction"] > NEAR_TWIN_WARNING:
            lines.append(
                f"{estimate_['near_twin_fraction']:.0%} of the {name} have a near-twin (second neighbour over "
                f"{NEAR_TWIN_RATIO:g}x farther than the first): TwoNN, which reads only those two distances, "
                "is pulled down; trust MLE here"
            )
    if result.d_repr is not None:
        r = result.d_repr
        holds = r["twonn"] <= d["twonn"]
        lines.append(
            f"the model's features have dimension {r['twonn']:.1f} (TwoNN; MLE {r['mle']:.1f}), "
            + ("below d_data, as expected" if holds else "ABOVE d_data: the representation adds dimensions")
        )
    if result.lipschitz is not None:
        lip = result.lipschitz
        lines.append(
            f"within eps {lip['eps']:g} of an image the model's logits change by {lip['mean']:.3g} (L1) per unit "
            f"of L-inf input change (mean over images): one grey level can move them by {lip['mean'] / 255:.2g}"
        )
    return lines


def run_intrinsic(
    data: AuditData,
    model: AuditModel | None,
    config: IntrinsicConfig,
    progress: Callable[[str], None] | None = None,
) -> IntrinsicResult:
    """K_F, d_data and, with a model, d_repr and local Lipschitz; ``progress`` gets stage names."""
    step = progress or (lambda _stage: None)
    step("label sharpness")
    sharp = label_sharpness(data.images, data.labels)
    step("data dimension")
    d_data = estimate(flatten(data.images), config.dimension)
    result = IntrinsicResult(data=data, sharpness=sharp, d_data=d_data)
    if model is None:
        return result
    step("representation dimension")
    features = model.features(data, config.layer, config.batch_size)
    # Identical images have identical features in exact arithmetic but not always bitwise (batch
    # position, CPU vs GPU kernels: d_repr moved 1.5% on an H200), and a 1e-7 distance wrecks the
    # log-ratios: drop the image duplicates first.
    distinct = torch.as_tensor(np.sort(unique_rows(flatten(data.images))[0]))
    d_repr = estimate(features.values[distinct], config.dimension)
    d_repr["duplicates_removed"] += data.n - len(distinct)
    result.d_repr = {**d_repr, "layer": features.layer}
    if config.lipschitz is None:
        return result
    if not model.has_gradients:
        result.notes.append("model smoothness skipped: it needs gradients and this model is black-box")
        return result
    step("model smoothness")
    subset = data
    if data.n > config.lipschitz_limit:
        chosen = np.sort(
            np.random.default_rng(config.dimension.seed).choice(data.n, config.lipschitz_limit, replace=False)
        )
        subset = data.subset(chosen, {})
        result.notes.append(f"model smoothness on {config.lipschitz_limit} of {data.n} images (seeded)")
    lip = local_lipschitz(model, subset, config.lipschitz)
    result.lipschitz = lip.to_dict()
    return result


def nn_distance_arrays(result: IntrinsicResult) -> dict[str, np.ndarray]:
    """Distances for the plot: to the nearest same-label and the nearest other-label image (finite ones)."""
    out = {
        "nearest same label": result.sharpness.same_distance.numpy(),
        "nearest other label": result.sharpness.cross_distance.numpy(),
    }
    return {name: values[np.isfinite(values)] for name, values in out.items()}
