"""``medaudit intrinsic``: label sharpness, intrinsic dimension of data and features, model smoothness."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from medaudit.commands.common import (
    JsonOpt,
    Timer,
    check_output_target,
    data_spec,
    emit,
    input_files,
    prepare,
    print_warnings,
    stderr_console,
)
from medaudit.data import load_data
from medaudit.document import document
from medaudit.errors import ConfigError
from medaudit.intrinsic import DimensionConfig, IntrinsicConfig, run_intrinsic
from medaudit.intrinsic.audit import nn_distance_arrays
from medaudit.intrinsic.smoothness import LipschitzConfig
from medaudit.options import setting, with_settings
from medaudit.report import tables
from medaudit.settings import DATA_PANEL, DataSettings, OptionalModelSettings, RunSettings, Split

PANEL = "Intrinsic"


class Normalizer(str, Enum):
    k1 = "k-1"
    k2 = "k-2"


@dataclass(frozen=True)
class IntrinsicModel(OptionalModelSettings):
    path: Path | None = setting(
        None,
        "Model file (optional): adds the representation dimension and model smoothness.",
        argument=True,
        metavar="MODEL",
    )


@dataclass(frozen=True)
class IntrinsicData(DataSettings):
    """The paper measures training sets, and all pairs cost N^2: other defaults than the audits'."""

    split: Split = setting(Split.train, "Data split (the paper measures training sets).", panel=DATA_PANEL)
    limit: int | None = setting(
        5000,
        "Use a stratified, seeded subsample of at most N images (all pairs cost N^2).",
        panel=DATA_PANEL,
        min=1,
    )


@with_settings(model=IntrinsicModel, data=IntrinsicData, run_settings=RunSettings)
def intrinsic_command(
    model: IntrinsicModel,
    data: IntrinsicData,
    run_settings: RunSettings,
    k: Annotated[
        int, typer.Option("--k", help="Neighbours for the MLE estimator.", rich_help_panel=PANEL)
    ] = 20,
    normalizer: Annotated[
        Normalizer,
        typer.Option(
            "--normalizer",
            help="MLE normaliser: k-1 (Levina-Bickel, scikit-dimension) or k-2 (Konz & Mazurowski's code).",
            rich_help_panel=PANEL,
        ),
    ] = Normalizer.k1,
    rounds: Annotated[
        int,
        typer.Option(
            "--rounds", help="Subsampling rounds for the 95% intervals (0: none).", rich_help_panel=PANEL
        ),
    ] = 20,
    layer: Annotated[
        str | None,
        typer.Option(
            "--layer",
            help="Layer for d_repr: a module name (torch), fx node (.pt2) or tensor name (ONNX). Default: the input of the last linear layer.",
            rich_help_panel=PANEL,
        ),
    ] = None,
    lipschitz_eps: Annotated[
        float,
        typer.Option(
            "--lipschitz-eps",
            help="Radius (L-inf, [0,1] units) of the smoothness search.",
            rich_help_panel=PANEL,
        ),
    ] = 0.01,
    lipschitz_steps: Annotated[
        int,
        typer.Option(
            "--lipschitz-steps", help="Ascent steps of the smoothness search.", rich_help_panel=PANEL
        ),
    ] = 10,
    no_lipschitz: Annotated[
        bool,
        typer.Option("--no-lipschitz", help="Skip the model smoothness estimate.", rich_help_panel=PANEL),
    ] = False,
    save_plot: Annotated[
        Path | None,
        typer.Option(
            "--save-plot",
            help="Write a PNG of nearest-neighbour distances (same label vs other label).",
            rich_help_panel=PANEL,
        ),
    ] = None,
    json: JsonOpt = None,
) -> None:
    """Label sharpness K_F, intrinsic dimension of the data (and of a model's features), model smoothness."""
    console, timer = stderr_console(), Timer()
    batch_size, seed = run_settings.batch_size, data.seed
    config = IntrinsicConfig(
        dimension=DimensionConfig(k=k, normalizer=normalizer.value, rounds=rounds, seed=seed),
        layer=layer,
        batch_size=batch_size,
        lipschitz=None
        if no_lipschitz
        else LipschitzConfig(eps=lipschitz_eps, steps=lipschitz_steps, batch_size=batch_size, seed=seed),
    )
    inputs = input_files(model.path, data.data)
    check_output_target(save_plot, inputs, "--save-plot")
    if model.path is None:
        if layer is not None:
            raise ConfigError("--layer needs a model")
        check_output_target(json, inputs)
        spec = data_spec(None, data)
        if spec.dataset is None and spec.data is None:
            raise ConfigError("give a model, --dataset NAME or --data PATH")
        audit_data, audit_model, warnings, run_config = load_data(spec), None, [], {"data": spec.to_dict()}
    else:
        run = prepare(model, data, run_settings, json_target=json)
        audit_data, audit_model, warnings, run_config = run.data, run.model, run.warnings, run.config
    with console.status("starting") as status:
        result = run_intrinsic(audit_data, audit_model, config, lambda stage: status.update(stage))
    results = result.to_dict()
    print_warnings(console, warnings)
    console.print(tables.intrinsic_table(results, f"Intrinsic properties: {audit_data.describe()}"))
    for line in results["notes"]:
        console.print(f"note: {line}", markup=False, highlight=False)
    if save_plot is not None:
        from medaudit.report.figures import save_distance_histogram

        save_distance_histogram(
            save_plot,
            nn_distance_arrays(result),
            f"Nearest-neighbour distances: {audit_data.describe()}",
            f"L2 distance ([0,1] images, {results['representation']['dims']} values)",
        )
        console.print(f"distance plot written to {save_plot}", markup=False, highlight=False)
    doc = document(
        "intrinsic",
        {**run_config, **config.to_dict(), "batch_size": batch_size},
        results,
        model=None if audit_model is None else audit_model.describe(),
        data={**audit_data.identity, "n": audit_data.n},
        seed=seed,
        wall_time_s=timer.elapsed,
        warnings=warnings,
    )
    emit(console, json, doc)
