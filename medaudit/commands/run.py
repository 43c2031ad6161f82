"""``medaudit run AUDIT.toml`` (the whole audit from one file, one report) and ``medaudit init``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from medaudit import sources
from medaudit.audit_config import ARCH_SOURCE, SAMPLE_MODEL, AuditFile, example_for, read_audit_file
from medaudit.audits import audits
from medaudit.audits.base import Context, report_sections
from medaudit.commands.common import (
    RUN_PANEL,
    JsonOpt,
    ShardOpt,
    Timer,
    check_output_target,
    emit,
    print_warnings,
    refuse_with_shard,
    stderr_console,
)
from medaudit.commands.gate import (
    JunitOpt,
    MarkdownOpt,
    check_outputs,
    gate_document,
    gate_table,
    print_verdict,
    write_ci,
)
from medaudit.commands.merge import merge_documents, show_merged
from medaudit.commands.progress import audit_prefix, progress_bar
from medaudit.commands.progress import context as progress_context
from medaudit.errors import GATE_FAILED, ConfigError, MedauditError
from medaudit.gate import load_policy
from medaudit.gate.metrics import eps_matches, parse_name
from medaudit.gate.policy import Rule, Verdict, policy_table
from medaudit.options import in_file_words
from medaudit.report import ci, tables
from medaudit.report.atomic import write_atomic
from medaudit.report.html import write_html
from medaudit.sources import Prepared, input_files


def _prepare(audit: AuditFile, shard: str | None) -> Prepared:
    audit.check_paths()  # a missing file's error says the audit file's paths are relative to it
    # --json is checked with the other outputs by run_command; [model] arch is looked up in the
    # audit file's folder first, as --arch is in the current folder
    return sources.prepare(
        audit.model,
        audit.data,
        audit.run,
        shard=shard,
        arch_source=ARCH_SOURCE,
        arch_search=audit.path.parent,
    )


@contextmanager
def _file_words(audit: AuditFile) -> Iterator[None]:
    """Errors in the audit file's words: ``[attack] eps`` where the library says ``--eps``."""
    sections = {"model": type(audit.model), "data": type(audit.data), "run": type(audit.run)}
    sections |= {name: type(options) for name, options in audit.audits.items()}
    try:
        yield
    except MedauditError as exc:
        message = in_file_words(str(exc), sections)
        if message == str(exc):
            raise
        raise type(exc)(f"{audit.path}: {message}") from exc


def _check_options(audit: AuditFile, context: Context, shard: str | None) -> None:
    """Every audit's options, checked before the model and data are loaded (what needs them,
    such as the attack plan for a black-box model, is checked when they are)."""
    for name, options in audit.audits.items():
        entry = audits.get(name)
        if shard is not None and entry.shardable is not None:
            raise ConfigError(
                f"{entry.shardable}: run it without --shard, from an audit file without [{name}]"
            )
        entry.check(options, context)


def _check_gate(rules: list[Rule], audit: AuditFile, policy: Path | None) -> None:
    """Before the model is loaded: every rule names a metric of an audit the file runs (the audit
    that declares it in the registry) and, when eps-indexed, an eps and norm of that audit's
    sweep, so a rule that cannot be judged fails now rather than after the whole audit."""
    from medaudit.attacks.plan import parse_eps

    where = f"policy {policy}" if policy is not None else f"{audit.path}: [gate]"
    for rule in rules:
        name = parse_name(rule.metric)
        command = name.pattern.split(".", 1)[0]  # the audit whose metrics declare this name
        if command not in audit.audits:
            raise ConfigError(
                f"{where} rule '{rule.metric}' needs the {command} audit, which {audit.path} does not run: "
                f"add a [{command}] section or drop the rule"
            )
        options = audit.audits[command]
        if name.eps is not None:
            swept = parse_eps(options.eps)
            if not any(eps_matches(name.eps, eps) for eps in swept):
                raise ConfigError(
                    f"{where} rule '{rule.metric}': the {command} sweep does not use eps {name.eps:g} "
                    f'(eps = "{options.eps}"): add it to eps or change the rule'
                )
        if name.norm is not None and name.norm != options.norm.value:
            raise ConfigError(
                f"{where} rule '{rule.metric}' asks for the {name.norm} norm but the {command} sweep "
                f"uses {options.norm.value}: change the rule or the norm"
            )


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
    parts: Annotated[
        int | None,
        typer.Option(
            "--parts",
            min=1,
            help="Run the audit as N shards in parallel on Ray (with --ray) and merge them into the one report.",
            rich_help_panel=RUN_PANEL,
        ),
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="Ray cluster for --parts: 'local' starts one on this machine, 'auto' joins the running one, "
            "or ray://HOST:PORT. Needs the ray extra (pip install 'medaudit\\[ray]').",
            rich_help_panel=RUN_PANEL,
        ),
    ] = None,
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
    gate_source = policy if policy is not None else audit.gate
    rules = (
        load_policy(gate_source) if gate_source is not None else None
    )  # typos fail now, not after the audit
    if rules is not None:
        with _file_words(audit):
            _check_gate(rules, audit, policy)
    if parts is not None or ray is not None:
        _check_parts(parts, ray, shard, audit)
        assert parts is not None and ray is not None
        from medaudit.scaleout import run_parts

        with _file_words(audit):
            context = progress_context(
                console, audit.run.batch_size, audit.data.seed, audit.data.data, sharded=True
            )
            _check_options(audit, context, "0/1")  # the parts are shards
        docs = run_parts(audit_file, policy, parts, ray, progress_bar)
        doc, verdicts = merge_documents(docs)
        doc["wall_time_s"] = round(timer.elapsed, 3)
        show_merged(console, doc, verdicts)
        _outputs(console, doc, verdicts, audit_file, json, html, junit, markdown, {})
        return
    doc, run, states = _audit(audit_file, audit, shard, console, timer)
    if shard is not None:  # the gate judges the merged report (medaudit merge), not a part
        emit(console, json, _as_part(doc, run, states, gate_source))
        return
    verdicts = gate_document(doc, rules)[0] if rules is not None else []
    doc["gate"] = [v.to_dict() for v in verdicts] if rules is not None else None
    if rules is not None:
        console.print(gate_table(verdicts))
    pictures = {
        caption: png
        for name, state in states.items()
        for caption, png in (audits.get(name).figures(run, state).items() if html is not None else ())
    }
    _outputs(console, doc, verdicts, audit_file, json, html, junit, markdown, pictures)


