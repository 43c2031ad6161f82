"""FGSM: one signed-gradient step of size eps (Goodfellow et al., ICLR 2015).

L2 takes one normalised-gradient step of length eps. Weak on purpose: it is the
paper's baseline and a quick first look, never the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from medaudit.attacks.base import Attack, Eps, Random, attacks, loss_and_grad, project, steepest_step
from medaudit.models import AuditModel


@attacks.register("fgsm")
@dataclass(frozen=True)
class FGSM(Attack):
    """One signed-gradient step of size eps: a quick, weak baseline."""

    name: ClassVar[str] = "fgsm"

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
        _, _, grad = loss_and_grad(model, x, y, "ce")
        return project(x, x + steepest_step(grad, eps, norm), eps, norm)
