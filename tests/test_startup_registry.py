"""Start-up of the answers that need a registry: ``medaudit list`` and the option errors found
before a model is loaded read the declarations in ``medaudit/registries.py`` and must not wait
for torch (about 3 s to import on 2 cores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import fresh_cli

from medaudit.errors import ConfigError
from medaudit.registries import BUILT_IN
from medaudit.registry import Registry, describe

REPO = Path(__file__).resolve().parents[1]
MODEL = str(REPO / "sample_models" / "pneumoniamnist_rescnn.pt")


@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["list", "archs"],
        ["list", "attacks"],
        ["list", "corruptions"],
        ["list", "artifacts"],
        ["list", "methods"],
        ["list", "--help"],
        ["confounders", "list"],
    ],
)
def test_list_does_not_import_torch(args: list[str], tmp_path: Path) -> None:
    outcome, _ = fresh_cli(*args, cwd=tmp_path)
    assert outcome == {"code": 0, "torch": False} or outcome == {"code": None, "torch": False}, args


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["list", "nope"], "cannot list 'nope'"),
        (["attack", MODEL, "--attack", "nope"], "unknown attack 'nope'"),
        (["attack", MODEL, "--attack", "pgd,nope"], "unknown attack 'nope'"),
        (["attack", MODEL, "--eps", "nope"], "--eps takes numbers"),
        (["shift", MODEL, "--corruptions", "nope"], "unknown corruption 'nope'"),
        (["attack", MODEL, "--arch", "rescnm"], "Did you mean rescnn"),  # any format: never ignored
    ],
)
def test_registry_errors_before_the_model_do_not_import_torch(
    args: list[str], needle: str, tmp_path: Path
) -> None:
    """A configuration error: exit code 2 (README), one line, no traceback, and no torch."""
    outcome, stderr = fresh_cli(*args, cwd=tmp_path)
    assert outcome == {"code": 2, "torch": False}, (args, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], stderr
    assert "Traceback" not in stderr


def test_an_audit_files_unknown_arch_fails_before_torch(tmp_path: Path) -> None:
    (tmp_path / "audit.toml").write_text(f'[model]\npath = "{MODEL}"\narch = "rescnm"\n[eval]\n')
    outcome, stderr = fresh_cli("run", "audit.toml", cwd=tmp_path)
    assert outcome == {"code": 2, "torch": False}, stderr
    assert "[model] arch" in stderr and "Did you mean rescnn" in stderr


@pytest.mark.parametrize("what", sorted(BUILT_IN))
def test_declared_descriptions_are_the_implementations_own(what: str) -> None:
    """Each declaration's description is what the imported entry says of itself (a docstring's
    first line or the decorator's description), so the two cannot drift apart."""
    registry = BUILT_IN[what]
    for name in registry:
        declared = registry.description(name)
        assert declared and "\n" not in declared, name
        assert describe(registry.get(name)) == declared, name


def test_declared_entries_are_listed_and_checked_without_importing() -> None:
    registry: Registry[object] = Registry("widget")
    registry.declare("dumps", "no_such_module_for_medaudit", "writes JSON")
    registry.register("loads", "no_such_module_for_medaudit:loads", "reads JSON")
    assert registry.names() == ["dumps", "loads"]
    assert registry.description("dumps") == "writes JSON"
    assert registry.description("loads") == "reads JSON"
    registry.check("dumps")
    with pytest.raises(ConfigError, match=r"unknown widget 'dump'\. Did you mean dumps"):
        registry.check("dump")


def test_a_declared_entry_is_filled_by_its_module() -> None:
    """``declare``: importing the module registers the object; the declaration is not a duplicate,
    a second registration is."""
    registry: Registry[object] = Registry("widget")
    registry.declare("dumps", "json", "writes JSON")
    registry.register("dumps", json.dumps)  # what the declared module's decorator does
    assert registry.get("dumps") is json.dumps
    with pytest.raises(ValueError, match="already registered"):
        registry.register("dumps", json.loads)


def test_a_module_that_does_not_register_its_declaration_is_a_bug() -> None:
    registry: Registry[object] = Registry("widget")
    registry.declare("dumps", "json", "writes JSON")
    with pytest.raises(RuntimeError, match="did not register widget 'dumps'"):
        registry.get("dumps")
