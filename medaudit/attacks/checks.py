"""Honesty checks on a finished sweep (Carlini et al. 2019, AutoAttack's flags).

Each check re-attacks a few drawn samples independently of the sweep and keeps
per-sample outcomes (``CheckSamples``); the verdicts ``{"check", "passed",
"detail"}`` are counted from those in ``AuditedSweep.to_dict``, so a sharded
audit merges to the same verdicts. A failed check becomes a loud report warning
naming the likely cause. Checks cost a few extra attack runs on about
``CHECK_SAMPLES`` images, never a second sweep.

"Monotone" and "more effort" judge the user's first attack; "unbounded" judges the
model, with its own strong attack whatever ``--attack`` says (``unbounded_attack``):
one FGSM step at eps 0.5 overshoots and leaves an ordinary model partly correct,
which would cry gradient masking where there is none.

Samples are drawn per block of ``RANDOM_BLOCK`` images by global index (a quota
proportional to the block's share of the whole set, in a per-block seeded order),
and every re-attack draws from each image's own stream (``Draws``), like the
sweep: the batch size and the shard cut change nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medaudit.attacks.base import Attack, Draws, is_correct, loss_and_grad
from medaudit.attacks.pgd import PGDCW
from medaudit.attacks.square import Square
from medaudit.attacks.sweep import CLEAN_WRONG, SKIPPED, AttackResult, spans
from medaudit.data import AuditData
from medaudit.models import AuditModel
from medaudit.sharding import RANDOM_BLOCK

CHECK_SAMPLES = 64
UNBOUNDED_EPS = {"linf": 0.5, "l2": 1e3}
UNBOUNDED_MAX_ACCURACY = 0.05
# the unbounded check's own attacks, whatever --attack: PGD on the CW margin (which does not saturate
# like CE on confident models) from a random start, 100 steps of 1/20 of the budget (0.025 in
# L-inf; eps/4 steps or 50 steps left an adversarially trained sample model partly correct), or,
# without gradients, square with 1000 queries; both stop on a sample as soon as it breaks
UNBOUNDED_WHITE_BOX = PGDCW.name
UNBOUNDED_STEPS = 100
UNBOUNDED_STEP_FRACTION = 1 / 20
UNBOUNDED_BLACK_BOX = Square.name
UNBOUNDED_QUERIES = 1000
MORE_STEPS_MAX_EXTRA = 0.02  # tolerated extra break rate when doubling steps and restarts
BLACK_BOX_MAX_EXTRA = 0.02  # tolerated share of clean-correct samples broken only by square
MONOTONE_SLACK = 0.03  # tolerated rise (share of the subset) between independent runs
NOT_DRAWN = -1
CHECKS_KEY = 50_000  # seeds of the checks' draws, apart from the sweep's (eps, attack) keys


@dataclass(frozen=True)
class CheckSamples:
    """Per-sample outcomes of the re-attacks, 1/0, or NOT_DRAWN for samples not drawn."""

    monotone: np.ndarray  # int8 (n, eps): robust under an independent run of the first attack
    unbounded: np.ndarray  # int8 (n,): still correct at the unbounded eps (under ``unbounded_attack``)
    zero_gradient: np.ndarray  # int8 (n,): all-zero input gradient
    finite_gradient: np.ndarray  # int8 (n,): finite input gradient
    more_effort: np.ndarray  # int8 (n,): broken at the largest eps by doubled steps/restarts


def _record(check: str, passed: bool, detail: str) -> dict[str, Any]:
    return {"check": check, "passed": bool(passed), "detail": detail}


def _draw(eligible: np.ndarray, order: np.ndarray, quota: int) -> np.ndarray:
    """The first ``quota`` eligible rows of a block in its seeded order, sorted."""
    return np.sort(order[eligible[order]][:quota])


def run_checks(model: AuditModel, data: AuditData, result: AttackResult) -> CheckSamples:
    """Re-attack about CHECK_SAMPLES clean-correct (and still-robust) samples, batch by batch."""
    config = result.config
    n, eps_max = data.n, max(config.eps)
    out = CheckSamples(
        monotone=np.full((n, len(config.eps)), NOT_DRAWN, dtype=np.int8),
        unbounded=np.full(n, NOT_DRAWN, dtype=np.int8),
        zero_gradient=np.full(n, NOT_DRAWN, dtype=np.int8),
        finite_gradient=np.full(n, NOT_DRAWN, dtype=np.int8),
        more_effort=np.full(n, NOT_DRAWN, dtype=np.int8),
    )
    if eps_max == 0:
        return out
    primary = config.build(config.attacks[0])
    stronger = _doubled(config, config.attacks[0])
    robust_now = next(o for o in result.outcomes if o.eps == eps_max).robust
    task, device = model.task, model.device

    def attack(strong: Attack, rows: np.ndarray, eps: float, *key: int) -> np.ndarray:
        """Whether ``strong`` leaves each of these rows correct, ``batch_size`` at a time; every draw
        keyed by (image's global index, check), apart from the sweep's keys."""
        draws = Draws(config.seed, (CHECKS_KEY, *key), data.offset + rows)
        correct = []
        for lo in range(0, len(rows), config.batch_size):
            chunk = np.arange(lo, min(lo + config.batch_size, len(rows)))
            x, y = data.float_at(rows[chunk]).to(device), data.labels[rows[chunk]].to(device)
            x_adv = strong(model, x, y, eps=eps, norm=config.norm, generator=draws.rows(chunk))
            correct.append(is_correct(model.predict(x_adv).float().cpu(), y.cpu(), task).numpy())
        return np.concatenate(correct)

    for start, stop in spans(data, config.batch_size):
        drawn, still = [], []
        for block in np.unique((data.offset + np.arange(start, stop)) // RANDOM_BLOCK):
            first = int(block) * RANDOM_BLOCK
            size = min(first + RANDOM_BLOCK, data.population) - first
            order = np.random.default_rng((config.seed, int(block), CHECKS_KEY)).permutation(size)
            order = order + first - data.offset
            order = order[(order >= start) & (order < stop)]  # the block's images in this span
            quota = math.ceil(CHECK_SAMPLES * size / data.population)
            drawn.append(_draw(result.clean_correct, order, quota))
            still.append(_draw(robust_now, order, quota))
        rows = np.sort(np.concatenate(drawn))
        if len(rows):
            for i, eps in enumerate(config.eps):
                out.monotone[rows, i] = attack(primary, rows, eps, 0, i)
            if model.has_gradients:
                for lo in range(0, len(rows), config.batch_size):
                    chunk = rows[lo : lo + config.batch_size]
                    x, y = data.float_at(chunk).to(device), data.labels[chunk].to(device)
                    _, _, grad = loss_and_grad(model, x, y, "ce")
                    out.zero_gradient[chunk] = (grad.flatten(1).abs().amax(dim=1) == 0).cpu().numpy()
                    out.finite_gradient[chunk] = torch.isfinite(grad.flatten(1)).all(dim=1).cpu().numpy()
            reach = unbounded_reach(config.norm, data.float_at(rows[:1]))
            strong = unbounded_attack(model.has_gradients, reach)
            out.unbounded[rows] = attack(strong, rows, reach, 1)
        rows = np.sort(np.concatenate(still))
        if len(rows):
            out.more_effort[rows] = ~attack(stronger, rows, eps_max, 2)
    return out


def unbounded_reach(norm: str, x: torch.Tensor) -> float:
    """UNBOUNDED_EPS cut to the diameter of the image box [0, 1]^d (1 in L-inf, sqrt(d) in L2):
    the same images are reachable, and a random start and step scaled to it stay sensible."""
    diameter = 1.0 if norm == "linf" else math.sqrt(x[0].numel())
    return min(UNBOUNDED_EPS[norm], diameter)


def unbounded_attack(has_gradients: bool, reach: float) -> Attack:
    """The unbounded check's attack, strong whatever the sweep used: many-step PGD on the margin
    loss from a random start for a model with gradients, else square with enough queries."""
    if has_gradients:
        step = UNBOUNDED_STEP_FRACTION * reach
        return PGDCW(steps=UNBOUNDED_STEPS, step_size=step, random_start=True)
    return Square(queries=UNBOUNDED_QUERIES)


def _unbounded_label(has_gradients: bool) -> str:
    if has_gradients:
        return f"{UNBOUNDED_WHITE_BOX} ({UNBOUNDED_STEPS} steps from a random start)"
    return f"{UNBOUNDED_BLACK_BOX} ({UNBOUNDED_QUERIES} queries)"


def _doubled(config: Any, name: str) -> Any:
    """The attack with doubled steps, restarts and queries."""
    attack = config.build(name)
    params = dict(config.params.get(name, {}))
    for key in ("steps", "restarts", "queries"):
        if hasattr(attack, key):
            params[key] = 2 * getattr(attack, key)
    return type(attack)(**params)


@dataclass(frozen=True)
class AuditedSweep:
    """A sweep, its checks and the planner's notes: what ``medaudit attack`` reports."""

    result: AttackResult
    checks: CheckSamples
    plan_notes: tuple[str, ...] = ()

    def check_records(self) -> list[dict[str, Any]]:
        result, samples = self.result, self.checks
        config = result.config
        primary = config.attacks[0]
        records = [_budget(result)]
        drawn = samples.unbounded != NOT_DRAWN
        if drawn.any():
            records.insert(0, _monotone(samples.monotone[drawn], config.eps, primary))
            # gradients were read on the drawn samples exactly when the model has them
            has_gradients = bool((samples.zero_gradient[drawn] != NOT_DRAWN).all())
            if has_gradients:
                records.append(_gradients(samples.zero_gradient[drawn], samples.finite_gradient[drawn]))
            records.append(_unbounded(samples.unbounded[drawn], config.norm, has_gradients))
        more = samples.more_effort[samples.more_effort != NOT_DRAWN]
        if len(more):
            same = _doubled(config, primary) == config.build(primary)
            records.append(_more_effort(more, primary, max(config.eps), same))
        # meaningful only when square runs last: then a sample it broke survived every white-box attack
        if len(config.attacks) > 1 and config.attacks[-1] == "square":
            records.append(_black_box_gap(result))
        return records

    def to_dict(self) -> dict[str, Any]:
        results = {**self.result.to_dict(), "checks": self.check_records()}
        results["notes"] = [*self.plan_notes, *results["notes"]]
        return results

    def warnings(self) -> list[str]:
        return [
            f"honesty check failed: {c['check']}: {c['detail']}"
            for c in self.check_records()
            if not c["passed"]
        ]


def _monotone(robust: np.ndarray, eps: tuple[float, ...], primary: str) -> dict[str, Any]:
    """The sweep is monotone by construction (results carry over to larger eps), so the check
    re-attacks a subset independently at every eps: a rise means the attack is unreliable."""
    curve = [int(c) for c in robust.sum(axis=0)]
    slack = max(1, MONOTONE_SLACK * len(robust))
    rises = [eps[i] for i in range(1, len(curve)) if curve[i] > curve[i - 1] + slack]
    detail = f"independent {primary} runs on {len(robust)} samples: robust counts {curve} over eps"
    if rises:
        detail += f"; rises at eps {', '.join(f'{e:.4g}' for e in rises)}: the attack is unreliable (gradient masking or too few steps)"
    return _record("monotone in eps", not rises, detail)


def _gradients(zero: np.ndarray, finite: np.ndarray) -> dict[str, Any]:
    all_finite = bool(finite.all())
    share = float(zero.mean())
    passed = all_finite and share <= 0.1
    detail = f"{share:.0%} of samples have an all-zero input gradient" + (
        "" if all_finite else "; non-finite gradients"
    )
    if not passed:
        detail += (
            " (gradient masking, a non-differentiable step in the model, or probabilities instead of logits)"
        )
    return _record("gradients non-zero and finite", passed, detail)


def _unbounded(correct: np.ndarray, norm: str, has_gradients: bool) -> dict[str, Any]:
    """Judged on the check's own attack (``unbounded_attack``), named in the detail, not the sweep's."""
    eps = UNBOUNDED_EPS[norm]
    accuracy = float(correct.mean())
    passed = accuracy <= UNBOUNDED_MAX_ACCURACY
    detail = (
        f"{_unbounded_label(has_gradients)}, the check's own attack whatever --attack, "
        f"at eps {eps:g} ({norm}) leaves accuracy {accuracy:.3f} on {len(correct)} samples"
    )
    if not passed and has_gradients:
        detail += (
            ": an unbounded attack should reach ~0; suspect gradient masking or a non-differentiable step"
        )
    elif not passed:
        detail += (
            ": an unbounded attack should reach ~0; the black-box attack is weak on this model "
            "(robust accuracy is likely overstated) or its output barely depends on the input"
        )
    return _record("unbounded budget breaks the model", passed, detail)


def _more_effort(broken: np.ndarray, primary: str, eps: float, same: bool = False) -> dict[str, Any]:
    """Samples still robust at the largest eps, re-attacked with doubled steps and restarts.

    ``same``: the attack has nothing to double (fgsm), so the re-run repeats the sweep and
    proves nothing; the detail says so rather than report a meaningless 0%."""
    share = float(broken.mean())
    passed = share <= MORE_STEPS_MAX_EXTRA
    detail = f"doubling steps/restarts of {primary} broke {share:.1%} of {len(broken)} samples still robust at eps {eps:.4g}"
    if same:
        detail = (
            f"{primary} has no steps, restarts or queries to double: its re-run on {len(broken)} samples "
            f"still robust at eps {eps:.4g} broke {share:.1%}, which says nothing about convergence"
        )
    if not passed:
        detail += ": the attack has not converged, so robust accuracy is overstated; raise --steps/--restarts"
    return _record("more effort does not lower robust accuracy", passed, detail)


def _budget(result: AttackResult) -> dict[str, Any]:
    worst = 0.0
    for outcome in result.outcomes:
        used = outcome.linf if result.config.norm == "linf" else outcome.l2
        worst = max(worst, float((used - outcome.eps).max()))
    return _record(
        "perturbation within eps",
        worst <= 1e-5,
        "every perturbation is within its eps" if worst <= 1e-5 else f"exceeded eps by {worst:.2e}",
    )


def _black_box_gap(result: AttackResult) -> dict[str, Any]:
    index = result.config.attacks.index("square")
    n_correct = max(int(result.clean_correct.sum()), 1)
    worst = 0.0
    for outcome in result.outcomes:
        only_square = (outcome.broken_by == index) & (outcome.broken_by != CLEAN_WRONG)
        worst = max(worst, float(only_square.sum() / n_correct))
    passed = worst <= BLACK_BOX_MAX_EXTRA
    detail = f"square broke {worst:.1%} of clean-correct samples the white-box attacks missed"
    skipped = sum(int((o.stages[:, index] == SKIPPED).sum()) for o in result.outcomes)
    if skipped:
        detail += (
            f" (screened: {skipped} survivors over all eps were left out where its probe of the "
            "survivors nearest the boundary broke none)"
        )
    if not passed:
        detail += ": black-box beating white-box points to gradient masking"
    return _record("black-box does not beat white-box", passed, detail)
