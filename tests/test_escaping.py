"""Text from the user's files stays inert in every output: Markdown, HTML, JUnit XML, rich, figures.

Hostile strings (Markdown/HTML injection, rich markup, control and bidi characters, undecodable
file-name bytes, very long text) go into paths, class names, card names, metric names and report
documents; each renderer must show them literally and keep its own structure intact.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from medaudit.cli import app
from medaudit.gate.compare import Row
from medaudit.gate.policy import Rule, Verdict
from medaudit.report import ci, figures, tables
from medaudit.report.confounder_tables import (
    artifact_list_table,
    confounder_tables,
    finetune_table,
    subgroup_table,
)
from medaudit.report.escaping import MD_LIMIT, md_code, printable
from medaudit.report.html import render_html

markdown_it = pytest.importorskip("markdown_it")  # installed with rich

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_models" / "pneumoniamnist_rescnn.onnx"

HOSTILE = [
    "back`tick",
    "`",
    "``double`` and ```fence```",
    "```\ncode block\n```",
    "ends with backtick`",
    " spaced ",
    "a|b|c",
    "line\nbreak\r\nand\ttab\u2028sep",
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "[x](javascript:alert(1))",
    "![x](http://evil/x.png)",
    "<http://evil> www.evil.com",
    "<!-- comment",
    "@everyone @org/team",
    "# heading",
    "*emph* _under_ ~~strike~~ \\* &amp; &lt;",
    "[bold red]X[/]",
    "[/x]",
    "[link=http://evil]x[/link]",
    ":smile: :warning:",
    "backslash at the end\\",
    "nul\x00bel\x07esc\x1b[31mred\x7f\x9b",
    "\u202eevil\u2066 bidi \u200f",
    "\udcff undecodable file-name byte",
    "$\\frac$ $^$ mathtext",
    "\ufffe\uffff noncharacters",
    "x" * 5000 + "<script>tail</script>",
]
SHORT = [h for h in HOSTILE if len(h) < 200]
ONE_LINE = [h for h in SHORT if not any(c in h for c in "\n\r\t\u2028\u2029")]
JOINED = " ".join(SHORT)  # every short hostile string in one field
MARKERS = ("script", "alert", "javascript", "evil", "everyone", "heading", "onerror", "frac", "bold", "smile")
RAW_CONTROL = ("\x00", "\x07", "\x1b", "\x7f", "\x9b", "\u202e", "\u2066", "\u200f", "\udcff", "\ufffe")


def _squash(text: str) -> str:
    return "".join(text.split())


def _md_shown(value: str) -> str:
    """What a Markdown code span shows for ``value``: escapes for control characters, one line."""
    return " ".join(printable(value).replace("\t", " ").replace("\u2028", " ").split("\n"))


# ------------------------------------------------------------------------------------------ Markdown


class _Inspect(HTMLParser):
    """Tags, attributes, comments, code texts, text outside code and cells per table row."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.comments: list[str] = []
        self.code: list[str] = []
        self.outside: list[str] = []
        self.data: list[str] = []
        self.tables: list[list[int]] = []
        self._code_depth = 0
        self._cells: int | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs
        if tag == "code":
            self._code_depth += 1
            self.code.append("")
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._cells = 0
        elif tag in ("td", "th") and self._cells is not None:
            self._cells += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "code":
            self._code_depth -= 1
        elif tag == "tr" and self._cells is not None:
            self.tables[-1].append(self._cells)
            self._cells = None

    def handle_data(self, data: str) -> None:
        self.data.append(data)
        if self._code_depth:
            self.code[-1] += data
        else:
            self.outside.append(data)

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)


def _markdown(text: str) -> _Inspect:
    """Render like GitHub would (CommonMark + GFM tables, raw HTML allowed) and inspect the HTML."""
    md = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table")
    inspect = _Inspect()
    inspect.feed(md.render(text))
    inspect.close()
    return inspect


