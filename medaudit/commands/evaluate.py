"""``medaudit eval``, ``info`` and ``list``."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from medaudit.commands.common import (
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
    ShardOpt,
    SizeOpt,
    Split,
    SplitOpt,
    StdOpt,
    TaskOpt,
    Timer,
    TrustOpt,
    check_output_target,
    emit,
    input_files,
    load_options,
    prepare,
    print_warnings,
    progress_bar,
    stderr_console,
)
from medaudit.document import document
from medaudit.errors import ConfigError
from medaudit.evaluate import EvalConfig, evaluate
from medaudit.models import load_model
from medaudit.registry import Registry
from medaudit.report import tables


def eval_command(
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
    shard: ShardOpt = None,
    json: JsonOpt = None,
) -> None:
    """Clean metrics: accuracy, balanced accuracy, AUC, per-class recall, confusion matrix."""
    console, timer = stderr_console(), Timer()
    config = EvalConfig(batch_size=batch_size)
    run = prepare(
        model, arch=arch, trust_checkpoint=trust_checkpoint, mean=mean, std=std, input_size=input_size,
        channels=channels, device=device, dataset=dataset, size=size, split=split, data_root=data_root,
        download=download, data=data, task=task, limit=limit, seed=seed, json_target=json,
        shard=shard, block=batch_size,
    )  # fmt: skip
    with progress_bar(console, "evaluating", run.data.n) as advance:
        result = evaluate(run.model, run.data, config, advance)
    results = result.to_dict()
    for table in tables.eval_tables(results, f"Clean metrics: {run.data.describe()}"):
        console.print(table)
    print_warnings(console, run.warnings)
    doc = run.document(
        "eval",
        {**run.config, "batch_size": batch_size},
        results,
        seed=seed,
        wall_time_s=timer.elapsed,
        warnings=run.warnings,
    )
    run.attach_state(doc, {"eval": result})
    emit(console, json, doc)


def info_command(
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
    console, timer = stderr_console(), Timer()
    check_output_target(json, input_files(model, None))
    options = load_options(arch, trust_checkpoint, mean, std, input_size, channels, device)
    audit_model = load_model(model, options)
    desc = audit_model.describe()
    if audit_model.is_onnx and audit_model.twin is not None and not audit_model.twin_verified:
        desc["gradients"] = "after verification on the audit data"
        desc["notes"].append("the converted torch graph is checked against onnxruntime when an audit runs")
    console.print(tables.info_table(desc))
    config = {"device": device.value, "load": {"arch": arch, "trust_checkpoint": trust_checkpoint}}
    doc = document(
        "info", config, desc, model=desc, data=None, seed=None, wall_time_s=timer.elapsed, warnings=[]
    )
    emit(console, json, doc)


def description(entry: object) -> str:
    """An entry's one-line description: its ``description``, else the first line of its docstring.

    '' when it has neither; the signature a dataclass writes as the docstring of a class that
    has none is not a description either.
    """
    text = getattr(entry, "description", None)
    if not isinstance(text, str):
        text = entry.__doc__ or ""
        if isinstance(entry, type) and text.startswith(f"{entry.__name__}("):  # a dataclass's signature
            text = ""
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""


def listing(what: str) -> list[tuple[str, str]]:
    """(name, description) of every entry of one built-in registry, sorted by name."""
    from medaudit.attacks import attacks
    from medaudit.confounders.artifacts import artifacts
    from medaudit.models.archs import architectures
    from medaudit.shift import corruptions

    registries: dict[str, Registry[Any]] = {
        "archs": architectures,
        "attacks": attacks,
        "corruptions": corruptions,
        "artifacts": artifacts,
    }
    if what not in registries:
        raise ConfigError(f"cannot list '{what}': choose from {', '.join(registries)}")
    return [(name, description(registries[what].get(name))) for name in registries[what]]


def list_command(
    what: Annotated[
        str, typer.Argument(help="What to list: archs, attacks, corruptions or artifacts.")
    ] = "archs",
) -> None:
    """List the built-in entries: architectures for state_dict checkpoints, attacks, shift
    corruptions, confounder artifacts."""
    rows = listing(what)
    table = Table(title=f"medaudit {what}", title_justify="left")
    table.add_column("name")
    table.add_column("description")
    for name, text in rows:
        table.add_row(name, text)
    stderr_console().print(table)
