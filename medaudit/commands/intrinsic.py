"""``medaudit intrinsic``: label sharpness, intrinsic dimension of data and features, model smoothness."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

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
    MeanOpt,
    SeedOpt,
    SizeOpt,
    Split,
    StdOpt,
    TaskOpt,
    Timer,
    TrustOpt,
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
from medaudit.report import tables

PANEL = "Intrinsic"
DATA_PANEL = "Data"


class Normalizer(str, Enum):
    k1 = "k-1"
    k2 = "k-2"


def intrinsic_command(
    model: Annotated[
        Path | None,
        typer.Argument(
            help="Model file (optional): adds the representation dimension and model smoothness.",
            show_default=False,
        ),
    ] = None,
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
    limit: Annotated[
        int,
        typer.Option(
            "--limit",
            min=1,
            help="Use a stratified, seeded subsample of at most N images (all pairs cost N^2).",
            rich_help_panel=DATA_PANEL,
        ),
    ] = 5000,
    split: Annotated[
        Split,
        typer.Option(
            "--split", help="Data split (the paper measures training sets).", rich_help_panel=DATA_PANEL
        ),
    ] = Split.train,
    arch: ArchOpt = None,
    trust_checkpoint: TrustOpt = False,
    mean: MeanOpt = None,
    std: StdOpt = None,
    input_size: InputSizeOpt = None,
    channels: ChannelsOpt = None,
    dataset: DatasetOpt = None,
    size: SizeOpt = None,
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
    data: DataOpt = None,
    task: TaskOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = Device.auto,
    batch_size: BatchOpt = 256,
    json: JsonOpt = None,
) -> None:
    """Label sharpness K_F, intrinsic dimension of the data (and of a model's features), model smoothness."""
    console, timer = stderr_console(), Timer()
    config = IntrinsicConfig(
        dimension=DimensionConfig(k=k, normalizer=normalizer.value, rounds=rounds, seed=seed),
        layer=layer,
        batch_size=batch_size,
        lipschitz=None
        if no_lipschitz
        else LipschitzConfig(eps=lipschitz_eps, steps=lipschitz_steps, batch_size=batch_size, seed=seed),
    )
    inputs = input_files(model, data)
    check_output_target(save_plot, inputs, "--save-plot")
    if model is None:
        if layer is not None:
            raise ConfigError("--layer needs a model")
        check_output_target(json, inputs)
        spec = data_spec(
            None, dataset=dataset, size=size, split=split, data_root=data_root, download=download,
            data=data, task=task, limit=limit, seed=seed,
        )  # fmt: skip
        if spec.dataset is None and spec.data is None:
            raise ConfigError("give a model, --dataset NAME or --data PATH")
        audit_data, audit_model, warnings, run_config = load_data(spec), None, [], {"data": spec.to_dict()}
    else:
        run = prepare(
            model, arch=arch, trust_checkpoint=trust_checkpoint, mean=mean, std=std, input_size=input_size,
            channels=channels, device=device, dataset=dataset, size=size, split=split, data_root=data_root,
            download=download, data=data, task=task, limit=limit, seed=seed, json_target=json,
        )  # fmt: skip
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
