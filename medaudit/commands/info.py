"""``medaudit info`` (what a model file is) and ``list`` (the built-in registries)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from medaudit.commands.common import (
    JsonOpt,
    Timer,
    check_output_target,
    emit,
    print_warnings,
    stderr_console,
)
from medaudit.document import document
from medaudit.errors import ConfigError
from medaudit.options import with_settings
from medaudit.report import tables
from medaudit.settings import ModelSettings, RunSettings
from medaudit.sources import input_files, load_options, model_path


@with_settings(model=ModelSettings, run_settings=RunSettings)
def info_command(model: ModelSettings, run_settings: RunSettings, json: JsonOpt = None) -> None:
    """Format, input spec, parameter count, classes and whether gradients are available."""
    console, timer = stderr_console(), Timer()
    path = model_path(model)
    check_output_target(json, input_files(path, None))
    options = load_options(model, run_settings.device)
    from medaudit.models import load_model

    audit_model = load_model(path, options)
    desc = audit_model.describe()
    if audit_model.is_onnx and audit_model.twin is not None and not audit_model.twin_verified:
        desc["gradients"] = "after verification on the audit data"
        desc["notes"].append("the converted torch graph is checked against onnxruntime when an audit runs")
    console.print(tables.info_table(desc))
    print_warnings(console, audit_model.info.warnings)
    config = {
        "device": run_settings.device.value,
        "load": {"arch": model.arch, "trust_checkpoint": model.trust_checkpoint},
    }
    doc = document(
        "info",
        config,
        desc,
        model=desc,
        data=None,
        seed=None,
        wall_time_s=timer.elapsed,
        warnings=audit_model.info.warnings,
    )
    emit(console, json, doc)


def listing(what: str) -> list[tuple[str, str]]:
    """(name, description) of every entry of one built-in registry, sorted by name; the
    declarations are read, nothing (torch included) is imported."""
    from medaudit.registries import BUILT_IN

    if what not in BUILT_IN:
        raise ConfigError(f"cannot list '{what}': choose from {', '.join(BUILT_IN)}")
    registry = BUILT_IN[what]
    rows = [(name, registry.description(name)) for name in registry]
    if what == "attacks":  # the default --attack is a plan of these, not an attack of its own
        from medaudit.attacks.plan import AUTO_PLAN

        rows.insert(0, ("auto", AUTO_PLAN))
    return rows


def list_command(
    what: Annotated[
        str, typer.Argument(help="What to list: archs, attacks, corruptions, artifacts or methods.")
    ] = "archs",
) -> None:
    """List the built-in entries: architectures for state_dict checkpoints, attacks, shift
    corruptions, confounder artifacts, hardening methods."""
    rows = listing(what)
    table = Table(title=f"medaudit {what}", title_justify="left")
    table.add_column("name")
    table.add_column("description")
    for name, text in rows:
        table.add_row(name, text)
    stderr_console().print(table)
