"""The versioned JSON document every command writes with ``--json``.

Top-level keys (``medaudit/1``): schema, command, config, model, data, seed,
versions, wall_time_s, warnings, results. ``results`` depends on the command
and is the only part that must be identical for identical inputs and seed.
"""

from __future__ import annotations

import json
import math
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from medaudit import __version__
from medaudit.report.atomic import write_atomic

SCHEMA = "medaudit/1"


def versions() -> dict[str, str]:
    """medaudit's own version from the package, so a source checkout run without pip install records it too."""
    out = {"python": platform.python_version(), "medaudit": __version__}
    for package in ("torch", "numpy", "onnx", "onnxruntime", "onnx2pytorch", "medmnist"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return out


def document(
    command: str,
    config: dict[str, Any],
    results: dict[str, Any],
    *,
    model: dict[str, Any] | None,
    data: dict[str, Any] | None,
    seed: int | None,
    wall_time_s: float,
    warnings: list[str],
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "command": command,
        "config": config,
        "model": model,
        "data": data,
        "seed": seed,
        "versions": versions(),
        "wall_time_s": round(wall_time_s, 3),
        "warnings": warnings,
        "results": results,
    }


def _clean(value: Any) -> Any:
    """NaN/inf are not JSON: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(_clean(doc), indent=2, allow_nan=False)


def write_json(doc: dict[str, Any], target: str) -> None:
    """Write to a path atomically (no half-written file), or to stdout for '-'."""
    write_atomic(target, dumps(doc) + "\n")