def _assert_inert_markdown(text: str, shown: list[str], tags: set[str]) -> _Inspect:
    """No tag, link, image, comment or heading from user text; tables keep their columns; every
    user string is exactly one code span's text (or, beyond ``MD_LIMIT``, its head)."""
    page = _markdown(text)
    assert set(page.tags) <= tags, set(page.tags) - tags
    assert page.tags.count("h3") == 1 and page.comments == []
    assert not any(name in ("href", "src") or name.startswith("on") for name, _ in page.attrs)
    outside = "".join(page.outside).lower()
    for marker in MARKERS:
        assert marker not in outside, (marker, outside)
    for table in page.tables:
        assert len(set(table)) == 1, table  # every row has the header's number of cells
    for value in shown:
        expected = _md_shown(value)
        if len(expected) <= MD_LIMIT:
            assert expected in page.code, (value, page.code)
        else:
            assert any(code.startswith(expected[:50]) and "…" in code for code in page.code)
    for raw in RAW_CONTROL:
        assert raw not in text
    text.encode("utf-8")  # writable: no lone surrogates left
    return page


def test_md_code_is_exactly_one_literal_code_span() -> None:
    for value in HOSTILE:
        for table in (False, True):
            span = md_code(value, table=table)
            source = f"| h |\n|---|\n| {span} |\n" if table else f"x {span} y\n"
            page = _markdown(source)
            assert len(page.code) == 1, (value, source)
            expected = _md_shown(value)
            if len(expected) <= MD_LIMIT:
                assert page.code[0] == expected, (value, page.code)
            assert "\n" not in span and (not table or page.tables == [[1, 1]])


def _hostile_doc(h: str, *, medmnist: bool = False) -> dict[str, Any]:
    data = (
        {"source": "medmnist", "name": h, "size": h, "split": h, "n": h}
        if medmnist
        else {"source": "npz", "path": f"/data/{h}/test.npz", "split": "test", "n": 12}
    )
    return {
        "schema": "medaudit/1",
        "command": h,
        "model": {"path": f"/models/{h}/model.onnx", "format": h, "sha256": h},
        "data": data,
        "results": {"accuracy": 0.5},
    }


def _verdict(metric: str, op: str = ">=", value: float = 0.4, passed: bool = False) -> Verdict:
    return Verdict(Rule(metric, op, 0.5, f"{op} 0.5"), metric, value, passed)


MD_SUMMARY_TAGS = {"h3", "ul", "li", "p", "code", "table", "thead", "tbody", "tr", "th", "td"}


def test_markdown_summary_keeps_user_strings_inert() -> None:
    for h in HOSTILE:
        docs = [_hostile_doc(h), _hostile_doc(h, medmnist=True)]
        verdicts = [_verdict(h), _verdict("eval.auc", op=h, passed=True)]
        text = ci.markdown_summary(docs, verdicts)
        shown = [f"/models/{h}/model.onnx", f"/data/{h}/test.npz", h]
        _assert_inert_markdown(text, shown, MD_SUMMARY_TAGS)
    # plain names stay plain
    doc = {
        "schema": "medaudit/1",
        "command": "eval",
        "results": {},
        "model": {"path": "models/cand.pt", "format": "onnx", "sha256": "ab" * 32},
        "data": {"source": "medmnist", "name": "pneumoniamnist", "size": 28, "split": "test", "n": 624},
    }
    text = ci.markdown_summary(doc, [_verdict("eval.accuracy")])
    assert "- model: `models/cand.pt` (onnx, sha256 abababababab)" in text
    assert "- data: pneumoniamnist 28 px, test split, n = 624" in text
    assert "| ❌ | `eval.accuracy` >= | 0.4 | 0.5 |" in text


def test_compare_markdown_keeps_user_strings_inert() -> None:
    for h in HOSTILE:
        rows = [
            Row(h, 0.9, 0.8, "higher", 0.01, False, [h]),
            Row("eval.auc", 0.9, None, h, None, None, [h]),
        ]
        text = ci.compare_markdown(_hostile_doc(h), _hostile_doc(h, medmnist=True), rows)
        page = _assert_inert_markdown(text, [f"/models/{h}/model.onnx", h], MD_SUMMARY_TAGS)
        assert page.tables == [[7, 7, 7]]


# ------------------------------------------------------------------------------------------ JUnit


def test_junit_xml_parses_with_hostile_names_and_messages() -> None:
    cases: list[Any] = []
    for h in HOSTILE:
        cases += [
            _verdict(h, value=math.nan),
            _verdict(h, value=0.9, passed=True),
            Row(h, 0.9, None, "higher", None, None, [h]),
        ]
    xml = ci.junit_xml(cases, f"medaudit gate {JOINED}")
    root = ET.fromstring(xml.encode("utf-8"))
    assert root.get("name") == printable(f"medaudit gate {JOINED}")
    names = [case.get("name") for case in root.iter("testcase")]
    assert names == [printable(c.name) for c in cases]
    failures = [f.get("message") for f in root.iter("failure")]
    assert failures == [printable(c.message) for c in cases if c.passed is False]
    assert [s.get("message") for s in root.iter("skipped")] == [printable(h) for h in HOSTILE]
    assert len(root.find("testsuite") or []) == 3 * len(HOSTILE)


