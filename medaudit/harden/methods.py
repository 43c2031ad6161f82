"""Adversarial training methods, one class each, registered by name (``medaudit.registry``).

A method turns one training batch into a loss. Adversarial examples are made with the network in
eval mode (BatchNorm statistics untouched by the attack, as ``sample_models/train.py`` does), the
loss is computed in train mode. Each ``batch_loss`` returns (loss to minimise, clean term,
adversarial term); the two terms are what the progress callback shows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from medaudit.attacks.base import cross_entropy, is_correct, project, steepest_step
from medaudit.attacks.pgd import max_loss_pgd
from medaudit.harden.boundary import MarginState, attack_to_boundary
from medaudit.harden.config import METHOD_RULES, HardenConfig, MethodRules
from medaudit.models import AuditModel
from medaudit.models.trainable import set_mode
from medaudit.registries import methods as methods  # re-exported: the classes below register with it
from medaudit.task import Task

Losses = tuple[torch.Tensor, float, float]


@contextlib.contextmanager
def attacking(model: AuditModel) -> Iterator[None]:
    """Eval mode for the attack, train mode again afterwards."""
    set_mode(model.network, False)
    try:
        yield
    finally:
        set_mode(model.network, True)


class Method:
    """Base class; ``n_train`` sizes per-sample state (IMA's margins)."""

    name: ClassVar[str] = ""
    rules: ClassVar[MethodRules] = METHOD_RULES["pgd-at"]
    """Its own settings (beta, margins), checked by ``HardenConfig`` without importing this module."""

    def __init__(self, config: HardenConfig, n_train: int) -> None:
        self.config = config

    def batch_loss(
        self,
        model: AuditModel,
        x: torch.Tensor,
        y: torch.Tensor,
        index: np.ndarray,
        generator: torch.Generator,
    ) -> Losses:
        raise NotImplementedError

    def end_epoch(self) -> None:
        """Per-sample state updates at the end of an epoch (IMA)."""

    def state(self) -> dict[str, Any]:
        """What a checkpoint must keep besides the weights."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore ``state()`` from a checkpoint."""


@methods.register("pgd-at")
class PGDAT(Method):
    """Madry et al. (ICLR 2018): train on max-loss PGD examples only.

    Step 2.5 eps / steps, random start, no early stop (``attacks.pgd.max_loss_pgd``)."""

    name = "pgd-at"

    def batch_loss(
        self,
        model: AuditModel,
        x: torch.Tensor,
        y: torch.Tensor,
        index: np.ndarray,
        generator: torch.Generator,
    ) -> Losses:
        c = self.config
        with attacking(model):
            x_adv = max_loss_pgd(model, x, y, eps=c.eps, norm=c.norm, steps=c.steps, generator=generator)
            with torch.no_grad():
                clean = cross_entropy(model(x), y, model.task).mean()
        adversarial = cross_entropy(model(x_adv), y, model.task).mean()
        return adversarial, float(clean), float(adversarial.detach())


def _kl(clean_logits: torch.Tensor, adv_logits: torch.Tensor, task: Task | None) -> torch.Tensor:
    """Per-sample KL(p(x) || p(x')); per-label Bernoulli KLs summed for multi-label."""
    if task is Task.MULTI_LABEL:
        p = torch.sigmoid(clean_logits)
        log_p, log_q = F.logsigmoid(clean_logits), F.logsigmoid(adv_logits)
        log_1p, log_1q = F.logsigmoid(-clean_logits), F.logsigmoid(-adv_logits)
        return (p * (log_p - log_q) + (1 - p) * (log_1p - log_1q)).sum(dim=1)
    log_p, log_q = F.log_softmax(clean_logits, dim=1), F.log_softmax(adv_logits, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


@methods.register("trades")
class TRADES(Method):
    """Zhang et al. (ICML 2019): clean cross-entropy plus beta times the KL to a PGD example.

    CE(f(x), y) + beta * KL(f(x) || f(x')), with x' maximising the KL by PGD (start 0.001 *
    Gaussian noise, step 2.5 eps / steps)."""

    name = "trades"
    rules = METHOD_RULES["trades"]

    def adversarial(self, model: AuditModel, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        c = self.config
        with torch.no_grad():
            target = model(x)
        noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
        current = project(x, x + 0.001 * noise, c.eps, c.norm)
        for _ in range(c.steps):
            current = current.detach().requires_grad_(True)
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(_kl(target, model(current), model.task).sum(), current)
            current = project(
                x, current.detach() + steepest_step(grad, 2.5 * c.eps / c.steps, c.norm), c.eps, c.norm
            )
        return current.detach()

    def batch_loss(
        self,
        model: AuditModel,
        x: torch.Tensor,
        y: torch.Tensor,
        index: np.ndarray,
        generator: torch.Generator,
    ) -> Losses:
        with attacking(model):
            x_adv = self.adversarial(model, x, generator)
        clean_logits = model(x)
        clean = cross_entropy(clean_logits, y, model.task).mean()
        kl = _kl(clean_logits, model(x_adv), model.task).mean()
        assert self.config.beta is not None, "resolved by HardenConfig"
        return clean + self.config.beta * kl, float(clean.detach()), float(kl.detach())


@methods.register("ima")
class IMA(Method):
    """Ma & Liang (CMPB 2023): per-sample margins, trained on points of the decision boundary.

    Each correct sample is attacked inside its margin and a found adversarial example is moved
    onto the boundary by bisection. Loss (1 - beta) * CE(clean) + beta * CE(boundary points), both summed over the batch's samples
    and divided by the batch size (the adversarial term over correct samples that crossed)."""

    name = "ima"
    rules = METHOD_RULES["ima"]

    def __init__(self, config: HardenConfig, n_train: int) -> None:
        super().__init__(config, n_train)
        assert config.margin_step is not None and config.margin_max is not None, "resolved by HardenConfig"
        self.margins = MarginState.start(n_train, config.margin_step, config.margin_max)
        self.initial = self.margins.margins.copy()

    def batch_loss(
        self,
        model: AuditModel,
        x: torch.Tensor,
        y: torch.Tensor,
        index: np.ndarray,
        generator: torch.Generator,
    ) -> Losses:
        c = self.config
        assert c.beta is not None, "resolved by HardenConfig"
        logits = model(x)
        per_sample = cross_entropy(logits, y, model.task)
        clean = per_sample.sum() / len(x)
        correct = is_correct(logits.detach(), y, model.task)
        rows = correct.nonzero()[:, 0]
        found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        distance = torch.full((len(x),), float("inf"), device=x.device)
        adversarial = torch.zeros((), device=x.device)
        if len(rows):
            eps = torch.as_tensor(
                self.margins.margins[index[rows.cpu().numpy()]], dtype=x.dtype, device=x.device
            )
            with attacking(model):
                points, distance[rows], found[rows] = attack_to_boundary(
                    model, x[rows], y[rows], eps, norm=c.norm, steps=c.steps,
                    bisection_steps=c.bisection_steps, generator=generator,
                )  # fmt: skip
            hit = found[rows]
            if hit.any():
                adversarial = cross_entropy(model(points[hit]), y[rows][hit], model.task).sum() / len(x)
        self.margins.record(index, correct.cpu().numpy(), found.cpu().numpy(), distance.cpu().numpy())
        loss = (1 - c.beta) * clean + c.beta * adversarial
        return loss, float(clean.detach()), float(adversarial.detach())

    def end_epoch(self) -> None:
        self.margins.end_epoch()

    def state(self) -> dict[str, Any]:
        return {"margins": torch.from_numpy(self.margins.margins.copy())}

    def load_state(self, state: dict[str, Any]) -> None:
        self.margins.margins = state["margins"].numpy().astype(np.float64)
