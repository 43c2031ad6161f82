"""The gateable numbers of a medaudit report, under one flat, documented namespace.

A release gate and a baseline comparison must name numbers the same way whatever
command (or ``medaudit run``) produced the report, so every number that can be
gated is listed in ``METRICS`` with its direction. Eps-indexed attack metrics are
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

from medaudit.errors import ConfigError, PolicyError
from medaudit.report.schema import SCHEMA

EPS = "EPS"
"""Placeholder for the eps of eps-indexed metrics in ``METRICS`` (``attack.auc@EPS``)."""

EPS_REL_TOL = 1e-5
"""Two eps values are the same budget when they agree to this relative tolerance (6 digits)."""

NORMS = ("linf", "l2")


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


METRICS: dict[str, MetricInfo] = {
    "eval.accuracy": MetricInfo("clean accuracy (eval results.accuracy)", True, True),
    "eval.balanced_accuracy": MetricInfo(
        "mean recall over classes (eval results.balanced_accuracy)", True, True
    ),
    "eval.auc": MetricInfo("clean AUC (eval results.auc)", True, True),
    "attack.clean_accuracy": MetricInfo("accuracy on the attacked samples before attack", True, True),
    f"attack.robust_accuracy@{EPS}": MetricInfo(
        "worst-case robust accuracy at EPS (sweep record with attack 'worst-case')", True, True
    ),
    f"attack.auc@{EPS}": MetricInfo("AUC under the worst-case attack at EPS (auc_under_attack)", True, True),
    f"attack.success_rate@{EPS}": MetricInfo(
        "share of clean-correct samples broken at EPS (worst-case attack_success_rate)", False, True
    ),
    "attack.checks_failed": MetricInfo(
        "number of failed honesty checks (results.checks); gate with '== 0'", False, False
    ),
    "attack.curve_area": MetricInfo(
        "area under worst-case robust accuracy vs eps, divided by the largest eps (curve.normalised_area)",
        True,
        True,
    ),
    "shift.clean_be": MetricInfo("balanced error without corruption (summary.clean_be)", False, True),
    "shift.mean_be": MetricInfo("balanced error averaged over corruptions and severities", False, True),
    "shift.worst_be": MetricInfo(
        "balanced error of the worst corruption (summary.worst_corruption_be)", False, True
    ),
    "shift.mean_accuracy_drop": MetricInfo("mean accuracy lost to corruption", False, True),
    "shift.mean_auc_drop": MetricInfo("mean AUC lost to corruption", False, True),
    "shift.mean_normalised_be": MetricInfo(
        "mean balanced error relative to the AlexNet baseline (only when the baseline applies)", False, False
    ),
    "shift.mean_rbe": MetricInfo(
        "mean relative balanced error vs the AlexNet baseline (only when the baseline applies)", False, False
    ),
    "confounders.worst_flip_rate": MetricInfo(
        "largest share of predictions any probed artifact flips (ranking worst_flip_rate)", False, True
    ),
    "confounders.worst_auc_drop_reversed": MetricInfo(
        "largest AUC drop with an artifact on the other classes only (reversed correlation)", False, True
    ),
    "intrinsic.k_f": MetricInfo("label sharpness K_F of the data", None, False),
    "intrinsic.d_data_mle": MetricInfo("intrinsic dimension of the data, MLE", None, False),
    "intrinsic.d_data_twonn": MetricInfo("intrinsic dimension of the data, TwoNN", None, False),
    "intrinsic.d_repr_mle": MetricInfo(
        "intrinsic dimension of the model's features, MLE (with a model)", None, False
    ),
    "intrinsic.d_repr_twonn": MetricInfo(
        "intrinsic dimension of the model's features, TwoNN (with a model)", None, False
    ),
    "intrinsic.lipschitz": MetricInfo(
        "mean local Lipschitz constant of the model (model_smoothness.mean; with a model)", False, False
    ),
}

HEADLINE = (
    "eval.accuracy",
    "eval.balanced_accuracy",
    "eval.auc",
    "attack.clean_accuracy",
    f"attack.robust_accuracy@{EPS}",
    "attack.curve_area",
    "shift.clean_be",
    "shift.mean_be",
    "shift.worst_be",
    "intrinsic.k_f",
    "intrinsic.d_data_twonn",
    "intrinsic.lipschitz",
)
"""The metrics a short summary (PR comment) shows."""


# ---- reading reports ----


def load_report(path: Path) -> dict[str, Any]:
    """A medaudit JSON report from disk, refused with a one-line ConfigError if it is not one."""
    if not path.exists():
        raise ConfigError(f"report {path} does not exist")
    if path.is_dir():
        raise ConfigError(f"report {path} is a folder: give the JSON file written by --json")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"report {path} is not JSON ({exc.msg}, line {exc.lineno}): give the file written by --json"
        ) from None
    except (UnicodeDecodeError, OSError, ValueError, RecursionError) as exc:  # huge ints, deep nesting
        raise ConfigError(f"report {path} cannot be read ({exc.__class__.__name__})") from None
    check_report(doc, str(path))
    return doc


def check_report(doc: Any, name: str = "report") -> None:
    """Refuse anything that is not a medaudit/1 document with a results object."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{name} is not a medaudit report (a JSON object with schema '{SCHEMA}')")
    if doc.get("schema") != SCHEMA:
        raise ConfigError(
            f"{name} has schema {doc.get('schema')!r}, expected '{SCHEMA}': not a medaudit report"
        )
    if not isinstance(doc.get("results"), dict):
        raise ConfigError(f"{name} has no results object: not a complete medaudit report")


