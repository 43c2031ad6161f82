"""A ``.pt2`` exported for batch size 1 against the same network as TorchScript and as a ``.pt2``
with a dynamic batch, on the PneumoniaMNIST test split.

The batch-1 program is exported here the way users usually do it
(``torch.export.export(model, (torch.zeros(1, C, H, W),))``) from the sample model, into a
temporary folder beside a copy of its card. Each model is loaded with ``medaudit.models.load_model``
and timed on two workloads that make up the audits:

- ``predict``: ``AuditModel.predict`` over every test image in batches of 256 (eval, the clean pass);
- ``gradient``: forward and backward passes on the same batches (one white-box attack step);

for the batch-1 program both as medaudit now runs it (one vmapped call per batch) and the old way
(one call per image: ``FixedBatch(..., vectorised=False)``); then ``medaudit eval`` end to end (a
whole process: start-up, loading, the vectorising check, inference, bootstrap) on each file.
Times are CPU seconds (process time; for ``eval``, the child's user + system time: the machine is
shared, so wall times swing), median of the repeats, which alternate between models.
Run from the repository root::

    MEDAUDIT_DATA_ROOT=/path/to/medmnist OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pt2_speed.py [--quick] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medaudit.models import AuditModel, load_model
from medaudit.models.formats import FixedBatch

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "benchmarks" / "RESULTS-pt2.md"
SAMPLE = ROOT / "sample_models" / "pneumoniamnist_rescnn"
BATCH = 256
REPEATS = 3


def test_images(limit: int | None) -> torch.Tensor:
    """PneumoniaMNIST's test split as [0,1] float NCHW."""
    root = Path(os.environ.get("MEDAUDIT_DATA_ROOT", Path.home() / ".medmnist"))
    images = np.load(root / "pneumoniamnist.npz")["test_images"][:limit]
    return torch.from_numpy(images).float().div(255).unsqueeze(1)


def export_batch_one(folder: Path) -> Path:
    """The sample network exported with a batch-1 example and no dynamic_shapes, with its card."""
    program = torch.export.load(str(SAMPLE.with_suffix(".pt2")))
    fixed = torch.export.export(program.module(), (torch.zeros(1, 1, 28, 28),))
    path = folder / "batch1.pt2"
    torch.export.save(fixed, str(path))
    shutil.copy(SAMPLE.with_suffix(".json"), path.with_suffix(".json"))
    return path


def per_image(model: AuditModel) -> AuditModel:
    """The same loaded model fed one image per call, as medaudit ran batch-1 programs before."""
    assert isinstance(model.network, FixedBatch) and model.network.vectorised
    model.network = FixedBatch(model.network.network, model.network.batch, vectorised=False)
    return model


