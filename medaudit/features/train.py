"""A fresh network trained on a constructed set, and its accuracy on clean images.

The fresh network goes inside the audited model's preprocessing (an ``AuditModel`` with the same
``InputSpec``), so it sees its training images and the test split exactly as the audited model
does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from medaudit.attacks.base import seeded_generator
from medaudit.data import AuditData
from medaudit.errors import ConfigError
from medaudit.metrics import classification_metrics
from medaudit.models import AuditModel, InputSpec
from medaudit.models.archs import architectures
from medaudit.models.card import read_card
from medaudit.models.wrapper import ModelInfo
from medaudit.task import Task

REFERENCE_ARCH = "rescnn"
"""The fresh network when the audited model's own architecture cannot be rebuilt."""

Factory = Callable[[], nn.Module]


def _model_arch(model: AuditModel) -> str | None:
    """The built-in architecture the model is (a state_dict's ``--arch``) or its card names."""
    if model.info.arch in architectures:
        return model.info.arch
    card = read_card(Path(model.info.path)) if model.info.card else None
    return card.arch if card is not None and card.arch in architectures else None


def fresh_factory(model: AuditModel, channels: int, n_classes: int) -> tuple[Factory, str]:
    """A builder of freshly initialised networks and what it builds: the model's own built-in
    architecture re-initialised when it has one, else the reference ``rescnn``."""
    arch = _model_arch(model)
    name = arch or REFERENCE_ARCH
    build = architectures.get(name)
    description = (
        f"{name} (the model's architecture, re-initialised)" if arch else f"{name} (reference architecture)"
    )

    def factory() -> nn.Module:
        network = build(channels, n_classes)
        assert isinstance(network, nn.Module), f"architecture {name} built a {type(network).__name__}"
        return network

    return factory, description


def train_fresh(
    factory: Factory,
    images: torch.Tensor,
    labels: torch.Tensor,
    spec: InputSpec,
    task: Task,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: torch.device,
    progress: Callable[[int], None] | None = None,
    *,
    class_names: tuple[str, ...] | None = None,
    description: str = "fresh network",
) -> AuditModel:
    """Train ``factory()`` from its seeded initialisation with AdamW on float ``images`` in [0, 1].

    Initialisation and dropout come from ``seed`` inside ``fork_rng`` (the caller's RNG is left as
    it was); every epoch shuffles with its own generator keyed by (seed, epoch). ``progress`` gets 1 per
    training batch.
    """
    if len(images) < 2:
        raise ConfigError(f"a fresh network needs at least 2 training images, got {len(images)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seeded_generator(seed, 1).initial_seed()) % 2**63)
        network = factory()
        parameters = sum(p.numel() for p in network.parameters())
        info = ModelInfo(path=description, format="fresh", sha256="", parameters=parameters)
        fresh = AuditModel(network, spec, info, task=task, class_names=class_names).to(device)
        optimiser = torch.optim.AdamW(network.parameters(), lr=lr)
        network.train()
        for epoch in range(epochs):
            order = torch.randperm(len(images), generator=seeded_generator(seed, 2, epoch))
            for start in range(0, len(images), batch_size):
                index = order[start : start + batch_size]
                if len(index) < 2:  # BatchNorm cannot train on one image
                    continue
                loss = F.cross_entropy(fresh(images[index].to(device)), labels[index].to(device))
                if not torch.isfinite(loss):
                    raise ConfigError(
                        f"training the fresh network diverged (non-finite loss in epoch {epoch + 1}): "
                        "lower --lr"
                    )
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                if progress is not None:
                    progress(1)
    return fresh.eval()


def training_batches(n: int, batch_size: int) -> int:
    """Batches per epoch that ``train_fresh`` trains on (a last batch of one image is skipped)."""
    return sum(1 for start in range(0, n, batch_size) if n - start >= 2)


def accuracy(model: AuditModel, data: AuditData, batch_size: int) -> tuple[float, float]:
    """(accuracy, balanced accuracy) of ``model`` on the clean images of ``data``."""
    logits = torch.cat(
        [model.predict(x.to(model.device)).float().cpu() for _, x, _ in data.batches(batch_size)]
    )
    metrics = classification_metrics(logits, data.labels, data.task, data.class_names)
    return float(metrics["accuracy"]), float(metrics["balanced_accuracy"])
