"""The audits, one module each, in a registry that gate, report and run iterate over."""

from __future__ import annotations

from medaudit.audits.attack import AttackAudit
from medaudit.audits.base import EPS, Audit, MetricInfo, SummaryRow
from medaudit.audits.confounders import ConfoundersAudit
from medaudit.audits.evaluation import EvalAudit
from medaudit.audits.features import FeaturesAudit
from medaudit.audits.intrinsic import IntrinsicAudit
from medaudit.audits.shift import ShiftAudit
from medaudit.registry import Registry

__all__ = ["EPS", "Audit", "MetricInfo", "SummaryRow", "audits"]

audits: Registry[Audit] = Registry("audit")
"""Name -> audit, in the order a ``run`` report lists them."""
for _audit in (
    EvalAudit(),
    AttackAudit(),
    ShiftAudit(),
    ConfoundersAudit(),
    IntrinsicAudit(),
    FeaturesAudit(),
):
    audits.register(_audit.name, _audit)