# ------------------------------------------------------------------------------------------ HTML

HTML_TAGS = {
    "html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "p", "span", "table",
    "tr", "th", "td", "section", "figure", "img", "figcaption", "ul", "li", "details", "summary", "pre",
}  # fmt: skip


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), 128, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _hostile_run_doc(h: str) -> dict[str, Any]:
    """A ``run`` document whose every free-text field is ``h`` (class names: every hostile string)."""
    names = [*HOSTILE, h]
    sweep = [
        {
            "attack": attack,
            "norm": h,
            "eps": eps,
            "clean_accuracy": 0.9,
            "robust_accuracy": 0.8 - eps,
            "attack_success_rate": 0.1,
            "auc_under_attack": 0.7,
            "perturbation": {"max_linf": eps},
        }
        for eps in (1 / 255, 2 / 255)
        for attack in (h, "worst-case")
    ]
    cells = [
        {"corruption": h, "severity": s, "accuracy": 0.8, "accuracy_drop": 0.1}
        for s in (1, 2)
    ]  # fmt: skip
    summary = {"clean_be": 0.1, "mean_be": 0.2, "worst_corruption": h, "worst_corruption_be": 0.3}
    results = {
        "eval": {
            "task": h,
            "n": 12,
            "accuracy": 0.5,
            "balanced_accuracy": 0.5,
            "auc": 0.5,
            "per_class_recall": {name: 0.5 for name in names},
            "confusion_matrix": [[1] * len(names) for _ in names],
        },
        "attack": {
            "n": 12,
            "clean_accuracy": 0.9,
            "attacks": [h],
            "sweep": sweep,
            "curve": {"normalised_area": 0.5},
            "checks": [{"check": h, "passed": False, "detail": h}],
            "notes": [h],
        },
        "shift": {
            "label": h,
            "clean": {"accuracy": 0.9},
            "corruptions": cells,
            "per_corruption": [{"corruption": h, "balanced_error": 0.2, "be_drop": 0.1}],
            "summary": summary,
            "baseline": None,
            "baseline_note": h,
            "notes": [h],
        },
        "confounders": {
            "probes": [{"artifact": h, "strength": 1.0, "flip_rate": 0.2}],
            "ranking": [
                {"artifact": h, "worst_flip_rate": 0.2, "worst_auc_drop_reversed": 0.1, "summary": h}
            ],
        },
        "intrinsic": {
            "label_sharpness": {"k_f": 0.5, "quantiles": {}},
            "d_data": {"twonn": 10.0, "mle": 9.0, "n": 12, "dims": 784, "k": 20},
            "d_repr": {"twonn": 5.0, "mle": 4.0, "layer": h},
            "d_repr_le_d_data": {"twonn": True, "mle": True},
            "interpretation": [h],
            "notes": [h],
        },
        h: {h: h, "nested": {h: [h]}},
    }
    return {
        "schema": h,
        "command": "run",
        "config": {h: h},
        "model": {"path": f"/models/{h}/model.onnx", "format": h, "backend": h, "sha256": h, "task": h},
        "data": {"source": h, "path": f"/data/{h}/test.npz", "split": h, "n": 12},
        "seed": h,
        "versions": {"medaudit": h},
        "created": h,
        "warnings": HOSTILE,
        "gate": [{"metric": h, "op": h, "threshold": 0.5, "value": 0.4, "passed": False, "message": h}],
        "results": results,
    }


class _HtmlInspect(_Inspect):
    def __init__(self) -> None:
        super().__init__()
        self.decls: list[str] = []
        self.title: list[str] = []
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        super().handle_starttag(tag, attrs)
        self._in_title = tag == "title"

    def handle_data(self, data: str) -> None:
        super().handle_data(data)
        if self._in_title:
            self.title.append(data)
            self._in_title = False

    def handle_decl(self, decl: str) -> None:
        self.decls.append(decl)

    def unknown_decl(self, data: str) -> None:
        self.decls.append(data)


