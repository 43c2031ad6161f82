"""Release gates: metric extraction, policies, baseline comparison, CI outputs and the two commands.

Reports are built as dicts here (no model runs), shaped like the real documents.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from medaudit.commands.common import handle_errors
from medaudit.commands.gate import compare_command, gate_command, gate_document
from medaudit.errors import ConfigError, MedauditError, PolicyError
from medaudit.gate import compare, evaluate, extract_metrics, known_metrics, load_policy, sections
from medaudit.gate.compare import parse_allow
from medaudit.gate.metrics import resolve
from medaudit.report import ci

EPS1, EPS2 = 1 / 255, 2 / 255


# ---- report builders ----


def make_doc(command: str, results: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    doc = {
        "schema": "medaudit/1",
        "command": command,
        "config": {},
        "model": {"path": "models/cand.pt", "format": "torchscript", "sha256": "ab" * 32},
        "data": {"source": "medmnist", "name": "pneumoniamnist", "split": "test", "size": 28, "n": 624},
        "seed": 0,
        "versions": {},
        "wall_time_s": 1.0,
        "warnings": [],
        "results": results,
    }
    doc.update(overrides)
    return doc


def eval_results(accuracy: float = 0.9, balanced: float = 0.88, auc: float | None = 0.97) -> dict[str, Any]:
    return {"task": "binary-class", "n": 624, "accuracy": accuracy, "balanced_accuracy": balanced, "auc": auc}


def attack_results(
    robust: tuple[float, float] = (0.8, 0.6),
    auc: tuple[float | None, float | None] = (0.9, 0.8),
    norm: str = "linf",
    eps: tuple[float, float] = (EPS1, EPS2),
    failed_checks: int = 0,
) -> dict[str, Any]:
    sweep = []
    for e, r, a in zip(eps, robust, auc, strict=True):
        common = {"norm": norm, "eps": e, "n": 624, "clean_accuracy": 0.9}
        sweep.append({**common, "attack": "apgd-ce", "robust_accuracy": r + 0.01, "attack_success_rate": 0.1})
        sweep.append(
            {**common, "attack": "worst-case", "robust_accuracy": r, "attack_success_rate": 1 - r / 0.9}
            | {"auc_under_attack": a}
        )
    checks = [{"check": f"c{i}", "passed": i >= failed_checks, "detail": ""} for i in range(6)]
    return {
        "n": 624,
        "clean_accuracy": 0.9,
        "sweep": sweep,
        "curve": {"eps": [0.0, *eps], "robust_accuracy": [0.9, *robust], "normalised_area": 0.7},
        "checks": checks,
    }


def shift_results(
    clean_be: float = 0.12, mean_be: float = 0.2, worst: float = 0.36, rbe: float | None = None
):
    summary = {
        "clean_be": clean_be,
        "mean_be": mean_be,
        "worst_corruption": "brightness_down",
        "worst_corruption_be": worst,
        "mean_normalised_be": None,
        "mean_rbe": rbe,
        "mean_accuracy_drop": 0.08,
        "mean_auc_drop": 0.02,
    }
    return {"clean": {"accuracy": 0.9, "balanced_error": clean_be, "auc": 0.97}, "summary": summary}


def intrinsic_results(
    with_model: bool = True, lipschitz: float = 490.0, d_repr: float = 11.0
) -> dict[str, Any]:
    return {
        "label_sharpness": {"k_f": 0.66},
        "d_data": {"mle": 15.3, "twonn": 19.2},
        "d_repr": {"mle": d_repr, "twonn": d_repr + 4} if with_model else None,
        "model_smoothness": {"mean": lipschitz} if with_model else None,
    }


def run_doc(**sections_: dict[str, Any]) -> dict[str, Any]:
    return make_doc("run", sections_)


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc))
    return path


# ---- CLI harness ----


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    app.command("gate")(handle_errors(gate_command))
    app.command("compare")(handle_errors(compare_command))
    return app


def invoke(runner: CliRunner, app: typer.Typer, *args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def assert_user_error(result, *needles: str) -> None:
    """Exit 2 with one 'error:' line on stderr that names the problem."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    message = result.stderr.strip()
    assert message.startswith("error:") and len(message.splitlines()) == 1, message
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in message, message


