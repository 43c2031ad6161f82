"""APGD: Auto-PGD (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial
robustness with an ensemble of diverse parameter-free attacks", Algorithm 1).

PGD with momentum whose step size needs no tuning:

* the step size starts at ``2 * eps``; the first step is a plain projected
  steepest-ascent step, every later one mixes it with momentum ``alpha = 0.75``:
  ``z = P(x_k + eta * s(grad))``, ``x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha)(x_k - x_{k-1}))``
  where ``s`` is the gradient sign (L-inf) or the normalised gradient (L2);
* at checkpoints ``w_j = ceil(p_j * steps)`` with ``p_0 = 0``, ``p_1 = 0.22``,
  ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, a sample's step size is
  halved and its iterate reset to its best point so far when

  1. fewer than ``rho * (w_j - w_{j-1})`` of its steps since the last checkpoint
     increased the loss, or
  2. neither its step size nor its best loss changed since the last checkpoint;
* each sample keeps its best-loss point (and the gradient there).

Every run starts from ``random_start``; restarts run only on the samples no run
has fooled yet. Samples stop being attacked as soon as they are misclassified,
and the returned image is that first misclassified iterate (else the max-loss one).

``give_up`` (off unless asked for; the ``auto`` plan asks) also stops attacking a
sample at a checkpoint when the CW margin it still has to close exceeds
``GIVE_UP_SLACK`` times what it gained so far, scaled to the steps left: step
sizes only shrink, so a sample that would need a faster climb than its first,
largest steps gave cannot be reached. On the images a small budget leaves
robust this is most of them, and most of APGD's cost.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import torch

from medaudit.attacks.base import (
    Attack,
    Eps,
    Random,
    attacks,
    best_of_restarts,
    is_correct,
    loss_and_grad,
    margin,
    project,
    random_start,
    steepest_step,
    subset,
)
from medaudit.errors import ConfigError
from medaudit.models import AuditModel
from medaudit.task import Task

ALPHA = 0.75  # momentum weight of the new step (paper: alpha = 0.75)
INITIAL_STEP = 2.0  # step size starts at 2 * eps (paper: eta^(0) = 2 eps)
# give_up: a sample is dropped when its margin gap exceeds this many times its gain so far, scaled
# to the steps left (2: twice as fast a climb as the first, largest steps gave would still fall short)
GIVE_UP_SLACK = 2.0


def checkpoints(steps: int) -> list[int]:
    """The paper's checkpoints ``w_j = ceil(p_j * steps)`` (in hundredths, so 0.22 * 100 is exactly 22)."""
    p = [0, 22]
    while True:
        following = p[-1] + max(p[-1] - p[-2] - 3, 6)
        if following > 100:
            break
        p.append(following)
    return sorted({-(-pj * steps // 100) for pj in p})


@dataclass
class _Live:
    """Per-sample state of the samples an APGD run still attacks (all rows filtered together)."""

    rows: torch.Tensor  # index into the run's batch
    x: torch.Tensor  # clean images
    y: torch.Tensor
    prev: torch.Tensor  # x^(k-1)
    cur: torch.Tensor  # x^(k)
    grad: torch.Tensor  # gradient at x^(k)
    loss: torch.Tensor  # f(x^(k))
    best: torch.Tensor  # x_max
    best_grad: torch.Tensor
    best_loss: torch.Tensor  # f_max
    eta: torch.Tensor  # step size
    eta_check: torch.Tensor  # step size at the last checkpoint
    best_loss_check: torch.Tensor  # f_max at the last checkpoint
    increases: torch.Tensor  # steps that increased the loss since the last checkpoint
    start_margin: torch.Tensor  # CW margin at the start point (give_up)
    best_margin: torch.Tensor  # largest CW margin of any iterate (give_up)

    def keep(self, mask: torch.Tensor) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name)[mask])


@dataclass(frozen=True)
class APGD(Attack):
    """Shared APGD machinery; subclasses fix the loss."""

    loss: ClassVar[str] = "ce"
    steps: int = 100
    restarts: int = 1
    rho: float = 0.75
    give_up: bool = False

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"{self.name}: steps must be at least 1, got {self.steps}")
        if self.restarts < 1:
            raise ConfigError(f"{self.name}: restarts must be at least 1, got {self.restarts}")
        if not 0.0 < self.rho <= 1.0:
            raise ConfigError(f"{self.name}: rho must be in (0, 1], got {self.rho}")

    @classmethod
    def effective_loss(cls, num_classes: int, task: Task | None) -> str:
        """The loss actually used: DLR needs >= 3 mutually exclusive classes, else the CW margin."""
        if cls.loss == "dlr" and (task is Task.MULTI_LABEL or num_classes < 3):
            return "margin"
        return cls.loss

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
        if isinstance(eps, torch.Tensor):
            raise TypeError(f"{self.name} takes one eps for the whole batch, not one per sample")
        if not model.has_gradients:
            raise ConfigError(
                f"{self.name} needs gradients but this model is black-box only: use a gradient-free attack (square)"
            )
        with torch.no_grad():
            clean_logits = model(x)
        loss_name = self.effective_loss(clean_logits.shape[1], model.task)
        fooled = ~is_correct(clean_logits, y, model.task)

        def run(todo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            start = random_start(x[todo], eps, norm, subset(generator, todo))
            return self._run(model, x[todo], y[todo], start, eps, norm, loss_name)

        return best_of_restarts(x, fooled, self.restarts, run)

    def _run(
        self,
        model: AuditModel,
        x: torch.Tensor,
        y: torch.Tensor,
        start: torch.Tensor,
        eps: float,
        norm: str,
        loss_name: str,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One APGD run: (first misclassified point or x_max, f_max, misclassified) per sample."""
        task = model.task
        shape = (-1,) + (1,) * (x.ndim - 1)
        result = start.clone()
        result_loss = torch.full((len(x),), float("-inf"), device=x.device)
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)

        def retire(live: _Live, point: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
            """Record the samples ``point`` misclassifies; return the mask of those still correct."""
            hit = ~is_correct(logits, live.y, task)
            if hit.any():
                rows = live.rows[hit]
                result[rows] = point[hit]
                fooled[rows] = True
            return ~hit

        loss, logits, grad = loss_and_grad(model, start, y, loss_name)
        eta = torch.full((len(x),), INITIAL_STEP * eps, device=x.device, dtype=x.dtype)
        live = _Live(
            rows=torch.arange(len(x), device=x.device),
            x=x,
            y=y,
            prev=start,
            cur=start,
            grad=grad,
            loss=loss,
            best=start,
            best_grad=grad,
            best_loss=loss,
            eta=eta,
            eta_check=eta.clone(),
            best_loss_check=loss.clone(),
            increases=torch.zeros(len(x), device=x.device),
            start_margin=margin(logits, y, task),
            best_margin=margin(logits, y, task),
        )
        live.keep(retire(live, start, logits))
        marks = set(checkpoints(self.steps)) - {0}
        last_mark = 0
        for k in range(self.steps):  # iteration k computes x^(k+1)
            if len(live.rows) == 0:
                break
            z = project(
                live.x, live.cur + live.eta.view(shape) * steepest_step(live.grad, 1.0, norm), eps, norm
            )
            if k == 0:
                new = z
            else:
                new = project(
                    live.x,
                    live.cur + ALPHA * (z - live.cur) + (1 - ALPHA) * (live.cur - live.prev),
                    eps,
                    norm,
                )
            new_loss, logits, new_grad = loss_and_grad(model, new, live.y, loss_name)
            live.best_margin = torch.maximum(live.best_margin, margin(logits, live.y, task))
            keep = retire(live, new, logits)
            if not keep.all():
                live.keep(keep)
                new, new_loss, new_grad = new[keep], new_loss[keep], new_grad[keep]
                if len(live.rows) == 0:
                    break
            improved = new_loss > live.best_loss
            live.best = torch.where(improved.view(shape), new, live.best)
            live.best_grad = torch.where(improved.view(shape), new_grad, live.best_grad)
            live.best_loss = torch.where(improved, new_loss, live.best_loss)
            loss_before = live.loss
            live.prev, live.cur, live.grad, live.loss = live.cur, new, new_grad, new_loss
            if k in marks:  # k = w_j: judge the steps w_{j-1} .. w_j - 1
                few_increases = live.increases < self.rho * (k - last_mark)
                stalled = (live.eta == live.eta_check) & (live.best_loss <= live.best_loss_check)
                reduce = few_increases | stalled
                live.eta_check = live.eta.clone()
                live.best_loss_check = live.best_loss.clone()
                live.eta = torch.where(reduce, live.eta / 2, live.eta)
                live.cur = torch.where(reduce.view(shape), live.best, live.cur)
                live.grad = torch.where(reduce.view(shape), live.best_grad, live.grad)
                live.loss = torch.where(reduce, live.best_loss, live.loss)
                live.increases = torch.zeros_like(live.increases)
                last_mark = k
                if self.give_up:
                    hopeless = self._hopeless(live, done=k + 1)
                    result[live.rows[hopeless]] = live.best[hopeless]
                    result_loss[live.rows[hopeless]] = live.best_loss[hopeless]
                    live.keep(~hopeless)
                    loss_before = loss_before[~hopeless]
                    if len(live.rows) == 0:
                        break
            live.increases = live.increases + (live.loss > loss_before).to(live.increases.dtype)
        result[live.rows] = live.best
        result_loss[live.rows] = live.best_loss
        return result, result_loss, fooled

    def _hopeless(self, live: _Live, done: int) -> torch.Tensor:
        """Samples whose margin gap exceeds GIVE_UP_SLACK x their gain so far x (steps left / done)."""
        gap = -live.best_margin
        gain = (live.best_margin - live.start_margin).clamp_min(0.0)
        return gap > GIVE_UP_SLACK * gain * (self.steps - done) / done


@attacks.register("apgd-ce")
@dataclass(frozen=True)
class APGDCE(APGD):
    """APGD on the cross-entropy loss (per-label BCE for multi-label)."""

    name: ClassVar[str] = "apgd-ce"
    loss: ClassVar[str] = "ce"


@attacks.register("apgd-dlr")
@dataclass(frozen=True)
class APGDDLR(APGD):
    """APGD on the DLR loss; with fewer than 3 classes (or multi-label) the CW margin instead."""

    name: ClassVar[str] = "apgd-dlr"
    loss: ClassVar[str] = "dlr"
