"""Every output file is written whole or not at all, and never over a file the run reads.

A regular file is written to a temp file beside its real location and renamed
over it, so a crash, an interrupt or a failed render never leaves a truncated
report or destroys the previous one. Anything else (``-`` for stdout, a device
such as ``/dev/null``, a FIFO) is written to directly: renaming over it would
replace the device node with a regular file. A symlinked target is followed, so
the link stays and the file it points to is replaced.

Sources register what they read (``mark_read``: the model, its card, the data,
the audit file, the policy, merged parts ...); ``check_target`` refuses an
output that is one of those files or lies inside a data folder, both before any
work (``commands.common.check_output_target``) and again here, at the last
moment, for inputs that were only known once the run had started.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from medaudit.errors import ConfigError, OutputError

_read: dict[Path, bool] = {}
"""Resolved paths this invocation reads -> whether each is a folder (outputs may not go inside)."""


def mark_read(path: str | Path | None) -> None:
    """Record an input of this run, so that no output replaces it."""
    if path is None or str(path) == "-":
        return
    target = Path(path)
    if target.exists():
        _read[target.resolve()] = target.is_dir()


@contextmanager
def reading_session() -> Iterator[None]:
    """One command's inputs: forgotten when it ends (tests run many commands in one process)."""
    saved = dict(_read)
    _read.clear()
    try:
        yield
    finally:
        _read.clear()
        _read.update(saved)


def _same(a: Path, b: Path) -> bool:
    try:
        return a == b or os.path.samefile(a, b)  # also a hard link to an input
    except OSError:
        return False


def read_input_at(target: str | Path) -> Path | None:
    """The input of this run that writing ``target`` would replace (or write into), else None."""
    path = Path(target).resolve()
    for source, is_folder in _read.items():
        if _same(path, source) or (is_folder and path.is_relative_to(source)):
            return source
    return None


def check_target(target: str | Path, option: str = "output") -> None:
    """Raise ConfigError when ``target`` is a file this run reads or lies in a data folder."""
    if str(target) == "-":
        return
    source = read_input_at(target)
    if source is None:
        return
    if _same(Path(target).resolve(), source):
        problem = f"would overwrite an input file of this run ({source})"
    else:
        problem = f"would write into the data folder {source}"
    raise ConfigError(f"{option} {target} {problem}: choose another path (it was not written)")


def _is_special(path: Path) -> bool:
    """A device, FIFO or socket: written in place, never renamed over."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def write_atomic(target: str | Path, content: str | bytes) -> None:
    """Write ``content`` to ``target`` (whole or not at all for files; 0644 like any output)."""
    if str(target) == "-":
        sys.stdout.write(content if isinstance(content, str) else content.decode())
        sys.stdout.flush()
        return
    data = content.encode("utf-8") if isinstance(content, str) else content
    check_target(target)
    path = Path(target).resolve() if Path(target).is_symlink() else Path(target)
    try:
        if _is_special(path):
            with open(path, "wb") as handle:
                handle.write(data)
            return
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(temp, 0o644)  # mkstemp makes 0600
        os.replace(temp, path)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}; nothing was written") from None
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
