"""The confounder probe: a pure function of (model, data, config) -> ``ProbeResult``, no training.

Each artifact x strength (x position for marks placed at a corner) is added to every
test image and the model is run once on the result. Everything else is derived from
those logits and the clean ones, because an image gets exactly the same artifact alone
or in any subset (per-image seeding by global index):

- flip rate and mean change of each class's probability (artifact on all images);
- accuracy and AUC with the artifact on all images;
- the reversed-correlation test of "Source Matters" (Juodelyte et al. 2024): the artifact
  on negative-class images only (label != positive class), positives clean. A model that
  learned "artifact => positive" ranks the negatives above the positives: the one-vs-rest
  AUC of the positive class drops, below 0.5 when the shortcut wins over the finding.

Memory grows with one logit row per image and cell, not with the images.
Multi-label tasks raise ConfigError: "negative class" needs one label per image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medaudit.confounders.artifacts import CORNERS, apply_artifact, artifacts
from medaudit.data import AuditData
from medaudit.errors import ConfigError
from medaudit.evaluate import predict_checked
from medaudit.metrics import classification_metrics, predictions, probabilities, roc_auc
from medaudit.models import AuditModel
from medaudit.task import Task

DEFAULT_ARTIFACTS: tuple[str, ...] = ("tag", "patch", "border", "ruler", "lowpass", "dose_noise")
DEFAULT_STRENGTHS: tuple[float, ...] = (0.25, 0.5, 1.0)
POSITION_OPTION = "corner"
"""Artifacts with this keyword option are probed at every position."""
SENSITIVE = 0.1
"""Worst flip rate or reversed AUC drop from which an artifact is called 'sensitive'."""
MILD = 0.02
"""... and from which 'mildly sensitive' (below: 'insensitive')."""
PUSH_MIN = 0.01
"""Smallest mean probability change reported as a push towards a class."""

Cell = tuple[str, float, str | None]
"""(artifact, strength, position or None)."""


def is_positional(name: str) -> bool:
    """Whether the artifact is placed at a corner (so its position is probed)."""
    return POSITION_OPTION in artifacts.get(name).options


@dataclass(frozen=True)
class ProbeConfig:
    artifacts: tuple[str, ...] = DEFAULT_ARTIFACTS
    strengths: tuple[float, ...] = DEFAULT_STRENGTHS
    positions: tuple[str, ...] = CORNERS
    """Positions (the ``corner`` option) for tag, patch and stamp; ignored by the others."""
    seed: int = 0
    batch_size: int = 256
    positive_class: int | None = None
    """Class whose negatives get the artifact in the reversed test (default: the last class)."""
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Extra keyword options per artifact (e.g. ``{"stamp": {"image": path}}``)."""

    def __post_init__(self) -> None:
        if not self.artifacts:
            raise ConfigError("no artifacts to probe")
        if len(set(self.artifacts)) != len(self.artifacts):
            raise ConfigError(f"artifacts listed twice: {list(self.artifacts)}")
        if not self.strengths:
            raise ConfigError("no strengths to probe")
        bad = [s for s in self.strengths if not 0 < s <= 1]
        if bad:
            raise ConfigError(f"strengths must lie in (0, 1], got {bad}")
        positions = tuple("centre" if p == "center" else p for p in self.positions)
        unknown = [p for p in positions if p not in CORNERS]
        if unknown or not positions:
            raise ConfigError(f"unknown position {unknown or '(none)'}: choose from {', '.join(CORNERS)}")
        object.__setattr__(self, "positions", tuple(dict.fromkeys(positions)))
        object.__setattr__(self, "strengths", tuple(sorted(set(self.strengths))))
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        probe = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
        for name in self.artifacts:
            artifacts.get(name)  # unknown name -> ConfigError with suggestions
            for position in self.positions_of(name):
                apply_artifact(probe, name, 0.0, **self.options_of(name, position))  # checks options

    def positions_of(self, name: str) -> tuple[str | None, ...]:
        return self.positions if is_positional(name) else (None,)

    def options_of(self, name: str, position: str | None) -> dict[str, Any]:
        extra = dict(self.options.get(name, {}))
        if position is not None:
            extra[POSITION_OPTION] = position
        return extra

    @property
    def cells(self) -> list[Cell]:
        return [
            (name, s, position)
            for name in self.artifacts
            for s in self.strengths
            for position in self.positions_of(name)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifacts": list(self.artifacts),
            "strengths": list(self.strengths),
            "positions": list(self.positions),
            "seed": self.seed,
            "batch_size": self.batch_size,
            "positive_class": self.positive_class,
            "options": {k: {o: str(v) for o, v in opts.items()} for k, opts in self.options.items()},
        }


