"""The ``medaudit`` command line: parse, call the audit, render. Nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from medaudit import __version__
from medaudit.cli_common import (
    ArchOpt,
    BatchOpt,
    ChannelsOpt,
    DataOpt,
    DataRootOpt,
    DatasetOpt,
    Device,
    DeviceOpt,
    DownloadOpt,
    InputSizeOpt,
    JsonOpt,
    LimitOpt,
    MeanOpt,
    ModelArg,
    SeedOpt,
    Settings,
    SizeOpt,
    Split,
    SplitOpt,
    StdOpt,
    TaskOpt,
    Timer,
    TrustOpt,
    check_json_target,
    configure,
    emit,
    handle_errors,
    load_model_and_data,
    load_options,
    progress_bar,
    stderr_console,
)
from medaudit.evaluate import EvalConfig, evaluate
from medaudit.models import load_model
from medaudit.report import schema, tables

app = typer.Typer(
    name="medaudit",
    help="Audit a trained medical-image classifier before release.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medaudit {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Audit a trained medical-image classifier before release."""
    configure(Settings(debug=debug))


@app.command(rich_help_panel="Audits")
@handle_errors
def eval(
    model: ModelArg,
    arch: ArchOpt = None,
    trust_checkpoint: TrustOpt = False,
    mean: MeanOpt = None,
    std: StdOpt = None,
    input_size: InputSizeOpt = None,
    channels: ChannelsOpt = None,
    dataset: DatasetOpt = None,
    size: SizeOpt = None,
    split: SplitOpt = Split.test,
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
    data: DataOpt = None,
    task: TaskOpt = None,
    limit: LimitOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = Device.auto,
    batch_size: BatchOpt = 256,
    json: JsonOpt = None,
) -> None:
    """Clean metrics: accuracy, balanced accuracy, AUC, per-class recall, confusion matrix."""
    console = stderr_console()
    timer = Timer()
    check_json_target(json, [p for p in (model, data) if p is not None])
    config = EvalConfig(batch_size=batch_size)
    options = load_options(arch, trust_checkpoint, mean, std, input_size, channels, device)
    spec_args = dict(
        dataset=dataset,
        size=size,
        split=split,
        data_root=data_root,
        download=download,
        data=data,
        task=task,
        limit=limit,
        seed=seed,
    )
    audit_model, audit_data, warnings = load_model_and_data(model, options, spec_args)
    with progress_bar(console, "evaluating", audit_data.n) as advance:
        result = evaluate(audit_model, audit_data, config, advance)
    results = result.to_dict()
    for table in tables.eval_tables(results, f"Clean metrics: {audit_data.describe()}"):
        console.print(table)
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    doc = schema.document(
        "eval",
        {
            "batch_size": batch_size,
            "device": device.value,
            "load": _load_config(options),
            "data": _data_config(spec_args),
        },
        results,
        model=audit_model.describe(),
        data={**audit_data.identity, "n": audit_data.n},
        seed=seed,
        wall_time_s=timer.elapsed,
        warnings=warnings,
    )
    emit(console, json, doc)


@app.command(rich_help_panel="Utilities")
@handle_errors
def info(
    model: ModelArg,
    arch: ArchOpt = None,
    trust_checkpoint: TrustOpt = False,
    mean: MeanOpt = None,
    std: StdOpt = None,
    input_size: InputSizeOpt = None,
    channels: ChannelsOpt = None,
    device: DeviceOpt = Device.auto,
    json: JsonOpt = None,
) -> None:
    """Format, input spec, parameter count, classes and whether gradients are available."""
    console = stderr_console()
    timer = Timer()
    check_json_target(json, [model])
    options = load_options(arch, trust_checkpoint, mean, std, input_size, channels, device)
    audit_model = load_model(model, options)
    desc = audit_model.describe()
    if audit_model.is_onnx and audit_model.twin is not None and not audit_model.twin_verified:
        desc["gradients"] = "after verification on the audit data"
        desc["notes"].append("the converted torch graph is checked against onnxruntime when an audit runs")
    console.print(tables.info_table(desc))
    doc = schema.document(
        "info",
        {"load": _load_config(options)},
        desc,
        model=desc,
        data=None,
        seed=None,
        wall_time_s=timer.elapsed,
        warnings=[],
    )
    emit(console, json, doc)


@app.command("list", rich_help_panel="Utilities")
@handle_errors
def list_entries(
    what: Annotated[str, typer.Argument(help="What to list: archs.")] = "archs",
) -> None:
    """List built-in entries (architectures for state_dict checkpoints)."""
    from medaudit.models.archs import architectures

    registries = {"archs": architectures}
    if what not in registries:
        from medaudit.errors import ConfigError

        raise ConfigError(f"cannot list '{what}': choose from {', '.join(registries)}")
    table = Table(title=f"medaudit {what}", title_justify="left")
    table.add_column("name")
    table.add_column("description")
    for name in registries[what]:
        doc = (registries[what].get(name).__doc__ or "").strip().splitlines()
        table.add_row(name, doc[0] if doc else "")
    stderr_console().print(table)


def _load_config(options) -> dict:
    return {
        "arch": options.arch,
        "trust_checkpoint": options.trust_checkpoint,
        "spec_overrides": options.spec.to_dict(),
    }


def _data_config(spec_args: dict) -> dict:
    return {
        k: (v.value if hasattr(v, "value") else str(v) if isinstance(v, Path) else v)
        for k, v in spec_args.items()
    }


if __name__ == "__main__":
    app()
