"""Speed of ``medaudit.shift.corrupt`` against the reference ``medmnistc`` 0.1.0, per corruption.

For every corruption (on one dataset that has it, grey or RGB as that dataset
is), at 28 and 224 px and severities 1 and 5, this times

- medaudit: one ``corrupt()`` call on a uint8 NCHW batch, with the published
  224 px parameters (``mode="medmnistc"``, the same work as the reference) and,
  at 28 px, also in ``scaled`` mode (what ``medaudit shift`` runs there);
- medmnistc: ``DatasetManager``'s per-image pipeline (PIL image ->
  ``convert('RGB')`` -> ``apply(img, severity - 1)`` -> ``convert('L')`` for grey
  datasets) on the same images;

each as the median of several repeats, in CPU ms per image (process time: the
machine is shared, so wall times swing with other jobs' load), and one end-to-end
``medaudit shift`` run per sample-model format. Results go to
``benchmarks/RESULTS-shift.md``. Run from the repository root, with
``medmnistc`` installed as ``benchmarks/README.md`` describes::

    PYTHONPATH=/tmp/parity-pkgs .venv/bin/python benchmarks/shift_speed.py [--quick] [--only a,b]

Without ``medmnistc`` (or OpenCV) only the medaudit columns are filled.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import importlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from medmnistc_stubs import wand_stubs
from PIL import Image
from scipy.ndimage import gaussian_filter

from medaudit.shift.catalogue import PARAMS, REFERENCE_SIZE, RGB_DATASETS, all_corruptions
from medaudit.shift.corrupt import corrupt

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "benchmarks" / "RESULTS-shift.md"
SIZES = (28, 224)
SEVERITIES = (1, 5)
BATCH = {28: 512, 224: 64}
QUICK_BATCH = {28: 64, 224: 8}
REPEATS = 3
SPEEDUP_TARGET = 10.0
DATASET_PREFERENCE = ("pneumoniamnist", "dermamnist", "pathmnist")
"""Each corruption is timed on the first of these that has it (grey X-ray first, as in the end-to-end run)."""
E2E_MODELS = ("sample_models/pneumoniamnist_rescnn.onnx", "sample_models/pneumoniamnist_rescnn.pt")
E2E_DATA_ROOT = "../shared/data/medmnist"
NOT_RUN = {
    "motion_blur": "not run (needs ImageMagick/Wand; on numpy ≥ 2.3 it also crashes in np.fromstring)",
}
"""Reference corruptions that cannot run in this environment, with the reason."""
CAUSES = {
    "pixelate": "both sides call PIL's C BOX resampler per image; medaudit only skips the RGB round trip",
    "jpeg_compression": "PIL's libjpeg codec is the cost on both sides (medaudit encodes grey images as L, "
    "bit-identical to the reference's RGB round trip)",
    "gaussian_noise": "bound by random number generation: PCG64 normals alone take ≈1.7 ms/img at "
    "224 px RGB (the reference's legacy generator ≈2.1), and grey images carry 3 channels of noise as in "
    "MedMNIST-C",
    "speckle_noise": "bound by random number generation (one normal per value), as gaussian_noise",
    "impulse_noise": "bound by random number generation (two uniforms per value, as scikit-image)",
    "shot_noise": "bound by Poisson draws (≈6.7 ms/img at 224 px RGB with PCG64, 7.4 legacy)",
    "defocus_blur": "the reference calls OpenCV's C++ filter2D per channel; medaudit's float64 FFT "
    "(needed for bit-exact 8-bit truncation) is about as fast",
    "zoom_blur": "float64 bilinear sampling (for agreement with scipy within one grey level) of 11-31 "
    "zooms per image",
    "gaussian_blur": "a 3×3 kernel is cheap for torchvision per image too",
    "brightness_up": "PIL's ImageEnhance is C code; medaudit's float32 blend makes 4 passes over the batch",
    "brightness_down": "PIL's ImageEnhance is C code; medaudit's float32 blend makes 4 passes over the batch",
    "contrast_up": "PIL's ImageEnhance is C code; medaudit's float32 blend makes 4 passes over the batch",
    "contrast_down": "PIL's ImageEnhance is C code; medaudit's float32 blend makes 4 passes over the batch",
    "gamma_corr_up": "both sides are a 256-entry lookup table; numpy's fancy indexing is no faster than PIL's",
    "gamma_corr_down": "both sides are a 256-entry lookup table; numpy's fancy indexing is no faster than PIL's",
    "saturate": "both sides do the same float64 HSV round trip in numpy (scikit-image vs medaudit), "
    "needed for bit-exact results",
    "black_corner": "a mask multiply, memory-bound on both sides; medaudit's marks work on the NCHW "
    "batch directly (no NHWC round trip)",
    "stain_deposit": "a per-image Python loop on both sides (blob shapes and placement draws); medaudit "
    "zeroes the ink in one uint8 pass",
    "bubble": "a per-image Python loop on both sides: PIL draws the discs and blends them in C (medaudit "
    "once per channel plane)",
    "characters": "a per-image Python loop on both sides; medaudit assembles each word from cached "
    "supersampled FreeType letters (one np.bincount) and blends it in float32: ≈40 µs a word at "
    "severity 5 (14 scalar draws, a dozen small numpy calls) against ≈30 for the reference's "
    "cv2.putText, so its lead comes from the per-image part and shrinks from 1 word an image "
    "(severity 1) to 1–6 (severity 5)",
}
"""Why a corruption may stay below the target speed-up (filled in from the measurements and profiles)."""


@dataclass
class Row:
    """One (corruption, size, severity) measurement; times in ms per image, or a text when not measured."""

    corruption: str
    dataset: str
    size: int
    severity: int
    ours: float
    ours_scaled: float | None
    reference: float | str


def synthetic_images(n: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
    """uint8 (n, size, size, channels): smooth random fields with fine texture and a gradient, seeded."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(-40, 40, size)[None, :, None]
    out = np.empty((n, size, size, channels), dtype=np.uint8)
    for i in range(n):
        coarse = gaussian_filter(rng.normal(size=(size, size, channels)), (size / 10, size / 10, 0))
        fine = gaussian_filter(rng.normal(size=(size, size, channels)), (1, 1, 0))
        coarse = (coarse - coarse.mean()) / (coarse.std() + 1e-12)
        image = 128 + 50 * coarse + 12 * fine / (fine.std() + 1e-12) + ramp
        out[i] = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return out


