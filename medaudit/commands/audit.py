"""The command of an audit that needs nothing beyond its declaration (``medaudit eval`` and any
new audit plugin): its options, the shared model/data/run settings, ``--shard``, ``--json`` and
``--save-figures`` (the audit's ``diagrams`` and ``figures`` as PNG files)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from medaudit.audits import Audit
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
from medaudit.report.atomic import write_atomic
from medaudit.settings import RUN_PANEL, DataSettings, ModelSettings, RunSettings

SaveFiguresOpt = Annotated[
    Path | None,
    typer.Option(
        "--save-figures",
        help="Write the audit's charts and pictures as PNG files into FOLDER (it must exist): "
        "FOLDER/<audit>-<figure>.png, e.g. eval-reliability.png.",
        rich_help_panel=RUN_PANEL,
    ),
]
OPTION = "--save-figures"


def slug(name: str) -> str:
    """A figure's caption as a file-name part: lower-case letters, digits and single dashes."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "figure"


def check_figures_folder(folder: Path | None, protected: list[Path], audit: str) -> None:
    """Fail before any work unless ``folder`` is an existing, writable folder outside the inputs."""
    if folder is None:
        return
    if not folder.exists():
        raise ConfigError(f"{OPTION} {folder}: folder does not exist (create it first)")
    if not folder.is_dir():
        raise ConfigError(f"{OPTION} {folder} is not a folder: give the folder to write the PNG files into")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{OPTION} {folder} is not writable: choose another folder")
    check_output_target(folder / f"{audit}-figure.png", protected, OPTION)  # not inside a data folder


def figure_paths(folder: Path, audit: str, captions: list[str]) -> list[Path]:
    """``folder/<audit>-<caption slug>.png`` per caption; a slug taken twice gets -2, -3 ..."""
    paths: list[Path] = []
    for caption in captions:
        stem, suffix = f"{audit}-{slug(caption)}", 1
        while (path := folder / (stem + (f"-{suffix}" if suffix > 1 else "") + ".png")) in paths:
            suffix += 1
        paths.append(path)
    return paths


def write_figures(
    console: Console, folder: Path, audit: str, pictures: dict[str, bytes], protected: list[Path]
) -> None:
    """Write every picture (all targets checked first: none replaces an input), one line each."""
    if not pictures:
        message = f"{audit} drew no figures for this result: nothing written to {folder}"
        console.print(message, markup=False, highlight=False)
        return
    paths = figure_paths(folder, audit, list(pictures))
    for path in paths:
        check_output_target(path, protected, OPTION)
    for path, png in zip(paths, pictures.values(), strict=True):
        write_atomic(path, png)
        console.print(f"figure written to {path}", markup=False, highlight=False)


def audit_command(audit: Audit) -> Callable[..., None]:
    """``medaudit NAME``: check the options, load, run the audit, print its tables, write the
    figures (``--save-figures``) and the JSON."""

    def command(
        model: ModelSettings,
        data: DataSettings,
        run_settings: RunSettings,
        options: Any,
        shard: ShardOpt = None,
        json: JsonOpt = None,
        save_figures: SaveFiguresOpt = None,
    ) -> None:
        from medaudit.sources import input_files

        console, timer = stderr_console(), Timer()
        inputs = input_files(model.path, data.data)
        check_output_target(json, inputs)  # before anything heavy
        check_figures_folder(save_figures, inputs, audit.name)
        refuse_with_shard(shard, save_figures=save_figures)
        context = progress_context(
            console, run_settings.batch_size, data.seed, data.data, sharded=shard is not None
        )
        audit.check(options, context)
        if shard is not None and audit.shardable is not None:
            raise ConfigError(f"{audit.shardable}: run it without --shard")
        run = prepare(model, data, run_settings, json_target=json, shard=shard)
        config, result = audit.run(run, options, context)
        results = result.to_dict()
        tables.show(console, audit.tables(results, run.data.describe()))
        warnings = run.warnings + (result.warnings() if hasattr(result, "warnings") else [])
        print_warnings(console, warnings, run.model.info.notes)
        if save_figures is not None:
            label = run.data.describe()
            pictures = {**audit.diagrams(results, label), **audit.figures(run, result)}
            write_figures(console, save_figures, audit.name, pictures, inputs)
        doc = run.document(
            audit.name,
            {**run.config, **config, "batch_size": run_settings.batch_size},
            results,
            seed=data.seed,
            wall_time_s=timer.elapsed,
            warnings=warnings,
        )
        run.attach_state(doc, {audit.name: result})
        emit(console, json, doc)

    command.__doc__ = audit.help or audit.title
    command.__name__ = f"{audit.name}_command"
    return with_settings(
        options=audit.Options, model=ModelSettings, data=DataSettings, run_settings=RunSettings
    )(command)
