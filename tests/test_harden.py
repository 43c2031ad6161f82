"""``medaudit.harden``: PGD-AT, TRADES and IMA fine-tuning of a copy of the model.

The planted problems are linear, so the quantities the tests check are computed here exactly:
a linear two-class model's robust accuracy under an L-inf (L2) budget is the fraction of
samples whose logit margin exceeds eps times the L1 (L2) norm of the weight difference, and
its boundary distance is the margin divided by that norm.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medaudit.data import AuditData
from medaudit.errors import ConfigError
from medaudit.harden import (
    HardenConfig,
    MarginState,
    attack_to_boundary,
    bisect_to_boundary,
    harden,
    save_hardened,
)
from medaudit.models import AuditModel, InputSpec, bind_model, load_model
from medaudit.models.archs.small_cnn import SmallCNN
from medaudit.models.wrapper import ModelInfo
from medaudit.task import Task

EPS = 0.03
CENTRED = InputSpec(mean=(0.5,), std=(1.0,))
UNIT = InputSpec()


def wrap(network: nn.Module, data: AuditData, spec: InputSpec = UNIT) -> AuditModel:
    model = AuditModel(network, spec, ModelInfo("planted", "test", "planted-sha", None))
    bind_model(model, data)
    return model


def checkerboard(size: int) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return ((rows + cols) % 2 * 2 - 1).float()


def planted_data(n: int = 256, size: int = 8, seed: int = 0) -> AuditData:
    """Class = brightness 0.45 or 0.55 with a jitter of 0.05 (a weak but robust feature: an eps of
    0.03 cannot move the mean of an image further than 0.02 from 0.5 across it), plus a faint
    checkerboard of amplitude 0.01 whose sign is the class (perfectly predictive, not robust)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    sign = (2 * labels - 1).float()[:, None, None, None]
    noise = (torch.rand(n, 1, size, size, generator=generator) - 0.5) * 0.1
    jitter = 0.05 * torch.randn(n, 1, 1, 1, generator=generator)
    images = 0.5 + 0.05 * sign + jitter + 0.01 * sign * checkerboard(size) + noise
    return AuditData(
        images=images.clamp(0, 1),  # float images: the 0.01 pattern survives (no 8-bit rounding)
        labels=labels,
        task=Task.BINARY,
        class_names=("dark", "bright"),
        identity={"source": "synthetic"},
    )


def pattern_model(size: int = 8) -> nn.Sequential:
    """Linear, reading only the faint checkerboard: accurate on clean images, broken by eps 0.03."""
    network = nn.Sequential(nn.Flatten(), nn.Linear(size * size, 2))
    with torch.no_grad():
        w = 2.0 * checkerboard(size).flatten()
        network[1].weight.copy_(torch.stack([-w / 2, w / 2]))
        network[1].bias.zero_()
    return network.eval()


def linear_robust_accuracy(network: nn.Sequential, data: AuditData, eps: float, norm: str) -> float:
    """Exact worst-case accuracy of a linear two-class model with no [0, 1] clipping (the images
    lie in [0.3, 0.7], so a budget of 0.03 never reaches the box)."""
    weight, bias = network[1].weight.detach(), network[1].bias.detach()
    w, b = weight[1] - weight[0], bias[1] - bias[0]
    x = data.images.flatten(1).float() - 0.5  # the wrapper's normalisation (std 1 keeps eps as it is)
    signed = (x @ w + b) * (2 * data.labels.float() - 1)
    size = w.abs().sum() if norm == "linf" else w.norm()
    return float((signed > eps * size).float().mean())


@pytest.fixture(scope="module")
def planted() -> tuple[AuditModel, AuditData]:
    data = planted_data()
    return wrap(pattern_model(), data, CENTRED), data


def quick(method: str, **settings: object) -> HardenConfig:
    base: dict[str, object] = dict(
        method=method, eps=EPS, epochs=6, batch_size=32, lr=0.05, weight_decay=0.0, margin_samples=0
    )
    return HardenConfig(**{**base, **settings})  # type: ignore[arg-type]


def test_planted_start_is_accurate_but_not_robust(planted: tuple[AuditModel, AuditData]) -> None:
    model, data = planted
    assert linear_robust_accuracy(model.network, data, 0.0, "linf") > 0.95
    assert linear_robust_accuracy(model.network, data, EPS, "linf") < 0.05


