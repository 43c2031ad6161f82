"""IMA's per-sample margins: the adversarial example moved onto the decision boundary, and the
bookkeeping that expands or pulls back each margin (Ma & Liang, CMPB 2023; ``papers.md`` section B).

``attack_to_boundary`` is IMA's margin measurement for any batch (attack once inside a ball,
then bisect along the segment): a one-pass upper bound on each sample's minimal perturbation,
cheaper than ``attacks.margin``'s bisection over eps, which re-attacks at every midpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from medaudit.attacks.base import Eps, is_correct
from medaudit.attacks.pgd import PGDCW
from medaudit.models import AuditModel


def perturbation_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample L-inf or L2 norm of a perturbation batch."""
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)


def bisect_to_boundary(
    model: AuditModel, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, *, steps: int, norm: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The last still-correct point on the segment x -> x_adv after ``steps`` bisections, and its
    distance from x (IMA's ``stop=3`` mode): ``x`` must be classified correctly and ``x_adv`` not.

    The point lies within 2**-steps of the segment's length of the boundary; the distance is an
    upper bound on the sample's true margin along any direction.
    """
    low = torch.zeros(len(x), device=x.device, dtype=x.dtype)
    high = torch.ones_like(low)
    delta = x_adv - x
    shape = (-1, *([1] * (x.ndim - 1)))
    for _ in range(steps):
        mid = (low + high) / 2
        correct = is_correct(model.predict(x + mid.view(shape) * delta).float(), y, model.task)
        low = torch.where(correct, mid, low)
        high = torch.where(correct, high, mid)
    point = x + low.view(shape) * delta
    return point, perturbation_norm(point - x, norm)


@dataclass(frozen=True)
class MarginPGD(PGDCW):
    """PGD-CW with IMA's step, 4 * eps / steps (the paper: 20 steps of eps / 5): the walk covers
    four radii whatever the number of steps, so a boundary inside the ball is reached from any start."""

    name: ClassVar[str] = "ima-pgd"

    def step_for(self, eps: torch.Tensor) -> torch.Tensor:
        return 4 * eps / self.steps


def attack_to_boundary(
    model: AuditModel,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: Eps,
    *,
    norm: str,
    steps: int,
    bisection_steps: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(boundary points, distances, found) for clean-correct ``x``: PGD on the CW margin inside
    ``eps`` (a float or one per sample), then bisection onto the boundary where it crossed.

    Where nothing crossed, the point is ``x`` itself and the distance inf. IMA maximises a soft
    (logsumexp) margin from a start inside ``eps - step``; medaudit's PGD-CW maximises the hard
    margin from a start anywhere in the ball and stops at the first crossing iterate.
    """
    x_adv = MarginPGD(steps=steps)(model, x, y, eps=eps, norm=norm, generator=generator)
    found = ~is_correct(model.predict(x_adv).float(), y, model.task)
    points = x.clone()
    distances = torch.full((len(x),), float("inf"), device=x.device, dtype=x.dtype)
    if found.any():
        points[found], distances[found] = bisect_to_boundary(
            model, x[found], x_adv[found], y[found], steps=bisection_steps, norm=norm
        )
    return points, distances, found


@dataclass
class MarginState:
    """One margin estimate per training sample and the flags of the current epoch.

    Rules (IMA, applied at the end of each epoch to samples classified correctly when last seen):
    no adversarial example within the margin -> margin + ``step`` (expand); one found at
    distance d -> (margin + d) / 2 (pull back toward the measured boundary); clamped to
    [0, ``maximum``]. Misclassified and unseen samples keep their margin.
    """

    margins: np.ndarray
    step: float
    maximum: float
    correct: np.ndarray = field(init=False)
    found: np.ndarray = field(init=False)
    pulled: np.ndarray = field(init=False)

    @classmethod
    def start(cls, n: int, step: float, maximum: float) -> MarginState:
        """Every margin starts at ``step``, as in the paper's code."""
        return cls(np.full(n, min(step, maximum)), step, maximum)

    def __post_init__(self) -> None:
        self.margins = np.asarray(self.margins, dtype=np.float64)
        self._reset()

    def _reset(self) -> None:
        n = len(self.margins)
        self.correct = np.zeros(n, dtype=bool)
        self.found = np.zeros(n, dtype=bool)
        self.pulled = self.margins.copy()

    def record(self, index: np.ndarray, correct: np.ndarray, found: np.ndarray, distance: np.ndarray) -> None:
        """What one batch saw: correctness, whether the attack crossed the boundary within the
        margin and, where it did, the boundary distance measured by bisection (ignored elsewhere)."""
        self.correct[index] = correct
        self.found[index] = correct & found
        hit = index[correct & found]
        self.pulled[hit] = (self.margins[hit] + distance[correct & found]) / 2

    def end_epoch(self) -> None:
        expand = self.correct & ~self.found
        updated = np.where(self.found, self.pulled, self.margins + np.where(expand, self.step, 0.0))
        self.margins = np.clip(updated, 0.0, self.maximum)
        self._reset()

    def histogram(self, bins: int = 16) -> dict[str, list[float]]:
        counts, edges = np.histogram(self.margins, bins=bins, range=(0.0, self.maximum))
        return {"edges": edges.tolist(), "counts": counts.tolist()}