def test_html_report_escapes_hostile_strings_everywhere() -> None:
    h = JOINED
    page = render_html(_hostile_run_doc(h), {h: _png()})
    page.encode("utf-8")  # no lone surrogate left to break the write
    for raw in RAW_CONTROL:
        assert raw not in page, repr(raw)
    assert "http" not in page.lower()  # the page's own contract: no URL, even from user text
    parsed = _HtmlInspect()
    parsed.feed(page)
    parsed.close()
    assert set(parsed.tags) <= HTML_TAGS, set(parsed.tags) - HTML_TAGS
    assert parsed.tags.count("img") == 4  # curve, shift heatmap, confounder heatmap, the example image
    assert parsed.comments == [] and parsed.decls == ["DOCTYPE html"]
    for name, value in parsed.attrs:
        assert name in ("lang", "charset", "name", "content", "class", "id", "style", "src", "alt"), name
        if name == "src":
            assert value is not None and value.startswith("data:image/png;base64,")
        if name == "id":
            assert value is not None and set(value) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    text = "".join(parsed.data)
    for value in HOSTILE:  # the warnings: each hostile string, shown literally
        assert printable(value) in text, value[:40]
    assert "".join(parsed.title) == printable(f"medaudit report: run – /models/{h}/model.onnx")
    assert printable(f"/models/{h}/model.onnx") in text


# ------------------------------------------------------------------------------------------ rich


def _render(*renderables: Any) -> str:
    console = Console(record=True, width=200, file=io.StringIO(), force_terminal=True)
    for renderable in renderables:
        console.print(renderable)
    return console.export_text()


def _assert_literal(output: str, value: str) -> None:
    for raw in RAW_CONTROL:
        assert raw not in output, repr(raw)
    if value in ONE_LINE:
        assert _squash(printable(value)) in _squash(output), (value, output)


