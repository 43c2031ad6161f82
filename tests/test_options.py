"""Settings declared once as dataclass fields: command-line options and audit-file keys from one place."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from medaudit.errors import ConfigError
from medaudit.options import from_file, in_file_words, setting, with_settings


class Colour(str, enum.Enum):
    red = "red"
    blue = "blue"


@dataclass(frozen=True)
class Toy:
    path: Path = setting(None, "the file", argument=True, required=True)
    count: int = setting(3, "how many", min=1)
    scale: float | None = setting(None, "a scale")
    colour: Colour = setting(Colour.red, "a colour")
    eps: str = setting("1/255", "budgets", listed=True)
    loud: bool = setting(False, "shout", flag="--loud")


def app_for(seen: list) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @with_settings(toy=Toy)
    def main(toy: Toy, extra: str = typer.Option("x", "--extra")) -> None:
        seen.append((toy, extra))

    return app


def test_command_line_options_come_from_the_dataclass() -> None:
    seen: list = []
    runner = CliRunner()
    args = ["f.pt", "--count", "5", "--scale", "0.5", "--colour", "blue", "--eps", "0.1,0.2", "--loud"]
    result = runner.invoke(app_for(seen), [*args, "--extra", "y"])
    assert result.exit_code == 0, result.output
    assert seen == [(Toy(Path("f.pt"), 5, 0.5, Colour.blue, "0.1,0.2", True), "y")]
    assert runner.invoke(app_for(seen), ["f.pt", "--count", "0"]).exit_code == 2  # min=1
    help_text = runner.invoke(app_for(seen), ["--help"]).output
    assert "how many" in help_text and "--loud" in help_text


def test_defaults_are_the_same_in_both_places() -> None:
    seen: list = []
    assert CliRunner().invoke(app_for(seen), ["f.pt"]).exit_code == 0
    assert seen[0][0] == from_file(Toy, {"path": "f.pt"}, "toy", "audit.toml")


def test_audit_file_section_is_checked_and_converted(tmp_path: Path) -> None:
    table = {"path": "m.pt", "count": 2, "scale": 1, "colour": "blue", "eps": [0.1, 0.2], "loud": True}
    toy = from_file(Toy, table, "toy", "audit.toml", resolve=lambda p: tmp_path / p)
    assert toy == Toy(tmp_path / "m.pt", 2, 1.0, Colour.blue, "0.1,0.2", True)
    for bad, needle in [
        ({"path": "m", "cuont": 1}, "did you mean 'count'"),
        ({"path": "m", "count": "2"}, "[toy] count = '2' has the wrong type: a whole number"),
        ({"path": "m", "count": True}, "[toy] count"),
        ({"path": "m", "count": 0}, "must be at least 1"),
        ({"path": "m", "colour": "green"}, "choose from red, blue"),
        ({"path": "m", "loud": 1}, "true or false"),
        ({"count": 1}, 'needs path = "..."'),
    ]:
        with pytest.raises(ConfigError, match=None) as error:
            from_file(Toy, bad, "toy", "audit.toml")
        assert needle in str(error.value) and str(error.value).startswith("audit.toml: ")


def test_library_errors_are_told_in_the_audit_files_words() -> None:
    from medaudit.audits.attack import AttackOptions
    from medaudit.settings import RunSettings

    sections = {"attack": AttackOptions, "run": RunSettings}
    text = "--eps takes numbers, got 'x'; --step-size too; --batch-size-ish and --epsilon are other words"
    assert in_file_words(text, sections) == (
        "[attack] eps takes numbers, got 'x'; [attack] step_size too; --batch-size-ish and --epsilon are other words"
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('[model]\npath = "MODEL"\n[attack]\neps = "abc"\n', "[attack] eps takes numbers or fractions"),
        ('[model]\npath = "MODEL"\n[shift]\nseverities = "9"\n', "[shift] severities takes values in 1..5"),
        (
            '[model]\npath = "MODEL"\nmean = "0.5,x"\n[eval]\n',
            "[model] mean takes numbers separated by commas",
        ),
    ],
)
def test_run_errors_name_the_audit_file_key(tmp_path: Path, body: str, expected: str) -> None:
    """Errors found after the file was read (by the audits' checks, by loading) still speak of keys."""
    from conftest import assert_one_line_error

    from medaudit.cli import app

    model = Path(__file__).resolve().parents[1] / "sample_models" / "pneumoniamnist_rescnn.pt"
    path = tmp_path / "audit.toml"
    path.write_text(body.replace("MODEL", str(model)))
    message = assert_one_line_error(CliRunner().invoke(app, ["run", str(path)]), expected)
    assert "--" not in message and str(path) in message
