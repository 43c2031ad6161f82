"""How the cost of ``attack`` and ``shift`` grows with the images, their size and the batch size.

    MEDAUDIT_DATA_ROOT=../shared/data/medmnist .venv/bin/python benchmarks/scaling.py [--quick]

Each cell runs in a fresh process (so its peak resident memory is its own) and is
timed around the audit call only (data and model already loaded; median of the
repeats within that process):

- attack: ``run_attacks`` with PGD, 10 steps, eps 1/255 L-inf (early stop and the
  AUC-under-attack push included, as ``medaudit attack --attack pgd`` runs it);
- shift: ``run_shift`` with gaussian_noise, zoom_blur and pixelate at severity 3.

Model: ``sample_models/pneumoniamnist_rescnn.pt``. Data: PneumoniaMNIST (train,
val and test, 5,856 images, tiled to reach 10,000), upsampled bilinearly for 64
and 224 px (the model resizes back to 28 px inside its wrapper, so the size study
measures the per-image data, perturbation and corruption work, not a bigger
network). The growth exponent is the least-squares slope of log(time) against
log(images): 1 is linear. Writes benchmarks/RESULTS-scaling.md and .json.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "sample_models" / "pneumoniamnist_rescnn.pt"
OUT = Path(__file__).with_name("RESULTS-scaling.md")
FULL = {
    "images": ([100, 300, 1000, 3000, 10000], 28, 256),
    "size": ([28, 64, 224], 300, 64),
    "batch": ([16, 64, 256, 1024], 2000, 28),
}
QUICK = {
    "images": ([100, 300, 1000], 28, 256),
    "size": ([28, 64], 100, 64),
    "batch": ([32, 256], 300, 28),
}


def data_of(n: int, size: int) -> Any:
    from medaudit.data import DataSpec, load_data

    parts = [load_data(DataSpec(dataset="pneumoniamnist", split=s)) for s in ("train", "val", "test")]
    images = torch.cat([p.images for p in parts])
    labels = torch.cat([p.labels for p in parts])
    reps = -(-n // len(images))
    images, labels = images.repeat(reps, 1, 1, 1)[:n], labels.repeat(reps)[:n]
    if size != images.shape[-1]:
        up = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False)
        images = up.round().clamp(0, 255).to(torch.uint8)
    first = parts[0]
    return type(first)(images, labels, first.task, first.class_names, {"source": "benchmark", "n": n})


def cell(audit: str, n: int, size: int, batch: int, repeats: int) -> dict[str, float]:
    """One cell in this process: median seconds of ``repeats`` audit calls and peak RSS in MB."""
    from medaudit.attacks import AttackConfig, run_attacks
    from medaudit.models import bind_model, load_model
    from medaudit.shift.benchmark import ShiftConfig, run_shift

    data = data_of(n, size)
    model = load_model(MODEL)
    bind_model(model, data)
    attack = AttackConfig(
        attacks=("pgd",), eps=(1 / 255,), params={"pgd": {"steps": 10, "restarts": 1}}, batch_size=batch
    )
    shift = ShiftConfig(
        corruptions=("gaussian_noise", "zoom_blur", "pixelate"), source="pneumoniamnist",
        mode="scaled", severities=(3,), batch_size=batch,
    )  # fmt: skip
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        if audit == "attack":
            run_attacks(model, data, attack)
        else:
            run_shift(model, data, shift)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": statistics.median(times), "peak_rss_mb": peak}


def measure(audit: str, n: int, size: int, batch: int, repeats: int) -> dict[str, float]:
    """One cell in a fresh process, so the peak memory is the cell's own."""
    args = [sys.executable, __file__, "--cell", audit, str(n), str(size), str(batch), str(repeats)]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    seconds = result["seconds"]
    row = {"audit": audit, "images": n, "size": size, "batch": batch, **result}
    row["images_per_s"] = n / seconds
    print(json.dumps(row), flush=True)
    return row


def slope(xs: list[float], ys: list[float]) -> float:
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer and smaller cells, one run each")
    parser.add_argument("--repeats", type=int, default=None, help="runs per cell (default 3, --quick 1)")
    parser.add_argument("--out-dir", type=Path, default=OUT.parent)
    parser.add_argument("--cell", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        audit, n, size, batch, repeats = args.cell
        print(json.dumps(cell(audit, int(n), int(size), int(batch), int(repeats))))
        return
    plan = QUICK if args.quick else FULL
    repeats = args.repeats or (1 if args.quick else 3)
    rows: list[dict[str, Any]] = []

    def runs(n: int) -> int:
        """One run for cells above 1,000 images: long enough to time once, and the harness stays under 20 min."""
        return repeats if n <= 1000 else 1

    for audit in ("attack", "shift"):
        values, a, b = plan["images"]
        rows += [measure(audit, n, a, b, runs(n)) for n in values]
        values, a, b = plan["size"]
        rows += [measure(audit, a, size, b, runs(a)) for size in values]
        values, a, b = plan["batch"]
        rows += [measure(audit, a, b, batch, runs(a)) for batch in values]
    growth = {}
    for audit in ("attack", "shift"):
        n_rows = [r for r in rows if r["audit"] == audit and r["size"] == plan["images"][1]]
        n_rows = [r for r in n_rows if r["batch"] == plan["images"][2]]
        n_rows = sorted({r["images"]: r for r in n_rows}.values(), key=lambda r: r["images"])
        growth[audit] = {
            "time_exponent": slope([r["images"] for r in n_rows], [r["seconds"] for r in n_rows]),
            "memory_mb": [round(r["peak_rss_mb"]) for r in n_rows],
        }
    write(args.out_dir, rows, growth, repeats, args.quick)


def write(
    out_dir: Path, rows: list[dict[str, Any]], growth: dict[str, Any], repeats: int, quick: bool
) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from facts import machine_facts

    command = "MEDAUDIT_DATA_ROOT=../shared/data/medmnist .venv/bin/python benchmarks/scaling.py" + (
        " --quick" if quick else ""
    )
    facts = machine_facts()
    (out_dir / "RESULTS-scaling.json").write_text(
        json.dumps({"command": command, "machine": facts, "rows": rows, "growth": growth}, indent=2) + "\n"
    )
    lines = [
        "# Scaling: time and peak memory of attack and shift",
        "",
        f"`{command}` on {time.strftime('%Y-%m-%d')}; median of {repeats} run(s) per cell (one run for "
        "cells above 1,000 images) in one fresh process per cell; peak memory is that process's maximum "
        "resident set (torch, the model and the data included).",
        "",
        *[f"- {fact}" for fact in facts],
        "",
        "| audit | images | size px | batch | seconds | images/s | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {r['audit']} | {r['images']} | {r['size']} | {r['batch']} | {r['seconds']:.2f} | "
            f"{r['images_per_s']:.0f} | {r['peak_rss_mb']:.0f} |"
            for r in rows
        ],
        "",
        "Growth with the number of images (slope of log time vs log images; 1 = linear):",
        "",
        *[
            f"- {audit}: exponent {g['time_exponent']:.2f}; peak RSS {g['memory_mb']} MB over the same cells"
            for audit, g in growth.items()
        ],
        "",
    ]
    (out_dir / "RESULTS-scaling.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
