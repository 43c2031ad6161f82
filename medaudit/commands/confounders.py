"""``medaudit confounders``: does the model react to marks, filters and noise it should ignore, and
does it do worse for one group of a metadata attribute.

Sub-commands: ``probe`` (the default: ``medaudit confounders MODEL`` probes), ``subgroups``,
``finetune``, ``discover`` and ``list``. The spellings of the single command they replaced
(``--metadata``, ``--finetune``, ``--list``) still lead to the same sub-command.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from medaudit.audits.confounders import (
    PANEL,
    ConfoundersAudit,
    DiscoveryOptions,
    ProbeOptions,
    discovery_figures,
    positive_index,
    run_discover,
)
from medaudit.commands.common import (
    JsonOpt,
    ShardOpt,
    Timer,
    check_output_target,
    emit,
    handle_errors,
    prepare,
    print_warnings,
    stderr_console,
)
from medaudit.commands.progress import context as progress_context
from medaudit.commands.progress import progress_bar
from medaudit.errors import ConfigError, not_a_file
from medaudit.options import setting, with_settings
from medaudit.report import tables
from medaudit.report.atomic import mark_read
from medaudit.settings import DataSettings, ModelSettings, RunSettings, Split

if TYPE_CHECKING:
    from medaudit.confounders.config import ProbeConfig
    from medaudit.data import AuditData
    from medaudit.sources import Prepared

SUBGROUP_PANEL = "Subgroups"
FINETUNE_PANEL = "Shortcut susceptibility"
DISCOVERY_PANEL = "Shortcut discovery"
MODES = {"--finetune": "finetune", "--metadata": "subgroups", "--attribute": "subgroups", "--list": "list"}
"""The single command's mode flags, and the sub-command each now names."""


