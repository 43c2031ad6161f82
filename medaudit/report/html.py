"""A self-contained HTML report of a medaudit JSON document (``medaudit/1``).

The page must open anywhere a reviewer gets it (an e-mail attachment, a CI artifact, an air-gapped
workstation), so it references nothing outside itself: CSS is inline, figures are PNG ``data:`` URIs,
there are no scripts, fonts, links or stylesheets, and the string ``http`` never occurs. Text taken
from the document goes through ``_e`` wherever it lands (text, attributes, <title>, figure labels
via ``figures``): HTML-escaped, control and bidi characters shown as escapes, and an ``http`` inside
it (a URL in a path or a warning) has its ``p`` written as a character reference: it reads the same
but is no link and trips no URL scan.

Works for a ``medaudit run`` document (``results`` maps eval / attack / shift / intrinsic to that
command's results, plus an optional ``gate`` verdict list) and for any single-command document.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from medaudit.audits import audits
from medaudit.audits.attack import checks_alarm
from medaudit.audits.evaluation import (
    confidence_percent,
    headline,
    interval_note,
    interval_text,
    method_note,
)
from medaudit.report import figures
from medaudit.report.atomic import write_atomic
from medaudit.report.escaping import printable

SECTION_ORDER = ("eval", "attack", "shift", "confounders", "intrinsic")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
B64_LINE = 76  # MIME line length: keeps the source readable; URL parsing drops the newlines

CSS = """
:root { --ok: #1a7f37; --ok-bg: #dafbe1; --bad: #b42318; --bad-bg: #fee4e2; --muted: #57606a;
        --line: #d0d7de; --head: #f6f8fa; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: #1f2328; margin: 0 auto; padding: 1.5rem 2rem 3rem; max-width: 72rem; line-height: 1.45; }
h1 { font-size: 1.6rem; margin: 0 0 .4rem; }
h2 { font-size: 1.25rem; border-bottom: 1px solid var(--line); padding-bottom: .25rem; margin-top: 2.2rem; }
h3 { font-size: 1.02rem; margin: 1.3rem 0 .4rem; }
table { border-collapse: collapse; margin: .4rem 0 .8rem; font-size: .9rem; }
th, td { border: 1px solid var(--line); padding: .25rem .55rem; text-align: left; vertical-align: top; }
th { background: var(--head); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.worst td { font-weight: 600; border-bottom: 2px solid #8c959f; }
tr.sub td { color: var(--muted); }
.pass { color: var(--ok); background: var(--ok-bg); font-weight: 600; }
.fail { color: var(--bad); background: var(--bad-bg); font-weight: 600; }
.verdict { display: inline-block; padding: .3rem 1rem; border-radius: .4rem; font-size: 1.3rem;
           letter-spacing: .05em; }
.meta th { width: 11rem; }
.caption, .muted { color: var(--muted); font-size: .85rem; }
.alarm { color: var(--bad); font-weight: 600; }
.warn { color: var(--bad); background: var(--bad-bg); border: 2px solid var(--bad); }
.warnings { background: #fff8c5; border: 1px solid #d4a72c; padding: .5rem 1rem; border-radius: .4rem; }
figure { margin: .8rem 0 1.2rem; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); image-rendering: auto; }
figcaption { color: var(--muted); font-size: .85rem; }
pre { background: var(--head); border: 1px solid var(--line); padding: .7rem; overflow-x: auto;
      font-size: .8rem; }
details { margin: .6rem 0; }
summary { cursor: pointer; font-weight: 600; }
code { font-size: .85em; }
@media print { details { display: block; } body { max-width: none; } }
"""


# ---------------------------------------------------------------------------------------------- text


def _e(value: Any) -> str:
    """Escape text for HTML (also quotes, so it is safe in attributes) and defuse any 'http'.

    Control characters, bidi controls and lone surrogates are shown as escapes first
    (``escaping.printable``): no reordered text, and the page always encodes as UTF-8.
    """
    text = html.escape(printable(value), quote=True)
    return re.sub(r"(?i)(htt)(p)", lambda m: f"{m.group(1)}&#{ord(m.group(2))};", text)


def _num(value: Any, digits: int = 4) -> str:
    """A number for a table cell; missing or non-finite values show as a dash, never as 'nan'."""
    if value is None or isinstance(value, bool):
        return "–" if value is None else ("yes" if value else "no")
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "–"
    return str(value)


def _td(value: Any, digits: int = 4, cls: str = "") -> str:
    numeric = value is None or (isinstance(value, int | float) and not isinstance(value, bool))
    classes = " ".join(c for c in (("num" if numeric else ""), cls) if c)
    attr = f' class="{classes}"' if classes else ""
    return f"<td{attr}>{_e(_num(value, digits))}</td>"


def _table(header: list[str] | None, rows: list[str], cls: str = "", caption: str = "") -> str:
    """Rows are pre-rendered ``<tr>`` strings; the header and caption are escaped here."""
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>" if header else ""
    attr = f' class="{cls}"' if cls else ""
    cap = f'<p class="caption">{_e(caption)}</p>' if caption else ""
    return f"<table{attr}>{head}{''.join(rows)}</table>{cap}"


def _kv_rows(pairs: list[tuple[str, Any]], digits: int = 4) -> list[str]:
    return [f"<tr><th>{_e(k)}</th>{_td(v, digits)}</tr>" for k, v in pairs]


def _verdict_cell(passed: Any) -> str:
    return '<td class="pass">pass</td>' if passed else '<td class="fail">FAIL</td>'


def _paragraphs(lines: list[str], cls: str = "") -> str:
    if not lines:
        return ""
    attr = f' class="{cls}"' if cls else ""
    return f"<ul{attr}>" + "".join(f"<li>{_e(line)}</li>" for line in lines) + "</ul>"


def _json_block(value: Any) -> str:
    return f"<pre>{_e(json.dumps(value, indent=2, default=str, ensure_ascii=False))}</pre>"


# -------------------------------------------------------------------------------------------- images


def _data_uri(png: bytes) -> str:
    """Base64 PNG data URI, wrapped at 76 columns, with any 'http' the alphabet happens to spell
    split by a newline: browsers drop newlines from URLs and base64 decoders skip them, so the
    image is unchanged while the page stays free of that string."""
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("images must be PNG bytes (they are embedded as data:image/png)")
    encoded = base64.b64encode(png).decode("ascii")
    lines = [encoded[i : i + B64_LINE] for i in range(0, len(encoded), B64_LINE)]
    wrapped = "\n".join(lines)
    wrapped = re.sub(r"(?i)(ht)(tp)", "\\1\n\\2", wrapped)
    return "data:image/png;base64,\n" + wrapped


def _figure(png: bytes, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{_data_uri(png)}" alt="{_e(alt)}">{cap}</figure>'


# ------------------------------------------------------------------------------------------ sections


def _sections(doc: dict[str, Any]) -> dict[str, Any]:
    """{section name: that command's results}, in the report's canonical order."""
    results = doc.get("results") or {}
    if doc.get("command") == "gate":
        return {}  # its verdicts are the gate section
    if doc.get("command") == "run":
        found = {k: v for k, v in results.items() if k != "gate" and v is not None}
    else:
        found = {str(doc.get("command") or "results"): results}
    ordered = {k: found[k] for k in SECTION_ORDER if k in found}
    ordered.update({k: v for k, v in found.items() if k not in ordered})
    return ordered


def _gate(doc: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The gate verdicts: top-level ``gate``, ``results.gate`` of a run, or a gate document's verdicts."""
    gate = doc.get("gate")
    results = doc.get("results")
    if gate is None and isinstance(results, dict):
        gate = results.get("verdicts") if doc.get("command") == "gate" else results.get("gate")
    return gate


def _data_description(data: dict[str, Any] | None) -> str:
    if not data:
        return "–"
    if data.get("source") == "medmnist":
        text = f"{data.get('name')} ({data.get('size')} px, {data.get('split')} split, MedMNIST)"
    else:
        text = f"{data.get('path', 'data')} ({data.get('source', '?')}, {data.get('split', '?')} split)"
    if data.get("n") is not None:
        text += f", n = {data['n']}"
    return text


def _alarms(sections: dict[str, Any]) -> str:
    """Failed honesty checks, shown under the verdict: a PASS must not hide them in a table."""
    out = []
    for name, res in sections.items():
        alarm = checks_alarm(res) if name == "attack" and isinstance(res, dict) else None
        if alarm is not None:
            out.append(
                f'<p class="alarm" id="honesty-alarm"><span class="verdict warn">⚠ CHECK FAILED</span> {_e(alarm)}</p>'
            )
    return "".join(out)


def _header(
    doc: dict[str, Any], gate: list[dict[str, Any]] | None, sections: dict[str, Any] | None = None
) -> str:
    model = doc.get("model") or {}
    versions = doc.get("versions") or {}
    sha = model.get("sha256")
    wall = doc.get("wall_time_s")
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    when = doc.get("created") or doc.get("date")
    rows = [
        ("model", model.get("path", "–")),
        ("format", " / ".join(str(model[k]) for k in ("format", "backend") if model.get(k)) or "–"),
        ("sha256", f"{sha[:16]}…" if sha else "–"),
        ("task", model.get("task") or "–"),
        ("data", _data_description(doc.get("data"))),
        ("seed", doc.get("seed")),
        ("wall time", f"{wall:.1f} s" if isinstance(wall, int | float) else "–"),
        ("medaudit", versions.get("medaudit", "–")),
        ("schema", doc.get("schema", "–")),
    ]
    if when:
        rows.append(("audit date", when))
    rows.append(("report generated", generated))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_num(v))}</td></tr>" for k, v in rows)
    badge = ""
    if gate is not None:
        ok = all(v.get("passed") for v in gate)
        badge = f'<p><span class="verdict {"pass" if ok else "fail"}">{"PASS" if ok else "FAIL"}</span></p>'
    title = f"medaudit report: {doc.get('command', '?')}"
    alarms = _alarms(sections or {})
    return f'<header><h1>{_e(title)}</h1>{badge}{alarms}<table class="meta">{body}</table></header>'


def _summary(sections: dict[str, Any]) -> str:
    """Headline numbers, one block of rows per section, so the reader sees the verdict first."""
    rows = [
        (name, row.label, row.text)
        for name, res in sections.items()
        if name in audits and isinstance(res, dict)
        for row in audits.get(name).summary(res)
    ]
    if not rows:
        return ""
    out, previous = [], None
    for section, metric, value in rows:
        shown = section if section != previous else ""
        out.append(f'<tr><th>{_e(shown)}</th><td>{_e(metric)}</td><td class="num">{_e(value)}</td></tr>')
        previous = section
    return '<section id="summary"><h2>Summary</h2>' + _table(["audit", "metric", "value"], out) + "</section>"


def _gate_section(gate: list[dict[str, Any]]) -> str:
    ok = all(v.get("passed") for v in gate)
    detail = any(v.get("message") for v in gate)
    rows = [
        "<tr>"
        + f"<td>{_e(v.get('metric', '?'))}</td><td>{_e(v.get('op', ''))}</td>"
        + _td(v.get("threshold"))
        + _td(v.get("value"))
        + _verdict_cell(v.get("passed"))
        + (f"<td>{_e(v.get('message') or '')}</td>" if detail else "")
        + "</tr>"
        for v in gate
    ]
    verdict = f'<p><span class="verdict {"pass" if ok else "fail"}">{"PASS" if ok else "FAIL"}</span> '
    failed = sum(not v.get("passed") for v in gate)
    verdict += f"{_e(f'{len(gate) - failed} of {len(gate)} rules pass')}</p>"
    header = ["metric", "op", "threshold", "value", "verdict", *(["detail"] if detail else [])]
    table = _table(header, rows) if gate else "<p>No rules.</p>"
    return f'<section id="gate"><h2>Gate</h2>{verdict}{table}</section>'


def eval_section(res: dict[str, Any], title: str) -> str:
    rows = [
        f'<tr><th>{_e(label)}</th>{_td(res.get(key))}<td class="num">{_e(interval_text(res, key) or "")}</td></tr>'
        for label, key in headline(res)
    ]
    rows.append(f"<tr><th>n</th>{_td(res.get('n'))}<td></td></tr>")
    header = ["metric", "value", f"{confidence_percent(res)} interval"]
    parts = [_table(header, rows, caption=method_note(res))]
    reliability = res.get("reliability")
    if isinstance(reliability, dict) and reliability.get("edges"):
        png = figures.reliability_diagram_png(reliability, _finite(res.get("ece")), title)
        parts.append(
            _figure(
                png,
                "reliability diagram: accuracy against confidence per bin",
                "Accuracy per confidence bin against the diagonal (perfect calibration); bars below it are "
                "overconfident. Below: decisions per bin.",
            )
        )
    recall = res.get("per_class_recall") or {}
    names = list(recall) or list(res.get("class_names") or [])
    matrix = res.get("confusion_matrix")
    multi_label = str(res.get("task", "")).startswith("multi-label")
    if multi_label and matrix:
        rows = [
            f"<tr><th>{_e(name)}</th>{_td(recall.get(name))}"
            + "".join(_td(c) for c in (cm[0][0], cm[0][1], cm[1][0], cm[1][1]))
            + "</tr>"
            for name, cm in zip(names, matrix, strict=False)
        ]
        parts.append("<h3>Per label</h3>")
        parts.append(_table(["label", "recall", "TN", "FP", "FN", "TP"], rows))
    elif matrix:
        rows = []
        for i, name in enumerate(names):
            counts = matrix[i]
            total = sum(counts) or 1
            cells = []
            for j, count in enumerate(counts):
                share = count / total
                colour = f"rgba(26,127,55,{share:.2f})" if i == j else f"rgba(180,35,24,{share:.2f})"
                cells.append(f'<td class="num" style="background:{colour}">{_e(count)}</td>')
            rows.append(f"<tr><th>{_e(name)}</th>{_td(recall.get(name))}{''.join(cells)}</tr>")
        parts.append("<h3>Per class and confusion matrix</h3>")
        parts.append(
            _table(
                ["true class", "recall", *(f"→ {n}" for n in names)],
                rows,
                caption="rows: true class; columns: predicted class; shading: share of the row",
            )
        )
    return "".join(parts)


def _grey_levels(eps: Any) -> str:
    return f"{eps * 255:.2g}" if isinstance(eps, int | float) else "–"


def attack_section(res: dict[str, Any], title: str) -> str:
    sweep = res.get("sweep") or []
    parts = []
    if any(r.get("attack") == "worst-case" for r in sweep):
        png = figures.robustness_curve_png(sweep, title)
        parts.append(
            _figure(
                png,
                "robust accuracy against eps: worst case and per attack",
                "Robust accuracy against eps (eps 0 = clean); thin lines are cumulative per attack.",
            )
        )
    several = len(res.get("attacks") or []) > 1
    with_ci = any(isinstance(r, dict) and "robust_accuracy_ci" in r for r in sweep)
    rows = []
    for r in sweep:
        worst = r.get("attack") == "worst-case"
        if not worst and not several:
            continue
        pert = r.get("perturbation") or {}
        interval = (interval_text(r, "robust_accuracy", 3) or "–") if worst else ""
        rows.append(
            f'<tr class="{"worst" if worst else "sub"}">'
            + _td(r.get("eps"), 5)
            + f'<td class="num">{_e(_grey_levels(r.get("eps")))}</td>'
            + f"<td>{_e('all (worst case)' if worst else r.get('attack'))}</td>"
            + _td(r.get("clean_accuracy"), 3)
            + _td(r.get("robust_accuracy"), 3)
            + (f'<td class="num">{_e(interval)}</td>' if with_ci else "")
            + _td(r.get("attack_success_rate"), 3)
            + (_td(r.get("auc_under_attack"), 3) if worst else "<td></td>")
            + (_td(pert.get("max_linf"), 5) if worst else "<td></td>")
            + "</tr>"
        )
    curve = res.get("curve") or {}
    caption = (
        f"n = {res.get('n')}; robust = clean-correct and survives every attack and restart "
        f"({', '.join(res.get('attacks') or [])}); rows per attack are cumulative; "
        f"normalised area under the curve {_num(curve.get('normalised_area'))}"
    )
    level = confidence_percent(res)
    clean_interval = interval_text(res, "clean_accuracy")
    if clean_interval is not None:
        caption += f"; clean accuracy {level} interval {clean_interval}"
    if with_ci and interval_note(res):
        caption += f"; {interval_note(res)}"
    parts.append("<h3>Sweep</h3>")
    parts.append(
        _table(
            [
                "eps",
                "×1/255",
                "attack",
                "clean",
                "robust",
                *([f"{level} interval"] if with_ci else []),
                "success",
                "AUC adv",
                "max δ∞",
            ],
            rows,
            caption=caption,
        )
    )
    checks = res.get("checks")
    if checks is not None:
        rows = [
            f"<tr><td>{_e(c.get('check'))}</td>{_verdict_cell(c.get('passed'))}"
            f"<td>{_e(c.get('detail', ''))}</td></tr>"
            for c in checks
        ]
        parts.append("<h3>Honesty checks</h3>")
        parts.append(_table(["check", "result", "detail"], rows))
    if res.get("notes"):
        parts.append("<h3>Notes</h3>" + _paragraphs(res["notes"]))
    return "".join(parts)


def shift_section(res: dict[str, Any], title: str) -> str:
    parts = []
    cells = res.get("corruptions") or []
    if cells:
        names = list(dict.fromkeys(r["corruption"] for r in cells))
        severities = sorted({r["severity"] for r in cells})
        drops = {(r["corruption"], r["severity"]): r.get("accuracy_drop") for r in cells}
        values = np.array(
            [[_finite(drops.get((n, s))) for s in severities] for n in names],
            dtype=float,
        )
        png = figures.heatmap_png(
            values,
            names,
            [f"severity {s}" for s in severities],
            title,
            "clean accuracy - corrupted accuracy",
        )
        parts.append(
            _figure(
                png,
                "accuracy drop per corruption and severity",
                f"Accuracy drop per corruption and severity ({res.get('label', '')}); positive = worse.",
            )
        )
    s = res.get("summary") or {}
    clean = res.get("clean") or {}
    level = confidence_percent(res)
    pairs: list[tuple[str, Any]] = [("clean accuracy", clean.get("accuracy"))]
    if interval_text(clean, "accuracy") is not None:
        pairs.append((f"clean accuracy {level} interval", interval_text(clean, "accuracy")))
    pairs.append(("clean balanced error", s.get("clean_be")))
    if interval_text(clean, "balanced_error") is not None:
        pairs.append((f"clean balanced error {level} interval", interval_text(clean, "balanced_error")))
    pairs += [
        ("mean corrupted balanced error", s.get("mean_be")),
        ("worst corruption", f"{s.get('worst_corruption')} (BE {_num(s.get('worst_corruption_be'))})"),
        ("mean accuracy drop", s.get("mean_accuracy_drop")),
        ("mean AUC drop", s.get("mean_auc_drop")),
    ]
    with_baseline = res.get("baseline") is not None
    if with_baseline:
        pairs += [
            ("mean normalised BE vs AlexNet", s.get("mean_normalised_be")),
            ("mean rBE vs AlexNet", s.get("mean_rbe")),
        ]
        if s.get("rbe_excluded"):
            pairs.append(("rBE left out (denominator < 0.02)", ", ".join(s["rbe_excluded"])))
    else:
        pairs.append(("AlexNet comparison", res.get("baseline_note") or "–"))
    parts.append("<h3>Summary</h3>" + _table(None, _kv_rows(pairs), caption=interval_note(res) or ""))
    per = res.get("per_corruption") or []
    if per:
        header = ["corruption", "mean BE", "BE drop"] + (["nBE", "rBE"] if with_baseline else [])
        rows = []
        for r in per:
            row = f"<tr><td>{_e(r.get('corruption'))}</td>" + _td(r.get("balanced_error"), 3)
            row += _td(r.get("be_drop"), 3)
            if with_baseline:
                flag = " (flagged)" if r.get("rbe_flagged") else ""
                row += (
                    _td(r.get("normalised_be"), 2)
                    + f'<td class="num">{_e(_num(r.get("rbe"), 2) + flag)}</td>'
                )
            rows.append(row + "</tr>")
        parts.append("<h3>Per corruption</h3>" + _table(header, rows))
    if res.get("notes"):
        parts.append("<h3>Notes</h3>" + _paragraphs(res["notes"]))
    return "".join(parts)


def _finite(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else math.nan


def _interval(value: Any, interval: Any) -> str:
    text = _num(value, 2)
    if isinstance(interval, list | tuple) and len(interval) == 2:
        text += f" [{_num(interval[0], 2)}, {_num(interval[1], 2)}]"
    return text


def intrinsic_section(res: dict[str, Any]) -> str:
    sharp = res.get("label_sharpness") or {}
    d = res.get("d_data") or {}
    q = sharp.get("quantiles") or {}
    rows: list[tuple[str, str, str]] = [
        (
            "label sharpness K_F",
            _num(sharp.get("k_f")),
            f"per-image 1/(nearest other-label distance): median {_num(q.get('q50'), 3)}, "
            f"q90 {_num(q.get('q90'), 3)}, q99 {_num(q.get('q99'), 3)}",
        ),
        (
            "closest cross-label pair",
            _num(sharp.get("closest_cross_label_distance")),
            f"nearest neighbour has another label for "
            f"{_num(sharp.get('nearest_neighbour_label_disagreement'), 3)} of images",
        ),
        (
            "duplicates",
            _num(sharp.get("exact_duplicates")),
            f"{len(sharp.get('cross_label_duplicates') or [])} identical pairs with different labels",
        ),
        (
            "d_data (TwoNN)",
            _interval(d.get("twonn"), d.get("twonn_interval")),
            f"{d.get('n')} distinct images, {d.get('dims')} dims",
        ),
        ("d_data (MLE)", _interval(d.get("mle"), d.get("mle_interval")), f"k = {d.get('k')}"),
    ]
    r = res.get("d_repr")
    if r:
        check = res.get("d_repr_le_d_data") or {}
        verdict = "≤ d_data" if check.get("twonn") and check.get("mle") else "> d_data"
        rows.append(
            (
                "d_repr (TwoNN)",
                _interval(r.get("twonn"), r.get("twonn_interval")),
                f"{r.get('layer')}; {verdict}",
            )
        )
        rows.append(("d_repr (MLE)", _interval(r.get("mle"), r.get("mle_interval")), ""))
    lip = res.get("model_smoothness")
    if lip:
        rows.append(
            (
                "local Lipschitz (mean)",
                f"{lip['mean']:.4g}",
                f"‖Δlogits‖₁/‖Δx‖∞ within eps {lip.get('eps')}: median {lip.get('median', 0):.3g}, "
                f"q90 {lip.get('q90', 0):.3g}, max {lip.get('max', 0):.3g} (n = {lip.get('n')})",
            )
        )
    table = _table(
        ["property", "value", "detail"],
        [f'<tr><td>{_e(a)}</td><td class="num">{_e(b)}</td><td>{_e(c)}</td></tr>' for a, b, c in rows],
    )
    parts = [table]
    if res.get("interpretation"):
        parts.append("<h3>Interpretation</h3>" + _paragraphs(res["interpretation"]))
    if res.get("notes"):
        parts.append("<h3>Notes</h3>" + _paragraphs(res["notes"]))
    return "".join(parts)


def _generic_section(res: Any) -> str:
    """Commands without a dedicated layout (info, attack-margin, …): scalars, then the rest as JSON."""
    if not isinstance(res, dict):
        return _json_block(res)
    scalars = [(k, v) for k, v in res.items() if v is None or isinstance(v, str | int | float | bool)]
    shown = {k for k, _ in scalars}
    rest = {k: v for k, v in res.items() if k not in shown}
    out = _table(None, _kv_rows(scalars)) if scalars else ""
    if rest:
        out += f"<details><summary>Details</summary>{_json_block(rest)}</details>"
    return out


def confounders_section(res: dict[str, Any], title: str) -> str:
    """The flip-rate heatmap (artifact x strength, worst position) and the ranking with its verdicts."""
    probes = [p for p in res.get("probes") or [] if isinstance(p, dict)]
    names = list(dict.fromkeys(p["artifact"] for p in probes))
    strengths = sorted({p["strength"] for p in probes})
    worst: dict[tuple[str, float], float] = {}
    for p in probes:
        key = (p["artifact"], p["strength"])
        worst[key] = max(worst.get(key, 0.0), _finite(p.get("flip_rate")))
    out = ""
    if names and strengths:
        values = np.array([[worst.get((n, st), np.nan) for st in strengths] for n in names])
        png = figures.heatmap_png(values, names, [f"strength {st:g}" for st in strengths], title, "flip rate")
        out += _figure(png, "flip rate per artifact and strength", "share of predictions each artifact flips")
    rows = [
        "<tr>"
        + _td(r.get("artifact"))
        + _td(r.get("position") or "-")
        + _td(r.get("verdict"))
        + _td(r.get("towards"))
        + _td(_interval(r.get("effect"), r.get("effect_ci")))
        + _td(r.get("control"), 3)
        + _td(r.get("worst_flip_rate"), 3)
        + _td(r.get("summary"))
        + "</tr>"
        for r in res.get("ranking") or []
        if isinstance(r, dict)
    ]
    columns = ["artifact", "position", "verdict", "towards", "effect [95% interval]", "control"]
    out += _table([*columns, "worst flip rate", "reading"], rows) if rows else ""
    found = [
        "<tr>"
        + _td(r.get("region"))
        + _td(r.get("towards"))
        + _td(r.get("flip_rate"), 3)
        + _td(r.get("control_flip_rate"), 3)
        + _td("FLAGGED" if r.get("flagged") is True else "no", cls="fail" if r.get("flagged") is True else "")
        + "</tr>"
        for r in res.get("discovery") or []
        if isinstance(r, dict)
    ]
    if found:
        header = ["region", "towards", "flip rate", "control flip rate", "flagged"]
        out += _table(header, found, caption="shortcut discovery: a universal patch per region")
    return out


def features_section(res: dict[str, Any], data_label: str) -> str:
    """Nonrobust-feature usefulness per model and dataset, then the trade-off table, one column per
    model (the pictures come from ``FeaturesAudit.figures``)."""
    from medaudit.report.feature_tables import (
        CLEAN_REFERENCE,
        dataset_name,
        models_of,
        nonrobust_rows,
        tradeoff_rows,
    )

    models = models_of(res)
    rows = []
    for model in models:
        nonrobust = model.get("nonrobust") or {}
        for row in nonrobust_rows(model):
            rows.append(
                "<tr>"
                + _td(str(model.get("label")))
                + _td(dataset_name(row.get("kind")))
                + _td(row.get("eps"), 3)
                + _td(row.get("attack_success"), 3)
                + _td(row.get("accuracy"), 3)
                + _td(row.get("balanced_accuracy"), 3)
                + _td(row.get("control_accuracy"), 3)
                + _td(nonrobust.get("chance"), 3)
                + "</tr>"
            )
        reference = nonrobust.get("reference")
        if isinstance(reference, dict):
            rows.append(
                "<tr>"
                + _td(str(model.get("label")))
                + _td(CLEAN_REFERENCE)
                + _td(0.0, 3)
                + _td(None)
                + _td(reference.get("accuracy"), 3)
                + _td(reference.get("balanced_accuracy"), 3)
                + _td(None)
                + _td(nonrobust.get("chance"), 3)
                + "</tr>"
            )
    header = [
        "model",
        "dataset",
        "L2 eps",
        "reached target",
        "accuracy",
        "balanced acc.",
        "eps-0 control",
        "chance",
    ]
    out = _table(
        header, rows, caption="a fresh network trained on the relabelled set, tested on the clean split"
    )
    columns = [tradeoff_rows(m) for m in models]
    if columns:
        body = [
            "<tr>" + f"<th>{_e(label)}</th>" + "".join(_td(col[i][1], 3) for col in columns) + "</tr>"
            for i, (label, _) in enumerate(columns[0])
        ]
        names = [f"{m.get('label')} ({m.get('path')})" for m in models]
        out += _table(["metric", *names], body, caption=f"trade-off on {data_label}")
    return out


def _section(name: str, res: Any, data_label: str) -> str:
    heading = audits.get(name).title if name in audits else name
    body = audits.get(name).html(res, data_label) if name in audits and isinstance(res, dict) else None
    if body is None:
        body = _generic_section(res)
    anchor = re.sub(r"[^a-z0-9-]", "-", name.lower())
    if not anchor or len(anchor) > 40 or "http" in anchor:  # a key from a foreign document
        anchor = "section-" + hashlib.sha256(printable(name).encode("utf-8")).hexdigest()[:12]
    title = f'{_e(heading)} <span class="muted">({_e(name)})</span>'
    return f'<section id="{anchor}"><h2>{title}</h2>{body}</section>'


def _short_data_label(data: dict[str, Any] | None) -> str:
    if data and data.get("source") == "medmnist":
        return f"{data.get('name')} ({data.get('size')} px, {data.get('split')})"
    return str((data or {}).get("path", "data"))


# ---------------------------------------------------------------------------------------------- API


def render_html(doc: dict[str, Any], images: dict[str, bytes] | None = None) -> str:
    """One self-contained HTML page for ``doc``; ``images`` (caption -> PNG bytes) are example grids.

    Raises ValueError for image bytes that are not PNG, so a bad artifact fails loudly here rather
    than showing as a broken image in the report.
    """
    sections = _sections(doc)
    gate = _gate(doc)
    data_label = _short_data_label(doc.get("data"))
    body = [_header(doc, gate, sections), _summary(sections)]
    if gate is not None:
        body.append(_gate_section(gate))
    body += [_section(name, res, data_label) for name, res in sections.items()]
    if images:
        grids = "".join(_figure(png, name, name) for name, png in images.items())
        body.append(f'<section id="examples"><h2>Example images</h2>{grids}</section>')
    warnings = doc.get("warnings") or []
    body.append(
        '<section id="warnings"><h2>Warnings</h2>'
        + (_paragraphs(warnings, "warnings") if warnings else "<p>None.</p>")
        + "</section>"
    )
    body.append(
        '<section id="configuration"><h2>Configuration</h2>'
        "<details><summary>Full configuration (JSON)</summary>"
        f"{_json_block(doc.get('config') or {})}</details>"
        "<details><summary>Model, data and versions (JSON)</summary>"
        f"{_json_block({k: doc.get(k) for k in ('model', 'data', 'versions')})}</details>"
        "</section>"
    )
    title = f"medaudit report: {doc.get('command', '?')} – {(doc.get('model') or {}).get('path', '')}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(part for part in body if part)
        + "\n</body>\n</html>\n"
    )


def write_html(path: str | Path, doc: dict[str, Any], images: dict[str, bytes] | None = None) -> None:
    """Render, then write atomically (temp file beside the target, then rename): a failed render
    never leaves a truncated page or destroys an existing one."""
    write_atomic(path, render_html(doc, images))
