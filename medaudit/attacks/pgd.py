"""Projected gradient descent (Madry et al., ICLR 2018), its variants BIM and PGD-CW.

* ``pgd``: random start, ``steps`` steps of ``step_size`` (default eps/4, as in the
  oncology study), ``restarts`` random restarts, cross-entropy loss.
* ``pgd-cw``: the same on the CW margin loss (Carlini & Wagner 2017), which does
  not saturate when the model is very confident.
* ``bim``: I-FGSM (Kurakin et al. 2017): no random start, step eps/10, 10 steps.

Per sample the first iterate that misclassifies is kept, so the result is never
weaker than the last iterate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from medaudit.attacks.base import (
    Attack,
    Eps,
    Random,
    attacks,
    is_correct,
    loss_and_grad,
    project,
    random_start,
    steepest_step,
    subset,
)
from medaudit.errors import ConfigError
from medaudit.models import AuditModel


@dataclass(frozen=True)
class IterativeAttack(Attack):
    """Shared loop; subclasses set the loss and the defaults."""

    steps: int = 10
    step_size: float | None = None  # absolute, in [0, 1] pixel units; None: default_step_fraction * eps
    restarts: int = 1
    random_start: bool = True
    loss: ClassVar[str] = "ce"
    default_step_fraction: ClassVar[float] = 0.25

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"--steps must be at least 1, got {self.steps}")
        if self.restarts < 1:
            raise ConfigError(f"--restarts must be at least 1, got {self.restarts}")
        if self.step_size is not None and self.step_size <= 0:
            raise ConfigError(f"--step-size must be positive, got {self.step_size}")

    def step_for(self, eps: torch.Tensor) -> torch.Tensor:
        return (
            torch.full_like(eps, self.step_size)
            if self.step_size is not None
            else self.default_step_fraction * eps
        )

    def perturb(
        self,
        model: AuditModel,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: Eps,
        norm: str,
        generator: Random,
    ) -> torch.Tensor:
        best = x.clone()
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        eps_all = torch.as_tensor(eps, dtype=x.dtype, device=x.device).expand(len(x)).clone()
        step_all = self.step_for(eps_all)
        for _ in range(self.restarts if self.random_start else 1):
            active = (~fooled).nonzero()[:, 0]
            if len(active) == 0:
                break
            xa, ya, eps_a, step_a = x[active], y[active], eps_all[active], step_all[active]
            current = (
                random_start(xa, eps_a, norm, subset(generator, active)) if self.random_start else xa.clone()
            )
            done = torch.zeros(len(active), dtype=torch.bool, device=x.device)
            for step_index in range(self.steps + 1):
                live = (~done).nonzero()[:, 0]
                if len(live) == 0:
                    break
                if step_index == self.steps:  # only check the last iterate
                    with torch.no_grad():
                        logits = model(current[live])
                    done[live[~is_correct(logits, ya[live], model.task)]] = True
                    break
                _, logits, grad = loss_and_grad(model, current[live], ya[live], self.loss)
                wrong = ~is_correct(logits, ya[live], model.task)
                done[live[wrong]] = True  # keep this iterate: it already misclassifies
                keep = live[~wrong]
                moved = current[keep] + steepest_step(grad[~wrong], step_a[keep], norm)
                current[keep] = project(xa[keep], moved, eps_a[keep], norm)
            best[active] = current
            fooled[active[done]] = True
        return best


@attacks.register("pgd")
@dataclass(frozen=True)
class PGD(IterativeAttack):
    """Projected gradient descent on the cross-entropy loss, from a random start."""

    name: ClassVar[str] = "pgd"


@attacks.register("pgd-cw")
@dataclass(frozen=True)
class PGDCW(IterativeAttack):
    """PGD on the CW margin loss, which does not saturate on very confident models."""

    name: ClassVar[str] = "pgd-cw"
    loss: ClassVar[str] = "margin"


@attacks.register("bim")
@dataclass(frozen=True)
class BIM(IterativeAttack):
    """Iterative FGSM: PGD with no random start and small steps (eps / 10)."""

    name: ClassVar[str] = "bim"
    random_start: bool = False
    default_step_fraction: ClassVar[float] = 0.1


def max_loss_pgd(
    model: AuditModel,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str,
    steps: int,
    generator: Random,
) -> torch.Tensor:
    """PGD that maximises cross-entropy for every step, with no early stop.

    For adversarial training, and for pushing already-misclassified samples
    further from their class when scoring AUC under attack. Step 2.5 eps / steps.
    """
    if eps <= 0 or len(x) == 0:
        return x.clone()
    current = random_start(x, eps, norm, generator)
    for _ in range(steps):
        _, _, grad = loss_and_grad(model, current, y, "ce")
        current = project(x, current + steepest_step(grad, 2.5 * eps / steps, norm), eps, norm)
    return current