@pytest.mark.parametrize(
    ("method", "norm", "eps"),
    [
        ("pgd-at", "linf", EPS),
        ("trades", "linf", EPS),
        ("ima", "linf", EPS),
        ("pgd-at", "l2", 0.2),
        ("ima", "l2", 0.2),
    ],
)
def test_methods_make_the_planted_model_robust(
    planted: tuple[AuditModel, AuditData], method: str, norm: str, eps: float
) -> None:
    model, data = planted
    before = {k: v.clone() for k, v in model.state_dict().items()}
    start = linear_robust_accuracy(model.network, data, eps, norm)
    result = harden(model, data, quick(method, norm=norm, eps=eps))
    after = linear_robust_accuracy(result.network, data, eps, norm)
    assert start < 0.05 and after > 0.55, (start, after)
    assert (
        linear_robust_accuracy(result.network, data, 0.0, norm) > 0.8
    )  # still mostly accurate on clean images
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the input is untouched
    assert result.network is not model.network and not result.network.training
    assert [row["epoch"] for row in result.history] == list(range(1, 7))


def test_clean_fine_tuning_alone_stays_fragile(planted: tuple[AuditModel, AuditData]) -> None:
    """The control: IMA with beta 0 trains on clean images only and keeps the non-robust feature,
    so the robustness above comes from the adversarial terms, not from more training."""
    model, data = planted
    result = harden(model, data, quick("ima", beta=0.0))
    assert linear_robust_accuracy(result.network, data, EPS, "linf") < 0.15
    assert linear_robust_accuracy(result.network, data, 0.0, "linf") > 0.95


def test_medaudit_attack_agrees_with_the_exact_robust_accuracy(planted: tuple[AuditModel, AuditData]) -> None:
    """The hardened model is audited by medaudit's own PGD: on a linear model it must find the exact answer."""
    from medaudit.attacks.pgd import PGD

    model, data = planted
    result = harden(model, data, quick("pgd-at"))
    x = data.float_images(0, data.n)
    x_adv = PGD(steps=10)(result.model, x, data.labels, eps=EPS, norm="linf", generator=torch.Generator())
    measured = float((result.model.predict(x_adv).argmax(1) == data.labels).float().mean())
    assert measured == pytest.approx(
        linear_robust_accuracy(result.network, data, EPS, "linf"), abs=2 / data.n
    )


def test_trades_inner_maximisation_matches_torchattacks(planted: tuple[AuditModel, AuditData]) -> None:
    """torchattacks' TPGD is the TRADES inner maximisation (KL from a 0.001-noise start, sign steps)."""
    import torchattacks

    from medaudit.harden.methods import TRADES, _kl

    model, data = planted
    x, y = data.float_images(0, data.n), data.labels
    mine = TRADES(quick("trades"), data.n).adversarial(model, x, torch.Generator().manual_seed(0))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = torchattacks.TPGD(model, eps=EPS, alpha=2.5 * EPS / 5, steps=5)(x, y)
    with torch.no_grad():
        clean = model(x)
        ours_kl, their_kl = _kl(clean, model(mine), model.task), _kl(clean, model(theirs), model.task)
    assert float((mine - x).abs().max()) <= EPS + 1e-6
    assert float(ours_kl.mean()) == pytest.approx(float(their_kl.mean()), rel=0.02)
    assert float(ours_kl.mean()) > 0.5  # the attack did move the prediction


def test_same_seed_same_weights_other_seed_other_weights(planted: tuple[AuditModel, AuditData]) -> None:
    model, data = planted
    a, b = (harden(model, data, quick("trades", epochs=2)).network.state_dict() for _ in range(2))
    other = harden(model, data, quick("trades", epochs=2, seed=1)).network.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], other[k]) for k in a)


def test_progress_reports_every_batch(planted: tuple[AuditModel, AuditData]) -> None:
    model, data = planted
    calls: list[tuple[int, int, float, float]] = []
    result = harden(model, data, quick("ima", epochs=2), progress=lambda *args: calls.append(args))
    assert [c[0] for c in calls] == list(range(1, 17)) and {c[1] for c in calls} == {16}
    first_epoch = np.mean([c[2] for c in calls[:8]]), np.mean([c[3] for c in calls[:8]])
    assert result.history[0]["clean_loss"] == pytest.approx(first_epoch[0])
    assert result.history[0]["adv_loss"] == pytest.approx(first_epoch[1])


