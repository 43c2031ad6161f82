"""The shift audit: a pure function of (model, data, config) -> ``ShiftResult``.

Images are corrupted batch by batch and fed straight to the model, so the
corrupted set is never held in memory: cost grows with corruptions x severities
x images, memory only with the batch size (plus one logit row per image and
cell). Each image is seeded by its index in the audited data, so the numbers do
not depend on ``batch_size``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medaudit.data import AuditData
from medaudit.errors import ConfigError
from medaudit.evaluate import predict_checked
from medaudit.metrics import (
    BOOTSTRAP_CONFIDENCE,
    BOOTSTRAP_METHOD,
    BOOTSTRAP_ROUNDS,
    classification_metrics,
    clean_row_intervals,
)
from medaudit.models import AuditModel
from medaudit.shift.baselines import baseline_for
from medaudit.shift.catalogue import PARAMS, REFERENCE_SIZE, SEVERITIES, family_of
from medaudit.shift.corrupt import apply_uint8, corruptions, param_source
from medaudit.shift.scores import summary
from medaudit.task import Task


@dataclass(frozen=True)
class ShiftConfig:
    corruptions: tuple[str, ...]
    source: str
    """The MedMNIST-C dataset whose parameter table is used."""
    mode: str
    severities: tuple[int, ...] = SEVERITIES
    seed: int = 0
    batch_size: int = 256

    def __post_init__(self) -> None:
        if not self.corruptions:
            raise ConfigError("no corruptions to run")
        for name in self.corruptions:
            corruptions.get(name)
        bad = [s for s in self.severities if s not in SEVERITIES]
        if bad or not self.severities:
            raise ConfigError(f"--severities takes values in 1..5, got {list(self.severities)}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")

    def params_from(self, corruption: str) -> str:
        return param_source(corruption, self.source, None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "corruptions": list(self.corruptions),
            "severities": list(self.severities),
            "params": self.source,
            "mode": self.mode,
            "seed": self.seed,
            "batch_size": self.batch_size,
        }


def baseline_reason(config: ShiftConfig, data: AuditData) -> str | None:
    """Why the AlexNet baselines do not apply (None when they do)."""
    ident = data.identity
    if config.mode != "medmnistc":
        return "scaled mode (MedMNIST-C-style): not comparable with the 224 px AlexNet baselines"
    if data.size[0] != REFERENCE_SIZE:
        return f"{data.size[0]} px images: the AlexNet baselines are for the 224 px test split"
    if ident.get("source") != "medmnist" or ident.get("split") != "test" or ident.get("limit"):
        return "the AlexNet baselines are for the full official MedMNIST test split"
    if ident.get("name") != config.source:
        return f"parameters of {config.source} on {ident.get('name')}"
    if tuple(config.severities) != SEVERITIES:
        return "the AlexNet baselines average all five severities"
    return None


@dataclass
class ShiftResult:
    """Clean and per-cell logits; every metric is derived from them."""

    config: ShiftConfig
    clean_logits: torch.Tensor
    cell_logits: dict[tuple[str, int], torch.Tensor]
    labels: torch.Tensor
    task: Task
    class_names: tuple[str, ...]
    baseline_note: str | None
    notes: list[str] = field(default_factory=list)

    def _metrics(self, logits: torch.Tensor) -> dict[str, Any]:
        m = classification_metrics(logits, self.labels, self.task, self.class_names)
        return {
            "n": m["n"],
            "accuracy": m["accuracy"],
            "balanced_accuracy": m["balanced_accuracy"],
            "balanced_error": 1.0 - m["balanced_accuracy"],
            "auc": m["auc"],
        }

    def clean_intervals(self) -> dict[str, Any]:
        """Bootstrap intervals of the clean row: eval's (``bootstrap_intervals`` at threshold 0.5,
        its default resamples and level, ``config.seed``), so they equal ``eval``'s with the same
        seed; ``balanced_error_ci`` is 1 minus the balanced accuracy interval, reversed."""
        intervals = clean_row_intervals(self.clean_logits, self.labels, self.task, self.config.seed)
        balanced = intervals["balanced_accuracy_ci"]
        return {
            "accuracy_ci": intervals["accuracy_ci"],
            "balanced_accuracy_ci": balanced,
            "balanced_error_ci": None if balanced is None else [1.0 - balanced[1], 1.0 - balanced[0]],
            "auc_ci": intervals["auc_ci"],
            "auc_skipped": intervals["auc_skipped"],
        }

    def to_dict(self) -> dict[str, Any]:
        clean = self._metrics(self.clean_logits)
        intervals = self.clean_intervals()
        auc_skipped = intervals.pop("auc_skipped")
        cells = {key: self._metrics(logits) for key, logits in self.cell_logits.items()}
        records = []
        for (name, severity), m in cells.items():
            records.append(
                {
                    "corruption": name,
                    "family": family_of(name),
                    "severity": severity,
                    **m,
                    "accuracy_drop": clean["accuracy"] - m["accuracy"],
                    "balanced_error_drop": m["balanced_error"] - clean["balanced_error"],
                }
            )
        by_corruption = {
            name: [cells[(name, s)] for s in self.config.severities] for name in self.config.corruptions
        }
        baseline = None if self.baseline_note else baseline_for(self.config.source)
        scores = summary(clean, by_corruption, baseline)
        per_corruption = scores.pop("per_corruption")
        return {
            "task": self.task.value,
            "label": "MedMNIST-C" if baseline is not None else "MedMNIST-C-style",
            "clean": {**clean, **intervals},
            "bootstrap": {
                "rounds": BOOTSTRAP_ROUNDS,
                "confidence": BOOTSTRAP_CONFIDENCE,
                "seed": self.config.seed,
                "method": BOOTSTRAP_METHOD,
                "auc_skipped": auc_skipped,
            },
            "corruptions": records,
            "per_corruption": [
                {"corruption": name, "params_from": self.config.params_from(name), **per_corruption[name]}
                for name in self.config.corruptions
            ],
            "summary": scores,
            "baseline": None if baseline is None else "AlexNet (medmnistc 0.1.0)",
            "baseline_note": self.baseline_note,
            "notes": self.notes,
        }


def run_shift(
    model: AuditModel,
    data: AuditData,
    config: ShiftConfig,
    progress: Callable[[int], None] | None = None,
) -> ShiftResult:
    """Clean and corrupted predictions of a bound model for every corruption x severity."""
    task, class_names = model.task, model.class_names
    assert task is not None and class_names is not None, "bind_model first"
    if data.size[0] != data.size[1]:
        raise ConfigError(f"shift needs square images, got {data.size[0]}x{data.size[1]}")
    cells = [(name, s) for name in config.corruptions for s in config.severities]
    clean_chunks: list[torch.Tensor] = []
    cell_chunks: dict[tuple[str, int], list[torch.Tensor]] = {cell: [] for cell in cells}
    for start in range(0, data.n, config.batch_size):
        stop = min(start + config.batch_size, data.n)
        batch = data.uint8_images(start, stop)
        nhwc = batch.permute(0, 2, 3, 1).numpy()
        clean_chunks.append(predict_checked(model, batch.float() / 255, start))
        for name, severity in cells:
            corrupted = apply_uint8(
                nhwc, name, severity, config.seed, source=config.params_from(name),
                mode=config.mode, indices=range(data.offset + start, data.offset + stop),
            )  # fmt: skip
            x = torch.from_numpy(np.ascontiguousarray(corrupted.transpose(0, 3, 1, 2))).float() / 255
            cell_chunks[(name, severity)].append(predict_checked(model, x, start))
            if progress:
                progress(stop - start)
    notes = [
        f"{name}: {config.source} has no {name} in MedMNIST-C; parameters of {config.params_from(name)}"
        for name in config.corruptions
        if name not in PARAMS[config.source]
    ]
    return ShiftResult(
        config=config,
        clean_logits=torch.cat(clean_chunks),
        cell_logits={cell: torch.cat(chunks) for cell, chunks in cell_chunks.items()},
        labels=data.labels,
        task=task,
        class_names=class_names,
        baseline_note=baseline_reason(config, data),
        notes=notes,
    )
