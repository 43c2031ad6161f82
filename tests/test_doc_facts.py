"""Facts the docs state about the code, checked against the code so they cannot drift (#21,
stumble 9: the probe's cell count and the parameter counts in `list archs`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medaudit.cli import app
from medaudit.confounders.config import ProbeConfig
from medaudit.registries import architectures

REPO = Path(__file__).resolve().parents[1]


def test_the_default_probe_cell_count_in_the_docs_is_the_codes() -> None:
    cells = len(ProbeConfig().cells)
    text = (REPO / "docs" / "confounders.md").read_text()
    stated = {int(n) for n in re.findall(r"(\d+)\s+cells", text)}
    assert stated == {cells}, stated


@pytest.mark.parametrize("name", ["rescnn", "smallcnn"])
def test_parameter_counts_in_list_archs_are_the_built_networks(name: str) -> None:
    """'about 0.31 M' / 'about 100 k' must round the real count (1 channel, 2 classes)."""
    description = architectures.description(name)
    match = re.search(r"about ([\d.]+) ?(M|k) parameters", description)
    assert match, description
    stated = float(match.group(1)) * (1e6 if match.group(2) == "M" else 1e3)
    network = architectures.get(name)(1, 2)
    count = sum(p.numel() for p in network.parameters())
    assert abs(count - stated) / count < 0.1, (name, count, description)


def test_the_readme_quick_start_rows_are_real_output(
    real_env: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's `info` and `eval` rows are rows of a real run's tables (its `attack` row takes a
    minute of attack and is checked by hand; benchmarks/RESULTS-attack.md has the same run)."""
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.chdir(REPO)  # the README's relative path: the info table's widths depend on it
    model = "sample_models/pneumoniamnist_rescnn.pt"
    shown: set[str] = set()
    for args in (["info", model], ["eval", model]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        shown |= {line.rstrip() for line in result.output.splitlines()}
    readme = (REPO / "README.md").read_text()
    block = readme.split("$ medaudit info", 1)[1].split("$ medaudit attack", 1)[0]
    rows = [line.rstrip() for line in block.splitlines() if line.startswith("│")]
    assert len(rows) == 10, rows
    assert [row for row in rows if row not in shown] == []
