"""``medaudit gate`` and ``medaudit compare``: pass/fail a release on audit reports.

Both read JSON reports written by ``--json`` (or by ``medaudit run``) and exit 1
when the release should be blocked, 0 when it may go ahead, and 2 when the input
is unusable (missing file, not a report, unknown metric, malformed rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from medaudit.commands.common import JsonOpt, Timer, check_output_target, emit, print_warnings, stderr_console
from medaudit.document import document
from medaudit.errors import GATE_FAILED, ConfigError
from medaudit.gate.compare import Row, comparability_warnings, compare, parse_allow
from medaudit.gate.metrics import attack_norm, extract_metrics, load_report
from medaudit.gate.policy import Rule, Verdict, evaluate, load_policy
from medaudit.report import ci
from medaudit.report.atomic import write_atomic
from medaudit.report.ci import gate_table

__all__ = ["compare_command", "gate_command", "gate_document", "gate_table"]

PANEL = "Gate"

ReportArg = Annotated[
    Path, typer.Argument(help="JSON report written by --json or `medaudit run`.", show_default=False)
]
JunitOpt = Annotated[
    str | None,
    typer.Option("--junit", help="Also write JUnit XML to PATH (one test per rule).", rich_help_panel=PANEL),
]
MarkdownOpt = Annotated[
    str | None,
    typer.Option(
        "--markdown",
        help="Also write a Markdown summary to PATH ('-' for stdout), e.g. $GITHUB_STEP_SUMMARY.",
        rich_help_panel=PANEL,
    ),
]


def gate_document(doc: dict[str, Any], rules: list[Rule] | Any) -> tuple[list[Verdict], int]:
    """Check a report against rules (or anything ``load_policy`` takes): verdicts and exit code 0 or 1."""
    if not isinstance(rules, list):
        rules = load_policy(rules)
    verdicts = evaluate(rules, extract_metrics(doc), attack_norm(doc))
    return verdicts, 0 if all(v.passed for v in verdicts) else GATE_FAILED


def print_verdict(console: Console, verdicts: list[Verdict]) -> None:
    """The gate's last line, ``gate passed: N rules`` or ``gate failed: k of N rules: ...``, so a
    log says the verdict and not only the exit code."""
    failed = [v for v in verdicts if not v.passed]
    if failed:
        listed = "; ".join(f"{v.name} ({v.message})" for v in failed)
        console.print(
            f"[bold red]gate failed[/]: {len(failed)} of {len(verdicts)} rules: {escape(listed)}",
            highlight=False,
        )
    else:
        count = len(verdicts)
        console.print(f"[bold green]gate passed[/]: {count} rule{'' if count == 1 else 's'}", highlight=False)


def check_outputs(outputs: dict[str, str | None], inputs: list[Path]) -> None:
    """Before any work: every output writable, none over an input or another output, one stdout at most."""
    given = {option: target for option, target in outputs.items() if target is not None}
    if sum(1 for t in given.values() if t == "-") > 1:
        raise ConfigError(f"only one of {', '.join(given)} can be '-' (stdout)")
    files = {option: Path(t).resolve() for option, t in given.items() if t != "-"}
    if len(set(files.values())) < len(files):
        raise ConfigError(f"{', '.join(files)} must be different files")
    for option, target in given.items():
        check_output_target(target, inputs, option)


def write_ci(
    junit: str | None,
    markdown: str | None,
    cases: Sequence[Verdict | Row],
    suite: str,
    text: str,
    checks: Sequence[ci.Case] = (),
) -> None:
    """JUnit XML (the gate's cases, then the report's honesty ``checks`` in their own suite) and Markdown."""
    console = stderr_console()
    if junit is not None:
        ci.write_junit(junit, cases, suite, checks)
        if junit != "-":
            console.print(f"JUnit XML written to {junit}", markup=False, highlight=False)
    if markdown is not None:
        write_atomic(markdown, text)
        if markdown != "-":
            console.print(f"Markdown summary written to {markdown}", markup=False, highlight=False)


def gate_command(
    report: ReportArg,
    policy: Annotated[
        Path,
        typer.Option(
            "--policy",
            help="TOML file of gate rules: a \\[gate] table, or the rules at the top level.",
            show_default=False,
        ),
    ],
    junit: JunitOpt = None,
    markdown: MarkdownOpt = None,
    json: JsonOpt = None,
) -> None:
    """Check a report against a policy of thresholds; exit 1 if any rule fails."""
    console, timer = stderr_console(), Timer()
    check_outputs({"--json": json, "--junit": junit, "--markdown": markdown}, [report, policy])
    rules = load_policy(policy)
    doc = load_report(report)
    verdicts, code = gate_document(doc, rules)
    console.print(gate_table(verdicts, f"Release gate: {policy.name} on {report.name}"))
    print_warnings(console, [f"(in the report) {w}" for w in doc.get("warnings") or []])
    failed = [v for v in verdicts if not v.passed]
    print_verdict(console, verdicts)
    write_ci(
        junit,
        markdown,
        verdicts,
        f"medaudit gate {policy.name}",
        ci.markdown_summary(doc, verdicts),
        ci.check_cases(doc),
    )
    out = document(
        "gate",
        {"report": str(report), "policy": str(policy), "rules": [r.to_dict() for r in rules]},
        {
            "passed": code == 0,
            "failed": len(failed),
            "verdicts": [v.to_dict() for v in verdicts],
            "report": {"command": doc.get("command"), "schema": doc.get("schema")},
        },
        model=doc.get("model"),
        data=doc.get("data"),
        seed=doc.get("seed"),
        wall_time_s=timer.elapsed,
        warnings=list(doc.get("warnings") or []),
    )
    emit(console, json, out)
    if code:
        raise typer.Exit(code)


def compare_command(
    baseline: Annotated[
        Path, typer.Argument(help="Report of the released (baseline) model.", show_default=False)
    ],
    candidate: Annotated[Path, typer.Argument(help="Report of the candidate model.", show_default=False)],
    max_regression: Annotated[
        float,
        typer.Option(
            "--max-regression",
            min=0.0,
            help="How much worse a [0, 1]-scale metric may get (absolute, in its own units).",
            rich_help_panel=PANEL,
        ),
    ] = 0.02,
    allow: Annotated[
        list[str] | None,
        typer.Option(
            "--allow",
            help="Per-metric allowance METRIC=AMOUNT (repeatable), e.g. attack.robust_accuracy@1/255=0.05; also gates metrics not gated by default.",
            rich_help_panel=PANEL,
            show_default=False,
        ),
    ] = None,
    junit: JunitOpt = None,
    markdown: MarkdownOpt = None,
    json: JsonOpt = None,
) -> None:
    """Compare a candidate's report with a baseline's; exit 1 if any metric regressed beyond its allowance."""
    console, timer = stderr_console(), Timer()
    check_outputs({"--json": json, "--junit": junit, "--markdown": markdown}, [baseline, candidate])
    overrides = parse_allow(allow)
    base_doc, cand_doc = load_report(baseline), load_report(candidate)
    rows = compare(base_doc, cand_doc, max_regression, overrides, (str(baseline), str(candidate)))
    notes = comparability_warnings(base_doc, cand_doc)
    if not any(r.passed is not None for r in rows):
        notes.append("no metric was gated: the reports share no gateable metric with an allowance")
    console.print(ci.compare_table(rows, f"{baseline.name} (baseline) vs {candidate.name} (candidate)"))
    print_warnings(console, notes)
    failed = [r for r in rows if r.passed is False]
    gated = [r for r in rows if r.passed is not None]
    if failed:
        listed = "; ".join(f"{r.metric} ({r.message})" for r in failed)
        console.print(
            f"[bold red]regression[/]: {len(failed)} of {len(gated)} gated metrics: {escape(listed)}",
            highlight=False,
        )
    else:
        console.print(f"[bold green]no regression[/]: {len(gated)} gated metrics", highlight=False)
    write_ci(junit, markdown, rows, "medaudit compare", ci.compare_markdown(base_doc, cand_doc, rows))
    out = document(
        "compare",
        {
            "baseline": str(baseline),
            "candidate": str(candidate),
            "max_regression": max_regression,
            "allow": overrides,
        },
        {
            "passed": not failed,
            "regressions": len(failed),
            "rows": [r.to_dict() for r in rows],
            "baseline": {
                "model": base_doc.get("model"),
                "data": base_doc.get("data"),
                "seed": base_doc.get("seed"),
            },
        },
        model=cand_doc.get("model"),
        data=cand_doc.get("data"),
        seed=cand_doc.get("seed"),
        wall_time_s=timer.elapsed,
        warnings=notes,
    )
    emit(console, json, out)
    if failed:
        raise typer.Exit(GATE_FAILED)
