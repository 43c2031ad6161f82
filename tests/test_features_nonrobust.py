"""``medaudit.features``: D_rand / D_det construction (Ilyas et al. 2019), the fresh network and
the usefulness probe, on tiny synthetic data.

The audited models are linear or planted so the expected answers are known: a linear model's
targeted attack succeeds with a large budget, and a model that reads only a faint checkerboard
hands the fresh network a feature it can learn, so D_det must beat its eps-0 control.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from conftest import as_multi_label
from torch import nn

from medaudit.data import AuditData
from medaudit.errors import ConfigError
from medaudit.features import (
    EpsZeroRuns,
    NonrobustConfig,
    NonrobustResult,
    accuracy,
    construct,
    default_budget,
    fresh_factory,
    nonrobust_usefulness,
    train_fresh,
)
from medaudit.features import construction as construct_module
from medaudit.features import nonrobust as nonrobust_module
from medaudit.models import AuditModel, InputSpec, bind_model
from medaudit.models.wrapper import ModelInfo
from medaudit.task import Task

SIZE = 8
UNIT = InputSpec()
CENTRED = InputSpec(mean=(0.5,), std=(1.0,))


def wrap(network: nn.Module, data: AuditData, spec: InputSpec = UNIT, arch: str | None = None) -> AuditModel:
    model = AuditModel(network, spec, ModelInfo("planted", "test", "planted-sha", None, arch=arch))
    bind_model(model, data)
    return model


def noise_data(n: int = 30, classes: int = 3, seed: int = 0) -> AuditData:
    """uint8 noise in the middle of the range (so a step can go either way inside [0, 1])."""
    generator = torch.Generator().manual_seed(seed)
    images = (64 + 128 * torch.rand(n, 1, SIZE, SIZE, generator=generator)).round().to(torch.uint8)
    return AuditData(
        images=images,
        labels=torch.arange(n) % classes,
        task=Task.MULTI_CLASS if classes > 2 else Task.BINARY,
        class_names=tuple(f"c{i}" for i in range(classes)),
        identity={"source": "synthetic"},
    )


def linear_model(data: AuditData, seed: int = 0) -> AuditModel:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        network = nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE * data.channels, data.num_classes))
    return wrap(network.eval(), data, CENTRED)


def checkerboard(size: int = SIZE) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return ((rows + cols) % 2 * 2 - 1).float()


def planted_data(n: int, seed: int) -> AuditData:
    """Binary; class = the sign of a faint checkerboard of amplitude 0.02 (nonrobust, perfectly
    predictive) and, weakly, brightness 0.47 or 0.53 with a jitter of 0.05 (visible, robust, about
    73 % predictive). Float images keep the faint pattern."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    sign = (2 * labels - 1).float()[:, None, None, None]
    noise = 0.01 * torch.randn(n, 1, SIZE, SIZE, generator=generator)
    jitter = 0.05 * torch.randn(n, 1, 1, 1, generator=generator)
    images = 0.5 + 0.03 * sign + jitter + 0.02 * sign * checkerboard() + noise
    return AuditData(
        images=images.clamp(0, 1),
        labels=labels,
        task=Task.BINARY,
        class_names=("a", "b"),
        identity={"source": "synthetic", "seed": seed},
    )


def pattern_model(data: AuditData) -> AuditModel:
    """Linear, reading only the checkerboard: accurate on clean images, and all its adversarial
    directions are the checkerboard."""
    network = nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, 2))
    with torch.no_grad():
        w = 5.0 * checkerboard().flatten()
        network[1].weight.copy_(torch.stack([-w / 2, w / 2]))
        network[1].bias.zero_()
    return wrap(network.eval(), data, CENTRED)


def test_default_budget_scales_ilyas_cifar_budget_by_sqrt_dims() -> None:
    assert default_budget(3, 32, 32) == pytest.approx((0.5, 0.1))
    eps, step = default_budget(1, 28, 28)
    assert eps == pytest.approx(0.2526, abs=1e-4) and step == pytest.approx(0.0505, abs=1e-4)
    assert default_budget(3, 64, 64)[0] == pytest.approx(1.0)


