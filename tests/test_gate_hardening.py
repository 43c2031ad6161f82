"""A gate never passes without evidence: metrics missing from a compared report, corrupt values,
rules a ``run`` cannot judge (refused before the model loads), copyable metric names, the run's
verdict line, and ``init`` that only writes .toml files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_one_line_error
from typer.testing import CliRunner

from medaudit import sources
from medaudit.cli import app
from medaudit.errors import PolicyError
from medaudit.gate import extract_metrics
from medaudit.gate.metrics import resolve

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_models" / "pneumoniamnist_rescnn.onnx"
EPS1, EPS2 = 1 / 255, 2 / 255


def report(**results: dict[str, Any]) -> dict[str, Any]:
    """A ``run`` report shaped like the real one (only what the gate reads)."""
    return {
        "schema": "medaudit/1",
        "command": "run",
        "config": {},
        "model": {"path": "m.pt"},
        "data": {"name": "pneumoniamnist", "split": "test", "size": 28, "n": 624},
        "seed": 0,
        "warnings": [],
        "results": results,
    }


def eval_results(auc: Any = 0.97) -> dict[str, Any]:
    return {"accuracy": 0.9, "balanced_accuracy": 0.88, "auc": auc}


def attack_results(robust: float = 0.6) -> dict[str, Any]:
    sweep = [
        {
            "norm": "linf",
            "eps": eps,
            "attack": "worst-case",
            "robust_accuracy": robust,
            "auc_under_attack": 0.8,
        }
        for eps in (EPS1, EPS2)
    ]
    return {"clean_accuracy": 0.9, "sweep": sweep, "checks": []}


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc))  # allow_nan: Infinity and NaN are written as Python's json reads them
    return path


def invoke(runner: CliRunner, *args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


# ---- 1: compare on a metric one report lacks ----


def test_compare_allow_on_a_metric_the_candidate_lacks_is_exit_2(runner: CliRunner, tmp_path: Path) -> None:
    base = write(tmp_path / "base.json", report(eval=eval_results(), attack=attack_results()))
    cand = write(tmp_path / "cand.json", report(eval=eval_results()))
    result = invoke(runner, "compare", base, cand, "--allow", "attack.robust_accuracy@1/255=0.05")
    assert_one_line_error(result, "attack.robust_accuracy@1/255", "candidate", "no attack results")
    result = invoke(runner, "compare", cand, base, "--allow", "attack.robust_accuracy@1/255=0.05")
    assert_one_line_error(result, "attack.robust_accuracy@1/255", "baseline")


def test_compare_gated_metric_missing_from_the_candidate_is_exit_2(runner: CliRunner, tmp_path: Path) -> None:
    base = write(tmp_path / "base.json", report(eval=eval_results(), attack=attack_results()))
    cand = write(tmp_path / "cand.json", report(eval=eval_results()))
    result = invoke(runner, "compare", base, cand)
    assert_one_line_error(result, "lacks", "attack.robust_accuracy@", "no attack results")
    # a metric only the candidate has is new evidence, shown but not gated
    assert invoke(runner, "compare", cand, base).exit_code == 0


# ---- 2: corrupt values ----


CORRUPT = [float("inf"), float("-inf"), float("nan"), "0.99", {}, True]


@pytest.mark.parametrize("value", CORRUPT, ids=repr)
def test_gate_refuses_a_corrupt_gated_value(runner: CliRunner, tmp_path: Path, value: Any) -> None:
    doc = write(tmp_path / "r.json", report(eval=eval_results(auc=value)))
    policy = tmp_path / "p.toml"
    policy.write_text('"eval.auc" = ">= 0.5"\n')
    result = invoke(runner, "gate", doc, "--policy", policy)
    assert_one_line_error(result, "corrupt", str(doc))


def test_gate_null_still_fails_its_rule_and_corruption_anywhere_is_refused(
    runner: CliRunner, tmp_path: Path
) -> None:
    policy = tmp_path / "p.toml"
    policy.write_text('"eval.accuracy" = ">= 0.5"\n')
    null = write(tmp_path / "null.json", report(eval={**eval_results(), "accuracy": None}))
    assert invoke(runner, "gate", null, "--policy", policy).exit_code == 1  # not measured: fails
    other = write(tmp_path / "other.json", report(eval=eval_results(auc="x")))
    assert_one_line_error(invoke(runner, "gate", other, "--policy", policy), '"x"', "corrupt")  # ungated


@pytest.mark.parametrize("value", CORRUPT, ids=repr)
def test_compare_refuses_a_corrupt_gated_value(runner: CliRunner, tmp_path: Path, value: Any) -> None:
    base = write(tmp_path / "base.json", report(eval=eval_results()))
    cand = write(tmp_path / "cand.json", report(eval=eval_results(auc=value)))
    assert_one_line_error(invoke(runner, "compare", base, cand), "corrupt", str(cand))
    assert_one_line_error(invoke(runner, "compare", cand, base), "corrupt", str(cand))


# ---- 4: names a user can copy ----


def test_available_metric_names_can_be_copied_into_a_rule() -> None:
    metrics = extract_metrics(report(attack=attack_results()))
    with pytest.raises(PolicyError) as info:
        resolve("attack.robust_accuracy@3/255", metrics)
    message = str(info.value)
    assert "{" not in message and "}" not in message
    listed = message.rpartition("available: ")[2].split(", ")
    copied = next(name for name in listed if name.startswith("attack.robust_accuracy@"))
    assert resolve(copied, metrics) == copied


# ---- 3 and 5: medaudit run ----


def audit_file(tmp_path: Path, sections: str, gate: str | None, data_root: Path = REPO) -> Path:
    path = tmp_path / "audit.toml"
    text = f'[model]\npath = "{SAMPLE}"\n[data]\ndata_root = "{data_root}"\nlimit = 40\n{sections}'
    path.write_text(text + (f"[gate]\n{gate}\n" if gate is not None else ""))
    return path


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Stands in for loading the model and data: records the call, then stops the run."""
    calls: list[str] = []

    def prepare(*args: Any, **kwargs: Any) -> Any:
        calls.append("prepare")
        raise KeyboardInterrupt

    monkeypatch.setattr(sources, "prepare", prepare)
    return calls


