"""The worst-case sweep, the margins and the honesty checks against facts known without an attack.

A linear model z = w.x + b has an analytic minimal perturbation: |z| / ||w||_1 in L-inf
and |z| / ||w||_2 in L2 (as long as no pixel hits 0 or 1, which the data's [0.3, 0.7]
range and the budgets here guarantee). Nothing may break a sample below it; a working
attack breaks every sample just above it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pytest
import torch
from conftest import train_cnn
from torch import nn

import medaudit.attacks  # noqa: F401  (registers the attacks)
from medaudit.attacks import AttackConfig, attacks, run_attacks
from medaudit.attacks.base import is_correct
from medaudit.attacks.checks import AuditedSweep, _budget, run_checks
from medaudit.attacks.margin import MarginConfig, minimal_perturbation
from medaudit.attacks.sweep import CLEAN_WRONG, NOT_BROKEN
from medaudit.data import AuditData
from medaudit.models import AuditModel, InputSpec, bind_model
from medaudit.models.wrapper import ModelInfo
from medaudit.task import Task

SIDE = 8
DIM = SIDE * SIDE
DUAL = {"linf": 1, "l2": 2}  # the dual norm of w gives the margin
BASE_ATTACKS = ("fgsm", "pgd", "pgd-cw", "bim")


class Linear(nn.Module):
    """z = W x + b on the flattened image; one output is a binary logit."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T + self.bias


class Constant(nn.Module):
    """Logits that ignore the image (but stay in the autograd graph)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1) + 0.0 * x.flatten(1).sum(dim=1, keepdim=True)


class Quantised(nn.Module):
    """Rounds the input to 5 levels before a linear layer: zero input gradient almost everywhere."""

    def __init__(self, linear: Linear) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.round(x * 4) / 4)


def wrap(network: nn.Module, data: AuditData) -> AuditModel:
    info = ModelInfo(path="memory", format="torch", sha256="", parameters=None)
    model = AuditModel(network, InputSpec(), info)
    bind_model(model, data)
    return model


def mid_grey_images(n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.3 + 0.4 * torch.rand(n, 1, SIDE, SIDE, generator=generator)


def linear_problem(
    n: int = 40, outputs: int = 1, seed: int = 0, min_logit: float = 0.05
) -> tuple[Linear, torch.Tensor, torch.Tensor]:
    """A linear model and images it classifies with |z| >= min_logit (clear of the boundary)."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(outputs, DIM, generator=generator)
    if outputs > 1:  # equal L1 norms: the label nearest in logits is also nearest in L-inf
        weight = weight / weight.abs().sum(dim=1, keepdim=True) * DIM * 0.8
    bias = -0.5 * weight.sum(dim=1)  # the mid-grey image sits on the boundary
    images = mid_grey_images(4 * n, seed + 1)
    with torch.no_grad():
        z = images.flatten(1) @ weight.T + bias
    keep = (z.abs() >= min_logit).all(dim=1).nonzero()[:n, 0]
    assert len(keep) == n
    return Linear(weight, bias), images[keep], z[keep]


def binary_linear(n: int = 40, seed: int = 0) -> tuple[AuditModel, AuditData, torch.Tensor, Linear]:
    network, images, z = linear_problem(n, 1, seed)
    labels = (z[:, 0] > 0).long()  # the model's own predictions: every sample clean-correct
    data = AuditData(images=images, labels=labels, task=Task.BINARY, class_names=("neg", "pos"))
    return wrap(network, data), data, z[:, 0], network


def analytic_margins(network: Linear, z: torch.Tensor, norm: str) -> np.ndarray:
    """Per-output |z_j| / ||w_j||_dual; for several outputs the smallest (the first label to flip)."""
    dual = network.weight.detach().norm(p=DUAL[norm], dim=1)
    per_output = (z.abs().reshape(len(z), -1) / dual).numpy().astype(np.float64)
    return per_output.min(axis=1)


