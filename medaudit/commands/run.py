"""``medaudit run AUDIT.toml`` (the whole audit from one file, one report) and ``medaudit init``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from medaudit.attacks.checks import AuditedSweep
from medaudit.audit_config import ARCH_SOURCE, AuditFile, example_for, read_audit_file
from medaudit.audits.attack import AttackOptions
from medaudit.audits.base import NoOptions
from medaudit.audits.confounders import ProbeOptions
from medaudit.audits.intrinsic import IntrinsicOptions
from medaudit.audits.shift import ShiftOptions
from medaudit.commands.attack import check_options as check_attack_options
from medaudit.commands.attack import sweep_section
from medaudit.commands.common import (
    JsonOpt,
    Prepared,
    ShardOpt,
    Timer,
    check_output_target,
    emit,
    input_files,
    prepare,
    print_warnings,
    refuse_with_shard,
    stderr_console,
)
from medaudit.commands.confounders import confounders_section, positive_index, probe_config
from medaudit.commands.gate import JunitOpt, MarkdownOpt, check_outputs, gate_document, gate_table, write_ci
from medaudit.commands.intrinsic import intrinsic_config
from medaudit.commands.progress import audit_prefix, progress_bar, stage_status
from medaudit.commands.shift import check_options as check_shift_options
from medaudit.commands.shift import shift_config, shift_section
from medaudit.confounders.probe import ProbeResult
from medaudit.errors import ConfigError
from medaudit.evaluate import EvalConfig, EvalResult, evaluate
from medaudit.gate import load_policy
from medaudit.gate.policy import policy_table
from medaudit.intrinsic import run_intrinsic
from medaudit.intrinsic.audit import IntrinsicResult
from medaudit.report import ci, tables
from medaudit.report.atomic import write_atomic
from medaudit.report.html import write_html
from medaudit.shift.benchmark import ShiftResult


def _prepare(audit: AuditFile, shard: str | None) -> Prepared:
    audit.check_paths()  # a missing file's error says the audit file's paths are relative to it
    # json_target None: checked with the other outputs by run_command; [model] arch is looked up
    # in the audit file's folder first, as --arch is in the current folder
    return prepare(
        audit.model,
        audit.data,
        audit.run,
        json_target=None,
        shard=shard,
        arch_source=ARCH_SOURCE,
        arch_search=audit.path.parent,
    )


def _eval(run: Prepared, options: NoOptions, batch_size: int) -> tuple[dict[str, Any], EvalResult]:
    console = stderr_console()
    with progress_bar(console, "evaluating", run.data.n) as advance:
        result = evaluate(run.model, run.data, EvalConfig(batch_size=batch_size), advance)
    tables.show(console, tables.audit_tables("eval", result.to_dict(), run.data.describe()))
    return {}, result


def _attack(run: Prepared, options: AttackOptions, batch_size: int, seed: int) -> tuple[dict, AuditedSweep]:
    _, config, audited, _ = sweep_section(run, options, batch_size, seed)
    return config, audited


def _shift(run: Prepared, options: ShiftOptions, batch_size: int, seed: int) -> tuple[dict, ShiftResult]:
    config = shift_config(run.data, options, seed, batch_size)
    result, _ = shift_section(run, config)
    return config.to_dict(), result


def _confounders(
    run: Prepared, options: ProbeOptions, batch_size: int, seed: int
) -> tuple[dict, ProbeResult]:
    positive = positive_index(run.data, options.positive_class)
    config = replace(probe_config(options, batch_size, seed), positive_class=positive)
    result, _ = confounders_section(run, config)
    return config.to_dict(), result


def _intrinsic(
    run: Prepared, options: IntrinsicOptions, batch_size: int, seed: int
) -> tuple[dict, IntrinsicResult]:
    config = intrinsic_config(options, batch_size, seed)
    console = stderr_console()
    with stage_status(console) as update:
        result = run_intrinsic(run.data, run.model, config, update)
    tables.show(console, tables.audit_tables("intrinsic", result.to_dict(), run.data.describe()))
    return config.to_dict(), result


RUNNERS: dict[str, Callable[[Prepared, Any, int, int], tuple[dict[str, Any], Any]]] = {
    "eval": lambda run, options, batch_size, seed: _eval(run, options, batch_size),
    "attack": _attack,
    "shift": _shift,
    "confounders": _confounders,
    "intrinsic": _intrinsic,
}
"""How ``run`` runs each audit: (prepared, options, batch size, seed) -> (config record, result)."""


def _check_options(audit: AuditFile) -> None:
    """Every audit's options, checked before the model and data are loaded (what needs them,
    such as the attack plan for a black-box model, is checked when they are)."""
    batch_size, seed = audit.run.batch_size, audit.data.seed
    for name, options in audit.audits.items():
        if name not in RUNNERS:
            raise ConfigError(
                f"{audit.path}: [{name}] cannot run from an audit file yet: use `medaudit {name}`"
            )
        if name == "attack":
            check_attack_options(options, batch_size, seed)
        elif name == "shift":
            check_shift_options(options, audit.data.data)
        elif name == "confounders":
            probe_config(options, batch_size, seed)
        elif name == "intrinsic":
            intrinsic_config(options, batch_size, seed)


def run_command(
    audit_file: Annotated[
        Path, typer.Argument(help="The audit file (TOML); `medaudit init` writes an example.")
    ],
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy", help="Gate rules from this TOML file instead of the audit file's \\[gate] table."
        ),
    ] = None,
    html: Annotated[
        str | None, typer.Option("--html", help="Write a self-contained HTML report (no network needed).")
    ] = None,
    junit: JunitOpt = None,
    markdown: MarkdownOpt = None,
    shard: ShardOpt = None,
    json: JsonOpt = None,
) -> None:
    """The whole audit from one file: model and data loaded once, every audit in it, one report, the gate.

    Exit code 0 when every gate rule holds (or there is no gate), 1 when one fails; 2-4 and 130/143
    mean the audit did not complete (README, "Exit codes and errors").
    """
    console, timer = stderr_console(), Timer()
    audit = read_audit_file(audit_file)
    inputs = [audit_file, *input_files(audit.model.path, audit.data.data), *([policy] if policy else [])]
    check_outputs({"--json": json, "--html": html, "--junit": junit, "--markdown": markdown}, inputs)
    refuse_with_shard(shard, html=html, junit=junit, markdown=markdown)
    if shard is not None and "intrinsic" in audit.audits:
        raise ConfigError(
            "the intrinsic audit needs every image at once (all pairs): "
            "run it without --shard, from an audit file without [intrinsic]"
        )
    gate_source = policy if policy is not None else audit.gate
    rules = (
        load_policy(gate_source) if gate_source is not None else None
    )  # typos fail now, not after the audit
    _check_options(audit)
    run = _prepare(audit, shard)
    print_warnings(console, run.warnings)
    batch_size, seed = audit.run.batch_size, audit.data.seed
    states: dict[str, Any] = {}
    configs: dict[str, Any] = {}
    for index, (name, options) in enumerate(audit.audits.items(), 1):
        with audit_prefix(name, index, len(audit.audits)):
            configs[name], states[name] = RUNNERS[name](run, options, batch_size, seed)
    sections, warnings = run_sections(states, run.warnings)
    console.print(tables.run_summary_table(sections, f"Audit summary: {run.data.describe()}"))
    doc = run.document(
        "run",
        {**run.config, "batch_size": batch_size, "audit_file": str(audit_file), "audits": configs},
        sections,
        seed=seed,
        wall_time_s=timer.elapsed,
        warnings=warnings,
    )
    if shard is not None:  # the gate judges the merged report (medaudit merge), not a part
        doc["gate"] = None
        table = policy_table(gate_source) if isinstance(gate_source, Path) else gate_source
        run.attach_state(doc, states, gate=table)
        emit(console, json, doc)
        return
    verdicts, code = gate_document(doc, rules) if rules is not None else ([], 0)
    doc["gate"] = [v.to_dict() for v in verdicts] if rules is not None else None
    if rules is not None:
        console.print(gate_table(verdicts))
    emit(console, json, doc)
    if html is not None:
        write_html(html, doc, _example_images(run, sections, configs))
        console.print(f"HTML report written to {html}", markup=False, highlight=False)
    write_ci(
        junit,
        markdown,
        verdicts,
        f"medaudit run {audit_file.name}",
        ci.markdown_summary(doc, verdicts),
        ci.check_cases(doc),
    )
    if code:
        raise typer.Exit(code)


def run_sections(states: dict[str, Any], base_warnings: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Each audit's JSON section from its result, and the report's warnings (also used by merge)."""
    sections = {name: state.to_dict() for name, state in states.items()}
    warnings = list(base_warnings)
    for state in states.values():
        warnings += state.warnings() if hasattr(state, "warnings") else []
    return sections, warnings


