"""Gate policies: absolute thresholds on report metrics, read from TOML.

A policy maps a metric name to a rule, in a ``[gate]`` table (as in the audit file) or,
in a policy file without one, at the top level (``"eval.auc" = ">= 0.9"`` alone is a policy)::

    [gate]
    "eval.auc" = ">= 0.9"
    "shift.mean_be" = "<= 0.25"
    "attack.robust_accuracy@1/255" = ">= 0.7"
    "eval.balanced_accuracy" = { min = 0.85 }
    "intrinsic.lipschitz" = { max = 800 }
    "attack.clean_accuracy" = [">= 0.8", "<= 1"]

Operators: ``>=``, ``<=``, ``>``, ``<``, ``==`` (to 1e-9); thresholds are numbers
or fractions. Unquoted dotted keys (``eval.auc = ">= 0.9"``, or a ``[gate.eval]``
table, or ``[eval]`` in a file without ``[gate]``) are TOML nesting and mean the same. A null or NaN value fails its rule:
a release gate never passes on a number that was not measured.
"""

from __future__ import annotations

import math
import operator
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medaudit.errors import PolicyError
from medaudit.gate.metrics import check_known, known_metrics, parse_number, resolve

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (tomli is a dependency there)
    import tomli as tomllib


def _equal(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": _equal,
}
NEGATION = {">=": "<", "<=": ">", ">": "<=", "<": ">=", "==": "!="}
TABLE_KEYS = {"min": ">=", "max": "<="}

_RULE = re.compile(r"^\s*(>=|<=|==|>|<)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Rule:
    """One threshold: ``metric op threshold``; ``text`` is how the policy wrote it (for messages)."""

    metric: str
    op: str
    threshold: float
    text: str

    @property
    def name(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "op": self.op, "threshold": self.threshold}


@dataclass(frozen=True)
class Verdict:
    """A rule checked against a report: the value found (NaN when null) and whether it passed."""

    rule: Rule
    key: str
    value: float
    passed: bool

    @property
    def metric(self) -> str:
        return self.rule.metric

    @property
    def op(self) -> str:
        return self.rule.op

    @property
    def threshold(self) -> float:
        return self.rule.threshold

    @property
    def name(self) -> str:
        return self.rule.name

    @property
    def message(self) -> str:
        """Why it failed, for JUnit and tables: ``value 0.41 < 0.5``."""
        if math.isnan(self.value):
            return f"no value for {self.key} (null or NaN in the report): a gate never passes on it"
        if self.passed:
            return f"value {self.value:.4g} {self.op} {self.threshold:g}"
        return f"value {self.value:.4g} {NEGATION[self.op]} {self.threshold:g}"

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.rule.to_dict(),
            "key": self.key,
            "value": self.value,
            "passed": self.passed,
            "message": self.message,
        }


def _threshold(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PolicyError(f"rule {where}: the threshold must be a number, got {value!r}")
    try:
        number = parse_number(value) if isinstance(value, str) else float(value)
    except (ValueError, ZeroDivisionError):
        raise PolicyError(f"rule {where}: threshold {value!r} is not a finite number or fraction") from None
    if not math.isfinite(number):
        raise PolicyError(f"rule {where}: threshold {value!r} is not a finite number")
    return number


def parse_rule(metric: str, spec: Any) -> list[Rule]:
    """One policy entry -> its rules (a table with min and max, or a list, gives several)."""
    where = f"'{metric}' = {spec!r}"
    if isinstance(spec, str):
        match = _RULE.match(spec)
        if match is None:
            raise PolicyError(
                f'rule {where} is malformed: write an operator and a number, e.g. ">= 0.9" or "< 0.05"'
            )
        return [Rule(metric, match[1], _threshold(match[2], where), spec)]
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - set(TABLE_KEYS))
        if unknown or not spec:
            raise PolicyError(
                f"rule {where} is malformed: a table takes min and/or max, e.g. {{ min = 0.9 }}"
            )
        return [Rule(metric, TABLE_KEYS[k], _threshold(v, where), f"{k} = {v}") for k, v in spec.items()]
    if isinstance(spec, list) and spec:
        return [rule for item in spec for rule in parse_rule(metric, item)]
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        raise PolicyError(
            f'rule {where} has no operator: write ">= {spec}" or "<= {spec}" (or {{ min = {spec} }})'
        )
    raise PolicyError(f'rule {where} is malformed: write e.g. ">= 0.9" or {{ min = 0.9 }}')


