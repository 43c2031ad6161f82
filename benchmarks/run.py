"""Every benchmark in one command, each comparison in its own process; writes RESULTS.md and .json.

    MEDAUDIT_DATA_ROOT=../shared/data/medmnist PYTHONPATH=/tmp/parity-pkgs .venv/bin/python benchmarks/run.py [--quick]

Runs attack_speed.py, shift_speed.py, intrinsic_speed.py, scaling.py, pt2_speed.py,
commands_speed.py and harden_speed.py in turn (``--quick`` passes on: a smoke run of a few minutes that writes to
/tmp/medaudit-bench-quick unless --out-dir says otherwise, so the committed
results stay), then writes RESULTS.md with the machine facts, the time of each
part and the headline ratios (medaudit / peer, medians of several runs), and
links the per-part pages. The peers come with the ``bench`` extra; medmnistc
goes on PYTHONPATH as benchmarks/README.md shows (without it the corruption part
fills the medaudit columns only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from facts import machine_facts

HERE = Path(__file__).resolve().parent
PARTS = ("attack", "shift", "intrinsic", "scaling", "pt2", "commands", "harden")
NOTES = "<!-- notes: kept when this file is rewritten -->"


def command_of(part: str, quick: bool, out_dir: Path) -> list[str]:
    script = HERE / ("scaling.py" if part == "scaling" else f"{part}_speed.py")
    args = [sys.executable, str(script)] + (["--quick"] if quick else [])
    if part == "shift":
        return [*args, "--skip-e2e", "--output", str(out_dir / "RESULTS-shift.md")]
    if part == "commands" and not quick:
        args.append("--with-run")  # `medaudit run` of the init template: issue 20's 3-minute target
    return [*args, "--out-dir", str(out_dir)]


def headlines(out_dir: Path) -> list[str]:
    """The ratios a reader wants first, from the parts' JSON."""
    lines = ["| comparison | medaudit / peer | strength |", "|---|---|---|"]
    attack = json.loads((out_dir / "RESULTS-attack.json").read_text())
    for network in ("rescnn", "resnet18"):
        rows = {(r["eps_grey"], r["steps"], r["tool"]): r for r in attack[network]}
        for grey, steps in sorted({(g, s) for g, s, _ in rows}):
            cell = {t: rows[grey, steps, t] for (g, s, t) in rows if (g, s) == (grey, steps)}
            robust = {round(r["robust_accuracy"], 3) for r in cell.values()}
            for ours in ("medaudit run_attacks", "medaudit PGD call"):
                ratios = ", ".join(
                    f"{cell[ours]['images_per_s'] / cell[peer]['images_per_s']:.2f}× {peer}"
                    for peer in ("torchattacks", "ART")
                )
                strength = (
                    "same robust accuracy" if len(robust) == 1 else f"robust accuracies {sorted(robust)}"
                )
                lines.append(f"| PGD {grey}/255 {steps} steps, {network}, {ours} | {ratios} | {strength} |")
    plans = attack.get("plans")
    if plans:
        runs = plans["runs"]
        auto = runs["medaudit auto"]
        for peer in ("torchattacks APGD-CE", "torchattacks AutoAttack components", "medaudit full plan"):
            if peer in runs:
                lines.append(
                    f"| `attack --eps {plans['eps']}` (auto, whole process, {plans['n']} images) vs {peer}, "
                    f"CPU time | {runs[peer]['cpu_s'] / auto['cpu_s']:.2f}× | robust accuracy "
                    f"{auto['robust_accuracy']:.4f} vs {runs[peer]['robust_accuracy']:.4f} |"
                )
    shift = json.loads((out_dir / "RESULTS-shift.json").read_text())
    for size in (28, 224):
        ratios = [
            r["reference"] / r["ours"]
            for r in shift["rows"]
            if r["size"] == size and isinstance(r["reference"], float)
        ]
        if ratios:
            lines.append(
                f"| corruptions at {size} px vs medmnistc (median over {len(ratios)} corruption × severity cells; "
                f"min {min(ratios):.1f}×, max {max(ratios):.1f}×) | {statistics.median(ratios):.1f}× | "
                "bit-exact or statistically equal (test_parity_medmnistc.py) |"
            )
        else:
            lines.append(
                f"| corruptions at {size} px vs medmnistc | not measured (medmnistc not installed) | |"
            )
    for row in json.loads((out_dir / "RESULTS-intrinsic.json").read_text()):
        if row["ratio_skdim_over_medaudit"] != "-":
            lines.append(
                f"| {row['what']}, {row['data']} vs scikit-dimension | {row['ratio_skdim_over_medaudit']}× | "
                f"{row['estimates']} |"
            )
    scaling = json.loads((out_dir / "RESULTS-scaling.json").read_text())
    for audit, growth in scaling["growth"].items():
        lines.append(
            f"| {audit}: growth of time with the number of images | exponent {growth['time_exponent']:.2f} "
            f"(1 = linear) | peak RSS {growth['memory_mb']} MB |"
        )
    if (out_dir / "RESULTS-pt2.json").exists():
        rows = {r["model"]: r for r in json.loads((out_dir / "RESULTS-pt2.json").read_text())["rows"]}
        batch1 = next((r for name, r in rows.items() if name.startswith(".pt2, batch 1 (vmap")), None)
        if batch1 is not None:
            lines.append(
                f"| .pt2 exported for batch size 1 vs TorchScript, predict / gradient CPU time | "
                f"{1 / batch1['predict_vs_torchscript']:.2f}× / {1 / batch1['gradient_vs_torchscript']:.2f}× | "
                f"max abs logit difference {batch1['predict_max_abs_diff']:.1e} |"
            )
    if (out_dir / "RESULTS-commands.json").exists():
        commands = {r["case"]: r for r in json.loads((out_dir / "RESULTS-commands.json").read_text())["rows"]}
        for case, row in commands.items():
            if case.startswith("start-up: --version") or case.startswith("run of the init template"):
                lines.append(f"| `{case}`, wall time | {row['wall_s']:.2f} s | exit {row['exit']} |")
    if (out_dir / "RESULTS-harden.json").exists():
        harden = json.loads((out_dir / "RESULTS-harden.json").read_text())
        plain, *methods = harden["rows"]
        ratios = ", ".join(f"{r['cpu_vs_plain']:.2f}× {r['run']}" for r in methods)
        peaks = ", ".join(f"{r['rss_peak_mb']:.0f} {r['run']}" for r in methods)
        lines.append(
            f"| harden per epoch vs plain PyTorch PGD-AT loop ({harden['images']} PneumoniaMNIST training "
            f"images, CPU time) | {ratios} | peak RSS MB {peaks}, plain {plain['rss_peak_mb']:.0f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of every part (a few minutes)")
    parser.add_argument("--out-dir", type=Path, default=None, help="default: benchmarks/ (--quick: /tmp/...)")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma list of parts: {', '.join(PARTS)}")
    args = parser.parse_args()
    out_dir = args.out_dir or (Path("/tmp/medaudit-bench-quick") if args.quick else HERE)
    out_dir.mkdir(parents=True, exist_ok=True)
    facts = machine_facts()
    durations: dict[str, Any] = {}
    started = time.perf_counter()
    for part in args.only.split(","):
        if part not in PARTS:
            sys.exit(f"--only: unknown part {part!r}; choose from {', '.join(PARTS)}")
        start = time.perf_counter()
        print(f"== {part}", flush=True)
        subprocess.run(
            command_of(part, args.quick, out_dir), check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        durations[part] = round(time.perf_counter() - start, 1)
    total = time.perf_counter() - started
    command = (
        "MEDAUDIT_DATA_ROOT=../shared/data/medmnist PYTHONPATH=/tmp/parity-pkgs .venv/bin/python benchmarks/run.py"
        + (" --quick" if args.quick else "")
    )
    lines = [
        "# Benchmarks: medaudit side by side with the tools a user would pick instead",
        "",
        f"`{command}` on {time.strftime('%Y-%m-%d %H:%M %Z')}: {total / 60:.1f} minutes in all "
        f"({', '.join(f'{part} {seconds:.0f} s' for part, seconds in durations.items())}).",
        "",
        *[f"- {fact}" for fact in facts],
        "",
        "Absolute times on a shared 2-core machine move by 2× with load: read the ratios, each measured "
        "within one process on the same model, data and seeds (medians of 3 runs unless a part says otherwise).",
        "",
        "## Headlines",
        "",
        *headlines(out_dir),
        "",
        "## Details",
        "",
        *[f"- [{part}](RESULTS-{part}.md)" for part in durations],
        "",
    ]
    previous = out_dir / "RESULTS.md"
    kept = previous.read_text().partition(NOTES)[2] if previous.exists() else ""
    if kept:  # the hand-written reading (where medaudit is slower, and why), kept across runs
        lines += [NOTES + kept.rstrip("\n"), ""]
    previous.write_text("\n".join(lines))
    summary = {"command": command, "machine": facts, "seconds": durations, "headlines": lines}
    (out_dir / "RESULTS.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