def predict(model: AuditModel, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([model.predict(chunk) for chunk in x.split(BATCH)])


def gradient(model: AuditModel, x: torch.Tensor) -> torch.Tensor:
    grads = []
    for chunk in x.split(BATCH):
        chunk = chunk.clone().requires_grad_(True)
        grads.append(torch.autograd.grad(model(chunk).logsumexp(1).sum(), chunk)[0])
    return torch.cat(grads)


def cpu_seconds(work: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor]:
    start = time.process_time()
    out = work()
    return time.process_time() - start, out


def eval_cpu_seconds(path: Path) -> float:
    """User + system CPU seconds of one ``medaudit eval`` process on the test split."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [str(ROOT / ".venv" / "bin" / "medaudit"), "eval", str(path), "--dataset", "pneumoniamnist"],
        check=True,
        capture_output=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def measure(limit: int | None, repeats: int, with_eval: bool) -> dict[str, Any]:
    x = test_images(limit)
    with tempfile.TemporaryDirectory() as tmp:
        batch_one = export_batch_one(Path(tmp))
        models = {
            "TorchScript .pt": load_model(SAMPLE.with_suffix(".pt")),
            ".pt2, dynamic batch": load_model(SAMPLE.with_suffix(".pt2")),
            ".pt2, batch 1 (vmap, now)": load_model(batch_one),
            ".pt2, batch 1 (one call per image, before)": per_image(load_model(batch_one)),
        }
        note = models[".pt2, batch 1 (vmap, now)"].info.notes[0]
        files = {
            "TorchScript .pt": SAMPLE.with_suffix(".pt"),
            ".pt2, dynamic batch": SAMPLE.with_suffix(".pt2"),
            ".pt2, batch 1 (vmap, now)": batch_one,
        }
        evals: dict[str, list[float]] = {name: [] for name in files}
        for _ in range(repeats if with_eval else 0):
            for name, path in files.items():
                evals[name].append(eval_cpu_seconds(path))
    times: dict[str, dict[str, list[float]]] = {name: {"predict": [], "gradient": []} for name in models}
    outputs: dict[str, dict[str, torch.Tensor]] = {name: {} for name in models}
    for model in models.values():  # warm-up: TorchScript optimises its graph on the first calls
        predict(model, x[:BATCH])
        gradient(model, x[:BATCH])
    for _ in range(repeats):
        for name, model in models.items():
            for workload, run in (("predict", predict), ("gradient", gradient)):
                seconds, out = cpu_seconds(lambda m=model, r=run: r(m, x))  # type: ignore[misc]
                times[name][workload].append(seconds)
                outputs[name][workload] = out
    reference = outputs["TorchScript .pt"]
    rows = []
    for name in models:
        row: dict[str, Any] = {"model": name}
        for workload in ("predict", "gradient"):
            row[f"{workload}_cpu_s"] = statistics.median(times[name][workload])
            row[f"{workload}_vs_torchscript"] = row[f"{workload}_cpu_s"] / statistics.median(
                times["TorchScript .pt"][workload]
            )
            row[f"{workload}_max_abs_diff"] = float(
                (outputs[name][workload] - reference[workload]).abs().max()
            )
        rows.append(row)
    eval_rows = [
        {"model": name, "eval_cpu_s": statistics.median(times)} for name, times in evals.items() if times
    ]
    return {
        "images": len(x),
        "batch_size": BATCH,
        "repeats": repeats,
        "load_note": note,
        "rows": rows,
        "eval": eval_rows,
    }


def markdown(result: dict[str, Any], command: str) -> str:
    lines = [
        "# `.pt2` exported for batch size 1 vs TorchScript",
        "",
        f"Command: `{command}`  ",
        f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"- CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared with other "
        f"jobs: times are process CPU seconds, not wall), load average at start {result['load_start']:.2f}",
        f"- torch {torch.__version__}, {torch.get_num_threads()} thread(s); Python {platform.python_version()}",
        "",
        f"PneumoniaMNIST test split, {result['images']} images of 28×28, batches of {result['batch_size']}, "
        f"sample model `pneumoniamnist_rescnn` (0.3 M parameters). Median of {result['repeats']} alternating "
        "repeats. *predict*: `AuditModel.predict` over every image (eval's clean pass); *gradient*: forward "
        "and backward over every image (one white-box attack step). The batch-1 program is "
        "`torch.export.export(model, (torch.zeros(1, 1, 28, 28),))` of the same network. "
        "max |diff| is against TorchScript's logits / input gradients.",
        "",
        "| model | predict CPU s | × TorchScript | max abs diff | gradient CPU s | × TorchScript | max abs diff |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['model']} | {r['predict_cpu_s']:.3g} | {r['predict_vs_torchscript']:.2f}× | "
            f"{r['predict_max_abs_diff']:.2g} | {r['gradient_cpu_s']:.3g} | {r['gradient_vs_torchscript']:.2f}× | "
            f"{r['gradient_max_abs_diff']:.2g} |"
        )
    if result["eval"]:
        lines += [
            "",
            "`medaudit eval FILE --dataset pneumoniamnist` (all 624 test images, 1000 bootstrap resamples), "
            "user + system CPU seconds of the whole process:",
            "",
            "| model | eval CPU s |",
            "|---|---:|",
        ]
        lines += [f"| {r['model']} | {r['eval_cpu_s']:.3g} |" for r in result["eval"]]
    lines += ["", f"The note `medaudit info` shows for the batch-1 program: {result['load_note']}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--limit", type=int, default=None, help="first N test images only (smoke test)")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--skip-eval", action="store_true", help="leave out the medaudit eval processes")
    parser.add_argument("--quick", action="store_true", help="64 images, one repeat, no eval: a smoke test")
    parser.add_argument("--out-dir", type=Path, default=OUTPUT.parent, help="where RESULTS-pt2.md/.json go")
    args = parser.parse_args()
    if args.quick:
        args.limit, args.repeats, args.skip_eval = args.limit or 64, 1, True
    output = args.out_dir / OUTPUT.name
    load_start = os.getloadavg()[0]
    result = measure(args.limit, args.repeats, not args.skip_eval)
    result["load_start"] = load_start
    command = "MEDAUDIT_DATA_ROOT=... OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pt2_speed.py" + "".join(
        f" {arg}" for arg in sys.argv[1:]
    )
    output.write_text(markdown(result, command))
    output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print(output.read_text())


if __name__ == "__main__":
    main()