def _is_metric(name: str) -> bool:
    try:
        check_known(name)
    except PolicyError:
        return False
    return True


def _flatten(table: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """TOML turns unquoted ``eval.auc`` into nested tables; join them back into metric names."""
    out = []
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and not _is_metric(name):
            out.extend(_flatten(value, name + "."))
        else:
            out.append((name, value))
    return out


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a dict; PolicyError for a missing or invalid file."""
    if not path.exists():
        raise PolicyError(f"policy {path} does not exist")
    if path.is_dir():
        raise PolicyError(f"policy {path} is a folder: give a TOML file")
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"policy {path} is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"policy {path} cannot be read ({exc.__class__.__name__})") from None


def _sections() -> set[str]:
    """The first part of every metric name (the audits): the tables a top-level policy may hold."""
    return {name.split(".")[0] for name in known_metrics()}


def policy_table(path: Path) -> Mapping[str, Any]:
    """The rules of a policy file: its ``[gate]`` table, or, without one, the whole file.

    PolicyError when the file mixes the two (a gate table and anything outside it) or, without
    a gate table, holds a table that is not a section of metric names (e.g. an audit file's [model]).
    """
    doc = read_toml(path)
    # no square brackets in messages: they read like rich markup to anyone quoting them
    if "gate" in doc:
        if not isinstance(doc["gate"], Mapping):
            raise PolicyError(
                f'policy {path}: gate must be a table of rules, e.g. gate = {{ "eval.auc" = ">= 0.9" }}'
            )
        outside = [key for key in doc if key != "gate"]
        if outside:
            raise PolicyError(
                f"policy {path} mixes a gate table with keys outside it ({', '.join(outside)}): put every rule "
                'in the gate table, or drop the gate table and write the rules at the top level ("eval.auc" = ">= 0.9")'
            )
        return doc["gate"]
    sections = _sections()
    others = [
        key
        for key, value in doc.items()
        if isinstance(value, Mapping) and key not in sections and not _is_metric(key)
    ]
    if others:
        raise PolicyError(
            f"policy {path} has no gate table, and {'its table' if len(others) == 1 else 'its tables'} "
            f"{', '.join(others)} {'holds' if len(others) == 1 else 'hold'} no rules: write the rules at the top "
            f'level ("eval.auc" = ">= 0.9") or all in a gate table; other tables may only be metric sections '
            f"({', '.join(sorted(sections))})"
        )
    return doc


def load_policy(source: Path | str | Mapping[str, Any]) -> list[Rule]:
    """Rules from a TOML file (``policy_table``), a parsed TOML document with a ``gate`` table,
    or the rules themselves.

    Metric names are checked against the namespace here, so a typo fails before an audit runs.
    """
    if isinstance(source, Mapping):
        table = source["gate"] if isinstance(source.get("gate"), Mapping) else source
        where = "the gate table"
    else:
        path = Path(source)
        table, where = policy_table(path), f"policy {path}"
    entries = _flatten(table)
    if not entries:
        raise PolicyError(f'{where} has no rules: add e.g. "eval.auc" = ">= 0.9"')
    rules = []
    for metric, spec in entries:
        check_known(metric)
        rules.extend(parse_rule(metric, spec))
    return rules


def check(rule: Rule, value: float) -> bool:
    """Whether a value satisfies a rule; NaN never does."""
    return not math.isnan(value) and OPS[rule.op](value, rule.threshold)


def evaluate(rules: list[Rule], metrics: dict[str, float], norm: str | None = None) -> list[Verdict]:
    """Check every rule; PolicyError (before any verdict) when a rule names a metric the report lacks."""
    keys = [resolve(rule.metric, metrics, norm) for rule in rules]
    return [
        Verdict(rule, key, metrics[key], check(rule, metrics[key]))
        for rule, key in zip(rules, keys, strict=True)
    ]
