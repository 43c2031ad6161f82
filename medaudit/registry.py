"""A small name -> object registry with lazy ``"pkg.module:attr"`` entries.

Used wherever the set grows (architectures now; attacks, corruptions and
artifacts later), so adding an entry is one decorator in the entry's own file.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from medaudit.errors import ConfigError

T = TypeVar("T")


def import_object(spec: str) -> object:
    """Import ``"package.module:attr"``; raise ConfigError with the reason."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"'{spec}' is not of the form package.module:name")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import module '{module_name}' for '{spec}': {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"module '{module_name}' has no attribute '{attr}'") from None


class Registry(Generic[T]):
    """Maps names to objects; entries are added by decorator or as lazy strings."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}

    def register(self, name: str, obj: T | str | None = None) -> Callable[[T], T]:
        """Register ``obj`` (or decorate it) under ``name``; duplicates are a bug."""
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is already registered")

        def add(target: T) -> T:
            self._entries[name] = target
            return target

        if obj is not None:
            add(obj)  # type: ignore[arg-type]
        return add

    def get(self, name: str) -> T:
        """Return the entry, importing a lazy one on first use."""
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown {self.kind} '{name}'.{hint} Choose from: {', '.join(self.names())}")
        entry = self._entries[name]
        if isinstance(entry, str):
            entry = import_object(entry)  # type: ignore[assignment]
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
