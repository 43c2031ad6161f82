"""``medaudit merge``: join the JSON of ``--shard i/n`` parts into the single-process report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from medaudit.commands.common import JsonOpt, Timer, check_output_target, emit, stderr_console
from medaudit.commands.gate import gate_document, gate_table
from medaudit.commands.run import run_sections
from medaudit.errors import ConfigError
from medaudit.gate.metrics import load_report
from medaudit.gate.policy import Verdict
from medaudit.report import schema
from medaudit.sharding import concat, decode

SAME = ("command", "config", "model", "seed")
"""Top-level keys every part of one sharded audit shares."""


def merge_documents(parts: list[tuple[str, dict[str, Any]]]) -> tuple[dict[str, Any], list[Verdict]]:
    """The report of the whole audit from its shards' documents (name, doc), in any order, and
    for a ``run`` with a gate its verdicts on the whole (else an empty list)."""
    for name, doc in parts:
        shard = doc.get("shard")
        if not isinstance(shard, dict) or "state" not in shard:
            raise ConfigError(
                f"{name} is not a shard: it has no shard section (write parts with --shard i/n)"
            )
    parts = sorted(parts, key=lambda part: part[1]["shard"]["index"])
    (first_name, first), shards = parts[0], [doc["shard"] for _, doc in parts]
    count, total = shards[0]["count"], shards[0]["total"]
    for name, doc in parts[1:]:
        for key in SAME:
            if doc.get(key) != first.get(key):
                raise ConfigError(
                    f"{first_name} and {name} are parts of different audits: their {key} differs"
                )
        if doc["shard"]["count"] != count or doc["shard"]["total"] != total:
            raise ConfigError(f"{first_name} and {name} split the data differently")
    indices = [s["index"] for s in shards]
    if indices != list(range(count)):
        missing = sorted(set(range(count)) - set(indices))
        twice = sorted({i for i in indices if indices.count(i) > 1})
        problem = f"missing {', '.join(f'{i}/{count}' for i in missing)}" if missing else ""
        problem += ("; " if missing and twice else "") + (
            f"given twice {', '.join(f'{i}/{count}' for i in twice)}" if twice else ""
        )
        raise ConfigError(f"cannot merge: {problem}")
    starts, stops = [s["start"] for s in shards], [s["stop"] for s in shards]
    if starts != [0, *stops[:-1]] or stops[-1] != total:
        raise ConfigError("cannot merge: the shards do not cover the images exactly once")
    state = concat([decode(doc["shard"]["state"]) for _, doc in parts])
    command = first["command"]
    sections, warnings = run_sections(state["sections"], state["warnings"])
    results = sections if command == "run" else sections[command]
    data = {key: value for key, value in first["data"].items() if key != "shard"}
    merged = schema.document(
        command,
        first["config"],
        results,
        model=first["model"],
        data={**data, "n": total},
        seed=first["seed"],
        wall_time_s=sum(doc["wall_time_s"] for _, doc in parts),
        warnings=warnings,
    )
    verdicts: list[Verdict] = []
    if command == "run":
        merged["gate"] = None
        if state.get("gate") is not None:
            verdicts, _ = gate_document(merged, state["gate"])
            merged["gate"] = [v.to_dict() for v in verdicts]
    return merged, verdicts


def merge_command(
    parts: Annotated[
        list[Path],
        typer.Argument(help="The parts' JSON files (any order), one per shard.", show_default=False),
    ],
    json: JsonOpt = None,
) -> None:
    """Join the JSON of `--shard i/n` runs into the report of the whole audit (stdout unless --json).

    Every number is derived again from all images' per-sample results (counts are added, AUCs are
    computed on the whole set), so the report equals the single-process one. For `run` audits the
    gate is evaluated on the merged report: exit code 1 when a rule fails.
    """
    console, timer = stderr_console(), Timer()
    check_output_target(json, list(parts))
    merged, verdicts = merge_documents([(str(path), load_report(path)) for path in parts])
    merged["wall_time_s"] = round(merged["wall_time_s"] + timer.elapsed, 3)
    console.print(
        f"merged {len(parts)} shards of {merged['command']}: {merged['data']['n']} images", highlight=False
    )
    if verdicts:
        console.print(gate_table(verdicts))
    emit(console, "-" if json is None else json, merged)
    if not all(v.passed for v in verdicts):
        raise typer.Exit(1)