def test_resume_gives_the_uninterrupted_result(planted: tuple[AuditModel, AuditData], tmp_path: Path) -> None:
    model, data = planted
    config = quick("ima", epochs=3, checkpoint=str(tmp_path / "run.ckpt"))
    whole = harden(model, data, quick("ima", epochs=3))

    def interrupt(step: int, total: int, clean: float, adversarial: float) -> None:
        if step == 12:  # in the second epoch: only the first is in the checkpoint
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        harden(model, data, config, progress=interrupt)
    assert torch.load(tmp_path / "run.ckpt", weights_only=True)["epoch"] == 1
    resumed = harden(model, data, config)
    assert resumed.resumed_after_epoch == 1
    state, expected = resumed.network.state_dict(), whole.network.state_dict()
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert resumed.margins_final is not None and whole.margins_final is not None
    np.testing.assert_array_equal(resumed.margins_final, whole.margins_final)
    drop = [{k: v for k, v in row.items() if k != "seconds"} for row in whole.history]
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in resumed.history] == drop
    with pytest.raises(ConfigError, match=r"other .*eps"):
        harden(model, data, quick("ima", epochs=3, eps=0.02, checkpoint=config.checkpoint))


def test_black_box_onnx_is_refused(planted: tuple[AuditModel, AuditData]) -> None:
    model, data = planted
    onnx = AuditModel(model.network, InputSpec(), ModelInfo("m.onnx", "onnx", "", None))
    with pytest.raises(ConfigError, match="no gradients to train with"):
        harden(onnx, data, quick("pgd-at"))


def test_config_checks_and_defaults() -> None:
    with pytest.raises(ConfigError, match="unknown hardening method 'pgd'"):
        HardenConfig(method="pgd")
    with pytest.raises(ConfigError, match="beta"):
        HardenConfig(method="pgd-at", beta=0.5)
    with pytest.raises(ConfigError, match="IMA settings"):
        HardenConfig(method="trades", margin_step=0.01)
    with pytest.raises(ConfigError, match="eps"):
        HardenConfig(eps=2.0)
    assert HardenConfig(method="trades").beta == 6.0
    ima = HardenConfig(method="ima", eps=0.02)
    assert (ima.beta, ima.margin_step, ima.margin_max) == (0.5, 0.01, 0.04)
    small, large = HardenConfig.for_data(500), HardenConfig.for_data(50_000, epochs=1)
    assert small.epochs > HardenConfig.for_data(5000).epochs and small.batch_size < large.batch_size
    assert large.epochs == 1  # the user's setting beats the size default
    assert json.loads(json.dumps(ima.to_dict()))["margin_step"] == 0.01


# ---- IMA's margin bookkeeping ----


def test_margin_rules_expand_pull_back_and_keep() -> None:
    state = MarginState.start(5, step=0.1, maximum=0.25)
    state.margins[:] = [0.1, 0.2, 0.2, 0.1, 0.2]
    index = np.array([0, 1, 2, 4])  # sample 3 is not seen this epoch
    correct = np.array([True, True, False, True])
    found = np.array([False, True, True, False])
    state.record(index, correct, found, np.array([np.inf, 0.12, 0.05, np.inf]))
    state.end_epoch()
    # 0: no adversarial example -> +step; 1: found at 0.12 -> (0.2 + 0.12) / 2; 2: misclassified
    # -> kept; 3: unseen -> kept; 4: +step clamped to the maximum
    np.testing.assert_allclose(state.margins, [0.2, 0.16, 0.2, 0.1, 0.25])
    state.end_epoch()  # nothing recorded since: every margin is kept
    np.testing.assert_allclose(state.margins, [0.2, 0.16, 0.2, 0.1, 0.25])


