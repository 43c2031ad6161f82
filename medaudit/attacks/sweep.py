"""The worst-case sweep: every attack, every restart, every eps, counted per sample.

AutoAttack's bookkeeping: a sample is robust at eps only if it is clean-correct
and survives every attack in the plan. Each attack runs only on the samples
still robust, and eps values are visited in increasing order so a sample broken
at a smaller eps is broken at every larger one (the smaller ball lies inside the
larger), which is both the honest count and the fast one.

``probe`` (the ``auto`` plan sets it) screens every attack after the first: per
block of ``RANDOM_BLOCK`` images (by global index, so the batch size and the shard
cut change nothing), it runs first on the block's ``probe``-share of survivors
nearest the decision boundary (largest CW margin at their latest point; square with a tenth of its
queries, as queries, not images, make its cost), and only if it broke one of
those, on every survivor with the draws the unscreened plan makes (so it
attacks as the full plan would). An attack that cannot break the closest images
is not worth its full cost on the farther ones. A block where some survivor has an
all-zero or non-finite input gradient is not screened: gradient attacks stand still
there, so their margins rank nothing and the black-box attack must run in full.
Each outcome records, per sample and attack, whether it was probed, attacked in
full or skipped (``stages``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from medaudit.attacks.apgd import APGD
from medaudit.attacks.base import (
    NORMS,
    Attack,
    Draws,
    Random,
    attacks,
    is_correct,
    loss_and_grad,
    margin,
)
from medaudit.attacks.pgd import max_loss_pgd
from medaudit.attacks.plan import check_budgets
from medaudit.attacks.square import Square
from medaudit.data import AuditData
from medaudit.errors import ConfigError
from medaudit.evaluate import predict_logits
from medaudit.metrics import (
    BOOTSTRAP_CONFIDENCE,
    BOOTSTRAP_METHOD,
    BOOTSTRAP_ROUNDS,
    bootstrap_mean_intervals,
    classification_metrics,
)
from medaudit.models import AuditModel
from medaudit.sharding import RANDOM_BLOCK
from medaudit.task import Task

NOT_BROKEN = -1
CLEAN_WRONG = -2
# EpsOutcome.stages, per sample and attack: what that attack did to the sample at that eps
NOT_RUN = 0  # not attacked: wrong or broken before this attack reached it
PROBED = 1  # attacked in its block's probe only (the survivors nearest the boundary)
ATTACKED = 2  # attacked with every survivor of its block (unscreened, or the probe broke one)
SKIPPED = 3  # still robust, but the probe broke nobody in its block, so not attacked
NONE = np.zeros(0, dtype=np.int64)
PROBE_QUERY_SHARE = 10  # a probe of square spends 1/10 of its queries


@dataclass(frozen=True)
class AttackConfig:
    """A whole sweep; ``attacks`` are registry names, already planned (no 'auto')."""

    attacks: tuple[str, ...]
    eps: tuple[float, ...]
    norm: str = "linf"
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    batch_size: int = 256
    seed: int = 0
    probe: int = 0  # 0: every attack runs on every survivor; else see the module docstring

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ConfigError(f"--norm must be linf or l2, got '{self.norm}'")
        if not self.eps:
            raise ConfigError("--eps needs at least one value")
        if not self.attacks:
            raise ConfigError("--attack names no attack: use auto or e.g. pgd,square")
        check_budgets(self.eps, self.norm)
        if list(self.eps) != sorted(set(self.eps)):
            raise ConfigError("eps values must be distinct and increasing")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.probe < 0:
            raise ConfigError(f"probe must be 0 (no screening) or a number of samples, got {self.probe}")
        for name in self.attacks:
            attacks.get(name)

    def build(self, name: str) -> Attack:
        return attacks.get(name)(**self.params.get(name, {}))


@dataclass(frozen=True)
class EpsOutcome:
    """Per-sample facts at one eps."""

    eps: float
    broken_by: np.ndarray  # int8[n]: index into config.attacks, NOT_BROKEN or CLEAN_WRONG
    adv_logits: torch.Tensor  # logits at each sample's worst point (clean logits if never attacked)
    auc_logits: torch.Tensor | None  # scores for AUC under attack (None for black-box models)
    linf: np.ndarray  # float[n] perturbation actually used
    l2: np.ndarray
    stages: np.ndarray  # int8[n, attacks]: NOT_RUN, PROBED, ATTACKED or SKIPPED

    @property
    def robust(self) -> np.ndarray:
        return self.broken_by == NOT_BROKEN


@dataclass(frozen=True)
class AttackResult:
    config: AttackConfig
    task: Task
    class_names: tuple[str, ...]
    labels: torch.Tensor
    clean_logits: torch.Tensor
    clean_correct: np.ndarray
    outcomes: tuple[EpsOutcome, ...]
    notes: tuple[str, ...] = ()
    adversarial: dict[float, torch.Tensor] | None = None

    @property
    def n(self) -> int:
        return len(self.labels)

    def robust_accuracy(self, eps: float) -> float:
        return float(next(o for o in self.outcomes if o.eps == eps).robust.mean())

    def intervals(self) -> tuple[list[float] | None, dict[float, list[float] | None]]:
        """Bootstrap intervals of clean accuracy and of worst-case robust accuracy at each eps:
        eval's seeded percentile bootstrap (``bootstrap_mean_intervals``: its default resamples
        and level, ``config.seed``) over the images' 0/1 outcomes, all from the same resamples.
        Derived from per-image outcomes, so a merge of shards gives the single run's intervals."""
        columns = np.stack([self.clean_correct, *(o.robust for o in self.outcomes)], axis=1)
        cis = bootstrap_mean_intervals(columns, seed=self.config.seed)
        return cis[0], {o.eps: ci for o, ci in zip(self.outcomes, cis[1:], strict=True)}

    def records(self, robust_ci: dict[float, list[float] | None] | None = None) -> list[dict[str, Any]]:
        """One record per (eps, attack): cumulative robust accuracy after that attack,
        then one 'worst-case' record over all attacks (with ``robust_accuracy_ci``, from
        ``robust_ci`` or else ``intervals``)."""
        if robust_ci is None:
            robust_ci = self.intervals()[1]
        clean_acc = float(self.clean_correct.mean())
        n_correct = int(self.clean_correct.sum())
        out = []
        for outcome in self.outcomes:
            for index, name in enumerate((*self.config.attacks, "worst-case")):
                if name == "worst-case":
                    survived = outcome.robust
                else:
                    broken_so_far = (outcome.broken_by >= 0) & (outcome.broken_by <= index)
                    survived = self.clean_correct & ~broken_so_far
                record = {
                    "attack": name,
                    "norm": self.config.norm,
                    "eps": outcome.eps,
                    "eps_grey_levels": outcome.eps * 255,
                    "n": self.n,
                    "clean_accuracy": clean_acc,
                    "robust_accuracy": float(survived.mean()),
                    "attack_success_rate": (float(1 - survived.sum() / n_correct) if n_correct else None),
                }
                if name == "worst-case":
                    record["robust_accuracy_ci"] = robust_ci[outcome.eps]
                    record.update(self._worst_case_details(outcome, n_correct))
                out.append(record)
        return out

    def _worst_case_details(self, outcome: EpsOutcome, n_correct: int) -> dict[str, Any]:
        auc = None
        if outcome.auc_logits is not None:
            auc = classification_metrics(outcome.auc_logits, self.labels, self.task, self.class_names)["auc"]
        attacked = outcome.broken_by != CLEAN_WRONG
        counts = {name: int((outcome.broken_by == i).sum()) for i, name in enumerate(self.config.attacks)}
        return {
            "auc_under_attack": auc,
            "per_class_robust_recall": self._per_class_robust(outcome.robust),
            "broken_by": counts,
            "stages": {
                name: {
                    "attacked": int(np.isin(outcome.stages[:, i], (PROBED, ATTACKED)).sum()),
                    "probed": int((outcome.stages[:, i] == PROBED).sum()),
                    "skipped": int((outcome.stages[:, i] == SKIPPED).sum()),
                }
                for i, name in enumerate(self.config.attacks)
            },
            "perturbation": {
                "mean_linf": float(outcome.linf[attacked].mean()) if attacked.any() else 0.0,
                "max_linf": float(outcome.linf.max()),
                "mean_l2": float(outcome.l2[attacked].mean()) if attacked.any() else 0.0,
                "max_l2": float(outcome.l2.max()),
            },
        }

    def _per_class_robust(self, robust: np.ndarray) -> dict[str, float | None]:
        labels = self.labels.numpy()
        if self.task is Task.MULTI_LABEL:
            return {name: None for name in self.class_names}
        return {
            name: (float(robust[labels == i].mean()) if (labels == i).any() else None)
            for i, name in enumerate(self.class_names)
        }

    def curve(self) -> dict[str, Any]:
        """Worst-case robust accuracy vs eps (with eps 0 = clean) and its normalised area."""
        eps = [0.0] + [o.eps for o in self.outcomes if o.eps > 0]
        acc = [float(self.clean_correct.mean())] + [
            float(o.robust.mean()) for o in self.outcomes if o.eps > 0
        ]
        area = float(np.trapezoid(acc, eps) / eps[-1]) if eps[-1] > 0 else acc[0]
        return {"eps": eps, "robust_accuracy": acc, "normalised_area": area}

    def to_dict(self) -> dict[str, Any]:
        clean_ci, robust_ci = self.intervals()
        return {
            "task": self.task.value,
            "class_names": list(self.class_names),
            "n": self.n,
            "clean_accuracy": float(self.clean_correct.mean()),
            "clean_accuracy_ci": clean_ci,
            "bootstrap": {
                "rounds": BOOTSTRAP_ROUNDS,
                "confidence": BOOTSTRAP_CONFIDENCE,
                "seed": self.config.seed,
                "method": BOOTSTRAP_METHOD,
            },
            "attacks": list(self.config.attacks),
            "probe": self.config.probe,
            "sweep": self.records(robust_ci),
            "curve": self.curve(),
            "notes": list(self.notes),
        }


