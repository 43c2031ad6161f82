"""Clean classification metrics with the MedMNIST Evaluator's conventions, and what users of
peer tools expect beside them (calibration, ordinal agreement, bootstrap intervals).

Binary: AUC on the positive class's probability, accuracy of p(positive) > threshold (0.5 as
the Evaluator); the positive class is the last one unless ``positive`` names the other. Multi-class and ordinal: unweighted one-vs-rest AUC, accuracy of the argmax.
Multi-label: per-label AUC and per-label accuracy at 0.5, averaged (not exact match).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from medaudit.task import Task

if TYPE_CHECKING:  # imported where used: eval's option checks run before torch is loaded
    import torch

CALIBRATION_BINS = 15
"""Guo et al. (2017)'s 15 equal-width confidence bins, the usual choice for ECE."""
INTERVAL_METRICS = ("accuracy", "balanced_accuracy", "auc")
"""The metrics ``bootstrap_intervals`` gives an interval for; for binary tasks also these:"""
BINARY_INTERVAL_METRICS = (*INTERVAL_METRICS, "sensitivity", "specificity")
BOOTSTRAP_ROUNDS = 1000
"""Resamples of the intervals where the user sets none (``eval --bootstrap``'s default; the clean
rows of ``attack`` and ``shift``)."""
BOOTSTRAP_CONFIDENCE = 0.95
BOOTSTRAP_METHOD = "percentile; images resampled with replacement"
_BOOTSTRAP_BLOCK = 1 << 21
"""Resample weights held at once (resamples x images, float64): 16 MiB."""


