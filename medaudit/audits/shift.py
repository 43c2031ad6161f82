"""``shift``: balanced error under MedMNIST-C corruptions."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar

from rich.console import RenderableType

from medaudit.audits.base import Audit, Context, MetricInfo, SummaryRow, number, table
from medaudit.errors import ConfigError
from medaudit.options import setting

if TYPE_CHECKING:
    import numpy as np

    from medaudit.data import AuditData
    from medaudit.shift.benchmark import ShiftConfig, ShiftResult
    from medaudit.sources import Prepared

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


def parse_severities(text: str) -> tuple[int, ...]:
    from medaudit.shift.catalogue import SEVERITIES

    try:
        values = tuple(sorted({int(part) for part in text.split(",")}))
    except ValueError:
        raise ConfigError(f"--severities takes integers 1..5 separated by commas, got '{text}'") from None
    if not values or not set(values) <= set(SEVERITIES):
        raise ConfigError(f"--severities takes values in 1..5, got {list(values)}")
    return values


def _no_modality() -> ConfigError:
    return ConfigError(
        "which corruptions suit your data? give --modality "
        f"({', '.join(m.value for m in Modality)}) or --dataset for MedMNIST data"
    )


def shift_config(data: AuditData, options: ShiftOptions, context: Context) -> ShiftConfig:
    """Which table and corruptions: --modality, else the MedMNIST dataset audited."""
    from medaudit.shift import catalogue
    from medaudit.shift.benchmark import ShiftConfig
    from medaudit.shift.corrupt import default_mode

    dataset = data.identity.get("name") if data.identity.get("source") == "medmnist" else None
    modality = options.modality.value if options.modality else None
    if dataset is None and modality is None:
        raise _no_modality()
    source = catalogue.params_source(dataset, modality)
    names = (
        tuple(part.strip() for part in options.corruptions.split(",") if part.strip())
        if options.corruptions
        else tuple(catalogue.PARAMS[source])
    )
    chosen_mode = default_mode(data.size[0]) if options.mode is Mode.auto else options.mode.value
    return ShiftConfig(
        corruptions=names, source=source, mode=chosen_mode, severities=parse_severities(options.severities),
        seed=context.seed, batch_size=context.batch_size,
    )  # fmt: skip


def corruption_rows(data: AuditData, config: ShiftConfig) -> tuple[np.ndarray, dict[str, list[np.ndarray]]]:
    """Image 0 of the audited data, and it under every corruption and severity, exactly as evaluated."""
    from medaudit.shift.corrupt import apply_uint8

    clean = data.uint8_images(0, 1).permute(0, 2, 3, 1).numpy()
    rows = {
        name: [
            apply_uint8(
                clean, name, s, config.seed, source=config.params_from(name), mode=config.mode, indices=[0]
            )[0]
            for s in config.severities
        ]
        for name in config.corruptions
    }
    return clean[0], rows


class ShiftAudit(Audit):
    name = "shift"
    Options = ShiftOptions
    help = "Accuracy and balanced error under MedMNIST-C corruptions, per corruption and severity."
    title = "Distribution shift"
    metrics: ClassVar[dict[str, MetricInfo]] = {
        "clean_be": MetricInfo("balanced error without corruption (summary.clean_be)", False, True),
        **{
            f"clean_be_ci_{side}": MetricInfo(
                f"{side} end of the bootstrap interval of the clean balanced error (clean.balanced_error_ci)",
                False,
                True,
            )
            for side in ("low", "high")
        },
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
        clean = table(results.get("clean"))
        if "balanced_error_ci" in clean:  # absent from reports written before the intervals
            interval = clean["balanced_error_ci"]
            ends = interval if isinstance(interval, list) and len(interval) == 2 else [None, None]
            out["shift.clean_be_ci_low"], out["shift.clean_be_ci_high"] = number(ends[0]), number(ends[1])
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

    def html(self, results: dict[str, Any], data_label: str) -> str | None:
        from medaudit.report.html import shift_section

        return shift_section(results, f"Accuracy drop under corruption: {data_label}")

    def tables(self, results: dict[str, Any], data_label: str) -> list[RenderableType]:
        from medaudit.report.tables import note_lines, shift_tables

        return [*shift_tables(results, f"Shift: {data_label}"), *note_lines(results)]

    def check(self, options: ShiftOptions, context: Context) -> None:
        from medaudit.registries import corruptions  # names checked without importing torch

        for name in (options.corruptions or "").split(","):
            if name.strip():
                corruptions.check(name.strip())
        if context.data_file is not None and options.modality is None:
            raise _no_modality()
        parse_severities(options.severities)

    def run(
        self, prepared: Prepared, options: ShiftOptions, context: Context
    ) -> tuple[dict[str, Any], ShiftResult]:
        from medaudit.shift.benchmark import run_shift

        config = shift_config(prepared.data, options, context)
        cells = len(config.corruptions) * len(config.severities)
        with context.progress("corrupting and predicting", prepared.data.n * cells) as advance:
            result = run_shift(prepared.model, prepared.data, config, advance)
        return config.to_dict(), result

    def figures(self, prepared: Prepared, result: ShiftResult) -> dict[str, bytes]:
        from medaudit.report.figures import corruption_grid_png

        clean, rows = corruption_rows(prepared.data, result.config)
        title = f"{prepared.data.describe()}: image 0 under each corruption ({result.config.mode})"
        return {"corruption grid": corruption_grid_png(clean, rows, title)}