# ---- metrics ----


def test_policy_error_is_a_user_error() -> None:
    assert issubclass(PolicyError, MedauditError) and issubclass(ConfigError, MedauditError)


def test_extract_metrics_from_a_run_document_with_every_section() -> None:
    doc = run_doc(
        eval=eval_results(), attack=attack_results(), shift=shift_results(), intrinsic=intrinsic_results()
    )
    assert set(sections(doc)) == {"eval", "attack", "shift", "intrinsic"}
    metrics = extract_metrics(doc)
    assert metrics["eval.accuracy"] == 0.9 and metrics["eval.auc"] == 0.97
    # the worst-case record, not the per-attack one (0.81), keyed by format(eps, "g")
    assert metrics[f"attack.robust_accuracy@{format(EPS1, 'g')}"] == 0.8
    assert metrics[f"attack.auc@{format(EPS2, 'g')}"] == 0.8
    assert metrics["attack.curve_area"] == 0.7 and metrics["attack.checks_failed"] == 0
    assert metrics["shift.worst_be"] == 0.36 and metrics["shift.mean_be"] == 0.2
    assert "shift.mean_rbe" not in metrics  # null: the AlexNet baseline does not apply
    assert metrics["intrinsic.d_repr_twonn"] == 15.0 and metrics["intrinsic.lipschitz"] == 490.0
    for key in metrics:  # every extracted key is documented, with a direction
        base, at, _ = key.partition("@")
        assert (f"{base}@EPS" if at else base) in known_metrics()


def test_single_command_document_and_nulls() -> None:
    doc = make_doc("intrinsic", intrinsic_results(with_model=False))
    metrics = extract_metrics(doc)
    assert set(metrics) == {"intrinsic.k_f", "intrinsic.d_data_mle", "intrinsic.d_data_twonn"}
    nulls = extract_metrics(make_doc("eval", eval_results(auc=None)))
    assert math.isnan(nulls["eval.auc"]) and nulls["eval.accuracy"] == 0.9
    assert extract_metrics(make_doc("shift", shift_results(rbe=1.3)))["shift.mean_rbe"] == 1.3


@pytest.mark.parametrize(
    "name",
    [
        "attack.robust_accuracy@1/255",
        "attack.robust_accuracy@0.0039215686",
        "attack.robust_accuracy@linf:1/255",
    ],
)
def test_eps_lookup_accepts_fractions_and_rounded_decimals(name: str) -> None:
    metrics = extract_metrics(make_doc("attack", attack_results()))
    assert resolve(name, metrics, "linf") == f"attack.robust_accuracy@{format(EPS1, 'g')}"


def test_eps_lookup_refuses_another_budget_or_norm() -> None:
    metrics = extract_metrics(make_doc("attack", attack_results()))
    with pytest.raises(PolicyError, match=r"sweep has eps 0\.00392157, 0\.00784314"):
        resolve("attack.robust_accuracy@0.0039", metrics)  # 0.5% off 1/255 is another budget
    with pytest.raises(PolicyError, match="l2 norm"):
        resolve("attack.robust_accuracy@l2:1/255", metrics, "linf")
    with pytest.raises(PolicyError, match="needs an eps"):
        resolve("attack.robust_accuracy", metrics)


# ---- policy ----


