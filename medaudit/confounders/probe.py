"""The confounder probe: a pure function of (model, data, config) -> ``ProbeResult``, no training.

Each artifact x strength (x position for marks placed at a corner) is added to every
test image, and so is its matched control (``calibration.matched_control``: the same mean
change and energy as a random smooth field); the model is run once on each. Everything else
is derived from those logits and the clean ones, because an image gets exactly the same
artifact and control alone or in any subset (per-image seeding by global index):

- flip rate and mean change of each class's probability (artifact on all images);
- accuracy and AUC with the artifact on all images;
- the reversed-correlation test of "Source Matters" (Juodelyte et al. 2024): the artifact
  on negative-class images only (label != positive class), positives clean. A model that
  learned "artifact => positive" ranks the negatives above the positives: the one-vs-rest
  AUC of the positive class drops, below 0.5 when the shortcut wins over the finding;
- the calibrated verdict: the push towards a class and the reversed AUC drop *beyond the
  control*, with bootstrap intervals over images; ``shortcut`` when one of them is at least
  ``min_effect`` and its interval excludes zero, ``fragile`` when the model still moves a lot
  (flip rate or reversed AUC drop of at least ``LARGE``), else ``none``.

Memory grows with two logit rows per image and cell, not with the images.
Multi-label tasks raise ConfigError: "negative class" needs one label per image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medaudit.confounders import calibration as cal
from medaudit.confounders.artifacts import apply_artifact, strength_level
from medaudit.confounders.config import (
    Cell,
    ProbeConfig,
)
from medaudit.data import AuditData
from medaudit.errors import ConfigError
from medaudit.evaluate import predict_checked
from medaudit.metrics import (
    classification_metrics,
    clean_row_intervals,
    predictions,
    probabilities,
    roc_auc,
)
from medaudit.models import AuditModel
from medaudit.task import Task

LARGE = 0.1
"""Flip rate or reversed AUC drop from which a response without a shortcut is called 'fragile'."""
PUSH_MIN = 0.01
"""Smallest mean probability change reported as a push towards a class."""
VERDICTS: tuple[str, ...] = ("shortcut", "fragile", "none")
"""Verdicts in order of concern."""


def _nanmax(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return max(finite) if finite else math.nan


@dataclass
class ProbeResult:
    """Clean, per-cell and per-cell control logits; every statistic is derived from them in ``to_dict``."""

    config: ProbeConfig
    clean_logits: torch.Tensor
    cell_logits: dict[Cell, torch.Tensor]
    control_logits: dict[Cell, torch.Tensor]
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

    def _probs(self, logits: torch.Tensor) -> np.ndarray:
        return probabilities(logits, self.task).numpy().astype(np.float64)

    def records(self) -> list[dict[str, Any]]:
        """One record per cell: the raw responses, the calibrated effects and the cell's verdict."""
        clean = self._metrics(self.clean_logits)
        clean_probs = probabilities(self.clean_logits, self.task)
        clean_pred = predictions(clean_probs, self.task)
        negative = (self.labels != self.positive_class)[:, None]
        weights = cal.bootstrap_weights(len(self.labels), self.config.bootstrap, self.config.seed)
        labels = self.labels.numpy()
        out = []
        for cell, logits in self.cell_logits.items():
            name, strength, position = cell
            probs = probabilities(logits, self.task)
            change = (probs - clean_probs).mean(dim=0)
            m = self._metrics(logits)
            reversed_auc = self._positive_auc(torch.where(negative, logits, self.clean_logits))
            flip_rate = float((predictions(probs, self.task) != clean_pred).float().mean())
            p_clean, p_art = clean_probs.numpy().astype(np.float64), probs.numpy().astype(np.float64)
            p_ctl = self._probs(self.control_logits[cell])
            c = cal.direction(p_clean, p_art)
            conf = self.config.confidence
            push = cal.push_effect(p_clean, p_art, p_ctl, c, weights, conf)
            rev = cal.reversed_effect(p_clean, p_art, p_ctl, labels, c, weights, conf)
            effects = [push, rev]
            if cal.is_shortcut(effects, self.config.min_effect):
                verdict = "shortcut"
            elif _nanmax([flip_rate, rev.artifact]) >= LARGE:
                verdict = "fragile"
            else:
                verdict = "none"
            best = cal.strongest(effects)
            out.append(
                {
                    "artifact": name,
                    "strength": strength,
                    "position": position,
                    "n": m["n"],
                    "flip_rate": flip_rate,
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
                    "control_flip_rate": float(
                        (
                            predictions(probabilities(self.control_logits[cell], self.task), self.task)
                            != clean_pred
                        )
                        .float()
                        .mean()
                    ),
                    "towards": self.class_names[c],
                    "push": push.to_dict(),
                    "reversed": rev.to_dict(),
                    "measure": best.measure,
                    "effect": best.value,
                    "effect_ci": [best.low, best.high],
                    "control": best.control,
                    "evidence": cal.evidence(effects),
                    "verdict": verdict,
                }
            )
        return out

    def _entry(self, name: str, position: str | None, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """The ranking entry of one artifact (at one position): its most concerning strength."""
        verdict = min((r["verdict"] for r in rows), key=VERDICTS.index)
        candidates = [r for r in rows if r["verdict"] == verdict]
        if verdict == "fragile":
            cell = max(candidates, key=lambda r: _nanmax([r["flip_rate"], r["reversed"]["artifact"]]))
        else:
            cell = max(candidates, key=lambda r: r["evidence"])
        push_row, push_class = max(
            ((r, c) for r in rows for c in self.class_names),
            key=lambda rc: rc[0]["mean_probability_change"][rc[1]],
        )
        push = push_row["mean_probability_change"][push_class]
        drops = [r["auc_drop_reversed"] for r in rows]
        return {
            "artifact": name,
            "position": position,
            "strength": cell["strength"],
            "verdict": verdict,
            "towards": cell["towards"],
            "measure": cell["measure"],
            "effect": cell["effect"],
            "effect_ci": cell["effect_ci"],
            "control": cell["control"],
            "artifact_value": cell[cell["measure"].split("_")[0]]["artifact"],
            "evidence": cell["evidence"],
            "flip_rate": cell["flip_rate"],
            "worst_flip_rate": max(r["flip_rate"] for r in rows),
            "worst_auc_drop_reversed": math.nan if any(map(math.isnan, drops)) else max(drops),
            "pushes_towards": push_class if push >= PUSH_MIN else None,
            "max_probability_change": push,
            "summary": self._summary(verdict, cell),
        }

    def _summary(self, verdict: str, cell: dict[str, Any]) -> str:
        """One sentence that says what was measured, beyond which control, with the interval."""
        conf = f"{self.config.confidence:.0%} CI"
        where = _where(cell)
        measure = cell[cell["measure"].split("_")[0]]
        lo, hi = cell["effect_ci"]
        interval = f"{conf} {lo:+.3f} to {hi:+.3f}"
        control = f"matched control {measure['control']:+.3f}; effect {cell['effect']:+.3f}, {interval}"
        if cell["measure"] == "push":
            effect = f"pushes towards {cell['towards']} by {measure['artifact']:+.3f} probability ({control})"
        else:
            effect = (
                f"on the images not of class {cell['towards']} it lowers that class's AUC by "
                f"{measure['artifact']:+.3f} ({control})"
            )
        if verdict == "shortcut":
            return f"shortcut: {effect}; {where}"
        flips = f"flips {cell['flip_rate']:.0%} of predictions"
        if verdict == "fragile":
            return (
                f"fragile: {flips} ({where}), but no more towards one class than a matched control: {effect}"
            )
        return f"none: {flips}; strongest effect {effect}; {where}"

    def clean_intervals(self) -> dict[str, Any]:
        """Bootstrap intervals of the clean accuracy and AUC: eval's (threshold 0.5, its resamples
        and level, ``config.seed``), so they equal ``eval``'s with the same seed."""
        found = clean_row_intervals(self.clean_logits, self.labels, self.task, self.config.seed)
        return {"accuracy_ci": found["accuracy_ci"], "auc_ci": found["auc_ci"]}

    def to_dict(self) -> dict[str, Any]:
        clean = {**self._metrics(self.clean_logits), **self.clean_intervals()}
        records = self.records()
        ranking = [
            self._entry(
                name, position, [r for r in records if r["artifact"] == name and r["position"] == position]
            )
            for name in self.config.artifacts
            for position in self.config.positions_of(name)
        ]
        ranking.sort(key=lambda e: (VERDICTS.index(e["verdict"]) > 0, -e["evidence"]))
        by_position = [
            {
                "artifact": e["artifact"],
                "position": e["position"],
                "worst_flip_rate": e["worst_flip_rate"],
                "worst_auc_drop_reversed": e["worst_auc_drop_reversed"],
            }
            for e in ranking
            if e["position"] is not None
        ]
        return {
            "task": self.task.value,
            "positive_class": self.class_names[self.positive_class],
            "clean": clean,
            "probes": records,
            "ranking": ranking,
            "by_position": by_position,
            "thresholds": {"large": LARGE, "min_effect": self.config.min_effect},
            "statistics": {
                "control": "per image, the artifact's change replaced, on the pixels it changes and around them, by a random smooth field with the "
                "same mean and energy",
                "bootstrap": self.config.bootstrap,
                "confidence": self.config.confidence,
                "seed": self.config.seed,
            },
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
    control_chunks: dict[Cell, list[torch.Tensor]] = {cell: [] for cell in cells}
    for start in range(0, data.n, config.batch_size):
        stop = min(start + config.batch_size, data.n)
        batch = data.uint8_images(start, stop)
        indices = range(data.offset + start, data.offset + stop)
        clean_chunks.append(predict_checked(model, batch.float() / 255, start))
        clean_nhwc = batch.permute(0, 2, 3, 1).numpy()
        for name, strength, position in cells:
            marked = apply_artifact(
                batch, name, strength, config.seed, indices=indices, **config.options_of(name, position)
            )
            cell_chunks[(name, strength, position)].append(
                predict_checked(model, marked.float() / 255, start)
            )
            rngs = cal.control_rngs(config.seed, indices, f"{name}:{position}", strength_level(strength))
            control = cal.matched_control(clean_nhwc, marked.permute(0, 2, 3, 1).numpy(), rngs)
            control_images = torch.from_numpy(control).permute(0, 3, 1, 2).float() / 255
            control_chunks[(name, strength, position)].append(predict_checked(model, control_images, start))
            if progress:
                progress(stop - start)
    return ProbeResult(
        config=config,
        clean_logits=torch.cat(clean_chunks),
        cell_logits={cell: torch.cat(chunks) for cell, chunks in cell_chunks.items()},
        control_logits={cell: torch.cat(chunks) for cell, chunks in control_chunks.items()},
        labels=data.labels,
        task=data.task,
        class_names=data.class_names,
        positive_class=positive,
    )
