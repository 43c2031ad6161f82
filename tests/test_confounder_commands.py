"""``medaudit confounders`` sub-commands: probe (the default), discover, subgroups, finetune, list;
the single command's mode flags still lead to the same sub-command; ``--discover`` in a probe and
in an audit file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_one_line_error
from typer.testing import CliRunner

from medaudit.cli import app

SAMPLE = Path(__file__).resolve().parents[1] / "sample_models" / "pneumoniamnist_rescnn.pt"
SMALL_DISCOVERY = ["--steps", "2", "--fit-images", "16", "--eval-images", "24"]


def invoke(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("args", "help_of"),
    [
        (["confounders", "MODEL", "--help"], "medaudit confounders probe"),
        (["confounders", "MODEL", "--finetune", "--help"], "medaudit confounders finetune"),
        (["confounders", "MODEL", "--metadata", "m.csv", "--help"], "medaudit confounders subgroups"),
        (["confounders", "probe", "--help"], "medaudit confounders probe"),
        (["confounders", "discover", "--help"], "medaudit confounders discover"),
    ],
)
def test_the_single_commands_spellings_reach_their_sub_command(args: list[str], help_of: str) -> None:
    code, output = invoke(*args)
    assert code == 0 and f"Usage: {help_of}" in " ".join(output.split())


def test_list_needs_no_model() -> None:
    for args in (["confounders", "list"], ["confounders", "--list"]):
        code, output = invoke(*args)
        assert code == 0 and "dose_noise" in output


def test_discover_writes_regions_and_a_picture(real_env: Path, tmp_path: Path) -> None:
    out, picture = tmp_path / "d.json", tmp_path / "d.png"
    args = ["confounders", "discover", SAMPLE, "--limit", "48", *SMALL_DISCOVERY]
    code, output = invoke(*args, "--json", out, "--save-picture", picture)
    assert code == 0, output
    doc = json.loads(out.read_text())
    assert doc["config"]["mode"] == "discover"
    regions = doc["results"]["discovery"]
    assert len(regions) == 9 and {r["region"] for r in regions} >= {"top-left", "centre", "bottom-right"}
    assert all(0 <= r["flip_rate"] <= 1 for r in regions)
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_probe_with_discover_and_its_audit_file_section(real_env: Path, tmp_path: Path) -> None:
    path = tmp_path / "audit.toml"
    path.write_text(
        f'[model]\npath = "{SAMPLE}"\n[data]\nlimit = 48\n'
        '[confounders]\nartifacts = ["patch"]\nstrengths = [1.0]\npositions = ["centre"]\nresamples = 50\n'
        "discover = true\n"
    )
    out, page = tmp_path / "run.json", tmp_path / "run.html"
    code, output = invoke("run", path, "--json", out, "--html", page)
    assert code == 0, output
    results = json.loads(out.read_text())["results"]["confounders"]
    assert results["ranking"] and len(results["discovery"]) == 9
    assert "shortcut discovery" in page.read_text()
    assert_one_line_error(
        CliRunner().invoke(app, ["run", str(path), "--shard", "0/2"]), "[confounders] discover", "--shard"
    )