def load_reference() -> tuple[dict[str, dict[str, Any]], dict[str, bool]] | None:
    """medmnistc's ``CORRUPTIONS_DS`` and ``DATASET_RGB``, or None when it cannot be imported."""
    try:
        with wand_stubs():
            registry = importlib.import_module("medmnistc.corruptions.registry")
    except ImportError as error:
        print(f"medmnistc not importable ({error}): reference column left empty", file=sys.stderr)
        return None
    return registry.CORRUPTIONS_DS, registry.DATASET_RGB


def reference_pipeline(corruptor: Any, images: np.ndarray, severity: int, rgb: bool) -> np.ndarray:
    """``DatasetManager``'s per-image loop on uint8 NHW (grey) or NHWC (RGB) images."""
    out = []
    for image in images:
        corrupted = corruptor.apply(Image.fromarray(image).convert("RGB"), severity - 1)
        if not rgb:
            corrupted = Image.fromarray(corrupted).convert("L")
        out.append(np.asarray(corrupted))
    return np.stack(out)


def reference_run(corruptor: Any, images: np.ndarray, severity: int, rgb: bool) -> Callable[[], object]:
    """The reference pipeline as a callable, its random state seeded as ``DatasetManager`` seeds it."""
    np.random.seed(0)  # the noise corruptions draw from numpy's and Python's global generators
    random.seed(0)
    if type(corruptor).__name__ == "ImpulseNoise":
        corruptor.rng = np.random.default_rng(0)  # DatasetManager sets this; apply() fails without it
    return lambda: reference_pipeline(corruptor, images, severity, rgb)


def interleaved_ms(
    runs: dict[str, Callable[[], object]], n_images: int, repeats: int
) -> dict[str, float | str]:
    """Median CPU ms per image of each callable (process time, all threads), or 'fails (ExceptionType)'.

    After one warm-up each, the repeats take turns (a, b, c, a, b, c, ...), so
    load from other jobs on the shared machine hits every contender alike.
    """
    times: dict[str, list[float]] = {name: [] for name in runs}
    failed: dict[str, str] = {}
    for round_ in range(repeats + 1):
        for name, run in runs.items():
            if name in failed:
                continue
            start = time.process_time()
            try:
                run()
            except Exception as error:
                failed[name] = f"fails ({type(error).__name__})"
                continue
            if round_ > 0:  # round 0 is the warm-up (lazy imports, caches, font loading)
                times[name].append(time.process_time() - start)
    return {name: failed.get(name) or 1000 * statistics.median(times[name]) / n_images for name in runs}


