"""Nonrobust-feature usefulness: do the audited model's adversarial directions carry label signal?

For each kind (D_rand, D_det) the training split is moved towards target classes by targeted L2
PGD on the audited model and relabelled with the targets (``construct``); a fresh network trained
on that set alone is then scored on the untouched clean test split. Accuracy well above chance,
and above the same pipeline at eps 0 (the control, whose labels carry no signal about the
images), says the model's nonrobust features generalise (Ilyas et al. 2019). The clean reference,
eps 0 with the original labels, is what the same network and recipe reach on the real task.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import torch

from medaudit.data import AuditData, stratified_indices
from medaudit.errors import ConfigError
from medaudit.features.config import NonrobustConfig
from medaudit.features.construction import construct, require_single_label_gradients
from medaudit.features.progress import stage
from medaudit.features.train import accuracy, fresh_factory, train_fresh, training_batches
from medaudit.models import AuditModel

if TYPE_CHECKING:  # medaudit.audits imports the features audit, which imports this package
    from medaudit.audits.base import Progress


@dataclass(frozen=True)
class NonrobustRow:
    """One kind's result: the fresh network's clean test scores, and its eps-0 control's."""

    kind: str
    eps: float
    step_size: float
    attack_success: float
    """Fraction of training images the audited model classifies as their target after the attack."""
    accuracy: float
    balanced_accuracy: float
    control_accuracy: float | None
    control_balanced_accuracy: float | None
    seconds: dict[str, float]
    """construction, training (and control: both at eps 0)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CleanReference:
    """eps 0 with the original labels: the fresh network trained on the clean training split. The
    ceiling the nonrobust sets are read against, and proof that the training recipe learns."""

    accuracy: float
    balanced_accuracy: float
    seconds: float


@dataclass(frozen=True)
class NonrobustResult:
    config: NonrobustConfig
    rows: list[NonrobustRow]
    reference: CleanReference | None
    """None with ``config.control`` off."""
    chance: float
    """1 / C: the accuracy of a guess that ignores the image."""
    majority: float
    """The largest class share of the test split: the accuracy of always guessing that class."""
    architecture: str
    n_train: int
    n_test: int
    eps_zero_reused: bool = False
    """Some eps-0 scores were an earlier model's in the same ``EpsZeroRuns`` (their seconds ~0)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "rows": [row.to_dict() for row in self.rows],
            "reference": None if self.reference is None else asdict(self.reference),
            "chance": self.chance,
            "majority": self.majority,
            "architecture": self.architecture,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "eps_zero_reused": self.eps_zero_reused,
        }


@dataclass
class EpsZeroRuns:
    """The eps-0 trainings (controls and clean reference) of one audit, shared between its models.

    At eps 0 nothing comes from the audited model's weights: the images are the training split's,
    the labels its own or the seeded targets, and the fresh network depends only on the
    architecture, the normalisation and the device. Two models that agree on those (a model and
    its ``_adv`` twin under ``--compare``) get the same scores, so they are trained once."""

    scores: dict[tuple[str, ...], tuple[float, float]] = field(default_factory=dict)

    def get(
        self, key: tuple[str, ...], train: Callable[[], tuple[float, float]]
    ) -> tuple[tuple[float, float], bool]:
        """(accuracy, balanced accuracy) for ``key``, trained now unless an earlier model did; and
        whether it was reused."""
        if key in self.scores:
            return self.scores[key], True
        self.scores[key] = train()
        return self.scores[key], False


