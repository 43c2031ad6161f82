"""Balanced shards (issue 21, stumble 6): cut at multiples of a fixed block, not of the batch size,
and still merge to exactly the single run, because every random draw and every per-group choice
(the sweep's probe, the checks' samples) is keyed by global image index, never by batch."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from medaudit.attacks import run_attacks
from medaudit.attacks.checks import AuditedSweep, run_checks
from medaudit.attacks.margin import MarginConfig, minimal_perturbation
from medaudit.attacks.sweep import AttackConfig
from medaudit.models import bind_model
from medaudit.models.wrapper import AuditModel, InputSpec, ModelInfo
from medaudit.sharding import RANDOM_BLOCK, Shard, concat, decode, encode

CUT = 32  # the balanced cut of 80 images in two (a multiple of the block, not of 24)


class Brightness(torch.nn.Module):
    """Class 1 for bright images: samples near mid-grey break at a small eps, others never."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3))
        return torch.stack([-10 * mean, 10 * mean], dim=1)


@pytest.fixture
def setup(audit_data):
    data = audit_data(n=80, seed=5)
    labels = (data.images.float().mean(dim=(1, 2, 3)) > 127.5).long()
    labels[:3] = 1 - labels[:3]
    data = replace(data, labels=labels)
    spec = InputSpec(channels=1, input_size=28, mean=(0.5,), std=(0.5,))
    model = AuditModel(Brightness(), spec, ModelInfo(path="", format="test", sha256="", parameters=None))
    bind_model(model, data)
    return model, data


def through_json(value):
    return decode(json.loads(json.dumps(encode(value))))


def halves(data, cut: int = CUT):
    return [data.shard(0, cut, {"index": 0}), data.shard(cut, data.n, {"index": 1})]


def per_image(result) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return [(o.broken_by, o.adv_logits.numpy(), o.linf) for o in result.outcomes]


def assert_same(a, b) -> None:
    for (ba, la, na), (bb, lb, nb) in zip(per_image(a), per_image(b), strict=True):
        np.testing.assert_array_equal(ba, bb)
        np.testing.assert_array_equal(la, lb)
        np.testing.assert_array_equal(na, nb)


@pytest.mark.parametrize(
    "attacks", [("pgd",), ("apgd-ce", "square"), ("pgd", "square")], ids=["pgd", "apgd+square", "pgd+square"]
)
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_sweep_does_not_depend_on_batch_size_or_cut(setup, attacks, norm) -> None:
    model, data = setup
    eps = (0.02, 0.1) if norm == "linf" else (0.5, 2.0)
    config = AttackConfig(
        attacks=attacks,
        eps=eps,
        norm=norm,
        params={"square": {"queries": 30, "restarts": 2}, "pgd": {"restarts": 2, "steps": 3}},
        batch_size=24,
        probe=8 if len(attacks) > 1 else 0,
    )
    whole = run_attacks(model, data, config)
    other = run_attacks(model, data, replace(config, batch_size=16))
    assert_same(whole, other)
    merged = concat([through_json(run_attacks(model, part, config)) for part in halves(data)])
    assert_same(merged, whole)
    assert merged.to_dict() == whole.to_dict()
    worst = whole.to_dict()["sweep"][-1]
    assert 0 < worst["robust_accuracy"] < worst["clean_accuracy"]


def test_checks_and_margins_do_not_depend_on_batch_size_or_cut(setup) -> None:
    model, data = setup
    config = AttackConfig(attacks=("pgd",), eps=(0.02, 0.1), batch_size=24)

    def audited(d, c):
        result = run_attacks(model, d, c)
        return AuditedSweep(result, run_checks(model, d, result), ())

    whole = audited(data, config)
    assert audited(data, replace(config, batch_size=16)).to_dict() == whole.to_dict()
    merged = concat([through_json(audited(part, config)) for part in halves(data)])
    assert merged.to_dict() == whole.to_dict()
    margin = MarginConfig(attack="pgd", norm="linf", eps_max=0.1, tolerance=0.005, steps=3, batch_size=24)
    whole_margins = minimal_perturbation(model, data, margin)
    other = minimal_perturbation(model, data, replace(margin, batch_size=16))
    np.testing.assert_array_equal(other.margins, whole_margins.margins)
    merged_margins = concat([through_json(minimal_perturbation(model, p, margin)) for p in halves(data)])
    np.testing.assert_array_equal(merged_margins.margins, whole_margins.margins)


@pytest.mark.parametrize("n", [624, 1000, 33, 4096, 97])
@pytest.mark.parametrize("count", [2, 3, 4, 7])
def test_shards_are_balanced_to_one_block(n: int, count: int) -> None:
    if count > -(-n // RANDOM_BLOCK):
        return
    bounds = [Shard(i, count).bounds(n) for i in range(count)]
    sizes = [stop - start for start, stop in bounds]
    assert bounds[0][0] == 0 and bounds[-1][1] == n and sum(sizes) == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    assert all(start % RANDOM_BLOCK == 0 for start, _ in bounds)
    assert max(sizes) - min(sizes) <= RANDOM_BLOCK
    if n == 624 and count == 2:
        assert sizes == [320, 304]  # not 256 / 368 as when cut at batches of 256


def test_shift_and_probe_do_not_depend_on_batch_size_or_cut(setup) -> None:
    """Corruption and artifact noise come from per-image generators already: a cut that is not a
    multiple of the batch size changes nothing either (with a model whose per-image outputs do
    not depend on the other images of its batch; see the next test)."""
    from medaudit.confounders.config import ProbeConfig
    from medaudit.confounders.probe import run_probe
    from medaudit.shift.benchmark import ShiftConfig, run_shift

    model, data = setup
    shift = ShiftConfig(
        corruptions=("gaussian_noise", "motion_blur"), source="pneumoniamnist", mode="scaled", batch_size=24
    )
    probe = ProbeConfig(
        artifacts=("tag", "dose_noise"), strengths=(1.0,), positions=("top-left",), batch_size=24
    )
    for run, config in ((run_shift, shift), (run_probe, probe)):
        whole = run(model, data, config).to_dict()
        other = run(model, data, replace(config, batch_size=16))
        if hasattr(other, "config"):  # the probe's report echoes its batch size
            other = replace(other, config=config)
        assert other.to_dict() == whole
        assert concat([through_json(run(model, part, config)) for part in halves(data)]).to_dict() == whole


@pytest.mark.xfail(strict=True, reason="a CPU CNN's logits move by an ulp with the batch's other images")
def test_cnn_logits_do_not_depend_on_the_batch(make_cnn, audit_data) -> None:
    """Known limit of a cut that is not a multiple of the batch size: the image straddling it sits
    in a batch of another size in the part than in the single run, and a CNN's float logits can
    differ there in the last bit (4.8e-7 here), so the merge is exact only up to that."""
    from medaudit.confounders.config import ProbeConfig
    from medaudit.confounders.probe import run_probe

    data = audit_data(n=64, seed=4)
    spec = InputSpec(channels=1, input_size=28, mean=(0.5,), std=(0.5,))
    model = AuditModel(make_cnn(width=4), spec, ModelInfo(path="", format="test", sha256="", parameters=None))
    bind_model(model, data)
    probe = ProbeConfig(artifacts=("tag",), strengths=(1.0,), positions=("top-left",), batch_size=24)
    whole = run_probe(model, data, probe)
    merged = concat([through_json(run_probe(model, part, probe)) for part in halves(data)])
    np.testing.assert_array_equal(merged.clean_logits.numpy(), whole.clean_logits.numpy())
