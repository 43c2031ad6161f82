"""Shortcut susceptibility: how readily does the audited model learn an artifact shortcut when fine-tuned?

The protocol of "Source Matters" (Juodelyte et al. 2024): for each fraction p, a copy of the
model is fine-tuned on training images where a seeded random fraction p of the POSITIVE-class
images carry the artifact (negatives stay clean), so "artifact => positive" is as predictive as
p makes it. Each copy is tested on the clean test images (i.i.d.) and on test images with the
artifact on every NEGATIVE-class image (o.o.d.: the correlation reversed). A model that picks up
the shortcut keeps its i.i.d. AUC while its o.o.d. AUC falls as p rises.

Every o.o.d. AUC comes with a bootstrap interval over the test images, and so does its drop from
the lowest to the highest p (the same resamples for every fraction, so the drop is paired). The
verdict says what was measured within the fine-tuning budget (epochs, images, learning rate): a
flat curve after a few epochs on a few thousand images does not show that the model could not
learn the shortcut with more, so the wording never claims that.

The user's model is never modified: every fraction trains a fresh deep copy of its network,
under a forked RNG seeded from ``config.seed`` (so results reproduce and the global RNG is untouched).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from medaudit.confounders.artifacts import apply_artifact
from medaudit.confounders.calibration import bootstrap_weights, weighted_auc
from medaudit.confounders.config import FinetuneConfig
from medaudit.confounders.probe import resolve_positive
from medaudit.data import AuditData, stratified_indices
from medaudit.errors import ConfigError, ModelLoadError
from medaudit.metrics import predictions, probabilities, roc_auc
from medaudit.models import AuditModel
from medaudit.models.trainable import copy_trainable, set_mode, trainable_network

SUSCEPTIBLE = 0.1
"""Lower end of the o.o.d. AUC drop's interval (lowest to highest p) from which the model is said to
pick up the shortcut within the budget."""
MILD = 0.02
"""... and from which it is said to pick it up mildly."""


@dataclass
class FinetuneResult:
    config: FinetuneConfig
    positive_class: str
    baseline: dict[str, Any]
    curve: list[dict[str, Any]]
    """One row per fraction; ``ood_auc_ci`` is its bootstrap interval."""
    drop_ci: tuple[float, float]
    """Bootstrap interval of the o.o.d. AUC drop from the lowest to the highest fraction."""

    def budget(self) -> str:
        """What the fine-tuning was allowed: the verdict holds for this budget only."""
        c, n = self.config, self.curve[0]["n_train"]
        return f"{c.epochs} epochs on {n} training images, Adam lr {c.lr:g}, batch {c.batch_size}"

    def verdict(self) -> tuple[str, float | None]:
        """(sentence saying what was measured, o.o.d. AUC drop from the lowest to the highest fraction)."""
        name = self.config.artifact
        first, last = self.curve[0], self.curve[-1]
        a, b = first["ood_auc"], last["ood_auc"]
        if len(self.curve) < 2 or not (math.isfinite(a) and math.isfinite(b)):
            return "not enough fractions or classes to compare o.o.d. AUC", None
        drop = a - b
        low, high = self.drop_ci
        where = (
            f"o.o.d. AUC {a:.2f} at p={first['fraction']:g} and {b:.2f} at p={last['fraction']:g} "
            f"(drop {drop:+.2f}, {self.config.confidence:.0%} CI {low:+.2f} to {high:+.2f})"
        )
        budget = f"after {self.budget()}"
        if math.isfinite(low) and low >= SUSCEPTIBLE:
            return f"{where}: {budget}, the model picks up the {name} shortcut", drop
        if math.isfinite(low) and low > 0 and drop >= MILD:
            return f"{where}: {budget}, the model picks up the {name} shortcut mildly", drop
        return (
            f"{where}: {budget}, no drop was measured whose interval excludes zero and that reaches {MILD:g}; "
            f"a larger budget or more test images could still show one",
            drop,
        )

    def to_dict(self) -> dict[str, Any]:
        """``results.finetune`` of the JSON document."""
        sentence, drop = self.verdict()
        return {
            "artifact": self.config.artifact,
            "strength": self.config.strength,
            "epochs": self.config.epochs,
            "lr": self.config.lr,
            "budget": {
                "epochs": self.config.epochs,
                "n_train": self.curve[0]["n_train"],
                "lr": self.config.lr,
                "batch_size": self.config.batch_size,
                "fractions": len(self.curve),
            },
            "positive_class": self.positive_class,
            "curve": self.curve,
            "baseline": self.baseline,
            "ood_auc_drop": drop,
            "ood_auc_drop_ci": list(self.drop_ci),
            "confidence": self.config.confidence,
            "bootstrap": self.config.bootstrap,
            "thresholds": {"susceptible": SUSCEPTIBLE, "mild": MILD},
            "verdict": sentence,
        }


def _artifact_on(images: torch.Tensor, rows: np.ndarray, config: FinetuneConfig, seed: int) -> torch.Tensor:
    """A uint8 copy of ``images`` with the artifact on ``rows`` (seeded per row index)."""
    out = images.clone()
    if len(rows):
        idx = torch.as_tensor(rows, dtype=torch.long)
        out[idx] = apply_artifact(
            images[idx], config.artifact, config.strength, seed, indices=[int(i) for i in rows],
            **dict(config.options),
        )  # fmt: skip
    return out


def _logits(model: AuditModel, network: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The AuditModel's pipeline (preprocess, network, adapt) with a given network: [0,1] NCHW in."""
    return model.adapt(network(model.preprocess(images)))


