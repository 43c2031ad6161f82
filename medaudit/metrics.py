"""Clean classification metrics with the MedMNIST Evaluator's conventions.

Binary: AUC and accuracy on the last column's probability (> 0.5). Multi-class
and ordinal: unweighted one-vs-rest AUC, accuracy of the argmax. Multi-label:
per-label AUC and per-label accuracy at 0.5, averaged (not exact match).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from medaudit.task import Task


def roc_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied ranks); nan if one class is absent."""
    positive = positive.astype(bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(score, kind="mergesort")
    sorted_scores = score[order]
    ranks = np.empty(len(score), dtype=np.float64)
    # average rank within each run of tied scores
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(score)]])
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def probabilities(logits: torch.Tensor, task: Task) -> torch.Tensor:
    """Softmax for single-label tasks, sigmoid per label for multi-label."""
    logits = logits.float()
    return torch.sigmoid(logits) if task is Task.MULTI_LABEL else torch.softmax(logits, dim=1)


def predictions(probs: torch.Tensor, task: Task) -> torch.Tensor:
    """Evaluator's decision rule: p(last class) > 0.5 for binary, argmax for multi-class."""
    if task is Task.MULTI_LABEL:
        return (probs > 0.5).long()
    if task is Task.BINARY and probs.shape[1] == 2:
        return (probs[:, -1] > 0.5).long()
    return probs.argmax(dim=1)


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def auc(probs: np.ndarray, labels: np.ndarray, task: Task) -> float:
    if task is Task.BINARY:
        return roc_auc(labels == probs.shape[1] - 1, probs[:, -1])
    if task is Task.MULTI_LABEL:
        return _nanmean([roc_auc(labels[:, i] == 1, probs[:, i]) for i in range(labels.shape[1])])
    return _nanmean([roc_auc(labels == i, probs[:, i]) for i in range(probs.shape[1])])


def classification_metrics(
    logits: torch.Tensor, labels: torch.Tensor, task: Task, class_names: tuple[str, ...]
) -> dict[str, Any]:
    """accuracy, balanced_accuracy, auc, per_class_recall, confusion_matrix, n.

    Balanced accuracy is the mean recall over the classes present in the labels
    (scikit-learn's convention). Recall of an absent class is None.
    """
    probs = probabilities(logits, task)
    pred = predictions(probs, task).cpu().numpy()
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
        "auc": auc(p, y, task),
        "per_class_recall": dict(zip(class_names, recalls, strict=True)),
        "confusion_matrix": confusion,
    }
