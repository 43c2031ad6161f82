"""``attack``: worst-case robust accuracy per eps, its honesty checks and the robustness curve."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar

from rich.console import RenderableType

from medaudit.audits.base import EPS, Audit, Context, MetricInfo, SummaryRow, number
from medaudit.errors import ConfigError
from medaudit.options import setting

if TYPE_CHECKING:
    from medaudit.attacks.checks import AuditedSweep
    from medaudit.sources import Prepared

PANEL = "Attack"
DEFAULT_EPS = "0.5/255,1/255,2/255,4/255,8/255"


class Norm(str, Enum):
    linf = "linf"
    l2 = "l2"


@dataclass(frozen=True)
class AttackOptions:
    """The attack sweep's settings: ``--eps`` ... on the command line, ``[attack]`` in the audit file."""

    eps: str = setting(
        DEFAULT_EPS,
        "Budget(s) in [0,1] pixel units: 0.004, a list 0.001,0.002 or fractions 1/255,2/255. "
        "With --margin, the largest is the search limit.",
        panel=PANEL,
        listed=True,
    )
    norm: Norm = setting(Norm.linf, "Threat model.", panel=PANEL)
    attack: str = setting(
        "auto",
        "auto (strongest ensemble for the model) or a comma list of: fgsm, bim, pgd, pgd-cw, apgd-ce, "
        "apgd-dlr, square.",
        panel=PANEL,
    )
    steps: int | None = setting(
        None, "Iterations per attack (default: each attack's own).", panel=PANEL, min=1
    )
    step_size: float | None = setting(
        None, "PGD/BIM step in [0,1] units (default eps/4; BIM eps/10).", panel=PANEL
    )
    restarts: int | None = setting(
        None, "Random restarts; the worst case over all of them counts.", panel=PANEL, min=1
    )
    queries: int | None = setting(None, "Square attack: queries per sample.", panel=PANEL, min=1)

    @property
    def effort(self) -> dict[str, Any]:
        """The effort flags as ``build_config`` takes them (None: the attack's own default)."""
        return {
            "steps": self.steps,
            "step_size": self.step_size,
            "restarts": self.restarts,
            "queries": self.queries,
        }


