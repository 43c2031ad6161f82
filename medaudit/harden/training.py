"""``harden``: adversarial fine-tuning of a copy of the user's model, seeded, resumable, never
touching the input model.

Every epoch draws its shuffling, attack starts and dropout from ``seeded_generator(seed, epoch)``,
so a run resumed from the checkpoint written after epoch k repeats exactly what the
uninterrupted run does from epoch k + 1 (weights, optimiser state, IMA margins and history are
all in the checkpoint).
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medaudit.attacks.base import seeded_generator
from medaudit.attacks.margin import MarginConfig, MarginResult, minimal_perturbation
from medaudit.data import AuditData, stratified_indices
from medaudit.errors import ConfigError, MedauditError, first_line
from medaudit.harden.config import HardenConfig
from medaudit.harden.methods import IMA, Method, methods
from medaudit.models import AuditModel
from medaudit.models.archs import architectures
from medaudit.models.card import read_card
from medaudit.models.formats import ArchChoice, build_arch
from medaudit.models.trainable import copy_trainable, set_mode, trainable_network
from medaudit.report.atomic import write_atomic

Progress = Callable[[int, int, float, float], None]
"""(step, total steps, clean loss, adversarial loss) after every training batch."""
CHECKPOINT_VERSION = 1


@dataclass
class HardenResult:
    config: HardenConfig
    model: AuditModel
    """The hardened network inside the input model's preprocessing, in eval mode."""
    arch: str | None
    """The built-in architecture the network is an instance of (None: a TorchScript/export copy)."""
    history: list[dict[str, float]]
    resumed_after_epoch: int
    """Epochs read from the checkpoint (0: trained from the start)."""
    data: dict[str, Any]
    margins_initial: np.ndarray | None
    """IMA: the per-training-sample margins at the start (the expansion step) and the end."""
    margins_final: np.ndarray | None
    margins_before: MarginResult | None
    """Minimal perturbations (``attacks.margin``) on ``margin_samples`` training images, input model."""
    margins_after: MarginResult | None

    @property
    def network(self) -> nn.Module:
        return self.model.network

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "config": self.config.to_dict(),
            "arch": self.arch,
            "data": self.data,
            "history": self.history,
            "resumed_after_epoch": self.resumed_after_epoch,
        }
        if self.margins_initial is not None and self.margins_final is not None:
            most = float(self.config.margin_max or 0)
            doc["ima_margins"] = {
                stage: {
                    "mean": float(values.mean()),
                    "median": float(np.median(values)),
                    "at_max": float((values >= most).mean()),
                    "histogram": _histogram(values, most),
                }
                for stage, values in (("initial", self.margins_initial), ("final", self.margins_final))
            }
        for stage, result in (("before", self.margins_before), ("after", self.margins_after)):
            doc[f"minimal_perturbation_{stage}"] = result.to_dict() if result is not None else None
        return doc


def _histogram(values: np.ndarray, most: float) -> dict[str, list[float]]:
    counts, edges = np.histogram(values, bins=16, range=(0.0, most))
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def _card_arch(model: AuditModel) -> str | None:
    """The built-in architecture the model's card names, if any."""
    card = read_card(Path(model.info.path)) if model.info.card else None
    return card.arch if card is not None and card.arch in architectures else None


def hardenable_network(model: AuditModel, probe: torch.Tensor) -> tuple[nn.Module, str | None]:
    """A trainable copy of the model's network and its built-in architecture name.

    A TorchScript, exported or pickled model whose card names a built-in architecture is rebuilt
    as that architecture (its weights loaded, its outputs checked on ``probe``) so that it can be
    written as a state_dict too; anything else is copied as it is (a state_dict keeps its
    architecture, reported when it is a built-in one). Black-box ONNX is refused.
    """
    if model.is_onnx and not model.twin_verified:
        raise ConfigError(
            f"{model.info.path} is an ONNX model that runs in onnxruntime as a black box: it gives no "
            "gradients to train with, so it cannot be hardened; harden the PyTorch file it was exported "
            "from (state_dict with --arch, TorchScript .pt or torch.export .pt2)"
        )
    network = trainable_network(model)
    if model.info.format == "state_dict":  # already the architecture's own module
        return copy_trainable(model, network), model.info.arch if model.info.arch in architectures else None
    arch = _card_arch(model)
    if arch is None:
        return copy_trainable(model, network), None
    state = {k: v.detach().clone() for k, v in network.state_dict().items()}
    try:
        eager = build_arch(ArchChoice.from_card(arch, model.info.card), state).to(model.device).eval()
    except MedauditError:  # the card's arch does not fit these weights: train the file's own graph
        return copy_trainable(model, network), None
    x = model.preprocess(probe.to(model.device))
    with torch.no_grad():
        expected, got = network(x), eager(x)
    if expected.shape != got.shape or not torch.allclose(expected, got, atol=1e-4, rtol=1e-4):
        return copy_trainable(model, network), None
    return eager, arch


