"""Output that is not a terminal (a CI log, a pipe, make) keeps every digit of a table."""

from __future__ import annotations

import pytest
from rich.table import Table

from medaudit.commands.common import LOG_WIDTH, stderr_console


def test_tables_are_not_cut_to_80_columns_without_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    console = stderr_console()
    assert not console.is_terminal and console.width == LOG_WIDTH
    table = Table(*(f"column {i}" for i in range(8)))
    table.add_row(*(f"0.{i}23456789" for i in range(8)))
    console.print(table)
    printed = capsys.readouterr().err
    assert all(f"0.{i}23456789" in printed for i in range(8)) and "…" not in printed


def test_columns_still_sets_the_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "90")
    assert stderr_console().width == 90
