"""What every audit declares in one place: its gateable metrics, how to read them from its JSON
results, and the headline rows every summary shows (console, HTML page, Markdown comment).

An audit is an ``Audit`` subclass registered in ``medaudit.audits.audits``; ``gate``, ``report``
and ``run`` iterate over that registry instead of naming audits.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from rich.console import RenderableType

from medaudit.errors import ConfigError

if TYPE_CHECKING:
    from medaudit.sources import Prepared

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
    """A metric's JSON value as float: null (not measured) as NaN, which fails every gate.

    Anything else (text, true, a table) is a corrupt report: a ConfigError (exit 2), never a
    verdict on the model."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        shown = json.dumps(value, default=str)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise ConfigError(f"a metric's value is {shown}, not a number or null: the report is corrupt")
    return float(value)


def table(value: Any) -> dict[str, Any]:
    """A JSON object, or an empty one for anything else (a foreign or partial report)."""
    return value if isinstance(value, dict) else {}


Advance = Callable[[int], None]
"""Called with the number of units a step just finished (images, image x cell, ...)."""


class Progress(Protocol):
    """Opens one stage of progress: ``with progress("attacking", total) as advance: ...``
    (``total`` None: a stage without units)."""

    def __call__(self, label: str, total: int | None) -> AbstractContextManager[Advance]: ...


class Stages(Protocol):
    """Opens a step made of named stages without units: ``with stages() as update: update("knn")``."""

    def __call__(self) -> AbstractContextManager[Callable[[str], None]]: ...


def _ignore(_: object) -> None:
    return None


@contextmanager
def no_progress(label: str, total: int | None) -> Iterator[Advance]:
    yield _ignore


@contextmanager
def no_stages() -> Iterator[Callable[[str], None]]:
    yield _ignore


@dataclass(frozen=True)
class Context:
    """What an audit needs besides its options, model and data: the run's shared settings and
    where to report progress (the commands pass rich bars; library callers may pass nothing)."""

    batch_size: int = 256
    seed: int = 0
    data_file: Path | None = None
    """The user's own data file (``--data``), None for MedMNIST: some options depend on it."""
    sharded: bool = False
    """Only part of the images (``--shard``): what needs them all must refuse."""
    progress: Progress = field(default=no_progress)
    stages: Stages = field(default=no_stages)


class Result(Protocol):
    """What ``Audit.run`` returns: its JSON section, and optionally ``warnings()`` for the report."""

    def to_dict(self) -> dict[str, Any]: ...


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
    help: ClassVar[str] = ""
    """The command's one-paragraph help (``medaudit NAME --help``)."""
    shardable: ClassVar[str | None] = None
    """None when ``--shard`` parts merge into the whole report; else why they cannot."""

    def check(self, options: Any, context: Context) -> None:
        """Fail (``ConfigError``) on options that are wrong before the model and data are loaded."""

    def run(self, prepared: Prepared, options: Any, context: Context) -> tuple[dict[str, Any], Result]:
        """Audit ``prepared``: (the configuration record for the JSON, the result). Never prints."""
        raise NotImplementedError

    def html(self, results: dict[str, Any], data_label: str) -> str | None:
        """Its section of the HTML page (escaped HTML), None for the generic key/value view."""
        return None

    def figures(self, prepared: Prepared, result: Any) -> dict[str, bytes]:
        """PNG pictures of ``result`` (what ``run`` returned) for the HTML report, by caption:
        what the JSON cannot hold."""
        return {}

    def diagrams(self, results: dict[str, Any], data_label: str) -> dict[str, bytes]:
        """PNG charts drawn from ``results`` (the JSON) alone, by caption: its HTML section draws
        them too, so they are not ``figures``; ``--save-figures`` writes both."""
        return {}

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


def report_sections(states: dict[str, Any], base_warnings: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Each audit's JSON section from its result, and the report's warnings: the same for a
    ``run`` and for the ``merge`` of its shards."""
    sections = {name: state.to_dict() for name, state in states.items()}
    warnings = list(base_warnings)
    for state in states.values():
        warnings += state.warnings() if hasattr(state, "warnings") else []
    return sections, warnings