def test_det_targets_are_the_next_class_and_relabel_the_images() -> None:
    data = noise_data()
    built = construct(linear_model(data), data, "det", 0.5, 5, 0.1, seed=0, batch_size=8)
    assert torch.equal(built.labels, (data.labels + 1) % 3)
    assert torch.equal(built.original_labels, data.labels)
    assert built.images.dtype == torch.float32 and built.images.shape == data.images.shape
    assert (built.kind, built.eps, built.steps, built.step_size) == ("det", 0.5, 5, 0.1)


def test_rand_targets_are_seeded_and_independent_of_batch_size() -> None:
    data = noise_data(n=60)
    model = linear_model(data)
    first = construct(model, data, "rand", 0.3, 3, 0.1, seed=1, batch_size=7)
    again = construct(model, data, "rand", 0.3, 3, 0.1, seed=1, batch_size=64)
    other = construct(model, data, "rand", 0.3, 3, 0.1, seed=2, batch_size=7)
    assert torch.equal(first.labels, again.labels)
    torch.testing.assert_close(first.images, again.images)
    assert not torch.equal(first.labels, other.labels)
    assert set(first.labels.tolist()) == {0, 1, 2}
    assert (first.labels == data.labels).any()  # drawn among all classes, the true one included


def test_budget_and_pixel_box_are_respected_and_a_large_budget_reaches_the_targets() -> None:
    data = noise_data(n=30)
    model = linear_model(data)
    x = data.float_images(0, data.n)
    for eps in (0.05, 2.0):
        done: list[int] = []
        built = construct(model, data, "det", eps, 20, eps / 5, seed=0, batch_size=8, progress=done.append)
        distance = (built.images - x).flatten(1).norm(dim=1)
        assert float(distance.max()) <= eps + 1e-5
        assert float(built.images.min()) >= 0.0 and float(built.images.max()) <= 1.0
        assert sum(done) == data.n and len(done) == math.ceil(data.n / 8)
        predicted = model.predict(built.images).argmax(dim=1)
        assert torch.equal(built.reached, predicted == built.labels)
    clean_hits = float((model.predict(x).argmax(dim=1) == built.labels).float().mean())
    assert built.attack_success > 0.5 and built.attack_success > clean_hits + 0.3


def test_eps_zero_control_keeps_the_images_and_runs_no_attack(monkeypatch: pytest.MonkeyPatch) -> None:
    data = noise_data()

    def no_attack(*args: object, **kwargs: object) -> None:
        raise AssertionError("the eps 0 control must not run the attack")

    monkeypatch.setattr(construct_module, "loss_and_grad", no_attack)
    for kind in ("rand", "det"):
        built = construct(linear_model(data), data, kind, 0.0, 100, 0.1, seed=3, batch_size=8)
        assert torch.equal(built.images, data.float_images(0, data.n))
        attacked_targets = construct_module.targets_for(data.labels, 3, kind, 3)
        assert torch.equal(built.labels, attacked_targets)
        assert torch.equal(built.original_labels, data.labels)


def test_refuses_multi_label_and_black_box_models() -> None:
    data = noise_data()
    model = linear_model(data)
    multi = as_multi_label(data)
    with pytest.raises(ConfigError, match="multi-label"):
        construct(model, multi, "det", 0.1, 1, 0.1, seed=0, batch_size=8)
    onnx = AuditModel(model.network, CENTRED, ModelInfo("m.onnx", "onnx", "sha", None))
    with pytest.raises(ConfigError, match="black box"):
        construct(onnx, data, "det", 0.1, 1, 0.1, seed=0, batch_size=8)
    with pytest.raises(ConfigError, match="unknown nonrobust dataset kind"):
        construct(model, data, "both", 0.1, 1, 0.1, seed=0, batch_size=8)
    with pytest.raises(ConfigError, match="multi-label"):
        nonrobust_usefulness(model, multi, multi, NonrobustConfig())


