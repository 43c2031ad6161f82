"""The clean-evaluation audit: a pure function of (model, data, config)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from medaudit.data import AuditData
from medaudit.errors import ConfigError, ModelLoadError
from medaudit.metrics import classification_metrics
from medaudit.models import AuditModel
from medaudit.task import Task


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")


@dataclass(frozen=True)
class EvalResult:
    """Per-sample logits; every metric is derived from them."""

    logits: torch.Tensor
    labels: torch.Tensor
    task: Task
    class_names: tuple[str, ...]

    @property
    def n(self) -> int:
        return len(self.labels)

    def metrics(self) -> dict[str, Any]:
        return classification_metrics(self.logits, self.labels, self.task, self.class_names)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task.value, "class_names": list(self.class_names), **self.metrics()}


def predict_checked(model: AuditModel, x: torch.Tensor, start: int) -> torch.Tensor:
    """Logits (float32, CPU) of one batch on the fastest backend; NaN or inf is a user error."""
    logits = model.predict(x.to(model.device)).float().cpu()
    if not torch.isfinite(logits).all():
        raise ModelLoadError(
            f"the model returned NaN or infinite outputs for images {start}..{start + len(x) - 1}: "
            "check its weights and preprocessing (--mean/--std)"
        )
    return logits


def predict_logits(
    model: AuditModel,
    data: AuditData,
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Logits for every image, batched, on the model's fastest backend."""
    chunks = []
    for start, x, _ in data.batches(batch_size):
        chunks.append(predict_checked(model, x, start))
        if progress:
            progress(len(x))
    return torch.cat(chunks)


def evaluate(
    model: AuditModel,
    data: AuditData,
    config: EvalConfig,
    progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Clean metrics of a bound model (see ``bind_model``) on ``data``."""
    logits = predict_logits(model, data, config.batch_size, progress)
    assert model.task is not None and model.class_names is not None, "bind_model first"
    return EvalResult(logits=logits, labels=data.labels, task=model.task, class_names=model.class_names)