def test_policy_syntax_string_table_list_and_dotted_toml(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        '[gate]\neval.auc = ">= 0.9"\n"shift.mean_be" = { max = 0.25 }\n'
        '"eval.accuracy" = ["> 0.5", "<= 1"]\n"attack.checks_failed" = "== 0"\n'
        '[gate.attack]\n"robust_accuracy@1/255" = { min = 0.7 }\n'
    )
    rules = load_policy(path)
    got = [(r.metric, r.op, r.threshold) for r in rules]
    assert got == [
        ("eval.auc", ">=", 0.9),
        ("shift.mean_be", "<=", 0.25),
        ("eval.accuracy", ">", 0.5),
        ("eval.accuracy", "<=", 1.0),
        ("attack.checks_failed", "==", 0.0),
        ("attack.robust_accuracy@1/255", ">=", 0.7),
    ]
    assert load_policy({"gate": {"eval.auc": ">= 1/2"}})[0].threshold == 0.5  # a parsed AUDIT.toml


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("at least 0.9", "malformed"),
        (">= abc", "not a finite number"),
        (">= nan", "not a finite number"),
        (0.9, "no operator"),
        ({"minimum": 0.9}, "min and/or max"),
        ({"min": True}, "must be a number"),
        ("=> 0.9", "malformed"),
    ],
)
def test_malformed_rule_names_the_rule(spec: Any, needle: str) -> None:
    with pytest.raises(PolicyError, match=needle) as info:
        load_policy({"eval.auc": spec})
    assert "eval.auc" in str(info.value)


def test_unknown_metric_lists_close_matches() -> None:
    with pytest.raises(PolicyError, match=r"did you mean eval\.accuracy") as info:
        load_policy({"eval.acuracy": ">= 0.9"})
    assert "\n" not in str(info.value)
    with pytest.raises(PolicyError, match=r"attack\.robust_accuracy@1/255"):
        load_policy({"attack.robust_acuracy@1/255": ">= 0.7"})


def test_evaluate_passes_fails_and_never_passes_nan() -> None:
    metrics = extract_metrics(make_doc("eval", eval_results(accuracy=0.41, auc=None)))
    rules = load_policy({"eval.accuracy": ">= 0.5", "eval.balanced_accuracy": "> 0.8", "eval.auc": "<= 1"})
    verdicts = evaluate(rules, metrics)
    assert [v.passed for v in verdicts] == [False, True, False]
    assert verdicts[0].message == "value 0.41 < 0.5"
    assert "no value" in verdicts[2].message  # null AUC fails even a rule every number would pass


def test_equality_rule_and_checks_failed() -> None:
    doc = make_doc("attack", attack_results(failed_checks=2))
    verdicts, code = gate_document(doc, {"attack.checks_failed": "== 0"})
    assert code == 1 and verdicts[0].value == 2.0
    assert gate_document(make_doc("attack", attack_results()), {"attack.checks_failed": "== 0"})[1] == 0


def test_gate_on_absent_section_is_a_policy_error() -> None:
    doc = make_doc("intrinsic", intrinsic_results())
    with pytest.raises(PolicyError, match="no shift results") as info:
        gate_document(doc, {"shift.mean_be": "<= 0.3"})
    assert "intrinsic.k_f" in str(info.value)  # lists what is available


# ---- compare ----


def test_compare_direction_allowance_and_overrides() -> None:
    base = run_doc(eval=eval_results(accuracy=0.90), shift=shift_results(mean_be=0.20, worst=0.36))
    cand = run_doc(eval=eval_results(accuracy=0.85), shift=shift_results(mean_be=0.10, worst=0.40))
    rows = {r.metric: r for r in compare(base, cand, 0.02, {})}
    assert rows["eval.accuracy"].regression == pytest.approx(0.05) and rows["eval.accuracy"].passed is False
    assert rows["shift.mean_be"].regression == pytest.approx(-0.10)  # lower balanced error is better
    assert rows["shift.mean_be"].passed is True
    assert rows["shift.worst_be"].passed is False and rows["shift.worst_be"].direction == "lower"
    relaxed = {r.metric: r for r in compare(base, cand, 0.02, {"eval.accuracy": 0.06})}
    assert relaxed["eval.accuracy"].passed is True and relaxed["eval.accuracy"].allowed == 0.06
    assert relaxed["shift.worst_be"].passed is False  # the override is per metric


