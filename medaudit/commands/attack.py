"""``medaudit attack``: robustness sweeps and minimal-perturbation margins."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from medaudit.audits.attack import PANEL, AttackAudit, AttackOptions
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
from medaudit.commands.progress import progress_bar
from medaudit.errors import ConfigError
from medaudit.options import with_settings
from medaudit.report import tables
from medaudit.settings import DataSettings, ModelSettings, RunSettings
from medaudit.sources import input_files

if TYPE_CHECKING:
    from medaudit.attacks.checks import AuditedSweep
    from medaudit.attacks.margin import MarginConfig, MarginResult
    from medaudit.sources import Prepared


@with_settings(options=AttackOptions, model=ModelSettings, data=DataSettings, run_settings=RunSettings)
def attack_command(
    model: ModelSettings,
    data: DataSettings,
    run_settings: RunSettings,
    options: AttackOptions,
    margin: Annotated[
        bool,
        typer.Option(
            "--margin",
            help="Minimal perturbation per sample (bisection) instead of a sweep.",
            rich_help_panel=PANEL,
        ),
    ] = False,
    tolerance: Annotated[
        float,
        typer.Option(
            "--tolerance", help="--margin: bisection tolerance in [0,1] units.", rich_help_panel=PANEL
        ),
    ] = 0.05 / 255,
    save_adv: Annotated[
        Path | None,
        typer.Option(
            "--save-adv",
            help="Write adversarial images, labels, predictions and eps to this .npz.",
            rich_help_panel=PANEL,
        ),
    ] = None,
    save_grid: Annotated[
        Path | None,
        typer.Option(
            "--save-grid",
            help="Write a PNG: clean | adversarial | amplified difference.",
            rich_help_panel=PANEL,
        ),
    ] = None,
    shard: ShardOpt = None,
    json: JsonOpt = None,
) -> None:
    """Adversarial robustness: worst case per sample over attacks and restarts, plus honesty checks."""
    console, timer = stderr_console(), Timer()
    batch_size, seed = run_settings.batch_size, data.seed
    audit = AttackAudit()
    context = progress_context(console, batch_size, seed, data.data)
    if margin and (save_adv is not None or save_grid is not None):
        raise ConfigError("--save-adv and --save-grid save a sweep's images: drop them with --margin")
    inputs = input_files(model.path, data.data)
    check_output_target(save_adv, inputs, "--save-adv")
    check_output_target(save_grid, inputs, "--save-grid")
    refuse_with_shard(shard, save_adv=save_adv, save_grid=save_grid)
    margin_config = None
    if margin:  # every option is checked before the model and data are loaded
        margin_config = _margin_config(options, tolerance, batch_size, seed)
    else:
        audit.check(options, context)
    run = prepare(model, data, run_settings, json_target=json, shard=shard)
    state: MarginResult | AuditedSweep
    if margin_config is not None:
        command, config, state = "attack-margin", *_margin(run, margin_config)
        tables.show(console, tables.audit_tables(command, state.to_dict(), run.data.describe()))
        warnings = run.warnings
    else:
        command = "attack"
        keep = save_adv is not None or save_grid is not None
        config, state = audit.sweep(run, options, context, keep_adversarial=keep)
        tables.show(console, audit.tables(state.to_dict(), run.data.describe()))
        warnings = run.warnings + state.warnings()
        _save(console, state, run, save_adv, save_grid)
    print_warnings(console, warnings, run.model.info.notes)
    doc = run.document(
        command,
        {**run.config, **config, "batch_size": batch_size},
        state.to_dict(),
        seed=seed,
        wall_time_s=timer.elapsed,
        warnings=warnings,
    )
    run.attach_state(doc, {command: state})
    emit(console, json, doc)


def _save(
    console: Console, audited: AuditedSweep, run: Prepared, adv: Path | None, grid: Path | None
) -> None:
    """The sweep's images: ``--save-adv`` (.npz) and ``--save-grid`` (PNG)."""
    from medaudit.report import artifacts

    if adv is not None:
        artifacts.save_adversarial(adv, audited.result, run.data)
        console.print(f"adversarial examples written to {adv}", markup=False, highlight=False)
    if grid is not None:
        rows = artifacts.save_grid(grid, audited.result, run.data)
        console.print(
            f"grid of {rows} broken samples written to {grid}" if rows else "nothing broken: no grid written"
        )


def _margin_config(options: AttackOptions, tolerance: float, batch_size: int, seed: int) -> MarginConfig:
    from medaudit.attacks.margin import MarginConfig
    from medaudit.attacks.plan import parse_eps

    return MarginConfig(
        attack="pgd-cw" if options.attack == "auto" else options.attack, norm=options.norm.value,
        eps_max=max(parse_eps(options.eps)), tolerance=tolerance,
        steps=20 if options.steps is None else options.steps,
        restarts=1 if options.restarts is None else options.restarts, batch_size=batch_size, seed=seed,
    )  # fmt: skip


def _margin(run: Prepared, config: MarginConfig) -> tuple[dict[str, Any], MarginResult]:
    from medaudit.attacks.margin import minimal_perturbation

    if not run.model.has_gradients:
        raise ConfigError("--margin needs gradients and this model is black-box only")
    with progress_bar(stderr_console(), "bisecting", run.data.n) as advance:
        result = minimal_perturbation(run.model, run.data, config, advance)
    config_record = {
        "margin": {
            k: getattr(config, k) for k in ("attack", "norm", "eps_max", "tolerance", "steps", "restarts")
        }
    }
    return config_record, result