def weighted_roc_auc(positive: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC for each row of ``weights`` (resamples x images: how often each image counts).

    The Mann-Whitney statistic with tied scores counting one half: the scores are sorted once and
    each row's weights summed per run of equal scores, so a bootstrap needs no sort per resample
    (integer weights make every sum exact, whatever the order).
    NaN for a row whose weighted positives or negatives are zero (and for no images).
    """
    if len(score) == 0:
        return np.full(len(weights), np.nan)
    positive = positive.astype(bool)
    order = np.argsort(score, kind="mergesort")
    sorted_scores = score[order]
    ends = np.append(np.flatnonzero(np.diff(sorted_scores)), len(score) - 1)  # last of each tie run
    w = np.asarray(weights, dtype=np.float64).T[order]  # images x resamples: sums run down columns
    is_pos = positive[order][:, None]
    pos_upto = np.cumsum(np.where(is_pos, w, 0.0), axis=0)[ends]  # weight up to each run's end
    neg_upto = np.cumsum(np.where(is_pos, 0.0, w), axis=0)[ends]
    pos = np.diff(pos_upto, axis=0, prepend=0.0)  # weight within each run
    neg = np.diff(neg_upto, axis=0, prepend=0.0)
    wins = (pos * (neg_upto - 0.5 * neg)).sum(axis=0)  # negatives below, ties count one half
    pairs = pos_upto[-1] * neg_upto[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / pairs, np.nan)


def roc_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied ranks); nan if one class is absent."""
    return float(weighted_roc_auc(positive, score, np.ones((1, len(score))))[0])


def probabilities(logits: torch.Tensor, task: Task) -> torch.Tensor:
    """Softmax for single-label tasks, sigmoid per label for multi-label."""
    import torch

    logits = logits.float()
    return torch.sigmoid(logits) if task is Task.MULTI_LABEL else torch.softmax(logits, dim=1)


def positive_of(probs: Any, positive: int | None) -> int:
    """The binary positive class's index: ``positive``, else the last class."""
    return probs.shape[1] - 1 if positive is None else positive


def predictions(
    probs: torch.Tensor, task: Task, threshold: float = 0.5, positive: int | None = None
) -> torch.Tensor:
    """Evaluator's decision rule: p(positive class) > threshold for binary (the positive class is
    the last unless ``positive`` says otherwise), argmax for multi-class."""
    if task is Task.MULTI_LABEL:
        return (probs > 0.5).long()
    if task is Task.BINARY and probs.shape[1] == 2:
        import torch

        pos = positive_of(probs, positive)
        return torch.where(probs[:, pos] > threshold, pos, 1 - pos).long()
    return probs.argmax(dim=1)


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def auc(probs: np.ndarray, labels: np.ndarray, task: Task, positive: int | None = None) -> float:
    if task is Task.BINARY:
        pos = positive_of(probs, positive)
        return roc_auc(labels == pos, probs[:, pos])
    if task is Task.MULTI_LABEL:
        return _nanmean([roc_auc(labels[:, i] == 1, probs[:, i]) for i in range(labels.shape[1])])
    return _nanmean([roc_auc(labels == i, probs[:, i]) for i in range(probs.shape[1])])


def classification_metrics(
    logits: torch.Tensor,
    labels: torch.Tensor,
    task: Task,
    class_names: tuple[str, ...],
    threshold: float = 0.5,
    positive: int | None = None,
) -> dict[str, Any]:
    """accuracy, balanced_accuracy, auc, per_class_recall, confusion_matrix, n.

    Balanced accuracy is the mean recall over the classes present in the labels
    (scikit-learn's convention). Recall of an absent class is None. ``threshold`` is the
    binary decision threshold on the positive class's probability (AUC does not depend on it);
    ``positive`` its index (None: the last class).
    """
    probs = probabilities(logits, task)
    pred = predictions(probs, task, threshold, positive).cpu().numpy()
    y = labels.cpu().numpy()
    p = probs.cpu().numpy()
    n = len(y)
    confusion: list[list[list[int]]] | list[list[int]]  # one 2x2 per label, or classes x classes
    if task is Task.MULTI_LABEL:
        recalls = [
            float((pred[y[:, i] == 1, i] == 1).mean()) if (y[:, i] == 1).any() else None
            for i in range(y.shape[1])
        ]
        specificities = [
            float((pred[y[:, i] == 0, i] == 0).mean()) if (y[:, i] == 0).any() else None
            for i in range(y.shape[1])
        ]
        balanced = [
            (r + s) / 2
            for r, s in zip(recalls, specificities, strict=True)
            if r is not None and s is not None
        ]
        confusion = [
            [[int(((y[:, i] == a) & (pred[:, i] == b)).sum()) for b in (0, 1)] for a in (0, 1)]
            for i in range(y.shape[1])
        ]
        accuracy = float((pred == y).mean())
        balanced_accuracy = float(np.mean(balanced)) if balanced else math.nan
    else:
        num_classes = p.shape[1]
        matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        np.add.at(matrix, (y, pred), 1)
        support = matrix.sum(axis=1)
        recalls = [float(matrix[i, i] / support[i]) if support[i] else None for i in range(num_classes)]
        present = [r for r in recalls if r is not None]
        accuracy = float(np.trace(matrix) / n)
        balanced_accuracy = float(np.mean(present))
        confusion = matrix.tolist()
    return {
        "n": n,
        "accuracy": accuracy,
        "balanced_accuracy": balanced_accuracy,
        "auc": auc(p, y, task, positive),
        "per_class_recall": dict(zip(class_names, recalls, strict=True)),
        "confusion_matrix": confusion,
    }


def calibration(
    probs: np.ndarray, labels: np.ndarray, task: Task, bins: int = CALIBRATION_BINS
) -> dict[str, Any]:
    """Expected calibration error and the reliability table it is computed from.

    Single-label tasks: the top-class confidence (largest probability) and whether the argmax is
    right, per image. Multi-label: every (image, label) decision pooled, confidence max(p, 1 - p),
    right when (p > 0.5) is the label. Confidences fall in ``bins`` equal-width bins of [0, 1],
    bin b holding edges[b] < confidence <= edges[b + 1] (the first bin also holds 0);
    ECE = sum over bins of (share of decisions) x |accuracy - mean confidence|. Empty bins are
    null in the table and add nothing. Calibration is of the probabilities, so it does not
    depend on the binary decision threshold.
    """
    if task is Task.MULTI_LABEL:
        confidence = np.maximum(probs, 1 - probs).ravel()
        correct = ((probs > 0.5) == (labels == 1)).ravel()
    else:
        confidence = probs.max(axis=1)
        correct = probs.argmax(axis=1) == labels
    confidence = confidence.astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=confidence, minlength=bins)
    right = np.bincount(which, weights=correct.astype(np.float64), minlength=bins)
    filled = count > 0
    mean_conf = np.divide(conf_sum, count, out=np.zeros(bins), where=filled)
    accuracy = np.divide(right, count, out=np.zeros(bins), where=filled)
    ece = float((count * np.abs(accuracy - mean_conf)).sum() / count.sum()) if count.sum() else math.nan
    return {
        "ece": ece,
        "reliability": {
            "binning": f"{bins} equal-width bins (lower, upper] of "
            + ("per-label confidence max(p, 1-p)" if task is Task.MULTI_LABEL else "top-class confidence"),
            "edges": edges.tolist(),
            "count": count.tolist(),
            "confidence": [float(c) if f else None for c, f in zip(mean_conf, filled, strict=True)],
            "accuracy": [float(a) if f else None for a, f in zip(accuracy, filled, strict=True)],
        },
    }


