"""Progress on stderr (issue #20): rich bars on a terminal, plain lines elsewhere, none with --quiet."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

import medaudit.commands.progress as progress
from medaudit.cli import app
from medaudit.commands import common
from medaudit.commands.common import Settings
from medaudit.commands.progress import LineProgress, audit_prefix, duration, progress_bar, stage_status

LINE = re.compile(r"^(?P<stage>.+): (?P<done>\d+)/(?P<total>\d+) \((?P<percent>\d+)%\), .* elapsed")


@pytest.fixture
def model(tmp_path: Path, make_cnn: Callable[..., torch.nn.Module]) -> Path:
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.trace(make_cnn().eval(), torch.zeros(2, 1, 28, 28)), str(path))
    return path


@pytest.fixture
def loud(monkeypatch: pytest.MonkeyPatch) -> None:
    """Library-level tests: not quiet, whatever an earlier CLI invocation configured."""
    monkeypatch.setattr(common, "_settings", Settings())


def progress_lines(stderr: str, stage: str) -> list[re.Match[str]]:
    return [m for m in map(LINE.match, stderr.splitlines()) if m and m["stage"] == stage]


def counts(text: str) -> list[str]:
    """The done count of every line of ``text``, each of which must be a progress line."""
    matches = [LINE.match(line) for line in text.splitlines()]
    assert all(matches), text
    return [m["done"] for m in matches if m]


def test_eval_prints_progress_lines_with_the_final_count(
    runner: CliRunner, model: Path, synthetic_npz: Path
) -> None:
    result = runner.invoke(app, ["eval", str(model), "--data", str(synthetic_npz), "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    lines = progress_lines(result.stderr, "evaluating")
    assert lines, result.stderr
    assert all(m["total"] == "10" for m in lines)
    assert lines[-1]["done"] == "10" and lines[-1]["percent"] == "100"
    assert lines[-1].string.endswith(", done")
    assert lines[0]["done"] == "4"  # the first line comes with the first batch


def test_attack_prints_sweep_and_honesty_check_lines(
    runner: CliRunner, model: Path, synthetic_npz: Path
) -> None:
    args = ["attack", str(model), "--data", str(synthetic_npz), "--attack", "pgd", "--steps", "2"]
    result = runner.invoke(app, [*args, "--eps", "0.01,0.02", "--batch-size", "4", "--json", "-"])
    assert result.exit_code == 0, result.output
    lines = progress_lines(result.stderr, "attacking")
    assert lines and lines[-1]["done"] == lines[-1]["total"] == "20", result.stderr
    assert re.search(r"^honesty checks: .* elapsed, done$", result.stderr, re.M), result.stderr
    assert json.loads(result.stdout)["command"] == "attack"  # progress never reaches stdout


def test_run_lines_name_each_audit(
    runner: CliRunner, model: Path, synthetic_npz: Path, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.toml"
    audit.write_text(f'[model]\npath = "{model.name}"\n[data]\ndata = "{synthetic_npz.name}"\n[eval]\n')
    result = runner.invoke(app, ["run", str(audit)])
    assert result.exit_code == 0, result.output
    lines = progress_lines(result.stderr, "[1/1 eval] evaluating")
    assert lines and lines[-1]["done"] == lines[-1]["total"] == "10", result.stderr


@pytest.mark.parametrize("how", ["option", "env"])
def test_quiet_silences_progress_but_not_results(
    runner: CliRunner, model: Path, synthetic_npz: Path, how: str
) -> None:
    args = ["attack", str(model), "--data", str(synthetic_npz), "--attack", "pgd", "--steps", "2"]
    args += ["--eps", "0.01", "--batch-size", "4", "--json", "-"]
    if how == "option":
        result = runner.invoke(app, ["--quiet", *args])
    else:
        result = runner.invoke(app, args, env={"MEDAUDIT_QUIET": "1"})
    assert result.exit_code == 0, result.output
    assert not progress_lines(result.stderr, "attacking"), result.stderr
    assert "honesty checks:" not in result.stderr and "elapsed" not in result.stderr
    assert "Robustness" in result.stderr and "Honesty checks" in result.stderr  # the tables
    assert json.loads(result.stdout)["command"] == "attack"
    evaluated = runner.invoke(app, ["--quiet", "eval", str(model), "--data", str(synthetic_npz)])
    assert evaluated.exit_code == 0 and "Clean metrics" in evaluated.stderr
    assert not progress_lines(evaluated.stderr, "evaluating"), evaluated.stderr


def test_periodic_lines_one_per_update_with_interval_zero(
    loud: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)
    out = io.StringIO()
    with progress_bar(Console(file=out), "stage", 5) as advance:
        for _ in range(5):
            advance(1)
    lines = out.getvalue().splitlines()
    assert counts(out.getvalue()) == ["1", "2", "3", "4", "5"]
    assert lines[1].startswith("stage: 2/5 (40%), ") and lines[1].endswith(" left")
    assert lines[-1].startswith("stage: 5/5 (100%), ") and lines[-1].endswith(", done")


def test_lines_are_spaced_by_the_interval(loud: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a long interval: the first unit's line and the end line, nothing in between."""
    monkeypatch.setattr(progress, "INTERVAL_S", 3600.0)
    out = io.StringIO()
    with progress_bar(Console(file=out), "stage", 100) as advance:
        for _ in range(100):
            advance(1)
    assert counts(out.getvalue()) == ["1", "100"]