def one_pixel() -> tuple[AuditModel, AuditData, np.ndarray]:
    """A linear model on one-pixel images with its boundary at pixel value 0.5: a sample's
    distance to the boundary is |x - 0.5| in every norm. Sample 7 carries the wrong label."""
    values = torch.tensor([40, 126, 110, 118, 124, 135, 129, 200, 230, 180], dtype=torch.uint8)
    labels = (values > 127).long()
    labels[7] = 0
    data = AuditData(values.view(-1, 1, 1, 1), labels, Task.BINARY, ("low", "high"), {"source": "synthetic"})
    network = nn.Sequential(nn.Flatten(), nn.Linear(1, 2))
    with torch.no_grad():
        network[1].weight.copy_(torch.tensor([[-1.0], [1.0]]))
        network[1].bias.copy_(torch.tensor([0.5, -0.5]))  # logit difference 2x - 1
    distance = (values.double() / 255 - 0.5).abs().numpy()
    return wrap(network, data), data, distance


def test_bisection_lands_on_the_analytic_boundary(planted: tuple[AuditModel, AuditData]) -> None:
    model, data = planted
    weight = model.network[1].weight.detach()
    w = weight[1] - weight[0]
    x = data.float_images(0, 16)
    margin = x.flatten(1) @ w
    toward = -(margin.sign()[:, None] * w / w.norm()).view_as(x)  # straight at the boundary (L2)
    exact = (margin.abs() / w.norm()).double()
    x_adv = x + 1.5 * exact.float().view(-1, 1, 1, 1) * toward
    points, distances = bisect_to_boundary(model, x, x_adv, data.labels[:16], steps=16, norm="l2")
    assert torch.all(distances.double() <= exact + 1e-5)
    assert torch.allclose(distances.double(), exact, atol=1.5 * float(exact.max()) * 2**-16 + 1e-5)
    assert (model.predict(points).argmax(1) == data.labels[:16]).all()  # still on the correct side


def test_attack_to_boundary_measures_the_one_pixel_distance() -> None:
    model, data, distance = one_pixel()
    x, y = data.float_images(0, data.n), data.labels
    correct = (model.predict(x).argmax(1) == y).numpy()
    eps = 0.1
    _, measured, found = attack_to_boundary(
        model,
        x[correct],
        y[correct],
        eps,
        norm="linf",
        steps=5,
        bisection_steps=12,
        generator=torch.Generator(),
    )
    inside = distance[correct] < eps
    np.testing.assert_array_equal(found.numpy(), inside)
    np.testing.assert_allclose(measured.numpy()[inside], distance[correct][inside], atol=eps * 2**-12 + 1e-6)
    assert np.isinf(measured.numpy()[~inside]).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_ima_margins_expand_then_settle_on_the_boundary_distance(norm: str) -> None:
    """lr 0 keeps the model fixed, so the margins must follow the rules towards the known distances."""
    model, data, distance = one_pixel()
    step, most = 0.02, 0.3
    settings = dict(method="ima", norm=norm, eps=0.04, lr=0.0, batch_size=4, bisection_steps=12)
    one = harden(model, data, HardenConfig(epochs=1, margin_step=step, margin_max=most, **settings))  # type: ignore[arg-type]
    assert one.margins_initial is not None and one.margins_final is not None
    np.testing.assert_allclose(one.margins_initial, step)
    far, wrong = distance > step, np.arange(data.n) == 7
    expanded = far & ~wrong
    np.testing.assert_allclose(one.margins_final[expanded], 2 * step)  # nothing found: + step
    near = ~far & ~wrong
    assert near.sum() >= 2
    np.testing.assert_allclose(one.margins_final[near], (step + distance[near]) / 2, atol=1e-4)  # pulled back
    assert one.margins_final[7] == step  # misclassified: kept
    settled = harden(model, data, HardenConfig(epochs=25, margin_step=step, margin_max=most, **settings))  # type: ignore[arg-type]
    assert settled.margins_final is not None
    target = np.minimum(distance, most)
    gap = settled.margins_final - target
    assert np.all(np.abs(gap[~wrong]) <= step / 4), gap  # equilibrium: the margin sits on the boundary
    assert np.all(settled.margins_final[~wrong] >= target[~wrong] - 1e-4)  # never inside the boundary
    summary = json.loads(json.dumps(settled.to_dict()))["ima_margins"]
    assert summary["initial"]["mean"] == pytest.approx(step)
    assert summary["final"]["mean"] == pytest.approx(float(settled.margins_final.mean()))
    assert sum(summary["final"]["histogram"]["counts"]) == data.n
    assert all(
        torch.equal(a, b)
        for a, b in zip(settled.network.parameters(), model.network.parameters(), strict=True)
    )