def ordinal_metrics(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """Quadratic-weighted Cohen's kappa and mean absolute error in grades, for graded labels.

    Kappa weighs a disagreement of i against j grades by (i - j)^2 over all ``num_classes``
    grades (also those absent from this data); NaN when chance agreement is complete (a single
    grade in labels and predictions).
    """
    matrix = np.zeros((num_classes, num_classes), dtype=np.float64)
    np.add.at(matrix, (labels, pred), 1)
    grades = np.arange(num_classes, dtype=np.float64)
    weights = (grades[:, None] - grades[None, :]) ** 2
    expected = np.outer(matrix.sum(axis=1), matrix.sum(axis=0)) / matrix.sum()
    chance = float((weights * expected).sum())
    kappa = 1.0 - float((weights * matrix).sum()) / chance if chance > 0 else math.nan
    return {"kappa": kappa, "mae": float(np.abs(pred - labels).mean())}


def _row_nanmean(values: np.ndarray) -> np.ndarray:
    """Mean over the columns of each row that are not NaN; NaN for a row with none."""
    finite = ~np.isnan(values)
    total = np.where(finite, values, 0.0).sum(axis=1)
    count = finite.sum(axis=1)
    return np.divide(total, count, out=np.full(len(values), np.nan), where=count > 0)


def _weighted_metrics(
    probs: np.ndarray,
    labels: np.ndarray,
    pred: np.ndarray,
    task: Task,
    weights: np.ndarray,
    positive: int | None = None,
) -> dict[str, np.ndarray]:
    """accuracy, balanced accuracy and AUC of each resample (a row of image counts in ``weights``),
    and for binary tasks sensitivity and specificity, with ``classification_metrics``'
    conventions (the recall of a class a resample lacks is NaN); a resample that lacks a class the data has
    (multi-label: a label value) gets AUC NaN, as its AUC averages fewer classes."""
    n = len(labels)
    if task is Task.MULTI_LABEL:
        columns = []
        for i in range(labels.shape[1]):
            columns.append(_binary_weighted(labels[:, i] == 1, pred[:, i] == 1, probs[:, i], weights))
        accuracy = np.mean([c[0] for c in columns], axis=0)
        balanced = _row_nanmean(np.stack([c[1] for c in columns], axis=1))
        aucs = np.stack([c[2] for c in columns], axis=1)
        data_has = np.array([0 < labels[:, i].sum() < n for i in range(labels.shape[1])])
        return {
            "accuracy": accuracy,
            "balanced_accuracy": balanced,
            "auc": _auc_where_complete(aucs, data_has),
        }
    classes = probs.shape[1]
    onehot = labels[:, None] == np.arange(classes)[None, :]
    correct = (pred == labels).astype(np.float64)
    support = weights @ onehot.astype(np.float64)
    hits = weights @ (onehot * correct[:, None])
    recall = np.divide(hits, support, out=np.full(support.shape, np.nan), where=support > 0)
    pos = positive_of(probs, positive)
    if task is Task.BINARY:
        aucs = weighted_roc_auc(labels == pos, probs[:, pos], weights)[:, None]
    else:
        aucs = np.stack(
            [weighted_roc_auc(onehot[:, c], probs[:, c], weights) for c in range(classes)], axis=1
        )
    data_has = onehot.any(axis=0)
    lost = ((support == 0) & data_has).any(axis=1)
    out = {
        "accuracy": weights @ correct / n,
        "balanced_accuracy": _row_nanmean(recall),
        "auc": np.where(lost, np.nan, _row_nanmean(aucs)),
    }
    if task is Task.BINARY:
        out.update(sensitivity=recall[:, pos], specificity=recall[:, 1 - pos])
    return out


def _binary_weighted(
    positive: np.ndarray, predicted: np.ndarray, score: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One label's (accuracy, balanced accuracy, AUC) per resample."""
    n = len(positive)
    correct = (positive == predicted).astype(np.float64)
    pos_w, neg_w = weights @ positive.astype(np.float64), weights @ (~positive).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = np.where(pos_w > 0, weights @ (correct * positive) / pos_w, np.nan)
        specificity = np.where(neg_w > 0, weights @ (correct * ~positive) / neg_w, np.nan)
    return weights @ correct / n, (sensitivity + specificity) / 2, weighted_roc_auc(positive, score, weights)


def _auc_where_complete(aucs: np.ndarray, data_has: np.ndarray) -> np.ndarray:
    """Mean AUC per resample over the labels the data has both values of; NaN where one is lost."""
    kept = aucs[:, data_has]
    lost = np.isnan(kept).any(axis=1)
    return np.where(lost, np.nan, _row_nanmean(kept)) if kept.shape[1] else np.full(len(aucs), np.nan)


def bootstrap_weights(n: int, resamples: int, seed: int) -> list[np.ndarray]:
    """Blocks of resample weights: each row counts how often each of ``n`` images was drawn when
    ``n`` images are drawn with replacement (``rng.integers(0, n, n)``, one call per resample,
    from ``numpy.random.default_rng(seed)``)."""
    rng = np.random.default_rng(seed)
    rows = max(1, _BOOTSTRAP_BLOCK // max(n, 1))
    blocks = []
    for start in range(0, resamples, rows):
        block = [np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(min(rows, resamples - start))]
        blocks.append(np.stack(block).astype(np.float64))
    return blocks


def clean_row_intervals(logits: torch.Tensor, labels: torch.Tensor, task: Task, seed: int) -> dict[str, Any]:
    """``bootstrap_intervals`` as ``eval`` computes them by default (threshold 0.5, its resamples
    and level): what every other audit's clean row carries, equal to eval's for the same seed."""
    return bootstrap_intervals(logits, labels, task, 0.5, BOOTSTRAP_ROUNDS, BOOTSTRAP_CONFIDENCE, seed)


def bootstrap_intervals(
    logits: torch.Tensor,
    labels: torch.Tensor,
    task: Task,
    threshold: float,
    resamples: int,
    confidence: float,
    seed: int,
    positive: int | None = None,
) -> dict[str, Any]:
    """Percentile bootstrap intervals over images for accuracy, balanced accuracy and AUC (and
    for binary tasks sensitivity and specificity at ``threshold``, ``positive`` the positive
    class's index, None: the last).

    ``resamples`` resamples of the images drawn with replacement (``bootstrap_weights``); each
    interval is the (1 - confidence)/2 and (1 + confidence)/2 quantiles (numpy's linear
    interpolation) of the resampled values that are defined. Returns ``<metric>_ci`` as
    [low, high] (None when no resample defines it) and ``auc_skipped``, the resamples that lost a
    class and so have no AUC.
    """
    probs = probabilities(logits, task)
    pred = predictions(probs, task, threshold, positive).cpu().numpy()
    p, y = probs.cpu().numpy(), labels.cpu().numpy()
    draws: dict[str, list[np.ndarray]] = {
        m: [] for m in (BINARY_INTERVAL_METRICS if task is Task.BINARY else INTERVAL_METRICS)
    }
    for weights in bootstrap_weights(len(y), resamples, seed):
        for metric, values in _weighted_metrics(p, y, pred, task, weights, positive).items():
            draws[metric].append(values)
    out: dict[str, Any] = {}
    for metric, blocks in draws.items():
        values = np.concatenate(blocks) if blocks else np.empty(0)
        out[f"{metric}_ci"] = percentile_interval(values, confidence)
        if metric == "auc":
            out["auc_skipped"] = int(np.isnan(values).sum())
    return out


def percentile_interval(values: np.ndarray, confidence: float) -> list[float] | None:
    """The (1 - confidence)/2 and (1 + confidence)/2 quantiles (numpy's linear interpolation) of
    the resampled ``values`` that are defined (not NaN); None when none is."""
    finite = values[~np.isnan(values)]
    if not len(finite):
        return None
    tail = (1 - confidence) / 2
    return [float(q) for q in np.quantile(finite, [tail, 1 - tail])]


def bootstrap_mean_intervals(
    outcomes: np.ndarray,
    resamples: int = BOOTSTRAP_ROUNDS,
    confidence: float = BOOTSTRAP_CONFIDENCE,
    seed: int = 0,
) -> list[list[float] | None]:
    """Percentile bootstrap intervals of the mean of each column of ``outcomes`` (images x
    columns, e.g. per-image 0/1 correctness: clean, and robust at each eps), resampled exactly as
    ``bootstrap_intervals`` does (same weights for the same n, resamples and seed), so a column
    of clean correctness gets eval's accuracy interval. None per column without resamples or
    images."""
    columns = np.asarray(outcomes, dtype=np.float64).reshape(len(outcomes), -1)
    n, k = columns.shape
    if n == 0 or resamples == 0:
        return [None] * k
    means = np.concatenate([weights @ columns / n for weights in bootstrap_weights(n, resamples, seed)])
    return [percentile_interval(means[:, j], confidence) for j in range(k)]
