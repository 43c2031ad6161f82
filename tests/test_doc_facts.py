"""Facts the docs state about the code, checked against the code so they cannot drift (#21,
stumble 9: the probe's cell count and the parameter counts in `list archs`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from medaudit.confounders.probe import ProbeConfig
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
