"""What CI systems read: JUnit XML test results, a Markdown PR comment, and the gate tables.

Each gate rule (or compared metric) becomes one JUnit test case, so a CI server
shows a failed release gate as failed tests with the reason in the message.

Paths, names and metric keys come from the user's files: they pass through ``report.escaping``
(Markdown code spans, XML-valid text, rich ``Text``) wherever they enter an output.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rich.table import Table

from medaudit.audits import audits
from medaudit.audits.attack import checks_alarm
from medaudit.document import sections
from medaudit.gate.compare import Row
from medaudit.gate.policy import OPS, Verdict
from medaudit.report.atomic import write_atomic
from medaudit.report.escaping import md_code, md_text, rich_text, xml_text


class Case(Protocol):
    """A gate verdict or a comparison row: anything with a name, a pass state and a message."""

    @property
    def name(self) -> str: ...

    @property
    def passed(self) -> bool | None: ...

    @property
    def message(self) -> str: ...


@dataclass(frozen=True)
class CheckCase:
    """An attack honesty check as a JUnit case (its own suite: it never changes the gate's verdict)."""

    name: str
    passed: bool | None
    message: str


CHECKS_SUITE = "medaudit honesty checks"


def check_cases(doc_or_docs: dict[str, Any] | Sequence[dict[str, Any]]) -> list[CheckCase]:
    """Every attack honesty check of the report(s), passed or not (``results.checks``)."""
    docs = [doc_or_docs] if isinstance(doc_or_docs, dict) else list(doc_or_docs)
    cases = []
    for doc in docs:
        attack = sections(doc).get("attack")
        checks = attack.get("checks") if isinstance(attack, dict) else None
        for check in checks if isinstance(checks, list) else []:
            check = check if isinstance(check, dict) else {}
            detail = str(check.get("detail", ""))
            passed = check.get("passed") is True
            message = detail if passed else f"{detail} — robust accuracy may be overstated"
            cases.append(CheckCase(str(check.get("check", "?")), passed, message))
    return cases


def _suite(root: ET.Element, cases: Sequence[Case], suite_name: str, failure_type: str) -> None:
    suite = ET.SubElement(
        root,
        "testsuite",
        name=suite_name,
        tests=str(len(cases)),
        failures=str(sum(1 for c in cases if c.passed is False)),
        errors="0",
        skipped=str(sum(1 for c in cases if c.passed is None)),
    )
    for case in cases:
        message = xml_text(case.message)
        element = ET.SubElement(suite, "testcase", classname=suite_name, name=xml_text(case.name))
        if case.passed is False:
            failure = ET.SubElement(element, "failure", message=message, type=failure_type)
            failure.text = message
        elif case.passed is None:
            ET.SubElement(element, "skipped", message=message or "not gated")
        else:
            ET.SubElement(element, "system-out").text = message


def junit_xml(cases: Sequence[Case], suite_name: str, checks: Sequence[Case] = ()) -> str:
    """A JUnit XML document: one testcase per case, <failure> for failed, <skipped> for not gated;
    the report's honesty ``checks`` (``check_cases``), if any, in a second suite, failed ones as
    <failure type="HonestyCheckFailure">.

    Names and messages can carry text from the user's files (a policy's file name, a report's
    values): characters XML 1.0 cannot hold are written as escapes, so the file always parses.
    """
    every = [*cases, *checks]
    failures = sum(1 for c in every if c.passed is False)
    suite_name = xml_text(suite_name)
    root = ET.Element("testsuites", name=suite_name, tests=str(len(every)), failures=str(failures))
    _suite(root, cases, suite_name, "GateFailure")
    if checks:
        _suite(root, checks, CHECKS_SUITE, "HonestyCheckFailure")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(
    path: str | Path, verdicts: Sequence[Case], suite_name: str = "medaudit gate", checks: Sequence[Case] = ()
) -> None:
    write_atomic(path, junit_xml(verdicts, suite_name, checks))


# ---- formatting ----


def fmt(value: float | None, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def _model_line(doc: dict[str, Any]) -> str:
    model = doc.get("model") or {}
    if not isinstance(model, dict) or not model:
        return "model: -"
    sha = str(model.get("sha256") or "")[:12]
    details = md_text(model.get("format", "?")) + (f", sha256 {md_text(sha)}" if sha else "")
    return f"model: {md_code(model.get('path', '-'))} ({details})"


def _data_line(doc: dict[str, Any]) -> str:
    data = doc.get("data") or {}
    if not isinstance(data, dict) or not data:
        return "data: -"
    if data.get("name"):
        size, split = md_text(data.get("size", "?")), md_text(data.get("split", "?"))
        what = f"{md_text(data['name'])} {size} px, {split} split"
    else:
        what = md_code(data.get("path", "-"))
    return f"data: {what}, n = {md_text(data.get('n', '?'))}"


def _md_op(op: str) -> str:
    """A rule's operator: one of the policy's own (``>=`` …) as is, anything else as code."""
    return op if op in OPS else md_code(op, table=True)


def _summary_rows(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(audit, metric, value) as the console and HTML summaries show them (``Audit.summary``)."""
    return [
        (name, row.label, row.text)
        for name, results in sections(doc).items()
        if name in audits
        for row in audits.get(name).summary(results)
    ]


def markdown_summary(
    doc_or_docs: dict[str, Any] | Sequence[dict[str, Any]], verdicts: Sequence[Verdict]
) -> str:
    """A short PR comment: what was audited, the headline numbers, and the gate with ✅/❌."""
    docs = [doc_or_docs] if isinstance(doc_or_docs, dict) else list(doc_or_docs)
    failed = [v for v in verdicts if v.passed is False]
    status = "✅ passed" if not failed else f"❌ failed ({len(failed)} of {len(verdicts)} rules)"
    lines = [f"### medaudit gate: {status}", ""]
    alarms = [alarm for doc in docs if (alarm := checks_alarm(sections(doc).get("attack") or {}))]
    lines += [f"> ⚠️ {md_text(alarm)}" for alarm in alarms] + ([""] if alarms else [])
    for doc in docs:
        lines += [
            f"- {_model_line(doc)}",
            f"- {_data_line(doc)}",
            f"- report: {md_code(doc.get('command', '?'))}",
        ]
    headline = [row for doc in docs for row in _summary_rows(doc)]
    if headline:
        lines += ["", "| audit | metric | value |", "|---|---|---:|"]
        lines += [
            f"| {md_text(audit, table=True)} | {md_text(metric, table=True)} | {md_text(value, table=True)} |"
            for audit, metric, value in headline
        ]
    if verdicts:
        lines += ["", "| | rule | value | threshold |", "|---|---|---:|---:|"]
        for v in verdicts:
            mark = "✅" if v.passed else "❌"
            rule = f"{md_code(v.metric, table=True)} {_md_op(v.op)}"
            lines.append(f"| {mark} | {rule} | {fmt(v.value)} | {v.threshold:g} |")
    return "\n".join(lines) + "\n"


def compare_markdown(baseline: dict[str, Any], candidate: dict[str, Any], rows: Sequence[Row]) -> str:
    """A PR comment for a baseline comparison: one table row per metric, regressions marked ❌."""
    failed = [r for r in rows if r.passed is False]
    status = "✅ no regression" if not failed else f"❌ {len(failed)} regression(s)"
    lines = [
        f"### medaudit compare: {status}",
        "",
        f"- baseline {_model_line(baseline)}",
        f"- candidate {_model_line(candidate)}",
        f"- {_data_line(candidate)}",
        "",
        "| | metric | baseline | candidate | Δ | better | allowed |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        mark = {True: "✅", False: "❌", None: "➖"}[r.passed]
        allowed = "-" if r.allowed is None else f"{r.allowed:g}"
        lines.append(
            f"| {mark} | {md_code(r.metric, table=True)} | {fmt(r.baseline)} | {fmt(r.candidate)} | "
            f"{fmt(r.difference, signed=True)} | {md_text(r.direction, table=True)} | {allowed} |"
        )
    return "\n".join(lines) + "\n"


# ---- rich tables (stderr) ----


def gate_table(verdicts: Sequence[Verdict], title: str = "Release gate") -> Table:
    """Rule, value, threshold and verdict per gate rule; failures in red.

    ``title`` and metric names are plain text (shown literally, never parsed as rich markup).
    """
    table = Table(title=rich_text(title, "table.title"), title_justify="left")
    table.add_column("metric")
    table.add_column("rule", justify="center")
    table.add_column("threshold", justify="right")
    table.add_column("value", justify="right")
    table.add_column("verdict")
    for v in verdicts:
        verdict = "[green]pass[/]" if v.passed else "[bold red]FAIL[/]"
        value = fmt(v.value) if not math.isnan(v.value) else "[red]null[/]"
        table.add_row(rich_text(v.metric), rich_text(v.op), f"{v.threshold:g}", value, verdict)
    return table


def compare_table(rows: Sequence[Row], title: str = "Baseline vs candidate") -> Table:
    """Side by side: baseline, candidate, difference, which way is better, allowance, verdict.

    ``title``, metric names and notes are plain text (never parsed as rich markup).
    """
    table = Table(
        title=rich_text(title, "table.title"),
        title_justify="left",
        caption=_COMPARE_CAPTION,
        caption_justify="left",
    )
    table.add_column("metric", no_wrap=True)
    for header in ("baseline", "candidate", "Δ"):
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("better", justify="center", no_wrap=True)
    table.add_column("allowed", justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("note")
    styles = {True: "[green]pass[/]", False: "[bold red]FAIL[/]", None: "[dim]-[/]"}
    arrows = {"higher": "↑", "lower": "↓", "none": "-"}
    for r in rows:
        allowed = "-" if r.allowed is None else f"{r.allowed:g}"
        note = "; ".join(_SHORT_NOTES.get(n, n) for n in r.notes)
        table.add_row(
            rich_text(r.metric),
            fmt(r.baseline),
            fmt(r.candidate),
            fmt(r.difference, signed=True),
            arrows.get(r.direction) or rich_text(r.direction),
            allowed,
            styles[r.passed],
            rich_text(note),
        )
    return table


_COMPARE_CAPTION = "better: ↑ higher, ↓ lower, - no direction; metrics without an allowance are not gated (--allow METRIC=AMOUNT)"
_SHORT_NOTES = {
    "not gated by default: give --allow METRIC=AMOUNT to gate it": "no allowance",
    "only in the baseline": "baseline only",
    "only in the candidate": "candidate only",
}
