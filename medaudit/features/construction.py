"""D_rand and D_det (Ilyas et al. 2019): training images moved by targeted L2 PGD towards a target
class of the audited model and relabelled with that target.

The constructed image still looks like its original class to a person, so a fresh model trained
on it can only learn the label from the audited model's nonrobust (adversarial) features; its
accuracy on the clean test split measures how useful those features are.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from medaudit.attacks.base import loss_and_grad, project, seeded_generator, steepest_step
from medaudit.data import AuditData
from medaudit.errors import ConfigError
from medaudit.features.config import KINDS
from medaudit.models import AuditModel

_KIND_KEYS = {kind: index for index, kind in enumerate(KINDS)}


def require_single_label_gradients(model: AuditModel, data: AuditData, what: str) -> None:
    """ConfigError unless ``model`` gives gradients and ``data`` has one label per image."""
    if not model.has_gradients:
        raise ConfigError(
            f"{what} needs gradients, but {model.info.path} runs as a black box (ONNX without a verified "
            "torch twin): audit the PyTorch file it was exported from"
        )
    if not data.task.single_label:
        raise ConfigError(
            f"{what} needs one label per image: multi-label data ({data.describe()}) is not supported"
        )


def targets_for(labels: torch.Tensor, num_classes: int, kind: str, seed: int) -> torch.Tensor:
    """Target classes, drawn all at once from a generator keyed by (seed, kind): the same for any
    batch size."""
    if kind not in _KIND_KEYS:
        raise ConfigError(f"unknown nonrobust dataset kind '{kind}': use {' or '.join(KINDS)}")
    if kind == "det":
        return (labels + 1) % num_classes
    generator = seeded_generator(seed, 0, _KIND_KEYS[kind])
    return torch.randint(0, num_classes, (len(labels),), generator=generator)


@dataclass(frozen=True)
class Constructed:
    """A constructed training set: float images (not quantised: 8 bits would erase the
    perturbation) labelled with their targets."""

    images: torch.Tensor
    labels: torch.Tensor
    """The targets: the new labels."""
    original_labels: torch.Tensor
    reached: torch.Tensor
    """Per image: the audited model predicts the target on the constructed image."""
    kind: str
    eps: float
    steps: int
    step_size: float

    @property
    def attack_success(self) -> float:
        return float(self.reached.float().mean())


def targeted_l2_pgd(
    model: AuditModel, x: torch.Tensor, target: torch.Tensor, eps: float, steps: int, step_size: float
) -> torch.Tensor:
    """Minimise CE(model(x + delta), target) from delta = 0 with normalised-gradient steps, projected
    onto the L2 ball of radius ``eps`` and the [0, 1] box after every step, all ``steps`` steps."""
    current = x.clone()
    for _ in range(steps):
        _, _, grad = loss_and_grad(model, current, target, "ce")
        current = project(x, current - steepest_step(grad, step_size, "l2"), eps, "l2")
    return current


def construct(
    model: AuditModel,
    data: AuditData,
    kind: str,
    eps: float,
    steps: int,
    step_size: float,
    seed: int,
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> Constructed:
    """D_``kind`` from every image of ``data``; ``progress`` gets the images done per batch.

    eps 0 is the control: the original images, unattacked, with the targets as labels.
    """
    require_single_label_gradients(model, data, "the nonrobust-feature construction")
    if not (math.isfinite(eps) and eps >= 0):
        raise ConfigError(f"--nonrobust-eps must be zero or positive, got {eps}")
    labels = data.labels
    targets = targets_for(labels, data.num_classes, kind, seed)
    images = torch.empty(data.images.shape, dtype=torch.float32)
    reached = torch.empty(data.n, dtype=torch.bool)
    for start, x, _ in data.batches(batch_size):
        stop = start + len(x)
        x = x.to(model.device)
        t = targets[start:stop].to(model.device)
        if eps > 0:
            x = targeted_l2_pgd(model, x, t, eps, steps, step_size)
        reached[start:stop] = (model.predict(x).argmax(dim=1) == t).cpu()
        images[start:stop] = x.cpu()
        if progress is not None:
            progress(stop - start)
    return Constructed(
        images=images,
        labels=targets,
        original_labels=labels.clone(),
        reached=reached,
        kind=kind,
        eps=float(eps),
        steps=steps,
        step_size=float(step_size),
    )
