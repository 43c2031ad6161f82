"""The fast ``auto`` plan: APGD gives up on samples it cannot reach, later attacks are screened
by a probe, and neither makes robust accuracy higher than the full plan reports."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import train_cnn
from test_checks_strength import Requantised, halves, wrap
from torch import nn

from medaudit.attacks import AttackConfig, run_attacks
from medaudit.attacks.apgd import APGDCE, APGDDLR, GIVE_UP_SLACK
from medaudit.attacks.base import is_correct, margin
from medaudit.attacks.checks import AuditedSweep, run_checks
from medaudit.attacks.plan import AUTO_PROBE, WHITE_BOX_AUTO, build_config
from medaudit.attacks.sweep import ATTACKED, NOT_BROKEN, NOT_RUN, PROBED, SKIPPED
from medaudit.data import AuditData, DataSpec, load_data
from medaudit.models import bind_model, load_model
from medaudit.task import Task

SAMPLE_MODELS = Path(__file__).resolve().parents[1] / "sample_models"
FULL_PLAN = ",".join(WHITE_BOX_AUTO)


class Counting(nn.Module):
    """Counts the images every forward pass sees: the attack's work, whatever its code does."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += len(x)
        return self.network(x)


def linear_model(size: int = 8) -> tuple[nn.Module, AuditData]:
    """A linear two-class model and images ``0.5 + 0.2 c sign(w1 - w0)``: the clean margin is exactly
    ``0.2 c ||w1 - w0||_1``, with ``c`` packed near 0 (reachable) and spread to +-1 (far away)."""
    generator = torch.Generator().manual_seed(0)
    network = nn.Sequential(nn.Flatten(), nn.Linear(size * size, 2))
    with torch.no_grad():
        network[1].weight.copy_(torch.randn(2, size * size, generator=generator))
        difference = network[1].weight[1] - network[1].weight[0]
        network[1].bias.copy_(torch.tensor([0.0, -0.5 * float(difference.sum())]))
    t = torch.linspace(-1, 1, 128)
    c = t.abs() ** 3 * t.sign()
    images = 0.5 + 0.2 * c.view(-1, 1) * difference.sign().view(1, -1)
    images = images.view(-1, 1, size, size)
    with torch.no_grad():
        labels = network(images).argmax(dim=1)
    data = AuditData(images=images, labels=labels, task=Task.BINARY, class_names=("a", "b"))
    return network.eval(), data


def test_give_up_keeps_every_reachable_sample_and_stops_on_the_rest() -> None:
    """Planted answer: for a linear model the largest margin gain in the L-inf ball of radius eps
    is ``reach = eps ||d margin / dx||_1`` (no clipping inside [0.3, 0.7]), so a sample breaks
    exactly when its gap is below it, and no two points of the ball differ by more than
    ``2 reach``. Giving up must break the same samples, and stop at the first checkpoint
    (step 23 of 100) every sample whose gap exceeds GIVE_UP_SLACK x 2 reach x 77 / 23."""
    network, data = linear_model()
    eps = 0.005
    counted = Counting(network)
    model = wrap(counted, data)
    x, y = data.float_images(0, data.n), data.labels
    x_grad = x.clone().requires_grad_(True)
    margins = margin(model(x_grad), y, model.task)
    (grad,) = torch.autograd.grad(margins.sum(), x_grad)
    gap = -margins.detach()
    reach = eps * grad.flatten(1).abs().sum(dim=1)
    reachable = (gap < reach).numpy()
    far = int((gap > GIVE_UP_SLACK * 2 * reach * 77 / 23).sum())
    assert reachable.sum() > 10 and far > 10  # both kinds are planted

    outcomes, work = {}, {}
    for give_up in (False, True):
        counted.images = 0
        attack = APGDCE(steps=100, give_up=give_up)
        x_adv = attack(model, x, y, eps=eps, norm="linf", generator=torch.Generator().manual_seed(1))
        work[give_up] = counted.images
        outcomes[give_up] = (~is_correct(model.predict(x_adv), y, model.task)).numpy()
    assert (outcomes[False] == reachable).all()
    assert (outcomes[True] == reachable).all()
    # without give_up a robust sample is seen 102 times (clean, start, 100 steps), with it <= 25
    assert work[False] - work[True] >= far * (102 - 25), (work, far)


@pytest.fixture(scope="module")
def cnn_and_data() -> tuple[nn.Module, AuditData]:
    """An ordinary trained CNN (about a second) and 96 images of its task."""
    data = AuditData(*halves(96, seed=1), task=Task.BINARY, class_names=("left", "right"))
    return train_cnn(*halves(512, seed=0), 200), data


def test_give_up_is_off_unless_asked() -> None:
    assert APGDCE().give_up is False and APGDDLR().give_up is False


def test_an_escalated_stage_attacks_as_the_full_plan(cnn_and_data) -> None:
    """Where the probe broke one, the stage reruns on every survivor with the unscreened plan's
    draws: it breaks at least what the full plan breaks there (the deterministic fgsm first makes
    the survivors the same)."""
    cnn, data = cnn_and_data
    model = wrap(cnn, data)
    config = AttackConfig(attacks=("fgsm", "pgd"), eps=(2 / 255, 0.1), batch_size=32)
    full = run_attacks(model, data, config)
    probed = run_attacks(model, data, dataclasses.replace(config, probe=8))
    escalated = 0
    for a, b in zip(full.outcomes, probed.outcomes, strict=True):
        for start in range(0, data.n, 32):
            rows = slice(start, start + 32)
            if (b.stages[rows, 1] == ATTACKED).any():
                escalated += 1
                assert ((b.broken_by[rows] >= 0) | (a.broken_by[rows] < 0)).all()
    assert escalated  # the planted case escalates somewhere


