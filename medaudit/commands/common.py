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
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from medaudit.data import AuditData, DataSpec, load_data
from medaudit.document import document
from medaudit.errors import INTERNAL_ERROR, INTERRUPTED, ConfigError, MedauditError, what_raised
from medaudit.models import AuditModel, InputSpec, LoadOptions, bind_model, load_model
from medaudit.models.card import card_path_for
from medaudit.report.atomic import check_target, mark_read, reading_session
from medaudit.report.schema import write_json
from medaudit.settings import RUN_PANEL, DataSettings, Device, ModelSettings, RunSettings
from medaudit.sharding import Shard, digests, encode
from medaudit.task import Task

ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--shard",
        help="Audit only shard i of n (i/n, i from 0): contiguous batches of the data. `medaudit merge` joins the parts' JSON into the single-process report.",
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


def parse_floats(text: str | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"{option} takes numbers separated by commas, got '{text}'") from None


def stderr_console() -> Console:
    return Console(stderr=True)


def _fail(message: str, code: int, debug: bool) -> NoReturn:
    """One line on stderr (the traceback first with --debug), then the documented exit code."""
    console = stderr_console()
    if debug:
        console.print_exception()
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
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


def model_path(model: ModelSettings) -> Path:
    """The model file, which every command but ``shift --list`` and ``intrinsic`` of data needs."""
    if model.path is None:
        raise ConfigError("give a model file")
    return model.path


def load_options(
    model: ModelSettings, device: Device, arch_source: str = "--arch", arch_search: Path | None = None
) -> LoadOptions:
    spec = InputSpec(
        channels=model.channels,
        input_size=model.input_size,
        mean=parse_floats(model.mean, "--mean"),
        std=parse_floats(model.std, "--std"),
    )
    return LoadOptions(
        arch=model.arch,
        arch_source=arch_source,
        arch_search=arch_search or Path.cwd(),  # --arch mymodels:f finds ./mymodels.py
        trust_checkpoint=model.trust_checkpoint,
        spec=spec,
        device=device.value,
    )


def data_spec(model: AuditModel | None, data: DataSettings) -> DataSpec:
    """The user's data options; without any, the dataset the model card names."""
    dataset, size = data.dataset, data.size
    if dataset is None and data.data is None and model is not None and model.info.dataset:
        dataset = model.info.dataset
        size = size or model.info.dataset_size
    return DataSpec(
        dataset=dataset,
        size=size,
        split=data.split.value,
        data_root=data.data_root,
        download=data.download,
        data=data.data,
        task=Task.parse(data.task) if data.task else None,
        limit=data.limit,
        seed=data.seed,
    )


def refuse_with_shard(shard: str | None, **outputs: Any) -> None:
    """Pictures and files of the whole audit cannot come from one shard: fail before any work."""
    given = [f"--{name.replace('_', '-')}" for name, value in outputs.items() if value]
    if shard is not None and given:
        raise ConfigError(
            f"{', '.join(given)} cannot be combined with --shard: a shard holds part of the images; "
            "run without --shard for these files"
        )


def input_files(model: Path | None, data: Path | None) -> list[Path]:
    """The files a model+data audit reads directly: the model, its card and the data."""
    return [p for p in (model, model and card_path_for(model), data) if p is not None]


def check_output_target(target: str | Path | None, protected: list[Path], option: str = "--json") -> None:
    """Fail before any work if an output cannot be written or would replace a file the run reads
    (``protected`` and everything registered with ``mark_read`` so far)."""
    if target is None or str(target) == "-":
        return
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


@dataclass
class Prepared:
    """A bound model, its data, and the configuration that produced them (for the JSON)."""

    model: AuditModel
    data: AuditData
    warnings: list[str]
    config: dict[str, Any]
    shard: dict[str, int] | None = None
    """Which part of the data this run audits (``--shard``), None for all of it."""

    def document(self, command: str, config: dict[str, Any], results: dict[str, Any], **fields: Any) -> dict:
        """The command's JSON document; the data identity is the audited images'."""
        data = {**self.data.identity, "n": self.data.n}
        return document(command, config, results, model=self.model.describe(), data=data, **fields)

    def attach_state(self, doc: dict[str, Any], sections: dict[str, Any], **extra: Any) -> None:
        """For a shard, the per-sample state ``medaudit merge`` needs and its digests, which merge
        checks (see ``medaudit.sharding``); call it on the finished document."""
        if self.shard is not None:
            state = {"sections": sections, "warnings": self.warnings, **extra}
            doc["shard"] = {**self.shard, "state": encode(state)}
            doc["shard"]["digest"] = digests(doc)


def prepare(
    model: ModelSettings,
    data: DataSettings,
    run: RunSettings,
    *,
    json_target: str | None,
    shard: str | None = None,
    arch_source: str = "--arch",
    arch_search: Path | None = None,
) -> Prepared:
    """Everything an audit command does before auditing: check --json, load, bind, and
    cut out ``shard`` ('i/n') on multiples of the batch size."""
    part = Shard.parse(shard)
    path = model_path(model)
    inputs = input_files(path, data.data)
    check_output_target(json_target, inputs)
    for source in inputs:
        mark_read(source)
    options = load_options(model, run.device, arch_source, arch_search)
    data_spec(None, data)  # the data options alone fail before anything is loaded
    audit_model = load_model(path, options)
    spec = data_spec(audit_model, data)
    audit_data = load_data(spec)
    mark_read(audit_data.identity.get("path"))  # also the MedMNIST file the card's dataset led to
    warnings_ = bind_model(audit_model, audit_data)
    record = None
    if part is not None:
        start, stop = part.bounds(audit_data.n, run.batch_size)
        record = part.to_dict(start, stop, audit_data.n)
        audit_data = audit_data.shard(start, stop, record)
    config = {
        "device": run.device.value,
        "load": {
            "arch": model.arch,
            "trust_checkpoint": model.trust_checkpoint,
            "spec_overrides": options.spec.to_dict(),
        },
        "data": spec.to_dict(),
    }
    return Prepared(audit_model, audit_data, warnings_, config, record)


def print_warnings(console: Console, warnings_: list[str]) -> None:
    for warning in warnings_:
        console.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False)


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
