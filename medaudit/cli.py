"""The ``medaudit`` command line: parse, call the audit, render. Nothing else.

Each command lives in ``medaudit.commands``; this module only builds the app.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from medaudit import __version__
from medaudit.commands import attack, confounders, evaluate, gate, intrinsic, merge, run, shift
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
            "args": args,
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


app = typer.Typer(
    cls=OneLineErrors,
    name="medaudit",
    help="Audit a trained medical-image classifier before release.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medaudit {__version__}")
        raise typer.Exit()


@app.callback()
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


app.command("eval", rich_help_panel="Audits")(handle_errors(evaluate.eval_command))
app.command("attack", rich_help_panel="Audits")(handle_errors(attack.attack_command))
app.command("shift", rich_help_panel="Audits")(handle_errors(shift.shift_command))
app.command("confounders", rich_help_panel="Audits")(handle_errors(confounders.confounders_command))
app.command("intrinsic", rich_help_panel="Audits")(handle_errors(intrinsic.intrinsic_command))
app.command("run", rich_help_panel="Audits")(handle_errors(run.run_command))
app.command("merge", rich_help_panel="Audits")(handle_errors(merge.merge_command))
app.command("gate", rich_help_panel="Release")(handle_errors(gate.gate_command))
app.command("compare", rich_help_panel="Release")(handle_errors(gate.compare_command))
app.command("init", rich_help_panel="Utilities")(handle_errors(run.init_command))
app.command("info", rich_help_panel="Utilities")(handle_errors(evaluate.info_command))
app.command("list", rich_help_panel="Utilities")(handle_errors(evaluate.list_command))

if __name__ == "__main__":
    app()