def test_probe_stages_account_for_every_survivor(cnn_and_data) -> None:
    """Per batch, an attack after the first runs on its quota of survivors nearest the boundary
    and, only if it broke one of them, on every survivor left: each survivor is probed, attacked
    or skipped, and a batch either skips the rest or attacks it, as its probe decides."""
    cnn, data = cnn_and_data
    model = wrap(cnn, data)
    config = AttackConfig(attacks=("fgsm", "pgd", "pgd-cw"), eps=(2 / 255,), batch_size=32, probe=8)
    result = run_attacks(model, data, config)
    outcome = result.outcomes[0]
    quota = -(-config.probe * 32 // data.n)
    for start in range(0, data.n, 32):
        rows = slice(start, start + 32)
        for index in (1, 2):
            stage = outcome.stages[rows, index]
            before = outcome.broken_by[rows]
            reached = result.clean_correct[rows] & ((before == NOT_BROKEN) | (before >= index))
            assert ((stage != NOT_RUN) == reached).all()
            broke_in_probe = (stage == PROBED) & (before == index)
            if (stage == ATTACKED).any():  # escalated: only the samples the probe broke stay PROBED
                assert (stage == PROBED).sum() == broke_in_probe.sum() > 0
                assert not (stage == SKIPPED).any()
            else:
                assert (stage == PROBED).sum() == min(quota, reached.sum())
                assert not broke_in_probe.any() or reached.sum() <= quota
    record = next(r for r in result.records() if r["attack"] == "worst-case")
    assert record["stages"]["fgsm"]["attacked"] == int(result.clean_correct.sum())
    assert result.to_dict()["probe"] == 8


def test_auto_records_what_it_ran(cnn_and_data) -> None:
    """The config says everything the plan did: give_up per APGD attack and the probe size."""
    cnn, data = cnn_and_data
    model = wrap(cnn, data)
    config, notes = build_config("auto", model, "2/255", "linf", 64, 0)
    assert config.attacks == WHITE_BOX_AUTO and config.probe == AUTO_PROBE
    assert config.params["apgd-ce"]["give_up"] and config.params["apgd-dlr"]["give_up"]
    assert any("nearest the boundary" in note for note in notes)
    full, _ = build_config(FULL_PLAN, model, "2/255", "linf", 64, 0)
    assert full.probe == 0 and "give_up" not in full.params.get("apgd-ce", {})


def test_masked_model_is_still_caught_by_auto(cnn_and_data) -> None:
    """Behind a zero-gradient requantisation the gradient attacks stand still and give up at once;
    auto does not screen square there, the checks still flag the model, and auto reports no more
    robust accuracy than the full plan."""
    cnn, data = cnn_and_data
    model = wrap(Requantised(cnn), data)
    reports = {}
    for plan in ("auto", FULL_PLAN):
        config, notes = build_config(plan, model, "8/255", "linf", 64, 0)
        config = dataclasses.replace(config, params={**config.params, "square": {"queries": 200}})
        result = run_attacks(model, data, config)
        reports[plan] = AuditedSweep(result, run_checks(model, data, result), tuple(notes))
    assert not (reports["auto"].result.outcomes[0].stages == SKIPPED).any()  # zero gradients: no screening
    checks = {c["check"]: c for c in reports["auto"].check_records()}
    assert not checks["gradients non-zero and finite"]["passed"]
    assert not checks["unbounded budget breaks the model"]["passed"]
    assert reports["auto"].result.robust_accuracy(8 / 255) <= reports[FULL_PLAN].result.robust_accuracy(
        8 / 255
    )
    assert reports["auto"].warnings()


@pytest.mark.parametrize(
    ("name", "dataset", "eps"),
    [("pneumoniamnist_rescnn", "pneumoniamnist", 0.004), ("retinamnist_rescnn", "retinamnist", 2 / 255)],
)
def test_auto_is_never_weaker_than_the_full_plan(real_data_root, name, dataset, eps) -> None:
    """On 64 real test images per sample model: auto's robust accuracy <= the full plan's at every
    eps. With 64 images auto's probe takes every survivor, so auto with a probe of 16 runs too,
    where the screening really leaves survivors out (retina at 2/255: apgd-dlr breaks images
    apgd-ce misses, so its probe must escalate there)."""
    data = load_data(DataSpec(dataset=dataset, data_root=real_data_root, limit=64))
    model = load_model(SAMPLE_MODELS / f"{name}.pt")
    bind_model(model, data)
    auto, _ = build_config("auto", model, f"1/255,{eps}", "linf", 256, 0)
    full, _ = build_config(FULL_PLAN, model, f"1/255,{eps}", "linf", 256, 0)
    robust, screened = {}, None
    for plan, config in (("auto", auto), ("probe 16", dataclasses.replace(auto, probe=16)), ("full", full)):
        result = run_attacks(model, data, config)
        robust[plan] = [result.robust_accuracy(e) for e in config.eps]
        if plan == "probe 16":
            screened = sum(int((o.stages == PROBED).sum()) for o in result.outcomes)
    assert screened  # the small probe did screen
    for plan in ("auto", "probe 16"):
        assert all(a <= f for a, f in zip(robust[plan], robust["full"], strict=True)), robust
