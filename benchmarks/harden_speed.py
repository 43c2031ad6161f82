"""One epoch of ``medaudit.harden.harden`` per method against a plain PyTorch PGD-AT epoch on the
same network, images and settings: seconds, images/s, the ratio and peak memory.

    MEDAUDIT_DATA_ROOT=/path/to/medmnist OMP_NUM_THREADS=2 .venv/bin/python benchmarks/harden_speed.py [--quick] [--out-dir DIR]

Model: ``sample_models/pneumoniamnist_rescnn.pt``. Data: a stratified subset (seed 0) of the
PneumoniaMNIST training split, 1,024 images (``--quick``: 256). Every run trains one epoch with
the defaults of ``HardenConfig`` (eps 2/255 L-inf, 5 attack steps, batch 128, AdamW lr 1e-3 and
weight decay 5e-4, seed 0) and ``margin_samples=0`` (no minimal-perturbation measurement before and
after, so only training is timed):

- ``plain PyTorch PGD-AT``: the loop a user would write, below in this file and torch only: shuffle,
  uniform random start in the eps-ball, 5 signed-gradient steps of 2.5 eps / 5 on the cross-entropy
  with projection onto the ball and [0, 1], attack in eval mode, then one AdamW step on the
  cross-entropy of the adversarial images in train mode. Same network copy as ``harden`` trains
  (the eager ``rescnn`` that ``hardenable_network`` rebuilds from the TorchScript file), same
  normalisation (mean 0.5, std 0.5 from the card), same batches sizes;
- ``harden`` with ``pgd-at``, ``trades`` and ``ima``: the whole ``harden()`` call (copying the network,
  the data fingerprint and the epoch; the epoch alone is the history's wall ``seconds``).

Each measurement runs in its own process (so its peak resident memory is its own: ``ru_maxrss``
of the whole process, torch and the loaded data included) after the same warm-up (``warm_up``:
one batch through a throwaway copy of the network, attack-style and training-style). The repeats
alternate between the four and the medians are reported; the ratio harden / plain uses process
CPU time (user + system of all threads), since the machine is shared and wall times swing with
other jobs' load.
Writes benchmarks/RESULTS-harden.md and .json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from facts import machine_facts
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "sample_models" / "pneumoniamnist_rescnn.pt"
OUTPUT = ROOT / "benchmarks" / "RESULTS-harden.md"
PLAIN = "plain PyTorch PGD-AT"
METHODS = ("pgd-at", "trades", "ima")
RUNS = (PLAIN, *METHODS)
IMAGES, QUICK_IMAGES = 1024, 256
REPEATS = 3
SEED = 0


def plain_pgd_at_epoch(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    mean: torch.Tensor,
    std: torch.Tensor,
    eps: float,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
) -> float:
    """One epoch of Madry PGD-AT as a user writes it; returns the mean adversarial loss."""
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    step = 2.5 * eps / steps
    order = torch.randperm(len(images), generator=generator)
    losses = []
    for start in range(0, len(images), batch_size):
        index = order[start : start + batch_size]
        if len(index) < 2:  # BatchNorm cannot train on one image
            continue
        x, y = images[index], labels[index]
        net.eval()  # the attack leaves BatchNorm's running statistics alone
        x_adv = (x + (2 * torch.rand(x.shape, generator=generator) - 1) * eps).clamp(0, 1)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            loss = F.cross_entropy(net((x_adv - mean) / std), y)
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = x_adv.detach() + step * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
        net.train()
        loss = F.cross_entropy(net((x_adv - mean) / std), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    net.eval()
    return sum(losses) / len(losses)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def warm_up(model: Any, data: Any, batch_size: int) -> None:
    """The same first-call costs paid before every timed run (allocator, oneDNN kernels for these
    shapes, the import of torch._dynamo that the first optimiser triggers): on a throwaway eager
    copy, one input-gradient pass in eval mode, one weight-gradient pass in train mode on one
    batch and one AdamW step."""
    from medaudit.harden import hardenable_network

    net, _ = hardenable_network(model, data.float_images(0, min(8, data.n)))
    mean = torch.tensor(model.spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(model.spec.std, dtype=torch.float32).view(1, -1, 1, 1)
    x, y = data.float_images(0, min(batch_size, data.n)), data.labels[:batch_size]
    net.eval()
    x.requires_grad_(True)
    torch.autograd.grad(F.cross_entropy(net((x - mean) / std), y), x)
    net.train()
    F.cross_entropy(net((x.detach() - mean) / std), y).backward()
    torch.optim.AdamW(net.parameters()).step()  # the first optimiser imports torch._dynamo (seconds)


def cell(run: str, n: int) -> dict[str, Any]:
    """One epoch of ``run`` in this process: CPU and wall seconds, losses, peak RSS before and after."""
    from medaudit.data import DataSpec, load_data
    from medaudit.harden import HardenConfig, harden, hardenable_network
    from medaudit.models import bind_model, load_model

    data = load_data(DataSpec(dataset="pneumoniamnist", split="train", limit=n, seed=SEED))
    model = load_model(MODEL)
    bind_model(model, data)
    config = HardenConfig(method=run if run != PLAIN else "pgd-at", epochs=1, margin_samples=0, seed=SEED)
    warm_up(model, data, config.batch_size)
    row: dict[str, Any] = {"run": run, "images": data.n, "threads": torch.get_num_threads()}
    if run == PLAIN:
        net, arch = hardenable_network(model, data.float_images(0, min(8, data.n)))
        row["arch"] = arch
        images, labels = data.float_images(0, data.n), data.labels
        spec = model.spec
        mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1)
        row["rss_before_mb"] = peak_rss_mb()
        cpu, wall = time.process_time(), time.perf_counter()
        adv_loss = plain_pgd_at_epoch(
            net, images, labels, mean=mean, std=std, eps=config.eps, steps=config.steps,
            batch_size=config.batch_size, lr=config.lr, weight_decay=config.weight_decay, seed=SEED,
        )  # fmt: skip
        row["cpu_s"], row["wall_s"] = time.process_time() - cpu, time.perf_counter() - wall
        row["epoch_wall_s"] = row["wall_s"]
        row["adv_loss"] = adv_loss
    else:
        row["rss_before_mb"] = peak_rss_mb()
        cpu, wall = time.process_time(), time.perf_counter()
        result = harden(model, data, config)
        row["cpu_s"], row["wall_s"] = time.process_time() - cpu, time.perf_counter() - wall
        (epoch,) = result.history
        row["epoch_wall_s"] = epoch["seconds"]
        row["adv_loss"], row["clean_loss"] = epoch["adv_loss"], epoch["clean_loss"]
        row["arch"] = result.arch
    row["rss_peak_mb"] = peak_rss_mb()
    return row


def measure(run: str, n: int) -> dict[str, Any]:
    """One cell in a fresh process, so its peak memory is its own."""
    args = [sys.executable, __file__, "--cell", run, str(n)]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    row = json.loads(out.strip().splitlines()[-1])
    print(json.dumps(row), flush=True)
    return row


def summarise(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians per run and the ratios to the plain loop."""
    rows = []
    for run in RUNS:
        mine = [c for c in cells if c["run"] == run]
        row: dict[str, Any] = {"run": run, "repeats": len(mine), "arch": mine[0]["arch"]}
        for key in ("cpu_s", "wall_s", "epoch_wall_s", "adv_loss", "rss_before_mb", "rss_peak_mb"):
            row[key] = statistics.median(c[key] for c in mine)
        if "clean_loss" in mine[0]:
            row["clean_loss"] = statistics.median(c["clean_loss"] for c in mine)
        row["images_per_s_wall"] = mine[0]["images"] / row["wall_s"]
        row["images_per_cpu_s"] = mine[0]["images"] / row["cpu_s"]
        row["rss_growth_mb"] = row["rss_peak_mb"] - row["rss_before_mb"]
        rows.append(row)
    plain = rows[0]
    for row in rows:
        row["cpu_vs_plain"] = row["cpu_s"] / plain["cpu_s"]
        row["wall_vs_plain"] = row["wall_s"] / plain["wall_s"]
        # each repeat's run against the plain loop of the same repeat (cells alternate in RUNS order)
        pairs = [
            (c["cpu_s"], cells[i - RUNS.index(row["run"])]["cpu_s"])
            for i, c in enumerate(cells)
            if c["run"] == row["run"]
        ]
        per_repeat = [mine / theirs for mine, theirs in pairs]
        row["cpu_vs_plain_range"] = [min(per_repeat), max(per_repeat)]
    return rows


