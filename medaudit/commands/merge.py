"""``medaudit merge``: join the JSON of ``--shard i/n`` parts into the single-process report."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, TypeGuard

import typer
from rich.console import Console

from medaudit import __version__
from medaudit.audits.base import report_sections
from medaudit.commands.common import (
    JsonOpt,
    Timer,
    check_output_target,
    emit,
    print_warnings,
    stderr_console,
)
from medaudit.commands.gate import gate_document, gate_table
from medaudit.document import document
from medaudit.errors import GATE_FAILED, ConfigError, what_raised
from medaudit.gate.metrics import load_report
from medaudit.gate.policy import Verdict
from medaudit.report import tables

PLACES = ("index", "count", "start", "stop", "total")
"""The whole numbers in a part's ``shard`` section."""
DECODE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError, RecursionError)
"""What decoding or deriving from a part that passed its checks can still raise (a part forged
with a recomputed digest, or one from a medaudit with the same version but other result types)."""
REWRITE = "write the part again with --shard i/n"


def merge_documents(parts: list[tuple[str, dict[str, Any]]]) -> tuple[dict[str, Any], list[Verdict]]:
    """The report of the whole audit from its shards' documents (name, doc), in any order, and
    for a ``run`` with a gate its verdicts on the whole (else an empty list).

    Every part is checked before use: its fields have the types medaudit writes and its
    ``shard.digest`` matches what it holds (``medaudit.sharding.digests``), so a part edited or
    damaged after it was written is refused (ConfigError), never merged. The digest does not
    stop someone who edits a part and recomputes it; such a part still cannot reach a traceback."""
    from medaudit.sharding import audit_identity, concat

    for name, doc in parts:
        check_part(name, doc)
    parts = sorted(parts, key=lambda part: part[1]["shard"]["index"])
    (first_name, first), shards = parts[0], [doc["shard"] for _, doc in parts]
    count, total = shards[0]["count"], shards[0]["total"]
    same = audit_identity(first)
    for name, doc in parts[1:]:
        for key, value in audit_identity(doc).items():
            if value == same[key]:
                continue
            if key in ("count", "total"):
                raise ConfigError(f"{first_name} and {name} split the data differently")
            raise ConfigError(f"{first_name} and {name} are parts of different audits: their {key} differs")
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
    command = first["command"]
    states = [decode_state(name, doc) for name, doc in parts]
    try:
        state = concat(states)
        sections, warnings = report_sections(state["sections"], state["warnings"])
    except (*DECODE_ERRORS, RuntimeError) as exc:
        raise ConfigError(
            f"the parts' states do not fit together ({what_raised(exc, 120)}): merge only the parts of one sharded "
            "audit, written by this medaudit version"
        ) from exc
    results = sections if command == "run" else sections[command]
    data = {key: value for key, value in first["data"].items() if key != "shard"}
    merged = document(
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


def show_merged(console: Console, merged: dict[str, Any], verdicts: list[Verdict]) -> None:
    """The merged report's tables, as the single run prints them: each audit's tables, for a
    ``run`` its summary and gate, and the report's warnings (a failed honesty check among them)."""
    label = tables.data_label(merged["data"])
    if merged["command"] == "run":
        for name, results in merged["results"].items():
            tables.show(console, tables.audit_tables(name, results, label))
        console.print(tables.run_summary_table(merged["results"], f"Audit summary: {label}"))
    else:
        tables.show(console, tables.audit_tables(merged["command"], merged["results"], label))
    print_warnings(console, merged["warnings"])
    if merged["command"] == "run" and merged["gate"] is not None:
        console.print(gate_table(verdicts))


def check_part(name: str, doc: dict[str, Any]) -> None:
    """Refuse a part whose fields are not what ``--shard i/n`` writes, or whose digest does not
    match what it holds (edited or damaged after it was written, or from another medaudit)."""
    from medaudit.sharding import digests

    shard = doc.get("shard")
    if not isinstance(shard, dict) or "state" not in shard:
        raise ConfigError(f"{name} is not a shard: it has no shard section (write parts with --shard i/n)")
    for key in PLACES:
        _expect(name, f"shard.{key}", shard.get(key), _is_int(shard.get(key)), "a whole number")
    index, count, start, stop, total = (shard[key] for key in PLACES)
    if not (0 <= index < count and 0 <= start < stop <= total):
        raise ConfigError(
            f"{name} is damaged: shard {index}/{count} with images {start}:{stop} of {total} is impossible; {REWRITE}"
        )
    _expect(name, "shard.state", shard["state"], isinstance(shard["state"], dict), "an object")
    for key in ("command", "config", "model", "data", "seed", "wall_time_s"):
        if key not in doc:
            raise ConfigError(f"{name} is damaged: it has no {key}; {REWRITE}")
    _expect(name, "command", doc.get("command"), isinstance(doc.get("command"), str), "a command name")
    for key in ("config", "data"):
        _expect(name, key, doc.get(key), isinstance(doc.get(key), dict), "an object")
    _expect(
        name,
        "model",
        doc.get("model"),
        doc.get("model") is None or isinstance(doc["model"], dict),
        "an object",
    )
    _expect(name, "seed", doc.get("seed"), doc.get("seed") is None or _is_int(doc["seed"]), "a whole number")
    wall = doc.get("wall_time_s")
    _expect(name, "wall_time_s", wall, _is_number(wall) and wall >= 0, "a number of seconds")
    digest = shard.get("digest")
    if not (isinstance(digest, dict) and all(isinstance(digest.get(k), str) for k in ("audit", "state"))):
        raise ConfigError(
            f"{name} has no shard digest: it was changed after it was written, or it is not from this "
            f"medaudit version ({__version__}); {REWRITE}"
        )
    try:
        expected = digests(doc)
    except RecursionError:
        raise ConfigError(f"{name} is damaged: its shard state is nested too deeply; {REWRITE}") from None
    for key in ("audit", "state"):
        if digest[key] != expected[key]:
            raise ConfigError(
                f"{name} was changed after it was written (its shard {key} digest does not match), or it is "
                f"not from this medaudit version ({__version__}); {REWRITE}"
            )


def decode_state(name: str, doc: dict[str, Any]) -> dict[str, Any]:
    """A checked part's state, decoded and checked for what merge uses (ConfigError naming ``name``)."""
    from medaudit.sharding import decode, samples

    try:
        state = decode(doc["shard"]["state"])
    except ConfigError as exc:
        raise ConfigError(f"{name} is damaged: {exc}; {REWRITE}") from exc
    except DECODE_ERRORS as exc:
        raise ConfigError(
            f"{name} is damaged: its shard state cannot be decoded ({what_raised(exc, 120)}); {REWRITE}"
        ) from exc
    command, images = doc["command"], doc["shard"]["stop"] - doc["shard"]["start"]
    sections = state.get("sections") if isinstance(state, dict) else None
    if (
        not isinstance(sections, dict)
        or not isinstance(state.get("warnings"), list)
        or not all(isinstance(w, str) for w in state["warnings"])
        or (command == "run" and (not sections or not isinstance(state.get("gate"), dict | None)))
        or (command != "run" and (list(sections) != [command] or "gate" in state))
        or not all(hasattr(result, "to_dict") for result in sections.values())
    ):
        raise ConfigError(
            f"{name} is damaged: its shard state does not hold the results of a {command} audit; {REWRITE}"
        )
    if not samples(sections) <= {images}:
        raise ConfigError(
            f"{name} is damaged: its shard state does not hold one result per image of its {images} images; {REWRITE}"
        )
    return state


def _expect(name: str, field: str, value: Any, ok: bool, what: str) -> None:
    if not ok:
        shown = repr(value) if len(repr(value)) <= 40 else f"a {type(value).__name__}"
        raise ConfigError(f"{name} is damaged: its {field} is {shown}, not {what}; {REWRITE}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


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
        f"merged {len(parts)} shards of {merged['command']}: {merged['data']['n']} images",
        markup=False,
        highlight=False,
    )
    show_merged(console, merged, verdicts)
    emit(console, "-" if json is None else json, merged)
    if not all(v.passed for v in verdicts):
        raise typer.Exit(GATE_FAILED)