def _rich_results(h: str) -> dict[str, Any]:
    """Minimal results for every table of ``report.tables``, ``h`` in every free-text field."""
    sweep = [
        {
            "attack": attack,
            "norm": h,
            "eps": 1 / 255,
            "clean_accuracy": 0.9,
            "robust_accuracy": 0.8,
            "attack_success_rate": 0.1,
            "auc_under_attack": 0.7,
            "perturbation": {"max_linf": 0.004},
        }
        for attack in (h, "worst-case")
    ]
    return {
        "info": {
            "path": h,
            "format": h,
            "backend": h,
            "sha256": h + "0" * 16,
            "parameters": 10,
            "card": h,
            "arch": h,
            "input": {"channels": 1, "input_size": 28, "mean": [h], "std": [h]},
            "task": h,
            "class_names": [h, h],
            "outputs": h,
            "gradients": h,
            "notes": [h],
        },
        "eval": {
            "n": 12,
            "accuracy": 0.5,
            "balanced_accuracy": 0.5,
            "auc": 0.5,
            "task": "binary-class",
            "per_class_recall": {h: 0.5, "other": 0.5},
            "confusion_matrix": [[1, 2], [3, 4]],
        },
        "attack": {"n": 12, "attacks": [h, h], "sweep": sweep, "curve": {"normalised_area": 0.5}},
        "checks": [{"check": h, "passed": False, "detail": h}],
        "margin": {
            "quantiles": {h: 0.01},
            "flipped_at_1_255": 0.1,
            "n_attacked": 10,
            "n": 12,
            "attack": h,
            "n_censored": 1,
            "eps_max": 0.1,
            "tolerance": 0.001,
        },
        "shift": {
            "label": h,
            "clean": {"n": 12, "accuracy": 0.9, "balanced_error": 0.1},
            "corruptions": [{"corruption": h, "severity": 1, "accuracy": 0.8, "accuracy_drop": 0.2}],
            "per_corruption": [{"corruption": h, "balanced_error": 0.2, "be_drop": 0.1}],
            "baseline": None,
            "baseline_note": h,
            "summary": {
                "clean_be": 0.1,
                "mean_be": 0.2,
                "worst_corruption": h,
                "worst_corruption_be": 0.3,
                "mean_accuracy_drop": 0.1,
                "mean_auc_drop": 0.1,
            },
        },
        "intrinsic": {
            "label_sharpness": {
                "k_f": 0.5,
                "quantiles": {"q50": 0.1, "q90": 0.2, "q99": 0.3},
                "closest_pairs": [{"a": h, "b": h}],
                "closest_cross_label_distance": 1.0,
                "nearest_neighbour_label_disagreement": 0.1,
                "exact_duplicates": 0,
                "cross_label_duplicates": [],
            },
            "d_data": {
                "twonn": 10.0,
                "mle": 9.0,
                "twonn_interval": None,
                "mle_interval": None,
                "n": 12,
                "dims": 784,
                "k": 20,
                "normalizer": h,
            },
            "d_repr": {"twonn": 12.0, "mle": 11.0, "twonn_interval": None, "mle_interval": None, "layer": h},
            "d_repr_le_d_data": {"twonn": False, "mle": True},
            "model_smoothness": None,
            "interpretation": [h],
        },
        "confounders": {
            "thresholds": {"sensitive": 0.1, "mild": 0.05},
            "clean": {"n": 12, "accuracy": 0.9, "auc": 0.9},
            "positive_class": h,
            "ranking": [
                {
                    "artifact": h,
                    "worst_flip_rate": 0.2,
                    "worst_auc_drop_reversed": 0.1,
                    "verdict": "sensitive",
                    "summary": h,
                }
            ],
            "probes": [
                {
                    "artifact": h,
                    "strength": 1.0,
                    "position": h,
                    "flip_rate": 0.2,
                    "accuracy": 0.8,
                    "auc": 0.8,
                    "auc_reversed": 0.4,
                    "reversed_below_chance": True,
                }
            ],
            "by_position": [
                {"artifact": h, "position": h, "worst_flip_rate": 0.2, "worst_auc_drop_reversed": 0.1}
            ],
        },
        "subgroups": {
            "attribute": h,
            "groups": [
                {
                    "group": h,
                    "n": 5,
                    **{m: 0.5 for m in ("accuracy", "balanced_accuracy", "auc")},
                    **{f"{m}_ci": [0.4, 0.6] for m in ("accuracy", "balanced_accuracy", "auc")},
                }
            ],
            "gaps": {
                m: {"value": 0.1, "ci": [0.0, 0.2], "largest_group": h, "smallest_group": h}
                for m in ("accuracy", "balanced_accuracy", "auc")
            },
            "confidence": 0.95,
            "rounds": 10,
            "notes": [h],
        },
        "finetune": {
            "artifact": h,
            "baseline": {"iid_auc": 0.9, "iid_accuracy": 0.9, "ood_auc": 0.9, "ood_accuracy": 0.9},
            "curve": [
                {
                    "fraction": 0.5,
                    "n_artifact": 3,
                    "n_train": 6,
                    "iid_auc": 0.9,
                    "iid_accuracy": 0.9,
                    "ood_auc": 0.6,
                    "ood_accuracy": 0.6,
                }
            ],
            "thresholds": {"susceptible": 0.1, "mild": 0.05},
            "epochs": 1,
            "lr": 0.01,
            "strength": 1.0,
            "positive_class": h,
            "verdict": h,
        },
    }


def test_rich_tables_show_hostile_strings_literally() -> None:
    for h in HOSTILE:
        r = _rich_results(h)
        renderables = [
            ci.gate_table([_verdict(h), _verdict(h, value=math.nan)], h),
            ci.compare_table([Row(h, 0.9, 0.8, h, 0.01, False, [h])], h),
            tables.info_table(r["info"]),
            *tables.eval_tables(r["eval"], h),
            *tables.attack_tables(r["attack"], r["checks"], h),
            tables.margin_table(r["margin"], h),
            *tables.shift_tables(r["shift"], h),
            tables.corruption_catalogue([{"corruption": h, "family": h, "params": h, "datasets": h}], h),
            tables.intrinsic_table(r["intrinsic"], h),
            tables.run_summary_table({"attack": r["attack"], "shift": r["shift"]}, h),
            artifact_list_table([(h, h)]),
            *confounder_tables(r["confounders"], h),
            subgroup_table(r["subgroups"], h),
            finetune_table(r["finetune"], h),
        ]
        for renderable in renderables:
            _assert_literal(_render(renderable), h)


def test_rich_tables_keep_their_own_styles() -> None:
    console = Console(
        record=True, width=200, file=io.StringIO(), force_terminal=True, color_system="truecolor"
    )
    console.print(ci.gate_table([_verdict("[red]x[/]")], "[bold]title[/]"))
    styled = console.export_text(styles=True)
    assert "[red]x[/]" in styled and "[bold]title[/]" in styled  # literal
    assert "FAIL" in styled and "\x1b[1;31mFAIL" in styled  # the verdict is still bold red