def separated_eps(margins: np.ndarray, count: int) -> tuple[float, ...]:
    """Up to ``count`` budgets spread over the margins, each more than 1% away from every margin."""
    ordered = np.sort(margins)
    gaps = np.flatnonzero(ordered[1:] / ordered[:-1] > 1.025)  # ordered[i] .. ordered[i + 1]
    if len(gaps) == 0:
        return ()
    targets = np.linspace(0, len(ordered) - 2, count + 2)[1:-1]
    chosen = {int(gaps[np.abs(gaps - t).argmin()]) for t in targets}
    return tuple(sorted(float(np.sqrt(ordered[i] * ordered[i + 1])) for i in chosen))


# ---- linear model: the sweep against the analytic margin ----


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", [n for n in BASE_ATTACKS if n in attacks])
def test_attack_breaks_just_above_the_analytic_margin(name: str, norm: str) -> None:
    """One sign step (L-inf) or one normalised step (L2) along -w is optimal for a linear model,
    so each attack breaks every sample at 1.01 x its margin, and none at 0.99 x."""
    model, data, z, network = binary_linear()
    margins = torch.as_tensor(analytic_margins(network, z, norm), dtype=torch.float32)
    x, y = data.float_images(0, data.n), data.labels
    attack = attacks.get(name)(**({"steps": 50} if name != "fgsm" else {}))
    for factor, expect_broken in ((1.01, True), (0.99, False)):
        eps = factor * margins
        x_adv = attack(model, x, y, eps=eps, norm=norm, generator=torch.Generator().manual_seed(0))
        broken = ~is_correct(model.predict(x_adv), y, model.task)
        assert bool(broken.all() if expect_broken else (~broken).all()), (factor, broken.sum())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_sweep_matches_the_analytic_robust_accuracy(norm: str) -> None:
    model, data, z, network = binary_linear()
    margins = analytic_margins(network, z, norm)
    eps = separated_eps(margins, 5)
    assert len(eps) >= 3
    config = AttackConfig(
        attacks=("fgsm", "pgd", "pgd-cw"), eps=eps, norm=norm, params={"pgd": {"steps": 50}}, batch_size=16
    )
    result = run_attacks(model, data, config)
    assert result.clean_correct.all()
    for outcome in result.outcomes:
        np.testing.assert_array_equal(outcome.robust, margins > outcome.eps)
        assert result.robust_accuracy(outcome.eps) == pytest.approx(float((margins > outcome.eps).mean()))
        # FGSM is optimal here: it breaks everything breakable and leaves nothing for the rest
        assert set(np.unique(outcome.broken_by)) <= {0, NOT_BROKEN}


@pytest.mark.parametrize(("norm", "tolerance", "eps_max"), [("linf", 2e-4, 0.25), ("l2", 1e-3, 1.0)])
def test_minimal_perturbation_matches_the_analytic_margin(
    norm: str, tolerance: float, eps_max: float
) -> None:
    model, data, z, network = binary_linear(n=24, seed=3)
    margins = analytic_margins(network, z, norm)
    assert margins.max() < eps_max
    config = MarginConfig(attack="pgd-cw", norm=norm, eps_max=eps_max, tolerance=tolerance, steps=20)
    result = minimal_perturbation(model, data, config)
    found = result.margins
    assert result.clean_correct.all() and np.isfinite(found).all()
    # below the analytic margin nothing can flip the prediction: finding one would be a budget bug
    assert (found >= margins - 1e-6).all(), (found - margins).min()
    slack = 1e-6 if norm == "linf" else 2e-4  # L2 PGD converges to the optimal direction only nearly
    assert (found <= margins + tolerance + slack).all(), (found - margins).max()
    as_dict = result.to_dict()
    assert as_dict["n_attacked"] == data.n and as_dict["n_censored"] == 0
    assert as_dict["quantiles"]["q50"] == pytest.approx(float(np.quantile(found, 0.5)))


