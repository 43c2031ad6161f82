"""The eval audit's added metrics against independent computations: scikit-learn for kappa, MAE,
sensitivity/specificity and AUC; the calibration binning and the bootstrap redone by hand."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from rich.console import Console
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    mean_absolute_error,
    recall_score,
    roc_auc_score,
)
from typer.testing import CliRunner

from medaudit.audits.evaluation import INTERVALS, EvalAudit
from medaudit.cli import app
from medaudit.errors import ConfigError
from medaudit.evaluate import EvalConfig, EvalResult
from medaudit.metrics import (
    BINARY_INTERVAL_METRICS,
    bootstrap_intervals,
    calibration,
    classification_metrics,
    ordinal_metrics,
    weighted_roc_auc,
)
from medaudit.report import figures
from medaudit.report.html import render_html
from medaudit.report.tables import eval_tables
from medaudit.task import Task
from tests.conftest import assert_one_line_error

ORDINAL_MODEL = str(Path(__file__).resolve().parents[1] / "sample_models" / "retinamnist_rescnn.onnx")


def noisy_logits(labels: np.ndarray, classes: int, seed: int, signal: float = 1.5) -> torch.Tensor:
    """Logits that favour the true class, with noise: a model that is right most of the time."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(labels), classes))
    logits[np.arange(len(labels)), labels] += signal
    return torch.from_numpy(logits.astype(np.float32))


def result_for(
    labels: np.ndarray, task: Task, classes: int, logit_seed: int = 0, **config: float
) -> EvalResult:
    """The eval result of ``noisy_logits`` (seeded by ``logit_seed``) under ``EvalConfig(**config)``."""
    names = tuple(f"c{i}" for i in range(classes))
    return EvalResult(
        logits=noisy_logits(labels, classes, logit_seed),
        labels=torch.from_numpy(labels),
        task=task,
        class_names=names,
        config=EvalConfig(**config),  # type: ignore[arg-type]
    )


# ---- ordinal ----


@pytest.mark.parametrize("seed", range(3))
def test_ordinal_kappa_and_mae_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.choice([0, 1, 2, 4], size=300)  # grade 3 absent: its weight still counts
    result = result_for(labels, Task.ORDINAL, 5, seed).to_dict()
    probs = torch.softmax(result_for(labels, Task.ORDINAL, 5, seed).logits, dim=1).numpy()
    pred = probs.argmax(axis=1)
    assert result["kappa"] == pytest.approx(
        cohen_kappa_score(labels, pred, weights="quadratic", labels=list(range(5))), abs=1e-12
    )
    assert result["mae"] == pytest.approx(mean_absolute_error(labels, pred), abs=1e-12)
    assert result["threshold"] is None and result["sensitivity"] is None


def test_ordinal_kappa_planted_answers() -> None:
    grades = np.array([0, 1, 2, 3, 4] * 20)
    assert ordinal_metrics(grades, grades, 5)["kappa"] == pytest.approx(1.0)
    assert ordinal_metrics(grades, grades, 5)["mae"] == 0.0
    reversed_ = 4 - grades
    assert ordinal_metrics(reversed_, grades, 5)["kappa"] == pytest.approx(-1.0)
    assert ordinal_metrics(reversed_, grades, 5)["mae"] == pytest.approx(np.abs(reversed_ - grades).mean())
    assert math.isnan(ordinal_metrics(np.zeros(10, int), np.zeros(10, int), 5)["kappa"])


def test_kappa_and_mae_are_null_for_other_tasks() -> None:
    labels = np.random.default_rng(0).integers(0, 4, 100)
    result = result_for(labels, Task.MULTI_CLASS, 4).to_dict()
    assert result["kappa"] is None and result["mae"] is None


# ---- calibration ----


