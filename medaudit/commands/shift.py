"""``medaudit shift``: the MedMNIST-C corruption benchmark for any model and image size."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from medaudit.audits.shift import PANEL, ShiftAudit, ShiftOptions, corruption_rows, shift_config
from medaudit.commands.common import (
    JsonOpt,
    ShardOpt,
    Timer,
    check_output_target,
    emit,
    prepare,
    print_warnings,
    refuse_with_shard,
    stderr_console,
)
from medaudit.commands.progress import context as progress_context
from medaudit.errors import ConfigError
from medaudit.options import with_settings
from medaudit.report import tables
from medaudit.settings import DataSettings, OptionalModelSettings, RunSettings
from medaudit.sources import input_files

if TYPE_CHECKING:
    from medaudit.data import AuditData
    from medaudit.shift.benchmark import ShiftResult


@with_settings(options=ShiftOptions, model=OptionalModelSettings, data=DataSettings, run_settings=RunSettings)
def shift_command(
    model: OptionalModelSettings,
    data: DataSettings,
    run_settings: RunSettings,
    options: ShiftOptions,
    list_: Annotated[
        bool,
        typer.Option(
            "--list", help="Print the corruption catalogue and exit (no model needed).", rich_help_panel=PANEL
        ),
    ] = False,
    save_grid: Annotated[
        Path | None,
        typer.Option(
            "--save-grid",
            help="Write a PNG: one image under every corruption at each severity.",
            rich_help_panel=PANEL,
        ),
    ] = None,
    save_heatmap: Annotated[
        Path | None,
        typer.Option(
            "--save-heatmap",
            help="Write a PNG heatmap of the accuracy drop per corruption and severity.",
            rich_help_panel=PANEL,
        ),
    ] = None,
    shard: ShardOpt = None,
    json: JsonOpt = None,
) -> None:
    """Accuracy and balanced error under MedMNIST-C corruptions, per corruption and severity."""
    console, timer = stderr_console(), Timer()
    batch_size, seed = run_settings.batch_size, data.seed
    modality_name = options.modality.value if options.modality else None
    if list_:
        console.print(_catalogue(data.dataset, modality_name))
        return
    if model.path is None:
        raise ConfigError("give a model file (or --list for the corruption catalogue)")
    audit = ShiftAudit()
    context = progress_context(console, batch_size, seed, data.data)
    audit.check(options, context)
    inputs = input_files(model.path, data.data)
    check_output_target(save_grid, inputs, "--save-grid")
    check_output_target(save_heatmap, inputs, "--save-heatmap")
    refuse_with_shard(shard, save_grid=save_grid, save_heatmap=save_heatmap)
    run = prepare(model, data, run_settings, json_target=json, shard=shard)
    shift_config(run.data, options, context)  # a missing --modality fails before the work
    print_warnings(console, run.warnings, run.model.info.notes)
    config, result = audit.run(run, options, context)
    results = result.to_dict()
    tables.show(console, audit.tables(results, run.data.describe()))
    if save_grid is not None:
        from medaudit.report.figures import save_corruption_grid

        clean, rows = corruption_rows(run.data, result.config)
        save_corruption_grid(
            save_grid, clean, rows, f"{run.data.describe()}: corruptions ({result.config.mode})"
        )
        console.print(f"corruption grid written to {save_grid}", markup=False, highlight=False)
    if save_heatmap is not None:
        _heatmap(save_heatmap, result, results, run.data)
        console.print(f"accuracy-drop heatmap written to {save_heatmap}", markup=False, highlight=False)
    doc = run.document(
        "shift",
        {**run.config, **config},
        results,
        seed=seed,
        wall_time_s=timer.elapsed,
        warnings=run.warnings,
    )
    run.attach_state(doc, {"shift": result})
    emit(console, json, doc)


def _catalogue(dataset: str | None, modality: str | None) -> Any:
    """Every corruption with its family and, for a chosen dataset, its five parameters."""
    from medaudit.shift import catalogue

    source = catalogue.params_source(dataset, modality) if dataset or modality else None
    entries = []
    for name in catalogue.all_corruptions():
        if source is not None and name not in catalogue.PARAMS[source]:
            continue
        holders = [ds for ds, table in catalogue.PARAMS.items() if name in table]
        params = catalogue.PARAMS[source][name] if source else None
        entries.append(
            {
                "corruption": name,
                "family": catalogue.family_of(name),
                "params": ", ".join(str(p) for p in params) if params else "per dataset",
                "datasets": ", ".join(ds.removesuffix("mnist") for ds in holders),
            }
        )
    title = f"MedMNIST-C corruptions for {source}" if source else "MedMNIST-C corruptions"
    return tables.corruption_catalogue(entries, title)


def _heatmap(path: Path, result: ShiftResult, results: dict[str, Any], data: AuditData) -> None:
    import numpy as np

    from medaudit.report.figures import save_heatmap

    drops = {(r["corruption"], r["severity"]): r["accuracy_drop"] for r in results["corruptions"]}
    values = np.array(
        [[drops[(name, s)] for s in result.config.severities] for name in result.config.corruptions]
    )
    save_heatmap(
        path,
        values,
        list(result.config.corruptions),
        [f"severity {s}" for s in result.config.severities],
        f"Accuracy drop under corruption: {data.describe()}",
        "clean accuracy - corrupted accuracy",
    )
