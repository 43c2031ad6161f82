"""The command of an audit that needs nothing beyond its declaration (``medaudit eval`` and any
new audit plugin): its options, the shared model/data/run settings, ``--shard`` and ``--json``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from medaudit.audits import Audit
from medaudit.commands.common import (
    JsonOpt,
    ShardOpt,
    Timer,
    check_output_target,
    emit,
    prepare,
    print_warnings,
    stderr_console,
)
from medaudit.commands.progress import context as progress_context
from medaudit.errors import ConfigError
from medaudit.options import with_settings
from medaudit.report import tables
from medaudit.settings import DataSettings, ModelSettings, RunSettings


def audit_command(audit: Audit) -> Callable[..., None]:
    """``medaudit NAME``: check the options, load, run the audit, print its tables, write the JSON."""

    def command(
        model: ModelSettings,
        data: DataSettings,
        run_settings: RunSettings,
        options: Any,
        shard: ShardOpt = None,
        json: JsonOpt = None,
    ) -> None:
        from medaudit.sources import input_files

        console, timer = stderr_console(), Timer()
        check_output_target(json, input_files(model.path, data.data))  # before anything heavy
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
        print_warnings(console, warnings)
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
