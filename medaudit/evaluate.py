"""The clean-evaluation audit: a pure function of (model, data, config)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from medaudit.data import AuditData
from medaudit.errors import ConfigError, ModelLoadError
from medaudit.metrics import (
    BINARY_INTERVAL_METRICS,
    CALIBRATION_BINS,
    bootstrap_intervals,
    calibration,
    classification_metrics,
    ordinal_metrics,
    probabilities,
)
from medaudit.models import AuditModel
from medaudit.task import Task


@dataclass(frozen=True)
class EvalConfig:
    """Everything the eval numbers depend on besides the model and data (recorded in the result)."""

    batch_size: int = 256
    threshold: float = 0.5
    """Binary tasks: predict the last class when its probability exceeds this."""
    bootstrap: int = 1000
    """Resamples for the confidence intervals; 0 gives none."""
    confidence: float = 0.95
    seed: int = 0
    """Seeds the bootstrap (the data's --seed)."""
    calibration_bins: int = CALIBRATION_BINS

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not 0 < self.threshold < 1:
            raise ConfigError(f"--threshold must lie strictly between 0 and 1, got {self.threshold}")
        if self.bootstrap < 0:
            raise ConfigError(f"--bootstrap must be at least 0 (0: no intervals), got {self.bootstrap}")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"--confidence must lie strictly between 0 and 1, got {self.confidence}")
        if self.calibration_bins < 1:
            raise ConfigError(f"calibration_bins must be at least 1, got {self.calibration_bins}")


@dataclass(frozen=True)
class EvalResult:
    """Per-sample logits; every metric is derived from them."""

    logits: torch.Tensor
    labels: torch.Tensor
    task: Task
    class_names: tuple[str, ...]
    config: EvalConfig = field(default_factory=EvalConfig)

    @property
    def n(self) -> int:
        return len(self.labels)

    def metrics(self) -> dict[str, Any]:
        """The Evaluator's metrics, then calibration, the binary operating point, ordinal
        agreement (null where the task has none) and the bootstrap intervals."""
        cfg, binary = self.config, self.task is Task.BINARY
        out = classification_metrics(self.logits, self.labels, self.task, self.class_names, cfg.threshold)
        probs = probabilities(self.logits, self.task).cpu().numpy()
        labels = self.labels.cpu().numpy()
        out.update(calibration(probs, labels, self.task, cfg.calibration_bins))
        recall = list(out["per_class_recall"].values())
        out["threshold"] = cfg.threshold if binary else None
        out["positive_class"] = self.class_names[-1] if binary else None
        out["sensitivity"] = recall[-1] if binary else None
        out["specificity"] = recall[0] if binary else None
        ordinal = self.task is Task.ORDINAL
        out.update(
            ordinal_metrics(probs.argmax(axis=1), labels, probs.shape[1])
            if ordinal
            else {"kappa": None, "mae": None}
        )
        intervals = bootstrap_intervals(
            self.logits, self.labels, self.task, cfg.threshold, cfg.bootstrap, cfg.confidence, cfg.seed
        )
        out.update({f"{key}_ci": intervals.get(f"{key}_ci") for key in BINARY_INTERVAL_METRICS})
        out["bootstrap"] = {
            "rounds": cfg.bootstrap,
            "confidence": cfg.confidence,
            "seed": cfg.seed,
            "method": "percentile; images resampled with replacement",
            "auc_skipped": intervals["auc_skipped"],
        }
        return out

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
    if config.threshold != 0.5 and model.task is not Task.BINARY:
        raise ConfigError(
            f"--threshold applies to binary tasks only; this model's task is {model.task.value}"
        )
    return EvalResult(
        logits=logits, labels=data.labels, task=model.task, class_names=model.class_names, config=config
    )
