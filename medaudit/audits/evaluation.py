"""``eval``: clean accuracy, balanced accuracy and AUC with bootstrap intervals, calibration, the
binary operating point and ordinal agreement."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from rich.console import RenderableType

from medaudit.audits.base import Audit, Context, MetricInfo, SummaryRow, number, table
from medaudit.options import setting

if TYPE_CHECKING:
    from medaudit.evaluate import EvalConfig, EvalResult
    from medaudit.sources import Prepared

PANEL = "Evaluation"
INTERVALS = ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity")
"""The metrics with a bootstrap interval (``<metric>_ci`` in the results; the last two: binary tasks);
``medaudit.metrics.BINARY_INTERVAL_METRICS``, repeated here because that module imports torch."""


@dataclass(frozen=True)
class EvalOptions:
    """``--threshold`` ... on the command line, ``[eval]`` in the audit file."""

    threshold: float = setting(
        0.5,
        "Binary tasks: decision threshold on the positive class's probability; accuracy, "
        "sensitivity, specificity and the confusion matrix are taken there.",
        panel=PANEL,
    )
    positive_class: str | None = setting(
        None,
        "Binary tasks: the positive class, by name or index (default: the last class); it sets the "
        "AUC's orientation, sensitivity, specificity and the class --threshold applies to.",
        panel=PANEL,
    )
    bootstrap: int = setting(
        1000, "Bootstrap resamples of the images for the intervals (0: no intervals).", panel=PANEL, min=0
    )
    confidence: float = setting(0.95, "Confidence level of the bootstrap intervals.", panel=PANEL)


def _bound(results: dict[str, Any], metric: str, side: int) -> float:
    interval = results.get(f"{metric}_ci")
    return number(interval[side]) if isinstance(interval, list) and len(interval) == 2 else number(None)


def interval_text(results: dict[str, Any], metric: str, digits: int = 4) -> str | None:
    """``metric``'s interval as 'low – high', None where there is none."""
    low, high = _bound(results, metric, 0), _bound(results, metric, 1)
    return None if math.isnan(low) or math.isnan(high) else f"{low:.{digits}f} – {high:.{digits}f}"


def confidence_percent(results: dict[str, Any]) -> str:
    """The intervals' level as '95%' (from ``bootstrap.confidence``)."""
    level = number(table(results.get("bootstrap")).get("confidence"))
    return "CI" if math.isnan(level) else f"{level * 100:g}%"


def headline(results: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, results key) of the numbers the eval tables show for this task, in order."""
    names = list(table(results.get("per_class_recall")))
    rows = [("accuracy", "accuracy"), ("balanced accuracy", "balanced_accuracy"), ("AUC", "auc")]
    if results.get("threshold") is not None and len(names) == 2:
        positive = results.get("positive_class")
        pos = names.index(positive) if positive in names else 1
        rows += [
            (f"sensitivity ({names[pos]})", "sensitivity"),
            (f"specificity ({names[1 - pos]})", "specificity"),
        ]
    if results.get("kappa") is not None or results.get("mae") is not None:
        rows += [("quadratic-weighted kappa", "kappa"), ("mean absolute error (grades)", "mae")]
    if "ece" in results:
        rows.append(("expected calibration error", "ece"))
    return rows


def interval_note(results: dict[str, Any]) -> str | None:
    """How the intervals were drawn (``results.bootstrap``), None without resamples: eval's, and
    that of the clean rows of ``attack`` and ``shift``."""
    boot = table(results.get("bootstrap"))
    if not boot.get("rounds"):
        return None
    skipped = boot.get("auc_skipped")
    return (
        f"intervals: percentile bootstrap over images, {boot['rounds']} resamples, seed {boot.get('seed')}"
        + (f" ({skipped} resamples lost a class: no AUC)" if skipped else "")
    )


def method_note(results: dict[str, Any]) -> str:
    """How the numbers were taken: the intervals, the calibration binning, the decision rule."""
    reliability = table(results.get("reliability"))
    parts = []
    intervals = interval_note(results)
    if intervals:
        parts.append(intervals)
    if reliability.get("binning"):
        parts.append(f"ECE: {reliability['binning']}")
    if results.get("threshold") is not None:
        threshold = number(results["threshold"])
        parts.append(f"decision: p({results.get('positive_class')}) > {threshold:g}")
    return "; ".join(parts)


def eval_config(options: EvalOptions, context: Context) -> EvalConfig:
    """The evaluation's configuration; ConfigError naming the setting when an option is wrong."""
    from medaudit.evaluate import EvalConfig

    return EvalConfig(
        batch_size=context.batch_size,
        threshold=options.threshold,
        bootstrap=options.bootstrap,
        confidence=options.confidence,
        seed=context.seed,
        positive_class=options.positive_class,
    )


