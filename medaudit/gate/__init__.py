"""Release gates on medaudit reports: absolute thresholds (a policy) and regressions against a baseline.

Reports are read, never produced, here: gating is separate from auditing so that a
CI job can gate the JSON of an audit that ran elsewhere (or earlier).
"""

from medaudit.gate.compare import Row, comparability_warnings, compare, parse_allow
from medaudit.gate.metrics import (
    MetricInfo,
    extract_metrics,
    known_metrics,
    load_report,
    sections,
)
from medaudit.gate.policy import Rule, Verdict, evaluate, load_policy

__all__ = [
    "MetricInfo",
    "Row",
    "Rule",
    "Verdict",
    "comparability_warnings",
    "compare",
    "evaluate",
    "extract_metrics",
    "known_metrics",
    "load_policy",
    "load_report",
    "parse_allow",
    "sections",
]
