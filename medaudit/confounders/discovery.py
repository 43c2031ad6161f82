"""Shortcut discovery: regions where one small universal patch flips many predictions towards one class.

The probe only finds artifacts that resemble its library. Discovery needs no library: for each
region of a grid (a square patch of ``patch`` x width placed on a ``grid`` x ``grid`` layout, the
corners flush with the image edges) and each class, one patch (its pixels replace the image there)
is optimised to turn the predictions of images not of that class into it, on ``n_fit`` images;
its flip rate is then measured on other images. White-box models (``has_gradients``) are
optimised by Adam on the patch; black-box models (ONNX without a verified torch twin) by random
search (keep a random change of the patch when it raises the target class's mean probability).

A model that learned a mark in one corner flips almost everything once that corner carries the
right pattern; a model without such a shortcut needs the patch to fight the image content, and
does about as well (or badly) in every region. So each region is compared with a **control**:
the median flip rate that the same search reaches in the other regions for the same class.
A region is flagged when its flip rate is at least ``min_flip_rate`` and exceeds its control by
at least ``margin``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medaudit.confounders.config import DiscoveryConfig
from medaudit.data import AuditData
from medaudit.errors import ConfigError
from medaudit.evaluate import predict_checked
from medaudit.models import AuditModel
from medaudit.task import Task

NAMES_3X3 = (
    ("top-left", "top", "top-right"),
    ("left", "centre", "right"),
    ("bottom-left", "bottom", "bottom-right"),
)


def region_name(row: int, col: int, grid: int) -> str:
    """``top-left`` ... for a 3 x 3 grid; ``row r, col c`` (from 1, top-left first) otherwise."""
    if grid == 3:
        return NAMES_3X3[row][col]
    return f"row {row + 1}, col {col + 1}"


def regions(side: int, config: DiscoveryConfig) -> list[tuple[str, tuple[int, int, int, int]]]:
    """(name, (top, left, height, width) in px) of every region, row by row."""
    size = max(1, round(config.patch * side))
    starts = [round(k * (side - size) / (config.grid - 1)) if config.grid > 1 else (side - size) // 2
              for k in range(config.grid)]  # fmt: skip
    return [
        (region_name(r, c, config.grid), (top, left, size, size))
        for r, top in enumerate(starts)
        for c, left in enumerate(starts)
    ]


@dataclass
class DiscoveryResult:
    """Per region and class: the fitted patch and its flip rate on held-out images."""

    config: DiscoveryConfig
    method: str
    boxes: list[tuple[str, tuple[int, int, int, int]]]
    class_names: tuple[str, ...]
    flip_rates: np.ndarray
    """(regions x classes) flip rate towards each class on the evaluation images (NaN: none to flip)."""
    patches: torch.Tensor
    """(regions x classes x C x h x w) fitted patches in [0, 1]."""
    n_fit: int
    n_eval: int

    def control(self, region: int, target: int) -> float:
        """Median flip rate towards ``target`` that the same search reaches in the other regions."""
        others = np.delete(self.flip_rates[:, target], region)
        others = others[np.isfinite(others)]
        return float(np.median(others)) if len(others) else math.nan

    def rows(self) -> list[dict[str, Any]]:
        """One row per region, for the class its patch flips most towards; strongest excess first."""
        out: list[dict[str, Any]] = []
        for i, (name, box) in enumerate(self.boxes):
            rates = self.flip_rates[i]
            if not np.isfinite(rates).any():
                continue
            target = int(np.nanargmax(rates))
            flip, control = float(rates[target]), self.control(i, target)
            excess = flip - control if math.isfinite(control) else math.nan
            out.append(
                {
                    "region": name,
                    "box": list(box),
                    "towards": self.class_names[target],
                    "flip_rate": flip,
                    "control_flip_rate": control,
                    "excess": excess,
                    "flagged": bool(
                        flip >= self.config.min_flip_rate
                        and math.isfinite(excess)
                        and excess >= self.config.margin
                    ),
                    "index": i,
                    "class_index": target,
                }
            )
        out.sort(key=lambda r: -r["excess"] if math.isfinite(r["excess"]) else math.inf)
        return out

    def to_dict(self) -> dict[str, Any]:
        """``results.discovery`` (rows without the internal indices) and ``results.discovery_config``."""
        rows = [{k: v for k, v in r.items() if k not in ("index", "class_index")} for r in self.rows()]
        typical = [r["control_flip_rate"] for r in rows if math.isfinite(r["control_flip_rate"])]
        notes = []
        if typical and float(np.median(typical)) >= self.config.min_flip_rate:
            notes.append(
                f"a patch flips at least {self.config.min_flip_rate:.0%} of predictions in most regions: the "
                "model can be turned by a small patch almost anywhere (a mark it takes at any position, or a "
                "general patch vulnerability), so no single region stands out"
            )
        return {
            "discovery": rows,
            "discovery_notes": notes,
            "discovery_config": {
                **self.config.to_dict(),
                "method": self.method,
                "patch_px": self.boxes[0][1][2],
                "n_fit": self.n_fit,
                "n_eval": self.n_eval,
            },
        }


def _paste(
    images: torch.Tensor, patches: torch.Tensor, boxes: list[tuple[int, int, int, int]]
) -> torch.Tensor:
    """(regions x n x C x H x W): every image with each region's patch (regions x C x h x w) pasted."""
    out = images.unsqueeze(0).repeat(len(boxes), 1, 1, 1, 1)
    for k, (top, left, h, w) in enumerate(boxes):
        out[k, :, :, top : top + h, left : left + w] = patches[k].unsqueeze(0)
    return out