def _fingerprint(data: AuditData) -> str:
    """sha256 of the images and labels: a checkpoint resumes only on the data it was trained on."""
    digest = hashlib.sha256(data.images.contiguous().numpy().tobytes())
    digest.update(data.labels.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _margin_config(config: HardenConfig) -> MarginConfig:
    """Minimal perturbations searched up to 4 x the training budget, to 1/64 of that."""
    eps_max = min(1.0, 4 * config.eps) if config.norm == "linf" else 4 * config.eps
    return MarginConfig(norm=config.norm, eps_max=eps_max, tolerance=eps_max / 64, seed=config.seed)


def _read_checkpoint(path: Path, expected: dict[str, Any], device: torch.device) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(str(path), map_location=device, weights_only=True)
    except Exception as exc:  # weights_only loading runs no code; a damaged file fails in many ways
        raise ConfigError(
            f"cannot read the checkpoint {path} ({first_line(exc)}): delete it to start again"
        ) from None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise ConfigError(f"{path} is not a medaudit harden checkpoint: delete it or choose another path")
    differ = sorted(
        k for k in expected.keys() | state["run"].keys() if expected.get(k) != state["run"].get(k)
    )
    if differ:
        raise ConfigError(
            f"the checkpoint {path} was written by a run with other {', '.join(differ)}: "
            "delete it to start again, or choose another checkpoint path"
        )
    return state


def _write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(path, buffer.getvalue())


def _measure(model: AuditModel, data: AuditData | None, config: HardenConfig) -> MarginResult | None:
    return None if data is None else minimal_perturbation(model, data, _margin_config(config))


def harden(
    model: AuditModel,
    data: AuditData,
    config: HardenConfig,
    progress: Progress | None = None,
) -> HardenResult:
    """Fine-tune a copy of ``model`` (bound to ``data`` by ``bind_model``) with ``config.method``.

    ``config.checkpoint``: written after every epoch; if it exists and was written by a run with
    the same settings, source model and data, training resumes from it.
    """
    method_class = methods.get(config.method)
    if config.limit is not None and config.limit < data.n:
        note = {"limit": config.limit, "limit_seed": config.seed}
        data = data.subset(stratified_indices(data.labels, config.limit, config.seed), note)
    network, arch = hardenable_network(model, data.float_images(0, min(8, data.n)))
    info = replace(model.info, format="hardening", notes=[])
    work = AuditModel(
        network, model.spec, info, task=model.task or data.task, class_names=model.class_names,
        outputs=model.outputs,
    ).to(model.device)  # fmt: skip
    method: Method = method_class(config, data.n)
    parameters = [p for p in network.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    fingerprint = _fingerprint(data)
    run_key = {**config.matching_key(), "source_sha256": model.info.sha256, "data_sha256": fingerprint}
    path = Path(config.checkpoint) if config.checkpoint else None
    history: list[dict[str, float]] = []
    resumed = 0
    saved = _read_checkpoint(path, run_key, model.device) if path is not None else None
    if saved is not None:
        network.load_state_dict(saved["network"])
        optimiser.load_state_dict(saved["optimiser"])
        method.load_state(saved["method"])
        history, resumed = list(saved["history"]), int(saved["epoch"])
    probe_set = None
    if config.margin_samples:
        rows = stratified_indices(data.labels, min(config.margin_samples, data.n), config.seed)
        probe_set = data.subset(rows, {"margin_samples": len(rows)})
    before = _measure(model, probe_set, config)
    initial = method.initial.copy() if isinstance(method, IMA) else None
    per_epoch = sum(1 for start in range(0, data.n, config.batch_size) if data.n - start >= 2)
    total = config.epochs * per_epoch
    set_mode(network, True)
    for epoch in range(resumed, config.epochs):
        started = time.perf_counter()
        generator = seeded_generator(config.seed, epoch)
        order = torch.randperm(data.n, generator=generator).numpy()
        sums = np.zeros(3)
        # dropout and the like: seeded per epoch, the caller's global RNG untouched
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seeded_generator(config.seed, epoch, 1).initial_seed()) % 2**63)
            for batch, start in enumerate(range(0, data.n, config.batch_size)):
                index = order[start : start + config.batch_size]
                if len(index) < 2:  # BatchNorm cannot train on one image
                    continue
                x, y = data.float_at(index).to(model.device), data.labels[index].to(model.device)
                loss, clean, adversarial = method.batch_loss(work, x, y, index, generator)
                if not torch.isfinite(loss):
                    raise ConfigError(f"training diverged (non-finite loss in epoch {epoch + 1}): lower --lr")
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                sums += (clean, adversarial, 1)
                if progress is not None:
                    progress(epoch * per_epoch + batch + 1, total, clean, adversarial)
        method.end_epoch()
        history.append(
            {
                "epoch": epoch + 1,
                "clean_loss": float(sums[0] / sums[2]),
                "adv_loss": float(sums[1] / sums[2]),
                "seconds": round(time.perf_counter() - started, 2),
            }
        )
        if path is not None:
            state = {
                "version": CHECKPOINT_VERSION, "run": run_key, "epoch": epoch + 1, "history": history,
                "network": network.state_dict(), "optimiser": optimiser.state_dict(), "method": method.state(),
            }  # fmt: skip
            _write_checkpoint(path, state)
    set_mode(network, False)
    work.eval()
    return HardenResult(
        config=config,
        model=work,
        arch=arch,
        history=history,
        resumed_after_epoch=resumed,
        data={"describe": data.describe(), "n": data.n, "sha256": fingerprint, "identity": data.identity},
        margins_initial=initial,
        margins_final=method.margins.margins.copy() if isinstance(method, IMA) else None,
        margins_before=before,
        margins_after=_measure(work, probe_set, config),
    )
