"""The contract every registered attack keeps: shape, budget, [0, 1], eps 0, seeded determinism."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import medaudit.attacks  # noqa: F401  (registers the attacks)
from medaudit.attacks import attacks
from medaudit.attacks.base import Attack, is_correct
from medaudit.data import AuditData
from medaudit.models import AuditModel, InputSpec, bind_model
from medaudit.models.wrapper import ModelInfo

# every attack registered at collection time, with every norm it declares
CASES = [
    pytest.param(name, norm, id=f"{name}-{norm}")
    for name in attacks.names()
    for norm in ("linf", "l2")
    if norm in attacks.get(name).norms
]
PER_SAMPLE_EPS = [name for name in ("fgsm", "pgd", "pgd-cw", "bim") if name in attacks]
EPS = {"linf": 8 / 255, "l2": 0.5}
# enough effort to move, little enough to stay fast
EFFORT = {"steps": 5, "queries": 60}


def build(name: str, **overrides: object) -> Attack:
    cls = attacks.get(name)
    fields = {f.name for f in dataclasses.fields(cls)}
    params = {k: v for k, v in {**EFFORT, **overrides}.items() if k in fields}
    return cls(**params)


def wrap(network: torch.nn.Module, data: AuditData) -> AuditModel:
    info = ModelInfo(path="memory", format="torch", sha256="", parameters=None)
    model = AuditModel(network, InputSpec(), info)
    bind_model(model, data)
    return model


def tiny_convnet(size: int = 16, seed: int = 0) -> torch.nn.Module:
    """Conv, ReLU and a dense head: its logits depend strongly on the input (unlike a
    global-pooled CNN at random init, which is nearly constant)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        network = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Flatten(),
            torch.nn.Linear(4 * size * size, 2),
        )
        with torch.no_grad():
            network[3].weight.mul_(10.0)
    return network.eval()


@pytest.fixture(scope="module")
def setup(audit_data) -> tuple[AuditModel, torch.Tensor, torch.Tensor]:
    data = audit_data(n=16, size=16, seed=3)
    model = wrap(tiny_convnet(size=16), data)
    x = data.float_images(0, data.n)
    # labels the model gets right, so every attack really has something to do
    y = model.predict(x).argmax(dim=1)
    return model, x, y


def run(name: str, norm: str, setup, eps, seed: int = 0, **overrides: object) -> torch.Tensor:
    model, x, y = setup
    generator = torch.Generator().manual_seed(seed)
    return build(name, **overrides)(model, x, y, eps=eps, norm=norm, generator=generator)


def distances(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)


def tolerance(norm: str) -> float:
    return 1e-6 if norm == "linf" else 1e-5


def test_registry_has_the_base_attacks() -> None:
    assert {"fgsm", "pgd", "pgd-cw", "bim"} <= set(attacks.names())
    assert CASES  # collection found something to test


@pytest.mark.parametrize(("name", "norm"), CASES)
def test_budget_shape_and_range(name: str, norm: str, setup) -> None:
    _, x, _ = setup
    before = x.clone()
    eps = EPS[norm]
    x_adv = run(name, norm, setup, eps)
    assert torch.equal(x, before), "the attack modified its input in place"
    assert x_adv.shape == x.shape
    assert x_adv.dtype == x.dtype
    assert torch.isfinite(x_adv).all()
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert distances(x_adv - x, norm).max() <= eps + tolerance(norm)
    assert not torch.equal(x_adv, x), "the attack did not move any image"


@pytest.mark.parametrize(("name", "norm"), CASES)
def test_large_budget_breaks_the_model(name: str, norm: str, setup) -> None:
    """Not a contract on strength in general, but an attack that cannot fool a tiny random CNN
    with a huge budget is broken."""
    model, _x, y = setup
    x_adv = run(name, norm, setup, {"linf": 0.5, "l2": 8.0}[norm])
    accuracy = is_correct(model.predict(x_adv), y, model.task).float().mean()
    assert accuracy <= 0.5


@pytest.mark.parametrize(("name", "norm"), CASES)
def test_eps_zero_returns_the_input(name: str, norm: str, setup) -> None:
    _, x, _ = setup
    assert torch.equal(run(name, norm, setup, 0.0), x)


@pytest.mark.parametrize(("name", "norm"), CASES)
def test_same_seed_same_output(name: str, norm: str, setup) -> None:
    eps = EPS[norm]
    first = run(name, norm, setup, eps, seed=7)
    second = run(name, norm, setup, eps, seed=7)
    assert torch.equal(first, second)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", [n for n in ("pgd", "pgd-cw") if n in attacks])
def test_random_start_uses_the_generator(name: str, norm: str, setup) -> None:
    """One step from a random start: a different seed must give a different point."""
    eps = EPS[norm]
    first = run(name, norm, setup, eps, seed=1, steps=1)
    second = run(name, norm, setup, eps, seed=2, steps=1)
    assert not torch.equal(first, second)


def test_empty_batch(setup) -> None:
    model, x, y = setup
    empty = x[:0]
    for name in PER_SAMPLE_EPS:
        out = build(name)(model, empty, y[:0], eps=0.1, norm="linf", generator=torch.Generator())
        assert out.shape == empty.shape


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", PER_SAMPLE_EPS)
def test_per_sample_eps(name: str, norm: str, setup) -> None:
    """A tensor eps (N,): each sample stays within its own budget; eps 0 leaves a sample unchanged."""
    _, x, _ = setup
    scale = EPS[norm]
    eps = torch.linspace(0.0, scale, len(x))
    x_adv = run(name, norm, setup, eps)
    assert x_adv.shape == x.shape
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    used = distances(x_adv - x, norm)
    assert (used <= eps + tolerance(norm)).all(), (used, eps)
    assert torch.equal(x_adv[0], x[0])  # eps 0 for the first sample
    # the budgets really differ: the big-budget samples use more than the smallest non-zero eps
    assert used[len(x) // 2 :].max() > eps[1] + tolerance(norm)


@pytest.mark.parametrize("name", PER_SAMPLE_EPS)
def test_per_sample_eps_matches_a_uniform_float(name: str, setup) -> None:
    """A constant eps tensor is the same budget as the float: same result with the same seed."""
    _, x, _ = setup
    eps = 4 / 255
    as_float = run(name, "linf", setup, eps, seed=3)
    as_tensor = run(name, "linf", setup, torch.full((len(x),), eps), seed=3)
    assert torch.allclose(as_float, as_tensor, atol=1e-6)
