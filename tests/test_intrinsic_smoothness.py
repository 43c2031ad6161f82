"""Empirical local Lipschitz constant: exact on linear models, monotone in steps, seeded, batch-free."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from medaudit.data import AuditData
from medaudit.errors import ConfigError
from medaudit.intrinsic.smoothness import LipschitzConfig, lipschitz_ratio, local_lipschitz
from medaudit.models import AuditModel, InputSpec, bind_model
from medaudit.models.wrapper import ModelInfo
from medaudit.task import Task

SIZE = 8


def wrap(network: torch.nn.Module, data: AuditData, fmt: str = "torch") -> AuditModel:
    # outputs declared: small linear outputs in [0, 1] would otherwise be read as probabilities
    info = ModelInfo(path="memory", format=fmt, sha256="", parameters=None)
    model = AuditModel(network, InputSpec(), info, outputs="logits")
    if fmt == "torch":
        bind_model(model, data)
    return model


@pytest.fixture(scope="module")
def interior_data() -> AuditData:
    """Pixels in [0.25, 0.75]: the eps-box never touches [0, 1], so clamping cannot lower the maximum."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(64, 192, (10, 1, SIZE, SIZE), generator=generator).to(torch.uint8)
    return AuditData(images, torch.arange(10) % 2, Task.BINARY, ("a", "b"))


@pytest.fixture(scope="module")
def cnn_setup(audit_data, make_cnn) -> tuple[AuditModel, AuditData]:
    data = audit_data(n=12, size=16, seed=1)
    return wrap(make_cnn(seed=0), data), data


def linear(rows: int, seed: int = 1) -> torch.nn.Sequential:
    """f(x) = W x + b with one row, or two rows w and -w (binary logits that move in opposition)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(SIZE * SIZE, rows))
    if rows == 2:
        with torch.no_grad():
            network[1].weight[1] = -network[1].weight[0]
    return network.eval()


def test_ratio_helper_on_known_pairs() -> None:
    out = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    out_perturbed = torch.tensor([[1.0, -2.0], [1.0, 1.0]])
    x = torch.zeros(2, 1, 2, 2)
    x_perturbed = x.clone()
    x_perturbed[0, 0, 0, 0] = 0.5
    x_perturbed[0, 0, 1, 1] = -0.25
    # sample 0: L1 3 over L-inf 0.5; sample 1: x' == x, reported as 0 (not NaN or inf)
    assert lipschitz_ratio(out, out_perturbed, x, x_perturbed).tolist() == [6.0, 0.0]


@pytest.mark.parametrize("rows", [1, 2])
def test_linear_model_reaches_the_closed_form(interior_data: AuditData, rows: int) -> None:
    network = linear(rows)
    model = wrap(network, interior_data)
    # one logit z is audited as [-z/2, z/2] (L1 change |dz|); rows w, -w change by 2 |w.d|;
    # either way max over the L-inf box of ||W d||_1 / ||d||_inf is attained at d = eps sign(w)
    closed_form = rows * network[1].weight[0].abs().sum().item()
    estimate = local_lipschitz(model, interior_data, LipschitzConfig()).per_sample
    assert estimate.min().item() >= 0.99 * closed_form
    assert estimate.max().item() <= closed_form * (1 + 1e-5)


def test_probabilities_bound_the_logit_estimate(interior_data: AuditData) -> None:
    network = linear(2)
    model = wrap(network, interior_data)
    closed_form = 2 * network[1].weight[0].abs().sum().item()
    estimate = local_lipschitz(model, interior_data, LipschitzConfig(output="probabilities")).per_sample
    # binary softmax is 1/2-Lipschitz from the logits' L1 to the probabilities' L1
    assert (estimate > 0).all()
    assert estimate.max().item() <= 0.5 * closed_form * (1 + 1e-5)


def test_more_steps_never_lower_the_estimate(cnn_setup) -> None:
    model, data = cnn_setup
    runs = [local_lipschitz(model, data, LipschitzConfig(steps=s)).per_sample for s in (1, 2, 4, 8, 16)]
    for fewer, more in itertools.pairwise(runs):
        assert (more >= fewer).all()
    assert (runs[-1] > runs[0]).any()


def test_batch_size_does_not_change_the_estimate(cnn_setup) -> None:
    model, data = cnn_setup
    # 2 steps: the random start still matters (another start moves every sample by >= 1 %), so
    # seeding per batch would fail; 1e-3 leaves room for float32 noise of batched convolutions
    whole = local_lipschitz(model, data, LipschitzConfig(steps=2, batch_size=data.n)).per_sample
    for batch_size in (1, 5):
        split = local_lipschitz(model, data, LipschitzConfig(steps=2, batch_size=batch_size)).per_sample
        torch.testing.assert_close(split, whole, rtol=1e-3, atol=0)


def test_seeded_and_reproducible(cnn_setup) -> None:
    model, data = cnn_setup
    first = local_lipschitz(model, data, LipschitzConfig(seed=3, steps=2)).per_sample
    again = local_lipschitz(model, data, LipschitzConfig(seed=3, steps=2)).per_sample
    other = local_lipschitz(model, data, LipschitzConfig(seed=4, steps=2)).per_sample
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_halving_the_logits_halves_the_estimate(cnn_setup, make_cnn) -> None:
    model, data = cnn_setup
    network = make_cnn(seed=0)
    with torch.no_grad():
        network.classifier.weight.mul_(0.5)
        network.classifier.bias.mul_(0.5)
    smoother = wrap(network, data)
    sharp = local_lipschitz(model, data, LipschitzConfig()).per_sample
    smooth = local_lipschitz(smoother, data, LipschitzConfig()).per_sample
    torch.testing.assert_close(smooth, 0.5 * sharp, rtol=1e-5, atol=0)


def test_summary_and_progress(cnn_setup) -> None:
    model, data = cnn_setup
    seen: list[int] = []
    result = local_lipschitz(model, data, LipschitzConfig(steps=2, batch_size=5), progress=seen.append)
    summary = result.to_dict()
    assert seen == [5, 5, 2]
    assert summary["n"] == data.n == len(result.per_sample)
    assert summary["mean"] == pytest.approx(result.per_sample.double().mean().item())
    assert (
        summary["median"] <= summary["q90"] <= summary["max"] == pytest.approx(result.per_sample.max().item())
    )
    assert {k: summary[k] for k in ("eps", "steps", "step_size", "output", "seed")} == {
        "eps": 0.01,
        "steps": 2,
        "step_size": 0.003,
        "output": "logits",
        "seed": 0,
    }
    assert not model.training


def test_black_box_model_is_refused(interior_data: AuditData) -> None:
    model = wrap(linear(1), interior_data, fmt="onnx")
    assert not model.has_gradients
    with pytest.raises(ConfigError, match="needs gradients"):
        local_lipschitz(model, interior_data, LipschitzConfig())


@pytest.mark.parametrize(
    "change", [{"eps": 0.0}, {"eps": -0.01}, {"steps": 0}, {"step_size": 0.0}, {"output": "softmax"}]
)
def test_invalid_config(change: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        dataclasses.replace(LipschitzConfig(), **change)