def _nanmax(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return max(finite) if finite else math.nan


@dataclass
class ProbeResult:
    """Clean and per-cell logits; every statistic is derived from them in ``to_dict``."""

    config: ProbeConfig
    clean_logits: torch.Tensor
    cell_logits: dict[Cell, torch.Tensor]
    labels: torch.Tensor
    task: Task
    class_names: tuple[str, ...]
    positive_class: int

    def _positive_auc(self, logits: torch.Tensor) -> float:
        """One-vs-rest AUC of the positive class (the binary AUC for binary tasks)."""
        probs = probabilities(logits, self.task)[:, self.positive_class].numpy().astype(np.float64)
        return roc_auc((self.labels == self.positive_class).numpy(), probs)

    def _metrics(self, logits: torch.Tensor) -> dict[str, Any]:
        m = classification_metrics(logits, self.labels, self.task, self.class_names)
        return {
            "n": m["n"],
            "accuracy": m["accuracy"],
            "auc": m["auc"],
            "auc_positive": self._positive_auc(logits),
        }

    def records(self) -> list[dict[str, Any]]:
        clean = self._metrics(self.clean_logits)
        clean_probs = probabilities(self.clean_logits, self.task)
        clean_pred = predictions(clean_probs, self.task)
        negative = (self.labels != self.positive_class)[:, None]
        out = []
        for (name, strength, position), logits in self.cell_logits.items():
            probs = probabilities(logits, self.task)
            change = (probs - clean_probs).mean(dim=0)
            m = self._metrics(logits)
            reversed_auc = self._positive_auc(torch.where(negative, logits, self.clean_logits))
            out.append(
                {
                    "artifact": name,
                    "strength": strength,
                    "position": position,
                    "n": m["n"],
                    "flip_rate": float((predictions(probs, self.task) != clean_pred).float().mean()),
                    "mean_probability_change": {
                        c: float(v) for c, v in zip(self.class_names, change, strict=True)
                    },
                    "accuracy": m["accuracy"],
                    "accuracy_drop": clean["accuracy"] - m["accuracy"],
                    "auc": m["auc"],
                    "auc_drop": clean["auc"] - m["auc"],
                    "auc_reversed": reversed_auc,
                    "auc_drop_reversed": clean["auc_positive"] - reversed_auc,
                    "reversed_below_chance": bool(reversed_auc < 0.5),
                }
            )
        return out

    def _verdict(self, name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        flip = max(rows, key=lambda r: r["flip_rate"])
        drops = [r for r in rows if not math.isnan(r["auc_drop_reversed"])]
        drop = max(drops, key=lambda r: r["auc_drop_reversed"]) if drops else None
        worst_drop = drop["auc_drop_reversed"] if drop else math.nan
        # the push: the single largest mean probability gain of any class in any cell
        push_row, push_class = max(
            ((r, c) for r in rows for c in self.class_names),
            key=lambda rc: rc[0]["mean_probability_change"][rc[1]],
        )
        push = push_row["mean_probability_change"][push_class]
        worst = _nanmax([flip["flip_rate"], worst_drop])
        level = "sensitive" if worst >= SENSITIVE else "mildly sensitive" if worst >= MILD else "insensitive"
        parts = [f"{level}: flips {flip['flip_rate']:.0%} of predictions ({_where(flip)})"]
        if push >= PUSH_MIN:
            parts.append(
                f"pushes predictions towards {push_class}: {push:+.2f} probability ({_where(push_row)})"
            )
        else:
            parts.append("no consistent push towards a class")
        if drop is not None and worst_drop >= MILD:
            below = ", below chance" if drop["reversed_below_chance"] else ""
            parts.append(f"reversed AUC {drop['auc_reversed']:.2f}{below} ({_where(drop)})")
        return {
            "artifact": name,
            "verdict": level,
            "worst_flip_rate": flip["flip_rate"],
            "worst_flip_at": {"strength": flip["strength"], "position": flip["position"]},
            "worst_auc_drop_reversed": worst_drop,
            "worst_auc_drop_at": None
            if drop is None
            else {"strength": drop["strength"], "position": drop["position"]},
            "min_auc_reversed": drop["auc_reversed"] if drop else math.nan,
            "pushes_towards": push_class if push >= PUSH_MIN else None,
            "max_probability_change": push,
            "summary": "; ".join(parts),
        }

    def to_dict(self) -> dict[str, Any]:
        clean = self._metrics(self.clean_logits)
        records = self.records()
        ranking = [
            self._verdict(n, [r for r in records if r["artifact"] == n]) for n in self.config.artifacts
        ]
        ranking.sort(key=lambda v: -_nanmax([v["worst_flip_rate"], v["worst_auc_drop_reversed"]]))
        by_position = []
        for name in self.config.artifacts:
            for position in self.config.positions_of(name):
                if position is None:
                    continue
                rows = [r for r in records if r["artifact"] == name and r["position"] == position]
                by_position.append(
                    {
                        "artifact": name,
                        "position": position,
                        "worst_flip_rate": max(r["flip_rate"] for r in rows),
                        "worst_auc_drop_reversed": _nanmax([r["auc_drop_reversed"] for r in rows]),
                    }
                )
        return {
            "task": self.task.value,
            "positive_class": self.class_names[self.positive_class],
            "clean": clean,
            "probes": records,
            "ranking": ranking,
            "by_position": by_position,
            "thresholds": {"sensitive": SENSITIVE, "mild": MILD},
        }


def _where(row: dict[str, Any]) -> str:
    position = f", {row['position']}" if row["position"] else ""
    return f"strength {row['strength']:g}{position}"


def resolve_positive(data: AuditData, positive_class: int | None) -> int:
    """The positive class index; ConfigError for multi-label tasks or an index out of range."""
    if data.task is Task.MULTI_LABEL:
        raise ConfigError("the confounder probe does not support multi-label tasks yet")
    if positive_class is None:
        return data.num_classes - 1
    if not 0 <= positive_class < data.num_classes:
        raise ConfigError(f"positive class {positive_class} is not in 0..{data.num_classes - 1}")
    return positive_class


def run_probe(
    model: AuditModel,
    data: AuditData,
    config: ProbeConfig,
    progress: Callable[[int], None] | None = None,
) -> ProbeResult:
    """Clean predictions and predictions with each artifact cell on every image of a bound model."""
    positive = resolve_positive(data, config.positive_class)
    if data.size[0] != data.size[1]:
        raise ConfigError(f"the probe needs square images, got {data.size[0]}x{data.size[1]}")
    cells = config.cells
    clean_chunks: list[torch.Tensor] = []
    cell_chunks: dict[Cell, list[torch.Tensor]] = {cell: [] for cell in cells}
    for start in range(0, data.n, config.batch_size):
        stop = min(start + config.batch_size, data.n)
        batch = data.uint8_images(start, stop)
        clean_chunks.append(predict_checked(model, batch.float() / 255, start))
        for name, strength, position in cells:
            marked = apply_artifact(
                batch, name, strength, config.seed, indices=range(data.offset + start, data.offset + stop),
                **config.options_of(name, position),
            )  # fmt: skip
            cell_chunks[(name, strength, position)].append(
                predict_checked(model, marked.float() / 255, start)
            )
            if progress:
                progress(stop - start)
    return ProbeResult(
        config=config,
        clean_logits=torch.cat(clean_chunks),
        cell_logits={cell: torch.cat(chunks) for cell, chunks in cell_chunks.items()},
        labels=data.labels,
        task=data.task,
        class_names=data.class_names,
        positive_class=positive,
    )