def test_minimal_perturbation_censors_beyond_eps_max() -> None:
    model, data, z, network = binary_linear(n=24, seed=3)
    margins = analytic_margins(network, z, "linf")
    eps_max = float(np.median(margins))
    config = MarginConfig(attack="pgd", norm="linf", eps_max=eps_max, tolerance=eps_max / 50, steps=20)
    result = minimal_perturbation(model, data, config)
    beyond = margins > eps_max * 1.01
    assert np.isinf(result.margins[beyond]).all()
    assert np.isfinite(result.margins[margins < eps_max * 0.99]).all()
    as_dict = result.to_dict()
    assert as_dict["n_censored"] == int(np.isinf(result.margins).sum())
    # quantiles that reach into the censored samples are "> eps_max" (inf), never nan
    quantiles = as_dict["quantiles"]
    assert not any(np.isnan(v) for v in quantiles.values())
    share_censored = as_dict["n_censored"] / as_dict["n_attacked"]
    for name, value in quantiles.items():
        q = int(name[1:]) / 100
        if q > 1 - share_censored + 1e-9:
            assert value == float("inf"), (name, value)
        elif q < 1 - share_censored - 1 / data.n:
            assert value <= eps_max, (name, value)


# ---- invariants of the bookkeeping ----


def test_constant_model_is_never_broken() -> None:
    """Nothing an attack does changes a constant model's answer: robust == clean at every eps."""
    images = mid_grey_images(20, seed=5)
    labels = torch.arange(20) % 2
    data = AuditData(images=images, labels=labels, task=Task.BINARY, class_names=("a", "b"))
    model = wrap(Constant(torch.tensor([[0.3, -0.2]])), data)
    names = tuple(attacks.names())
    params = {name: {"steps": 5, "queries": 40} for name in names}
    params = {
        name: {k: v for k, v in p.items() if k in attacks.get(name).__dataclass_fields__}
        for name, p in params.items()
    }
    config = AttackConfig(attacks=names, eps=(1 / 255, 8 / 255, 0.25), params=params)
    result = run_attacks(model, data, config)
    clean = float(result.clean_correct.mean())
    assert clean == pytest.approx(0.5)
    for record in result.records():
        assert record["robust_accuracy"] == pytest.approx(clean), record
        assert record["attack_success_rate"] == pytest.approx(0.0)