def test_compare_notes_ungated_and_one_sided_metrics() -> None:
    base = run_doc(eval=eval_results(), intrinsic=intrinsic_results(lipschitz=400.0))
    cand = run_doc(eval=eval_results(auc=None), intrinsic=intrinsic_results(with_model=False))
    rows = {r.metric: r for r in compare(base, cand, 0.02, {})}
    assert rows["eval.auc"].passed is False and "no candidate value" in rows["eval.auc"].notes[0]
    assert rows["intrinsic.lipschitz"].passed is None and rows["intrinsic.lipschitz"].notes == [
        "only in the baseline"
    ]
    assert rows["intrinsic.k_f"].passed is None  # no direction, no default allowance
    gated = {r.metric: r for r in compare(base, base, 0.02, {"intrinsic.k_f": 0.1})}
    assert gated["intrinsic.k_f"].passed is True and gated["intrinsic.k_f"].allowed == 0.1


def test_compare_matches_eps_across_spellings() -> None:
    base = make_doc("attack", attack_results(robust=(0.80, 0.6), eps=(EPS1, EPS2)))
    cand = make_doc("attack", attack_results(robust=(0.70, 0.6), eps=(0.0039215686, 0.0078431373)))
    rows = compare(base, cand, 0.02, {"attack.robust_accuracy@1/255": 0.2})
    robust = [r for r in rows if r.metric.startswith("attack.robust_accuracy@")]
    assert len(robust) == 2 and all(r.baseline is not None and r.candidate is not None for r in robust)
    assert robust[0].allowed == 0.2 and robust[0].passed is True


def test_parse_allow_refuses_malformed() -> None:
    assert parse_allow(["eval.auc=0.05", "attack.auc@1/255=1/20"]) == {
        "eval.auc": 0.05,
        "attack.auc@1/255": 0.05,
    }
    for bad in ("eval.auc", "eval.auc=x", "eval.auc=-1", "=0.1"):
        with pytest.raises(ConfigError):
            parse_allow([bad])


# ---- CI outputs ----


def test_junit_has_one_failure_per_failing_rule(tmp_path: Path) -> None:
    doc = make_doc("eval", eval_results(accuracy=0.41, balanced=0.4))
    verdicts, _ = gate_document(
        doc, {"eval.accuracy": ">= 0.5", "eval.balanced_accuracy": ">= 0.5", "eval.auc": ">= 0.9"}
    )
    path = tmp_path / "junit.xml"
    ci.write_junit(path, verdicts, "medaudit gate")
    root = ET.parse(path).getroot()
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "3" and suite.get("failures") == "2"
    failures = root.findall(".//testcase/failure")
    assert [f.get("message") for f in failures] == ["value 0.41 < 0.5", "value 0.4 < 0.5"]
    assert list(tmp_path.iterdir()) == [path]  # atomic write leaves no temp file


def test_markdown_summary_has_model_headline_and_gate_table() -> None:
    doc = run_doc(eval=eval_results(), attack=attack_results())
    verdicts, _ = gate_document(doc, {"eval.auc": ">= 0.9", "attack.robust_accuracy@1/255": ">= 0.85"})
    text = ci.markdown_summary(doc, verdicts)
    assert text.startswith("### medaudit gate: ❌ failed (1 of 2 rules)")
    assert "models/cand.pt" in text and "pneumoniamnist 28 px" in text
    assert "| ✅ | `eval.auc` >= | 0.97 | 0.9 |" in text
    assert "| ❌ | `attack.robust_accuracy@1/255` >= | 0.8 | 0.85 |" in text


# ---- commands ----


def policy_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text("[gate]\n" + body)
    return path


