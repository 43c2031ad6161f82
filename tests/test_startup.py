"""Start-up: help, version and errors found before a model is loaded must not wait for torch
(about 3 s to import on 2 cores; the whole answer is meant to come in under a second)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import fresh_cli

from medaudit.models.card import card_path_for
from medaudit.sources import input_files

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path = REPO) -> dict:
    """Run the command in a fresh interpreter; its exit code and whether torch was imported."""
    return fresh_cli(*args, cwd=cwd)[0]


@pytest.mark.parametrize(
    "args",
    [
        ["--version"],
        ["--help"],
        ["eval", "--help"],
        ["attack", "--help"],
        ["confounders", "--help"],
        ["run", "--help"],
        ["attack", "model.pt", "--no-such-flag"],
        ["run", "missing.toml"],
        ["eval", "missing.pt", "--json", "no/such/folder/out.json"],
    ],
)
def test_answers_that_need_no_model_do_not_import_torch(args: list[str], tmp_path: Path) -> None:
    outcome = run_cli(*args, cwd=tmp_path)
    assert outcome["torch"] is False, args
    assert outcome["code"] in (0, 2, None), outcome


def test_an_audit_still_loads_torch_when_it_runs(tmp_path: Path) -> None:
    """The probe itself can see torch being imported (the assertion above could fail)."""
    model = REPO / "sample_models" / "pneumoniamnist_rescnn.pt"
    outcome = run_cli("info", str(model), cwd=tmp_path)
    assert outcome == {"code": 0, "torch": True} or outcome == {"code": None, "torch": True}


def test_the_card_next_to_a_model_is_protected_without_importing_models(tmp_path: Path) -> None:
    """``input_files`` names the card as ``medaudit.models.card`` finds it (it may not import it)."""
    model = tmp_path / "net.v2.onnx"
    assert input_files(model, None) == [model, card_path_for(model)]


MODEL = str(REPO / "sample_models" / "pneumoniamnist_rescnn.pt")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["eval", MODEL, "--threshold", "2"], "--threshold"),
        (["eval", MODEL, "--confidence", "1.5"], "--confidence"),
        (["eval", MODEL, "--mean", "x"], "--mean"),
        (["eval", MODEL, "--std", "0"], "std"),
        (["eval", MODEL, "--channels", "2"], "channels"),
        (["eval", MODEL, "--dataset", "nope"], "unknown MedMNIST dataset"),
        (["eval", MODEL, "--data", "missing.npz"], "does not exist"),
        (["eval", "missing.pt"], "does not exist"),
        (["eval", MODEL, "--shard", "3/2"], "--shard"),
        (["attack", MODEL, "--eps", "2"], "outside [0, 1]"),
        (["attack", MODEL, "--eps", "1_0/255"], "got '1_0/255'"),
        (["attack", MODEL, "--step-size", "0"], "--step-size"),
        (["attack", MODEL, "--steps", "0"], "--steps"),
        (["shift", MODEL, "--severities", "9"], "--severities"),
        (["features", MODEL, "--lr", "-1"], "--lr"),
        (["features", MODEL, "--datasets", "x"], "--datasets"),
        (["intrinsic", "--dataset", "pneumoniamnist", "--k", "0"], "--k"),
        (["confounders", "probe", MODEL, "--strengths", "2"], "strengths"),
        (["confounders", "probe", MODEL, "--positions", "up"], "unknown position"),
        (["confounders", "finetune", MODEL, "--artifact", "nope"], "unknown artifact"),
        (["harden", MODEL, "--out", "hardened", "--method", "nope"], "unknown hardening method"),
        (["harden", MODEL, "--out", "hardened", "--lr", "-1"], "--lr"),
        (["harden", MODEL, "--out", "hardened", "--audit-eps", "5"], "outside [0, 1]"),
        (["harden", MODEL, "--out", "hardened", "--method", "trades", "--beta", "-1"], "--beta of trades"),
        (["harden", MODEL, "--out", "hardened", "--margin-step", "0.1"], "IMA settings"),
        (["info", "missing.pt"], "does not exist"),
    ],
)
def test_option_errors_before_the_model_do_not_import_torch(
    args: list[str], needle: str, tmp_path: Path
) -> None:
    """Every error found before a model is loaded: exit code 2, one line, and no torch (so it
    answers in well under a second)."""
    outcome, stderr = fresh_cli(*args, cwd=tmp_path)
    assert outcome == {"code": 2, "torch": False}, (args, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], stderr