def ece_by_hand(confidence: np.ndarray, correct: np.ndarray, bins: int) -> float:
    """ECE with bin b = (b/bins, (b+1)/bins], the first bin also holding 0, looped bin by bin."""
    total = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        inside = (confidence > low) & (confidence <= high)
        if b == 0:
            inside |= confidence == 0
        if inside.any():
            total += inside.sum() / len(confidence) * abs(correct[inside].mean() - confidence[inside].mean())
    return total


@pytest.mark.parametrize("bins", [15, 10, 4])
@pytest.mark.parametrize("seed", range(3))
def test_ece_matches_binning_by_hand(bins: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, 400)
    probs = torch.softmax(noisy_logits(labels, 3, seed), dim=1).numpy()
    got = calibration(probs, labels, Task.MULTI_CLASS, bins)
    confidence = probs.max(axis=1).astype(np.float64)
    correct = probs.argmax(axis=1) == labels
    assert got["ece"] == pytest.approx(ece_by_hand(confidence, correct, bins), abs=1e-12)
    table = got["reliability"]
    assert len(table["edges"]) == bins + 1 and sum(table["count"]) == 400
    assert f"{bins} equal-width bins" in table["binning"]


def test_ece_multilabel_pools_every_label_decision() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, (150, 4))
    probs = torch.sigmoid(torch.from_numpy(rng.normal(size=(150, 4)) + 2 * labels - 1)).numpy()
    got = calibration(probs, labels, Task.MULTI_LABEL)
    confidence = np.maximum(probs, 1 - probs).ravel().astype(np.float64)
    correct = ((probs > 0.5).astype(int) == labels).ravel()
    assert got["ece"] == pytest.approx(ece_by_hand(confidence, correct, 15), abs=1e-12)
    assert sum(got["reliability"]["count"]) == 600


def test_ece_planted_answers_and_bin_edges() -> None:
    # ten images at confidence 0.8 (class 0), eight of them right: calibrated, ECE 0
    probs = np.tile([0.8, 0.2], (10, 1))
    labels = np.array([0] * 8 + [1] * 2)
    assert calibration(probs, labels, Task.BINARY)["ece"] == pytest.approx(0.0, abs=1e-12)
    # confidence 0.9, 60% right: ECE 0.3
    probs = np.tile([0.1, 0.9], (10, 1))
    labels = np.array([1] * 6 + [0] * 4)
    assert calibration(probs, labels, Task.BINARY)["ece"] == pytest.approx(0.3)
    # a confidence on an edge (0.6 = 9/15) goes into the lower bin (0.5333, 0.6]
    table = calibration(np.array([[0.6, 0.4]]), np.array([0]), Task.BINARY)["reliability"]
    assert table["count"][8] == 1 and sum(table["count"]) == 1
    assert table["confidence"][8] == pytest.approx(0.6) and table["accuracy"][8] == 1.0
    assert table["confidence"][0] is None and table["accuracy"][0] is None  # empty bins are null


# ---- binary operating point ----


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.8])
def test_sensitivity_specificity_and_threshold_match_sklearn(threshold: float) -> None:
    labels = np.random.default_rng(1).integers(0, 2, 250)
    result = result_for(labels, Task.BINARY, 2, 1, threshold=threshold).to_dict()
    p1 = torch.softmax(noisy_logits(labels, 2, 1), dim=1)[:, 1].numpy()
    pred = (p1 > threshold).astype(int)
    assert result["threshold"] == threshold and result["positive_class"] == "c1"
    assert result["sensitivity"] == pytest.approx(recall_score(labels, pred, pos_label=1))
    assert result["specificity"] == pytest.approx(recall_score(labels, pred, pos_label=0))
    assert result["accuracy"] == pytest.approx(accuracy_score(labels, pred))
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, pred))
    assert result["confusion_matrix"] == confusion_matrix(labels, pred).tolist()
    assert result["auc"] == pytest.approx(roc_auc_score(labels, p1), abs=1e-9)  # AUC has no threshold


