"""``intrinsic``: label sharpness, intrinsic dimension of data and features, model smoothness."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar

from rich.console import RenderableType

from medaudit.audits.base import Audit, Context, MetricInfo, SummaryRow, number, table
from medaudit.options import setting

if TYPE_CHECKING:
    from medaudit.intrinsic import IntrinsicConfig
    from medaudit.intrinsic.audit import IntrinsicResult
    from medaudit.sources import Prepared

PANEL = "Intrinsic"


class Normalizer(str, Enum):
    k1 = "k-1"
    k2 = "k-2"


@dataclass(frozen=True)
class IntrinsicOptions:
    """``--k`` ... on the command line, ``[intrinsic]`` in the audit file."""

    k: int = setting(20, "Neighbours for the MLE estimator.", panel=PANEL)
    normalizer: Normalizer = setting(
        Normalizer.k1,
        "MLE normaliser: k-1 (Levina-Bickel, scikit-dimension) or k-2 (Konz & Mazurowski's code).",
        panel=PANEL,
    )
    rounds: int = setting(20, "Subsampling rounds for the 95% intervals (0: none).", panel=PANEL)
    layer: str | None = setting(
        None,
        "Layer for d_repr: a module name (torch), fx node (.pt2) or tensor name (ONNX). "
        "Default: the input of the last linear layer.",
        panel=PANEL,
    )
    lipschitz: bool = setting(
        True,
        "Estimate the model's smoothness (local Lipschitz constant).",
        flag="--lipschitz/--no-lipschitz",
        panel=PANEL,
    )
    lipschitz_eps: float = setting(0.01, "Radius (L-inf, [0,1] units) of the smoothness search.", panel=PANEL)
    lipschitz_steps: int = setting(10, "Ascent steps of the smoothness search.", panel=PANEL)


def _pair(part: dict[str, Any]) -> str:
    return f"{SummaryRow('', part.get('twonn'), 1).text} / {SummaryRow('', part.get('mle'), 1).text}"


def intrinsic_config(options: IntrinsicOptions, context: Context) -> IntrinsicConfig:
    """The estimators' configuration from the settings."""
    from medaudit.intrinsic.config import DimensionConfig, IntrinsicConfig, LipschitzConfig

    batch_size, seed = context.batch_size, context.seed
    return IntrinsicConfig(
        dimension=DimensionConfig(
            k=options.k, normalizer=options.normalizer.value, rounds=options.rounds, seed=seed
        ),
        layer=options.layer,
        batch_size=batch_size,
        lipschitz=LipschitzConfig(
            eps=options.lipschitz_eps, steps=options.lipschitz_steps, batch_size=batch_size, seed=seed
        )
        if options.lipschitz
        else None,
    )


class IntrinsicAudit(Audit):
    name = "intrinsic"
    Options = IntrinsicOptions
    title = "Intrinsic properties"
    help = (
        "Label sharpness K_F, intrinsic dimension of the data (and of a model's features), model smoothness."
    )
    shardable = "the intrinsic audit needs every image at once (all pairs)"
    metrics: ClassVar[dict[str, MetricInfo]] = {
        "k_f": MetricInfo("label sharpness K_F of the data", None, False),
        "d_data_mle": MetricInfo("intrinsic dimension of the data, MLE", None, False),
        "d_data_twonn": MetricInfo("intrinsic dimension of the data, TwoNN", None, False),
        "d_repr_mle": MetricInfo(
            "intrinsic dimension of the model's features, MLE (with a model)", None, False
        ),
        "d_repr_twonn": MetricInfo(
            "intrinsic dimension of the model's features, TwoNN (with a model)", None, False
        ),
        "lipschitz": MetricInfo(
            "mean local Lipschitz constant of the model (model_smoothness.mean; with a model)",
            False,
            False,
        ),
    }

    def extract(self, results: dict[str, Any]) -> dict[str, float]:
        out = {"intrinsic.k_f": number(table(results.get("label_sharpness")).get("k_f"))}
        for part in ("d_data", "d_repr"):  # d_repr is null without a model
            if isinstance(results.get(part), dict):
                out[f"intrinsic.{part}_mle"] = number(results[part].get("mle"))
                out[f"intrinsic.{part}_twonn"] = number(results[part].get("twonn"))
        if isinstance(results.get("model_smoothness"), dict):
            out["intrinsic.lipschitz"] = number(results["model_smoothness"].get("mean"))
        return out

    def summary(self, results: dict[str, Any]) -> list[SummaryRow]:
        rows = [
            SummaryRow("label sharpness K_F", table(results.get("label_sharpness")).get("k_f")),
            SummaryRow("d_data (TwoNN / MLE)", _pair(table(results.get("d_data")))),
        ]
        if isinstance(results.get("d_repr"), dict):
            rows.append(SummaryRow("d_repr (TwoNN / MLE)", _pair(results["d_repr"])))
        if isinstance(results.get("model_smoothness"), dict):
            rows.append(SummaryRow("local Lipschitz (mean)", number(results["model_smoothness"].get("mean"))))
        return rows

    def html(self, results: dict[str, Any], data_label: str) -> str | None:
        from medaudit.report.html import intrinsic_section

        return intrinsic_section(results)

    def tables(self, results: dict[str, Any], data_label: str) -> list[RenderableType]:
        from medaudit.report.tables import intrinsic_table

        return [intrinsic_table(results, f"Intrinsic properties: {data_label}")]

    def check(self, options: IntrinsicOptions, context: Context) -> None:
        intrinsic_config(options, context)

    def run(
        self, prepared: Prepared, options: IntrinsicOptions, context: Context
    ) -> tuple[dict[str, Any], IntrinsicResult]:
        from medaudit.intrinsic import run_intrinsic

        config = intrinsic_config(options, context)
        with context.stages() as update:
            result = run_intrinsic(prepared.data, prepared.model, config, update)
        return config.to_dict(), result
