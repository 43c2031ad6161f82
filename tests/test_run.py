"""``medaudit run`` and ``medaudit init``: one audit file, one report, the gate's exit codes."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medaudit.audit_config import EXAMPLE, read_audit_file
from medaudit.cli import app
from medaudit.gate import extract_metrics

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_models" / "pneumoniamnist_rescnn.onnx"


def audit_file(tmp_path: Path, data_root: Path, gate: str, sections: str | None = None) -> Path:
    """A small but complete audit: eval, a one-eps attack, two corruptions, intrinsic without Lipschitz."""
    body = sections or (
        '[eval]\n[attack]\neps = "1/255"\nattack = "fgsm"\n'
        '[shift]\ncorruptions = ["gaussian_noise", "brightness_down"]\nseverities = [1, 5]\n'
        '[confounders]\nartifacts = ["tag", "lowpass"]\nstrengths = [1.0]\npositions = ["top-left"]\n'
        "[intrinsic]\nrounds = 2\nlipschitz = false\n"
    )
    path = tmp_path / "audit.toml"
    path.write_text(
        f'[model]\npath = "{SAMPLE}"\n[data]\ndata_root = "{data_root}"\nlimit = 60\nseed = 1\n'
        f"[run]\nbatch_size = 32\n{body}[gate]\n{gate}\n"
    )
    return path


def test_example_file_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "audit.toml"
    path.write_text(EXAMPLE)
    audit = read_audit_file(path)
    assert list(audit.audits) == ["eval", "attack", "shift", "confounders", "intrinsic"]
    assert audit.model.path == tmp_path / "sample_models" / "pneumoniamnist_rescnn.pt"
    assert set(audit.gate) == {
        "eval.auc",
        "attack.robust_accuracy@1/255",
        "shift.mean_be",
        "confounders.shortcuts",
    }


def test_init_writes_once(runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the model path is written relative to the file's folder: here, as it is
    path = tmp_path / "audit.toml"
    first = runner.invoke(app, ["init", str(path)])
    assert first.exit_code == 0
    assert path.read_text() == EXAMPLE
    assert "set it to your model file" in " ".join(first.stderr.split())  # no sample model here
    path.write_text("mine")
    result = runner.invoke(app, ["init", str(path)])
    assert result.exit_code == 2 and "--force" in result.stderr
    assert path.read_text() == "mine"


def test_passing_and_failing_gates(runner: CliRunner, tmp_path: Path, real_data_root: Path) -> None:
    rules = (
        '"eval.accuracy" = ">= 0.5"\n"attack.robust_accuracy@1/255" = ">= 0.2"\n"shift.mean_be" = "<= 0.9"'
    )
    path = audit_file(tmp_path, real_data_root, rules)
    report, junit, html = tmp_path / "report.json", tmp_path / "gate.xml", tmp_path / "report.html"
    result = runner.invoke(
        app, ["run", str(path), "--json", str(report), "--junit", str(junit), "--html", str(html)]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(report.read_text())
    assert doc["command"] == "run"
    assert set(doc["results"]) == {"eval", "attack", "shift", "confounders", "intrinsic"}
    assert doc["data"]["n"] == 60 and all(v["passed"] for v in doc["gate"])
    # each section is that command's own results: the clean accuracy agrees across sections
    assert doc["results"]["eval"]["accuracy"] == pytest.approx(doc["results"]["attack"]["clean_accuracy"])
    assert doc["results"]["eval"]["accuracy"] == pytest.approx(doc["results"]["shift"]["clean"]["accuracy"])
    assert {"intrinsic.k_f", "confounders.worst_flip_rate"} <= set(extract_metrics(doc))
    assert len(ET.parse(junit).getroot().iter("testcase").__next__().attrib) > 0
    assert "data:image/png;base64," in html.read_text()

    strict = audit_file(tmp_path, real_data_root, '"eval.accuracy" = ">= 0.5"\n"shift.mean_be" = "<= 0.001"')
    result = runner.invoke(app, ["run", str(strict), "--json", "-"])
    assert result.exit_code == 1, result.output
    verdicts = {v["metric"]: v["passed"] for v in json.loads(result.stdout)["gate"]}
    assert verdicts == {"eval.accuracy": True, "shift.mean_be": False}


def test_bad_audit_files_fail_before_any_work(
    runner: CliRunner, tmp_path: Path, real_data_root: Path
) -> None:
    unknown_metric = audit_file(tmp_path, real_data_root, '"eval.acuracy" = ">= 0.5"', sections="[eval]\n")
    result = runner.invoke(app, ["run", str(unknown_metric)])
    assert result.exit_code == 2 and "eval.accuracy" in result.stderr and "Traceback" not in result.output
    bad_section = tmp_path / "bad.toml"
    bad_section.write_text(f'[model]\npath = "{SAMPLE}"\n[shfit]\n')
    result = runner.invoke(app, ["run", str(bad_section)])
    assert result.exit_code == 2 and "[shfit]" in result.stderr  # brackets survive rich markup
    assert "did you mean 'shift'" in result.stderr
    bad_option = tmp_path / "opt.toml"
    bad_option.write_text(f'[model]\npath = "{SAMPLE}"\n[attack]\nepss = 0.01\n')
    assert "did you mean 'eps'" in runner.invoke(app, ["run", str(bad_option)]).stderr
    before = unknown_metric.read_text()
    result = runner.invoke(app, ["run", str(unknown_metric), "--html", str(unknown_metric)])
    assert result.exit_code == 2 and "overwrite an input file" in " ".join(result.stderr.split())
    assert unknown_metric.read_text() == before
    assert runner.invoke(app, ["run", str(tmp_path / "missing.toml")]).exit_code == 2
