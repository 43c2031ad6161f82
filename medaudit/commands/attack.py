"""``medaudit attack``: robustness sweeps and minimal-perturbation margins."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from medaudit.attacks import run_attacks
from medaudit.attacks.checks import AuditedSweep, run_checks
from medaudit.attacks.margin import MarginConfig, MarginResult, minimal_perturbation
from medaudit.attacks.plan import build_config, check_request, parse_eps
from medaudit.audits.attack import PANEL, AttackOptions
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
from medaudit.errors import ConfigError
from medaudit.options import with_settings
from medaudit.report import artifacts, tables
from medaudit.settings import DataSettings, ModelSettings, RunSettings


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
        check_options(options, batch_size, seed)
    run = prepare(model, data, run_settings, json_target=json, shard=shard)
    state: MarginResult | AuditedSweep
    if margin_config is not None:
        command, config, state, warnings = _margin(run, margin_config)
    else:
        command, config, state, warnings = sweep_section(run, options, batch_size, seed, save_adv, save_grid)
    print_warnings(console, warnings)
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


def check_options(options: AttackOptions, batch_size: int, seed: int) -> None:
    """Everything about the sweep that can be checked before the model and data are loaded."""
    check_request(options.attack, options.eps, options.norm.value, batch_size, seed, **options.effort)


def sweep_section(
    run: Prepared,
    options: AttackOptions,
    batch_size: int,
    seed: int,
    save_adv: Path | None = None,
    save_grid: Path | None = None,
) -> tuple[str, dict[str, Any], AuditedSweep, list[str]]:
    """Run the sweep and its honesty checks, print the tables, save the artifacts (also used by ``run``)."""
    console = stderr_console()
    norm = options.norm
    config, notes = build_config(
        options.attack, run.model, options.eps, norm.value, batch_size, seed, **options.effort
    )
    keep = save_adv is not None or save_grid is not None
    with progress_bar(console, "attacking", run.data.n * len(config.eps) * len(config.attacks)) as advance:
        result = run_attacks(run.model, run.data, config, advance, keep_adversarial=keep)
    with progress_bar(console, "honesty checks", None):
        audited = AuditedSweep(result, run_checks(run.model, run.data, result), tuple(notes))
    warnings = run.warnings + audited.warnings()
    tables.show(console, tables.audit_tables("attack", audited.to_dict(), run.data.describe()))
    if save_adv is not None:
        artifacts.save_adversarial(save_adv, result, run.data)
        console.print(f"adversarial examples written to {save_adv}", markup=False, highlight=False)
    if save_grid is not None:
        rows = artifacts.save_grid(save_grid, result, run.data)
        console.print(
            f"grid of {rows} broken samples written to {save_grid}"
            if rows
            else "nothing broken: no grid written"
        )
    config_record = {
        "attacks": list(config.attacks),
        "eps": list(config.eps),
        "norm": config.norm,
        "params": config.params,
    }
    return "attack", config_record, audited, warnings


def _margin_config(options: AttackOptions, tolerance: float, batch_size: int, seed: int) -> MarginConfig:
    return MarginConfig(
        attack="pgd-cw" if options.attack == "auto" else options.attack, norm=options.norm.value,
        eps_max=max(parse_eps(options.eps)), tolerance=tolerance,
        steps=20 if options.steps is None else options.steps,
        restarts=1 if options.restarts is None else options.restarts, batch_size=batch_size, seed=seed,
    )  # fmt: skip


def _margin(run: Prepared, config: MarginConfig) -> tuple[str, dict[str, Any], MarginResult, list[str]]:
    console = stderr_console()
    if not run.model.has_gradients:
        raise ConfigError("--margin needs gradients and this model is black-box only")
    with progress_bar(console, "bisecting", run.data.n) as advance:
        result = minimal_perturbation(run.model, run.data, config, advance)
    tables.show(console, tables.audit_tables("attack-margin", result.to_dict(), run.data.describe()))
    config_record = {
        "margin": {
            k: getattr(config, k) for k in ("attack", "norm", "eps_max", "tolerance", "steps", "restarts")
        }
    }
    return "attack-margin", config_record, result, run.warnings
