"""``medaudit eval --save-figures``: the reliability diagram as a PNG file, the folder checks, and
the diagram itself (bars = the JSON's accuracies, the gap to the mean confidence drawn over them)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_one_line_error, fresh_cli
from rich.console import Console
from typer.testing import CliRunner

from medaudit.audits.evaluation import EvalAudit
from medaudit.cli import app
from medaudit.commands.audit import figure_paths, slug, write_figures
from medaudit.report import figures
from medaudit.report.html import render_html

PNG = b"\x89PNG\r\n\x1a\n"


def _eval(runner: CliRunner, toy_files: tuple[Path, Path], *args: str) -> Any:
    model, data = toy_files
    return runner.invoke(app, ["eval", str(model), "--data", str(data), "--bootstrap", "0", *args])


def test_save_figures_writes_the_reliability_diagram(
    runner: CliRunner, toy_files: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    report = tmp_path / "eval.json"
    result = _eval(runner, toy_files, "--save-figures", str(out), "--json", str(report))
    assert result.exit_code == 0, result.output
    target = out / "eval-reliability.png"
    assert [p.name for p in out.iterdir()] == ["eval-reliability.png"]
    assert target.read_bytes().startswith(PNG)
    said = "".join(result.stderr.splitlines())  # rich wraps long paths at the terminal width
    assert f"figure written to {target}" in said and f"JSON written to {report}" in said
    assert said.index("figure written") < said.index("JSON written")
    assert json.loads(report.read_text())["results"]["reliability"]["edges"]


def test_without_the_option_no_figure_is_written(
    runner: CliRunner, toy_files: tuple[Path, Path], tmp_path: Path
) -> None:
    result = _eval(runner, toy_files, "--limit", "8")
    assert result.exit_code == 0, result.output
    assert "figure written" not in result.output
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize(
    ("where", "needle"),
    [("missing", "folder does not exist"), ("file", "is not a folder")],
)
def test_a_missing_folder_or_a_file_is_refused_before_the_work(
    runner: CliRunner, toy_files: tuple[Path, Path], tmp_path: Path, where: str, needle: str
) -> None:
    target = tmp_path / "no_such_folder"
    if where == "file":
        target = tmp_path / "a_file"
        target.write_text("keep me")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = _eval(runner, toy_files, "--save-figures", str(target), "--json", str(tmp_path / "eval.json"))
    assert_one_line_error(result, "--save-figures", str(target), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, not even the JSON
    if where == "file":
        assert target.read_text() == "keep me"


def test_a_folder_error_comes_before_torch_is_imported(tmp_path: Path) -> None:
    outcome, stderr = fresh_cli("eval", "missing.pt", "--save-figures", "no_such_folder", cwd=tmp_path)
    assert outcome["code"] == 2 and outcome["torch"] is False, (outcome, stderr)
    assert "--save-figures no_such_folder: folder does not exist" in " ".join(stderr.split())


def test_figures_of_a_shard_are_refused(
    runner: CliRunner, toy_files: tuple[Path, Path], tmp_path: Path
) -> None:
    result = _eval(runner, toy_files, "--save-figures", str(tmp_path), "--shard", "0/2")
    assert_one_line_error(result, "--save-figures cannot be combined with --shard")
    assert not list(tmp_path.glob("*.png"))


def test_an_input_file_is_never_overwritten(tmp_path: Path) -> None:
    """A figure whose name is an input of the run is refused before any file is written."""
    model = tmp_path / "eval-reliability.png"
    model.write_bytes(b"the model")
    console = Console(file=open(tmp_path / "log.txt", "w"))  # noqa: SIM115
    from medaudit.errors import ConfigError

    with pytest.raises(ConfigError, match="would overwrite an input file"):
        write_figures(console, tmp_path, "eval", {"a": PNG, "reliability": PNG}, [model])
    assert model.read_bytes() == b"the model" and not (tmp_path / "eval-a.png").exists()


def test_file_names_are_slugs_and_never_collide(tmp_path: Path) -> None:
    assert slug("Saliency (model A)") == "saliency-model-a" and slug("$$") == "figure"
    paths = figure_paths(tmp_path, "features", ["trade-off", "Trade off", "saliency (x/y)"])
    assert [p.name for p in paths] == [
        "features-trade-off.png",
        "features-trade-off-2.png",
        "features-saliency-x-y.png",
    ]


def test_an_audit_without_figures_says_so_in_one_line(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    with open(log, "w") as handle:
        write_figures(Console(file=handle, width=200), tmp_path, "toy", {}, [])
    assert log.read_text().splitlines() == [
        f"toy drew no figures for this result: nothing written to {tmp_path}"
    ]
    assert not list(tmp_path.glob("*.png"))


# ---- the diagram ----


def _gap_boxes(fig: Any) -> list[tuple[float, float, float, float]]:
    """(left, right, bottom, top) of each gap box drawn over the bars."""
    (gaps,) = fig.axes[0].collections
    boxes = []
    for path in gaps.get_paths():
        xs, ys = path.vertices[:, 0], path.vertices[:, 1]
        boxes.append((xs.min(), xs.max(), ys.min(), ys.max()))
    return boxes


def test_the_drawn_bars_are_the_json_accuracies_and_the_gaps_reach_the_mean_confidence(
    runner: CliRunner, toy_files: tuple[Path, Path], tmp_path: Path
) -> None:
    report = tmp_path / "eval.json"
    assert _eval(runner, toy_files, "--json", str(report)).exit_code == 0
    results = json.loads(report.read_text())["results"]
    table = results["reliability"]
    fig = figures._reliability_figure(table, results["ece"], "toy")
    top, bottom = fig.axes
    (bars,) = top.containers
    assert [bar.get_height() for bar in bars] == pytest.approx([a or 0.0 for a in table["accuracy"]])
    assert [bar.get_height() for bar in bottom.patches] == table["count"]
    filled = [
        (left, right, min(acc, conf), max(acc, conf))
        for left, right, acc, conf in zip(
            table["edges"][:-1], table["edges"][1:], table["accuracy"], table["confidence"], strict=True
        )
        if acc is not None
    ]
    assert filled and np.allclose(_gap_boxes(fig), filled)
    labels = [text.get_text() for text in top.get_legend().get_texts()]
    assert labels == ["accuracy in bin", "gap: accuracy to mean confidence", "perfect calibration"]


def test_an_overconfident_bin_shows_its_gap_above_the_bar() -> None:
    table = {
        "edges": [0.0, 0.25, 0.5, 0.75, 1.0],
        "count": [0, 3, 5, 12],
        "confidence": [None, 0.4, 0.6, 0.9],
        "accuracy": [None, 0.5, 0.6, 0.7],
    }
    fig = figures._reliability_figure(table, 0.1, "t")
    assert [bar.get_height() for bar in fig.axes[0].containers[0]] == pytest.approx([0.0, 0.5, 0.6, 0.7])
    boxes = _gap_boxes(fig)
    assert len(boxes) == 3  # the empty bin has none
    assert boxes[0] == pytest.approx((0.25, 0.5, 0.4, 0.5))  # underconfident: inside the bar
    assert boxes[1][2] == pytest.approx(0.6) and boxes[1][3] == pytest.approx(0.6)  # calibrated: flat
    assert boxes[2] == pytest.approx((0.75, 1.0, 0.7, 0.9))  # overconfident: above the bar
    assert not any(math.isnan(v) for box in boxes for v in box)


# ---- the HTML page of `medaudit run`: exactly one diagram ----


def test_the_run_page_shows_the_reliability_diagram_once(
    runner: CliRunner, toy_files: tuple[Path, Path], tmp_path: Path
) -> None:
    model, data = toy_files
    audit = tmp_path / "audit.toml"
    audit.write_text(f'[model]\npath = "{model.name}"\n[data]\ndata = "{data.name}"\n[eval]\nbootstrap = 0\n')
    page = tmp_path / "report.html"
    result = runner.invoke(app, ["run", str(audit), "--html", str(page)])
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert text.count("data:image/png;base64") == 1
    assert "reliability diagram" in text


def test_a_page_from_the_json_alone_draws_the_diagram_in_the_eval_section() -> None:
    """The section draws it from the JSON (so a merged ``run --parts`` page has it too); the
    command's ``--save-figures`` writes the same chart (``EvalAudit.diagrams``)."""
    table = {"edges": [0.0, 0.5, 1.0], "count": [1, 1], "confidence": [0.4, 0.8], "accuracy": [0.0, 1.0]}
    results = {"accuracy": 0.5, "ece": 0.3, "reliability": table}
    page = render_html({"command": "eval", "results": results})
    section = page[page.index('id="eval"') :]
    assert section.count("data:image/png;base64") == 1 and "reliability diagram" in section
    assert list(EvalAudit().diagrams(results, "x")) == ["reliability"]


def test_the_sample_model_diagram_matches_its_json(real_env: Path, runner: CliRunner, tmp_path: Path) -> None:
    """On real data (many filled bins): the saved PNG and the JSON's bins it is drawn from."""
    model = Path(__file__).resolve().parents[1] / "sample_models" / "pneumoniamnist_rescnn.pt"
    report = tmp_path / "eval.json"
    args = ["eval", str(model), "--limit", "64", "--bootstrap", "0", "--json", str(report)]
    result = runner.invoke(app, [*args, "--save-figures", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "eval-reliability.png").read_bytes().startswith(PNG)
    table = json.loads(report.read_text())["results"]["reliability"]
    fig = figures._reliability_figure(table, None, "real")
    heights = [bar.get_height() for bar in fig.axes[0].containers[0]]
    assert heights == pytest.approx([a or 0.0 for a in table["accuracy"]])
    assert len(_gap_boxes(fig)) == sum(a is not None for a in table["accuracy"]) > 1
