"""A small name -> object registry with lazy ``"pkg.module:attr"`` entries.

Used wherever the set grows, so adding an entry is one decorator (or one line) in
the entry's own file: architectures (``models/archs``), attacks (``attacks/base.py``),
shift corruptions (``shift/corrupt.py``), confounder artifacts
(``confounders/artifacts.py``) and audits (``audits/``). ``medaudit list`` prints
the first four. ``import_object`` also resolves the user's ``--arch package.module:factory``,
looking first in a folder the caller names (the current folder for ``--arch``, the audit
file's folder for its ``[model] arch``).
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, cast

from medaudit.errors import ConfigError, first_line, what_raised

T = TypeVar("T")


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``"package.module:attr"`` into module and attribute; raise ConfigError if malformed.

    Nothing is imported: a relative (``.mod``) or non-identifier module name is refused here,
    before importlib could raise a TypeError or look anything up.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name.strip() or not attr.strip():
        raise ConfigError(f"'{spec}' is not of the form package.module:name")
    if module_name.startswith("."):
        raise ConfigError(
            f"'{spec}' names the relative module '{module_name}': give the module's full dotted name "
            "as it is imported from sys.path (package.module:name)"
        )
    if not all(part.isidentifier() for part in module_name.split(".")):
        raise ConfigError(f"'{spec}': '{module_name}' is not a Python module name (package.module:name)")
    if not all(part.isidentifier() for part in attr.split(".")):
        raise ConfigError(f"'{spec}': '{attr}' is not a Python name (package.module:name)")
    return module_name, attr


@contextlib.contextmanager
def _first_on_path(folder: str | None) -> Iterator[None]:
    """``folder`` first on sys.path for the duration of one import, then sys.path as it was."""
    if folder is None:
        yield
        return
    importlib.invalidate_caches()  # a module written since the last look at that folder
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):  # ValueError: the imported code removed it itself
            sys.path.remove(folder)  # the first occurrence: the one inserted above


def _missing_top_level(exc: ImportError, module_name: str) -> bool:
    """Whether ``exc`` says the module's top-level package is not there at all, rather than
    that a submodule, or something the module itself imports, is missing."""
    return isinstance(exc, ModuleNotFoundError) and exc.name == module_name.split(".")[0]


def import_object(
    spec: str, *, user_code: bool = True, search: str | os.PathLike[str] | None = None
) -> object:
    """Import ``"package.module:attr"`` (``attr`` may be dotted); raise ConfigError with the reason.

    ``user_code``: the module is the user's, so anything it raises while being imported
    (or while an attribute is looked up) is reported as a ConfigError naming the module and
    the exception, not as a medaudit crash. Built-in lazy entries pass False: an exception
    there other than a missing dependency is a bug in medaudit and must stay visible.

    ``search``: a folder put first on sys.path for this import only (and removed afterwards),
    so a ``mymodels.py`` there is found without ``PYTHONPATH``; a missing module's error names it.
    """
    module_name, attr = parse_spec(spec)
    folder = os.path.abspath(search) if search is not None else None
    try:
        with _first_on_path(folder):
            module = importlib.import_module(module_name)
    except ImportError as exc:
        if _missing_top_level(exc, module_name):
            top = module_name.split(".")[0]
            if folder is not None:
                where = (
                    f"in {folder} or on sys.path: put {top}.py (or the package folder {top}) in {folder}, or"
                )
            else:
                where = "on sys.path:"
            raise ConfigError(
                f"cannot import module '{module_name}' for '{spec}': no module '{top}' {where} "
                "add the folder that holds it to PYTHONPATH"
            ) from None
        raise ConfigError(f"cannot import module '{module_name}' for '{spec}': {first_line(exc)}") from None
    except (Exception, SystemExit) as exc:
        if not user_code:
            raise
        raise ConfigError(
            f"importing module '{module_name}' for '{spec}' raised {what_raised(exc)}: fix that module"
        ) from None
    target: object = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"module '{module_name}' has no attribute '{attr}'") from None
        except Exception as exc:
            if not user_code:
                raise
            raise ConfigError(
                f"looking up '{attr}' in module '{module_name}' raised {what_raised(exc)}"
            ) from None
    return target


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
            self._entries[name] = obj
        return add

    def get(self, name: str) -> T:
        """Return the entry, importing a lazy one on first use."""
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown {self.kind} '{name}'.{hint} Choose from: {', '.join(self.names())}")
        entry = self._entries[name]
        if isinstance(entry, str):
            # a lazy "package.module:attr" entry: the object it names is registered as a T
            entry = cast(T, import_object(entry, user_code=False))
            self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        return sorted(self._entries)

    def in_order(self) -> list[str]:
        """The names in the order they were registered (e.g. the order audits run in)."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
