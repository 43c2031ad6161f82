"""Settings declared once, as dataclass fields, and read from the command line or the audit file.

A field made with ``setting(default, help=...)`` carries its flag, help text and help panel.
From one dataclass come the command's Typer options (``cli_parameters``), the keys and types its
audit-file section accepts (``from_file``), and the defaults of both, so a setting is never
declared twice and an error names it the way the user wrote it (``--eps`` or ``[attack] eps``).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from medaudit.errors import ConfigError

T = TypeVar("T")
SETTING = "medaudit.setting"


@dataclass(frozen=True)
class Setting:
    """How one dataclass field appears to the user."""

    help: str
    flag: str | None = None
    """The command-line flag; default ``--field-name``."""
    panel: str | None = None
    """The ``--help`` panel it is listed under."""
    min: float | None = None
    """Smallest value a number may take (checked by Typer on the command line, here in the file)."""
    argument: bool = False
    """A positional argument on the command line (the model path)."""
    required: bool = False
    """The user must give it (on the command line, or as a key of the audit file's section)."""
    metavar: str | None = None
    """The argument's name in usage lines (default: the field name in capitals)."""
    cli: bool = True
    file: bool = True
    listed: bool = False
    """A comma list on the command line; a TOML list, string or number in the audit file."""


def whole_number(value: object, least: int | None = None) -> bool:
    """An int (not a bool: JSON's true is an int to Python), at least ``least`` when given."""
    return isinstance(value, int) and not isinstance(value, bool) and (least is None or value >= least)


def setting(default: Any, help: str, **options: Any) -> Any:
    """A dataclass field that is a user setting (see ``Setting`` for the options)."""
    return dataclasses.field(default=default, metadata={SETTING: Setting(help, **options)})


@dataclass(frozen=True)
class Declared:
    name: str
    type: Any
    """The field's type with ``None`` removed (``int`` for ``int | None``)."""
    optional: bool
    default: Any
    setting: Setting

    @property
    def flag(self) -> str:
        return self.setting.flag or "--" + self.name.replace("_", "-")

    def key(self, section: str) -> str:
        return f"[{section}] {self.name}"


def declared(cls: type) -> Iterator[Declared]:
    """The settings of a dataclass, in field order."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if SETTING not in f.metadata:
            continue
        kind, optional = hints[f.name], False
        if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
            members = [a for a in typing.get_args(kind) if a is not type(None)]
            optional, kind = len(members) < len(typing.get_args(kind)), members[0]
        yield Declared(f.name, kind, optional, f.default, f.metadata[SETTING])


# ---- command line ----


def cli_parameters(cls: type) -> list[inspect.Parameter]:
    """Keyword parameters for a Typer command, one per setting of ``cls`` shown on the command line."""
    params = []
    for d in declared(cls):
        if not d.setting.cli:
            continue
        annotation = d.type | None if d.optional else d.type
        if d.setting.argument:
            metavar = d.setting.metavar or d.name.upper()
            marker: Any = typer.Argument(help=d.setting.help, show_default=False, metavar=metavar)
        else:
            marker = typer.Option(
                d.flag, help=d.setting.help, rich_help_panel=d.setting.panel, min=d.setting.min
            )
        params.append(
            inspect.Parameter(
                d.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=inspect.Parameter.empty if d.setting.required else d.default,
                annotation=Annotated[annotation, marker],
            )
        )
    return params


def from_cli(cls: type[T], values: dict[str, Any]) -> T:
    """The dataclass from a command's keyword arguments (its other arguments are ignored)."""
    names = {d.name for d in declared(cls) if d.setting.cli}
    return cls(**{name: value for name, value in values.items() if name in names})


def with_settings(**groups: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command taking ``name=SettingsClass`` objects: the command line gets every
    setting of each class as its own option, and the function receives the built objects."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(func, include_extras=True)  # the module's string annotations, resolved
        own = [
            p.replace(annotation=hints.get(name, p.annotation))
            for name, p in inspect.signature(func).parameters.items()
            if name not in groups
        ]
        shared = [p for cls in groups.values() for p in cli_parameters(cls)]
        taken = {p.name for p in own}
        clash = [p.name for p in shared if p.name in taken]
        if clash:
            raise TypeError(f"{func.__name__} declares {clash} itself and through its settings")

        def command(**kwargs: Any) -> Any:
            built: dict[str, Any] = {name: from_cli(cls, kwargs) for name, cls in groups.items()}
            rest = {name: value for name, value in kwargs.items() if name in taken}
            return func(**built, **rest)

        arguments = [p for p in shared if p.default is inspect.Parameter.empty]
        options = [p for p in shared if p.default is not inspect.Parameter.empty]
        own_args = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
        command.__signature__ = inspect.Signature(arguments + options + own_args)  # type: ignore[attr-defined]
        command.__name__, command.__doc__ = func.__name__, func.__doc__
        command.__wrapped_settings__ = groups  # type: ignore[attr-defined]
        return command

    return decorate


# ---- audit file ----


def _suggest(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(valid)})"


def file_keys(cls: type) -> list[str]:
    return [d.name for d in declared(cls) if d.setting.file]


def _convert(d: Declared, value: Any, where: str, resolve: Callable[[str], Path]) -> Any:
    """A TOML value as the field's type; ConfigError naming the key when it does not fit."""
    kind = d.type
    wrong = ConfigError(f"{where} = {value!r} has the wrong type: {_describe(d)}")
    if d.setting.listed:
        if isinstance(value, list):
            return ",".join(str(v) for v in value)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise wrong
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        if not isinstance(value, str):
            raise wrong
        try:
            return kind(value)
        except ValueError:
            choices = ", ".join(str(m.value) for m in kind)
            raise ConfigError(f"{where} = '{value}': choose from {choices}") from None
    if kind is Path:
        if not isinstance(value, str):
            raise wrong
        return resolve(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise wrong
        return value
    if kind is int:
        if not whole_number(value):
            raise wrong
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong
        value = float(value)
    elif kind is str and not isinstance(value, str):
        raise wrong
    if d.setting.min is not None and value < d.setting.min:
        raise ConfigError(f"{where} = {value!r}: must be at least {d.setting.min:g}")
    return value


def _describe(d: Declared) -> str:
    if d.setting.listed:
        return "a list or a comma-separated string"
    kind = d.type
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in kind)
    return {
        Path: "a path",
        bool: "true or false",
        int: "a whole number",
        float: "a number",
        str: "a string",
    }.get(kind, str(kind))


def from_file(
    cls: type[T], table: Any, section: str, source: str, resolve: Callable[[str], Path] = Path
) -> T:
    """The dataclass from an audit-file section; unknown keys and wrong types are one-line errors
    naming ``source: [section] key``. Paths are resolved with ``resolve`` (relative to the file)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: '{section}' must be a [section]")
    fields = {d.name: d for d in declared(cls) if d.setting.file}
    values = {}
    for key, value in table.items():
        if key not in fields:
            raise ConfigError(f"{source}: unknown option '{key}' in [{section}]{_suggest(key, list(fields))}")
        values[key] = _convert(fields[key], value, f"{source}: [{section}] {key}", resolve)
    missing = [d.name for d in fields.values() if d.setting.required and d.name not in values]
    if missing:
        raise ConfigError(f'{source}: the [{section}] section needs {missing[0]} = "..."')
    try:
        return cls(**values)
    except ConfigError as exc:  # a check of the dataclass itself speaks in flags
        raise ConfigError(f"{source}: {in_file_words(str(exc), {section: cls})}") from None


def in_file_words(message: str, sections: dict[str, type]) -> str:
    """A message written in command-line words (``--eps``) in the audit file's (``[attack] eps``):
    library errors name flags, and a user of the audit file never typed one."""
    for section, cls in sections.items():
        for d in declared(cls):
            for flag in d.flag.split("/"):
                message = re.sub(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", d.key(section), message)
    return message
