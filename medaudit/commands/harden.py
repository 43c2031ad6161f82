"""``medaudit harden``: fine-tune a copy of the model adversarially (PGD-AT, TRADES, IMA), write it
in every format it can be written in, and audit both models the same way, side by side."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from medaudit.audits.attack import AttackAudit, AttackOptions, Norm
from medaudit.audits.evaluation import EvalAudit, EvalOptions
from medaudit.commands.common import (
    JsonOpt,
    Timer,
    check_output_target,
    emit,
    prepare,
    print_warnings,
    stderr_console,
)
from medaudit.commands.progress import audit_prefix, progress_bar
from medaudit.commands.progress import context as progress_context
from medaudit.errors import ConfigError
from medaudit.options import setting, with_settings
from medaudit.settings import DataSettings, ModelSettings, RunSettings, Split

if TYPE_CHECKING:
    from medaudit.audits.base import Context
    from medaudit.sources import Prepared

PANEL = "Hardening"
SUFFIXES = (".pt", ".pt2", ".onnx", ".json", "_state_dict.pt", "_state_dict.json")
"""The files ``save_hardened`` may write next to ``--out STEM``."""


@dataclass(frozen=True)
class HardenOptions:
    """How to harden: ``medaudit harden --method ...``."""

    method: str = setting(
        "pgd-at", "pgd-at (Madry), trades or ima (increasing-margin, L2 or linf).", panel=PANEL
    )
    eps: str = setting("2/255", "Training budget in [0,1] pixel units (0.008 or 2/255).", panel=PANEL)
    norm: Norm = setting(Norm.linf, "Threat model of the training attack.", panel=PANEL)
    epochs: int | None = setting(
        None,
        "Epochs (default by training-set size: 10 under 2,000 images, 5 under 20,000, else 3).",
        panel=PANEL,
        min=1,
    )
    train_batch_size: int | None = setting(
        None, "Training batch size (default by training-set size: 64, 128 or 256).", panel=PANEL, min=2
    )
    lr: float = setting(1e-3, "AdamW learning rate.", panel=PANEL)
    steps: int = setting(5, "Attack steps per training batch.", panel=PANEL, min=1)
    beta: float | None = setting(
        None,
        "TRADES: weight of the KL term (default 6); IMA: weight of the adversarial loss (default 0.5).",
        panel=PANEL,
    )
    margin_step: float | None = setting(None, "IMA: margin expansion step (default eps/2).", panel=PANEL)
    margin_max: float | None = setting(None, "IMA: largest margin (default 2 eps).", panel=PANEL)
    train_limit: int | None = setting(
        None, "Train on a stratified, seeded subset of at most N training images.", panel=PANEL, min=2
    )
    checkpoint: Path | None = setting(
        None,
        "Save training state here after every epoch; a run with the same settings resumes from it.",
        panel=PANEL,
    )
    audit_eps: str = setting(
        "0.004,2/255,4/255", "Budgets of the before/after attack sweep (auto plan).", panel=PANEL, listed=True
    )


@with_settings(options=HardenOptions, model=ModelSettings, data=DataSettings, run_settings=RunSettings)
def harden_command(
    model: ModelSettings,
    data: DataSettings,
    run_settings: RunSettings,
    options: HardenOptions,
    out: Annotated[
        str,
        typer.Option(
            "--out",
            metavar="STEM",
            help="Stem of the hardened model's files: STEM.pt (TorchScript), .pt2, .onnx where export works, "
            "STEM.json (its card), STEM_state_dict.pt for built-in architectures.",
            rich_help_panel=PANEL,
        ),
    ],
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy", help="Gate rules: what the gate says for each model.", rich_help_panel=PANEL
        ),
    ] = None,
    json: JsonOpt = None,
) -> None:
    """Adversarially fine-tune a copy of the model on its training split (never the model itself),
    write it with a card, then audit both models the same way: clean metrics and the attack sweep."""
    from medaudit.attacks.plan import check_budgets, parse_eps
    from medaudit.data import load_data
    from medaudit.gate import load_policy
    from medaudit.harden.config import HardenConfig
    from medaudit.sources import data_spec, input_files

    console, timer = stderr_console(), Timer()
    batch_size, seed = run_settings.batch_size, data.seed
    stem = out_stem(out)
    if data.split is Split.train:
        raise ConfigError("harden trains on the train split: audit the models on --split test or val")
    budgets = parse_eps(options.eps)
    if len(budgets) != 1:
        raise ConfigError(f"--eps takes one training budget, got '{options.eps}'")
    eps = budgets[0]
    inputs = input_files(model.path, data.data)
    for target in [stem.with_name(stem.name + suffix) for suffix in SUFFIXES]:
        if json is not None and json != "-" and Path(json).resolve() == target.resolve():
            raise ConfigError(
                f"--json {json} is the hardened model's card (--out {out}): choose another name"
            )
        if target.exists():
            raise ConfigError(f"--out {out}: {target} exists; choose another stem (nothing is overwritten)")
        check_output_target(target, inputs, "--out")
    if options.checkpoint is not None:
        check_output_target(options.checkpoint, inputs, "--checkpoint")
    rules = load_policy(policy) if policy is not None else None
    context = progress_context(console, batch_size, seed, data.data)
    settings = {
        "method": options.method, "eps": eps, "norm": options.norm.value, "epochs": options.epochs,
        "batch_size": options.train_batch_size, "lr": options.lr, "steps": options.steps, "beta": options.beta,
        "margin_step": options.margin_step, "margin_max": options.margin_max, "limit": options.train_limit,
        "seed": seed, "checkpoint": None if options.checkpoint is None else str(options.checkpoint),
    }  # fmt: skip
    given: dict[str, Any] = {k: v for k, v in settings.items() if v is not None}
    check_budgets(parse_eps(options.audit_eps), "linf")
    HardenConfig(**given)  # every setting checked before loading
    attack = AttackOptions(eps=options.audit_eps)
    AttackAudit().check(attack, context)  # a valid request imports torch: after the checks
    from medaudit.harden import harden, save_hardened
    from medaudit.models import bind_model

    run = prepare(model, data, run_settings, json_target=json)
    print_warnings(console, run.warnings, run.model.info.notes)
    train = load_data(data_spec(run.model, replace(data, split=Split.train, limit=None)))
    if train.channels != run.data.channels or train.size != run.data.size:
        raise ConfigError("the training split does not match the audited split in channels or size")
    bind_model(run.model, train)
    config = HardenConfig.for_data(train.n, **given)
    used = train.n if config.limit is None else min(config.limit, train.n)
    total = config.epochs * math.ceil(used / config.batch_size)
    with progress_bar(console, f"hardening ({config.method}, eps {config.eps:.4g})", total) as advance:
        done = 0

        def report(step: int, steps: int, clean: float, adversarial: float) -> None:
            nonlocal done
            advance(step - done, f"clean loss {clean:.3f}, adversarial loss {adversarial:.3f}")
            done = step

        result = harden(run.model, train, config, progress=report)
    written = save_hardened(result, run.model, train, stem)
    for fmt, where in written.items():
        console.print(f"{fmt}: {where}", markup=False, highlight=False)
    with audit_prefix("input model", 1, 2):
        before = _audit(run, context, attack)
    with audit_prefix("hardened", 2, 2):
        after = _audit(replace(run, model=result.model), context, attack)
    verdicts = {
        name: _gate(rules, run, side) for name, side in (("before", before), ("after", after))
    } if rules is not None else None  # fmt: skip
    console.print(_comparison(before, after, verdicts, config.method))
    results = {
        "training": result.to_dict(), "written": written, "before": before, "after": after,
        "gate": verdicts,
    }  # fmt: skip
    doc = run.document(
        "harden",
        {**run.config, "batch_size": batch_size, "harden": config.to_dict(), "audit_eps": options.audit_eps},
        results,
        seed=seed,
        wall_time_s=timer.elapsed,
        warnings=run.warnings,
    )
    emit(console, json, doc)


def out_stem(text: str) -> Path:
    """``--out`` as a file stem, checked before any work: a folder ('', '.', '..', 'dir/', an
    existing folder) would otherwise crash or write hidden files such as '...pt' beside it."""
    stem = Path(text)
    if text.endswith("/") or stem.name in ("", "..") or stem.is_dir():
        raise ConfigError(
            f"--out {text or repr(text)} is a folder: give a file stem such as out/model_hardened"
        )
    return stem


def _audit(run: Prepared, context: Context, attack: AttackOptions) -> dict[str, Any]:
    """Clean metrics and the attack sweep of one model, as ``medaudit run`` records them."""
    _, clean = EvalAudit().run(run, EvalOptions(), context)
    _, sweep = AttackAudit().run(run, attack, context)
    return {"eval": clean.to_dict(), "attack": sweep.to_dict()}


def _gate(rules: Any, run: Prepared, sections: dict[str, Any]) -> list[dict[str, Any]]:
    from medaudit.commands.gate import gate_document

    doc = run.document("run", {}, sections, seed=0, wall_time_s=0.0, warnings=[])
    return [v.to_dict() for v in gate_document(doc, rules)[0]]


def _comparison(
    before: dict[str, Any], after: dict[str, Any], verdicts: dict[str, Any] | None, method: str
) -> Table:
    """One row per headline number, the input model against the hardened one."""
    from medaudit.audits import audits

    table = Table(title=f"Before and after hardening ({method})", title_justify="left")
    for column in ("audit", "metric", "input model", "hardened", "change"):
        table.add_column(
            column, justify="right" if column in ("input model", "hardened", "change") else "left"
        )
    for name in before:
        rows = zip(audits.get(name).summary(before[name]), audits.get(name).summary(after[name]), strict=True)
        for old, new in rows:
            change = ""
            if isinstance(old.value, float) and isinstance(new.value, float):
                change = f"{new.value - old.value:+.{old.digits}f}"
            table.add_row(name, old.label, old.text, new.text, change)
    if verdicts is not None:
        passed = {side: all(v["passed"] for v in found) for side, found in verdicts.items()}
        table.add_row("gate", "verdict", *("pass" if passed[s] else "FAIL" for s in ("before", "after")), "")
    return table
