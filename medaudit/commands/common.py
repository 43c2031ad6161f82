"""What every command shares: model+data loading, output options, errors and exit codes.

The model, data and run settings are declared once in ``medaudit.settings``; commands
receive them as objects (``options.with_settings``).
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from medaudit.errors import INTERNAL_ERROR, INTERRUPTED, ConfigError, MedauditError, what_raised
from medaudit.report.atomic import check_target, mark_read, reading_session
from medaudit.report.escaping import one_line
from medaudit.report.schema import write_json
from medaudit.settings import RUN_PANEL, DataSettings, ModelSettings, RunSettings

if TYPE_CHECKING:
    from medaudit.sources import Prepared

ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--shard",
        help="Audit only shard i of n (i/n, i from 0): contiguous parts cut at multiples of 32 images, balanced to within 32. `medaudit merge` joins the parts' JSON into the single-process report.",
        rich_help_panel=RUN_PANEL,
    ),
]
JsonOpt = Annotated[
    str | None,
    typer.Option(
        "--json",
        help="Write the versioned JSON document to PATH ('-' for stdout).",
        rich_help_panel=RUN_PANEL,
    ),
]


@dataclass(frozen=True)
class Settings:
    """Global options from the app callback (set once per invocation)."""

    debug: bool = False
    quiet: bool = False
    """No progress output (``medaudit.commands.progress``); tables, warnings and errors still print."""


_settings = Settings()


def configure(settings: Settings) -> None:
    global _settings
    _settings = settings


def settings() -> Settings:
    """The global options of this invocation."""
    return _settings


LOG_WIDTH = 200
"""Columns of output that is not a terminal (a CI log, a pipe, make) unless $COLUMNS is set."""


def stderr_console() -> Console:
    """Tables, warnings and progress. rich would cut tables for a pipe or a CI log to 80
    columns, so numbers lost their last digits ('0.656…'); such output gets ``LOG_WIDTH``."""
    console = Console(stderr=True)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = LOG_WIDTH
    return console


def _fail(message: str, code: int, debug: bool) -> NoReturn:
    """One line on stderr (the traceback first with --debug), then the documented exit code."""
    console = stderr_console()
    if debug:
        console.print_exception()
    console.print(f"[bold red]error:[/] {escape(one_line(message))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Every way a command can end maps to one documented exit code (README, "Exit codes").

    User errors -> 2, errors raised by the user's model -> 3, anything else (a bug) -> 4,
    Ctrl-C / SIGTERM -> 130 / 143. Each prints one line; --debug adds the traceback.
    The command's own ``typer.Exit`` (0 or 1 for a gate verdict) passes through untouched.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = _settings.debug
        try:
            with warnings.catch_warnings(), reading_session():
                if not debug:
                    warnings.simplefilter("ignore", FutureWarning)
                    warnings.simplefilter("ignore", UserWarning)
                return func(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except MedauditError as exc:
            _fail(str(exc), exc.exit_code, debug)
        except Interrupted as exc:
            _fail(f"interrupted by {exc.signal_name}: stopped, no report written", exc.exit_code, debug)
        except KeyboardInterrupt:
            _fail("interrupted (Ctrl-C): stopped, no report written", INTERRUPTED, debug)
        except Exception as exc:
            detail = what_raised(exc, 300)
            _fail(
                f"internal error in medaudit ({detail}): this is a bug, not a verdict on the model; "
                "rerun with --debug for the traceback and report it",
                INTERNAL_ERROR,
                debug,
            )

    return wrapper


class Interrupted(BaseException):
    """A termination signal other than SIGINT (which Python raises as KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def install_signal_handlers() -> None:
    """SIGTERM (how CI cancels a job) unwinds like Ctrl-C, so temp files are removed and
    no partial report is left; a handler the parent process set (e.g. ignore) is kept."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM,):
            if signal.getsignal(signum) is signal.SIG_DFL:
                signal.signal(signum, _raise_interrupted)


def refuse_with_shard(shard: str | None, **outputs: Any) -> None:
    """Pictures and files of the whole audit cannot come from one shard: fail before any work."""
    given = [f"--{name.replace('_', '-')}" for name, value in outputs.items() if value]
    if shard is not None and given:
        raise ConfigError(
            f"{', '.join(given)} cannot be combined with --shard: a shard holds part of the images; "
            "run without --shard for these files"
        )


def check_output_target(target: str | Path | None, protected: list[Path], option: str = "--json") -> None:
    """Fail before any work if an output cannot be written or would replace a file the run reads
    (``protected`` and everything registered with ``mark_read`` so far)."""
    if target is None or str(target) == "-":
        return
    if str(target) == "":
        raise ConfigError(f"{option} is empty: give a file name")
    for source in protected:
        mark_read(source)
    path = Path(target)
    if path.exists() and not path.is_dir() and not path.is_file():  # /dev/null, a FIFO: written in place
        if not os.access(path, os.W_OK):
            raise ConfigError(f"{option} {target} is not writable: choose another path")
        return
    if not path.parent.exists():
        raise ConfigError(f"{option} {target}: folder {path.parent} does not exist")
    if path.is_dir():
        raise ConfigError(f"{option} {target} is a folder: give a file name")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"{option} {target} is not writable: choose another path")
    check_target(path, option)


def prepare(
    model: ModelSettings,
    data: DataSettings,
    run: RunSettings,
    *,
    json_target: str | None,
    shard: str | None = None,
) -> Prepared:
    """``sources.prepare`` after checking that ``--json`` can be written without replacing an input."""
    from medaudit import sources
    from medaudit.sources import input_files

    check_output_target(json_target, input_files(sources.model_path(model), data.data))
    return sources.prepare(model, data, run, shard=shard)


def print_warnings(console: Console, warnings_: list[str], model_notes: list[str] | None = None) -> None:
    """The run's warnings; first, from the model's notes, what the JSON records as assumed: [0,1]
    pixels when no normalisation is known (unless a warning already names flags that fit better)."""
    from medaudit.models.card import ASSUMED_UNIT_INPUT

    if ASSUMED_UNIT_INPUT in (model_notes or []) and not any(ASSUMED_UNIT_INPUT in w for w in warnings_):
        console.print(f"note: {ASSUMED_UNIT_INPUT}", markup=False, highlight=False)
    for warning in warnings_:
        console.print(f"[bold yellow]warning:[/] {escape(one_line(warning))}", highlight=False)


class Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def emit(console: Console, json_target: str | None, doc: dict[str, Any]) -> None:
    if json_target is not None:
        write_json(doc, json_target)
        if json_target != "-":
            console.print(f"JSON written to {json_target}", markup=False, highlight=False)
