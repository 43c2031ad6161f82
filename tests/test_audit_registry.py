"""Audits declare their metrics and summary rows once (``medaudit.audits``); the gate, the HTML page,
the Markdown comment and the console summary take them from the registry, without naming audits."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from medaudit.audit_config import read_audit_file
from medaudit.audits import Audit, MetricInfo, SummaryRow, audits
from medaudit.audits.base import Context
from medaudit.cli import build_app
from medaudit.document import document
from medaudit.errors import ConfigError
from medaudit.evaluate import predict_logits
from medaudit.gate import evaluate, extract_metrics, known_metrics, load_policy
from medaudit.options import file_keys, setting
from medaudit.report import ci, tables
from medaudit.report.html import render_html
from medaudit.settings import DataSettings, ModelSettings, RunSettings


@dataclass(frozen=True)
class ToyOptions:
    floor: float = setting(0.5, "the toy floor")
    label: str = setting("x", "a toy label")


class ToyAudit(Audit):
    """An audit defined here only: nothing outside this file names it."""

    name = "toy"
    title = "Toy audit"
    Options = ToyOptions
    metrics: ClassVar[dict[str, MetricInfo]] = {"score": MetricInfo("the toy score", True, True)}

    def extract(self, results: dict[str, Any]) -> dict[str, float]:
        return {"toy.score": float(results["score"])}

    def summary(self, results: dict[str, Any]) -> list[SummaryRow]:
        return [SummaryRow("toy score", results["score"]), SummaryRow("toy verdict", "planted")]

    def tables(self, results: dict[str, Any], data_label: str) -> list[Any]:
        return [f"toy table of {data_label}: share above floor {results['score']:.4f}"]

    def run(self, prepared: Any, options: ToyOptions, context: Context) -> tuple[dict[str, Any], Any]:
        """The share of images whose top probability is above ``floor``: a number the test can recompute."""
        with context.progress("toy stage", prepared.data.n) as advance:
            probs = predict_logits(prepared.model, prepared.data, context.batch_size, advance).softmax(1)
        score = float((probs.max(1).values > options.floor).float().mean())
        return {"floor": options.floor, "label": options.label}, ToyResult(score, prepared.data.n)

    def figures(self, prepared: Any, result: Any) -> dict[str, bytes]:
        return {"toy picture": PNG_1X1}


@dataclass(frozen=True)
class ToyResult:
    score: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "n": self.n}

    def warnings(self) -> list[str]:
        return ["toy warning"]


PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8cf"
    "c0f01f0005000201a5b1e0d40000000049454e44ae426082"
)


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> ToyAudit:
    audit = ToyAudit()
    monkeypatch.setitem(audits._entries, audit.name, audit)
    return audit


def run_doc(results: dict[str, Any]) -> dict[str, Any]:
    model = {"path": "m.pt", "format": "torchscript", "sha256": "0" * 64}
    data = {"source": "npz", "path": "d.npz", "n": 10}
    return document("run", {}, results, model=model, data=data, seed=0, wall_time_s=1.0, warnings=[])


def test_a_registered_audit_reaches_the_gate_and_every_summary(toy: ToyAudit) -> None:
    doc = run_doc({"toy": {"score": 0.25}})
    assert known_metrics()["toy.score"].direction == "higher"
    assert extract_metrics(doc) == {"toy.score": 0.25}
    (verdict,) = evaluate(load_policy({"gate": {"toy.score": ">= 0.5"}}), extract_metrics(doc))
    assert verdict.passed is False
    page = render_html(doc)
    assert "Toy audit" in page and "toy score" in page and "0.2500" in page and "planted" in page
    comment = ci.markdown_summary(doc, [verdict])
    assert "toy score" in comment and "0.2500" in comment and "planted" in comment
    console = Console(record=True, width=200)
    console.print(tables.run_summary_table(doc["results"], "summary"))
    text = console.export_text()
    assert "toy score" in text and "0.2500" in text and "planted" in text


def test_a_registered_audit_gets_its_audit_file_section(toy: ToyAudit, tmp_path: Path) -> None:
    path = tmp_path / "audit.toml"
    path.write_text('[model]\npath = "m.pt"\n[toy]\nfloor = 1\n')
    audit = read_audit_file(path)
    assert audit.audits == {"toy": ToyOptions(floor=1.0)}
    path.write_text('[model]\npath = "m.pt"\n[toy]\nflor = 1\n')
    with pytest.raises(ConfigError, match="did you mean 'floor'"):
        read_audit_file(path)
    path.write_text('[model]\npath = "m.pt"\n[toy]\nlabel = 3\n')
    with pytest.raises(ConfigError, match=r"\[toy\] label = 3 has the wrong type"):
        read_audit_file(path)


def _expected_score(model: Path, data: Path, floor: float) -> float:
    net = torch.jit.load(str(model))
    images = torch.from_numpy(np.load(data)["test_images"]).float().div(255).unsqueeze(1)
    with torch.no_grad():
        probs = net(images).softmax(1)
    return float((probs.max(1).values > floor).float().mean())


def test_a_registered_audit_gets_its_command(
    toy: ToyAudit, toy_files: tuple[Path, Path], tmp_path: Path
) -> None:
    """The command, its options and its help come from the declaration (the app is built after
    registration, as it is at start-up for the built-in audits)."""
    model, data = toy_files
    app_now = build_app()
    runner = CliRunner()
    top = runner.invoke(app_now, ["--help"])
    assert top.exit_code == 0 and "toy" in top.output
    own = runner.invoke(app_now, ["toy", "--help"], env={"COLUMNS": "200"})
    assert own.exit_code == 0 and "--floor" in own.output and "the toy floor" in own.output
    out = tmp_path / "toy.json"
    args = ["toy", str(model), "--data", str(data), "--floor", "0.52", "--json", str(out)]
    result = runner.invoke(app_now, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["command"] == "toy" and doc["config"]["floor"] == 0.52
    assert doc["results"]["score"] == pytest.approx(_expected_score(model, data, 0.52))
    assert "toy warning" in doc["warnings"] and "toy table of" in result.stderr
    bad = runner.invoke(app_now, ["toy", str(model), "--data", str(data), "--floor", "high"])
    assert bad.exit_code == 2


def test_a_registered_audit_runs_from_the_audit_file(
    toy: ToyAudit, toy_files: tuple[Path, Path], tmp_path: Path
) -> None:
    model, data = toy_files
    path = tmp_path / "audit.toml"
    path.write_text(
        f'[model]\npath = "{model.name}"\n[data]\ndata = "{data.name}"\n[toy]\nfloor = 0.51\n'
        '[gate]\n"toy.score" = ">= 1.01"\n'
    )
    out, page = tmp_path / "run.json", tmp_path / "run.html"
    result = CliRunner().invoke(build_app(), ["run", str(path), "--json", str(out), "--html", str(page)])
    assert result.exit_code == 1, result.output  # the toy gate rule cannot hold
    doc = json.loads(out.read_text())
    assert doc["results"]["toy"]["score"] == pytest.approx(_expected_score(model, data, 0.51))
    assert doc["config"]["audits"]["toy"] == {"floor": 0.51, "label": "x"}
    assert [v["metric"] for v in doc["gate"]] == ["toy.score"] and doc["gate"][0]["passed"] is False
    text = page.read_text()
    assert "Toy audit" in text and "toy picture" in text


def test_unregistered_sections_are_not_gateable(toy: ToyAudit) -> None:
    doc = run_doc({"other": {"score": 1.0}})
    assert extract_metrics(doc) == {}
    assert "other.score" not in known_metrics()


def _rows_in_html(page: str) -> list[tuple[str, str]]:
    summary = page.split('<section id="summary">', 1)[1].split("</section>", 1)[0]
    cells = re.findall(r"<td>(.*?)</td><td class=\"num\">(.*?)</td>", summary)
    return [(html.unescape(a), html.unescape(b)) for a, b in cells]


def test_console_html_and_markdown_show_the_same_summary() -> None:
    """The three summaries used to disagree (different rows, four number formats)."""
    results = {
        "eval": {"accuracy": 0.875, "balanced_accuracy": 0.8, "auc": 0.91234, "n": 624},
        "attack": {
            "clean_accuracy": 0.875,
            "sweep": [{"attack": "worst-case", "eps": 1 / 255, "norm": "linf", "robust_accuracy": 0.5}],
            "curve": {"normalised_area": 0.6},
            "checks": [{"check": "a", "passed": True}, {"check": "b", "passed": False}],
        },
        "shift": {
            "summary": {
                "clean_be": 0.1,
                "mean_be": 0.2,
                "mean_accuracy_drop": 0.05,
                "mean_auc_drop": None,
                "worst_corruption": "pixelate",
                "worst_corruption_be": 0.4,
            }
        },
    }
    expected = [
        (row.label, row.text) for name, res in results.items() for row in audits.get(name).summary(res)
    ]
    assert ("honesty checks", "1 of 2 passed, 1 FAILED") in expected
    assert ("mean AUC drop", "-") in expected
    doc = run_doc(results)
    assert _rows_in_html(render_html(doc)) == expected
    table_lines = [line for line in ci.markdown_summary(doc, []).splitlines() if line.startswith("| ")]
    cells = [[cell.strip(" `") for cell in line.strip("|").split(" | ")] for line in table_lines[1:]]
    assert [(metric, value) for _, metric, value in cells] == expected
    console = Console(record=True, width=300)
    console.print(tables.run_summary_table(results, "summary"))
    text = console.export_text()
    for label, value in expected:
        assert re.search(re.escape(label) + r"\s*│\s*" + re.escape(value), text), (label, value)


def test_the_audit_file_keys_in_the_docs_are_the_declared_ones() -> None:
    """docs/run-gate-compare.md lists every section's keys; they must be the declared settings."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "run-gate-compare.md").read_text()
    listed = {
        section: re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", keys))
        for section, keys in re.findall(r"^\| `\[(\w+)\]` \| (.*) \|$", doc, flags=re.M)
    }
    declared = {"model": ModelSettings, "data": DataSettings, "run": RunSettings}
    declared |= {name: audits.get(name).Options for name in audits.in_order()}
    for section, cls in declared.items():
        keys = file_keys(cls)
        assert listed[section][: len(keys)] == keys, section


def test_the_gate_reads_reports_without_importing_torch() -> None:
    """`medaudit gate`/`compare` judge JSON: the audits' declarations must stay light to import."""
    code = "import sys, medaudit.gate, medaudit.audits; sys.exit('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], check=False
    )
    assert result.returncode == 0
