"""``confounders``: how far synthetic artifacts (tags, frames, filters, noise) move predictions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.console import RenderableType

from medaudit.audits.base import Audit, MetricInfo, SummaryRow, number
from medaudit.options import setting

PANEL = "Confounders"


@dataclass(frozen=True)
class ProbeOptions:
    """``--artifacts`` ... on the command line, ``[confounders]`` in the audit file."""

    artifacts: str | None = setting(
        None,
        "Comma list of artifacts (default: every artifact but stamp); see --list.",
        panel=PANEL,
        listed=True,
    )
    strengths: str = setting("0.25,0.5,1", "Strengths in (0, 1], comma separated.", panel=PANEL, listed=True)
    positions: str | None = setting(
        None,
        "Positions probed for tag, patch and stamp (default: the four corners and the centre).",
        panel=PANEL,
        listed=True,
    )
    positive_class: str | None = setting(
        None,
        "Class (name or index) whose other images get the artifact in the reversed test (default: the last class).",
        panel=PANEL,
        listed=True,
    )


def _worst(results: dict[str, Any], key: str) -> float:
    """The largest value over the ranking; NaN if any is unknown (a NaN must fail, not vanish in max())."""
    values = [number(r.get(key)) for r in results.get("ranking") or [] if isinstance(r, dict)]
    return math.nan if not values or any(math.isnan(v) for v in values) else max(values)


class ConfoundersAudit(Audit):
    name = "confounders"
    Options = ProbeOptions
    title = "Confounder probes"
    metrics: ClassVar[dict[str, MetricInfo]] = {
        "worst_flip_rate": MetricInfo(
            "largest share of predictions any probed artifact flips (ranking worst_flip_rate)", False, True
        ),
        "worst_auc_drop_reversed": MetricInfo(
            "largest AUC drop with an artifact on the other classes only (reversed correlation)", False, True
        ),
    }

    def extract(self, results: dict[str, Any]) -> dict[str, float]:
        return {f"confounders.{key}": _worst(results, key) for key in self.metrics}

    def summary(self, results: dict[str, Any]) -> list[SummaryRow]:
        if not isinstance(results.get("ranking"), list):  # the subgroup and fine-tune modes
            return []
        return [
            SummaryRow("worst flip rate", _worst(results, "worst_flip_rate")),
            SummaryRow("worst AUC drop, reversed correlation", _worst(results, "worst_auc_drop_reversed")),
        ]

    def tables(self, results: dict[str, Any], data_label: str) -> list[RenderableType]:
        from medaudit.report import confounder_tables as ct

        if isinstance(results.get("finetune"), dict):
            return [ct.finetune_table(results["finetune"], f"Shortcut susceptibility: {data_label}")]
        if isinstance(results.get("subgroups"), dict):
            return [ct.subgroup_table(results["subgroups"], f"Subgroups: {data_label}")]
        return list(ct.confounder_tables(results, f"Confounders: {data_label}"))
