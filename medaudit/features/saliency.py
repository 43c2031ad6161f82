"""Saliency stability: do the model's input attributions survive a tiny perturbation?

A model that relies on robust features keeps attributing its decision to the same pixels when
the image moves by a small L-inf step (the paper's Fig. 1); one that relies on nonrobust
features does not. Per image: the Spearman rank correlation between the attribution map on x
and on x' (untargeted PGD at ``eps``), both for the class the model predicts on x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from medaudit.attacks.base import seeded_generator
from medaudit.attacks.pgd import PGD
from medaudit.data import AuditData, stratified_indices
from medaudit.errors import ConfigError
from medaudit.features.construction import require_single_label_gradients
from medaudit.features.progress import stage
from medaudit.models import AuditModel

if TYPE_CHECKING:  # medaudit.audits imports the features audit, which imports this package
    from medaudit.audits.base import Progress

METHODS = ("saliency", "integrated-gradients")
ATTACK = PGD(steps=10)
"""The perturbation: medaudit's PGD, random start, 10 steps of eps / 4."""
IG_STEPS = 32
"""Integrated-gradients path points (black baseline)."""
EXAMPLES = 4
"""Images whose maps are kept for the figure."""


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties sharing their average rank (as scipy's ``rankdata``)."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(values)]
    mean_rank = (starts + ends + 1) / 2.0  # ranks starts+1 .. ends, averaged
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = mean_rank[np.cumsum(first) - 1]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (flattened), ties at their average rank.

    Equal maps give 1.0 even when constant; otherwise a constant map leaves it undefined (NaN).
    """
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if np.array_equal(a, b):
        return 1.0
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb / denominator) if denominator > 0 else math.nan


def attribution_maps(model: AuditModel, x: torch.Tensor, target: torch.Tensor, method: str) -> torch.Tensor:
    """Per-pixel importance N x H x W: |attribution| of ``target``'s logit, summed over channels."""
    from captum.attr import IntegratedGradients, Saliency

    x = x.detach().requires_grad_(True)  # captum warns when it has to set this itself
    if method == "saliency":
        attributions = Saliency(model).attribute(x, target=target, abs=True)
    else:
        attributions = IntegratedGradients(model).attribute(
            x, baselines=torch.zeros_like(x), target=target, n_steps=IG_STEPS, internal_batch_size=len(x)
        )
    return attributions.detach().abs().sum(dim=1)


@dataclass(frozen=True)
class SaliencyResult:
    correlations: np.ndarray
    """Per image: Spearman correlation of its maps on x and x' (NaN where undefined)."""
    mean: float
    """Mean, median and 10th percentile over the images where the correlation is defined."""
    median: float
    p10: float
    """10th percentile: the least stable tenth of the images lies below it."""
    flipped: float
    """Fraction of images whose predicted class the perturbation changed."""
    config: dict[str, Any]
    examples: dict[str, np.ndarray] = field(repr=False)
    """The first images, their maps on x and x' and correlations (for the figure, not the JSON)."""

    def to_dict(self) -> dict[str, Any]:
        finite = np.isfinite(self.correlations)
        return {
            "config": self.config,
            "n": len(self.correlations),
            "undefined": int((~finite).sum()),
            "mean": _finite_or_none(self.mean),
            "median": _finite_or_none(self.median),
            "p10": _finite_or_none(self.p10),
            "flipped": self.flipped,
            "correlations": [
                round(float(c), 6) if ok else None for c, ok in zip(self.correlations, finite, strict=True)
            ],
        }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def saliency_stability(
    model: AuditModel,
    data: AuditData,
    eps: float,
    method: str = "saliency",
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    progress: Progress | None = None,
) -> SaliencyResult:
    """Rank correlation of attributions on x and on x' = PGD(x) at L-inf ``eps``, per image of
    ``data`` (a stratified, seeded subset of ``limit`` images when given)."""
    require_single_label_gradients(model, data, "saliency stability")
    if method not in METHODS:
        raise ConfigError(f"--attribution must be saliency or integrated-gradients, got '{method}'")
    if not (math.isfinite(eps) and 0 <= eps <= 1):
        raise ConfigError(f"--saliency-eps must be in [0, 1] pixel units, got {eps}")
    if limit is not None and limit < 1:
        raise ConfigError(f"--saliency-limit must be at least 1, got {limit}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if limit is not None and limit < data.n:
        data = data.subset(stratified_indices(data.labels, limit, seed), {"limit": limit, "limit_seed": seed})
    correlations, flips = [], []
    kept: dict[str, list[np.ndarray]] = {"images": [], "clean": [], "perturbed": []}
    with stage(progress, "saliency stability", data.n) as advance:
        for start, x, y in data.batches(batch_size):
            x, y = x.to(model.device), y.to(model.device)
            generator = seeded_generator(seed, data.offset + start)
            x_adv = ATTACK(model, x, y, eps=eps, norm="linf", generator=generator)
            predicted = model.predict(x).argmax(dim=1)
            flips.append((model.predict(x_adv).argmax(dim=1) != predicted).cpu().numpy())
            clean = attribution_maps(model, x, predicted, method).cpu().numpy()
            moved = attribution_maps(model, x_adv, predicted, method).cpu().numpy()
            correlations += [spearman(a, b) for a, b in zip(clean, moved, strict=True)]
            take = max(0, EXAMPLES - len(kept["images"]))
            for name, maps in (("images", x.cpu().numpy()), ("clean", clean), ("perturbed", moved)):
                kept[name] += list(maps[:take])
            advance(len(x))
    values = np.asarray(correlations, dtype=np.float64)
    finite = values[np.isfinite(values)]
    mean, median, p10 = (
        (float(finite.mean()), float(np.median(finite)), float(np.percentile(finite, 10)))
        if len(finite)
        else (math.nan, math.nan, math.nan)
    )
    examples = {name: np.stack(items) for name, items in kept.items()}
    examples["correlations"] = values[: len(kept["images"])]
    config = {
        "method": method,
        "eps": eps,
        "norm": "linf",
        "attack": f"pgd ({ATTACK.steps} steps of eps / 4, random start)",
        "limit": limit,
        "seed": seed,
        "n": data.n,
    }
    return SaliencyResult(
        correlations=values,
        mean=mean,
        median=median,
        p10=p10,
        flipped=float(np.concatenate(flips).mean()),
        config=config,
        examples=examples,
    )
