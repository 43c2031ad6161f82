"""``medaudit run AUDIT --parts N --ray ADDRESS``: the audit's N shards as Ray tasks.

Each task computes exactly what ``medaudit run AUDIT --shard i/N`` writes (``audit_part``), so
the merged report equals the single-process one, as ``medaudit merge`` of Slurm array parts does.
Ray is an optional extra (``pip install 'medaudit[ray]'``), imported only here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from medaudit.errors import ConfigError, MedauditError

ENV_PREFIX = "MEDAUDIT_"
"""Environment variables a worker needs as the driver sees them (data root, quiet, ...)."""


def _part(audit_file: str, policy: str | None, shard: str, env: dict[str, str], cwd: str) -> dict[str, Any]:
    """One shard, in a Ray worker: in the driver's folder and environment, so paths and the
    report's record of them are the ones the user gave."""
    from medaudit.commands.common import Settings, configure
    from medaudit.commands.run import audit_part

    os.chdir(cwd)
    os.environ.update(env)
    configure(Settings(quiet=env.get("MEDAUDIT_QUIET", "") not in ("", "0")))
    return audit_part(Path(audit_file), Path(policy) if policy else None, shard)


def run_parts(
    audit_file: Path,
    policy: Path | None,
    parts: int,
    address: str,
    progress: Callable[[Any, str, int | None], AbstractContextManager[Callable[[int], None]]],
) -> list[tuple[str, dict[str, Any]]]:
    """Submit the N parts, wait for all of them (reporting each one done), and return their
    documents as ``medaudit merge`` takes them. A part that fails fails the run with its error."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray: pip install 'medaudit[ray]' (or pip install ray)") from None
    from rich.console import Console

    env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}
    cwd = os.getcwd()
    started = not ray.is_initialized()
    if started:
        ray.init(
            address=None if address == "local" else address,
            include_dashboard=False,
            log_to_driver=True,  # the workers' progress lines reach this terminal, prefixed by Ray
            logging_level=logging.ERROR,  # Ray's own start-up notes would break one-line errors
            runtime_env={"env_vars": env},
        )
    try:
        task = ray.remote(_part)
        pending = {
            task.remote(str(audit_file), str(policy) if policy else None, f"{i}/{parts}", env, cwd): i
            for i in range(parts)
        }
        docs: dict[int, dict[str, Any]] = {}
        with progress(Console(stderr=True), f"Ray: parts of {audit_file.name} done", parts) as advance:
            while pending:
                (ready,), _ = ray.wait(list(pending), num_returns=1)
                index = pending.pop(ready)
                try:
                    docs[index] = ray.get(ready)
                except ray.exceptions.RayTaskError as exc:
                    if isinstance(exc.cause, MedauditError):  # its one line and exit code, as in one process
                        raise exc.cause from None
                    raise
                advance(1)
    finally:
        if started:
            ray.shutdown()
    return [(f"Ray part {i}/{parts}", docs[i]) for i in range(parts)]
