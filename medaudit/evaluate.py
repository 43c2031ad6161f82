"""The clean-evaluation audit: a pure function of (model, data, config)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medaudit.errors import ConfigError, ModelLoadError
from medaudit.metrics import (
    BINARY_INTERVAL_METRICS,
    BOOTSTRAP_CONFIDENCE,
    BOOTSTRAP_METHOD,
    BOOTSTRAP_ROUNDS,
    CALIBRATION_BINS,
    bootstrap_intervals,
    calibration,
    classification_metrics,
    ordinal_metrics,
    probabilities,
)
from medaudit.task import Task

if TYPE_CHECKING:  # imported where used: EvalConfig checks the options before torch is loaded
    import torch

    from medaudit.data import AuditData
    from medaudit.models import AuditModel


@dataclass(frozen=True)
class EvalConfig:
    """Everything the eval numbers depend on besides the model and data (recorded in the result)."""

    batch_size: int = 256
    threshold: float = 0.5
    """Binary tasks: predict the positive class when its probability exceeds this."""
    bootstrap: int = BOOTSTRAP_ROUNDS
    """Resamples for the confidence intervals; 0 gives none."""
    confidence: float = BOOTSTRAP_CONFIDENCE
    seed: int = 0
    """Seeds the bootstrap (the data's --seed)."""
    calibration_bins: int = CALIBRATION_BINS
    positive_class: str | None = None
    """Binary tasks: the positive class, a class name or index (``--positive-class``); None: the
    last class. Resolved against the model's classes by ``positive_index``."""

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
        pos = positive_index(cfg.positive_class, self.task, self.class_names)
        if pos is None:
            pos = len(self.class_names) - 1
        out = classification_metrics(
            self.logits, self.labels, self.task, self.class_names, cfg.threshold, pos if binary else None
        )
        probs = probabilities(self.logits, self.task).cpu().numpy()
        labels = self.labels.cpu().numpy()
        out.update(calibration(probs, labels, self.task, cfg.calibration_bins))
        recall = list(out["per_class_recall"].values())
        out["threshold"] = cfg.threshold if binary else None
        out["positive_class"] = self.class_names[pos] if binary else None
        out["sensitivity"] = recall[pos] if binary else None
        out["specificity"] = recall[1 - pos] if binary else None
        ordinal = self.task is Task.ORDINAL
        out.update(
            ordinal_metrics(probs.argmax(axis=1), labels, probs.shape[1])
            if ordinal
            else {"kappa": None, "mae": None}
        )
        intervals = bootstrap_intervals(
            self.logits,
            self.labels,
            self.task,
            cfg.threshold,
            cfg.bootstrap,
            cfg.confidence,
            cfg.seed,
            pos if binary else None,
        )
        out.update({f"{key}_ci": intervals.get(f"{key}_ci") for key in BINARY_INTERVAL_METRICS})
        out["bootstrap"] = {
            "rounds": cfg.bootstrap,
            "confidence": cfg.confidence,
            "seed": cfg.seed,
            "method": BOOTSTRAP_METHOD,
            "auc_skipped": intervals["auc_skipped"],
        }
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task.value, "class_names": list(self.class_names), **self.metrics()}


def positive_index(value: str | None, task: Task, class_names: tuple[str, ...]) -> int | None:
    """``--positive-class`` (a class name, else an index) as the class's index; None when not
    given. ConfigError naming the option and the valid classes for an unknown class or a task
    that is not binary."""
    if value is None:
        return None
    valid = ", ".join(f"{i} ({name})" for i, name in enumerate(class_names))
    if task is not Task.BINARY or len(class_names) != 2:
        raise ConfigError(
            f"--positive-class applies to binary tasks only; this model's task is {task.value} "
            f"with classes {valid}"
        )
    text = value.strip()
    if text in class_names:
        return class_names.index(text)
    folded = [name.casefold() for name in class_names]
    if folded.count(text.casefold()) == 1:
        return folded.index(text.casefold())
    if text.lstrip("+-").isdigit() and 0 <= int(text) < len(class_names):
        return int(text)
    raise ConfigError(f"--positive-class '{value}' is not a class of this model: use one of {valid}")


def predict_checked(model: AuditModel, x: torch.Tensor, start: int) -> torch.Tensor:
    """Logits (float32, CPU) of one batch on the fastest backend; NaN or inf is a user error."""
    import torch

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
    import torch

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
    assert model.task is not None and model.class_names is not None, "bind_model first"
    positive_index(config.positive_class, model.task, model.class_names)  # refuse before predicting
    logits = predict_logits(model, data, config.batch_size, progress)
    if config.threshold != 0.5 and model.task is not Task.BINARY:
        raise ConfigError(
            f"--threshold applies to binary tasks only; this model's task is {model.task.value}"
        )
    return EvalResult(
        logits=logits, labels=data.labels, task=model.task, class_names=model.class_names, config=config
    )
