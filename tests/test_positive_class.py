"""``eval --positive-class NAME|INDEX``: which binary class is positive drives the AUC's
orientation, sensitivity, specificity and the threshold; checked against scikit-learn."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from sklearn.metrics import accuracy_score, confusion_matrix, recall_score, roc_auc_score
from typer.testing import CliRunner

from medaudit.audits import audits
from medaudit.audits.evaluation import EvalOptions
from medaudit.cli import app
from medaudit.errors import ConfigError
from medaudit.evaluate import EvalConfig, EvalResult, positive_index
from medaudit.report.tables import eval_tables
from medaudit.task import Task
from tests.conftest import assert_one_line_error

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"
BINARY_MODEL = str(SAMPLES / "pneumoniamnist_rescnn.onnx")
ORDINAL_MODEL = str(SAMPLES / "retinamnist_rescnn.onnx")
NAMES = ("benign", "malignant")


def tiny_binary(threshold: float = 0.5, positive: str | None = None, n: int = 120) -> EvalResult:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, n)
    logits = rng.normal(size=(n, 2))
    logits[np.arange(n), labels] += 1.0
    return EvalResult(
        logits=torch.from_numpy(logits.astype(np.float32)),
        labels=torch.from_numpy(labels),
        task=Task.BINARY,
        class_names=NAMES,
        config=EvalConfig(threshold=threshold, bootstrap=200, positive_class=positive),
    )


@pytest.mark.parametrize("positive", ["benign", "0", "BENIGN"])
@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.8])
def test_first_class_positive_matches_sklearn(positive: str, threshold: float) -> None:
    result = tiny_binary(threshold, positive)
    out = result.to_dict()
    p0 = torch.softmax(result.logits, dim=1)[:, 0].numpy()
    y = result.labels.numpy()
    pred = np.where(p0 > threshold, 0, 1)  # the threshold is on the positive class's probability
    assert out["positive_class"] == "benign"
    assert out["auc"] == pytest.approx(roc_auc_score(y == 0, p0), abs=1e-9)  # class 0 as the positive
    assert out["sensitivity"] == pytest.approx(recall_score(y, pred, pos_label=0))
    assert out["specificity"] == pytest.approx(recall_score(y, pred, pos_label=1))
    assert out["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert out["confusion_matrix"] == confusion_matrix(y, pred).tolist()
    for metric in ("sensitivity", "specificity", "auc"):
        low, high = out[f"{metric}_ci"]
        assert low <= out[metric] <= high


def test_the_default_and_the_last_class_by_name_agree() -> None:
    default, named, index = (tiny_binary(0.3, p).to_dict() for p in (None, "malignant", "1"))
    assert default == named == index
    assert default["positive_class"] == "malignant"


def test_swapping_the_positive_class_swaps_sensitivity_and_specificity_at_one_half() -> None:
    last, first = tiny_binary(0.5).to_dict(), tiny_binary(0.5, "benign").to_dict()
    assert first["sensitivity"] == pytest.approx(last["specificity"])
    assert first["specificity"] == pytest.approx(last["sensitivity"])
    assert first["auc"] == pytest.approx(last["auc"])  # the same ranking, seen from the other side
    assert first["sensitivity_ci"] == pytest.approx(last["specificity_ci"])


def test_console_table_names_the_chosen_positive_class() -> None:
    console = Console(record=True, width=200)
    for shown in eval_tables(tiny_binary(0.5, "benign").to_dict(), "t"):
        console.print(shown)
    text = console.export_text()
    assert "sensitivity (benign)" in text and "specificity (malignant)" in text
    assert "p(benign) > 0.5" in text


@pytest.mark.parametrize("value", ["cancer", "2", "-1"])
def test_unknown_class_is_a_config_error_naming_the_option_and_classes(value: str) -> None:
    with pytest.raises(ConfigError, match=r"--positive-class .*0 \(benign\), 1 \(malignant\)"):
        positive_index(value, Task.BINARY, NAMES)


def test_a_task_that_is_not_binary_is_refused() -> None:
    with pytest.raises(ConfigError, match="--positive-class applies to binary tasks only"):
        positive_index("0", Task.MULTI_CLASS, ("a", "b", "c"))


def test_it_is_an_audit_file_setting() -> None:
    assert EvalOptions().positive_class is None
    assert audits.get("eval").Options is EvalOptions


def test_cli_records_it_in_the_config_and_drives_the_metrics(
    real_env: Path, runner: CliRunner, tmp_path: Path
) -> None:
    docs = {}
    for name, extra in (("last", []), ("first", ["--positive-class", "normal"])):
        target = tmp_path / f"{name}.json"
        args = ["eval", BINARY_MODEL, "--limit", "96", "--bootstrap", "50", *extra, "--json", str(target)]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        docs[name] = json.loads(target.read_text())
    assert docs["first"]["config"]["positive_class"] == "normal"
    assert docs["last"]["config"]["positive_class"] is None
    first, last = docs["first"]["results"], docs["last"]["results"]
    assert (first["positive_class"], last["positive_class"]) == ("normal", "pneumonia")
    assert first["sensitivity"] == pytest.approx(last["specificity"])
    assert first["auc"] == pytest.approx(last["auc"], abs=1e-6)


def test_cli_unknown_class_is_one_line(real_env: Path, runner: CliRunner) -> None:
    result = runner.invoke(app, ["eval", BINARY_MODEL, "--limit", "16", "--positive-class", "tumour"])
    assert_one_line_error(result, "--positive-class 'tumour'", "0 (normal)", "1 (pneumonia)")


def test_cli_refuses_it_for_an_ordinal_task(real_env: Path, runner: CliRunner) -> None:
    result = runner.invoke(app, ["eval", ORDINAL_MODEL, "--limit", "16", "--positive-class", "0"])
    assert_one_line_error(result, "--positive-class applies to binary tasks only", "ordinal-regression")