def markdown(result: dict[str, Any], command: str) -> str:
    n, batch = result["images"], result["batch_size"]
    lines = [
        "# `harden`: one epoch per method vs a plain PyTorch PGD-AT loop",
        "",
        f"Command: `{command}`  ",
        f"Date: {result['date']}",
        "",
        *[f"- {fact}" for fact in result["machine"]],
        f"- load average at the start {result['load_start']:.2f}, at the end {result['load_end']:.2f}"
        + (
            ": other jobs shared the machine during this run, so wall times swing; the ratio uses CPU time"
            if max(result["load_start"], result["load_end"]) > 2.5
            else " (this run's own processes: the machine was otherwise idle)"
        ),
        "",
        f"Sample model `pneumoniamnist_rescnn.pt` (TorchScript, rebuilt as the eager `{result['arch']}` that "
        f"`harden` trains; 0.3 M parameters), {n} training images of 28×28 (stratified subset, seed {SEED}), "
        f"one epoch of {-(-n // batch)} batches of {batch}: eps 2/255 L∞, {result['steps']} attack steps, AdamW "
        f"lr {result['lr']:g}, weight decay {result['weight_decay']:g}, `margin_samples=0`. Median of "
        f"{result['repeats']} repeats that alternate between the four runs, each in its own process.",
        "",
        "- *plain PyTorch PGD-AT*: the loop in `harden_speed.py` (`plain_pgd_at_epoch`, torch only): random "
        "start, 5 signed steps of 2.5 eps / 5, attack in eval mode, AdamW step on the adversarial "
        "cross-entropy in train mode, on the same network copy, images and batch size;",
        "- *harden*: the whole `medaudit.harden.harden()` call (network copy, data fingerprint, the epoch); "
        "*epoch wall s* is the history's `seconds`, the epoch alone.",
        "- *CPU s*: process time (user + system, all torch threads) of the call; *× plain* is the ratio of "
        "CPU times. *images/s*: images per wall second of the call.",
        "- *peak RSS*: `ru_maxrss` of the whole process (Python, torch, medaudit, the loaded data and model "
        "included), after the epoch; *growth* is the peak after minus the peak before the epoch "
        "(after loading and the warm-up: one batch through a throwaway copy of the network and one "
        "AdamW step, which imports `torch._dynamo`, seconds of start-up that no epoch should carry), "
        "the memory the epoch itself added.",
        "- *adv loss*: mean over the epoch's batches of the adversarial term (PGD-AT: CE on the PGD "
        "images; TRADES: the KL term; IMA: CE on the boundary points, summed over the samples that "
        "crossed / batch size), so only the two PGD-AT rows compare.",
        "",
        "| run | CPU s | × plain (CPU) | per repeat | wall s | × plain (wall) | epoch wall s | images/s | "
        "peak RSS MB | growth MB | adv loss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        name = r["run"] if r["run"] == PLAIN else f"harden {r['run']}"
        lines.append(
            f"| {name} | {r['cpu_s']:.2f} | {r['cpu_vs_plain']:.2f}× | "
            f"{r['cpu_vs_plain_range'][0]:.2f}–{r['cpu_vs_plain_range'][1]:.2f}× | {r['wall_s']:.2f} | "
            f"{r['wall_vs_plain']:.2f}× | {r['epoch_wall_s']:.2f} | {r['images_per_s_wall']:.0f} | "
            f"{r['rss_peak_mb']:.0f} | {r['rss_growth_mb']:.0f} | {r['adv_loss']:.3f} |"
        )
    lines += [
        "",
        "Forward (F) and backward (B) passes per batch, which set the expected ratios: plain PGD-AT "
        "5 F+B (attack) + 1 F+B (training step); `harden pgd-at` the same plus one eval-mode clean "
        "forward for the progress bar's clean loss; `trades` 1 F (clean target) + 5 F+B (KL attack) + "
        "2 F and one B through both (clean CE + KL); `ima` 1 F (clean, in the training graph) + 5 F+B "
        "(PGD inside each correct sample's margin) + 10 F (bisection onto the boundary) + 1 F on the "
        "boundary points that were found, and one B.",
        "",
        "*per repeat*: the lowest and highest ratio of one repeat's CPU time to the plain loop's in the "
        "same repeat. With 2 torch threads on a machine whose load average is above its core count, "
        "OpenMP threads spin while they wait for each other and the spinning counts as process time, so "
        "CPU seconds here are several times the cost of the same work on a quiet machine and the "
        "ratios move between repeats: compare runs within one page, and rerun on an idle machine (or "
        "with `OMP_NUM_THREADS=1`) for tighter ratios.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--images", type=int, default=None, help=f"training images (default {IMAGES})")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_IMAGES} images, one repeat: a smoke test"
    )
    parser.add_argument(
        "--out-dir", type=Path, default=OUTPUT.parent, help="where RESULTS-harden.md/.json go"
    )
    parser.add_argument("--cell", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        print(json.dumps(cell(args.cell[0], int(args.cell[1]))))
        return
    from medaudit.harden import HardenConfig

    n = args.images or (QUICK_IMAGES if args.quick else IMAGES)
    repeats = 1 if args.quick else args.repeats
    load_start = os.getloadavg()[0]
    facts = machine_facts()
    cells = [measure(run, n) for _ in range(repeats) for run in RUNS]
    defaults = HardenConfig()
    result: dict[str, Any] = {
        "date": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "machine": facts,
        "load_start": load_start,
        "load_end": os.getloadavg()[0],
        "images": cells[0]["images"],
        "batch_size": defaults.batch_size,
        "eps": defaults.eps,
        "steps": defaults.steps,
        "lr": defaults.lr,
        "weight_decay": defaults.weight_decay,
        "repeats": repeats,
        "arch": cells[0]["arch"],
        "rows": summarise(cells),
        "cells": cells,
    }
    command = (
        "MEDAUDIT_DATA_ROOT=... OMP_NUM_THREADS=2 .venv/bin/python benchmarks/harden_speed.py"
        + "".join(f" {arg}" for arg in sys.argv[1:])
    )
    output = args.out_dir / OUTPUT.name
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(markdown(result, command))
    output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print(output.read_text())


if __name__ == "__main__":
    main()
