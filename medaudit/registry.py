"""A small name -> object registry with lazy ``"pkg.module:attr"`` entries.

Used wherever the set grows. The built-in registries that ``medaudit list`` prints
(architectures, attacks, shift corruptions, confounder artifacts) are declared in
``medaudit/registries.py``, one line per entry (name, where it lives, one-line description),
so they can be listed and names checked without importing torch; an implementation is
imported when ``get`` first asks for it. Audits (``audits/``) register their classes directly.
``import_object`` also resolves the user's ``--arch package.module:factory``,
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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Declared:
    """A built-in entry known by name and description before anything heavy is imported."""

    target: str
    """``"package.module:attr"`` (the object itself), or with ``registers`` a ``"package.module"``."""
    description: str
    """One line for ``medaudit list``."""
    registers: bool = False
    """``target`` is a module that registers the entry when imported (by its own decorator,
    with the options it gives there): ``Registry.declare``."""


def describe(entry: object) -> str:
    """An object's one-line description: its ``description``, else the first line of its docstring.

    '' when it has neither; the signature a dataclass writes as the docstring of a class that
    has none is not a description either.
    """
    text = getattr(entry, "description", None)
    if not isinstance(text, str):
        text = entry.__doc__ or ""
        if isinstance(entry, type) and text.startswith(f"{entry.__name__}("):  # a dataclass's signature
            text = ""
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""


class Registry(Generic[T]):
    """Maps names to objects; entries are added by decorator or as lazy strings.

    A lazy entry (``register(name, "package.module:attr", description)``, or
    ``declare(name, "package.module", description)`` for a module that registers the object itself
    when imported) is listed, described and checked (``names``, ``description``, ``check``, ``in``)
    without importing anything; ``get`` imports it.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | Declared] = {}

    def register(self, name: str, obj: T | str | None = None, description: str = "") -> Callable[[T], T]:
        """Register ``obj`` (or decorate it) under ``name``; duplicates are a bug.

        A string ``obj`` is a lazy entry with its one-line ``description``. An object registered
        under a name ``declare``d for a module fills that declaration: it is what importing that
        module does.
        """

        def add(target: T) -> T:
            self._fill(name, target)
            return target

        if isinstance(obj, str):
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._entries[name] = Declared(obj, description)
        elif obj is not None:
            self._fill(name, obj)
        elif name in self._entries and not self._declared_module(name):
            raise ValueError(f"{self.kind} '{name}' is already registered")
        return add

    def declare(self, name: str, module: str, description: str) -> None:
        """``name`` is registered by ``module`` when it is imported (e.g. by a decorator that also
        gives the entry's options); until then it is known by name and ``description`` alone."""
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._entries[name] = Declared(module, description, registers=True)

    def _declared_module(self, name: str) -> str | None:
        """The module a declared entry waits for, or None."""
        entry = self._entries.get(name)
        if isinstance(entry, Declared) and entry.registers:
            return entry.target
        return None

    def _fill(self, name: str, target: T) -> None:
        if name in self._entries and self._declared_module(name) is None:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._entries[name] = target

    def check(self, name: str) -> None:
        """Raise the user's ConfigError (with close matches) for an unknown name; imports nothing."""
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown {self.kind} '{name}'.{hint} Choose from: {', '.join(self.names())}")

    def get(self, name: str) -> T:
        """Return the entry, importing a lazy one on first use."""
        self.check(name)
        entry = self._entries[name]
        if isinstance(entry, Declared):
            module = self._declared_module(name)
            if module is not None:
                importlib.import_module(module)  # its decorator fills the entry
                entry = self._entries[name]
                if isinstance(entry, Declared):
                    raise RuntimeError(f"importing {module} did not register {self.kind} '{name}'")
            else:
                # a lazy "package.module:attr" entry: the object it names is registered as a T
                entry = cast(T, import_object(entry.target, user_code=False))
                self._entries[name] = entry
        return entry

    def description(self, name: str) -> str:
        """The entry's one-line description: the declared one (nothing is imported), else the
        object's own (see ``describe``)."""
        self.check(name)
        entry = self._entries[name]
        if isinstance(entry, Declared) and entry.description:
            return entry.description
        return describe(self.get(name))

    def names(self) -> list[str]:
        return sorted(self._entries)

    def in_order(self) -> list[str]:
        """The names in the order they were registered (e.g. the order audits run in)."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
