"""``eval``: clean accuracy, balanced accuracy and AUC."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.console import RenderableType

from medaudit.audits.base import Audit, MetricInfo, SummaryRow, number


class EvalAudit(Audit):
    name = "eval"
    title = "Clean metrics"
    metrics: ClassVar[dict[str, MetricInfo]] = {
        "accuracy": MetricInfo("clean accuracy (eval results.accuracy)", True, True),
        "balanced_accuracy": MetricInfo(
            "mean recall over classes (eval results.balanced_accuracy)", True, True
        ),
        "auc": MetricInfo("clean AUC (eval results.auc)", True, True),
    }

    def extract(self, results: dict[str, Any]) -> dict[str, float]:
        return {f"eval.{key}": number(results.get(key)) for key in self.metrics}

    def summary(self, results: dict[str, Any]) -> list[SummaryRow]:
        return [
            SummaryRow("accuracy", results.get("accuracy")),
            SummaryRow("balanced accuracy", results.get("balanced_accuracy")),
            SummaryRow("AUC", results.get("auc")),
            SummaryRow("n", results.get("n")),
        ]

    def tables(self, results: dict[str, Any], data_label: str) -> list[RenderableType]:
        from medaudit.report.tables import eval_tables

        return list(eval_tables(results, f"Clean metrics: {data_label}"))
