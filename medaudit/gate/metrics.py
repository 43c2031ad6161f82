"""The gateable numbers of a medaudit report, under one flat, documented namespace.

A release gate and a baseline comparison must name numbers the same way whatever
command (or ``medaudit run``) produced the report, so every number that can be
gated is declared, with its direction, by its audit (``medaudit.audits``) and
collected by ``known_metrics``. Eps-indexed attack metrics are
written ``attack.robust_accuracy@0.00392157`` (eps with ``format(eps, "g")``);
lookups accept any spelling of the same eps (``@1/255``, ``@0.0039215686``) and an
optional norm (``@linf:1/255``).
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medaudit.attacks.plan import NORMS
from medaudit.audits import EPS, MetricInfo, audits
from medaudit.audits.base import table
from medaudit.document import check_report, sections
from medaudit.errors import ConfigError, PolicyError

EPS_REL_TOL = 1e-5
"""Two eps values are the same budget when they agree to this relative tolerance (6 digits)."""


def known_metrics() -> dict[str, MetricInfo]:
    """Every gateable metric, ``<audit>.<metric>``, as each registered audit declares it."""
    return {f"{name}.{key}": info for name in audits for key, info in audits.get(name).metrics.items()}


# ---- reading reports ----


def load_report(path: Path) -> dict[str, Any]:
    """A medaudit JSON report from disk, refused with a one-line ConfigError if it is not one."""
    if not path.exists():
        raise ConfigError(f"report {path} does not exist")
    if path.is_dir():
        raise ConfigError(f"report {path} is a folder: give the JSON file written by --json")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except ConfigError as exc:  # from _refuse_constant
        raise ConfigError(f"report {path} {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"report {path} is not JSON ({exc.msg}, line {exc.lineno}): give the file written by --json"
        ) from None
    except (UnicodeDecodeError, OSError, ValueError, RecursionError) as exc:  # huge ints, deep nesting
        raise ConfigError(f"report {path} cannot be read ({exc.__class__.__name__})") from None
    check_report(doc, str(path))
    try:
        extract_metrics(doc)  # every metric a number or null, so no corrupt value reaches a verdict
    except ConfigError as exc:
        raise ConfigError(f"report {path}: {exc}") from None
    return doc


def _refuse_constant(name: str) -> float:
    """NaN and Infinity are not JSON, and medaudit writes null for a value it could not measure:
    read as numbers, inf would pass ``>=`` rules."""
    raise ConfigError(
        f"holds {name}, which medaudit never writes (null means not measured): the report is corrupt"
    )


# ---- eps ----


def parse_number(text: str) -> float:
    """'0.004', '1e-3' or a fraction '1/255' -> float; ValueError when it is none of them."""
    numerator, slash, denominator = text.strip().partition("/")
    value = float(numerator) / float(denominator) if slash else float(numerator)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


_NAME = re.compile(r"^(?P<base>[A-Za-z_][\w.]*)(?:@(?:(?P<norm>[A-Za-z0-9]+):)?(?P<eps>[^@:]+))?$")


@dataclass(frozen=True)
class MetricName:
    """A parsed metric name: ``base`` (``attack.auc``), and for eps-indexed metrics eps and norm."""

    text: str
    base: str
    eps: float | None = None
    norm: str | None = None

    @property
    def pattern(self) -> str:
        """The ``known_metrics`` key this name belongs to."""
        return f"{self.base}@{EPS}" if self.eps is not None else self.base

    @property
    def info(self) -> MetricInfo | None:
        return known_metrics().get(self.pattern)


def parse_name(text: str) -> MetricName:
    """Split a metric name; PolicyError when it cannot be a metric name at all."""
    match = _NAME.match(text.strip())
    if match is None:
        raise PolicyError(
            f"'{text}' is not a metric name: write e.g. eval.auc or attack.robust_accuracy@1/255"
        )
    eps = None
    if match["eps"] is not None:
        try:
            eps = parse_number(match["eps"])
        except (ValueError, ZeroDivisionError):
            raise PolicyError(
                f"'{text}': eps '{match['eps']}' is not a number or fraction (e.g. @0.004 or @1/255)"
            ) from None
    norm = match["norm"].lower() if match["norm"] else None
    if norm is not None and norm not in NORMS:
        raise PolicyError(f"'{text}': norm '{match['norm']}' is not one of {', '.join(NORMS)}")
    return MetricName(text.strip(), match["base"], eps, norm)


def check_known(text: str) -> MetricName:
    """The parsed name if it is in the namespace, else PolicyError naming close matches."""
    name = parse_name(text)
    if name.info is not None:
        return name
    metrics = known_metrics()
    if name.eps is None and f"{name.base}@{EPS}" in metrics:
        raise PolicyError(f"metric '{text}' needs an eps: write {name.base}@<eps>, e.g. {name.base}@1/255")
    if name.eps is not None and name.base in metrics:
        raise PolicyError(f"metric '{name.base}' takes no @eps: write {name.base}")
    bases = sorted({key.removesuffix(f"@{EPS}") for key in metrics})
    close = difflib.get_close_matches(name.base, bases, n=3, cutoff=0.6)
    suffix = text.strip()[len(name.base) :]
    hint = f"did you mean {', '.join(c + suffix for c in close)}? " if close else ""
    raise PolicyError(f"unknown metric '{text}': {hint}known metrics: {', '.join(metrics)}")


def eps_matches(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=EPS_REL_TOL, abs_tol=1e-12)


def split_key(key: str) -> tuple[str, float | None]:
    """A key of ``extract_metrics`` -> (base, eps)."""
    base, at, eps = key.partition("@")
    return base, (float(eps) if at else None)


def find_key(name: MetricName, metrics: dict[str, float]) -> str | None:
    """The key of ``metrics`` this name refers to (eps compared with a tolerance), or None."""
    if name.eps is None:
        return name.base if name.base in metrics else None
    for key in metrics:
        base, eps = split_key(key)
        if base == name.base and eps is not None and eps_matches(eps, name.eps):
            return key
    return None


def describe_available(metrics: dict[str, float]) -> str:
    """The metrics of a report in one line, each as a name a rule or --allow accepts when copied."""
    if not metrics:
        return "(none: the report has no eval, attack, shift or intrinsic results)"
    return ", ".join([key for key in metrics if "@" not in key] + [key for key in metrics if "@" in key])


def resolve(text: str, metrics: dict[str, float], norm: str | None = None) -> str:
    """The key of ``metrics`` a policy or --allow name refers to, or PolicyError saying why there is none."""
    name = check_known(text)
    if name.norm is not None and norm is not None and name.norm != norm:
        raise PolicyError(
            f"metric '{text}' asks for the {name.norm} norm but the report's attack sweep is {norm}"
        )
    key = find_key(name, metrics)
    if key is not None:
        return key
    section = name.base.split(".", 1)[0]
    if not any(k.startswith(section + ".") for k in metrics):
        reason = f"the report has no {section} results"
    elif name.eps is not None:
        present = [k.partition("@")[2] for k in metrics if k.startswith(name.base + "@")]
        reason = f"the attack sweep has eps {', '.join(present) or '(none)'}"
    else:
        reason = "it was not measured (null in the report)"
    close = difflib.get_close_matches(name.text, list(metrics), n=3, cutoff=0.6)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise PolicyError(
        f"metric '{text}' is not in this report: {reason}{hint}; available: {describe_available(metrics)}"
    )


# ---- extraction ----


def extract_metrics(doc: dict[str, Any]) -> dict[str, float]:
    """Every gateable number of a report, keyed as in ``known_metrics``; null values are NaN."""
    out: dict[str, float] = {}
    for command, results in sections(doc).items():
        if command in audits:
            out.update(audits.get(command).extract(results))
    return out


def metric_info(key: str) -> MetricInfo:
    """The ``known_metrics`` entry of an ``extract_metrics`` key."""
    base, eps = split_key(key)
    return known_metrics()[f"{base}@{EPS}" if eps is not None else base]


def attack_norm(doc: dict[str, Any]) -> str | None:
    """The norm of the report's attack sweep (from its records, else the config), or None."""
    attack = sections(doc).get("attack")
    if attack is None:
        return None
    for record in attack.get("sweep") or []:
        if isinstance(record, dict) and isinstance(record.get("norm"), str):
            return record["norm"]
    config = table(doc.get("config"))
    norm = table(config.get("attack")).get("norm", config.get("norm"))
    return norm if isinstance(norm, str) else None
