"""Whole ``medaudit`` processes as a user runs them: start-up, the demo's steps, the default
confounder probe with discovery, optionally ``run`` of the ``init`` template.

Each command runs as a child process from the repository root; its wall time and its CPU time
(user + system of the child, from ``getrusage``) are recorded, with the machine's load average at
the start (the CPU time is the figure to compare on a shared machine). Run from the repository
root::

    MEDAUDIT_DATA_ROOT=/path/to/medmnist .venv/bin/python benchmarks/commands_speed.py [--quick] [--with-run] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "benchmarks" / "RESULTS-commands.md"
MEDAUDIT = str(Path(sys.executable).with_name("medaudit"))
SAMPLE = "sample_models/pneumoniamnist_rescnn.pt"
DEMO_LIMIT = "200"  # the Makefile's DEMO_LIMIT


def cases(quick: bool, with_run: bool, scratch: Path) -> list[tuple[str, list[str]]]:
    limit = ["--limit", "64"] if quick else []
    found = [
        ("start-up: --version", [MEDAUDIT, "--version"]),
        ("start-up: --help", [MEDAUDIT, "--help"]),
        ("start-up: an option error (attack --norm l3)", [MEDAUDIT, "attack", SAMPLE, "--norm", "l3"]),
        ("demo: info", [MEDAUDIT, "info", SAMPLE]),
        ("demo: eval (624 images)", [MEDAUDIT, "eval", SAMPLE, *limit]),
        (
            f"demo: attack --eps 0.004 --limit {DEMO_LIMIT}",
            [MEDAUDIT, "attack", SAMPLE, "--eps", "0.004", "--limit", "64" if quick else DEMO_LIMIT],
        ),
        (
            f"demo: shift --limit {DEMO_LIMIT}",
            [MEDAUDIT, "shift", SAMPLE, "--limit", "64" if quick else DEMO_LIMIT],
        ),
        (
            "confounders: default probe + --discover (624 images)",
            [MEDAUDIT, "confounders", SAMPLE, "--discover", *limit],
        ),
    ]
    if with_run:
        audit = scratch / "audit.toml"
        subprocess.run(
            [MEDAUDIT, "init", str(audit)], cwd=ROOT, check=True, capture_output=True
        )  # paths work from there
        found.append(
            ("run of the init template (exit 1: its confounders rule fails)", [MEDAUDIT, "run", str(audit)])
        )
    return found


def timed(command: list[str]) -> dict[str, Any]:
    """Wall and CPU seconds of one child process, and its exit code (1: a gate verdict)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "exit": done.returncode}


def markdown(result: dict[str, Any], command: str) -> str:
    lines = [
        "# Whole commands: start-up, the demo, the confounder probe",
        "",
        f"Command: `{command}`  ",
        f"Machine: {result['machine']}, load average {result['load_start']:.1f} at the start; "
        f"torch threads: {result['threads']}. {result['date']}.",
        "",
        "| command | wall s | CPU s | exit |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {r['case']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['exit']} |" for r in result["rows"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="64 images per audit: a smoke test")
    parser.add_argument("--with-run", action="store_true", help="also `medaudit run` of the init template")
    parser.add_argument(
        "--out-dir", type=Path, default=OUTPUT.parent, help="where RESULTS-commands.md/.json go"
    )
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, command in cases(args.quick, args.with_run, Path(scratch)):
            rows.append({"case": name, **timed(command)})
            print(rows[-1], flush=True)
    result = {
        "rows": rows,
        "load_start": load_start,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "threads": os.environ.get("OMP_NUM_THREADS", "torch default"),
        "date": dt.date.today().isoformat(),
    }
    command = "MEDAUDIT_DATA_ROOT=... .venv/bin/python benchmarks/commands_speed.py" + "".join(
        f" {arg}" for arg in sys.argv[1:]
    )
    output = args.out_dir / OUTPUT.name
    output.write_text(markdown(result, command))
    output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print(output.read_text())


if __name__ == "__main__":
    main()
