"""Gate policies: absolute thresholds on report metrics, read from TOML.

A policy is a ``[gate]`` table mapping a metric name to a rule::

    [gate]
    "eval.auc" = ">= 0.9"
    "shift.mean_be" = "<= 0.25"
    "attack.robust_accuracy@1/255" = ">= 0.7"
    "eval.balanced_accuracy" = { min = 0.85 }
    "intrinsic.lipschitz" = { max = 800 }
    "attack.clean_accuracy" = [">= 0.8", "<= 1"]

Operators: ``>=``, ``<=``, ``>``, ``<``, ``==`` (to 1e-9); thresholds are numbers
or fractions. Unquoted dotted keys (``eval.auc = ">= 0.9"``, or a ``[gate.eval]``
table) are TOML nesting and mean the same. A null or NaN value fails its rule:
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
from medaudit.gate.metrics import check_known, parse_number, resolve

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


def load_policy(source: Path | str | Mapping[str, Any]) -> list[Rule]:
    """Rules from a TOML file, a parsed TOML document with a ``gate`` table, or the gate table itself.

    Metric names are checked against the namespace here, so a typo fails before an audit runs.
    """
    if isinstance(source, Mapping):
        table = source["gate"] if isinstance(source.get("gate"), Mapping) else source
        where = "the gate table"
    else:
        path = Path(source)
        doc = read_toml(path)
        if not isinstance(doc.get("gate"), Mapping):
            # no square brackets here: the CLI prints errors as rich markup, which would eat '[gate]'
            raise PolicyError(
                f'policy {path} has no gate table: put the rules in one, e.g. gate = {{ "eval.auc" = ">= 0.9" }}'
            )
        table, where = doc["gate"], f"policy {path}"
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