def _target_probs(model: AuditModel, x: torch.Tensor, target: int, grad: bool) -> torch.Tensor:
    """Mean probability of ``target`` per region for (regions x n x C x H x W) images."""
    regions_, n = x.shape[:2]
    flat = x.reshape(regions_ * n, *x.shape[2:])
    logits = model(flat) if grad else model.predict(flat)
    return torch.softmax(logits.float(), dim=1)[:, target].reshape(regions_, n).mean(dim=1)


def _fit_gradient(
    model: AuditModel, images: torch.Tensor, boxes: list[tuple[int, int, int, int]], target: int,
    config: DiscoveryConfig, generator: torch.Generator,
) -> torch.Tensor:  # fmt: skip
    """Adam on the patch logits (sigmoid keeps pixels in [0, 1]), maximising the target's log-probability."""
    channels, size = images.shape[1], boxes[0][2]
    raw = (0.5 * torch.randn(len(boxes), channels, size, size, generator=generator)).requires_grad_(True)
    optimiser = torch.optim.Adam([raw], lr=0.2)
    for _ in range(config.steps):
        x = _paste(images, torch.sigmoid(raw), boxes)
        logits = model(x.reshape(-1, *x.shape[2:]))
        loss = -torch.log_softmax(logits.float(), dim=1)[:, target].mean()
        (raw.grad,) = torch.autograd.grad(loss, [raw])  # the patch's gradient only, not the weights'
        optimiser.step()
    return torch.sigmoid(raw).detach()


def _fit_random(
    model: AuditModel, images: torch.Tensor, boxes: list[tuple[int, int, int, int]], target: int,
    config: DiscoveryConfig, generator: torch.Generator,
) -> torch.Tensor:  # fmt: skip
    """Random search: per region, keep a random change of the patch when it raises the target's probability."""
    channels, size = images.shape[1], boxes[0][2]
    best = torch.rand(len(boxes), channels, size, size, generator=generator)
    with torch.inference_mode():
        score = _target_probs(model, _paste(images, best, boxes), target, grad=False)
        for step in range(config.steps - 1):
            scale = 0.5 * (1 - step / config.steps) + 0.05
            noise = torch.randn(best.shape, generator=generator)
            candidate = (best + scale * noise).clamp(0, 1)
            new = _target_probs(model, _paste(images, candidate, boxes), target, grad=False)
            better = new > score
            best[better], score[better] = candidate[better], new[better]
    return best


def run_discovery(
    model: AuditModel,
    data: AuditData,
    config: DiscoveryConfig,
    progress: Callable[[int], None] | None = None,
) -> DiscoveryResult:
    """Fit one universal patch per region and class, and measure its flip rate on held-out images."""
    if data.task is Task.MULTI_LABEL:
        raise ConfigError("shortcut discovery does not support multi-label tasks yet")
    if data.size[0] != data.size[1]:
        raise ConfigError(f"discovery needs square images, got {data.size[0]}x{data.size[1]}")
    if data.n < 4:
        raise ConfigError(f"discovery needs at least 4 images, got {data.n}")
    order = np.random.default_rng([config.seed, 0xD15C]).permutation(data.n)
    n_fit = min(config.n_fit, data.n // 2)
    fit_idx, eval_idx = order[:n_fit], order[n_fit : n_fit + config.n_eval]
    images = data.uint8_images(0, data.n).float() / 255
    fit, held = images[fit_idx].to(model.device), images[eval_idx].to(model.device)
    clean = torch.cat(
        [
            predict_checked(model, held[s : s + config.batch_size], s)
            for s in range(0, len(held), config.batch_size)
        ]
    ).argmax(dim=1)
    named = regions(data.size[0], config)
    boxes = [box for _, box in named]
    method = "gradient" if model.has_gradients else "random"
    fitter = _fit_gradient if model.has_gradients else _fit_random
    generator = torch.Generator().manual_seed(config.seed)
    classes = data.num_classes
    flip_rates = np.full((len(boxes), classes), math.nan)
    patches = torch.zeros(len(boxes), classes, data.channels, boxes[0][2], boxes[0][3])
    for target in range(classes):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            patch = fitter(model, fit, boxes, target, config, generator)
        patches[:, target] = patch.cpu()
        others = clean != target
        if others.any():
            x = _paste(held[others], patch.to(model.device), boxes)
            with torch.inference_mode():
                pred = torch.stack([model.predict(x[k]).argmax(dim=1) for k in range(len(boxes))])
            flip_rates[:, target] = (pred == target).float().mean(dim=1).cpu().numpy()
        if progress:
            progress(len(boxes))
    return DiscoveryResult(config, method, named, data.class_names, flip_rates, patches, n_fit, len(eval_idx))
