"""The ``medaudit`` command line: parse, call the audit, render. Nothing else.

Each command lives in ``medaudit.commands``; this module only builds the app.
"""

from __future__ import annotations

from typing import Annotated

import typer

from medaudit import __version__
from medaudit.commands import attack, confounders, evaluate, gate, intrinsic, merge, run, shift
from medaudit.commands.common import Settings, configure, handle_errors

app = typer.Typer(
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
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Audit a trained medical-image classifier before release."""
    configure(Settings(debug=debug))


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
