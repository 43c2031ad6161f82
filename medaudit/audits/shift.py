"""``shift``: balanced error under MedMNIST-C corruptions."""

from __future__ import annotations

from typing import Any, ClassVar

from medaudit.audits.base import Audit, MetricInfo, SummaryRow, number, table


class ShiftAudit(Audit):
    name = "shift"
    title = "Distribution shift"
    metrics: ClassVar[dict[str, MetricInfo]] = {
        "clean_be": MetricInfo("balanced error without corruption (summary.clean_be)", False, True),
        "mean_be": MetricInfo("balanced error averaged over corruptions and severities", False, True),
        "worst_be": MetricInfo(
            "balanced error of the worst corruption (summary.worst_corruption_be)", False, True
        ),
        "mean_accuracy_drop": MetricInfo("mean accuracy lost to corruption", False, True),
        "mean_auc_drop": MetricInfo("mean AUC lost to corruption", False, True),
        "mean_normalised_be": MetricInfo(
            "mean balanced error relative to the AlexNet baseline (only when the baseline applies)",
            False,
            False,
        ),
        "mean_rbe": MetricInfo(
            "mean relative balanced error vs the AlexNet baseline (only when the baseline applies)",
            False,
            False,
        ),
    }

    def extract(self, results: dict[str, Any]) -> dict[str, float]:
        summary = table(results.get("summary"))
        out = {
            "shift.clean_be": number(summary.get("clean_be")),
            "shift.mean_be": number(summary.get("mean_be")),
            "shift.worst_be": number(summary.get("worst_corruption_be")),
            "shift.mean_accuracy_drop": number(summary.get("mean_accuracy_drop")),
            "shift.mean_auc_drop": number(summary.get("mean_auc_drop")),
        }
        for key in ("mean_normalised_be", "mean_rbe"):  # null when the AlexNet baseline does not apply
            if summary.get(key) is not None:
                out[f"shift.{key}"] = number(summary[key])
        return out

    def summary(self, results: dict[str, Any]) -> list[SummaryRow]:
        s = table(results.get("summary"))
        worst = SummaryRow("", s.get("worst_corruption_be"), 3).text
        return [
            SummaryRow("clean balanced error", s.get("clean_be")),
            SummaryRow("mean corrupted balanced error", s.get("mean_be")),
            SummaryRow("mean accuracy drop", s.get("mean_accuracy_drop")),
            SummaryRow("mean AUC drop", s.get("mean_auc_drop")),
            SummaryRow("worst corruption", f"{s.get('worst_corruption')} (BE {worst})"),
        ]
