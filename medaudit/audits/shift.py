"""``shift``: balanced error under MedMNIST-C corruptions."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

from rich.console import RenderableType

from medaudit.audits.base import Audit, MetricInfo, SummaryRow, number, table
from medaudit.options import setting

PANEL = "Shift"


class Mode(str, Enum):
    auto = "auto"
    medmnistc = "medmnistc"
    scaled = "scaled"


class Modality(str, Enum):
    xray = "xray"
    ct = "ct"
    ultrasound = "ultrasound"
    fundus = "fundus"
    dermoscopy = "dermoscopy"
    pathology = "pathology"
    blood = "blood"
    oct = "oct"


@dataclass(frozen=True)
class ShiftOptions:
    """``--corruptions`` ... on the command line, ``[shift]`` in the audit file."""

    corruptions: str | None = setting(
        None,
        "Comma list of corruptions (default: the MedMNIST-C list of the dataset or modality).",
        panel=PANEL,
        listed=True,
    )
    modality: Modality | None = setting(
        None,
        "For your own data: use the corruption list and parameters of this modality's MedMNIST-C dataset.",
        panel=PANEL,
    )
    severities: str = setting("1,2,3,4,5", "Severities to run, from 1..5.", panel=PANEL, listed=True)
    mode: Mode = setting(
        Mode.auto,
        "medmnistc: published 224 px parameters (comparable with the AlexNet baselines); "
        "scaled: pixel sizes scaled by size/224 (MedMNIST-C-style); auto: medmnistc at 224 px, else scaled.",
        panel=PANEL,
    )


class ShiftAudit(Audit):
    name = "shift"
    Options = ShiftOptions
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

    def tables(self, results: dict[str, Any], data_label: str) -> list[RenderableType]:
        from medaudit.report.tables import note_lines, shift_tables

        return [*shift_tables(results, f"Shift: {data_label}"), *note_lines(results)]