def test_margin_distributions_before_and_after(planted: tuple[AuditModel, AuditData]) -> None:
    model, data = planted
    result = harden(model, data, quick("pgd-at", margin_samples=32))
    assert result.margins_before is not None and result.margins_after is not None
    before, after = result.margins_before.to_dict(), result.margins_after.to_dict()
    assert before["n"] == after["n"] == 32
    assert after["quantiles"]["q50"] > before["quantiles"]["q50"]
    doc = result.to_dict()
    assert doc["minimal_perturbation_after"]["histogram"] == after["histogram"]
    assert doc["config"]["method"] == "pgd-at" and "ima_margins" not in doc


# ---- real model files: copied, rebuilt, written back in every format ----


def small_cnn_file(tmp_path: Path, data: AuditData, source: str) -> Path:
    """A SmallCNN file: TorchScript with a card naming its architecture ("torchscript+arch"),
    TorchScript with no architecture ("torchscript"), or a state_dict ("state_dict")."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        network = SmallCNN(1, 2).eval()
    path = tmp_path / "model.pt"
    if source == "state_dict":
        torch.save(network.state_dict(), path)
    else:
        torch.jit.save(torch.jit.trace(network, data.float_images(0, 2)), str(path))
    card = {"task": "binary-class", "preprocessing": {"channels": 1, "mean": [0.5], "std": [0.25]}}
    path.with_suffix(".json").write_text(
        json.dumps({**card, "arch": "smallcnn"} if source != "torchscript" else card)
    )
    return path


def brightness_images(n: int = 32, size: int = 16) -> AuditData:
    generator = torch.Generator().manual_seed(3)
    labels = torch.arange(n) % 2
    images = (
        0.3
        + 0.4 * labels.float()[:, None, None, None]
        + 0.1 * torch.rand(n, 1, size, size, generator=generator)
    )
    return AuditData(
        (images * 255).round().to(torch.uint8), labels, Task.BINARY, ("a", "b"), {"source": "synthetic"}
    )


@pytest.mark.parametrize("source", ["torchscript+arch", "torchscript", "state_dict"])
def test_written_formats_load_back_with_the_same_logits(tmp_path: Path, source: str) -> None:
    data = brightness_images()
    arch = None if source == "torchscript" else "smallcnn"
    source_path = small_cnn_file(tmp_path, data, source)
    digest = hashlib.sha256(source_path.read_bytes()).hexdigest()
    model = load_model(source_path)
    bind_model(model, data)
    config = HardenConfig(
        method="pgd-at", eps=2 / 255, epochs=1, batch_size=16, steps=2, margin_samples=0, seed=4
    )
    result = harden(model, data, config)
    assert result.arch == arch
    out = tmp_path / "out"
    out.mkdir()
    written = save_hardened(result, model, data, out / "hard")
    assert hashlib.sha256(source_path.read_bytes()).hexdigest() == digest  # the input file is untouched
    expected_formats = {"torchscript", "export", "onnx"} | ({"state_dict"} if arch else set())
    if arch is None:  # a TorchScript copy exports only as TorchScript; the others say why not
        assert written["export"].startswith("not written") and written["onnx"].startswith("not written")
        expected_formats = {"torchscript"}
    assert {k for k, v in written.items() if not v.startswith("not written")} == expected_formats
    x = data.float_images(0, data.n)
    reference = result.model.predict(x)
    assert not torch.allclose(reference, model.predict(x), atol=1e-4)  # training changed the model
    for fmt in expected_formats:
        loaded = load_model(Path(written[fmt]))
        bind_model(loaded, data)
        torch.testing.assert_close(loaded.predict(x), reference, atol=1e-4, rtol=1e-4)
    card = json.loads((out / "hard.json").read_text())
    hardening = card["training"]["hardening"]
    assert hardening["method"] == "pgd-at" and hardening["seed"] == 4
    assert hardening["source"]["sha256"] == digest and hardening["data"]["n"] == data.n
    assert card["preprocessing"]["std"] == [0.25] and card.get("arch") == arch
