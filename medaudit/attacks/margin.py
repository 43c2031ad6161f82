"""Minimal perturbation per sample: the smallest eps that flips each correct prediction.

Bisection over eps with a strong attack (PGD on the CW margin by default), per
sample and batched: each round attacks every unresolved sample at the midpoint
of its own bracket. The reported margin is the norm of the smallest adversarial
perturbation found, an upper bound within ``tolerance`` of the largest eps the
attack failed at. Samples not flipped at ``eps_max`` are censored (``> eps_max``).
This is the oncology study's per-image "adversarial sensitivity" and the margin
IMA training enlarges.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medaudit.attacks.base import Draws, is_correct, subset
from medaudit.attacks.pgd import BIM, PGD, PGDCW, IterativeAttack
from medaudit.data import AuditData
from medaudit.errors import ConfigError
from medaudit.models import AuditModel

QUANTILES = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9)
MARGIN_KEY = 60_000  # seeds of the bisection's draws, apart from the sweep's and the checks' keys
BISECTORS: dict[str, type[IterativeAttack]] = {"pgd": PGD, "pgd-cw": PGDCW, "bim": BIM}


@dataclass(frozen=True)
class MarginConfig:
    attack: str = "pgd-cw"
    norm: str = "linf"
    eps_max: float = 16 / 255
    tolerance: float = 0.05 / 255
    steps: int = 20
    restarts: int = 1
    batch_size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.attack not in BISECTORS:
            raise ConfigError(f"--margin bisects with pgd, pgd-cw or bim, not {self.attack}")
        if self.norm not in ("linf", "l2"):
            raise ConfigError(f"--norm must be linf or l2, got '{self.norm}'")
        if not np.isfinite(self.eps_max) or (self.norm == "linf" and self.eps_max > 1):
            raise ConfigError(f"eps {self.eps_max} is outside [0, 1] pixel units: use e.g. 0.004 or 1/255")
        if not 0 < self.tolerance < self.eps_max:
            raise ConfigError("the margin tolerance must be positive and below the largest eps")
        if self.steps < 1 or self.restarts < 1:
            raise ConfigError(
                f"--steps and --restarts must be at least 1, got {self.steps} and {self.restarts}"
            )


@dataclass(frozen=True)
class MarginResult:
    config: MarginConfig
    margins: np.ndarray  # float[n]: nan for clean-wrong samples, inf when censored at eps_max
    clean_correct: np.ndarray

    @property
    def n(self) -> int:
        return len(self.margins)

    def accuracy_at(self, eps: float) -> float:
        """Accuracy implied by the margins: clean-correct and margin above eps."""
        return float((self.clean_correct & (self.margins > eps)).mean())

    def to_dict(self) -> dict[str, Any]:
        correct = self.margins[self.clean_correct]
        finite = correct[np.isfinite(correct)]
        grid = np.linspace(0.0, self.config.eps_max, 33)
        counts, edges = np.histogram(finite, bins=16, range=(0.0, self.config.eps_max))
        fragile = np.argsort(np.where(self.clean_correct, self.margins, np.inf), kind="stable")[:10]
        return {
            "attack": self.config.attack,
            "norm": self.config.norm,
            "eps_max": self.config.eps_max,
            "tolerance": self.config.tolerance,
            "n": self.n,
            "clean_accuracy": float(self.clean_correct.mean()),
            "n_attacked": int(self.clean_correct.sum()),
            "n_censored": int(np.isinf(correct).sum()),
            "quantiles": {f"q{int(q * 100):02d}": _quantile(correct, q) for q in QUANTILES},
            "flipped_at_1_255": float((correct <= 1 / 255).mean()) if len(correct) else None,
            "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
            "curve": {"eps": grid.tolist(), "accuracy": [self.accuracy_at(e) for e in grid]},
            "most_fragile": [
                {"index": int(i), "margin": float(self.margins[i])} for i in fragile if self.clean_correct[i]
            ],
            "margins": [None if np.isnan(m) else (None if np.isinf(m) else float(m)) for m in self.margins],
        }


def _quantile(values: np.ndarray, q: float) -> float | None:
    """Like np.quantile, but a quantile reaching into the censored (inf) margins is inf, not nan."""
    if len(values) == 0:
        return None
    with np.errstate(invalid="ignore"):
        value = float(np.quantile(values, q))
    return float("inf") if np.isnan(value) else value


def _norm_of(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)


def _bisect(
    model: AuditModel,
    attack: IterativeAttack,
    x: torch.Tensor,
    y: torch.Tensor,
    config: MarginConfig,
    draws: Draws,
) -> torch.Tensor:
    """Smallest perturbation norm found per sample of a clean-correct batch (inf if none)."""
    lo = torch.zeros(len(x), device=x.device)
    hi = torch.full((len(x),), config.eps_max, device=x.device)
    best = torch.full((len(x),), float("inf"), device=x.device)

    def attempt(index: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        x_adv = attack(model, x[index], y[index], eps=eps, norm=config.norm, generator=subset(draws, index))
        fooled = ~is_correct(model.predict(x_adv).float(), y[index], model.task)
        found = _norm_of(x_adv - x[index], config.norm)
        best[index[fooled]] = torch.minimum(best[index[fooled]], found[fooled])
        return fooled

    everyone = torch.arange(len(x), device=x.device)
    open_ = everyone[attempt(everyone, hi)]
    while len(open_):
        open_ = open_[(hi[open_] - lo[open_]) > config.tolerance]
        if len(open_) == 0:
            break
        mid = (lo[open_] + hi[open_]) / 2
        fooled = attempt(open_, mid)
        hi[open_[fooled]] = mid[fooled]
        lo[open_[~fooled]] = mid[~fooled]
    return best


def minimal_perturbation(
    model: AuditModel,
    data: AuditData,
    config: MarginConfig,
    progress: Callable[[int], None] | None = None,
) -> MarginResult:
    """Per-sample minimal eps by bisection (see module docstring)."""
    attack = BISECTORS[config.attack](steps=config.steps, restarts=config.restarts)
    margins = np.full(data.n, np.nan)
    clean_correct = np.zeros(data.n, dtype=bool)
    for start, x, y in data.batches(config.batch_size):
        x, y = x.to(model.device), y.to(model.device)
        correct = is_correct(model.predict(x).float(), y, model.task).cpu().numpy()
        clean_correct[start : start + len(x)] = correct
        rows = np.flatnonzero(correct)
        if len(rows):
            # as the sweep: every draw from the image's own stream (global index), whatever the batch
            draws = Draws(config.seed, (MARGIN_KEY,), data.offset + start + rows)
            found = _bisect(model, attack, x[rows], y[rows], config, draws)
            margins[start + rows] = found.cpu().numpy()
        if progress:
            progress(len(x))
    return MarginResult(config=config, margins=margins, clean_correct=clean_correct)