def test_gate_command_passes(runner, app, tmp_path: Path) -> None:
    report = write(tmp_path / "r.json", make_doc("eval", eval_results()))
    policy = policy_file(tmp_path, '"eval.auc" = ">= 0.9"\n"eval.accuracy" = { min = 0.85 }\n')
    result = invoke(runner, app, "gate", report, "--policy", policy, "--json", "-")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["command"] == "gate" and out["results"]["passed"] is True
    assert [v["passed"] for v in out["results"]["verdicts"]] == [True, True]
    assert "gate passed" in result.stderr


def test_gate_command_fails_with_table_json_junit_markdown(runner, app, tmp_path: Path) -> None:
    doc = run_doc(eval=eval_results(accuracy=0.41), shift=shift_results(mean_be=0.2))
    report = write(tmp_path / "r.json", doc)
    policy = policy_file(tmp_path, '"eval.accuracy" = ">= 0.5"\n"shift.mean_be" = "<= 0.25"\n')
    junit, markdown, out = tmp_path / "j.xml", tmp_path / "s.md", tmp_path / "g.json"
    args = ["gate", report, "--policy", policy, "--junit", junit, "--markdown", markdown, "--json", out]
    result = invoke(runner, app, *args)
    assert result.exit_code == 1, result.output
    failing = [line for line in result.stderr.splitlines() if "eval.accuracy" in line and "│" in line]
    assert len(failing) == 1 and "FAIL" in failing[0] and "0.41" in failing[0]
    passing = [line for line in result.stderr.splitlines() if "shift.mean_be" in line and "│" in line]
    assert "pass" in passing[0]
    verdicts = json.loads(out.read_text())["results"]["verdicts"]
    assert [(v["metric"], v["passed"]) for v in verdicts] == [
        ("eval.accuracy", False),
        ("shift.mean_be", True),
    ]
    assert len(ET.parse(junit).getroot().findall(".//failure")) == 1
    assert "| ❌ | `eval.accuracy` >= | 0.41 | 0.5 |" in markdown.read_text()


def test_gate_command_null_value_fails(runner, app, tmp_path: Path) -> None:
    report = write(tmp_path / "r.json", make_doc("eval", eval_results(auc=None)))
    policy = policy_file(tmp_path, '"eval.auc" = ">= 0"\n')
    result = invoke(runner, app, "gate", report, "--policy", policy, "--json", "-")
    assert result.exit_code == 1
    verdict = json.loads(result.stdout)["results"]["verdicts"][0]
    assert verdict["value"] is None and verdict["passed"] is False


def test_gate_command_unknown_metric_exit_2(runner, app, tmp_path: Path) -> None:
    report = write(tmp_path / "r.json", make_doc("eval", eval_results()))
    policy = policy_file(tmp_path, '"eval.balanced_acc" = ">= 0.9"\n')
    result = invoke(runner, app, "gate", report, "--policy", policy)
    assert_user_error(result, "unknown metric 'eval.balanced_acc'", "eval.balanced_accuracy")


def test_gate_command_metric_absent_from_report_exit_2(runner, app, tmp_path: Path) -> None:
    report = write(tmp_path / "r.json", make_doc("attack", attack_results()))
    policy = policy_file(tmp_path, '"attack.robust_accuracy@4/255" = ">= 0.5"\n')
    result = invoke(runner, app, "gate", report, "--policy", policy)
    assert_user_error(result, "not in this report", "0.00392157, 0.00784314")


@pytest.mark.parametrize(
    "policy_text, report_text, needle",
    [
        ('[gate]\n"eval.auc" = "above 0.9"\n', None, "'eval.auc' = 'above 0.9' is malformed"),
        ("[gate\n", None, "not valid TOML"),
        ('[other]\n"eval.auc" = ">= 0.9"\n', None, "no gate table"),
        ('[gate]\n"eval.auc" = ">= 0.9"\n', "{not json", "is not JSON"),
        ('[gate]\n"eval.auc" = ">= 0.9"\n', '{"schema": "other/2", "results": {}}', "expected 'medaudit/1'"),
    ],
)
def test_gate_command_bad_input_exit_2(runner, app, tmp_path, policy_text, report_text, needle) -> None:
    report = tmp_path / "r.json"
    report.write_text(
        report_text if report_text is not None else json.dumps(make_doc("eval", eval_results()))
    )
    policy = tmp_path / "p.toml"
    policy.write_text(policy_text)
    assert_user_error(invoke(runner, app, "gate", report, "--policy", policy), needle)