def test_a_higher_threshold_trades_sensitivity_for_specificity() -> None:
    labels = np.random.default_rng(2).integers(0, 2, 300)
    low = result_for(labels, Task.BINARY, 2, 2, threshold=0.2).to_dict()
    high = result_for(labels, Task.BINARY, 2, 2, threshold=0.8).to_dict()
    assert high["sensitivity"] < low["sensitivity"] and high["specificity"] > low["specificity"]


@pytest.mark.parametrize(
    ("config", "flag"),
    [
        ({"threshold": 0.0}, "--threshold"),
        ({"threshold": 1.0}, "--threshold"),
        ({"bootstrap": -1}, "--bootstrap"),
        ({"confidence": 1.0}, "--confidence"),
        ({"confidence": 0.0}, "--confidence"),
    ],
)
def test_wrong_settings_name_their_flag(config: dict[str, float], flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        EvalConfig(**config)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("flag", "value"), [("--confidence", "1.5"), ("--threshold", "0"), ("--bootstrap", "-1")]
)
def test_wrong_options_are_one_line_errors_before_loading(flag: str, value: str, runner: CliRunner) -> None:
    result = runner.invoke(app, ["eval", "no_such_model.pt", flag, value])
    assert_one_line_error(result, flag)


def test_threshold_on_a_task_that_is_not_binary_is_refused(real_env: Path, runner: CliRunner) -> None:
    result = runner.invoke(app, ["eval", ORDINAL_MODEL, "--limit", "16", "--threshold", "0.7"])
    assert_one_line_error(result, "--threshold applies to binary tasks only", "ordinal-regression")


# ---- bootstrap intervals ----