class EvalAudit(Audit):
    name = "eval"
    Options = EvalOptions
    title = "Clean metrics"
    help = (
        "Clean metrics: accuracy, balanced accuracy and AUC with bootstrap intervals, calibration "
        "(ECE), per-class recall and confusion matrix; sensitivity and specificity at --threshold "
        "for binary tasks, quadratic-weighted kappa and MAE for ordinal ones."
    )
    metrics: ClassVar[dict[str, MetricInfo]] = {
        "accuracy": MetricInfo("clean accuracy (eval results.accuracy)", True, True),
        "balanced_accuracy": MetricInfo(
            "mean recall over classes (eval results.balanced_accuracy)", True, True
        ),
        "auc": MetricInfo("clean AUC (eval results.auc)", True, True),
        **{
            f"{metric}_ci_{side}": MetricInfo(
                f"{side} end of the bootstrap interval of {metric} (eval results.{metric}_ci)", True, True
            )
            for metric in INTERVALS
            for side in ("low", "high")
        },
        "sensitivity": MetricInfo(
            "binary: recall of the positive class (--positive-class, default the last) at the "
            "threshold (eval results.sensitivity)",
            True,
            True,
        ),
        "specificity": MetricInfo(
            "binary: recall of the negative class at the threshold (eval results.specificity)",
            True,
            True,
        ),
        "ece": MetricInfo(
            "expected calibration error, 15 equal-width confidence bins (eval results.ece)", False, True
        ),
        "kappa": MetricInfo("ordinal: quadratic-weighted Cohen's kappa (eval results.kappa)", True, True),
        "mae": MetricInfo("ordinal: mean absolute error in grades (eval results.mae)", False, False),
    }

    def extract(self, results: dict[str, Any]) -> dict[str, float]:
        out = {}
        for key in self.metrics:
            metric, _, side = key.partition("_ci_")
            out[f"eval.{key}"] = (
                _bound(results, metric, 0 if side == "low" else 1) if side else number(results.get(key))
            )
        return out

    def summary(self, results: dict[str, Any]) -> list[SummaryRow]:
        level = confidence_percent(results)
        rows = [
            SummaryRow("accuracy", results.get("accuracy")),
            SummaryRow("balanced accuracy", results.get("balanced_accuracy")),
            SummaryRow("AUC", results.get("auc")),
            SummaryRow(f"AUC {level} interval", interval_text(results, "auc")),
        ]
        if results.get("threshold") is not None:
            at = f" at threshold {number(results.get('threshold')):g}"
            labels = dict(
                (key, label) for label, key in headline(results)
            )  # with the class: "sensitivity (pneumonia)"
            rows += [
                SummaryRow(labels.get(key, key) + at, results.get(key))
                for key in ("sensitivity", "specificity")
            ]
        if results.get("kappa") is not None or results.get("mae") is not None:
            rows += [
                SummaryRow("quadratic-weighted kappa", results.get("kappa")),
                SummaryRow("mean absolute error (grades)", results.get("mae")),
            ]
        return [*rows, SummaryRow("ECE", results.get("ece")), SummaryRow("n", results.get("n"))]

    def html(self, results: dict[str, Any], data_label: str) -> str | None:
        from medaudit.report.html import eval_section

        return eval_section(results, f"Calibration: {data_label}")

    def diagrams(self, results: dict[str, Any], data_label: str) -> dict[str, bytes]:
        """The reliability diagram (also in the HTML section: ``html.eval_section``)."""
        from medaudit.report.figures import reliability_diagram_png

        reliability = table(results.get("reliability"))
        if not reliability.get("edges"):
            return {}
        ece = number(results.get("ece"))
        title = f"Calibration: {data_label}"
        return {"reliability": reliability_diagram_png(reliability, None if math.isnan(ece) else ece, title)}

    def tables(self, results: dict[str, Any], data_label: str) -> list[RenderableType]:
        from medaudit.report.tables import eval_tables

        return list(eval_tables(results, f"Clean metrics: {data_label}"))

    def check(self, options: EvalOptions, context: Context) -> None:
        eval_config(options, context)

    def run(
        self, prepared: Prepared, options: EvalOptions, context: Context
    ) -> tuple[dict[str, Any], EvalResult]:
        from medaudit.evaluate import evaluate

        config = eval_config(options, context)
        with context.progress("evaluating", prepared.data.n) as advance:
            result = evaluate(prepared.model, prepared.data, config, advance)
        return asdict(options), result
