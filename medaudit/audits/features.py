"""``features``: does the model live on nonrobust features, and what does that cost under shift?

Three measurements after "Useful nonrobust features are ubiquitous in biomedical images" (ISBI
2026) and Ilyas et al. (2019), for the audited model and optionally a second one (``--compare``,
e.g. its adversarially trained twin), side by side:

1. nonrobust-feature usefulness: D_rand / D_det built from the training split by targeted L2 PGD
   and relabelling to the target; a fresh network trained on them, tested on the clean audited
   split, against chance and against the same pipeline at eps 0 (``medaudit.features``);
2. the trade-off: clean accuracy, robust accuracy (``auto`` attack) and MedMNIST-C balanced error,
   run through the ``eval``, ``attack`` and ``shift`` audits themselves;
3. saliency stability: rank correlation of attributions on x and on x perturbed at a small eps.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.console import RenderableType

from medaudit.audits.base import Audit, Context, MetricInfo, SummaryRow, number, table
from medaudit.errors import ConfigError, not_a_file
from medaudit.options import setting

if TYPE_CHECKING:
    from medaudit.data import AuditData
    from medaudit.features import EpsZeroRuns, NonrobustConfig
    from medaudit.models import AuditModel
    from medaudit.sources import Prepared

PANEL = "Features"
KINDS = ("rand", "det")
QUICK = {"nonrobust_steps": 20, "train_limit": 1000, "saliency_limit": 200}
"""What ``--quick`` sets for the settings left unset: minutes on 2 cores."""
FULL = {"nonrobust_steps": 100, "train_limit": None, "saliency_limit": None}


class Attribution(str, Enum):
    saliency = "saliency"
    integrated_gradients = "integrated-gradients"


@dataclass(frozen=True)
class FeaturesOptions:
    """``--compare`` ... on the command line, ``[features]`` in the audit file."""

    compare: Path | None = setting(
        None,
        "A second model (e.g. the _adv twin or a harden output) measured the same way, side by side.",
        panel=PANEL,
    )
    quick: bool = setting(
        False,
        "Minutes on 2 cores: 1,000 training images, 20 attack steps, 200 saliency images "
        "(for settings not given).",
        panel=PANEL,
    )
    datasets: str = setting(
        "rand,det", "Nonrobust datasets to build: rand (random targets), det ((y+1) mod C).", panel=PANEL
    )
    nonrobust_eps: float | None = setting(
        None,
        "L2 budget of the targeted attack ([0,1] units; default Ilyas' 0.5 at 32x32x3 scaled by "
        "sqrt(pixels/3072): 0.253 at 28x28x1).",
        panel=PANEL,
    )
    nonrobust_steps: int | None = setting(
        None, "Targeted PGD iterations (default 100; --quick 20).", panel=PANEL, min=1
    )
    nonrobust_step: float | None = setting(None, "Targeted PGD L2 step (default eps/5).", panel=PANEL)
    train_limit: int | None = setting(
        None,
        "Build the datasets from a stratified, seeded subset of at most N training images "
        "(default all; --quick 1,000).",
        panel=PANEL,
        min=2,
    )
    epochs: int = setting(10, "Epochs of the fresh network trained on each dataset.", panel=PANEL, min=1)
    train_batch_size: int = setting(128, "Batch size of the fresh network's training.", panel=PANEL, min=2)
    lr: float = setting(3e-3, "AdamW learning rate of the fresh network.", panel=PANEL)
    control: bool = setting(
        True,
        "Also run the pipeline at eps 0, the images unchanged: relabelled to the targets (the sanity "
        "control) and with the original labels (the clean reference).",
        flag="--control/--no-control",
        panel=PANEL,
    )
    robust_eps: str = setting(
        "2/255", "L-inf budget of the trade-off's robust accuracy (auto attack): 0.008 or 2/255.", panel=PANEL
    )
    shift: bool = setting(
        True,
        "MedMNIST-C balanced error and accuracy drop in the trade-off (the dataset's corruptions).",
        flag="--shift/--no-shift",
        panel=PANEL,
    )
    saliency_eps: str | None = setting(
        None, "L-inf perturbation for saliency stability (default: --robust-eps).", panel=PANEL
    )
    attribution: Attribution = setting(
        Attribution.saliency, "Attribution method (captum): saliency or integrated-gradients.", panel=PANEL
    )
    saliency_limit: int | None = setting(
        None,
        "Saliency on a stratified subset of N audited images (default all; --quick 200).",
        panel=PANEL,
        min=1,
    )

    @property
    def budgets(self) -> tuple[float, float]:
        """(robust eps, saliency eps), each one budget in [0, 1]."""
        robust = _one_budget("--robust-eps", self.robust_eps)
        saliency = robust if self.saliency_eps is None else _one_budget("--saliency-eps", self.saliency_eps)
        return robust, saliency

    def resolved(self, name: str) -> Any:
        """A quick-dependent setting: the user's value, else the --quick or the full default."""
        value = getattr(self, name)
        return value if value is not None else (QUICK if self.quick else FULL)[name]

    @property
    def kinds(self) -> tuple[str, ...]:
        """The datasets to build (``NonrobustConfig`` checks the names)."""
        return tuple(part.strip() for part in self.datasets.split(",") if part.strip())


