"""medaudit.metrics against scikit-learn on random data with ties."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    multilabel_confusion_matrix,
    recall_score,
    roc_auc_score,
)

from medaudit.metrics import classification_metrics, probabilities, roc_auc
from medaudit.task import Task


def tied_logits(n: int, k: int, seed: int) -> torch.Tensor:
    """Logits from a handful of values, so many scores tie exactly.

    scikit-learn gets the same float32 probabilities medaudit ranks: recomputing them in
    float64 can split or merge near-ties and change the AUC in the 4th decimal.
    """
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(-2, 3, size=(n, k)).astype(np.float32))


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    scores = rng.integers(0, 6, 200).astype(np.float64)  # six values: heavy ties
    assert len(np.unique(scores)) < len(scores)
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_roc_auc_continuous_scores_and_extremes() -> None:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 300)
    scores = rng.normal(size=300) + labels
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert roc_auc(labels, labels.astype(float)) == pytest.approx(1.0)
    assert roc_auc(labels, -labels.astype(float)) == pytest.approx(0.0)
    assert roc_auc(labels, np.zeros(300)) == pytest.approx(0.5)


@pytest.mark.parametrize("present", [0, 1])
def test_roc_auc_is_nan_when_a_class_is_absent(present: int) -> None:
    labels = np.full(10, present)
    assert math.isnan(roc_auc(labels, np.linspace(0, 1, 10)))
    assert math.isnan(roc_auc(np.array([], dtype=bool), np.array([])))


@pytest.mark.parametrize("seed", range(3))
def test_binary_metrics_match_sklearn(seed: int) -> None:
    logits = tied_logits(150, 2, seed)
    labels = torch.from_numpy(np.random.default_rng(seed + 100).integers(0, 2, 150))
    result = classification_metrics(logits, labels, Task.BINARY, ("neg", "pos"))

    y = labels.numpy()
    prob_pos = torch.softmax(logits, dim=1)[:, 1].numpy()
    pred = (logits[:, 1] > logits[:, 0]).long().numpy()
    assert result["n"] == 150
    assert result["auc"] == pytest.approx(roc_auc_score(y, prob_pos), abs=1e-9)
    assert result["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert result["confusion_matrix"] == confusion_matrix(y, pred, labels=[0, 1]).tolist()
    recalls = recall_score(y, pred, average=None, labels=[0, 1])
    assert list(result["per_class_recall"]) == ["neg", "pos"]
    assert list(result["per_class_recall"].values()) == pytest.approx(list(recalls))


@pytest.mark.parametrize("task", [Task.MULTI_CLASS, Task.ORDINAL])
@pytest.mark.parametrize("seed", range(3))
def test_multiclass_metrics_match_sklearn(task: Task, seed: int) -> None:
    k = 4
    logits = tied_logits(200, k, seed)
    labels = torch.from_numpy(np.random.default_rng(seed + 100).integers(0, k, 200))
    names = tuple(f"class{i}" for i in range(k))
    result = classification_metrics(logits, labels, task, names)

    y = labels.numpy()
    probs = torch.softmax(logits, dim=1).numpy()
    pred = logits.argmax(dim=1).numpy()
    assert result["auc"] == pytest.approx(
        roc_auc_score(y, probs, multi_class="ovr", average="macro"), abs=1e-9
    )
    assert result["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert result["confusion_matrix"] == confusion_matrix(y, pred, labels=list(range(k))).tolist()
    assert list(result["per_class_recall"].values()) == pytest.approx(
        list(recall_score(y, pred, average=None, labels=list(range(k))))
    )


def test_multiclass_absent_class_gives_none_recall_and_skips_its_auc() -> None:
    k = 4
    rng = np.random.default_rng(3)
    logits = tied_logits(120, k, 3)
    y = rng.choice([0, 1, 3], size=120)  # class 2 never occurs
    result = classification_metrics(logits, torch.from_numpy(y), Task.MULTI_CLASS, ("a", "b", "c", "d"))

    probs = torch.softmax(logits, dim=1).numpy()
    pred = logits.argmax(dim=1).numpy()
    assert (pred == 2).any(), "the test needs predictions of the absent class"
    assert result["per_class_recall"]["c"] is None
    present = [0, 1, 3]
    expected_recall = recall_score(y, pred, average=None, labels=present)
    assert [result["per_class_recall"][n] for n in ("a", "b", "d")] == pytest.approx(list(expected_recall))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns that y_pred has a class missing from y_true
        expected_balanced = balanced_accuracy_score(y, pred)
    assert result["balanced_accuracy"] == pytest.approx(expected_balanced)
    expected_auc = np.mean([roc_auc_score(y == c, probs[:, c]) for c in present])
    assert result["auc"] == pytest.approx(expected_auc, abs=1e-9)
    assert result["confusion_matrix"] == confusion_matrix(y, pred, labels=list(range(k))).tolist()


def test_binary_auc_is_nan_when_only_one_class_present() -> None:
    logits = tied_logits(30, 2, 0)
    result = classification_metrics(logits, torch.ones(30, dtype=torch.long), Task.BINARY, ("n", "p"))
    assert math.isnan(result["auc"])
    assert result["per_class_recall"]["n"] is None
    pred = (logits[:, 1] > logits[:, 0]).long().numpy()
    assert result["balanced_accuracy"] == pytest.approx(float((pred == 1).mean()))


@pytest.mark.parametrize("seed", range(3))
def test_multilabel_metrics_match_sklearn(seed: int) -> None:
    n, k = 160, 5
    logits = tied_logits(n, k, seed)
    y = np.random.default_rng(seed + 100).integers(0, 2, (n, k))
    names = tuple(f"l{i}" for i in range(k))
    result = classification_metrics(logits, torch.from_numpy(y), Task.MULTI_LABEL, names)

    probs = torch.sigmoid(logits).numpy()
    pred = (logits > 0).long().numpy()
    assert result["auc"] == pytest.approx(roc_auc_score(y, probs, average="macro"), abs=1e-9)
    assert result["accuracy"] == pytest.approx(float((pred == y).mean()))
    expected_balanced = np.mean([balanced_accuracy_score(y[:, i], pred[:, i]) for i in range(k)])
    assert result["balanced_accuracy"] == pytest.approx(expected_balanced)
    assert result["confusion_matrix"] == multilabel_confusion_matrix(y, pred).tolist()
    assert list(result["per_class_recall"].values()) == pytest.approx(
        list(recall_score(y, pred, average=None))
    )


def test_multilabel_label_without_positives_is_nan_and_skipped() -> None:
    n, k = 100, 3
    logits = tied_logits(n, k, 4)
    y = np.random.default_rng(5).integers(0, 2, (n, k))
    y[:, 1] = 0  # label 1 never positive
    result = classification_metrics(logits, torch.from_numpy(y), Task.MULTI_LABEL, ("a", "b", "c"))

    probs = torch.sigmoid(logits).numpy()
    pred = (logits > 0).long().numpy()
    assert result["per_class_recall"]["b"] is None
    expected_auc = np.mean([roc_auc_score(y[:, i], probs[:, i]) for i in (0, 2)])
    assert result["auc"] == pytest.approx(expected_auc, abs=1e-9)
    expected_balanced = np.mean([balanced_accuracy_score(y[:, i], pred[:, i]) for i in (0, 2)])
    assert result["balanced_accuracy"] == pytest.approx(expected_balanced)


def test_probabilities_softmax_and_sigmoid() -> None:
    logits = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    single = probabilities(logits, Task.MULTI_CLASS)
    assert torch.allclose(single.sum(dim=1), torch.ones(8))
    assert torch.allclose(single, torch.softmax(logits, dim=1))
    assert torch.allclose(probabilities(logits, Task.MULTI_LABEL), torch.sigmoid(logits))