class ProbeByDefault(TyperGroup):
    """``medaudit confounders MODEL ...`` runs ``probe``; the old mode flags pick their sub-command."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # click's Context, as typer vendors it
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            mode = next((MODES[a] for a in args if a in MODES), "probe")
            args = [mode, *(a for a in args if a != "--finetune")] if mode != "list" else ["list"]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=ProbeByDefault,
    help="Shortcuts and confounders: `probe` (the default: synthetic artifacts against matched controls), "
    "`discover` (unknown shortcuts), `subgroups` (metadata groups), `finetune` (susceptibility), `list`.",
    no_args_is_help=True,
)


@dataclass(frozen=True)
class SubgroupOptions:
    """``confounders subgroups``: metrics per group of a metadata attribute, with intervals."""

    metadata: Path | None = setting(
        None,
        "CSV with one row per image of the split (header row). Cannot be combined with --limit.",
        panel=SUBGROUP_PANEL,
        required=True,
    )
    attribute: str | None = setting(
        None, "Metadata column that defines the groups.", panel=SUBGROUP_PANEL, required=True
    )
    id_column: str | None = setting(
        None,
        "Metadata column holding each row's sample index (0..n-1); default: row i is image i.",
        panel=SUBGROUP_PANEL,
    )
    bootstrap: int = setting(1000, "Bootstrap rounds for the intervals.", panel=SUBGROUP_PANEL, min=1)


@dataclass(frozen=True)
class FinetuneOptions:
    """``confounders finetune``: how readily the model picks up an artifact as a shortcut."""

    artifact: str = setting(
        "tag", "The artifact planted on a fraction p of positive training images.", panel=FINETUNE_PANEL
    )
    strength: float = setting(1.0, "Its strength in (0, 1].", panel=FINETUNE_PANEL)
    positive_class: str | None = setting(
        None, "Class (name or index) that gets the artifact (default: the last class).", panel=FINETUNE_PANEL
    )
    fractions: str | None = setting(
        None,
        "Fractions p of positive training images given the artifact (default 0,0.1,0.25,0.5,1).",
        panel=FINETUNE_PANEL,
        listed=True,
    )
    epochs: int = setting(3, "Fine-tuning epochs per fraction.", panel=FINETUNE_PANEL, min=1)
    lr: float = setting(1e-3, "Adam learning rate for fine-tuning.", panel=FINETUNE_PANEL)
    train_limit: int = setting(
        2000,
        "Training images used (stratified, seeded subsample of the training split).",
        panel=FINETUNE_PANEL,
        min=1,
    )


@with_settings(options=ProbeOptions, model=ModelSettings, data=DataSettings, run_settings=RunSettings)
def probe_command(
    model: ModelSettings,
    data: DataSettings,
    run_settings: RunSettings,
    options: ProbeOptions,
    save_grid: Annotated[
        Path | None,
        typer.Option(
            "--save-grid",
            help="Write a PNG: one image under every artifact at each strength.",
            rich_help_panel=PANEL,
        ),
    ] = None,
    shard: ShardOpt = None,
    json: JsonOpt = None,
) -> None:
    """Flip rate, probability push and reversed-correlation AUC under synthetic confounders (no training)."""
    from medaudit.commands.common import refuse_with_shard
    from medaudit.sources import input_files

    console, timer = stderr_console(), Timer()
    batch_size, seed = run_settings.batch_size, data.seed
    audit = ConfoundersAudit()
    context = progress_context(console, batch_size, seed, data.data, sharded=shard is not None)
    audit.check(options, context)  # names, strengths and positions, before any loading
    refuse_with_shard(shard, save_grid=save_grid)
    check_output_target(save_grid, input_files(model.path, data.data), "--save-grid")
    run = prepare(model, data, run_settings, json_target=json, shard=shard)
    print_warnings(console, run.warnings, run.model.info.notes)
    config, result = audit.run(run, options, context)
    results = result.to_dict()
    tables.show(console, audit.tables(results, run.data.describe()))
    if save_grid is not None:
        _grid(save_grid, run.data, result.config)
        console.print(f"artifact grid written to {save_grid}", markup=False, highlight=False)
    doc = run.document(
        "confounders",
        {**run.config, **config, "mode": "probe"},
        results,
        seed=seed,
        wall_time_s=timer.elapsed,
        warnings=run.warnings,
    )
    run.attach_state(doc, {"confounders": result})
    emit(console, json, doc)


@with_settings(options=SubgroupOptions, model=ModelSettings, data=DataSettings, run_settings=RunSettings)
def subgroups_command(
    model: ModelSettings,
    data: DataSettings,
    run_settings: RunSettings,
    options: SubgroupOptions,
    json: JsonOpt = None,
) -> None:
    """Accuracy, balanced accuracy and AUC per group of a metadata attribute, with bootstrap intervals."""
    from medaudit.confounders.subgroups import read_metadata, subgroup_audit
    from medaudit.evaluate import predict_logits
    from medaudit.report.confounder_tables import subgroup_table

    console, timer = stderr_console(), Timer()
    metadata, attribute = options.metadata, options.attribute
    assert metadata is not None and attribute is not None  # required settings
    if not metadata.is_file():
        raise ConfigError(f"--metadata file {metadata} {not_a_file(metadata)}")
    # the metadata describes the whole split; a --limit subsample would need its original indices
    # re-derived to join, so the two are refused together rather than joined silently wrong
    if data.limit is not None:
        raise ConfigError(
            "--limit cannot be combined with --metadata: the metadata rows describe the whole split; "
            "audit the full split or pass a smaller --data file with matching metadata"
        )
    mark_read(metadata)
    run = prepare(model, data, run_settings, json_target=json)
    print_warnings(console, run.warnings, run.model.info.notes)
    groups = read_metadata(metadata, attribute, run.data.n, options.id_column)
    with progress_bar(console, "predicting", run.data.n) as advance:
        logits = predict_logits(run.model, run.data, run_settings.batch_size, advance)
    result = subgroup_audit(
        logits, run.data.labels, run.data.task, run.data.class_names, groups,
        rounds=options.bootstrap, seed=data.seed,
    )  # fmt: skip
    results = {"attribute": attribute, **result}
    console.print(subgroup_table(results, f"Subgroups: {run.data.describe()}"))
    subgroup = {"metadata": str(metadata), "attribute": attribute, "id_column": options.id_column}
    doc = run.document(
        "confounders",
        {
            **run.config, **subgroup, "bootstrap": options.bootstrap,
            "batch_size": run_settings.batch_size, "mode": "subgroups",
        },
        {"subgroups": results},
        seed=data.seed,
        wall_time_s=timer.elapsed,
        warnings=run.warnings,
    )  # fmt: skip
    emit(console, json, doc)


@with_settings(options=FinetuneOptions, model=ModelSettings, data=DataSettings, run_settings=RunSettings)
def finetune_command(
    model: ModelSettings,
    data: DataSettings,
    run_settings: RunSettings,
    options: FinetuneOptions,
    json: JsonOpt = None,
) -> None:
    """Fine-tune copies of the model with the artifact on a fraction p of positive training images and report the o.o.d. (reversed-correlation) AUC against p. Needs a model with gradients."""
    from medaudit.confounders.config import DEFAULT_FRACTIONS, FinetuneConfig
    from medaudit.registries import artifacts
    from medaudit.sources import parse_floats

    console, timer = stderr_console(), Timer()
    if data.split is Split.train:
        raise ConfigError("finetune trains on the train split: audit --split test or val")
    artifacts.check(options.artifact)
    fractions = parse_floats(options.fractions, "--fractions") or DEFAULT_FRACTIONS
    config = FinetuneConfig(
        artifact=options.artifact, strength=options.strength, fractions=tuple(sorted(fractions)),
        epochs=options.epochs, lr=options.lr, batch_size=min(run_settings.batch_size, 64),
        limit=options.train_limit, seed=data.seed,
    )  # fmt: skip
    run = prepare(model, data, run_settings, json_target=json)
    print_warnings(console, run.warnings, run.model.info.notes)
    config = replace(config, positive_class=positive_index(run.data, options.positive_class))
    results = _finetune(run, config, data)
    doc = run.document(
        "confounders",
        {**run.config, **config.to_dict(), "batch_size": config.batch_size, "mode": "finetune"},
        {"finetune": results},
        seed=data.seed,
        wall_time_s=timer.elapsed,
        warnings=run.warnings,
    )
    emit(console, json, doc)


@with_settings(options=DiscoveryOptions, model=ModelSettings, data=DataSettings, run_settings=RunSettings)
def discover_command(
    model: ModelSettings,
    data: DataSettings,
    run_settings: RunSettings,
    options: DiscoveryOptions,
    save_picture: Annotated[
        Path | None,
        typer.Option(
            "--save-picture",
            help="Write a PNG: the patches found, over an example image.",
            rich_help_panel=DISCOVERY_PANEL,
        ),
    ] = None,
    json: JsonOpt = None,
) -> None:
    """Search each region of a grid for a small universal patch that flips many predictions towards one class, against the same search elsewhere: shortcuts the artifact library does not have."""
    from medaudit.report.atomic import write_atomic
    from medaudit.sources import input_files

    console, timer = stderr_console(), Timer()
    context = progress_context(console, run_settings.batch_size, data.seed, data.data)
    check_output_target(save_picture, input_files(model.path, data.data), "--save-picture")
    run = prepare(model, data, run_settings, json_target=json)
    print_warnings(console, run.warnings, run.model.info.notes)
    config, result = run_discover(run, options, context)
    results = result.to_dict()
    tables.show(console, ConfoundersAudit().tables(results, run.data.describe()))
    if save_picture is not None:
        (picture,) = discovery_figures(run, result).values()
        write_atomic(save_picture, picture)
        console.print(f"discovery picture written to {save_picture}", markup=False, highlight=False)
    doc = run.document(
        "confounders",
        {**run.config, **config, "batch_size": run_settings.batch_size, "mode": "discover"},
        results,
        seed=data.seed,
        wall_time_s=timer.elapsed,
        warnings=run.warnings,
    )
    emit(console, json, doc)


def list_command() -> None:
    """Print the artifacts (no model needed)."""
    from medaudit.registries import artifacts  # the declared names and descriptions: no torch
    from medaudit.report.confounder_tables import artifact_list_table

    rows = [(name, artifacts.description(name)) for name in artifacts.names()]
    stderr_console().print(artifact_list_table(rows))


def _finetune(run: Prepared, config: Any, data: DataSettings) -> dict[str, Any]:
    """Load the training split of the audited dataset, fine-tune per fraction with a progress bar, print."""
    from medaudit.confounders.finetune import run_finetune
    from medaudit.data import load_data
    from medaudit.report.confounder_tables import finetune_table
    from medaudit.sources import data_spec

    console = stderr_console()
    spec = data_spec(run.model, replace(data, split=Split.train, limit=None, seed=config.seed))
    train = load_data(spec)
    if train.channels != run.data.channels or train.size != run.data.size:
        raise ConfigError(
            f"the training split ({train.channels} channels, {train.size[0]}x{train.size[1]}) does not match "
            f"the audited split ({run.data.channels} channels, {run.data.size[0]}x{run.data.size[1]})"
        )
    total = config.total_work(config.n_train(train.n), run.data.n)
    with progress_bar(console, f"fine-tuning with {config.artifact}", total) as advance:
        result = run_finetune(run.model, train, run.data, config, advance)
    results = {"train_data": {**train.identity, "n": train.n}, **result.to_dict()}
    console.print(finetune_table(results, f"Shortcut susceptibility: {run.data.describe()}"))
    return results


def _grid(path: Path, data: AuditData, config: ProbeConfig) -> None:
    """Image 0 under every artifact at each strength, exactly as probed (first position for tag/patch)."""
    from medaudit.confounders.artifacts import apply_artifact
    from medaudit.report.figures import save_corruption_grid

    clean = data.uint8_images(0, 1)
    rows = {}
    for name in config.artifacts:
        position = config.positions_of(name)[0]
        label = f"{name} ({position})" if position else name
        rows[label] = [
            apply_artifact(clean, name, s, config.seed, indices=[0], **config.options_of(name, position))[0]
            .permute(1, 2, 0)
            .numpy()
            for s in config.strengths
        ]
    save_corruption_grid(
        path,
        clean[0].permute(1, 2, 0).numpy(),
        rows,
        f"{data.describe()}: artifacts at each strength",
        [f"strength {s:g}" for s in config.strengths],
    )


for _name, _command in (
    ("probe", probe_command),
    ("subgroups", subgroups_command),
    ("finetune", finetune_command),
    ("discover", discover_command),
    ("list", list_command),
):
    app.command(_name)(handle_errors(_command))
