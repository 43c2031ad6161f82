"""``medaudit shift``: the MedMNIST-C corruption benchmark for any model and image size."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from medaudit.audits.shift import PANEL, Modality, Mode, ShiftOptions
from medaudit.commands.common import (
    JsonOpt,
    Prepared,
    ShardOpt,
    Timer,
    check_output_target,
    emit,
    input_files,
    prepare,
    print_warnings,
    refuse_with_shard,
    stderr_console,
)
from medaudit.commands.progress import progress_bar
from medaudit.data import AuditData
from medaudit.errors import ConfigError
from medaudit.options import with_settings
from medaudit.report import tables
from medaudit.settings import DataSettings, OptionalModelSettings, RunSettings
from medaudit.shift import catalogue
from medaudit.shift.benchmark import ShiftConfig, ShiftResult, run_shift
from medaudit.shift.catalogue import SEVERITIES
from medaudit.shift.corrupt import apply_uint8, corruptions, default_mode


def parse_severities(text: str) -> tuple[int, ...]:
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


def check_options(options: ShiftOptions, data: Path | None) -> tuple[int, ...]:
    """What ``shift_config`` checks without the data, so a typo fails before anything is loaded;
    returns the severities."""
    for name in (options.corruptions or "").split(","):
        if name.strip():
            corruptions.get(name.strip())
    if data is not None and options.modality is None:
        raise _no_modality()
    return parse_severities(options.severities)


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
    check_options(options, data.data)
    inputs = input_files(model.path, data.data)
    check_output_target(save_grid, inputs, "--save-grid")
    check_output_target(save_heatmap, inputs, "--save-heatmap")
    refuse_with_shard(shard, save_grid=save_grid, save_heatmap=save_heatmap)
    run = prepare(model, data, run_settings, json_target=json, shard=shard)
    config = shift_config(run.data, options, seed, batch_size)
    print_warnings(console, run.warnings)
    result, results = shift_section(run, config)
    if save_grid is not None:
        _grid(save_grid, run.data, config)
        console.print(f"corruption grid written to {save_grid}", markup=False, highlight=False)
    if save_heatmap is not None:
        _heatmap(save_heatmap, result, results, run.data)
        console.print(f"accuracy-drop heatmap written to {save_heatmap}", markup=False, highlight=False)
    doc = run.document(
        "shift",
        {**run.config, **config.to_dict()},
        results,
        seed=seed,
        wall_time_s=timer.elapsed,
        warnings=run.warnings,
    )
    run.attach_state(doc, {"shift": result})
    emit(console, json, doc)


def shift_config(data: AuditData, options: ShiftOptions, seed: int, batch_size: int) -> ShiftConfig:
    """Which table and corruptions: --modality, else the MedMNIST dataset audited."""
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
    mode = options.mode
    chosen_mode = default_mode(data.size[0]) if mode is Mode.auto else mode.value
    return ShiftConfig(
        corruptions=names, source=source, mode=chosen_mode, severities=parse_severities(options.severities),
        seed=seed, batch_size=batch_size,
    )  # fmt: skip


def shift_section(run: Prepared, config: ShiftConfig) -> tuple[ShiftResult, dict[str, Any]]:
    """Run the benchmark with a progress bar and print its tables (also used by ``run``)."""
    console = stderr_console()
    cells = len(config.corruptions) * len(config.severities)
    with progress_bar(console, "corrupting and predicting", run.data.n * cells) as advance:
        result = run_shift(run.model, run.data, config, advance)
    results = result.to_dict()
    tables.show(console, tables.audit_tables("shift", results, run.data.describe()))
    return result, results


def _catalogue(dataset: str | None, modality: str | None) -> Any:
    """Every corruption with its family and, for a chosen dataset, its five parameters."""
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


def _grid(path: Path, data: AuditData, config: ShiftConfig) -> None:
    """Image 0 of the audited data under every corruption and severity, exactly as evaluated."""
    from medaudit.report.figures import save_corruption_grid

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
    save_corruption_grid(path, clean[0], rows, f"{data.describe()}: corruptions ({config.mode})")


def _heatmap(path: Path, result: ShiftResult, results: dict[str, Any], data: AuditData) -> None:
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