@pytest.mark.parametrize(
    ("sections", "rule", "needles"),
    [
        ("[eval]\n", '"attack.clean_accuracy" = ">= 0.5"', ("attack.clean_accuracy", "[attack]")),
        ('[attack]\neps = "1/255"\n', '"attack.robust_accuracy@2/255" = ">= 0.5"', ("@2/255", "eps")),
        ('[attack]\neps = "1/255"\n', '"attack.auc@l2:1/255" = ">= 0.5"', ("l2", "linf")),
    ],
)
def test_run_refuses_a_rule_it_cannot_judge_before_loading_the_model(
    runner: CliRunner, tmp_path: Path, loads: list[str], sections: str, rule: str, needles: tuple[str, ...]
) -> None:
    path = audit_file(tmp_path, sections, rule)
    assert_one_line_error(invoke(runner, "run", path), *needles)
    policy = tmp_path / "policy.toml"
    policy.write_text(rule + "\n")
    assert_one_line_error(invoke(runner, "run", audit_file(tmp_path, sections, None), "--policy", policy))
    assert loads == []


def test_run_loads_the_model_when_every_rule_can_be_judged(
    runner: CliRunner, tmp_path: Path, loads: list[str]
) -> None:
    rules = '"eval.auc" = ">= 0.5"\n"attack.robust_accuracy@0.00392157" = ">= 0.1"'
    invoke(runner, "run", audit_file(tmp_path, '[eval]\n[attack]\neps = "1/255"\n', rules))
    assert loads == ["prepare"]


def test_run_ends_with_the_verdict(runner: CliRunner, tmp_path: Path, real_data_root: Path) -> None:
    sections = "[eval]\nbootstrap = 0\n"
    failing = audit_file(tmp_path, sections, '"eval.accuracy" = ">= 0.99"', real_data_root)
    result = invoke(runner, "run", failing)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines()[-1].startswith("gate failed: 1 of 1 rules: eval.accuracy")
    passing = audit_file(tmp_path, sections, '"eval.accuracy" = ">= 0"', real_data_root)
    result = invoke(runner, "run", passing)
    assert result.exit_code == 0, result.output
    assert result.stderr.strip().splitlines()[-1] == "gate passed: 1 rule"
    result = invoke(runner, "run", audit_file(tmp_path, sections, None, real_data_root))
    assert result.exit_code == 0 and "gate " not in result.stderr


# ---- 6: init ----


def test_init_writes_only_toml_files(runner: CliRunner, tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    result = invoke(runner, "init", model, "--force")
    assert_one_line_error(result, "init writes a .toml audit file", str(model))
    assert model.read_bytes() == b"weights"


def test_init_creates_the_folder(runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(runner, "init", "sub/deeper/audit.toml")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sub" / "deeper" / "audit.toml").is_file()


def test_comparability_warnings_say_not_recorded_rather_than_none() -> None:
    from medaudit.gate.compare import comparability_warnings

    base = {
        "schema": "medaudit/1",
        "command": "eval",
        "results": {},
        "data": {"source": "npz", "size": 28, "n": 10},
        "seed": 0,
    }
    cand = {**base, "data": {"source": "folder", "n": 10}}
    warnings = comparability_warnings(base, cand)
    assert "the reports audited different image sizes (28 vs not recorded)" in warnings
    assert not any("None" in w for w in warnings)