def _one_budget(option: str, text: str) -> float:
    parts = text.split("/")
    try:
        value = float(parts[0]) / float(parts[1]) if len(parts) == 2 else float(text)
    except (ValueError, ZeroDivisionError):
        value = -1.0
    if not 0 <= value <= 1:
        raise ConfigError(f"{option} takes one budget in [0, 1] like 0.008 or 2/255, got '{text}'")
    return value


def nonrobust_config(options: FeaturesOptions, context: Context) -> NonrobustConfig:
    from medaudit.features import NonrobustConfig

    return NonrobustConfig(
        kinds=options.kinds,
        eps=options.nonrobust_eps,
        step_size=options.nonrobust_step,
        steps=options.resolved("nonrobust_steps"),
        epochs=options.epochs,
        limit=options.resolved("train_limit"),
        train_batch_size=options.train_batch_size,
        lr=options.lr,
        control=options.control,
        seed=context.seed,
        batch_size=context.batch_size,
    )


@dataclass
class ModelFeatures:
    """Every measurement of one model; ``examples`` (saliency maps) feed the figures only."""

    label: str
    path: str
    clean: dict[str, Any]
    robust: dict[str, Any]
    shift: dict[str, Any] | None
    nonrobust: dict[str, Any]
    saliency: dict[str, Any]
    seconds: dict[str, float]
    examples: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "path": self.path,
            "clean_accuracy": self.clean.get("accuracy"),
            "clean_accuracy_ci": self.clean.get("accuracy_ci"),
            "clean_balanced_accuracy": self.clean.get("balanced_accuracy"),
            "robust_accuracy": self.robust.get("robust_accuracy"),
            "robust_eps": self.robust.get("eps"),
            "shift": self.shift,
            "nonrobust": self.nonrobust,
            "saliency": self.saliency,
            "seconds": self.seconds,
        }


@dataclass
class FeaturesResult:
    models: list[ModelFeatures]

    def to_dict(self) -> dict[str, Any]:
        return {"models": [m.to_dict() for m in self.models]}


def _usefulness(model: dict[str, Any], kind: str, key: str = "accuracy") -> Any:
    for row in table(model.get("nonrobust")).get("rows", []) or []:
        if isinstance(row, dict) and row.get("kind") == kind:
            return row.get(key)
    return None


def _load_compare(prepared: Prepared, path: Path) -> AuditModel:
    """The second model, loaded with the first one's options and bound to the same data."""
    from medaudit.models import bind_model, load_model
    from medaudit.report.atomic import mark_read

    if prepared.load is None:
        raise ConfigError("--compare needs the first model's load options (medaudit.sources.prepare)")
    mark_read(path)
    model = load_model(path, prepared.load)
    bind_model(model, prepared.data)
    return model


