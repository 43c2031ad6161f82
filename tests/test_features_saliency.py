"""``medaudit.features.saliency``: rank correlation of attributions on x and on a perturbed x.

Planted answers: eps 0 leaves x unchanged, so both maps are equal (correlation 1); a linear
model's gradient does not depend on its input, so its saliency map is the same on any image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import scipy.stats
import torch
from conftest import as_multi_label
from torch import nn

from medaudit.data import AuditData
from medaudit.errors import ConfigError
from medaudit.features import saliency_stability, spearman
from medaudit.models import AuditModel, InputSpec, bind_model
from medaudit.models.archs.small_cnn import SmallCNN
from medaudit.models.wrapper import ModelInfo
from medaudit.task import Task

SIZE = 12
CENTRED = InputSpec(mean=(0.5,), std=(0.5,))


def noise_data(n: int = 24, classes: int = 3, seed: int = 0) -> AuditData:
    generator = torch.Generator().manual_seed(seed)
    images = (255 * torch.rand(n, 1, SIZE, SIZE, generator=generator)).round().to(torch.uint8)
    return AuditData(
        images=images,
        labels=torch.arange(n) % classes,
        task=Task.MULTI_CLASS,
        class_names=tuple(f"c{i}" for i in range(classes)),
        identity={"source": "synthetic"},
    )


def wrap(network: nn.Module, data: AuditData) -> AuditModel:
    model = AuditModel(network.eval(), CENTRED, ModelInfo("planted", "test", "sha", None))
    bind_model(model, data)
    return model


def cnn(data: AuditData) -> AuditModel:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        network = SmallCNN(1, data.num_classes, width=4)
        with torch.no_grad():
            network.classifier.weight.mul_(30.0)  # spread the logits so PGD has something to flip
    return wrap(network, data)


def linear(data: AuditData) -> AuditModel:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        network = nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, data.num_classes))
    return wrap(network, data)


def test_spearman_matches_scipy_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.integers(0, 5, (SIZE, SIZE)).astype(float)  # many ties
        b = a + rng.integers(0, 3, (SIZE, SIZE))
        assert spearman(a, b) == pytest.approx(
            scipy.stats.spearmanr(a.ravel(), b.ravel()).statistic, abs=1e-12
        )
    a, b = rng.random(50), rng.random(50)
    assert spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b).statistic, abs=1e-12)
    assert spearman(a, -a) == pytest.approx(-1.0)


def test_spearman_of_constant_maps() -> None:
    assert spearman(np.zeros(9), np.zeros(9)) == 1.0  # equal maps are perfectly stable
    assert np.isnan(spearman(np.zeros(9), np.arange(9.0)))  # undefined, as in scipy


@pytest.mark.parametrize("method", ["saliency", "integrated-gradients"])
def test_eps_zero_gives_correlation_one(method: str) -> None:
    data = noise_data()
    result = saliency_stability(cnn(data), data, 0.0, method, batch_size=10)
    assert len(result.correlations) == data.n
    assert np.all(result.correlations == 1.0)
    assert (result.mean, result.median, result.p10, result.flipped) == (1.0, 1.0, 1.0, 0.0)


def test_linear_models_saliency_is_the_same_on_any_image() -> None:
    data = noise_data()
    result = saliency_stability(linear(data), data, 0.2, "saliency", batch_size=10)
    np.testing.assert_allclose(result.correlations, 1.0)
    assert result.flipped > 0  # the perturbation moved predictions, the map did not move


def test_a_cnns_maps_change_under_a_perturbation_and_the_result_is_seeded() -> None:
    data = noise_data()
    model = cnn(data)
    stages: list[tuple[str, int | None]] = []
    done: list[int] = []

    @contextmanager
    def progress(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
        stages.append((label, total))
        yield done.append

    result = saliency_stability(model, data, 8 / 255, "saliency", seed=1, batch_size=10, progress=progress)
    again = saliency_stability(model, data, 8 / 255, "saliency", seed=1, batch_size=10)
    np.testing.assert_array_equal(result.correlations, again.correlations)
    assert result.mean < 0.999 and -1 <= result.p10 <= result.median <= 1
    assert result.mean == pytest.approx(float(np.mean(result.correlations)))
    assert stages == [("saliency stability", data.n)] and sum(done) == data.n
    doc = result.to_dict()
    assert doc["n"] == data.n and len(doc["correlations"]) == data.n and doc["undefined"] == 0
    assert doc["config"]["method"] == "saliency" and doc["config"]["eps"] == 8 / 255
    assert result.examples["images"].shape == (4, 1, SIZE, SIZE)
    assert result.examples["clean"].shape == result.examples["perturbed"].shape == (4, SIZE, SIZE)
    np.testing.assert_array_equal(result.examples["correlations"], result.correlations[:4])


def test_limit_takes_a_stratified_subset() -> None:
    data = noise_data(n=30)
    result = saliency_stability(linear(data), data, 0.0, limit=9)
    assert len(result.correlations) == 9 and result.config["n"] == 9 and result.config["limit"] == 9


def test_error_paths() -> None:
    data = noise_data()
    model = linear(data)
    with pytest.raises(ConfigError, match="--attribution"):
        saliency_stability(model, data, 0.1, "gradcam")
    with pytest.raises(ConfigError, match="--saliency-eps"):
        saliency_stability(model, data, 2.0)
    with pytest.raises(ConfigError, match="--saliency-limit"):
        saliency_stability(model, data, 0.1, limit=0)
    multi = as_multi_label(data)
    with pytest.raises(ConfigError, match="multi-label"):
        saliency_stability(model, multi, 0.1)
    black_box = AuditModel(model.network, CENTRED, ModelInfo("m.onnx", "onnx", "sha", None))
    with pytest.raises(ConfigError, match="gradients"):
        saliency_stability(black_box, data, 0.1)