def test_gate_command_missing_files_and_protected_outputs(runner, app, tmp_path: Path) -> None:
    report = write(tmp_path / "r.json", make_doc("eval", eval_results()))
    policy = policy_file(tmp_path, '"eval.auc" = ">= 0.9"\n')
    assert_user_error(invoke(runner, app, "gate", tmp_path / "no.json", "--policy", policy), "does not exist")
    assert_user_error(invoke(runner, app, "gate", report, "--policy", tmp_path / "no.toml"), "does not exist")
    before = report.read_text()
    assert_user_error(invoke(runner, app, "gate", report, "--policy", policy, "--junit", report), "overwrite")
    assert report.read_text() == before
    assert_user_error(
        invoke(runner, app, "gate", report, "--policy", policy, "--json", "-", "--markdown", "-"), "stdout"
    )


def test_compare_command_regression_allow_and_direction(runner, app, tmp_path: Path) -> None:
    base = write(
        tmp_path / "base.json", run_doc(eval=eval_results(auc=0.97), shift=shift_results(mean_be=0.2))
    )
    cand_doc = run_doc(eval=eval_results(auc=0.93), shift=shift_results(mean_be=0.1))
    cand = write(tmp_path / "cand.json", cand_doc)
    junit = tmp_path / "c.xml"
    result = invoke(runner, app, "compare", base, cand, "--json", "-", "--junit", junit)
    assert result.exit_code == 1, result.output
    rows = {r["metric"]: r for r in json.loads(result.stdout)["results"]["rows"]}
    assert rows["eval.auc"]["verdict"] == "FAIL" and rows["eval.auc"]["regression"] == pytest.approx(0.04)
    assert rows["shift.mean_be"]["verdict"] == "pass" and rows["shift.mean_be"]["direction"] == "lower"
    failures = ET.parse(junit).getroot().findall(".//failure")
    assert len(failures) == 1 and "worse by 0.04" in (failures[0].get("message") or "")
    relaxed = invoke(runner, app, "compare", base, cand, "--allow", "eval.auc=0.05")
    assert relaxed.exit_code == 0, relaxed.output
    assert invoke(runner, app, "compare", base, cand, "--max-regression", "0.05").exit_code == 0
    # mean_be halved: an improvement of 0.1 must not count against a tight allowance
    assert (
        invoke(runner, app, "compare", base, cand, "--allow", "eval.auc=1", "--max-regression", "0").exit_code
        == 0
    )


def test_compare_command_markdown_and_bad_allow(runner, app, tmp_path: Path) -> None:
    base = write(tmp_path / "base.json", make_doc("eval", eval_results(accuracy=0.9)))
    cand = write(tmp_path / "cand.json", make_doc("eval", eval_results(accuracy=0.8)))
    result = invoke(runner, app, "compare", base, cand, "--markdown", "-")
    assert result.exit_code == 1
    assert "| ❌ | `eval.accuracy` | 0.9 | 0.8 | -0.1 | higher | 0.02 |" in result.stdout
    assert_user_error(invoke(runner, app, "compare", base, cand, "--allow", "eval.acc=0.1"), "eval.accuracy")
    assert_user_error(invoke(runner, app, "compare", base, cand, "--allow", "eval.accuracy"), "METRIC=AMOUNT")
    assert_user_error(
        invoke(runner, app, "compare", base, cand, "--allow", "shift.mean_be=0.1"), "either report"
    )