def dataset_for(corruption: str) -> str:
    return next(name for name in DATASET_PREFERENCE if corruption in PARAMS[name])


def measure(
    batch: dict[int, int], repeats: int, reference: tuple[dict, dict] | None, only: list[str]
) -> list[Row]:
    """Every corruption (or those in ``only``) x size x severity; prints each row as it goes."""
    rows = []
    for corruption in only or all_corruptions():
        dataset = dataset_for(corruption)
        rgb = dataset in RGB_DATASETS
        for size in SIZES:
            nhwc = synthetic_images(batch[size], size, 3 if rgb else 1, seed=size)
            nchw = np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))
            for severity in SEVERITIES:
                modes = ("medmnistc",) if size == REFERENCE_SIZE else ("medmnistc", "scaled")
                runs: dict[str, Callable[[], object]] = {
                    mode: functools.partial(
                        corrupt, nchw, corruption, severity, 0, dataset=dataset, mode=mode
                    )
                    for mode in modes
                }
                if reference is not None and corruption not in NOT_RUN:
                    corruptor = reference[0][dataset][corruption]
                    runs["reference"] = reference_run(corruptor, nhwc if rgb else nhwc[..., 0], severity, rgb)
                times = interleaved_ms(runs, len(nchw), repeats)
                if reference is None:
                    times["reference"] = "not installed"
                elif corruption in NOT_RUN:
                    times["reference"] = NOT_RUN[corruption]
                ours, scaled = times["medmnistc"], times.get("scaled")
                assert isinstance(ours, float) and not isinstance(scaled, str), f"medaudit failed: {times}"
                row = Row(corruption, dataset, size, severity, ours, scaled, times["reference"])
                rows.append(row)
                print(" | ".join(table_cells(row)), flush=True)
    return rows