def _audit(
    audit_file: Path, audit: AuditFile, shard: str | None, console: Console, timer: Timer
) -> tuple[dict[str, Any], Prepared, dict[str, Any]]:
    """Every audit of the file on the model loaded once: the report (without its gate), the
    prepared sources and each audit's result."""
    batch_size, seed = audit.run.batch_size, audit.data.seed
    context = progress_context(console, batch_size, seed, audit.data.data, sharded=shard is not None)
    with _file_words(audit):
        _check_options(audit, context, shard)
        run = _prepare(audit, shard)
        print_warnings(console, run.warnings, run.model.info.notes)
        states: dict[str, Any] = {}
        configs: dict[str, Any] = {}
        for index, (name, options) in enumerate(audit.audits.items(), 1):
            entry = audits.get(name)
            with audit_prefix(name, index, len(audit.audits)):
                configs[name], states[name] = entry.run(run, options, context)
            tables.show(console, entry.tables(states[name].to_dict(), run.data.describe()))
    sections, warnings = report_sections(states, run.warnings)
    console.print(tables.run_summary_table(sections, f"Audit summary: {run.data.describe()}"))
    doc = run.document(
        "run",
        {**run.config, "batch_size": batch_size, "audit_file": str(audit_file), "audits": configs},
        sections,
        seed=seed,
        wall_time_s=timer.elapsed,
        warnings=warnings,
    )
    return doc, run, states


def audit_part(audit_file: Path, policy: Path | None, shard: str) -> dict[str, Any]:
    """The JSON of ``medaudit run AUDIT_FILE --shard I/N`` (what a scale-out worker computes)."""
    console, timer = stderr_console(), Timer()
    audit = read_audit_file(audit_file)
    gate_source = policy if policy is not None else audit.gate
    doc, run, states = _audit(audit_file, audit, shard, console, timer)
    return _as_part(doc, run, states, gate_source)


def _as_part(doc: dict[str, Any], run: Prepared, states: dict[str, Any], gate_source: Any) -> dict[str, Any]:
    """A shard's report: no verdict of its own, the state and the gate rules ``merge`` needs."""
    doc["gate"] = None
    table = policy_table(gate_source) if isinstance(gate_source, Path) else gate_source
    run.attach_state(doc, states, gate=table)
    return doc


def _check_parts(parts: int | None, ray: str | None, shard: str | None, audit: AuditFile) -> None:
    if parts is None or ray is None:
        raise ConfigError("--parts N and --ray ADDRESS go together: the parts run as Ray tasks")
    if shard is not None:
        raise ConfigError("--parts cannot be combined with --shard: --parts runs every shard itself")


def _outputs(
    console: Console,
    doc: dict[str, Any],
    verdicts: list[Verdict],
    audit_file: Path,
    json: str | None,
    html: str | None,
    junit: str | None,
    markdown: str | None,
    pictures: dict[str, bytes],
) -> None:
    """The report's files, then the exit code of the gate verdict."""
    emit(console, json, doc)
    if html is not None:
        write_html(html, doc, pictures)
        console.print(f"HTML report written to {html}", markup=False, highlight=False)
    write_ci(
        junit,
        markdown,
        verdicts,
        f"medaudit run {audit_file.name}",
        ci.markdown_summary(doc, verdicts),
        ci.check_cases(doc),
    )
    if doc.get("gate") is not None:
        print_verdict(console, verdicts)
    if not all(v.passed for v in verdicts):
        raise typer.Exit(GATE_FAILED)


def init_command(
    path: Annotated[Path, typer.Argument(help="Where to write the example audit file.")] = Path("audit.toml"),
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
) -> None:
    """Write a commented example audit file for `medaudit run`."""
    if path.suffix.lower() != ".toml":  # so that --force can never replace a model or data file
        raise ConfigError(f"init writes a .toml audit file: {path} is not one, give e.g. audit.toml")
    if path.exists() and not force:
        raise ConfigError(f"{path} exists: choose another name or pass --force to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # init sub/audit.toml makes sub/
    except OSError as exc:
        raise ConfigError(
            f"init {path}: cannot create folder {path.parent} ({exc.strerror or exc})"
        ) from None
    check_output_target(str(path), [], "init")
    write_atomic(path, example_for(path))  # its model path works from the file's folder
    console = stderr_console()
    console.print(f"example audit file written to {path}; edit it, then: medaudit run {path}", markup=False)
    if not Path(SAMPLE_MODEL).is_file():  # outside a medaudit checkout: the example's model is not here
        console.print(
            f"note: its [model] path names the sample model {SAMPLE_MODEL}, which is not under the current folder: "
            "set it to your model file",
            markup=False,
            highlight=False,
        )
