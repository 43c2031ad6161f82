"""The unbounded-budget honesty check uses its own strong attack, whatever --attack says.

One FGSM step at eps 0.5 overshoots: on an ordinary trained CNN it leaves well over 5% of
the samples correct, and judging the model by it cried "gradient masking" where there is
none. The check now runs many-step PGD (square for a black-box model) and names it; a model
whose gradient is masked still fails it.
"""

from __future__ import annotations

import pytest
import torch
from conftest import train_cnn
from torch import nn

import medaudit.attacks  # noqa: F401  (registers the attacks)
from medaudit.attacks import AttackConfig, attacks, run_attacks
from medaudit.attacks.base import is_correct
from medaudit.attacks.checks import (
    NOT_DRAWN,
    UNBOUNDED_EPS,
    UNBOUNDED_MAX_ACCURACY,
    AuditedSweep,
    run_checks,
)
from medaudit.data import AuditData
from medaudit.models import AuditModel, InputSpec, bind_model
from medaudit.models.wrapper import ModelInfo
from medaudit.task import Task

UNBOUNDED = "unbounded budget breaks the model"
SIZE = 16


def halves(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes told apart by which half of the image is brighter, by a varying amount."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = 0.35 + 0.3 * torch.rand(n, 1, SIZE, SIZE, generator=generator)
    strength = 0.01 + 0.09 * torch.rand(n, generator=generator)
    shift = (torch.where(labels == 1, 1.0, -1.0) * strength).view(-1, 1, 1, 1)
    images[..., : SIZE // 2] += shift
    images[..., SIZE // 2 :] -= shift
    return images.clamp(0, 1), labels


class Requantised(nn.Module):
    """Rounds its input to 255 grey levels first (as a uint8 round trip would): the same
    predictions, but a zero input gradient everywhere, so gradient attacks stand still."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(torch.round(x * 255) / 255)


def wrap(network: nn.Module, data: AuditData, format: str = "torch") -> AuditModel:
    info = ModelInfo(path="memory", format=format, sha256="", parameters=None)
    model = AuditModel(network, InputSpec(), info)
    bind_model(model, data)
    return model


@pytest.fixture(scope="module")
def cnn() -> nn.Module:
    return train_cnn(*halves(512, seed=0), 200)  # about a second: an ordinary, unmasked CNN


@pytest.fixture(scope="module")
def data() -> AuditData:
    images, labels = halves(128, seed=1)
    return AuditData(images=images, labels=labels, task=Task.BINARY, class_names=("left", "right"))


def checks(model: AuditModel, data: AuditData, config: AttackConfig) -> dict[str, dict]:
    result = run_attacks(model, data, config)
    return {c["check"]: c for c in AuditedSweep(result, run_checks(model, data, result)).check_records()}


def fgsm_unbounded_accuracy(model: AuditModel, data: AuditData) -> float:
    """What the check measured before: one FGSM step at eps 0.5 on every clean-correct sample."""
    x = data.float_at(list(range(data.n)))
    correct = is_correct(model.predict(x), data.labels, model.task)
    x, y = x[correct], data.labels[correct]
    x_adv = attacks.get("fgsm")()(
        model, x, y, eps=UNBOUNDED_EPS["linf"], norm="linf", generator=torch.Generator()
    )
    return float(is_correct(model.predict(x_adv), y, model.task).float().mean())


def test_the_cnn_is_a_real_test_case(cnn, data) -> None:
    """Guard: the CNN is accurate and FGSM at eps 0.5 leaves it well above the check's 5%."""
    model = wrap(cnn, data)
    assert (
        is_correct(model.predict(data.float_at(list(range(data.n)))), data.labels, model.task).float().mean()
        > 0.9
    )
    assert fgsm_unbounded_accuracy(model, data) > 2 * UNBOUNDED_MAX_ACCURACY


@pytest.mark.parametrize(
    ("attack", "params", "norm"),
    [
        ("fgsm", {}, "linf"),
        ("fgsm", {}, "l2"),
        ("pgd", {"steps": 1}, "linf"),
        ("square", {"queries": 5}, "linf"),
    ],
    ids=["fgsm", "fgsm-l2", "pgd-1-step", "square-5-queries"],
)
def test_weak_attack_does_not_cry_masking_on_an_ordinary_cnn(cnn, data, attack, params, norm) -> None:
    model = wrap(cnn, data)
    eps = 2 / 255 if norm == "linf" else 0.1
    config = AttackConfig(attacks=(attack,), eps=(eps,), norm=norm, params={attack: params} if params else {})
    record = checks(model, data, config)[UNBOUNDED]
    assert record["passed"], record
    assert record["detail"].startswith("pgd-cw (100 steps from a random start)"), record
    assert f"({norm}) leaves accuracy 0.000" in record["detail"]


def test_gradient_masked_cnn_still_fails(cnn, data) -> None:
    """The same CNN behind a zero-gradient requantisation: predictions unchanged, the check fails."""
    model = wrap(Requantised(cnn), data)
    x = data.float_at(list(range(data.n)))
    assert (model.predict(x).argmax(dim=1) == wrap(cnn, data).predict(x).argmax(dim=1)).all()
    found = checks(model, data, AttackConfig(attacks=("fgsm",), eps=(2 / 255,)))
    assert not found["gradients non-zero and finite"]["passed"]
    record = found[UNBOUNDED]
    assert not record["passed"], record
    assert record["detail"].startswith("pgd-cw (100 steps from a random start)"), record
    assert "gradient masking" in record["detail"]


def test_black_box_model_gets_square(cnn, data) -> None:
    """No gradients (ONNX without a verified twin): the check's attack is square with 1000 queries."""
    model = wrap(cnn, data, format="onnx")
    assert not model.has_gradients
    config = AttackConfig(attacks=("square",), eps=(2 / 255,), params={"square": {"queries": 5}})
    record = checks(model, data, config)[UNBOUNDED]
    assert record["detail"].startswith("square (1000 queries)"), record
    assert record["passed"], record


def test_check_is_seeded_per_batch(cnn, data) -> None:
    """A shard cut on a batch boundary re-attacks its samples exactly as the whole run does."""
    model = wrap(cnn, data)
    config = AttackConfig(attacks=("fgsm",), eps=(2 / 255,), batch_size=32, seed=3)
    whole = run_checks(model, data, run_attacks(model, data, config)).unbounded
    part = data.shard(32, data.n, {"index": 1})
    assert (run_checks(model, part, run_attacks(model, part, config)).unbounded == whole[32:]).all()
    assert (whole != NOT_DRAWN).sum() >= 32