def _predict(
    model: AuditModel,
    network: nn.Module | None,
    images: torch.Tensor,
    batch_size: int,
    progress: Callable[[int], None] | None,
) -> torch.Tensor:
    """Logits for uint8 images; ``network=None`` is the user's unmodified model."""
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(model.device).float() / 255
            out = model.predict(x) if network is None else _logits(model, network, x)
            if not torch.isfinite(out).all():
                raise ModelLoadError("the fine-tuned model returned NaN or infinite outputs: lower --lr")
            chunks.append(out.float().cpu())
            if progress:
                progress(len(x))
    return torch.cat(chunks)


def _interval(rounds: np.ndarray, confidence: float) -> tuple[float, float]:
    finite = rounds[np.isfinite(rounds)]
    if len(finite) == 0:
        return math.nan, math.nan
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def _auc_rounds(logits: torch.Tensor, data: AuditData, positive: int, weights: np.ndarray) -> np.ndarray:
    """The positive class's AUC under each bootstrap row of ``weights``."""
    probs = probabilities(logits, data.task)[:, positive].numpy().astype(np.float64)
    return weighted_auc((data.labels == positive).numpy(), probs, weights)


def _scores(logits: torch.Tensor, data: AuditData, positive: int) -> tuple[float, float]:
    """(AUC of the positive class one-vs-rest, accuracy): the paper's AUC, not the macro one."""
    probs = probabilities(logits, data.task)
    auc = roc_auc((data.labels == positive).numpy(), probs[:, positive].numpy().astype(np.float64))
    accuracy = float((predictions(probs, data.task).cpu() == data.labels).float().mean())
    return auc, accuracy


def _train(
    model: AuditModel,
    network: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: FinetuneConfig,
    progress: Callable[[int], None] | None,
) -> None:
    """Adam on cross-entropy of the model's logits, ``config.epochs`` passes in seeded random order."""
    parameters = [p for p in network.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(parameters, lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    set_mode(network, True)
    for _ in range(config.epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            if len(idx) < 2 and len(order) > 1:  # BatchNorm cannot train on one image
                continue
            x = images[idx].to(model.device).float() / 255
            loss = nn.functional.cross_entropy(_logits(model, network, x), labels[idx].to(model.device))
            if not torch.isfinite(loss):
                raise ModelLoadError("fine-tuning diverged (non-finite loss): lower --lr")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if progress:
                progress(len(idx))
    set_mode(network, False)


def run_finetune(
    model: AuditModel,
    train_data: AuditData,
    test_data: AuditData,
    config: FinetuneConfig,
    progress: Callable[[int], None] | None = None,
) -> FinetuneResult:
    """Fine-tune a copy of the model per fraction p and measure i.i.d. and o.o.d. (reversed) AUC."""
    positive = resolve_positive(test_data, config.positive_class)
    if train_data.task is not test_data.task or train_data.num_classes != test_data.num_classes:
        raise ConfigError("the training and test data differ in task or number of classes")
    network = trainable_network(model)
    n_train = config.n_train(train_data.n)
    if n_train < train_data.n:
        train_data = train_data.subset(stratified_indices(train_data.labels, n_train, config.seed), {})
    train_images, train_labels = train_data.uint8_images(0, train_data.n), train_data.labels
    test_images, test_labels = test_data.uint8_images(0, test_data.n), test_data.labels
    ood_images = _artifact_on(
        test_images, np.flatnonzero((test_labels != positive).numpy()), config, config.seed + 1
    )
    baseline_iid = _scores(_predict(model, None, test_images, config.batch_size, None), test_data, positive)
    baseline_ood = _scores(_predict(model, None, ood_images, config.batch_size, None), test_data, positive)
    # one seeded order of the positives: the marked set at a larger p contains the one at a smaller p
    positives = np.flatnonzero((train_labels == positive).numpy())
    order = np.random.default_rng(config.seed).permutation(positives)
    weights = bootstrap_weights(test_data.n, config.bootstrap, config.seed)
    curve, rounds = [], []
    for fraction in sorted(config.fractions):
        marked = np.sort(order[: round(fraction * len(positives))])
        images = _artifact_on(train_images, marked, config, config.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            tuned = copy_trainable(model, network).to(model.device)
            _train(model, tuned, images, train_labels, config, progress)
        iid = _scores(_predict(model, tuned, test_images, config.batch_size, progress), test_data, positive)
        ood_logits = _predict(model, tuned, ood_images, config.batch_size, progress)
        ood = _scores(ood_logits, test_data, positive)
        rounds.append(_auc_rounds(ood_logits, test_data, positive, weights))
        curve.append(
            {
                "fraction": fraction,
                "iid_auc": iid[0],
                "iid_accuracy": iid[1],
                "ood_auc": ood[0],
                "ood_auc_ci": list(_interval(rounds[-1], config.confidence)),
                "ood_accuracy": ood[1],
                "n_train": n_train,
                "n_artifact": len(marked),
            }
        )
    baseline = {
        "iid_auc": baseline_iid[0],
        "iid_accuracy": baseline_iid[1],
        "ood_auc": baseline_ood[0],
        "ood_accuracy": baseline_ood[1],
        "n_test": test_data.n,
    }
    drop_ci = _interval(rounds[0] - rounds[-1], config.confidence)
    return FinetuneResult(config, test_data.class_names[positive], baseline, curve, drop_ci)
