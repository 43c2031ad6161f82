"""Optional progress stages for the features library (the audits pass their ``Progress``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # medaudit.audits imports the features audit, which imports this package
    from medaudit.audits.base import Progress

Advance = Callable[[int], None]


def _ignore(_: int) -> None:
    return None


@contextlib.contextmanager
def stage(progress: Progress | None, label: str | None, total: int) -> Iterator[Advance]:
    """One progress stage, or a no-op advance without a progress or a label."""
    if progress is None or label is None:
        yield _ignore
        return
    with progress(label, total) as advance:
        yield advance