def test_detail_follows_the_counts_until_replaced(loud: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """``harden`` shows its current losses this way, in lines and on a terminal."""
    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)
    out = io.StringIO()
    with progress_bar(Console(file=out), "hardening", 3) as advance:
        advance(1, "loss [0.5]")
        advance(1)
        advance(1, "loss 0.25")
    lines = out.getvalue().splitlines()
    assert ", loss [0.5], ~" in lines[0] and ", loss [0.5], ~" in lines[1]
    assert lines[-1].endswith(", loss 0.25, done")
    monkeypatch.setattr(progress, "interactive", lambda console: True)
    out = io.StringIO()
    with progress_bar(Console(file=out, force_terminal=True, width=150), "hardening", 2) as advance:
        advance(1, "loss [0.5]")
    assert "loss [0.5]" in out.getvalue()


def test_heartbeat_reports_a_stage_with_no_unit_done() -> None:
    out = io.StringIO()
    lines = LineProgress("slow", 3, out, interval=0.0)
    lines.tick()
    assert out.getvalue() == "slow: 0/3 (0%), 0 s elapsed\n"


def test_markup_in_stage_names_is_printed_literally(loud: None) -> None:
    out = io.StringIO()
    with progress_bar(Console(file=out), "[bold]x[/]", 2) as advance:
        advance(2)
    assert out.getvalue().startswith("[bold]x[/]: 2/2 (100%), ")
    out = io.StringIO()
    with stage_status(Console(file=out)) as update:
        update("[red]stage[/]")
    assert out.getvalue().startswith("[red]stage[/]: ")


def test_markup_is_literal_on_a_terminal_too(loud: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "interactive", lambda console: True)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with progress_bar(console, "[bold]x[/]", 2) as advance:
        advance(2)
    assert "[bold]x[/]" in out.getvalue()
    assert "2/2" in out.getvalue()


def test_a_stage_failing_before_its_first_unit_prints_nothing(loud: None) -> None:
    """So an error is still the single ``error:`` line on stderr."""
    out = io.StringIO()
    with pytest.raises(RuntimeError), progress_bar(Console(file=out), "attacking", 10):
        raise RuntimeError("the model raised")
    with pytest.raises(RuntimeError), stage_status(Console(file=out)) as update:
        update("label sharpness")
        raise RuntimeError("the model raised")
    assert out.getvalue() == ""


def test_stages_end_when_the_next_begins(loud: None) -> None:
    out = io.StringIO()
    with stage_status(Console(file=out)) as update:
        update("label sharpness")
        update("data dimension")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("label sharpness: ") and lines[0].endswith(", done")
    assert lines[1].startswith("data dimension: ") and lines[1].endswith(", done")


def test_quiet_library_level(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "_settings", Settings(quiet=True))
    out = io.StringIO()
    with progress_bar(Console(file=out), "stage", 2) as advance:
        advance(2)
    with stage_status(Console(file=out)) as update:
        update("a")
    assert out.getvalue() == ""


def test_run_names_the_audit(loud: None) -> None:
    out = io.StringIO()
    with audit_prefix("eval", 1, 3), progress_bar(Console(file=out), "evaluating", 1) as advance:
        advance(1)
    assert out.getvalue().startswith("[1/3 eval] evaluating: 1/1 (100%)")


def test_durations() -> None:
    assert [duration(s) for s in (0.2, 35, 125, 7380)] == ["0 s", "35 s", "2 min 05 s", "2 h 03 min"]
