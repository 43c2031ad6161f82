"""Progress of every long step, on stderr (stdout may carry the JSON with ``--json -``).

On a terminal: a transient rich bar per stage with done/total, percent, elapsed time and ETA
(a spinner for ``intrinsic``'s stages, which have no units).

Elsewhere (stderr not a TTY: CI logs, ``make``, a pipe): plain lines, flushed at once, e.g.
``attacking: 1248/3120 (40%), 35 s elapsed, ~52 s left``. A stage prints its first line when
it reports its first unit (or after ``INTERVAL_S`` if none came by then), one every
``INTERVAL_S`` after that (also while no unit completes: a heartbeat thread keeps a slow batch
from going silent), and one when it ends (``..., done``). Nothing is printed for a stage that
fails before its first unit, and no end line for one that fails: an error stays the single
``error:`` line whenever it comes before any progress. Stage names are printed as given, never
read as rich markup (they may contain user strings).

``--quiet`` (or ``MEDAUDIT_QUIET=1``) silences both; tables, warnings and errors still print.
The library functions keep receiving plain ``advance(n)`` / ``update(stage)`` callbacks.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import IO, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from medaudit.audits.base import Context
from medaudit.commands.common import settings

INTERVAL_S = 10.0
"""Seconds between two plain progress lines of one stage (tests lower it)."""

_prefix: ContextVar[str] = ContextVar("medaudit_progress_prefix", default="")


class Advance(Protocol):
    """Counts finished units; ``detail`` (e.g. the current losses) is shown after the counts
    until the next one replaces it."""

    def __call__(self, n: int, detail: str | None = None) -> None: ...


def _ignore(*_: object, **__: object) -> None:
    return None


def interactive(console: Console) -> bool:
    """Whether rich can draw live bars: the console's file is a TTY (FORCE_COLOR alone does not
    make a CI log one) and not a dumb terminal."""
    isatty = getattr(console.file, "isatty", None)
    try:
        tty = bool(isatty and isatty())
    except ValueError:  # a closed file
        tty = False
    return tty and console.is_terminal and not console.is_dumb_terminal


def duration(seconds: float) -> str:
    """``35 s``, ``4 min 05 s``, ``2 h 03 min``."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


class LineProgress:
    """Plain progress lines for one stage; ``total`` None for a stage without units."""

    def __init__(self, stage: str, total: int | None, stream: IO[str], interval: float | None = None) -> None:
        self.stage, self.total, self.stream = stage, total, stream
        self.interval = INTERVAL_S if interval is None else interval
        self.done = 0
        self.detail: str | None = None
        self.start = time.monotonic()
        self.last: float | None = None  # when the last line was printed
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def line(self, final: bool = False) -> str:
        elapsed = time.monotonic() - self.start
        if self.total is None:
            return f"{self.stage}: {duration(elapsed)} elapsed" + (", done" if final else "")
        percent = 100 if self.total <= 0 else min(100, math.floor(100 * self.done / self.total))
        text = f"{self.stage}: {self.done}/{self.total} ({percent}%), {duration(elapsed)} elapsed"
        if self.detail:
            text += f", {self.detail}"
        if final:
            return text + ", done"
        if 0 < self.done < self.total:
            text += f", ~{duration(elapsed * (self.total - self.done) / self.done)} left"
        return text

    def _write(self, final: bool = False) -> None:
        self.stream.write(self.line(final) + "\n")
        self.stream.flush()
        self.last = time.monotonic()

    def advance(self, n: int = 1, detail: str | None = None) -> None:
        """Count ``n`` units; the first one prints a line, later ones when ``interval`` has passed
        (the end line reports the last units)."""
        with self._lock:
            self.done += n
            self.detail = detail or self.detail
            if self.total is not None and self.done >= self.total:
                return
            if self.last is None or time.monotonic() - self.last >= self.interval:
                self._write()

    def tick(self) -> None:
        """A line if none came for ``interval`` (the heartbeat calls this)."""
        with self._lock:
            since = self.start if self.last is None else self.last
            if time.monotonic() - since >= self.interval:
                self._write()

    def finish(self) -> None:
        with self._lock:
            self._write(final=True)

    def start_heartbeat(self) -> None:
        """Tick from a daemon thread until ``stop_heartbeat`` (no thread when ``interval`` is 0)."""
        if self.interval <= 0:
            return
        self._stop = threading.Event()
        stop = self._stop

        def beat() -> None:
            while not stop.wait(min(1.0, self.interval)):
                self.tick()

        self._thread = threading.Thread(target=beat, name="medaudit-progress", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    @contextmanager
    def running(self) -> Iterator[Advance]:
        """The stage's ``advance``; the end line only when the stage ends without an error."""
        self.start_heartbeat()
        try:
            yield self.advance
        finally:
            self.stop_heartbeat()
        self.finish()


def _label(description: str) -> str:
    prefix = _prefix.get()
    return f"{prefix} {description}" if prefix else description


@contextmanager
def audit_prefix(name: str, index: int, count: int) -> Iterator[None]:
    """Inside ``run``: stages read ``[2/4 attack] attacking: ...``."""
    token = _prefix.set(f"[{index}/{count} {name}]")
    try:
        yield
    finally:
        _prefix.reset(token)


@contextmanager
def progress_bar(console: Console, description: str, total: int | None) -> Iterator[Advance]:
    """Progress of one stage on ``console`` (stderr); yields an ``advance(n)`` callback.
    ``total`` None: a stage without units (a pulsing bar; lines with the elapsed time only)."""
    label = _label(description)
    if settings().quiet:
        yield _ignore
    elif interactive(console):
        with Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[detail]}", markup=False),
            console=console,
            transient=True,
        ) as progress:
            task_id = progress.add_task(label, total=total, detail="")

            def advance(n: int, detail: str | None = None) -> None:
                if detail:
                    progress.update(task_id, detail=detail)
                progress.advance(task_id, n)

            yield advance
    else:
        with LineProgress(label, total, console.file).running() as advance:
            yield advance


class _StageLines:
    """Plain lines for a sequence of stages without units: each ends when the next begins."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.current: LineProgress | None = None

    def update(self, stage: str) -> None:
        self.stop(finished=True)
        self.current = LineProgress(_label(stage), None, self.stream)
        self.current.start_heartbeat()

    def stop(self, finished: bool) -> None:
        current, self.current = self.current, None
        if current is not None:
            current.stop_heartbeat()
            if finished:
                current.finish()


@contextmanager
def stage_status(console: Console, first: str = "starting") -> Iterator[Callable[[str], None]]:
    """Progress of a step made of named stages without units (``intrinsic``); yields
    ``update(stage)``. A spinner on a terminal, else a line per stage as in ``progress_bar``."""
    if settings().quiet:
        yield _ignore
    elif interactive(console):
        with console.status(Text(_label(first))) as status:
            yield lambda stage: status.update(Text(_label(stage)))
    else:
        lines = _StageLines(console.file)
        finished = False
        try:
            yield lines.update
            finished = True
        finally:
            lines.stop(finished)


def context(
    console: Console, batch_size: int, seed: int, data_file: Path | None, sharded: bool = False
) -> Context:
    """An audit's context with progress on ``console`` (bars on a terminal, lines elsewhere)."""
    return Context(
        batch_size=batch_size,
        seed=seed,
        data_file=data_file,
        sharded=sharded,
        progress=functools.partial(progress_bar, console),
        stages=functools.partial(stage_status, console),
    )