def _example_images(run: Prepared, sections: dict[str, Any], configs: dict[str, Any]) -> dict[str, bytes]:
    """Pictures for the HTML report that the JSON cannot hold: image 0 under every corruption."""
    if "shift" not in sections:
        return {}
    from medaudit.report.figures import corruption_grid_png
    from medaudit.shift.corrupt import apply_uint8, param_source

    config = configs["shift"]
    clean = run.data.uint8_images(0, 1).permute(0, 2, 3, 1).numpy()
    rows = {
        name: [
            apply_uint8(
                clean, name, s, config["seed"], source=param_source(name, config["params"], None),
                mode=config["mode"], indices=[0],
            )[0]
            for s in config["severities"]
        ]
        for name in config["corruptions"]
    }  # fmt: skip
    title = f"{run.data.describe()}: image 0 under each corruption ({config['mode']})"
    return {"corruption grid": corruption_grid_png(clean[0], rows, title)}


def init_command(
    path: Annotated[Path, typer.Argument(help="Where to write the example audit file.")] = Path("audit.toml"),
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
) -> None:
    """Write a commented example audit file for `medaudit run`."""
    if path.exists() and not force:
        raise ConfigError(f"{path} exists: choose another name or pass --force to replace it")
    check_output_target(str(path), [], "init")
    write_atomic(path, example_for(path))  # its model path works from the file's folder
    stderr_console().print(f"example audit file written to {path}; edit it, then: medaudit run {path}")
