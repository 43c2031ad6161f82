"""Label sharpness, intrinsic dimension (against brute force, known manifolds and scikit-dimension)
and ``medaudit intrinsic`` end to end."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import skdim
import torch
from typer.testing import CliRunner

from medaudit.cli import app
from medaudit.data import AuditData
from medaudit.errors import ConfigError
from medaudit.intrinsic import DimensionConfig, label_sharpness, mle, twonn
from medaudit.intrinsic.audit import IntrinsicConfig, run_intrinsic
from medaudit.intrinsic.dimension import estimate
from medaudit.intrinsic.neighbours import knn
from medaudit.models import InputSpec
from medaudit.models.wrapper import AuditModel, ModelInfo
from medaudit.task import Task

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_models" / "pneumoniamnist_rescnn"


def images(n: int, seed: int = 0, size: int = 6) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 1, size, size), dtype=np.uint8))


def brute_force_k_f(x: torch.Tensor, labels: torch.Tensor) -> float:
    """max |y_j != y_k| / ||x_j - x_k|| over all pairs, by the definition (labels as rows)."""
    flat = x.reshape(len(x), -1).double() / 255
    best = 0.0
    for j, k in itertools.combinations(range(len(x)), 2):
        differ = not torch.equal(labels[j], labels[k])
        distance = float((flat[j] - flat[k]).norm())
        if differ and distance > 0:
            best = max(best, 1 / distance)
    return best


@pytest.mark.parametrize("classes", [2, 4])
def test_k_f_equals_brute_force_and_ignores_order(classes: int) -> None:
    x = images(40, seed=classes)
    labels = torch.from_numpy(np.random.default_rng(1).integers(0, classes, 40))
    result = label_sharpness(x, labels)
    assert result.k_f == pytest.approx(brute_force_k_f(x, labels), rel=1e-12)
    order = torch.randperm(40, generator=torch.Generator().manual_seed(3))
    assert label_sharpness(x[order], labels[order]).k_f == pytest.approx(result.k_f, rel=1e-12)
    per_sample = result.per_sample.numpy()
    assert per_sample.max() == pytest.approx(result.k_f) and (per_sample > 0).all()


def test_k_f_multi_label_uses_differing_label_vectors() -> None:
    x = images(30, seed=5)
    labels = torch.from_numpy(np.random.default_rng(2).integers(0, 2, (30, 3)))
    assert label_sharpness(x, labels).k_f == pytest.approx(brute_force_k_f(x, labels), rel=1e-12)


def test_near_duplicates_are_measured_exactly() -> None:
    """Two images one grey level apart in one pixel, with different labels: K_F = 255 exactly
    (float32 |a|^2 + |b|^2 - 2ab would lose this distance entirely)."""
    x = images(200, seed=7, size=28)
    x[1] = x[0]
    x[1, 0, 5, 5] = x[0, 0, 5, 5] + 1 if x[0, 0, 5, 5] < 255 else 254
    labels = torch.zeros(200, dtype=torch.long)
    labels[1] = 1
    labels[100:] = 1
    result = label_sharpness(x, labels)
    assert result.k_f == pytest.approx(255.0, rel=1e-9)
    assert result.closest_pairs()[0] == {"a": 0, "b": 1, "distance": pytest.approx(1 / 255)}


def test_duplicates_are_counted_and_conflicts_reported() -> None:
    x = images(20, seed=9)
    x[5], x[6], x[7] = x[4], x[4], x[3]
    labels = torch.zeros(20, dtype=torch.long)
    labels[10:] = 1
    labels[6] = 1  # identical to image 4, other label
    result = label_sharpness(x, labels)
    assert result.exact_duplicates == 3
    assert result.cross_label_duplicates == [(4, 6)]
    assert np.isfinite(result.k_f)  # over the distinct images
    summary = result.to_dict()
    assert summary["exact_duplicates"] == 3 and summary["cross_label_duplicates"] == [[4, 6]]


def subspace(n: int, d: int, ambient: int, noise: float = 0.0, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((ambient, d)))[0]
    points = rng.standard_normal((n, d)) @ basis.T + noise * rng.standard_normal((n, ambient))
    return torch.from_numpy(points.astype(np.float32))


def sphere(n: int, d: int, ambient: int, seed: int = 0) -> torch.Tensor:
    """Uniform points on the d-sphere (curved), rotated into ``ambient`` dimensions."""
    rng = np.random.default_rng(seed)
    points = rng.standard_normal((n, d + 1))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    rotation = np.linalg.qr(rng.standard_normal((ambient, d + 1)))[0]
    return torch.from_numpy((points @ rotation.T).astype(np.float32))


@pytest.mark.parametrize(
    ("points", "true_d"),
    [(subspace(3000, 5, 64), 5), (subspace(3000, 10, 128, noise=1e-4), 10), (sphere(3000, 3, 32), 3)],
    ids=["plane-5", "plane-10", "sphere-3"],
)
def test_estimators_recover_known_dimensions(points: torch.Tensor, true_d: int) -> None:
    """Tolerance: MLE (k=20) underestimates by up to ~12 % at d = 10, TwoNN within ~10 %."""
    dists, _ = knn(points, 20)
    assert mle(dists, 20, "k-1") == pytest.approx(true_d, rel=0.15)
    assert twonn(dists) == pytest.approx(true_d, rel=0.12)
    assert mle(dists, 20, "k-2") == pytest.approx(mle(dists, 20, "k-1") * 18 / 19, rel=1e-12)


def test_matches_scikit_dimension() -> None:
    points = subspace(2000, 8, 100, noise=1e-3)
    dists, idx = knn(points, 20)
    X = points.numpy()
    for unbiased, normalizer in ((False, "k-1"), (True, "k-2")):
        same_neighbours = skdim.id.MLE(unbiased=unbiased).fit(
            X, precomputed_knn_arrays=(dists.numpy(), idx.numpy())
        )
        assert mle(dists, 20, normalizer) == pytest.approx(same_neighbours.dimension_, rel=1e-6)
    own_neighbours = skdim.id.MLE().fit(X).dimension_
    assert mle(dists, 20, "k-1") == pytest.approx(own_neighbours, rel=1e-6)
    pairs = np.stack([dists[:, 0].numpy(), dists[:, 1].numpy()], axis=1)
    assert twonn(dists) == pytest.approx(skdim.id.TwoNN(dist=True).fit(pairs).dimension_, rel=1e-6)
    assert twonn(dists) == pytest.approx(skdim.id.TwoNN().fit(X).dimension_, rel=1e-6)


def test_estimate_removes_duplicates_and_gives_an_interval() -> None:
    points = subspace(1500, 6, 40)
    with_duplicates = torch.cat([points, points[:50]])
    result = estimate(with_duplicates, DimensionConfig(rounds=10, seed=1))
    assert result["duplicates_removed"] == 50 and result["n"] == 1500
    low, high = result["mle_interval"]
    assert low < result["mle"] < high and high - low < 0.2 * result["mle"]
    again = estimate(with_duplicates, DimensionConfig(rounds=10, seed=1))
    assert again["mle_interval"] == result["mle_interval"]
    with pytest.raises(ConfigError, match="k"):
        DimensionConfig(k=2)


def test_data_only_on_real_breastmnist(runner: CliRunner, real_data_root: Path, tmp_path: Path) -> None:
    plot = tmp_path / "nn.png"
    result = runner.invoke(
        app,
        ["intrinsic", "--dataset", "breastmnist", "--data-root", str(real_data_root), "--rounds", "4",
         "--save-plot", str(plot), "--json", "-"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["command"] == "intrinsic" and doc["model"] is None
    r = doc["results"]
    assert r["label_sharpness"]["n"] == 546  # BreastMNIST train split, all images
    assert r["d_repr"] is None and r["model_smoothness"] is None
    assert 1 < r["d_data"]["twonn"] < 100 and r["d_data"]["dims"] == 784
    assert r["label_sharpness"]["k_f"] > 0 and r["interpretation"]
    assert plot.stat().st_size > 1000


def test_with_the_sample_model(
    runner: CliRunner, real_data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDAUDIT_DATA_ROOT", str(real_data_root))
    result = runner.invoke(
        app,
        ["intrinsic", str(SAMPLE.with_suffix(".onnx")), "--limit", "600", "--rounds", "4",
         "--lipschitz-steps", "3", "--json", "-"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)["results"]
    assert r["d_repr"]["dims"] == 128 and "Gemm" in r["d_repr"]["layer"]
    assert set(r["d_repr_le_d_data"]) == {"mle", "twonn"}
    smooth = r["model_smoothness"]
    assert smooth["n"] == 512 and smooth["mean"] > 0 and smooth["max"] >= smooth["median"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "give a model, --dataset NAME or --data PATH"),
        (["--dataset", "breastmnist", "--layer", "fc"], "--layer needs a model"),
        (["--dataset", "breastmnist", "--k", "2"], "--k must be at least 3"),
        (["--dataset", "breastmnist", "--save-plot", "/nonexistent/dir/p.png"], "does not exist"),
    ],
)
def test_user_errors(runner: CliRunner, real_data_root: Path, args: list[str], needle: str) -> None:
    result = runner.invoke(app, ["intrinsic", "--data-root", str(real_data_root), *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert needle in " ".join(result.stderr.split())


class BatchJitter(torch.nn.Module):
    """Features of identical images differ in the last bits with their batch position, as GPU kernels do."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 8))
            self.head = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.body(x)
        return self.head(z + 1e-6 * torch.arange(len(z), dtype=z.dtype)[:, None])


def test_d_repr_drops_duplicate_images_even_when_their_features_differ_in_the_last_bits() -> None:
    pixels = (torch.rand(60, 1, 28, 28, generator=torch.Generator().manual_seed(3)) * 255).to(torch.uint8)
    pixels[55:] = pixels[:5]  # five exact duplicates, at other batch positions
    data = AuditData(
        images=pixels, labels=torch.arange(60) % 2, task=Task.BINARY, class_names=("a", "b"), identity={}
    )
    model = AuditModel(
        BatchJitter().eval(),
        InputSpec(channels=1, input_size=28, mean=(0.5,), std=(0.5,)),
        ModelInfo(path="", format="state_dict", sha256="", parameters=None),
    )
    config = IntrinsicConfig(dimension=DimensionConfig(k=5, rounds=0), lipschitz=None)
    result = run_intrinsic(data, model, config)
    assert result.d_data["duplicates_removed"] == 5
    assert result.d_repr is not None
    assert result.d_repr["duplicates_removed"] == 5 and result.d_repr["n"] == 55
