"""Honesty checks on a finished sweep (Carlini et al. 2019, AutoAttack's flags).

Each check returns a record ``{"check", "passed", "detail"}``; a failed check
becomes a loud report warning naming the likely cause. Checks cost a few extra
attack runs on a small subset, never a second sweep.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medaudit.attacks.base import is_correct, loss_and_grad
from medaudit.attacks.sweep import CLEAN_WRONG, AttackConfig, AttackResult
from medaudit.data import AuditData
from medaudit.models import AuditModel

CHECK_SAMPLES = 64
UNBOUNDED_EPS = {"linf": 0.5, "l2": 1e3}
UNBOUNDED_MAX_ACCURACY = 0.05
MORE_STEPS_MAX_EXTRA = 0.02  # tolerated extra break rate when doubling steps and restarts
BLACK_BOX_MAX_EXTRA = 0.02
MONOTONE_SLACK = 0.03  # tolerated rise (share of the subset) between independent runs  # tolerated share of clean-correct samples broken only by square


def _record(check: str, passed: bool, detail: str) -> dict[str, Any]:
    return {"check": check, "passed": bool(passed), "detail": detail}


def _subset(indices: np.ndarray, seed: int) -> np.ndarray:
    if len(indices) <= CHECK_SAMPLES:
        return indices
    return np.sort(np.random.default_rng(seed).choice(indices, CHECK_SAMPLES, replace=False))


def run_checks(model: AuditModel, data: AuditData, result: AttackResult) -> list[dict[str, Any]]:
    config = result.config
    checks = [_budget(result)]
    correct = np.flatnonzero(result.clean_correct)
    if len(correct) == 0 or max(config.eps) == 0:
        return checks
    generator = torch.Generator().manual_seed(config.seed + 1)
    primary = config.attacks[0]
    sample = _subset(correct, config.seed)
    x, y = data.float_at(sample).to(model.device), data.labels[sample].to(model.device)
    checks.insert(0, _monotone(model, x, y, config, primary, generator))
    if model.has_gradients:
        checks.append(_gradients(model, x, y))
    checks.append(_unbounded(model, x, y, config, primary, generator))
    robust_now = np.flatnonzero(next(o for o in result.outcomes if o.eps == max(config.eps)).robust)
    if len(robust_now):
        checks.append(_more_effort(model, data, result, primary, _subset(robust_now, config.seed), generator))
    # meaningful only when square runs last: then a sample it broke survived every white-box attack
    if len(config.attacks) > 1 and config.attacks[-1] == "square":
        checks.append(_black_box_gap(result))
    return checks


def _monotone(
    model: AuditModel,
    x: torch.Tensor,
    y: torch.Tensor,
    config: AttackConfig,
    primary: str,
    generator: torch.Generator,
) -> dict[str, Any]:
    """The sweep is monotone by construction (results carry over to larger eps), so this
    re-attacks a subset independently at every eps: a rise means the attack is unreliable."""
    attack = config.build(primary)
    curve = []
    for eps in config.eps:
        x_adv = attack(model, x, y, eps=eps, norm=config.norm, generator=generator)
        curve.append(int(is_correct(model.predict(x_adv).float().cpu(), y.cpu(), model.task).sum()))
    slack = max(1, MONOTONE_SLACK * len(x))
    rises = [config.eps[i] for i in range(1, len(curve)) if curve[i] > curve[i - 1] + slack]
    detail = f"independent {primary} runs on {len(x)} samples: robust counts {curve} over eps"
    if rises:
        detail += f"; rises at eps {', '.join(f'{e:.4g}' for e in rises)}: the attack is unreliable (gradient masking or too few steps)"
    return _record("monotone in eps", not rises, detail)


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


def _gradients(model: AuditModel, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    _, _, grad = loss_and_grad(model, x, y, "ce")
    finite = bool(torch.isfinite(grad).all())
    zero = float((grad.flatten(1).abs().amax(dim=1) == 0).float().mean())
    passed = finite and zero <= 0.1
    detail = f"{zero:.0%} of samples have an all-zero input gradient" + (
        "" if finite else "; non-finite gradients"
    )
    if not passed:
        detail += (
            " (gradient masking, a non-differentiable step in the model, or probabilities instead of logits)"
        )
    return _record("gradients non-zero and finite", passed, detail)


def _unbounded(
    model: AuditModel,
    x: torch.Tensor,
    y: torch.Tensor,
    config: AttackConfig,
    primary: str,
    generator: torch.Generator,
) -> dict[str, Any]:
    eps = UNBOUNDED_EPS[config.norm]
    x_adv = config.build(primary)(model, x, y, eps=eps, norm=config.norm, generator=generator)
    accuracy = float(is_correct(model.predict(x_adv).float().cpu(), y.cpu(), model.task).float().mean())
    passed = accuracy <= UNBOUNDED_MAX_ACCURACY
    detail = f"{primary} at eps {eps} ({config.norm}) leaves accuracy {accuracy:.3f} on {len(x)} samples"
    if not passed:
        detail += (
            ": an unbounded attack should reach ~0; suspect gradient masking or a non-differentiable step"
        )
    return _record("unbounded budget breaks the model", passed, detail)


def _more_effort(
    model: AuditModel,
    data: AuditData,
    result: AttackResult,
    primary: str,
    sample: np.ndarray,
    generator: torch.Generator,
) -> dict[str, Any]:
    """Re-attack samples still robust at the largest eps with doubled steps and restarts."""
    config = result.config
    params = dict(config.params.get(primary, {}))
    attack = config.build(primary)
    for key in ("steps", "restarts", "queries"):
        if hasattr(attack, key):
            params[key] = 2 * getattr(attack, key)
    stronger = type(attack)(**params)
    eps = max(config.eps)
    x, y = data.float_at(sample).to(model.device), data.labels[sample].to(model.device)
    x_adv = stronger(model, x, y, eps=eps, norm=config.norm, generator=generator)
    broken = float((~is_correct(model.predict(x_adv).float().cpu(), y.cpu(), model.task)).float().mean())
    passed = broken <= MORE_STEPS_MAX_EXTRA
    detail = f"doubling steps/restarts of {primary} broke {broken:.1%} of {len(sample)} samples still robust at eps {eps:.4g}"
    if not passed:
        detail += ": the attack has not converged, so robust accuracy is overstated; raise --steps/--restarts"
    return _record("more effort does not lower robust accuracy", passed, detail)


def _black_box_gap(result: AttackResult) -> dict[str, Any]:
    index = result.config.attacks.index("square")
    n_correct = max(int(result.clean_correct.sum()), 1)
    worst = 0.0
    for outcome in result.outcomes:
        only_square = (outcome.broken_by == index) & (outcome.broken_by != CLEAN_WRONG)
        worst = max(worst, float(only_square.sum() / n_correct))
    passed = worst <= BLACK_BOX_MAX_EXTRA
    detail = f"square broke {worst:.1%} of clean-correct samples the white-box attacks missed"
    if not passed:
        detail += ": black-box beating white-box points to gradient masking"
    return _record("black-box does not beat white-box", passed, detail)