def make_blobs(n: int, seed: int, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes told apart by which half of the image is brighter, by a varying amount."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = 0.35 + 0.3 * torch.rand(n, 1, size, size, generator=generator)
    strength = 0.01 + 0.09 * torch.rand(n, generator=generator)  # margins spread over the sweep
    shift = (torch.where(labels == 1, 1.0, -1.0) * strength).view(-1, 1, 1, 1)
    images[..., : size // 2] += shift
    images[..., size // 2 :] -= shift
    return images.clamp(0, 1), labels


@pytest.fixture(scope="module")
def trained() -> tuple[AuditModel, AuditData]:
    train_x, train_y = make_blobs(512, seed=0)
    network = train_cnn(train_x, train_y, 60)
    test_x, test_y = make_blobs(64, seed=1)
    test_y = test_y.clone()
    test_y[:6] = 1 - test_y[:6]  # a few deliberately wrong labels: clean-wrong samples
    data = AuditData(images=test_x, labels=test_y, task=Task.BINARY, class_names=("left", "right"))
    model = wrap(network, data)
    return model, data


SWEEP_EPS = (0.5 / 255, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255, 32 / 255)


@pytest.fixture(scope="module")
def sweep(trained):
    model, data = trained
    config = AttackConfig(attacks=("fgsm", "pgd", "pgd-cw"), eps=SWEEP_EPS, batch_size=24, seed=1)
    return run_attacks(model, data, config, keep_adversarial=True)


def test_trained_model_is_a_real_test_case(sweep) -> None:
    """Guard: the fixture must have clean-wrong samples, robust ones and broken ones."""
    clean = sweep.clean_correct.mean()
    assert 0.7 <= clean < 1.0
    assert sweep.robust_accuracy(SWEEP_EPS[0]) > 0.3
    assert sweep.robust_accuracy(SWEEP_EPS[-1]) < sweep.robust_accuracy(SWEEP_EPS[0])


def test_robust_accuracy_is_monotone_in_eps(sweep) -> None:
    accuracies = [sweep.robust_accuracy(e) for e in SWEEP_EPS]
    clean = float(sweep.clean_correct.mean())
    assert all(a <= clean for a in accuracies)
    assert all(b <= a for a, b in itertools.pairwise(accuracies)), accuracies


def test_records_are_consistent(sweep) -> None:
    attack_names = sweep.config.attacks
    records = sweep.records()
    assert len(records) == len(SWEEP_EPS) * (len(attack_names) + 1)
    clean = float(sweep.clean_correct.mean())
    n_correct = int(sweep.clean_correct.sum())
    for i, eps in enumerate(SWEEP_EPS):
        rows = records[i * (len(attack_names) + 1) : (i + 1) * (len(attack_names) + 1)]
        assert [r["attack"] for r in rows] == [*attack_names, "worst-case"]
        assert all(r["eps"] == eps and r["n"] == sweep.n for r in rows)
        assert all(r["clean_accuracy"] == pytest.approx(clean) for r in rows)
        cumulative = [r["robust_accuracy"] for r in rows[:-1]]
        assert all(b <= a for a, b in itertools.pairwise(cumulative)), cumulative
        worst = rows[-1]
        assert worst["robust_accuracy"] == pytest.approx(cumulative[-1])
        assert worst["robust_accuracy"] == pytest.approx(sweep.robust_accuracy(eps))
        for r in rows:
            survivors = r["robust_accuracy"] * sweep.n
            assert r["attack_success_rate"] == pytest.approx(1 - survivors / n_correct)
        broken = n_correct - round(worst["robust_accuracy"] * sweep.n)
        assert sum(worst["broken_by"].values()) == broken
        perturbation = worst["perturbation"]
        assert perturbation["max_linf"] <= eps + 1e-6
        assert perturbation["mean_linf"] <= perturbation["max_linf"]
        assert set(worst["per_class_robust_recall"]) == {"left", "right"}


def test_curve(sweep) -> None:
    curve = sweep.curve()
    clean = float(sweep.clean_correct.mean())
    assert curve["eps"] == [0.0, *SWEEP_EPS]
    assert curve["robust_accuracy"][0] == pytest.approx(clean)
    assert curve["robust_accuracy"][1:] == pytest.approx([sweep.robust_accuracy(e) for e in SWEEP_EPS])
    at_max = sweep.robust_accuracy(SWEEP_EPS[-1])
    assert at_max - 1e-12 <= curve["normalised_area"] <= clean + 1e-12
    # strictly inside when the curve really drops
    assert at_max < curve["normalised_area"] < clean


def test_clean_wrong_samples_are_never_attacked(sweep, trained) -> None:
    _, data = trained
    wrong = ~sweep.clean_correct
    assert wrong.any()
    clean_images = data.float_images(0, data.n)
    for outcome in sweep.outcomes:
        assert (outcome.broken_by[wrong] == CLEAN_WRONG).all()
        assert (outcome.broken_by[~wrong] != CLEAN_WRONG).all()
        assert (outcome.linf[wrong] == 0).all()
        # their logits may be pushed further off (for AUC under attack) but stay wrong
        assert not is_correct(outcome.adv_logits, data.labels, Task.BINARY).numpy()[wrong].any()
        assert torch.equal(sweep.adversarial[outcome.eps][wrong], clean_images[wrong])


def test_broken_stays_broken_and_the_evidence_holds(sweep, trained) -> None:
    """Broken at a smaller eps means broken at every larger one; the recorded adversarial
    image really is misclassified and within the budget; robust samples' logits are correct."""
    model, data = trained
    clean_images = data.float_images(0, data.n)
    for smaller, larger in zip(sweep.outcomes, sweep.outcomes[1:], strict=False):
        assert (larger.broken_by[smaller.broken_by >= 0] >= 0).all()
    for outcome in sweep.outcomes:
        broken = outcome.broken_by >= 0
        adv = sweep.adversarial[outcome.eps]
        assert (adv - clean_images).flatten(1).abs().amax(dim=1).max() <= outcome.eps + 1e-6
        logits = model.predict(adv)
        correct = is_correct(logits, data.labels, model.task).numpy()
        assert not correct[broken].any()
        assert correct[outcome.robust].all()
        stored = is_correct(outcome.adv_logits, data.labels, model.task).numpy()
        np.testing.assert_array_equal(stored[sweep.clean_correct], ~broken[sweep.clean_correct])
        np.testing.assert_allclose(outcome.linf, (adv - clean_images).flatten(1).abs().amax(dim=1), atol=1e-7)


def test_same_seed_same_result(trained, sweep) -> None:
    model, data = trained
    again = run_attacks(model, data, sweep.config)
    assert json.dumps(again.to_dict(), sort_keys=True) == json.dumps(sweep.to_dict(), sort_keys=True)


def test_l2_sweep_budget(trained) -> None:
    model, data = trained
    eps = (0.05, 0.2, 0.8)
    result = run_attacks(model, data, AttackConfig(attacks=("pgd",), eps=eps, norm="l2"))
    for outcome in result.outcomes:
        assert outcome.l2.max() <= outcome.eps + 1e-5
    worst = [r for r in result.records() if r["attack"] == "worst-case"]
    assert all(r["perturbation"]["max_l2"] <= r["eps"] + 1e-5 for r in worst)
    accuracies = [r["robust_accuracy"] for r in worst]
    assert all(b <= a for a, b in itertools.pairwise(accuracies))


# ---- honesty checks ----


def checks_of(model, data, result) -> list[dict]:
    return AuditedSweep(result, run_checks(model, data, result)).check_records()


def by_name(checks: list[dict]) -> dict[str, dict]:
    return {c["check"]: c for c in checks}


def test_checks_pass_on_a_healthy_model() -> None:
    model, data, z, network = binary_linear()
    margins = analytic_margins(network, z, "linf")
    eps = separated_eps(margins, 3)
    config = AttackConfig(attacks=("pgd",), eps=eps, params={"pgd": {"steps": 50}})
    result = run_attacks(model, data, config)
    checks = by_name(checks_of(model, data, result))
    for name in (
        "monotone in eps",
        "perturbation within eps",
        "gradients non-zero and finite",
        "unbounded budget breaks the model",
        "more effort does not lower robust accuracy",
    ):
        assert checks[name]["passed"], checks[name]


def test_checks_flag_gradient_masking() -> None:
    network, images, _z = linear_problem(40, 1, seed=4, min_logit=0.5)
    masked = Quantised(network)
    with torch.no_grad():
        labels = (masked(images)[:, 0] > 0).long()
    data = AuditData(images=images, labels=labels, task=Task.BINARY, class_names=("neg", "pos"))
    model = wrap(masked, data)
    config = AttackConfig(attacks=("pgd",), eps=(2 / 255, 8 / 255))
    result = run_attacks(model, data, config)
    checks = by_name(checks_of(model, data, result))
    gradients = checks["gradients non-zero and finite"]
    assert not gradients["passed"]
    assert "100%" in gradients["detail"]
    # random starts alone do not make an unbounded budget break the model
    assert not checks["unbounded budget breaks the model"]["passed"]


@pytest.mark.skipif("square" not in attacks, reason="the square attack is not registered")
def test_black_box_gap_check_only_when_square_runs_last() -> None:
    """Square listed first breaks samples before any white-box attack runs: no gradient-masking
    verdict may come from that. Listed last, on a linear model PGD leaves square nothing."""
    model, data, z, network = binary_linear(n=24)
    eps = (float(np.median(analytic_margins(network, z, "linf"))),)
    params = {"square": {"queries": 50}, "pgd": {"steps": 50}}
    first = run_attacks(model, data, AttackConfig(attacks=("square", "pgd"), eps=eps, params=params))
    assert "black-box does not beat white-box" not in by_name(checks_of(model, data, first))
    last = run_attacks(model, data, AttackConfig(attacks=("pgd", "square"), eps=eps, params=params))
    gap = by_name(checks_of(model, data, last))["black-box does not beat white-box"]
    assert gap["passed"], gap


def test_budget_check_can_fail(trained, sweep) -> None:
    """Tamper with a finished result: the budget check must notice."""
    outcomes = list(sweep.outcomes)
    outcomes[0] = dataclasses.replace(outcomes[0], linf=outcomes[0].linf + 2 * outcomes[0].eps)
    tampered = dataclasses.replace(sweep, outcomes=tuple(outcomes))
    assert not _budget(tampered)["passed"]
    assert _budget(sweep)["passed"]


def test_monotone_check_reruns_independently(trained, sweep) -> None:
    """The independent re-run reports one robust count per eps, non-increasing on a healthy model."""
    model, data = trained
    record = by_name(checks_of(model, data, sweep))["monotone in eps"]
    counts = [int(c) for c in record["detail"].split("[")[1].split("]")[0].split(",")]
    assert len(counts) == len(sweep.config.eps)
    assert record["passed"] and counts[-1] <= counts[0]


# ---- multi-label ----


@pytest.fixture(scope="module")
def multi_label() -> tuple[AuditModel, AuditData, np.ndarray]:
    network, images, z = linear_problem(36, outputs=3, seed=6)
    labels = (z > 0).long()
    labels[:4, 1] = 1 - labels[:4, 1]  # one wrong label makes the whole sample clean-wrong
    data = AuditData(images=images, labels=labels, task=Task.MULTI_LABEL, class_names=("a", "b", "c"))
    model = wrap(network, data)
    assert model.task is Task.MULTI_LABEL
    return model, data, analytic_margins(network, z, "linf")


def test_multi_label_sweep(multi_label) -> None:
    model, data, margins = multi_label
    eps = separated_eps(margins[4:], 4)
    config = AttackConfig(attacks=("pgd", "pgd-cw"), eps=eps, params={"pgd-cw": {"steps": 50}})
    result = run_attacks(model, data, config)
    np.testing.assert_array_equal(result.clean_correct, np.arange(data.n) >= 4)
    for outcome in result.outcomes:
        assert (outcome.broken_by[:4] == CLEAN_WRONG).all()
        # nothing is broken below its analytic margin, and the margin attack breaks the rest
        expected = (margins > outcome.eps) & result.clean_correct
        np.testing.assert_array_equal(outcome.robust, expected)
        # robust means every label still right; broken means at least one label flipped
        label_ok = ((outcome.adv_logits > 0).long() == data.labels).all(dim=1).numpy()
        np.testing.assert_array_equal(label_ok[result.clean_correct], outcome.robust[result.clean_correct])
        some_label_ok = ((outcome.adv_logits > 0).long() == data.labels).any(dim=1).numpy()
        # a broken sample typically keeps some labels right: exact match, not per-label, decides
        assert some_label_ok[outcome.broken_by >= 0].all()


def test_multi_label_bce_attack_moves_towards_errors(multi_label) -> None:
    model, data, margins = multi_label
    eps = float(2 * margins.max())
    result = run_attacks(model, data, AttackConfig(attacks=("pgd",), eps=(eps,)))
    assert result.robust_accuracy(eps) < float(result.clean_correct.mean())
    assert result.records()[-1]["per_class_robust_recall"] == {"a": None, "b": None, "c": None}
