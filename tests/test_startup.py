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