@pytest.mark.parametrize(
    ("settings", "option"),
    [
        ({"steps": 0}, "--nonrobust-steps"),
        ({"epochs": 0}, "--epochs"),
        ({"train_batch_size": 1}, "--train-batch-size"),
        ({"batch_size": 0}, "--batch-size"),
        ({"eps": -0.1}, "--nonrobust-eps"),
        ({"eps": math.nan}, "--nonrobust-eps"),
        ({"step_size": 0.0}, "--nonrobust-step"),
        ({"lr": 0.0}, "--lr"),
        ({"limit": 1}, "--train-limit"),
        ({"kinds": ("rand", "adv")}, "--datasets"),
        ({"kinds": ()}, "--datasets"),
        ({"kinds": ("det", "det")}, "--datasets"),
    ],
)
def test_bad_config_values_name_the_option(settings: dict[str, object], option: str) -> None:
    with pytest.raises(ConfigError) as error:
        NonrobustConfig(**settings)  # type: ignore[arg-type]
    assert str(error.value).startswith(option) and "\n" not in str(error.value)


def test_config_budget_defaults_and_json() -> None:
    assert NonrobustConfig().budget(1, 28, 28) == pytest.approx(default_budget(1, 28, 28))
    assert NonrobustConfig(eps=1.0).budget(1, 28, 28) == pytest.approx((1.0, 0.2))
    assert NonrobustConfig(eps=1.0, step_size=0.3).budget(1, 28, 28) == pytest.approx((1.0, 0.3))
    doc = NonrobustConfig(kinds=("det",)).to_dict()
    assert doc["kinds"] == ["det"] and doc["eps"] is None and doc["steps"] == 100


def test_fresh_architecture_is_the_models_own_when_registered() -> None:
    data = noise_data()
    factory, description = fresh_factory(linear_model(data), 1, 3)
    assert description == "rescnn (reference architecture)"
    assert factory().classifier.out_features == 3
    own = wrap(nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, 3)), data, arch="smallcnn")
    factory, description = fresh_factory(own, 1, 3)
    assert description == "smallcnn (the model's architecture, re-initialised)"
    assert type(factory()).__name__ == "SmallCNN"


def test_fresh_training_is_seeded_and_leaves_the_callers_rng_alone() -> None:
    data = planted_data(32, seed=0)
    factory, _ = fresh_factory(pattern_model(data), 1, 2)
    x = data.float_images(0, data.n)

    def train(seed: int) -> AuditModel:
        return train_fresh(
            factory, x, data.labels, CENTRED, Task.BINARY, 1, 16, 1e-2, seed, torch.device("cpu")
        )

    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first, again, other = train(0), train(0), train(1)
    assert torch.equal(torch.random.get_rng_state(), before)
    weights = [m.network.classifier.weight for m in (first, again, other)]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])
    assert not first.training and first.spec == CENTRED


def test_accuracy_uses_the_clean_images_it_is_given() -> None:
    data = planted_data(64, seed=0)
    model = pattern_model(data)
    assert accuracy(model, data, batch_size=16) == (1.0, 1.0)
    flipped = AuditData(images=data.images, labels=1 - data.labels, task=Task.BINARY, class_names=("a", "b"))
    assert accuracy(model, flipped, batch_size=16) == (0.0, 0.0)


def tiny_factory(model: AuditModel, channels: int, n_classes: int) -> tuple[Callable[[], nn.Module], str]:
    """A small MLP instead of rescnn, to keep the planted run to a second (and because a checkerboard's
    sign, its phase, is invisible to convolutions followed by global average pooling)."""

    def build() -> nn.Module:
        return nn.Sequential(
            nn.Flatten(), nn.Linear(channels * SIZE * SIZE, 16), nn.ReLU(), nn.Linear(16, n_classes)
        )

    return build, "mlp (test)"


PlantedRun = tuple[
    NonrobustResult,
    AuditData,
    list[tuple[AuditModel, AuditData, tuple[float, float]]],
    list[tuple[str, int]],
    list[tuple[torch.Tensor, torch.Tensor]],
]
"""The result, the test split, every (fresh model, data, scores) scored, every progress stage, and
every (images, labels) a fresh network was trained on."""


