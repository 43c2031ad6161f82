"""Writing the JSON document (``medaudit.document``) with ``--json``: a file atomically, or stdout."""

from __future__ import annotations

from typing import Any

from medaudit.document import dumps
from medaudit.report.atomic import write_atomic


def write_json(doc: dict[str, Any], target: str) -> None:
    """Write to a path atomically (no half-written file), or to stdout for '-'."""
    write_atomic(target, dumps(doc) + "\n")