# ------------------------------------------------------------------------------------------ figures


def test_figures_take_hostile_labels(tmp_path: Path) -> None:
    h = JOINED
    sweep = [
        {"attack": attack, "norm": h, "eps": eps, "robust_accuracy": 0.5, "clean_accuracy": 0.9}
        for eps in (1 / 255, 2 / 255)
        for attack in (h, "worst-case")
    ]
    for png in (
        figures.heatmap_png(np.array([[0.1, 0.2]]), [h], [h, "$x$"], h, h),
        figures.robustness_curve_png(sweep, h),
        figures.corruption_grid_png(np.zeros((8, 8, 1), np.uint8), {h: [np.zeros((8, 8, 1), np.uint8)]}, h),
    ):
        assert png.startswith(b"\x89PNG")
    figures.save_distance_histogram(tmp_path / "d.png", {h: np.array([1.0, 2.0])}, h, h)
    assert (tmp_path / "d.png").read_bytes().startswith(b"\x89PNG")


# ------------------------------------------------------------------------------------------ CLI


def test_run_with_hostile_folder_card_and_class_names(tmp_path: Path) -> None:
    """End to end: the folder, the card's name and class names, and the npz's class names are hostile."""
    parts = [
        "a`b``|<script>alert(1)<",
        "script> [x](javascript:alert(1)) @everyone [",
        "x] $\\frac$ # h <!--",
    ]
    folder = tmp_path.joinpath(*parts, "[link=javascript:x]L[", "link] \x1b[31m \u202e")
    folder.mkdir(parents=True)
    model = folder / "m.onnx"
    shutil.copy(SAMPLE, model)
    card = json.loads(SAMPLE.with_suffix(".json").read_text())
    card["name"] = "[bold red]card[/] <script>"
    card["class_names"] = ["a|b<img src=x onerror=alert(1)>", "[/x] `c`\n# d"]
    (folder / "m.json").write_text(json.dumps(card))
    rng = np.random.default_rng(0)
    data = folder / "d.npz"
    np.savez(
        data,
        test_images=rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        test_labels=(np.arange(12) % 2).reshape(-1, 1),
        class_names=np.array(["n|<script>", "[/x]p`"]),
    )
    audit = tmp_path / "audit.toml"
    audit.write_text(
        f"[model]\npath = {json.dumps(str(model))}\n[data]\ndata = {json.dumps(str(data))}\n"
        '[run]\nbatch_size = 12\n[eval]\n[attack]\neps = "1/255"\nattack = "fgsm"\n'
        '[gate]\n"eval.accuracy" = ">= 0"\n'
    )
    out = tmp_path / "out"
    out.mkdir()
    md, page, junit = out / "s.md", out / "r.html", out / "j.xml"
    args = ["run", str(audit), "--markdown", str(md), "--html", str(page), "--junit", str(junit)]
    result = CliRunner().invoke(app, [*args, "--json", str(out / "r.json")])
    assert result.exit_code == 0, (result.output, result.exception)
    assert _squash(printable(f"Clean metrics: {data}")) in _squash(result.stderr)
    _assert_inert_markdown(md.read_text(), [str(model), str(data)], MD_SUMMARY_TAGS)
    parsed = _HtmlInspect()
    parsed.feed(page.read_text())
    assert set(parsed.tags) <= HTML_TAGS and parsed.comments == []
    assert printable(str(model)) in "".join(parsed.data)
    ET.parse(junit)


HOSTILE_LINE = "\x1b[31mX\nerror: all good\u202e"


def test_error_lines_quote_hostile_values_on_one_line() -> None:
    """An option value (or a card's string) in an ``error:`` line can neither colour the terminal
    nor start a second, fake ``error:`` line."""
    result = CliRunner().invoke(app, ["attack", "m.pt", "--attack", HOSTILE_LINE])
    assert result.exit_code == 2
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1
    assert "\x1b" not in result.stderr and "\u202e" not in result.stderr
    assert "\\x1b[31mX\\nerror: all good\\u202e" in result.stderr


def test_warning_lines_quote_hostile_values_on_one_line() -> None:
    from medaudit.commands.common import print_warnings

    console = Console(file=io.StringIO(), width=400, force_terminal=False)
    print_warnings(console, [f"the data's classes ({HOSTILE_LINE}) are not the card's"])
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert len(text.strip().splitlines()) == 1 and "\x1b" not in text and "\\nerror: all good" in text
