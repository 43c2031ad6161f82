"""``.pt2`` programs exported for a fixed batch size run whole batches (vmapped), with eager results."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from medaudit.data import AuditData
from medaudit.models import LoadOptions, bind_model, load_model
from medaudit.models.formats import EXPORT_FIX, ExportedNetwork, FixedBatch, vectorise_failure

SIZE = 28
CARD = {
    "task": "binary-class",
    "preprocessing": {"input_size": SIZE, "channels": 1, "mean": [0.5], "std": [0.5]},
}


class Net(nn.Module):
    """Conv, batch norm and a head behind ``view(batch, -1)``: exported with a batch of 1, the graph
    holds the constant 1 in that view, as many users' exports do."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        norm = nn.BatchNorm2d(6)
        with torch.no_grad():  # running statistics that are not the identity, so eval-mode BN matters
            norm.running_mean = torch.rand(6) - 0.5
            norm.running_var = torch.rand(6) + 0.5
        self.body = nn.Sequential(nn.Conv2d(1, 6, 3, stride=2), norm, nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(6 * 6 * 6, 2)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return self.head(h.view(h.shape[0], -1))


def export(network: nn.Module, batch: int, folder: Path) -> Path:
    """``torch.export.export(model, (torch.zeros(batch, C, H, W),))``, the usual call, with a card."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(network, (torch.zeros(batch, 1, SIZE, SIZE),))
    path = folder / f"batch{batch}.pt2"
    torch.export.save(program, str(path))
    path.with_suffix(".json").write_text(json.dumps(CARD))
    return path


def eager(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the wrapper must give: the eager network on the normalised images."""
    return network((x - 0.5) / 0.5)


def count_calls(network: FixedBatch) -> list[tuple[int, ...]]:
    """The shape of every input that reaches the exported program's module."""
    shapes: list[tuple[int, ...]] = []
    exported = network.network
    assert isinstance(exported, ExportedNetwork)
    module = exported.module
    module.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)))
    return shapes


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(10, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def test_the_program_really_has_a_fixed_batch(tmp_path: Path, images: torch.Tensor) -> None:
    """Precondition of the other tests: called directly, the batch-1 program refuses 10 images."""
    program = torch.export.load(str(export(Net(), 1, tmp_path)))
    with pytest.raises(Exception, match="size"):
        program.module()(images)


@pytest.mark.parametrize("batch", [1, 4])
def test_fixed_batch_program_runs_whole_batches_with_eager_results(
    batch: int, tmp_path: Path, images: torch.Tensor
) -> None:
    network = Net()
    model = load_model(export(network, batch, tmp_path), LoadOptions(device="cpu"))
    assert isinstance(model.network, FixedBatch)
    assert model.network.vectorised and model.network.batch == batch
    assert any(f"batch size {batch}" in note and "vmap" in note for note in model.info.notes)
    shapes = count_calls(model.network)

    got = model.predict(images)
    # one call for the 10 images (not one per group of `batch`); the program sees its own batch size
    assert shapes == [(batch, 1, SIZE, SIZE)]
    with torch.no_grad():
        want = eager(network, images)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (want[0] - want[1]).abs().max() > 1e-3  # the images give different logits

    # the attacks' gradients: the same as the eager model's
    x = images.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x)[:, 1].sum(), x)
    x_ref = images.clone().requires_grad_(True)
    (want_grad,) = torch.autograd.grad(eager(network, x_ref)[:, 1].sum(), x_ref)
    torch.testing.assert_close(grad, want_grad, atol=1e-6, rtol=1e-4)
    assert want_grad.abs().max() > 0


def test_the_old_one_call_per_group_path_agrees_and_calls_per_image(
    tmp_path: Path, images: torch.Tensor
) -> None:
    network = Net()
    model = load_model(export(network, 1, tmp_path), LoadOptions(device="cpu"))
    assert isinstance(model.network, FixedBatch)
    looped = FixedBatch(model.network.network, 1, vectorised=False)
    shapes = count_calls(looped)
    with torch.no_grad():
        torch.testing.assert_close(looped((images - 0.5) / 0.5), eager(network, images), atol=1e-5, rtol=1e-5)
    assert shapes == [(1, 1, SIZE, SIZE)] * len(images)


class Unbatchable(nn.Module):
    """Reads a value out of the tensor, which vmap cannot do."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :2] * float(x.mean().item())


class WrongUnderVmap(nn.Module):
    """Computes something else under vmap: stands for an op whose batching rule is wrong."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = 2.0 if torch._C._functorch.is_batchedtensor(x) else 1.0
        return x.flatten(1)[:, :2] * scale


def test_vectorise_failure_names_what_vmap_cannot_do() -> None:
    reason = vectorise_failure(Unbatchable(), 1, (1, SIZE, SIZE))
    assert reason is not None and "vmap raised" in reason
    assert (
        vectorise_failure(WrongUnderVmap(), 1, (1, SIZE, SIZE))
        == "vmap outputs differ from one call per group"
    )
    assert vectorise_failure(nn.Flatten(), 1, (1, SIZE, SIZE)) is None


def test_a_program_vmap_cannot_batch_is_run_per_group_and_warned_about(
    tmp_path: Path,
    images: torch.Tensor,
    monkeypatch: pytest.MonkeyPatch,
    audit_data: Callable[..., AuditData],
) -> None:
    network = Net()
    path = export(network, 1, tmp_path)
    monkeypatch.setattr("medaudit.models.formats.vectorise_failure", lambda *_: "vmap raised X: y")
    model = load_model(path, LoadOptions(device="cpu"))
    assert isinstance(model.network, FixedBatch) and not model.network.vectorised
    note = next(n for n in model.info.notes if "batch size 1" in n)
    assert "vmap raised X: y" in note and EXPORT_FIX in note
    assert "dynamic_shapes=({0: torch.export.Dim('batch')},)" in EXPORT_FIX
    with torch.no_grad():
        torch.testing.assert_close(model.predict(images), eager(network, images), atol=1e-5, rtol=1e-5)
    warns = bind_model(model, audit_data(n=6, channels=1, size=SIZE, num_classes=2, seed=0))
    assert any(EXPORT_FIX in w and str(path) in w for w in warns)
