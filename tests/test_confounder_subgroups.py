"""Subgroup audit: metrics, intervals and gaps on hand-made predictions, the metadata join, and
``medaudit confounders --metadata`` on the sample model with user errors."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import jsonschema
import pytest
import torch
from typer.testing import CliRunner

from medaudit.cli import app
from medaudit.confounders.subgroups import read_metadata, subgroup_audit
from medaudit.errors import ConfigError
from medaudit.task import Task

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_models" / "pneumoniamnist_rescnn.onnx"
SPLIT_N = 624  # pneumoniamnist test split
NAMES = ("neg", "pos")
GROUP_KEYS = {
    "group", "n", "accuracy", "accuracy_ci", "balanced_accuracy", "balanced_accuracy_ci", "auc", "auc_ci",
}  # fmt: skip


def confounders(runner: CliRunner, *args: str | Path):
    return runner.invoke(app, ["confounders", *(str(a) for a in args)])


def assert_user_error(result, *needles: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    message = " ".join(result.stderr.split())
    assert message.startswith("error:"), message
    for needle in needles:
        assert needle in message, message


def logits_for(labels: list[int], correct: list[bool], confidence: list[float] | None = None) -> torch.Tensor:
    """Binary logits that predict each label (or its opposite), with a per-sample margin for AUC ranks."""
    margins = confidence or [2.0] * len(labels)
    rows = []
    for label, ok, margin in zip(labels, correct, margins, strict=True):
        predicted = label if ok else 1 - label
        rows.append([0.0, margin] if predicted == 1 else [margin, 0.0])
    return torch.tensor(rows)


def example() -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Group A: 8 samples all right; group B: 8 samples, the first 4 right (one of each class wrong twice)."""
    labels_a = [0, 1] * 4
    labels_b = [0, 1] * 4
    correct_b = [True] * 4 + [False] * 4
    logits = torch.cat([logits_for(labels_a, [True] * 8), logits_for(labels_b, correct_b)])
    labels = torch.tensor(labels_a + labels_b)
    return logits, labels, ["A"] * 8 + ["B"] * 8


def audit(groups: list[str] | None = None, **kwargs):
    logits, labels, default_groups = example()
    return subgroup_audit(logits, labels, Task.BINARY, NAMES, groups or default_groups, **kwargs)


def by_group(result) -> dict[str, dict]:
    return {row["group"]: row for row in result["groups"]}


# -- metrics and intervals -------------------------------------------------------------------------


def test_group_metrics_and_gap_on_a_hand_made_example() -> None:
    result = audit(rounds=200)
    a, b = by_group(result)["A"], by_group(result)["B"]
    assert (a["n"], b["n"]) == (8, 8)
    assert a["accuracy"] == 1.0 and b["accuracy"] == 0.5
    assert a["balanced_accuracy"] == 1.0 and b["balanced_accuracy"] == 0.5
    assert a["auc"] == 1.0 and b["auc"] == 0.5
    gap = result["gaps"]["accuracy"]
    assert gap["value"] == pytest.approx(0.5)
    assert (gap["largest_group"], gap["smallest_group"]) == ("A", "B")
    assert result["rounds"] == 200 and result["confidence"] == 0.95


def test_a_perfect_group_has_a_point_interval_and_the_other_a_wide_one() -> None:
    result = audit(rounds=300)
    a, b = by_group(result)["A"], by_group(result)["B"]
    assert a["accuracy_ci"] == [1.0, 1.0]
    assert a["balanced_accuracy_ci"] == [1.0, 1.0]
    low, high = b["accuracy_ci"]
    assert low < 0.5 < high and high - low > 0.3
    assert set(a) >= GROUP_KEYS


def test_gap_interval_contains_the_gap_and_follows_the_seed() -> None:
    first, again, other = audit(rounds=300, seed=1), audit(rounds=300, seed=1), audit(rounds=300, seed=2)
    for metric in ("accuracy", "balanced_accuracy", "auc"):
        low, high = first["gaps"][metric]["ci"]
        assert low <= first["gaps"][metric]["value"] <= high
    assert first["gaps"] == again["gaps"] and first["groups"] == again["groups"]
    assert first["gaps"] != other["gaps"]


def test_resamples_that_lose_a_class_are_skipped_for_auc() -> None:
    # four samples per group: a resample of four draws a single class often (2 * 0.5**4 = 1/8)
    logits = logits_for([0, 1, 0, 1, 0, 1, 0, 1], [True] * 8)
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    result = subgroup_audit(logits, labels, Task.BINARY, NAMES, ["A"] * 4 + ["B"] * 4, rounds=400)
    skipped = by_group(result)["A"]["auc_skipped"]
    assert 20 < skipped < 100
    assert result["gaps"]["auc"]["skipped"] >= skipped
    assert any("skipped for AUC" in note for note in result["notes"])
    assert by_group(result)["A"]["auc_ci"] == [1.0, 1.0]


def test_a_singleton_group_gets_null_metrics_and_stays_out_of_the_gaps() -> None:
    logits, labels, groups = example()
    groups[-1] = "C"
    result = subgroup_audit(logits, labels, Task.BINARY, NAMES, groups, rounds=50)
    c = by_group(result)["C"]
    assert c["n"] == 1 and c["accuracy"] is None and c["accuracy_ci"] is None and c["auc"] is None
    assert {result["gaps"]["accuracy"]["largest_group"], result["gaps"]["accuracy"]["smallest_group"]} == {
        "A",
        "B",
    }
    assert any("'C'" in note and "too few" in note for note in result["notes"])


