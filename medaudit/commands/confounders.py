"""``medaudit confounders``: does the model react to marks, filters and noise it should ignore (probe mode),
and does it do worse for one group of a metadata attribute (subgroup mode, ``--metadata``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from medaudit.audits.confounders import PANEL, ProbeOptions
from medaudit.commands.common import (
    JsonOpt,
    Prepared,
    ShardOpt,
    Timer,
    check_output_target,
    data_spec,
    emit,
    input_files,
    parse_floats,
    prepare,
    print_warnings,
    refuse_with_shard,
    stderr_console,
)
from medaudit.commands.progress import progress_bar
from medaudit.confounders.artifacts import CORNERS, apply_artifact, list_artifacts
from medaudit.confounders.finetune import DEFAULT_FRACTIONS, FinetuneConfig, run_finetune
from medaudit.confounders.probe import (
    DEFAULT_ARTIFACTS,
    ProbeConfig,
    ProbeResult,
    resolve_positive,
    run_probe,
)
from medaudit.confounders.subgroups import read_metadata, subgroup_audit
from medaudit.data import AuditData, load_data
from medaudit.errors import ConfigError
from medaudit.evaluate import predict_logits
from medaudit.options import with_settings
from medaudit.report import tables
from medaudit.report.atomic import mark_read
from medaudit.report.confounder_tables import (
    artifact_list_table,
    finetune_table,
    subgroup_table,
)
from medaudit.settings import DataSettings, OptionalModelSettings, RunSettings, Split

SUBGROUP_PANEL = "Subgroups"
FINETUNE_PANEL = "Shortcut susceptibility (--finetune)"


def _names(text: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if text is None:
        return default
    return tuple(part.strip() for part in text.split(",") if part.strip())


def positive_index(data: AuditData, value: str | None) -> int | None:
    """--positive-class as a class name or an index."""
    if value is None:
        return None
    if value in data.class_names:
        return data.class_names.index(value)
    try:
        return int(value)
    except ValueError:
        raise ConfigError(
            f"--positive-class '{value}' is not a class: choose from {', '.join(data.class_names)} or an index"
        ) from None


@with_settings(options=ProbeOptions, model=OptionalModelSettings, data=DataSettings, run_settings=RunSettings)
def confounders_command(
    model: OptionalModelSettings,
    data: DataSettings,
    run_settings: RunSettings,
    options: ProbeOptions,
    list_: Annotated[
        bool,
        typer.Option("--list", help="Print the artifacts and exit (no model needed).", rich_help_panel=PANEL),
    ] = False,
    save_grid: Annotated[
        Path | None,
        typer.Option(
            "--save-grid",
            help="Write a PNG: one image under every artifact at each strength.",
            rich_help_panel=PANEL,
        ),
    ] = None,
    metadata: Annotated[
        Path | None,
        typer.Option(
            "--metadata",
            help="CSV with one row per image of the split (header row): run the subgroup audit instead of "
            "the probes. Cannot be combined with --limit.",
            rich_help_panel=SUBGROUP_PANEL,
        ),
    ] = None,
    attribute: Annotated[
        str | None,
        typer.Option(
            "--attribute", help="Metadata column that defines the groups.", rich_help_panel=SUBGROUP_PANEL
        ),
    ] = None,
    id_column: Annotated[
        str | None,
        typer.Option(
            "--id-column",
            help="Metadata column holding each row's sample index (0..n-1); default: row i is image i.",
            rich_help_panel=SUBGROUP_PANEL,
        ),
    ] = None,
    bootstrap: Annotated[
        int,
        typer.Option(
            "--bootstrap", help="Bootstrap rounds for the intervals.", rich_help_panel=SUBGROUP_PANEL
        ),
    ] = 1000,
    finetune: Annotated[
        bool,
        typer.Option(
            "--finetune",
            help="Fine-tune copies of the model on the training split with the first --artifacts entry "
            "(default tag) at the largest --strengths value on a fraction p of positive-class images, and "
            "report the o.o.d. (reversed-correlation) AUC against p. Needs a model with gradients.",
            rich_help_panel=FINETUNE_PANEL,
        ),
    ] = False,
    fractions: Annotated[
        str | None,
        typer.Option(
            "--fractions",
            help=f"Fractions p of positive training images given the artifact "
            f"(default {','.join(f'{p:g}' for p in DEFAULT_FRACTIONS)}).",
            rich_help_panel=FINETUNE_PANEL,
        ),
    ] = None,
    epochs: Annotated[
        int, typer.Option("--epochs", help="Fine-tuning epochs per fraction.", rich_help_panel=FINETUNE_PANEL)
    ] = 3,
    lr: Annotated[
        float,
        typer.Option("--lr", help="Adam learning rate for fine-tuning.", rich_help_panel=FINETUNE_PANEL),
    ] = 1e-3,
    train_limit: Annotated[
        int,
        typer.Option(
            "--train-limit",
            help="Training images used (stratified, seeded subsample of the training split).",
            rich_help_panel=FINETUNE_PANEL,
        ),
    ] = 2000,
    shard: ShardOpt = None,
    json: JsonOpt = None,
) -> None:
    """Flip rate, probability push and reversed-correlation AUC under synthetic confounders (no training)."""
    console, timer = stderr_console(), Timer()
    if list_:
        console.print(artifact_list_table(list_artifacts()))
        return
    batch_size, seed, limit = run_settings.batch_size, data.seed, data.limit
    if model.path is None:
        raise ConfigError("give a model file (or --list for the artifacts)")
    refuse_with_shard(shard, finetune=finetune, metadata=metadata, save_grid=save_grid)
    if finetune:
        if metadata is not None or save_grid is not None:
            raise ConfigError("--finetune cannot be combined with --metadata or --save-grid")
        if data.split is Split.train:
            raise ConfigError("--finetune trains on the train split: audit --split test or val")
        strength_values = probe_config(options, batch_size, seed).strengths
        fraction_values = parse_floats(fractions, "--fractions") or DEFAULT_FRACTIONS
        ft_config = FinetuneConfig(
            artifact=_names(options.artifacts, ("tag",))[0], strength=max(strength_values),
            fractions=tuple(sorted(fraction_values)), epochs=epochs, lr=lr, batch_size=min(batch_size, 64),
            limit=train_limit, seed=seed,
        )  # fmt: skip
        run = prepare(model, data, run_settings, json_target=json)
        print_warnings(console, run.warnings)
        ft_config = FinetuneConfig(
            **{**ft_config.__dict__, "positive_class": positive_index(run.data, options.positive_class)}
        )
        results = finetune_section(run, ft_config, data)
        doc = run.document(
            "confounders",
            {**run.config, **ft_config.to_dict(), "batch_size": ft_config.batch_size, "mode": "finetune"},
            {"finetune": results},
            seed=seed,
            wall_time_s=timer.elapsed,
            warnings=run.warnings,
        )
        emit(console, json, doc)
        return
    if metadata is not None or attribute is not None or id_column is not None:
        _check_subgroup_options(metadata, attribute, limit, bootstrap, options.artifacts, save_grid)
        assert metadata is not None and attribute is not None
        mark_read(metadata)
        run = prepare(model, data, run_settings, json_target=json)
        print_warnings(console, run.warnings)
        results = subgroups_section(run, metadata, attribute, id_column, bootstrap, seed, batch_size)
        subgroup = {"metadata": str(metadata), "attribute": attribute, "id_column": id_column}
        doc = run.document(
            "confounders",
            {**run.config, **subgroup, "bootstrap": bootstrap, "batch_size": batch_size, "mode": "subgroups"},
            {"subgroups": results},
            seed=seed,
            wall_time_s=timer.elapsed,
            warnings=run.warnings,
        )
        emit(console, json, doc)
        return
    config = probe_config(options, batch_size, seed)  # names, strengths and positions, before any loading
    inputs = input_files(model.path, data.data)
    check_output_target(save_grid, inputs, "--save-grid")
    run = prepare(model, data, run_settings, json_target=json, shard=shard)
    positive = positive_index(run.data, options.positive_class)
    resolve_positive(run.data, positive)
    config = replace(config, positive_class=positive)
    print_warnings(console, run.warnings)
    result, results = confounders_section(run, config)
    if save_grid is not None:
        _grid(save_grid, run.data, config)
        console.print(f"artifact grid written to {save_grid}", markup=False, highlight=False)
    doc = run.document(
        "confounders",
        {**run.config, **config.to_dict(), "mode": "probe"},
        results,
        seed=seed,
        wall_time_s=timer.elapsed,
        warnings=run.warnings,
    )
    run.attach_state(doc, {"confounders": result})
    emit(console, json, doc)


def confounders_section(run: Prepared, config: ProbeConfig) -> tuple[ProbeResult, dict[str, Any]]:
    """Run the probe with a progress bar and print its tables (reusable by ``run``)."""
    console = stderr_console()
    with progress_bar(console, "adding artifacts and predicting", run.data.n * len(config.cells)) as advance:
        result = run_probe(run.model, run.data, config, advance)
    results = result.to_dict()
    tables.show(console, tables.audit_tables("confounders", results, run.data.describe()))
    return result, results


def probe_config(options: ProbeOptions, batch_size: int, seed: int) -> ProbeConfig:
    """The probe's configuration from its settings (also used by ``run``); the positive class is
    resolved once the data is loaded."""
    strengths = parse_floats(options.strengths, "--strengths")
    assert strengths is not None  # the setting has a default
    return ProbeConfig(
        artifacts=_names(options.artifacts, DEFAULT_ARTIFACTS), strengths=strengths,
        positions=_names(options.positions, CORNERS), seed=seed, batch_size=batch_size,
    )  # fmt: skip


def finetune_section(run: Prepared, config: FinetuneConfig, data: DataSettings) -> dict[str, Any]:
    """Load the training split of the audited dataset, fine-tune per fraction with a progress bar, print."""
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


def _check_subgroup_options(
    metadata: Path | None,
    attribute: str | None,
    limit: int | None,
    bootstrap: int,
    artifact_list: str | None,
    save_grid: Path | None,
) -> None:
    """Subgroup-mode options, checked before any loading so mistakes fail fast."""
    if metadata is None:
        raise ConfigError("--attribute and --id-column need --metadata FILE.csv")
    if attribute is None:
        raise ConfigError("--metadata needs --attribute NAME (the column that defines the groups)")
    if not metadata.is_file():
        raise ConfigError(f"--metadata file {metadata} does not exist")
    # the metadata describes the whole split; a --limit subsample would need its original indices
    # re-derived to join, so the two are refused together rather than joined silently wrong
    if limit is not None:
        raise ConfigError(
            "--limit cannot be combined with --metadata: the metadata rows describe the whole split; "
            "audit the full split or pass a smaller --data file with matching metadata"
        )
    if bootstrap < 1:
        raise ConfigError(f"--bootstrap must be at least 1, got {bootstrap}")
    if artifact_list is not None or save_grid is not None:
        raise ConfigError("--artifacts and --save-grid belong to probe mode, not to --metadata")


def subgroups_section(
    run: Prepared,
    metadata: Path,
    attribute: str,
    id_column: str | None,
    rounds: int,
    seed: int,
    batch_size: int,
) -> dict[str, Any]:
    """Predict once, join the metadata, bootstrap per group, and print the table."""
    console = stderr_console()
    groups = read_metadata(metadata, attribute, run.data.n, id_column)
    with progress_bar(console, "predicting", run.data.n) as advance:
        logits = predict_logits(run.model, run.data, batch_size, advance)
    result = subgroup_audit(
        logits, run.data.labels, run.data.task, run.data.class_names, groups, rounds=rounds, seed=seed
    )
    results = {"attribute": attribute, **result}
    console.print(subgroup_table(results, f"Subgroups: {run.data.describe()}"))
    return results


def _grid(path: Path, data: AuditData, config: ProbeConfig) -> None:
    """Image 0 under every artifact at each strength, exactly as probed (first position for tag/patch)."""
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
