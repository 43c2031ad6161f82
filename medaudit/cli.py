"""The ``medaudit`` command line: parse, call the audit, render. Nothing else.

Each command lives in ``medaudit.commands``; this module only builds the app.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from medaudit import __version__
from medaudit.audits import audits
from medaudit.commands import attack, confounders, gate, harden, info, intrinsic, merge, run, shift
from medaudit.commands.audit import audit_command
from medaudit.commands.common import (
    Settings,
    configure,
    handle_errors,
    install_signal_handlers,
    stderr_console,
)
from medaudit.errors import INTERRUPTED


class OneLineErrors(TyperGroup):
    """Usage errors (unknown option, bad value, missing argument) as one ``error:`` line with
    exit code 2, like every other user error, instead of a multi-line box."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        forward: dict[str, Any] = {
            "args": _globals_first(sys.argv[1:] if args is None else list(args)),
            "prog_name": prog_name,
            "complete_var": complete_var,
            "windows_expand_args": windows_expand_args,
            **extra,
        }
        if not standalone_mode:
            return super().main(standalone_mode=False, **forward)
        try:
            code = super().main(standalone_mode=False, **forward)
        except typer.Abort:
            stderr_console().print("[bold red]error:[/] interrupted: stopped, no report written")
            sys.exit(INTERRUPTED)
        except Exception as exc:
            if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
                raise
            message = exc.format_message()
            if "\n" in message.strip():  # the help text itself (no arguments given)
                typer.echo(message, err=True)
            else:
                ctx = getattr(exc, "ctx", None)
                where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
                stderr_console().print(
                    f"[bold red]error:[/] {escape(message.rstrip('.'))}{escape(where)}",
                    highlight=False,
                    soft_wrap=True,
                )
            sys.exit(exc.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


GLOBAL_FLAGS = ("--quiet", "--debug")
"""Options of ``medaudit`` itself that a user may also type after the command."""


def _globals_first(args: list[str]) -> list[str]:
    """``medaudit eval MODEL --quiet`` as ``medaudit --quiet eval MODEL``: the global flags moved in
    front (none after a ``--``), so they work wherever they are typed."""
    end = args.index("--") if "--" in args else len(args)
    flags = [a for a in args[:end] if a in GLOBAL_FLAGS]
    return flags + [a for a in args[:end] if a not in GLOBAL_FLAGS] + args[end:]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medaudit {__version__}")
        raise typer.Exit()


def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            envvar="MEDAUDIT_QUIET",
            help="No progress bars or progress lines (tables, warnings and errors still print).",
        ),
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Audit a trained medical-image classifier before release."""
    configure(Settings(debug=debug, quiet=quiet))
    install_signal_handlers()


COMMANDS: dict[str, Callable[..., Any] | typer.Typer] = {
    "attack": attack.attack_command,
    "shift": shift.shift_command,
    "confounders": confounders.app,
    "intrinsic": intrinsic.intrinsic_command,
}
"""Audits whose command does more than ``audit_command`` (extra outputs and modes); every other
registered audit gets the command its declaration implies."""


def build_app() -> typer.Typer:
    """The app, with one command per registered audit (a plugin registered before this call has
    its command, its options and its help)."""
    app = typer.Typer(
        cls=OneLineErrors,
        name="medaudit",
        help="Audit a trained medical-image classifier before release.",
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
        add_completion=False,
    )
    app.callback()(main)
    for name in audits:
        command = COMMANDS.get(name) or audit_command(audits.get(name))
        if isinstance(command, typer.Typer):  # sub-commands (confounders probe, discover, ...)
            app.add_typer(command, name=name, rich_help_panel="Audits")
        else:
            app.command(name, rich_help_panel="Audits")(handle_errors(command))
    for name, command, panel in (
        ("run", run.run_command, "Audits"),
        ("merge", merge.merge_command, "Audits"),
        ("harden", harden.harden_command, "Release"),
        ("gate", gate.gate_command, "Release"),
        ("compare", gate.compare_command, "Release"),
        ("init", run.init_command, "Utilities"),
        ("info", info.info_command, "Utilities"),
        ("list", info.list_command, "Utilities"),
    ):
        app.command(name, rich_help_panel=panel)(handle_errors(command))
    return app


app = build_app()

if __name__ == "__main__":
    app()
