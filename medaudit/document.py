"""The versioned JSON document every command writes, below both ``report`` and ``gate``.

Top-level keys (``medaudit/1``): schema, command, config, model, data, seed,
versions, wall_time_s, warnings, results. ``results`` depends on the command
and is the only part that must be identical for identical inputs and seed; a
``run`` report holds one results section per audit.
"""

from __future__ import annotations

import json
import math
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from medaudit import __version__
from medaudit.errors import ConfigError

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


def check_report(doc: Any, name: str = "report") -> None:
    """Refuse anything that is not a medaudit/1 document with a results object."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{name} is not a medaudit report (a JSON object with schema '{SCHEMA}')")
    if doc.get("schema") != SCHEMA:
        raise ConfigError(
            f"{name} has schema {doc.get('schema')!r}, expected '{SCHEMA}': not a medaudit report"
        )
    if not isinstance(doc.get("results"), dict):
        raise ConfigError(f"{name} has no results object: not a complete medaudit report")


def sections(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Results by audit: a single-command report -> {command: results}; a ``run`` report -> its results."""
    check_report(doc)
    results = doc["results"]
    if doc.get("command") == "run":
        return {name: value for name, value in results.items() if isinstance(value, dict)}
    return {str(doc.get("command")): results}
