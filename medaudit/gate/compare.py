"""Baseline vs candidate: did any metric get worse by more than it is allowed to?

Regression is measured in the metric's own units, signed so that positive means
worse (a drop in accuracy, a rise in balanced error). The default allowance
(``--max-regression``) applies to metrics on a [0, 1] scale that have a better
direction; unbounded or direction-less metrics (intrinsic dimension, K_F, the
Lipschitz constant, ratios to the AlexNet baseline) are shown but gated only when
given their own allowance, where a direction-less metric counts any change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from medaudit.errors import ConfigError, PolicyError
from medaudit.gate.metrics import (
    attack_norm,
    check_known,
    eps_matches,
    extract_metrics,
    find_key,
    metric_info,
    parse_number,
    resolve,
    sections,
    split_key,
)

SLACK = 1e-12
"""Float noise tolerated on top of an allowance, so that a regression of exactly the allowance passes."""


@dataclass
class Row:
    """One metric of the comparison. ``passed`` is None when the metric is shown but not gated."""

    metric: str
    baseline: float | None
    candidate: float | None
    direction: str
    allowed: float | None = None
    passed: bool | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def difference(self) -> float | None:
        if self.baseline is None or self.candidate is None:
            return None
        return self.candidate - self.baseline

    @property
    def regression(self) -> float | None:
        """How much worse the candidate is (negative: better); None without both values."""
        diff = self.difference
        if diff is None or math.isnan(diff):
            return None
        if self.direction == "higher":
            return -diff
        if self.direction == "lower":
            return diff
        return abs(diff)

    @property
    def verdict(self) -> str:
        return {True: "pass", False: "FAIL", None: "not gated"}[self.passed]

    @property
    def name(self) -> str:
        return self.metric

    @property
    def message(self) -> str:
        """Why it failed, for JUnit: ``regressed by 0.041 (allowed 0.02)``."""
        if self.regression is None:
            return "; ".join(self.notes)
        text = f"baseline {self.baseline:.4g}, candidate {self.candidate:.4g}: "
        text += (
            f"worse by {self.regression:.4g}" if self.regression > 0 else f"better by {-self.regression:.4g}"
        )
        if self.allowed is not None:
            text += f" (allowed {self.allowed:g})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "baseline": self.baseline,
            "candidate": self.candidate,
            "difference": self.difference,
            "direction": self.direction,
            "regression": self.regression,
            "allowed": self.allowed,
            "passed": self.passed,
            "verdict": self.verdict,
            "notes": self.notes,
        }


def parse_allow(items: list[str] | None) -> dict[str, float]:
    """``--allow METRIC=AMOUNT`` options -> {metric: amount}; ConfigError on a malformed one."""
    out: dict[str, float] = {}
    for item in items or []:
        metric, eq, amount = item.partition("=")
        if not eq or not metric.strip():
            raise ConfigError(f"--allow takes METRIC=AMOUNT, e.g. eval.auc=0.05, got '{item}'")
        try:
            value = parse_number(amount)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"--allow {item}: '{amount}' is not a number") from None
        if value < 0:
            raise ConfigError(
                f"--allow {item}: the allowance must be >= 0 (it is how much worse is accepted)"
            )
        out[metric.strip()] = value
    return out


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def _match(key: str, metrics: dict[str, float]) -> str | None:
    """The key of ``metrics`` for the same metric (eps compared with a tolerance)."""
    if key in metrics:
        return key
    base, eps = split_key(key)
    if eps is None:
        return None
    for other in metrics:
        other_base, other_eps = split_key(other)
        if other_base == base and other_eps is not None and eps_matches(eps, other_eps):
            return other
    return None


def _allowance(key: str, overrides: dict[str, float], max_regression: float) -> float | None:
    for text, amount in overrides.items():
        if find_key(check_known(text), {key: 0.0}) is not None:
            return amount
    info = metric_info(key)
    if info.unit_scale and info.higher_is_better is not None:
        return max_regression
    return None


def compare(
    baseline_doc: dict[str, Any],
    candidate_doc: dict[str, Any],
    max_regression: float = 0.02,
    overrides: dict[str, float] | None = None,
    names: tuple[str, str] = ("baseline", "candidate"),
) -> list[Row]:
    """One row per metric in either report; metrics in both are gated against their allowance.

    PolicyError (exit 2, no verdict) when a metric named in ``overrides`` is missing from either
    report, or one the baseline gates is missing from the candidate: a comparison never passes
    on a metric that was not measured (``names``, the reports' files, say which)."""
    if max_regression < 0 or not math.isfinite(max_regression):
        raise ConfigError(f"--max-regression must be a finite number >= 0, got {max_regression}")
    overrides = overrides or {}
    base, cand = extract_metrics(baseline_doc), extract_metrics(candidate_doc)
    both = {**{k: None for k in base}, **{k: None for k in cand}}
    for text in overrides:  # a typo or an absent metric in --allow would silently gate nothing
        check_known(text)
        lacking: list[str] = []
        for role, doc, metrics, name in (
            ("baseline", baseline_doc, base, names[0]),
            ("candidate", candidate_doc, cand, names[1]),
        ):
            try:
                resolve(text, metrics, attack_norm(doc))
            except PolicyError as exc:
                lacking.append(f"the {role} report {name}: {exc}")
        if len(lacking) == 2:
            raise PolicyError(f"--allow {text}: no such metric in either report ({names[0]}, {names[1]})")
        if lacking:
            raise PolicyError(f"--allow {text}: {lacking[0]}")
    norms = attack_norm(baseline_doc), attack_norm(candidate_doc)
    norm_differs = None not in norms and norms[0] != norms[1]
    rows: list[Row] = []
    unmeasured: list[str] = []
    seen: set[str] = set()
    for key in both:
        if key in seen:
            continue
        b_key, c_key = _match(key, base), _match(key, cand)
        seen.update(k for k in (b_key, c_key) if k is not None)
        info = metric_info(key)
        row = Row(
            metric=c_key or key,
            baseline=None if b_key is None else _nan_to_none(base[b_key]),
            candidate=None if c_key is None else _nan_to_none(cand[c_key]),
            direction=info.direction,
        )
        rows.append(row)
        if b_key is None or c_key is None:
            row.notes.append("only in the baseline" if c_key is None else "only in the candidate")
            if c_key is None and _allowance(key, overrides, max_regression) is not None:
                unmeasured.append(key)
            continue
        if norm_differs and "@" in key:
            row.notes.append(f"not comparable: baseline attacked with {norms[0]}, candidate with {norms[1]}")
            continue
        row.allowed = _allowance(key, overrides, max_regression)
        if row.baseline is None:
            row.notes.append("no baseline value (null)")
            row.allowed = None
            continue
        if row.allowed is None:
            row.notes.append("not gated by default: give --allow METRIC=AMOUNT to gate it")
            continue
        if row.candidate is None:
            row.notes.append("no candidate value (null): counts as a regression")
            row.passed = False
            continue
        row.passed = (row.regression or 0.0) <= row.allowed + SLACK
    if unmeasured:
        missing = sorted({key.split(".", 1)[0] for key in unmeasured} - set(sections(candidate_doc)))
        why = f" (it has no {', '.join(missing)} results)" if missing else ""
        raise PolicyError(
            f"the candidate report {names[1]} lacks {len(unmeasured)} metric(s) the baseline gates"
            f"{why}: {', '.join(unmeasured)}; audit the candidate as the baseline was (same audits, same eps)"
        )
    return rows


def comparability_warnings(baseline_doc: dict[str, Any], candidate_doc: dict[str, Any]) -> list[str]:
    """Differences between the two audits that make a metric difference mean something else."""
    out = []
    b_data, c_data = baseline_doc.get("data") or {}, candidate_doc.get("data") or {}
    for key, what in (
        ("sha256", "data files"),
        ("split", "splits"),
        ("size", "image sizes"),
        ("n", "sample counts"),
    ):
        if b_data.get(key) != c_data.get(key):
            shown = ["not recorded" if doc.get(key) is None else doc.get(key) for doc in (b_data, c_data)]
            out.append(f"the reports audited different {what} ({shown[0]} vs {shown[1]})")
    if baseline_doc.get("seed") != candidate_doc.get("seed"):
        out.append(
            f"the reports used different seeds ({baseline_doc.get('seed')} vs {candidate_doc.get('seed')})"
        )
    b_norm, c_norm = attack_norm(baseline_doc), attack_norm(candidate_doc)
    if None not in (b_norm, c_norm) and b_norm != c_norm:
        out.append(
            f"the attack sweeps used different norms ({b_norm} vs {c_norm}): eps metrics are not gated"
        )
    missing = sorted(set(sections(baseline_doc)) - set(sections(candidate_doc)))
    if missing:
        out.append(
            f"the candidate report has no {', '.join(missing)} results: those metrics are not compared"
        )
    return out