def worst_case(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The sweep's worst-case records (over every attack and restart), by increasing eps."""
    sweep = results.get("sweep")
    records = sweep if isinstance(sweep, list) else []
    worst = [r for r in records if isinstance(r, dict) and r.get("attack") == "worst-case"]
    return sorted(worst, key=lambda r: number(r.get("eps")))


def eps_label(record: dict[str, Any]) -> str:
    eps = number(record.get("eps"))
    return f"{record.get('norm', '')} eps {eps:.4g} ({eps * 255:.2g}/255)"


class AttackAudit(Audit):
    name = "attack"
    Options = AttackOptions
    title = "Adversarial robustness"
    help = "Adversarial robustness: worst case per sample over attacks and restarts, plus honesty checks."
    metrics: ClassVar[dict[str, MetricInfo]] = {
        "clean_accuracy": MetricInfo("accuracy on the attacked samples before attack", True, True),
        **{
            f"clean_accuracy_ci_{side}": MetricInfo(
                f"{side} end of the bootstrap interval of clean accuracy (results.clean_accuracy_ci)",
                True,
                True,
            )
            for side in ("low", "high")
        },
        f"robust_accuracy@{EPS}": MetricInfo(
            "worst-case robust accuracy at EPS (sweep record with attack 'worst-case')",
            True,
            True,
        ),
        **{
            f"robust_accuracy_ci_{side}@{EPS}": MetricInfo(
                f"{side} end of the bootstrap interval of worst-case robust accuracy at EPS "
                "(worst-case robust_accuracy_ci)",
                True,
                True,
            )
            for side in ("low", "high")
        },
        f"auc@{EPS}": MetricInfo("AUC under the worst-case attack at EPS (auc_under_attack)", True, True),
        f"success_rate@{EPS}": MetricInfo(
            "share of clean-correct samples broken at EPS (worst-case attack_success_rate)", False, True
        ),
        "checks_failed": MetricInfo(
            "number of failed honesty checks (results.checks); gate with '== 0'", False, False
        ),
        "curve_area": MetricInfo(
            "area under worst-case robust accuracy vs eps, divided by the largest eps (curve.normalised_area)",
            True,
            True,
        ),
    }

    def extract(self, results: dict[str, Any]) -> dict[str, float]:
        out = {"attack.clean_accuracy": number(results.get("clean_accuracy"))}
        out.update(_interval_ends(results, "clean_accuracy", "attack.clean_accuracy"))
        for record in worst_case(results):
            eps = number(record.get("eps"))
            if math.isnan(eps):
                continue
            tag = format(eps, "g")
            out[f"attack.robust_accuracy@{tag}"] = number(record.get("robust_accuracy"))
            ends = _interval_ends(record, "robust_accuracy", "attack.robust_accuracy")
            out.update({f"{key}@{tag}": value for key, value in ends.items()})
            out[f"attack.auc@{tag}"] = number(record.get("auc_under_attack"))
            out[f"attack.success_rate@{tag}"] = number(record.get("attack_success_rate"))
        if isinstance(results.get("checks"), list):
            out["attack.checks_failed"] = float(
                sum(1 for c in results["checks"] if isinstance(c, dict) and c.get("passed") is not True)
            )
        if isinstance(results.get("curve"), dict):
            out["attack.curve_area"] = number(results["curve"].get("normalised_area"))
        return out

    def summary(self, results: dict[str, Any]) -> list[SummaryRow]:
        rows = [SummaryRow("clean accuracy", results.get("clean_accuracy"))]
        rows += [
            SummaryRow(f"robust accuracy, {eps_label(r)}", r.get("robust_accuracy"))
            for r in worst_case(results)
        ]
        if isinstance(results.get("curve"), dict):
            rows.append(
                SummaryRow("normalised area under the curve", results["curve"].get("normalised_area"))
            )
        checks = results.get("checks")
        if isinstance(checks, list):
            passed = sum(1 for c in checks if isinstance(c, dict) and c.get("passed") is True)
            failed = len(checks) - passed
            rows.append(
                SummaryRow(
                    "honesty checks",
                    f"{passed} of {len(checks)} passed" + (f", {failed} FAILED" if failed else ""),
                )
            )
        return rows

    def html(self, results: dict[str, Any], data_label: str) -> str | None:
        from medaudit.report.html import attack_section

        return attack_section(results, f"Robustness: {data_label}")

    def tables(self, results: dict[str, Any], data_label: str) -> list[RenderableType]:
        """The sweep and its honesty checks, the planner's notes, and a failed check's alarm."""
        from rich.text import Text

        from medaudit.report.tables import attack_tables, note_lines

        norms = [r.get("norm") for r in worst_case(results)]
        title = f"Robustness: {data_label}" + (f", {norms[0]}" if norms and norms[0] else "")
        shown: list[RenderableType] = [
            *attack_tables(results, results["checks"], title),
            *note_lines(results),
        ]
        alarm = checks_alarm(results)
        if alarm is not None:
            shown.append(Text(f"⚠ {alarm}", style="bold red"))
        return shown

    def check(self, options: AttackOptions, context: Context) -> None:
        from medaudit.attacks.plan import check_request

        if options.step_size is not None and not (math.isfinite(options.step_size) and options.step_size > 0):
            raise ConfigError(f"--step-size must be positive, got {options.step_size}")
        check_request(
            options.attack,
            options.eps,
            options.norm.value,
            context.batch_size,
            context.seed,
            **options.effort,
        )

    def run(
        self, prepared: Prepared, options: AttackOptions, context: Context
    ) -> tuple[dict[str, Any], AuditedSweep]:
        return self.sweep(prepared, options, context)

    def sweep(
        self, prepared: Prepared, options: AttackOptions, context: Context, keep_adversarial: bool = False
    ) -> tuple[dict[str, Any], AuditedSweep]:
        """The sweep and its honesty checks; ``keep_adversarial`` keeps the images (``--save-adv``)."""
        from medaudit.attacks import run_attacks
        from medaudit.attacks.checks import AuditedSweep, run_checks
        from medaudit.attacks.plan import build_config

        model, data = prepared.model, prepared.data
        config, notes = build_config(
            options.attack, model, options.eps, options.norm.value, context.batch_size, context.seed,
            **options.effort,
        )  # fmt: skip
        with context.progress("attacking", data.n * len(config.eps) * len(config.attacks)) as advance:
            result = run_attacks(model, data, config, advance, keep_adversarial=keep_adversarial)
        with context.progress("honesty checks", None):
            audited = AuditedSweep(result, run_checks(model, data, result), tuple(notes))
        record = {
            "attacks": list(config.attacks),
            "eps": list(config.eps),
            "norm": config.norm,
            "params": config.params,
            "probe": config.probe,
        }
        return record, audited


def _interval_ends(results: dict[str, Any], metric: str, prefix: str) -> dict[str, float]:
    """``<prefix>_ci_low``/``_ci_high`` from ``results[<metric>_ci]``; nothing for a report
    written before the intervals (a rule on them then names the metric as absent), NaN ends for
    an interval that is null."""
    if f"{metric}_ci" not in results:
        return {}
    interval = results[f"{metric}_ci"]
    ends = interval if isinstance(interval, list) and len(interval) == 2 else [None, None]
    return {f"{prefix}_ci_{side}": number(end) for side, end in zip(("low", "high"), ends, strict=True)}


def failed_checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The honesty checks of attack ``results`` that did not pass (anything but ``passed: true``)."""
    checks = results.get("checks")
    if not isinstance(checks, list):
        return []
    return [
        c if isinstance(c, dict) else {}
        for c in checks
        if not (isinstance(c, dict) and c.get("passed") is True)
    ]


def checks_alarm(results: dict[str, Any]) -> str | None:
    """One line saying which honesty checks failed, shown wherever a gate failure would be seen
    (console, HTML header, Markdown comment, JUnit); None when every check passed."""
    failed = failed_checks(results)
    if not failed:
        return None
    names = ", ".join(str(c.get("check", "?")) for c in failed)
    count = f"{len(failed)} honesty check{'s' if len(failed) > 1 else ''} failed"
    return f"{count}: {names} — robust accuracy may be overstated"