def sections(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Results by command: a single-command report -> {command: results}; a ``run`` report -> its results."""
    check_report(doc)
    results = doc["results"]
    if doc.get("command") == "run":
        return {name: value for name, value in results.items() if isinstance(value, dict)}
    return {str(doc.get("command")): results}


# ---- eps ----


def parse_number(text: str) -> float:
    """'0.004', '1e-3' or a fraction '1/255' -> float; ValueError when it is none of them."""
    numerator, slash, denominator = text.strip().partition("/")
    value = float(numerator) / float(denominator) if slash else float(numerator)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def format_eps(eps: float) -> str:
    return format(eps, "g")


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
        """The ``METRICS`` key this name belongs to."""
        return f"{self.base}@{EPS}" if self.eps is not None else self.base

    @property
    def info(self) -> MetricInfo | None:
        return METRICS.get(self.pattern)


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


def known_names() -> list[str]:
    return list(METRICS)


def check_known(text: str) -> MetricName:
    """The parsed name if it is in the namespace, else PolicyError naming close matches."""
    name = parse_name(text)
    if name.info is not None:
        return name
    if name.eps is None and f"{name.base}@{EPS}" in METRICS:
        raise PolicyError(f"metric '{text}' needs an eps: write {name.base}@<eps>, e.g. {name.base}@1/255")
    if name.eps is not None and name.base in METRICS:
        raise PolicyError(f"metric '{name.base}' takes no @eps: write {name.base}")
    bases = sorted({key.removesuffix(f"@{EPS}") for key in METRICS})
    close = difflib.get_close_matches(name.base, bases, n=3, cutoff=0.6)
    suffix = text.strip()[len(name.base) :]
    hint = f"did you mean {', '.join(c + suffix for c in close)}? " if close else ""
    raise PolicyError(f"unknown metric '{text}': {hint}known metrics: {', '.join(METRICS)}")


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
    """The metrics of a report in one short line: eps-indexed ones grouped with their eps."""
    if not metrics:
        return "(none: the report has no eval, attack, shift or intrinsic results)"
    plain = [key for key in metrics if "@" not in key]
    eps_bases: dict[str, list[str]] = {}
    for key in metrics:
        base, at, eps = key.partition("@")
        if at:
            eps_bases.setdefault(base, [])
            if eps not in eps_bases[base]:
                eps_bases[base].append(eps)
    parts = plain + [f"{base}@{{{', '.join(eps)}}}" for base, eps in eps_bases.items()]
    return ", ".join(parts)


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


def _num(value: Any) -> float:
    """A JSON number as float; null, NaN, booleans and anything else as NaN (which fails every gate)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _eval_metrics(results: dict[str, Any]) -> dict[str, float]:
    return {f"eval.{k}": _num(results.get(k)) for k in ("accuracy", "balanced_accuracy", "auc")}


def _attack_metrics(results: dict[str, Any]) -> dict[str, float]:
    out = {"attack.clean_accuracy": _num(results.get("clean_accuracy"))}
    sweep = results.get("sweep") if isinstance(results.get("sweep"), list) else []
    worst = [r for r in sweep if isinstance(r, dict) and r.get("attack") == "worst-case"]
    for record in sorted(worst, key=lambda r: _num(r.get("eps"))):
        eps = _num(record.get("eps"))
        if math.isnan(eps):
            continue
        tag = format_eps(eps)
        out[f"attack.robust_accuracy@{tag}"] = _num(record.get("robust_accuracy"))
        out[f"attack.auc@{tag}"] = _num(record.get("auc_under_attack"))
        out[f"attack.success_rate@{tag}"] = _num(record.get("attack_success_rate"))
    if isinstance(results.get("checks"), list):
        out["attack.checks_failed"] = float(
            sum(1 for c in results["checks"] if isinstance(c, dict) and c.get("passed") is not True)
        )
    if isinstance(results.get("curve"), dict):
        out["attack.curve_area"] = _num(results["curve"].get("normalised_area"))
    return out


def _shift_metrics(results: dict[str, Any]) -> dict[str, float]:
    summary = _dict(results.get("summary"))
    out = {
        "shift.clean_be": _num(summary.get("clean_be")),
        "shift.mean_be": _num(summary.get("mean_be")),
        "shift.worst_be": _num(summary.get("worst_corruption_be")),
        "shift.mean_accuracy_drop": _num(summary.get("mean_accuracy_drop")),
        "shift.mean_auc_drop": _num(summary.get("mean_auc_drop")),
    }
    for key in ("mean_normalised_be", "mean_rbe"):  # null when the AlexNet baseline does not apply
        if summary.get(key) is not None:
            out[f"shift.{key}"] = _num(summary[key])
    return out


def _confounder_metrics(results: dict[str, Any]) -> dict[str, float]:
    ranking = [r for r in results.get("ranking") or [] if isinstance(r, dict)]
    out = {}
    for key in ("worst_flip_rate", "worst_auc_drop_reversed"):
        values = [_num(r.get(key)) for r in ranking]
        unknown = not values or any(math.isnan(v) for v in values)  # a NaN must fail, not vanish in max()
        out[f"confounders.{key}"] = float("nan") if unknown else max(values)
    return out


def _intrinsic_metrics(results: dict[str, Any]) -> dict[str, float]:
    out = {"intrinsic.k_f": _num(_dict(results.get("label_sharpness")).get("k_f"))}
    for part in ("d_data", "d_repr"):  # d_repr is null without a model
        if isinstance(results.get(part), dict):
            out[f"intrinsic.{part}_mle"] = _num(results[part].get("mle"))
            out[f"intrinsic.{part}_twonn"] = _num(results[part].get("twonn"))
    if isinstance(results.get("model_smoothness"), dict):
        out["intrinsic.lipschitz"] = _num(results["model_smoothness"].get("mean"))
    return out


_EXTRACTORS = {
    "eval": _eval_metrics,
    "attack": _attack_metrics,
    "shift": _shift_metrics,
    "confounders": _confounder_metrics,
    "intrinsic": _intrinsic_metrics,
}


def extract_metrics(doc: dict[str, Any]) -> dict[str, float]:
    """Every gateable number of a report, keyed as in ``METRICS``; null values are NaN."""
    out: dict[str, float] = {}
    for command, results in sections(doc).items():
        if command in _EXTRACTORS:
            out.update(_EXTRACTORS[command](results))
    return out


def metric_info(key: str) -> MetricInfo:
    """The ``METRICS`` entry of an ``extract_metrics`` key."""
    base, eps = split_key(key)
    return METRICS[f"{base}@{EPS}" if eps is not None else base]


def attack_norm(doc: dict[str, Any]) -> str | None:
    """The norm of the report's attack sweep (from its records, else the config), or None."""
    attack = sections(doc).get("attack")
    if attack is None:
        return None
    for record in attack.get("sweep") or []:
        if isinstance(record, dict) and isinstance(record.get("norm"), str):
            return record["norm"]
    config = _dict(doc.get("config"))
    norm = _dict(config.get("attack")).get("norm", config.get("norm"))
    return norm if isinstance(norm, str) else None
