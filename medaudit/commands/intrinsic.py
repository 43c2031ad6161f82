"""``medaudit intrinsic``: label sharpness, intrinsic dimension of data and features, model smoothness."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from medaudit.audits.base import Context
from medaudit.audits.intrinsic import PANEL, IntrinsicOptions, intrinsic_config
from medaudit.commands.common import (
    JsonOpt,
    Timer,
    check_output_target,
    emit,
    prepare,
    print_warnings,
    stderr_console,
)
from medaudit.commands.progress import stage_status
from medaudit.document import document
from medaudit.errors import ConfigError
from medaudit.options import setting, with_settings
from medaudit.report import tables
from medaudit.settings import DATA_PANEL, DataSettings, OptionalModelSettings, RunSettings, Split
from medaudit.sources import data_spec, input_files


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


@with_settings(options=IntrinsicOptions, model=IntrinsicModel, data=IntrinsicData, run_settings=RunSettings)
def intrinsic_command(
    model: IntrinsicModel,
    data: IntrinsicData,
    run_settings: RunSettings,
    options: IntrinsicOptions,
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
    config = intrinsic_config(options, Context(batch_size, seed))
    inputs = input_files(model.path, data.data)
    check_output_target(save_plot, inputs, "--save-plot")
    if model.path is None:
        if options.layer is not None:
            raise ConfigError("--layer needs a model")
        check_output_target(json, inputs)
        spec = data_spec(None, data)
        if spec.dataset is None and spec.data is None:
            raise ConfigError("give a model, --dataset NAME or --data PATH")
        from medaudit.data import load_data

        audit_data, audit_model, warnings, run_config = load_data(spec), None, [], {"data": spec.to_dict()}
    else:
        run = prepare(model, data, run_settings, json_target=json)
        audit_data, audit_model, warnings, run_config = run.data, run.model, run.warnings, run.config
    from medaudit.intrinsic import run_intrinsic
    from medaudit.intrinsic.audit import nn_distance_arrays

    with stage_status(console) as update:
        result = run_intrinsic(audit_data, audit_model, config, update)
    results = result.to_dict()
    print_warnings(console, warnings, None if audit_model is None else audit_model.info.notes)
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