def end_to_end(repeats: int) -> list[tuple[str, float, float]]:
    """(command, median wall_time_s from --json, median process seconds) per sample model; runs alternate."""
    env = {**os.environ, "MEDAUDIT_DATA_ROOT": E2E_DATA_ROOT}
    env.pop("PYTHONPATH", None)  # the project venv alone, without the reference packages
    exe = str(Path(sys.executable).parent / "medaudit")
    walls: dict[str, list[float]] = {model: [] for model in E2E_MODELS}
    processes: dict[str, list[float]] = {model: [] for model in E2E_MODELS}
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "shift.json"
        for _ in range(repeats):
            for model in E2E_MODELS:
                start = time.perf_counter()
                subprocess.run(
                    [exe, "shift", model, "--json", str(report)],
                    cwd=ROOT,
                    env=env,
                    check=True,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                processes[model].append(time.perf_counter() - start)
                walls[model].append(json.loads(report.read_text())["wall_time_s"])
    results = []
    for model in E2E_MODELS:
        command = f"MEDAUDIT_DATA_ROOT={E2E_DATA_ROOT} .venv/bin/medaudit shift {model} --json out.json"
        results.append((command, statistics.median(walls[model]), statistics.median(processes[model])))
        print(f"{command}: {results[-1][1]:.2f} s (process {results[-1][2]:.2f} s)", flush=True)
    return results


def fmt_ms(value: float | str | None) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    return f"{value:.3g}" if value >= 0.001 else f"{value:.1e}"


def speedup(row: Row) -> float | None:
    return row.reference / row.ours if isinstance(row.reference, float) else None


def table_cells(row: Row) -> list[str]:
    ratio = speedup(row)
    return [
        row.corruption,
        f"{row.dataset}{' (RGB)' if row.dataset in RGB_DATASETS else ''}",
        str(row.size),
        str(row.severity),
        fmt_ms(row.ours),
        fmt_ms(row.ours_scaled),
        fmt_ms(row.reference),
        "–" if ratio is None else f"{ratio:.1f}×",
    ]


def machine_facts() -> list[str]:
    """CPU, thread and version facts for the report header."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    versions = []
    for package in ("medaudit", "numpy", "torch", "pillow", "scipy", "scikit-image", "torchvision"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{package} {metadata.version(package)}")
    for package in ("medmnistc", "opencv-python-headless"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} not installed")
    return [
        f"- CPU: {cpu}, {len(os.sched_getaffinity(0))} cores usable (shared with other jobs), "
        f"load average at start {os.getloadavg()[0]:.2f}",
        f"- torch threads: {torch.get_num_threads()} (OpenCV and numpy use their defaults)",
        f"- Python {platform.python_version()} on {platform.platform()}",
        f"- {', '.join(versions)}",
    ]


def report(
    rows: list[Row],
    e2e: list[tuple[str, float, float]],
    facts: list[str],
    batch: dict[int, int],
    repeats: int,
    command: str,
) -> str:
    """The Markdown results page."""
    header = [
        "corruption",
        "dataset",
        "px",
        "sev",
        "medaudit ms/img",
        "medaudit scaled ms/img",
        "medmnistc ms/img",
        "speed-up",
    ]
    lines = [
        "# `medaudit.shift` speed vs `medmnistc` 0.1.0",
        "",
        f"Command: `{command}`  ",
        f"Date: {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        "",
        *facts,
        "",
        f"Synthetic, seeded image-like data (smooth fields + texture + gradient); {batch[28]} images at 28 px, "
        f"{batch[224]} at 224 px. Every time is the **median of {repeats} repeats** after a warm-up, in **CPU** "
        "ms per image (process time of all threads: the machine is shared, so wall times swing with other "
        "jobs' load). `medaudit`: one `corrupt()` call on the uint8 NCHW batch with the published parameters "
        "(`mode='medmnistc'`, the same work as the reference); *scaled* is `mode='scaled'`, what "
        "`medaudit shift` runs below 224 px. `medmnistc`: its `DatasetManager` per-image pipeline "
        "(PIL → `convert('RGB')` → `apply(img, severity-1)` → `convert('L')` for grey datasets) on the same "
        "images. Speed-up = medmnistc / medaudit (same parameters). Repeats of medaudit and medmnistc "
        "alternate, so load from other jobs hits both alike; torch-based rows (the blurs, the end-to-end "
        "runs) still swing several-fold when the 2 cores are oversubscribed (torch's 2 OpenMP threads "
        "then wait on each other), so check the load averages.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if i >= 2 else "---" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(table_cells(row)) + " |" for row in rows]
    slow: dict[str, list[str]] = {}
    for row in rows:
        ratio = speedup(row)
        if ratio is not None and ratio < SPEEDUP_TARGET:
            slow.setdefault(row.corruption, []).append(f"{row.size} px sev {row.severity}: {ratio:.1f}×")
    behind = [row for row in rows if row.size == REFERENCE_SIZE and (speedup(row) or 1.0) < 1.0]
    lines += ["", "## Slower than the reference at 224 px", ""]
    lines += [f"- {row.corruption} sev {row.severity}: {speedup(row):.2f}×" for row in behind] or ["None."]
    lines += ["", f"## Where medaudit is not at least {SPEEDUP_TARGET:g}× faster", ""]
    if not slow:
        lines.append("None.")
    for corruption, cases in slow.items():
        cause = CAUSES.get(corruption, "not explained yet: profile it")
        lines.append(f"- **{corruption}** ({'; '.join(cases)}): {cause}.")
    if e2e:
        lines += [
            "",
            "## End to end",
            "",
            "13 corruptions × 5 severities × 624 PneumoniaMNIST test images (28 px, scaled mode), corruption "
            f"and inference; median of {repeats} runs. `wall_time_s` is the run's own timer from `--json` "
            "(after start-up); *process* adds interpreter start-up and imports.",
            "",
            "| command | wall_time_s | process s |",
            "|---|---:|---:|",
        ]
        lines += [f"| `{command}` | {wall:.2f} | {process:.2f} |" for command, wall, process in e2e]
    lines += ["", f"Load average at the end: {os.getloadavg()[0]:.2f}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="few images, one repeat: a smoke test")
    parser.add_argument("--skip-e2e", action="store_true", help="leave out the end-to-end runs")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="Markdown file to write")
    parser.add_argument("--only", default="", help="comma-separated corruptions (default: all)")
    args = parser.parse_args()
    batch, repeats = (QUICK_BATCH, 1) if args.quick else (BATCH, REPEATS)
    facts = machine_facts()
    rows = measure(batch, repeats, load_reference(), [name for name in args.only.split(",") if name])
    e2e = [] if args.skip_e2e else end_to_end(repeats)
    command = "PYTHONPATH=/tmp/parity-pkgs .venv/bin/python benchmarks/shift_speed.py" + "".join(
        f" {arg}" for arg in sys.argv[1:]
    )
    args.output.write_text(report(rows, e2e, facts, batch, repeats, command))
    summary = {"command": command, "rows": [vars(row) for row in rows], "end_to_end": e2e}
    args.output.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
