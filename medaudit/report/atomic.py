"""Every output file is written whole or not at all.

Content goes to a temp file beside the target and is renamed over it, so a
crash or a failed render never leaves a truncated report or destroys the
previous one; '-' means stdout (text only).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


def write_atomic(target: str | Path, content: str | bytes) -> None:
    """Write ``content`` to ``target`` atomically, readable like any output (0644)."""
    if str(target) == "-":
        sys.stdout.write(content if isinstance(content, str) else content.decode())
        sys.stdout.flush()
        return
    path = Path(target)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content.encode("utf-8") if isinstance(content, str) else content)
        os.chmod(temp, 0o644)  # mkstemp makes 0600
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
