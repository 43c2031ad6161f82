"""Subgroup audit: per-group accuracy, balanced accuracy and AUC with bootstrap intervals, and the gaps.

This is how a sampled confounder (sex, scanner, site) shows up on real data: the model is
fine on average but much worse for one group. Metrics follow ``classification_metrics`` so
that a group's numbers match what ``medaudit evaluate`` would report on that group alone.
Intervals are percentile bootstraps: samples are resampled with replacement within each
group; the gap's interval resamples every group independently in the same round and takes
the largest minus the smallest group statistic of that round. That spread is biased upward
(noise alone separates groups), so a gap interval far from 0 is the signal, not its exact bounds.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medaudit.errors import ConfigError, not_a_file
from medaudit.metrics import classification_metrics
from medaudit.task import Task

METRICS = ("accuracy", "balanced_accuracy", "auc")
MISSING = "missing"
MIN_GROUP = 2


def read_metadata(path: Path, attribute: str, n: int, id_column: str | None = None) -> list[str]:
    """The ``attribute`` value of each of the ``n`` samples, from a CSV with a header row.

    Without ``id_column`` row i describes sample i, so the row count must equal ``n``; with
    it, each row names its sample by an integer id in 0..n-1 and every sample needs exactly
    one row (so shuffled files join correctly). Empty values become the group "missing".
    """
    if not path.is_file():
        raise ConfigError(f"--metadata file {path} {not_a_file(path)}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c for c in (reader.fieldnames or []) if c is not None]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"cannot read --metadata {path}: {exc}") from None
    if not columns:
        raise ConfigError(f"--metadata {path} is empty: it needs a header row naming the columns")
    for name, flag in ((attribute, "--attribute"), (id_column, "--id-column")):
        if name is not None and name not in columns:
            raise ConfigError(
                f"{flag} '{name}' is not a column of {path}: available columns are {', '.join(columns)}"
            )
    values = [_value(row.get(attribute)) for row in rows]
    if id_column is None:
        if len(rows) != n:
            raise ConfigError(
                f"--metadata {path} has {len(rows)} rows but the audited split has {n} images: "
                "give one row per image in order, or name an id column with --id-column"
            )
        return values
    joined: list[str | None] = [None] * n
    for line, (row, value) in enumerate(zip(rows, values, strict=True), start=2):
        raw = (row.get(id_column) or "").strip()
        try:
            index = int(raw)
        except ValueError:
            raise ConfigError(
                f"--metadata {path} line {line}: id '{raw}' in column '{id_column}' is not an integer"
            ) from None
        if not 0 <= index < n:
            raise ConfigError(
                f"--metadata {path} line {line}: id {index} is outside 0..{n - 1} (the split's sample indices)"
            )
        if joined[index] is not None:
            raise ConfigError(f"--metadata {path} line {line}: id {index} appears more than once")
        joined[index] = value
    absent = [i for i, v in enumerate(joined) if v is None]
    if absent:
        raise ConfigError(
            f"--metadata {path} has no row for {len(absent)} of {n} images (first missing id: {absent[0]})"
        )
    return [v for v in joined if v is not None]


def _value(raw: str | None) -> str:
    text = (raw or "").strip()
    return text if text else MISSING


def _signature(labels: np.ndarray, task: Task) -> tuple[Any, ...]:
    """Which classes (or, multi-label, which label states) occur: an AUC is only comparable across
    resamples that contain the same ones, so resamples that lose a class are skipped."""
    if task is Task.MULTI_LABEL:
        return tuple(bool(x) for x in np.concatenate([(labels == 1).any(0), (labels == 0).any(0)]))
    return tuple(np.unique(labels).tolist())


def _stats(logits: torch.Tensor, labels: torch.Tensor, task: Task, names: tuple[str, ...]) -> list[float]:
    metrics = classification_metrics(logits, labels, task, names)
    return [float(metrics[m]) for m in METRICS]


def _interval(values: np.ndarray, confidence: float) -> list[float] | None:
    finite = values[~np.isnan(values)]
    if len(finite) == 0:
        return None
    tail = (1 - confidence) / 2
    low, high = np.quantile(finite, [tail, 1 - tail])
    return [float(low), float(high)]


def _order(name: str) -> tuple[bool, str]:
    return (name == MISSING, name)


def subgroup_audit(
    logits: torch.Tensor,
    labels: torch.Tensor,
    task: Task,
    class_names: tuple[str, ...],
    groups: list[str],
    rounds: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Per-group metrics with percentile bootstrap CIs and the largest-minus-smallest gap per metric.

    Groups with fewer than two samples get null metrics and stay out of the gaps. A resample
    whose classes differ from its group's gets no AUC (counted in ``auc_skipped``); a round in
    which any compared group has no AUC is left out of the AUC gap (counted in ``skipped``).
    """
    if len(groups) != len(labels):
        raise ConfigError(f"{len(groups)} group values for {len(labels)} samples")
    if rounds < 1:
        raise ConfigError(f"--bootstrap must be at least 1, got {rounds}")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    names = sorted(set(groups), key=_order)
    members = {g: np.flatnonzero(np.asarray(groups, dtype=object) == g) for g in names}
    notes: list[str] = []
    records: list[dict[str, Any]] = []
    # boot[group] has shape (rounds, metrics); rounds are drawn group after group with one generator,
    # so round r of every group together is one paired resample of the whole data
    boot: dict[str, np.ndarray] = {}
    for name in names:
        idx = members[name]
        record: dict[str, Any] = {"group": name, "n": len(idx)}
        if len(idx) < MIN_GROUP:
            record.update({m: None for m in METRICS} | {f"{m}_ci": None for m in METRICS})
            record["auc_skipped"] = None
            notes.append(
                f"group '{name}' has {len(idx)} sample(s): too few for metrics, left out of the gaps"
            )
            records.append(record)
            continue
        g_logits, g_labels = logits[idx], labels[idx]
        point = _stats(g_logits, g_labels, task, class_names)
        reference = _signature(g_labels.numpy(), task)
        draws = np.empty((rounds, len(METRICS)))
        for r in range(rounds):
            pick = torch.from_numpy(rng.integers(0, len(idx), len(idx)))
            draws[r] = _stats(g_logits[pick], g_labels[pick], task, class_names)
            if _signature(g_labels[pick].numpy(), task) != reference:
                draws[r, METRICS.index("auc")] = math.nan
        boot[name] = draws
        auc_column = draws[:, METRICS.index("auc")]
        skipped = int(np.isnan(auc_column).sum()) if not math.isnan(point[2]) else rounds
        for metric, value, column in zip(METRICS, point, draws.T, strict=True):
            finite = not math.isnan(value)
            record[metric] = value if finite else None
            record[f"{metric}_ci"] = _interval(column, confidence) if finite else None
        record["auc_skipped"] = skipped
        if math.isnan(point[2]):
            notes.append(f"group '{name}' holds a single class: no AUC, left out of the AUC gap")
        elif skipped:
            notes.append(
                f"group '{name}': {skipped} of {rounds} resamples lost a class and were skipped for AUC"
            )
        records.append(record)
    gaps = {metric: _gap(records, boot, metric, confidence) for metric in METRICS}
    return {
        "groups": records,
        "gaps": gaps,
        "rounds": rounds,
        "confidence": confidence,
        "seed": seed,
        "notes": notes,
    }


def _gap(
    records: list[dict[str, Any]], boot: dict[str, np.ndarray], metric: str, confidence: float
) -> dict[str, Any]:
    """Largest minus smallest group value, and its interval from the paired rounds."""
    valid = [r for r in records if r[metric] is not None and r["group"] in boot]
    if len(valid) < 2:
        return {"value": None, "ci": None, "largest_group": None, "smallest_group": None, "skipped": 0}
    largest = max(valid, key=lambda r: r[metric])
    smallest = min(valid, key=lambda r: r[metric])
    column = METRICS.index(metric)
    table = np.stack([boot[r["group"]][:, column] for r in valid], axis=1)  # rounds x groups
    complete = ~np.isnan(table).any(axis=1)
    spread = table[complete].max(axis=1) - table[complete].min(axis=1)
    return {
        "value": float(largest[metric] - smallest[metric]),
        "ci": _interval(spread, confidence),
        "largest_group": largest["group"],
        "smallest_group": smallest["group"],
        "skipped": int((~complete).sum()),
    }