def nonrobust_usefulness(
    model: AuditModel,
    train: AuditData,
    test: AuditData,
    config: NonrobustConfig,
    progress: Progress | None = None,
    eps_zero: EpsZeroRuns | None = None,
) -> NonrobustResult:
    """Build each D_kind from ``train`` with ``model``, train a fresh network on it and score it
    on ``test`` (the clean split as given, never the constructed images); with ``config.control``
    the same at eps 0. Pass one ``eps_zero`` to the calls for several models of one audit (same
    ``train``, ``test`` and ``config``) to train their shared eps-0 networks once."""
    require_single_label_gradients(model, train, "the nonrobust-feature usefulness probe")
    if test.num_classes != train.num_classes:
        raise ConfigError(
            f"the training split has {train.num_classes} classes but the test split {test.num_classes}: "
            "use two splits of the same dataset"
        )
    if config.limit is not None and config.limit < train.n:
        note = {"limit": config.limit, "limit_seed": config.seed}
        train = train.subset(stratified_indices(train.labels, config.limit, config.seed), note)
    eps, step = config.budget(train.channels, *train.size)
    factory, architecture = fresh_factory(model, model.spec.channels or train.channels, train.num_classes)
    batches = config.epochs * training_batches(train.n, config.train_batch_size)
    eps_zero = eps_zero if eps_zero is not None else EpsZeroRuns()
    network_key = (architecture, repr(model.spec), str(model.device))
    reused = False

    def fit(images: torch.Tensor, labels: torch.Tensor, label: str) -> tuple[float, float]:
        """Train a fresh network on (images, labels); its (accuracy, balanced accuracy) on ``test``."""
        with stage(progress, label, batches) as advance:
            fresh = train_fresh(
                factory,
                images,
                labels,
                model.spec,
                train.task,
                config.epochs,
                config.train_batch_size,
                config.lr,
                config.seed,
                model.device,
                advance,
                class_names=train.class_names,
                description=architecture,
            )
        return accuracy(fresh, test, config.batch_size)

    def score(kind: str, at_eps: float, build_label: str | None, train_label: str) -> tuple[float, ...]:
        """(attack success, accuracy, balanced accuracy, construction s, training s) at ``at_eps``;
        a construction without a label (eps 0: no attack) opens no progress stage."""
        started = time.perf_counter()
        with stage(progress, build_label, train.n) as advance:
            built = construct(
                model, train, kind, at_eps, config.steps, step, config.seed, config.batch_size, advance
            )
        built_at = time.perf_counter()
        acc, balanced = fit(built.images, built.labels, train_label)
        return built.attack_success, acc, balanced, built_at - started, time.perf_counter() - built_at

    def control(kind: str) -> tuple[float, float]:
        """The eps-0 control of D_kind: (accuracy, balanced accuracy)."""
        _, acc, balanced, _, _ = score(kind, 0.0, None, f"control D_{kind} (eps 0)")
        return acc, balanced

    rows = []
    for kind in config.kinds:
        success, acc, balanced, construction, training = score(
            kind, eps, f"building D_{kind}", f"training on D_{kind}"
        )
        seconds = {"construction": round(construction, 2), "training": round(training, 2)}
        control_acc = control_balanced = None
        if config.control:
            started = time.perf_counter()
            (control_acc, control_balanced), was_reused = eps_zero.get(
                (*network_key, kind), partial(control, kind)
            )
            reused = reused or was_reused
            seconds["control"] = round(time.perf_counter() - started, 2)
        rows.append(
            NonrobustRow(
                kind=kind,
                eps=eps,
                step_size=step,
                attack_success=success,
                accuracy=acc,
                balanced_accuracy=balanced,
                control_accuracy=control_acc,
                control_balanced_accuracy=control_balanced,
                seconds=seconds,
            )
        )
    reference = None
    if config.control:
        started = time.perf_counter()
        (ref_acc, ref_balanced), was_reused = eps_zero.get(
            (*network_key, "reference"),
            lambda: fit(
                train.float_images(0, train.n),
                train.labels.clone(),
                "clean reference (eps 0, original labels)",
            ),
        )
        reused = reused or was_reused
        reference = CleanReference(ref_acc, ref_balanced, round(time.perf_counter() - started, 2))
    shares = torch.bincount(test.labels, minlength=test.num_classes).float() / test.n
    return NonrobustResult(
        config=config,
        rows=rows,
        reference=reference,
        chance=1.0 / train.num_classes,
        majority=float(shares.max()),
        architecture=architecture,
        n_train=train.n,
        n_test=test.n,
        eps_zero_reused=reused,
    )
