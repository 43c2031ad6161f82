"""What every audit declares in one place: its gateable metrics, how to read them from its JSON
results, and the headline rows every summary shows (console, HTML page, Markdown comment).

An audit is an ``Audit`` subclass registered in ``medaudit.audits.audits``; ``gate``, ``report``
and ``run`` iterate over that registry instead of naming audits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.console import RenderableType

EPS = "EPS"
"""Placeholder for the eps of eps-indexed metrics (``robust_accuracy@EPS``)."""


@dataclass(frozen=True)
class MetricInfo:
    """What a metric is and how to compare two values of it."""

    description: str
    higher_is_better: bool | None
    """None: a property of the data or features with no better direction."""
    unit_scale: bool
    """In [0, 1] (or a difference of such numbers): the default --max-regression applies."""

    @property
    def direction(self) -> str:
        if self.higher_is_better is None:
            return "none"
        return "higher" if self.higher_is_better else "lower"


@dataclass(frozen=True)
class SummaryRow:
    """One headline number of an audit, as every summary shows it."""

    label: str
    value: float | int | str | None
    digits: int = 4

    @property
    def text(self) -> str:
        """The value as shown: fixed digits for floats, a dash for missing or non-finite values."""
        value = self.value
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            return f"{value:.{self.digits}f}"
        if isinstance(value, int):
            return f"{value:,}" if abs(value) >= 10000 else str(value)
        return str(value)


def number(value: Any) -> float:
    """A JSON number as float; null, NaN, booleans and anything else as NaN (which fails every gate)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def table(value: Any) -> dict[str, Any]:
    """A JSON object, or an empty one for anything else (a foreign or partial report)."""
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class NoOptions:
    """An audit without settings of its own (``[eval]``)."""


class Audit:
    """An audit's declarations. Subclasses set ``name``, ``title`` and ``metrics`` and implement
    ``extract`` and ``summary``; both read the audit's JSON results (a dict), never its objects,
    so they work on any report, also one written elsewhere or merged from shards."""

    name: ClassVar[str]
    title: ClassVar[str]
    """Human title of the audit's report section."""
    metrics: ClassVar[dict[str, MetricInfo]]
    """Gateable metrics, keyed without the audit's prefix (``accuracy``, ``robust_accuracy@EPS``)."""
    Options: ClassVar[type] = NoOptions
    """Its settings (``medaudit.options.setting`` fields): command-line options and audit-file keys."""

    def extract(self, results: dict[str, Any]) -> dict[str, float]:
        """Every gateable number of ``results``, keyed ``<name>.<metric>`` (eps as ``format(eps, 'g')``)."""
        raise NotImplementedError

    def summary(self, results: dict[str, Any]) -> list[SummaryRow]:
        """The headline rows of ``results``."""
        raise NotImplementedError

    def tables(self, results: dict[str, Any], data_label: str) -> list[RenderableType]:
        """What the console shows for ``results`` (tables, then notes), ``data_label`` as in
        ``AuditData.describe``: the same for a single run, a ``run`` and a ``medaudit merge``."""
        return []
