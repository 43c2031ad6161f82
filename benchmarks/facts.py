"""What every benchmark shares: machine facts (absolute times mean little without them) and timing."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = (
    "medaudit", "torch", "numpy", "onnxruntime", "pillow", "scipy", "torchattacks",
    "adversarial-robustness-toolbox", "scikit-dimension", "medmnistc", "opencv-python-headless",
)  # fmt: skip


def machine_facts() -> list[str]:
    """CPU, cores, load, torch threads and package versions, one fact per line."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    versions = []
    for package in PACKAGES:
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} not installed")
    return [
        f"CPU: {cpu}, {len(os.sched_getaffinity(0))} cores usable, load average {os.getloadavg()[0]:.2f}",
        f"torch threads: {torch.get_num_threads()}",
        f"Python {platform.python_version()} on {platform.platform()}",
        ", ".join(versions),
    ]


def timed(fn: Callable[[], float], repeats: int) -> tuple[float, float]:
    """(median seconds, value returned by the last run)."""
    times, value = [], float("nan")
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value