# -- the metadata join -----------------------------------------------------------------------------


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_join_by_id_column_matches_row_order(tmp_path: Path) -> None:
    _, _, groups = example()
    rows = [[i, g, "x"] for i, g in enumerate(groups)]
    in_order = write_csv(tmp_path / "order.csv", ["site", "other"], [[g, "x"] for g in groups])
    shuffled_rows = rows[:]
    random.Random(0).shuffle(shuffled_rows)
    assert shuffled_rows != rows
    shuffled = write_csv(tmp_path / "shuffled.csv", ["id", "site", "other"], shuffled_rows)
    by_row = read_metadata(in_order, "site", len(groups))
    by_id = read_metadata(shuffled, "site", len(groups), id_column="id")
    assert by_row == by_id == groups
    assert audit(by_row, rounds=50) == audit(by_id, rounds=50)


def test_empty_values_form_the_missing_group(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "m.csv", ["sex"], [["F"], [""], ["M"], ["  "]])
    assert read_metadata(path, "sex", 4) == ["F", "missing", "M", "missing"]


@pytest.mark.parametrize(
    ("rows", "kwargs", "needle"),
    [
        ([["0", "F"], ["1", "M"]], {"attribute": "age"}, "available columns are id, sex"),
        ([["0", "F"]], {"attribute": "sex"}, "has 1 rows but the audited split has 2"),
        ([["0", "F"], ["two", "M"]], {"attribute": "sex", "id_column": "id"}, "'two'"),
        ([["0", "F"], ["2", "M"]], {"attribute": "sex", "id_column": "id"}, "outside 0..1"),
        ([["0", "F"], ["0", "M"]], {"attribute": "sex", "id_column": "id"}, "more than once"),
        ([["1", "F"]], {"attribute": "sex", "id_column": "id"}, "no row for 1 of 2"),
    ],
)
def test_bad_metadata_is_a_config_error(tmp_path: Path, rows, kwargs, needle: str) -> None:
    path = write_csv(tmp_path / "m.csv", ["id", "sex"], rows)
    with pytest.raises(ConfigError) as caught:
        read_metadata(path, n=2, **kwargs)
    assert needle in str(caught.value)


# -- the CLI ---------------------------------------------------------------------------------------


def parity_csv(path: Path, n: int = SPLIT_N) -> Path:
    return write_csv(path, ["index", "parity"], [[i, "even" if i % 2 == 0 else "odd"] for i in range(n)])


def test_cli_subgroups_on_the_sample_model(runner: CliRunner, real_env: Path, tmp_path: Path) -> None:
    out = tmp_path / "subgroups.json"
    meta = parity_csv(tmp_path / "meta.csv")
    result = confounders(
        runner, SAMPLE, "--metadata", meta, "--attribute", "parity", "--id-column", "index",
        "--bootstrap", "200", "--json", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "by parity" in result.stderr and "gap accuracy" in result.stderr
    doc = json.loads(out.read_text())
    schema = json.loads((REPO / "docs" / "schema" / "medaudit-1.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(doc)  # the documented report format
    assert doc["command"] == "confounders" and doc["config"]["mode"] == "subgroups"
    sub = doc["results"]["subgroups"]
    assert sub["attribute"] == "parity" and sub["rounds"] == 200 and sub["confidence"] == 0.95
    assert isinstance(sub["notes"], list)
    groups = {g["group"]: g for g in sub["groups"]}
    assert set(groups) == {"even", "odd"}
    assert groups["even"]["n"] + groups["odd"]["n"] == SPLIT_N
    for row in groups.values():
        assert set(row) >= GROUP_KEYS
        assert 0.5 < row["accuracy"] <= 1 and 0.5 < row["auc"] <= 1
        low, high = row["accuracy_ci"]
        assert low <= row["accuracy"] <= high
    for metric in ("accuracy", "balanced_accuracy", "auc"):
        gap = sub["gaps"][metric]
        assert {"value", "ci", "largest_group", "smallest_group"} <= set(gap)
        # max - min is biased upward under resampling, so only order and sign are checked here
        assert gap["value"] >= 0 and 0 <= gap["ci"][0] <= gap["ci"][1]
        assert gap["largest_group"] in groups and gap["smallest_group"] in groups


def test_cli_user_errors(runner: CliRunner, real_env: Path, tmp_path: Path) -> None:
    meta = parity_csv(tmp_path / "meta.csv")
    assert_user_error(confounders(runner, SAMPLE, "--metadata", meta), "Missing option '--attribute'")
    assert_user_error(confounders(runner, SAMPLE, "--attribute", "parity"), "Missing option '--metadata'")
    assert_user_error(
        confounders(runner, SAMPLE, "--metadata", tmp_path / "nope.csv", "--attribute", "x"), "does not exist"
    )
    assert_user_error(
        confounders(runner, SAMPLE, "--metadata", meta, "--attribute", "parity", "--limit", "32"),
        "--limit cannot be combined with --metadata",
    )
    assert_user_error(
        confounders(runner, SAMPLE, "--metadata", meta, "--attribute", "sex"),
        "--attribute 'sex'",
        "index, parity",
    )
    short = parity_csv(tmp_path / "short.csv", n=100)
    assert_user_error(
        confounders(runner, SAMPLE, "--metadata", short, "--attribute", "parity"),
        f"has 100 rows but the audited split has {SPLIT_N}",
    )