def bootstrap_by_hand(
    probs: np.ndarray, labels: np.ndarray, pred: np.ndarray, rounds: int, confidence: float, seed: int
) -> dict[str, list[float]]:
    """Resample the images themselves (one ``integers(0, n, n)`` per round, as documented) and
    score each resample with scikit-learn; a binary resample with one class has no AUC."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {"accuracy": [], "balanced_accuracy": [], "auc": []}
    for _ in range(rounds):
        idx = rng.integers(0, len(labels), len(labels))
        y, p, yhat = labels[idx], probs[idx], pred[idx]
        draws["accuracy"].append(accuracy_score(y, yhat))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a class predicted but absent from this resample
            draws["balanced_accuracy"].append(balanced_accuracy_score(y, yhat))
        if len(np.unique(y)) == 2:
            draws["auc"].append(roc_auc_score(y, p[:, 1]))
    tail = (1 - confidence) / 2
    return {m: list(np.quantile(v, [tail, 1 - tail])) for m, v in draws.items()}


@pytest.mark.parametrize(("n", "seed", "threshold"), [(40, 0, 0.5), (200, 1, 0.3), (12, 2, 0.5)])
def test_bootstrap_matches_resampling_with_sklearn(n: int, seed: int, threshold: float) -> None:
    labels = np.random.default_rng(seed).integers(0, 2, n)
    logits = noisy_logits(labels, 2, seed, signal=1.0)
    probs = torch.softmax(logits, dim=1).numpy()
    pred = (probs[:, 1] > threshold).astype(int)
    got = bootstrap_intervals(logits, torch.from_numpy(labels), Task.BINARY, threshold, 300, 0.9, seed)
    expected = bootstrap_by_hand(probs, labels, pred, 300, 0.9, seed)
    for metric, interval in expected.items():
        assert got[f"{metric}_ci"] == pytest.approx(interval, abs=1e-9), metric


@pytest.mark.parametrize("task", [Task.MULTI_CLASS, Task.ORDINAL, Task.MULTI_LABEL])
@pytest.mark.parametrize("seed", range(4))
def test_each_resample_is_scored_like_the_resampled_images(task: Task, seed: int) -> None:
    """One round: the interval's ends are that resample's value, which must be what
    ``classification_metrics`` (checked against scikit-learn in test_metrics.py) gives on the
    resampled images themselves."""
    n, k = 60, 4
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, (n, k)) if task is Task.MULTI_LABEL else rng.integers(0, k, n)
    logits = torch.from_numpy(rng.integers(-2, 3, (n, k)).astype(np.float32))  # ties
    got = bootstrap_intervals(logits, torch.from_numpy(labels), task, 0.5, 1, 0.95, seed)
    idx = np.random.default_rng(seed).integers(0, n, n)
    names = tuple(str(i) for i in range(k))
    expected = classification_metrics(logits[idx], torch.from_numpy(labels[idx]), task, names)
    for metric in ("accuracy", "balanced_accuracy"):
        assert got[f"{metric}_ci"] == pytest.approx([expected[metric]] * 2, abs=1e-12), metric
    if task is Task.MULTI_LABEL:
        both = [0 < labels[:, i].sum() < n for i in range(k)]
        lost = any(b and not 0 < labels[idx, i].sum() < n for i, b in enumerate(both))
    else:
        lost = set(labels[idx]) != set(labels)
    if lost:
        assert got["auc_ci"] is None and got["auc_skipped"] == 1
    else:
        assert got["auc_ci"] == pytest.approx([expected["auc"]] * 2, abs=1e-12)


def test_weighted_auc_matches_sklearn_sample_weight() -> None:
    rng = np.random.default_rng(5)
    positive = rng.integers(0, 2, 80).astype(bool)
    score = rng.integers(0, 7, 80).astype(float)  # ties
    weights = rng.integers(0, 4, (6, 80)).astype(float)
    got = weighted_roc_auc(positive, score, weights)
    for row, value in zip(weights, got, strict=True):
        assert value == pytest.approx(roc_auc_score(positive, score, sample_weight=row), abs=1e-12)


@pytest.mark.parametrize("task", [Task.BINARY, Task.MULTI_CLASS, Task.ORDINAL])
def test_intervals_are_seeded_contain_the_estimate_and_narrow_with_n(task: Task) -> None:
    classes = 2 if task is Task.BINARY else 4
    big = np.random.default_rng(7).integers(0, classes, 2000)
    small = big[:200]

    def run(labels: np.ndarray, seed: int) -> dict[str, Any]:
        return result_for(labels, task, classes, 7, seed=seed, bootstrap=400).to_dict()

    first, again, other = run(small, 3), run(small, 3), run(small, 4)
    assert first == again
    assert first["auc_ci"] != other["auc_ci"]
    wide = first
    narrow = result_for(big, task, classes, 7, seed=3, bootstrap=400).to_dict()
    metrics = ["accuracy", "balanced_accuracy", "auc"] + (
        ["sensitivity", "specificity"] if task is Task.BINARY else []
    )
    for metric in metrics:
        low, high = wide[f"{metric}_ci"]
        assert low <= wide[metric] <= high, metric
        n_low, n_high = narrow[f"{metric}_ci"]
        assert n_low <= narrow[metric] <= n_high, metric
        assert n_high - n_low < (high - low) / 2, metric  # about sqrt(10) narrower
    assert wide["bootstrap"] == {
        "rounds": 400, "confidence": 0.95, "seed": 3, "auc_skipped": 0,
        "method": "percentile; images resampled with replacement",
    }  # fmt: skip


def test_a_higher_confidence_gives_a_wider_interval_and_zero_rounds_none() -> None:
    labels = np.random.default_rng(8).integers(0, 3, 300)
    narrow = result_for(labels, Task.MULTI_CLASS, 3, confidence=0.5, bootstrap=300).to_dict()
    wide = result_for(labels, Task.MULTI_CLASS, 3, confidence=0.99, bootstrap=300).to_dict()
    assert (
        wide["accuracy_ci"][0] < narrow["accuracy_ci"][0] < narrow["accuracy_ci"][1] < wide["accuracy_ci"][1]
    )
    off = result_for(labels, Task.MULTI_CLASS, 3, bootstrap=0).to_dict()
    assert all(off[f"{m}_ci"] is None for m in ("accuracy", "balanced_accuracy", "auc", "sensitivity"))


@pytest.mark.parametrize(("task", "classes"), [(Task.BINARY, 2), (Task.MULTI_CLASS, 3)])
def test_resamples_that_lose_a_class_have_no_auc(task: Task, classes: int) -> None:
    labels = np.array([0] * 18 + [classes - 2] * 10 + [classes - 1] * 2)  # the last class twice
    got = result_for(labels, task, classes, bootstrap=500).to_dict()
    rng = np.random.default_rng(0)
    draws = [labels[rng.integers(0, 30, 30)] for _ in range(500)]
    skipped_by_hand = sum(len(set(d)) < classes for d in draws)
    assert got["bootstrap"]["auc_skipped"] == skipped_by_hand > 0


# ---- gate metrics, tables, HTML ----


def test_gate_metrics_read_every_new_number() -> None:
    labels = np.random.default_rng(9).integers(0, 2, 120)
    results = result_for(labels, Task.BINARY, 2, bootstrap=100).to_dict()
    audit = EvalAudit()
    metrics = audit.extract(results)
    assert set(metrics) == {f"eval.{key}" for key in audit.metrics}
    assert INTERVALS == BINARY_INTERVAL_METRICS  # the gate's list is the bootstrap's
    for metric in ("accuracy", "auc", "sensitivity", "specificity", "ece"):
        assert metrics[f"eval.{metric}"] == results[metric]
    for metric in ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity"):
        assert [metrics[f"eval.{metric}_ci_low"], metrics[f"eval.{metric}_ci_high"]] == results[
            f"{metric}_ci"
        ]
    assert math.isnan(metrics["eval.kappa"]) and math.isnan(metrics["eval.mae"])  # binary: null, fails a gate
    assert audit.metrics["ece"].higher_is_better is False and audit.metrics["mae"].unit_scale is False
    labels = {row.label for row in audit.summary(results)}
    assert {
        "sensitivity (c1) at threshold 0.5",
        "specificity (c0) at threshold 0.5",
        "ECE",
        "AUC 95% interval",
    } <= labels


def test_old_reports_without_the_new_keys_still_extract_and_render() -> None:
    old = {
        "task": "binary-class", "class_names": ["a", "b"], "n": 10, "accuracy": 0.5,
        "balanced_accuracy": 0.5, "auc": 0.5, "per_class_recall": {"a": 0.5, "b": 0.5},
        "confusion_matrix": [[2, 3], [2, 3]],
    }  # fmt: skip
    metrics = EvalAudit().extract(old)
    assert metrics["eval.accuracy"] == 0.5 and math.isnan(metrics["eval.auc_ci_low"])
    _render(old)
    assert "Clean metrics" in render_html({"command": "eval", "results": old})


def _render(results: dict[str, Any]) -> str:
    console = Console(width=120, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    for table in eval_tables(results, "Clean metrics"):
        console.print(table)
    return console.export_text()


def test_console_tables_show_intervals_operating_point_and_grades() -> None:
    labels = np.random.default_rng(10).integers(0, 2, 150)
    binary = result_for(labels, Task.BINARY, 2, threshold=0.7, bootstrap=50).to_dict()
    text = _render(binary)
    low, high = binary["auc_ci"]
    assert f"{low:.4f} – {high:.4f}" in text and "95% interval" in text
    assert "sensitivity (c1)" in text and "specificity (c0)" in text and "p(c1) > 0.7" in text
    assert f"{binary['ece']:.4f}" in text and "15 equal-width bins" in text
    ordinal = result_for(np.random.default_rng(11).integers(0, 5, 150), Task.ORDINAL, 5).to_dict()
    text = _render(ordinal)
    assert f"{ordinal['kappa']:.4f}" in text and f"{ordinal['mae']:.4f}" in text
    assert "sensitivity" not in text


def test_reliability_diagram_bars_are_the_bin_accuracies() -> None:
    labels = np.random.default_rng(12).integers(0, 3, 200)
    results = result_for(labels, Task.MULTI_CLASS, 3).to_dict()
    table = results["reliability"]
    fig = figures._reliability_figure(table, results["ece"], "title $x$")
    heights = [bar.get_height() for bar in fig.axes[0].patches]
    assert heights == pytest.approx([a or 0.0 for a in table["accuracy"]])
    assert [bar.get_height() for bar in fig.axes[1].patches] == table["count"]
    assert figures.reliability_diagram_png(table, results["ece"], "t").startswith(b"\x89PNG")


def test_html_page_shows_intervals_and_embeds_the_reliability_diagram() -> None:
    labels = np.random.default_rng(13).integers(0, 2, 100)
    results = result_for(labels, Task.BINARY, 2, bootstrap=50).to_dict()
    page = render_html({"command": "eval", "results": results, "data": {"path": "x.npz"}})
    section = page[page.index('id="eval"') :]
    low, high = results["accuracy_ci"]
    assert f"{low:.4f} – {high:.4f}" in section
    assert "sensitivity (c1)" in section and "expected calibration error" in section
    assert section.count("data:image/png;base64") == 1 and "reliability diagram" in section


# ---- docs/eval.md ----

DOC = Path(__file__).resolve().parents[1] / "docs" / "eval.md"
SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"


def _eval_json(runner: CliRunner, tmp_path: Path, *args: str) -> dict[str, Any]:
    target = tmp_path / "eval.json"
    result = runner.invoke(app, ["eval", *args, "--json", str(target)])
    assert result.exit_code == 0, result.output
    return json.loads(target.read_text())["results"]


def test_the_docs_worked_examples_are_real_output(real_env: Path, runner: CliRunner, tmp_path: Path) -> None:
    """Every table row in docs/eval.md is a row of the tables of a real run, and so is the
    sentence on --threshold 0.8."""
    pneumonia = _eval_json(runner, tmp_path, str(SAMPLES / "pneumoniamnist_rescnn.pt"))
    retina = _eval_json(runner, tmp_path, str(SAMPLES / "retinamnist_rescnn.pt"))
    shown = set(_render(pneumonia).splitlines()) | set(_render(retina).splitlines())
    doc = DOC.read_text()
    rows = [line for line in doc.splitlines() if line.startswith("│")]
    assert len(rows) == 16
    assert [row for row in rows if row not in shown] == []
    moved = _eval_json(runner, tmp_path, str(SAMPLES / "pneumoniamnist_rescnn.pt"), "--threshold", "0.8")
    sentence = (
        f"specificity rises to {moved['specificity']:.2f} and sensitivity falls to "
        f"{moved['sensitivity']:.3f} (accuracy {moved['accuracy']:.3f}); the AUC stays {moved['auc']:.4f}"
    )
    assert sentence in " ".join(doc.split())


def test_hostile_class_names_stay_plain_text_in_the_new_rows() -> None:
    """Class names come from the user's files: the sensitivity rows and the decision line show
    them literally (no rich markup, no HTML, no mathtext in the diagram's labels)."""
    labels = np.random.default_rng(14).integers(0, 2, 80)
    result = result_for(labels, Task.BINARY, 2, bootstrap=20)
    hostile = ("[bold]neg[/bold]", "<script>x</script> $\\frac$")
    results = {**result.to_dict(), "per_class_recall": dict(zip(hostile, (0.5, 0.5), strict=True))}
    results["positive_class"] = hostile[1]
    text = _render(results)
    assert f"sensitivity ({hostile[1]})" in text and f"specificity ({hostile[0]})" in text
    assert f"p({hostile[1]}) > 0.5" in " ".join(text.split())
    page = render_html({"command": "eval", "results": results, "data": {"path": hostile[1]}})
    assert "<script>x</script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
