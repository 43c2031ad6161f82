"""A failed honesty check is as visible as a failed gate rule (HTML header, Markdown comment,
JUnit XML, console), and ``medaudit merge`` prints the tables the single run prints (#21)."""

from __future__ import annotations

import copy
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medaudit.cli import app
from medaudit.gate.policy import Verdict
from medaudit.report import ci
from medaudit.report.html import render_html

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_models" / "pneumoniamnist_rescnn.onnx"
CHECK = "unbounded budget breaks the model"


def synthetic(tmp_path: Path, n: int = 48) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "synthetic.npz"
    np.savez(
        path,
        train_images=rng.integers(0, 256, (8, 28, 28), dtype=np.uint8),
        train_labels=(np.arange(8) % 2).reshape(-1, 1),
        test_images=rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        test_labels=(np.arange(n) % 2).reshape(-1, 1),
    )
    return path


def audit_file(tmp_path: Path, gate: bool = True) -> Path:
    path = tmp_path / "audit.toml"
    text = (
        f'[model]\npath = "{SAMPLE}"\n[data]\ndata = "{synthetic(tmp_path)}"\nseed = 1\n'
        '[run]\nbatch_size = 16\n[eval]\n[attack]\neps = "1/255,2/255"\nattack = "fgsm,pgd"\nsteps = 3\n'
    )
    if gate:
        text += '[gate]\n"eval.accuracy" = ">= 0"\n'
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def failed_doc(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A real small ``run`` report (eval and an fgsm/pgd sweep) with one honesty check failed."""
    tmp_path = tmp_path_factory.mktemp("run")
    out = tmp_path / "run.json"
    result = CliRunner().invoke(app, ["run", str(audit_file(tmp_path)), "--json", str(out)])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(out.read_text())
    checks = doc["results"]["attack"]["checks"]
    assert any(c["check"] == CHECK for c in checks)
    for check in checks:
        check["passed"] = check["check"] != CHECK
    return doc


def passing_verdicts() -> list[Verdict]:
    from medaudit.gate import load_policy
    from medaudit.gate.policy import evaluate

    return evaluate(load_policy({"eval.accuracy": ">= 0"}), {"eval.accuracy": 1.0})


def test_html_header_shows_a_failed_check_before_any_section(failed_doc: dict) -> None:
    page = render_html(failed_doc)
    header = page[page.index("<header>") : page.index("</header>")]
    assert "PASS" in header  # the gate's verdict does not change
    alarm = re.search(r'<p class="alarm"[^>]*>(.*?)</p>', header)
    assert alarm is not None and "1 honesty check failed" in alarm.group(1) and CHECK in alarm.group(1)
    assert page.index('class="alarm"') < page.index("<section")
    passed = copy.deepcopy(failed_doc)
    for check in passed["results"]["attack"]["checks"]:
        check["passed"] = True
    assert 'class="alarm"' not in render_html(passed)


def test_markdown_comment_mentions_the_failed_check_above_the_tables(failed_doc: dict) -> None:
    text = ci.markdown_summary(failed_doc, passing_verdicts())
    assert text.startswith("### medaudit gate: ✅ passed")
    line = next(line for line in text.splitlines() if "honesty check failed" in line)
    assert "⚠️" in line and CHECK in line and "overstated" in line
    assert text.index(line) < text.index("| audit | metric | value |")


def test_junit_has_a_failing_testcase_for_the_failed_check(failed_doc: dict, tmp_path: Path) -> None:
    verdicts = passing_verdicts()
    path = tmp_path / "junit.xml"
    ci.write_junit(path, verdicts, "medaudit run audit.toml", ci.check_cases(failed_doc))
    root = ET.parse(path).getroot()
    suites = root.findall("testsuite")
    assert suites[0].get("failures") == "0" and len(suites[0]) == len(verdicts)  # the gate's cases as before
    checks = suites[1]
    assert checks.get("name") == ci.CHECKS_SUITE and checks.get("failures") == "1"
    failed = [case for case in checks if case.find("failure") is not None]
    assert [case.get("name") for case in failed] == [CHECK]
    assert len(checks) == len(failed_doc["results"]["attack"]["checks"])


def test_run_junit_and_console_show_a_failed_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: ``run --junit`` writes the checks' suite; the gate's exit code is unchanged."""
    from medaudit.attacks import checks as checks_module

    real = checks_module._unbounded

    def failing(*args, **kwargs):  # the unbounded check fails, as for a masked model
        return {**real(*args, **kwargs), "passed": False}

    monkeypatch.setattr(checks_module, "_unbounded", failing)
    junit = tmp_path / "junit.xml"
    result = CliRunner().invoke(app, ["run", str(audit_file(tmp_path)), "--junit", str(junit)])
    assert result.exit_code == 0, result.stderr
    assert f"1 honesty check failed: {CHECK}" in " ".join(result.stderr.split())
    suites = ET.parse(junit).getroot().findall("testsuite")
    assert [s.get("failures") for s in suites] == ["0", "1"]


def tables_text(stderr: str) -> str:
    """What a command printed before its JSON, less progress lines ('[1/2 eval] ...'), merge's
    count line and the report's warnings (a run prints its data warnings first, merge all last)."""
    lines = [line.rstrip() for line in stderr[: stderr.index("JSON written")].splitlines()]
    return "\n".join(line for line in lines if line and not line.startswith(("[", "merged ", "warning:")))


def test_merge_prints_the_single_run_tables(tmp_path: Path) -> None:
    runner = CliRunner()
    audit = audit_file(tmp_path, gate=False)
    whole = runner.invoke(app, ["run", str(audit), "--json", str(tmp_path / "whole.json")])
    assert whole.exit_code == 0, whole.stderr
    names = [str(tmp_path / f"part{i}.json") for i in range(2)]  # 48 images: two blocks of 32
    for i, name in enumerate(names):
        part = runner.invoke(app, ["run", str(audit), "--shard", f"{i}/2", "--json", name])
        assert part.exit_code == 0, part.stderr
    merged = runner.invoke(app, ["merge", *names, "--json", str(tmp_path / "merged.json")])
    assert merged.exit_code == 0, merged.stderr
    for title in ("Clean metrics", "Per class", "Robustness", "Honesty checks", "Audit summary"):
        assert title in merged.stderr
    assert tables_text(merged.stderr) == tables_text(whole.stderr)