class FeaturesAudit(Audit):
    name = "features"
    Options = FeaturesOptions
    title = "Nonrobust features"
    help = (
        "Does the model live on nonrobust features? D_rand/D_det usefulness against chance and the eps-0 "
        "control, the clean/robust/shift trade-off (optionally against a second model), saliency stability."
    )
    shardable = "the features audit trains on the whole training split"
    metrics: ClassVar[dict[str, MetricInfo]] = {
        "drand_accuracy": MetricInfo(
            "clean test accuracy of a fresh network trained on D_rand (nonrobust features only)", None, True
        ),
        "ddet_accuracy": MetricInfo(
            "clean test accuracy of a fresh network trained on D_det (nonrobust features only)", None, True
        ),
        "drand_gain": MetricInfo(
            "D_rand accuracy minus its eps-0 control: what the perturbations taught", None, True
        ),
        "ddet_gain": MetricInfo("D_det accuracy minus its eps-0 control", None, True),
        "clean_reference_accuracy": MetricInfo(
            "clean test accuracy of the same fresh network trained on the clean training split "
            "(eps 0, original labels)",
            None,
            True,
        ),
        "chance": MetricInfo("1 / number of classes", None, True),
        "saliency_stability": MetricInfo(
            "mean Spearman correlation of attributions on x and on perturbed x", True, True
        ),
        "clean_accuracy": MetricInfo("clean accuracy (trade-off table)", True, True),
        "robust_accuracy": MetricInfo("robust accuracy at --robust-eps (trade-off table)", True, True),
        "shift_mean_be": MetricInfo("MedMNIST-C mean balanced error (trade-off table)", False, True),
    }

    def check(self, options: FeaturesOptions, context: Context) -> None:
        nonrobust_config(options, context)
        options.budgets  # noqa: B018 (checks both budgets)
        if options.compare is not None and not options.compare.is_file():
            raise ConfigError(f"--compare {options.compare} {not_a_file(options.compare)}")

    def run(
        self, prepared: Prepared, options: FeaturesOptions, context: Context
    ) -> tuple[dict[str, Any], FeaturesResult]:
        from medaudit.data import load_data

        if prepared.spec is None:
            raise ConfigError("the features audit needs the data's source to load its training split")
        if prepared.spec.split == "train":
            raise ConfigError(
                "the features audit builds its datasets from the train split: audit on --split test or val"
            )
        config = nonrobust_config(options, context)
        with context.stages() as update:
            update("loading the training split")
            train = load_data(replace(prepared.spec, split="train", limit=None))
        if train.channels != prepared.data.channels or train.size != prepared.data.size:
            raise ConfigError("the training split does not match the audited split in channels or size")
        models = [("model", prepared)]
        if options.compare is not None:
            models.append(("compare", replace(prepared, model=_load_compare(prepared, options.compare))))
        from medaudit.features import EpsZeroRuns

        eps_zero = EpsZeroRuns()
        measured = [
            self._measure(label, run, train, options, config, context, eps_zero) for label, run in models
        ]
        robust_eps, saliency_eps = options.budgets
        record = {
            "nonrobust": measured[0].nonrobust.get("config", {}),
            "robust_eps": robust_eps,
            "saliency_eps": saliency_eps,
            "attribution": options.attribution.value,
            "saliency_limit": options.resolved("saliency_limit"),
            "shift": options.shift,
            "quick": options.quick,
            "compare": None if options.compare is None else str(options.compare),
        }
        return record, FeaturesResult(measured)

    def _measure(
        self,
        label: str,
        run: Prepared,
        train: AuditData,
        options: FeaturesOptions,
        config: NonrobustConfig,
        context: Context,
        eps_zero: EpsZeroRuns,
    ) -> ModelFeatures:
        """Every measurement of one model, each step timed (``seconds``)."""
        from medaudit.audits.attack import AttackAudit, AttackOptions, worst_case
        from medaudit.audits.evaluation import EvalAudit, EvalOptions
        from medaudit.audits.shift import ShiftAudit, ShiftOptions
        from medaudit.features import nonrobust_usefulness, saliency_stability

        seconds: dict[str, float] = {}

        @contextmanager
        def timed(step: str) -> Iterator[None]:
            started = time.perf_counter()
            yield
            seconds[step] = round(time.perf_counter() - started, 1)

        robust_eps, saliency_eps = options.budgets
        with timed("clean"):
            clean = EvalAudit().run(run, EvalOptions(), context)[1].to_dict()
        with timed("attack"):
            worst = worst_case(
                AttackAudit().run(run, AttackOptions(eps=repr(robust_eps)), context)[1].to_dict()
            )
        shifted = None
        if options.shift:
            with timed("shift"):
                summary = table(ShiftAudit().run(run, ShiftOptions(), context)[1].to_dict().get("summary"))
            shifted = {key: summary.get(key) for key in ("clean_be", "mean_be", "mean_accuracy_drop")}
        with timed("nonrobust"):
            nonrobust = nonrobust_usefulness(run.model, train, run.data, config, context.progress, eps_zero)
        with timed("saliency"):
            stability = saliency_stability(
                run.model,
                run.data,
                saliency_eps,
                options.attribution.value,
                options.resolved("saliency_limit"),
                context.seed,
                context.batch_size,
                context.progress,
            )
        return ModelFeatures(
            label=label,
            path=str(run.model.info.path),
            clean=clean,
            robust={"eps": robust_eps, "robust_accuracy": worst[0].get("robust_accuracy") if worst else None},
            shift=shifted,
            nonrobust=nonrobust.to_dict(),
            saliency=stability.to_dict(),
            seconds=seconds,
            examples=getattr(stability, "examples", None),
        )

    def extract(self, results: dict[str, Any]) -> dict[str, float]:
        models = results.get("models")
        first = models[0] if isinstance(models, list) and models and isinstance(models[0], dict) else {}
        out: dict[str, float] = {}
        for kind in KINDS:
            accuracy = _usefulness(first, kind)
            if accuracy is not None:
                out[f"features.d{kind}_accuracy"] = number(accuracy)
                out[f"features.d{kind}_gain"] = number(accuracy) - number(
                    _usefulness(first, kind, "control_accuracy")
                )
        nonrobust = table(first.get("nonrobust"))
        if "chance" in nonrobust:
            out["features.chance"] = number(nonrobust["chance"])
        if isinstance(nonrobust.get("reference"), dict):
            out["features.clean_reference_accuracy"] = number(nonrobust["reference"].get("accuracy"))
        out["features.saliency_stability"] = number(table(first.get("saliency")).get("mean"))
        out["features.clean_accuracy"] = number(first.get("clean_accuracy"))
        out["features.robust_accuracy"] = number(first.get("robust_accuracy"))
        if isinstance(first.get("shift"), dict):
            out["features.shift_mean_be"] = number(first["shift"].get("mean_be"))
        return out

    def summary(self, results: dict[str, Any]) -> list[SummaryRow]:
        models = results.get("models")
        first = models[0] if isinstance(models, list) and models and isinstance(models[0], dict) else {}
        rows = []
        for kind in KINDS:
            accuracy = _usefulness(first, kind)
            if accuracy is not None:
                control = SummaryRow("", _usefulness(first, kind, "control_accuracy"), 3).text
                rows.append(SummaryRow(f"D_{kind} accuracy (eps-0 control)", f"{accuracy:.3f} ({control})"))
        nonrobust = table(first.get("nonrobust"))
        if isinstance(nonrobust.get("reference"), dict):
            rows.append(
                SummaryRow(
                    "clean reference (eps 0, original labels)", nonrobust["reference"].get("accuracy"), 3
                )
            )
        rows.append(SummaryRow("chance", nonrobust.get("chance"), 3))
        rows.append(
            SummaryRow("saliency stability (mean Spearman)", table(first.get("saliency")).get("mean"), 3)
        )
        return rows

    def tables(self, results: dict[str, Any], data_label: str) -> list[RenderableType]:
        from medaudit.report.feature_tables import features_tables

        return list(features_tables(results, data_label))

    def html(self, results: dict[str, Any], data_label: str) -> str | None:
        from medaudit.report.html import features_section

        return features_section(results, data_label)

    def figures(self, prepared: Prepared, result: FeaturesResult) -> dict[str, bytes]:
        from medaudit.report.figures import saliency_examples_png, tradeoff_png

        pictures = {"trade-off": tradeoff_png(result.to_dict(), prepared.data.describe())}
        for model in result.models:
            if model.examples is not None:
                pictures[f"saliency ({model.label})"] = saliency_examples_png(model.examples, model.label)
        return pictures