@pytest.fixture(scope="module")
def planted_run() -> PlantedRun:
    """The usefulness probe on the planted problem, with every accuracy call and stage recorded."""
    train, test = planted_data(128, seed=0), planted_data(64, seed=1)
    model = pattern_model(train)
    calls: list[tuple[AuditModel, AuditData, tuple[float, float]]] = []
    stages: list[tuple[str, int]] = []
    trained_on: list[tuple[torch.Tensor, torch.Tensor]] = []
    real_train_fresh = nonrobust_module.train_fresh

    def train_spy(factory: Any, images: torch.Tensor, labels: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        trained_on.append((images.clone(), labels.clone()))
        return real_train_fresh(factory, images, labels, *args, **kwargs)

    def spy(fresh: AuditModel, data: AuditData, batch_size: int) -> tuple[float, float]:
        scores = accuracy(fresh, data, batch_size)
        calls.append((fresh, data, scores))
        return scores

    @contextmanager
    def progress(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
        stages.append((label, total or 0))
        yield lambda _: None

    config = NonrobustConfig(eps=0.5, steps=10, epochs=10, train_batch_size=32, lr=1e-2, seed=0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(nonrobust_module, "accuracy", spy)
        patch.setattr(nonrobust_module, "fresh_factory", tiny_factory)
        patch.setattr(nonrobust_module, "train_fresh", train_spy)
        result = nonrobust_usefulness(model, train, test, config, progress)
    return result, test, calls, stages, trained_on


def test_fresh_models_are_scored_on_the_untouched_clean_test_split(planted_run: PlantedRun) -> None:
    result, test, calls, _, _ = planted_run
    assert len(calls) == 5  # D_rand, its control, D_det, its control, the clean reference
    assert all(data is test for _, data, _ in calls)
    assert torch.equal(test.images, planted_data(64, seed=1).images)  # not modified either
    for fresh, data, scores in calls:
        logits = fresh.predict(data.float_images(0, data.n))
        direct = float((logits.argmax(dim=1) == data.labels).float().mean())
        assert scores[0] == pytest.approx(direct)
    rows = {row.kind: row for row in result.rows}
    expected = [scores for _, _, scores in calls]
    assert (rows["rand"].accuracy, rows["rand"].control_accuracy) == (expected[0][0], expected[1][0])
    assert (rows["det"].accuracy, rows["det"].control_accuracy) == (expected[2][0], expected[3][0])
    assert result.reference is not None
    assert (result.reference.accuracy, result.reference.balanced_accuracy) == expected[4]


def test_eps_zero_pipelines_train_on_the_original_images(planted_run: PlantedRun) -> None:
    """Both eps-0 runs see the training images unchanged: the control with the targets as labels,
    the clean reference with the original labels."""
    result, _, _, _, trained_on = planted_run
    train = planted_data(128, seed=0)
    original = train.float_images(0, train.n)
    d_rand, rand_control, d_det, det_control, reference = trained_on
    for images, _ in (rand_control, det_control, reference):
        assert torch.equal(images, original)
    for images, _ in (d_rand, d_det):
        assert not torch.equal(images, original)
    assert torch.equal(reference[1], train.labels)
    assert torch.equal(det_control[1], (train.labels + 1) % 2)
    assert torch.equal(d_det[1], det_control[1]) and torch.equal(d_rand[1], rand_control[1])
    assert result.reference is not None and result.reference.accuracy > 0.8  # the recipe learns the task


def test_planted_nonrobust_feature_is_useful_and_beats_the_control(planted_run: PlantedRun) -> None:
    """D_det's images show their original class's brightness but the target's checkerboard and
    label: only the checkerboard (the audited model's feature) maps them to their label, and it
    points to the true class on clean test images. The eps-0 control learns the shifted labels
    from unchanged images, so it is wrong on clean test images."""
    result, _, _, _, _ = planted_run
    rows = {row.kind: row for row in result.rows}
    det = rows["det"]
    assert det.attack_success > 0.9
    assert det.accuracy > 0.8, det
    assert det.control_accuracy is not None and det.control_accuracy < 0.2, det
    assert rows["rand"].accuracy > 0.8, rows["rand"]


def test_result_json_and_progress_stages(planted_run: PlantedRun) -> None:
    result, _, _, stages, _ = planted_run
    doc = result.to_dict()
    assert doc["chance"] == 0.5 and doc["majority"] == 0.5
    assert doc["architecture"] == "mlp (test)"
    assert (doc["n_train"], doc["n_test"]) == (128, 64)
    assert [row["kind"] for row in doc["rows"]] == ["rand", "det"]
    row = doc["rows"][1]
    assert row["eps"] == 0.5 and row["step_size"] == pytest.approx(0.1)
    assert set(row["seconds"]) == {"construction", "training", "control"}
    assert all(isinstance(v, float) for k, v in row.items() if k not in ("kind", "seconds"))
    assert [label for label, _ in stages] == [
        "building D_rand", "training on D_rand", "control D_rand (eps 0)",
        "building D_det", "training on D_det", "control D_det (eps 0)",
        "clean reference (eps 0, original labels)",
    ]  # fmt: skip
    assert set(doc["reference"]) == {"accuracy", "balanced_accuracy", "seconds"}
    assert stages[0][1] == 128 and stages[1][1] == 10 * 4


def test_a_second_model_reuses_the_eps_zero_runs_only_when_its_fresh_network_is_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The eps-0 runs never read the audited model's weights: a second model (``--compare``) with
    the same fresh network and normalisation gets the scores a run of its own would give, without
    training them again; one with another normalisation trains its own."""
    train, test = planted_data(64, seed=0), planted_data(32, seed=1)
    first = pattern_model(train)
    second = pattern_model(train)
    with torch.no_grad():
        second.network[1].weight.mul_(-1)  # other weights: its D_rand/D_det differ
    config = NonrobustConfig(eps=0.5, steps=3, epochs=2, train_batch_size=32, lr=1e-2, seed=0)
    trained: list[torch.Tensor] = []
    real_train_fresh = nonrobust_module.train_fresh

    def train_spy(factory: Any, images: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        trained.append(images)
        return real_train_fresh(factory, images, *args, **kwargs)

    monkeypatch.setattr(nonrobust_module, "fresh_factory", tiny_factory)
    monkeypatch.setattr(nonrobust_module, "train_fresh", train_spy)
    alone = nonrobust_usefulness(second, train, test, config)
    shared = EpsZeroRuns()
    nonrobust_usefulness(first, train, test, config, eps_zero=shared)
    trained.clear()
    reused = nonrobust_usefulness(second, train, test, config, eps_zero=shared)
    assert len(trained) == 2  # D_rand and D_det only
    assert reused.eps_zero_reused and not alone.eps_zero_reused
    assert reused.to_dict()["rows"][0]["accuracy"] == alone.rows[0].accuracy
    for ours, theirs in zip(reused.rows, alone.rows, strict=True):
        assert (ours.control_accuracy, ours.control_balanced_accuracy) == (
            theirs.control_accuracy,
            theirs.control_balanced_accuracy,
        )
    assert reused.reference == replace(alone.reference, seconds=reused.reference.seconds)  # type: ignore[arg-type]
    other_spec = wrap(second.network, train, InputSpec(mean=(0.4,), std=(1.0,)))
    trained.clear()
    assert not nonrobust_usefulness(other_spec, train, test, config, eps_zero=shared).eps_zero_reused
    assert len(trained) == 5


def test_limit_takes_a_stratified_training_subset() -> None:
    train, test = planted_data(64, seed=0), planted_data(16, seed=1)
    config = NonrobustConfig(
        kinds=("det",), eps=0.5, steps=2, epochs=1, train_batch_size=16, limit=20, control=False
    )
    result = nonrobust_usefulness(pattern_model(train), train, test, config)
    assert result.n_train == 20 and result.rows[0].control_accuracy is None and result.reference is None
    assert np.isfinite(result.rows[0].accuracy)