def _norms(delta: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1).cpu().numpy(), flat.norm(dim=1).cpu().numpy()


AUC_PUSH_STEPS = 10


def _push(
    model: AuditModel,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    config: AttackConfig,
    generator: Random,
) -> torch.Tensor:
    """Scores for AUC under attack of misclassified samples (clean-wrong or broken, whose first
    misclassifying point sits just past the boundary): pushed further from their class by
    max-loss PGD. Robust samples keep their attacks' final points."""
    x_adv = max_loss_pgd(model, x, y, eps=eps, norm=config.norm, steps=AUC_PUSH_STEPS, generator=generator)
    return model.predict(x_adv).float().cpu()


@dataclass
class _EpsState:
    """Per-sample facts at one eps while its batches are attacked (become an ``EpsOutcome``)."""

    broken_by: np.ndarray
    adv_logits: torch.Tensor
    linf: np.ndarray
    l2: np.ndarray
    stages: np.ndarray
    adv_images: torch.Tensor | None


def _masked(model: AuditModel, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> np.ndarray:
    """Per image: whether it has an all-zero or non-finite input gradient. There gradient attacks
    stand still and the margins they leave say nothing, so the probe cannot screen its block."""
    masked = np.zeros(len(x), dtype=bool)
    if not model.has_gradients:
        return masked
    for lo in range(0, len(x), batch_size):
        xs, ys = x[lo : lo + batch_size].to(model.device), y[lo : lo + batch_size].to(model.device)
        _, _, grad = loss_and_grad(model, xs, ys, "ce")
        flat = grad.flatten(1)
        masked[lo : lo + len(xs)] = ((flat == 0).all(dim=1) | ~torch.isfinite(flat).all(dim=1)).cpu().numpy()
    return masked


def spans(data: AuditData, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of the sweep's spans: whole blocks of ``RANDOM_BLOCK`` images by global index
    (about ``batch_size`` images, at least one block); the attacks run on them ``batch_size`` at a time."""
    first = data.offset
    cuts = [first, *range((first // RANDOM_BLOCK + 1) * RANDOM_BLOCK, first + data.n, RANDOM_BLOCK)]
    per = max(1, batch_size // RANDOM_BLOCK)
    starts = [cut - first for cut in cuts[::per]]
    return list(zip(starts, [*starts[1:], data.n], strict=True))


def _attack_span(
    model: AuditModel,
    built: list[Attack],
    config: AttackConfig,
    state: _EpsState,
    x: torch.Tensor,
    y: torch.Tensor,
    start: int,
    rows_global: np.ndarray,
    eps_index: int,
    eps: float,
    population: int,
    progress: Callable[[int], None] | None,
) -> None:
    """Every attack of the plan on one span of whole blocks at one eps, each on the samples still
    robust; when the plan screens (``config.probe``), each block is screened on its own."""
    task, device = model.task, model.device
    # samples broken at a smaller eps keep that (valid, smaller) perturbation's verdict
    live = np.flatnonzero(state.broken_by[start : start + len(x)] == NOT_BROKEN)
    gap = np.zeros(len(x))  # distance to the boundary (-CW margin) at each sample's latest point
    blocks = rows_global // RANDOM_BLOCK

    def hit(index: int, targets: np.ndarray, stage: int, *extra: int, done: np.ndarray = NONE) -> np.ndarray:
        """Attack these rows of the span with attack ``index``; return those it broke. Rows in
        ``done`` (broken by this attack's probe) keep the probe's adversarial point."""
        # every random draw is keyed by (image's global index, eps, attack): see Draws
        draws = Draws(config.seed, (eps_index, index, *extra), rows_global)
        attack = built[index]
        if stage == PROBED and isinstance(attack, Square):  # queries, not images, make its cost
            attack = replace(attack, queries=max(1, attack.queries // PROBE_QUERY_SHARE))
        points, outputs = [], []
        for lo in range(0, len(targets), config.batch_size):
            chunk = targets[lo : lo + config.batch_size]
            xc, yc = x[chunk].to(device), y[chunk].to(device)
            point = attack(model, xc, yc, eps=eps, norm=config.norm, generator=draws.rows(chunk))
            points.append(point)
            outputs.append(model.predict(point).float().cpu())
        x_adv, logits = torch.cat(points), torch.cat(outputs)
        xs, ys = x[targets].to(device), y[targets].to(device)
        fooled = ~is_correct(logits, ys.cpu(), task).numpy()
        new = ~np.isin(targets, done)
        targets, x_adv, xs, ys, logits, fooled = (
            targets[new],
            x_adv[new],
            xs[new],
            ys[new],
            logits[new],
            fooled[new],
        )
        rows = start + targets
        state.stages[rows, index] = stage
        gap[targets] = -margin(logits, ys.cpu(), task).numpy()
        state.adv_logits[rows] = logits
        state.linf[rows], state.l2[rows] = _norms((x_adv - xs).cpu())
        if state.adv_images is not None:
            state.adv_images[rows] = x_adv.cpu()
        state.broken_by[rows[fooled]] = index
        return targets[fooled]

    screened = np.zeros(len(x), dtype=bool)  # per row: its block is screened by the probe
    if config.probe > 0 and len(live):
        masked = np.zeros(len(x), dtype=bool)
        masked[live] = _masked(model, x[live], y[live], config.batch_size)
        screened = ~np.isin(blocks, blocks[masked])
    for index in range(len(built)):
        if len(live) == 0:
            break
        screen = live[screened[live]] if index > 0 else NONE
        if len(screen) == 0:
            broken = hit(index, live, ATTACKED)
        else:  # per block, the survivors nearest the boundary first
            probe: list[np.ndarray] = []
            hot: list[np.ndarray] = []
            cold: list[np.ndarray] = []
            for block in np.unique(blocks[screen]):
                members = screen[blocks[screen] == block]
                size = min((block + 1) * RANDOM_BLOCK, population) - block * RANDOM_BLOCK
                quota = math.ceil(config.probe * size / population)
                order = members[np.argsort(gap[members], kind="stable")]
                probe.append(order[:quota])
                (hot if len(order) > quota else cold).append(order)
            probed = np.sort(np.concatenate(probe))
            broken = hit(index, probed, PROBED, 1)
            # in full: every survivor of a block whose probe broke one (the probe's too) and of the
            # unscreened blocks, with the draws of the unscreened plan
            full = [live[~screened[live]]]
            for order in hot:
                (full if np.isin(order, broken).any() else cold).append(order)
            full_rows = np.sort(np.concatenate(full))
            if len(full_rows):
                broken = np.concatenate([broken, hit(index, full_rows, ATTACKED, done=broken)])
            rest = np.setdiff1d(np.concatenate([NONE, *cold]), probed)
            state.stages[start + rest, index] = SKIPPED
        live = np.setdiff1d(live, broken)
        if progress:
            progress(len(x))


def run_attacks(
    model: AuditModel,
    data: AuditData,
    config: AttackConfig,
    progress: Callable[[int], None] | None = None,
    keep_adversarial: bool = False,
) -> AttackResult:
    """Attack a bound model on ``data``; progress counts (eps, attack, batch) units of images."""
    task = model.task
    assert task is not None and model.class_names is not None, "bind_model first"
    built = [config.build(name) for name in config.attacks]
    for attack in built:
        if attack.needs_gradients and not model.has_gradients:
            raise ConfigError(
                f"{attack.name} needs gradients but this model is black-box only: use --attack square"
            )
    notes = [
        f"{attack.name} uses the CW margin loss: DLR needs 3 or more mutually exclusive classes"
        for attack in built
        if isinstance(attack, APGD) and attack.effective_loss(len(model.class_names), task) != attack.loss
    ]
    device = model.device
    if not model.has_gradients:
        notes.append("AUC under attack is not reported: pushing misclassified samples needs gradients")
    clean = predict_logits(model, data, config.batch_size)
    clean_correct = is_correct(clean, data.labels, task).numpy()
    previous = np.where(clean_correct, NOT_BROKEN, CLEAN_WRONG).astype(np.int8)
    outcomes: list[EpsOutcome] = []
    adversarial: dict[float, torch.Tensor] = {}
    for eps_index, eps in enumerate(config.eps):
        state = _EpsState(
            broken_by=previous.copy(),
            adv_logits=clean.clone(),
            linf=np.zeros(data.n),
            l2=np.zeros(data.n),
            stages=np.full((data.n, len(built)), NOT_RUN, dtype=np.int8),
            adv_images=data.float_images(0, data.n) if keep_adversarial else None,
        )
        pushed: dict[int, torch.Tensor] = {}
        for start, stop in spans(data, config.batch_size):
            x, y = data.float_images(start, stop), data.labels[start:stop]
            rows_global = data.offset + np.arange(start, stop)
            if eps > 0:
                _attack_span(
                    model,
                    built,
                    config,
                    state,
                    x,
                    y,
                    start,
                    rows_global,
                    eps_index,
                    eps,
                    data.population,
                    progress,
                )
            elif progress:
                progress(len(x) * len(built))
            wrong = np.flatnonzero(state.broken_by[start:stop] != NOT_BROKEN)
            if model.has_gradients and len(wrong):
                draws = Draws(config.seed, (eps_index, len(built)), rows_global)
                for lo in range(0, len(wrong), config.batch_size):
                    chunk = wrong[lo : lo + config.batch_size]
                    xc, yc = x[chunk].to(device), y[chunk].to(device)
                    logits = _push(model, xc, yc, eps, config, draws.rows(chunk))
                    pushed.update(zip((start + chunk).tolist(), logits, strict=True))
        # samples broken at an earlier eps: their earlier adversarial logits still hold
        earlier = previous >= 0
        if outcomes and earlier.any():
            state.adv_logits[earlier] = outcomes[-1].adv_logits[earlier]
            state.linf[earlier], state.l2[earlier] = outcomes[-1].linf[earlier], outcomes[-1].l2[earlier]
            if state.adv_images is not None:
                state.adv_images[earlier] = adversarial[outcomes[-1].eps][earlier]
        auc_logits = None
        if model.has_gradients:
            auc_logits = state.adv_logits.clone()
            for row, logits in pushed.items():
                auc_logits[row] = logits
        outcome = EpsOutcome(
            eps, state.broken_by, state.adv_logits, auc_logits, state.linf, state.l2, state.stages
        )
        outcomes.append(outcome)
        if state.adv_images is not None:
            adversarial[eps] = state.adv_images
        previous = state.broken_by
    return AttackResult(
        config=config,
        task=task,
        class_names=model.class_names,
        labels=data.labels,
        clean_logits=clean,
        clean_correct=clean_correct,
        outcomes=tuple(outcomes),
        notes=tuple(notes),
        adversarial=adversarial if keep_adversarial else None,
    )
