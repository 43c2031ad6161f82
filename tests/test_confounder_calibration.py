"""Calibrated confounder verdicts: the matched control, the bootstrap statistics, and tiny models with
shortcuts planted here (low-pass filter, dose noise; written in this file, not with medaudit's artifacts)
that must rank first as ``shortcut`` while a model trained on clean images gets no ``shortcut``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from sklearn.metrics import roc_auc_score

from medaudit.confounders import calibration as cal
from medaudit.confounders.config import ProbeConfig
from medaudit.confounders.probe import run_probe
from medaudit.data import AuditData
from medaudit.models import AuditModel, InputSpec, bind_model
from medaudit.models.archs.small_cnn import SmallCNN
from medaudit.models.wrapper import ModelInfo
from medaudit.task import Task

SIZE = 28

# -- statistics -------------------------------------------------------------------------------------


def test_weighted_auc_matches_sklearn_with_ties_and_weights() -> None:
    rng = np.random.default_rng(0)
    positive = rng.random(200) < 0.4
    scores = np.round(rng.random(200) + 0.3 * positive, 1)  # rounded: many ties
    weights = rng.integers(0, 4, size=(5, 200)).astype(float)
    ours = cal.weighted_auc(positive, scores, weights)
    for row, value in zip(weights, ours, strict=True):
        assert value == pytest.approx(roc_auc_score(positive, scores, sample_weight=row), abs=1e-12)
    assert np.isnan(cal.weighted_auc(positive, scores, positive[None, :].astype(float)))[0]  # no negatives


def test_push_effect_is_a_percentile_bootstrap_of_the_artifact_beyond_its_control() -> None:
    rng = np.random.default_rng(1)
    n = 50
    clean = rng.dirichlet([1, 1], n)
    artifact = np.clip(clean + np.array([-0.2, 0.2]) + rng.normal(0, 0.05, (n, 2)), 0, 1)
    control = np.clip(clean + np.array([-0.05, 0.05]) + rng.normal(0, 0.05, (n, 2)), 0, 1)
    weights = cal.bootstrap_weights(n, 200, seed=3)
    effect = cal.push_effect(clean, artifact, control, 1, weights, 0.9)
    gain_a, gain_c = artifact[:, 1] - clean[:, 1], control[:, 1] - clean[:, 1]
    rounds = []
    for row in weights:  # the same resamples, one at a time
        index = np.repeat(np.arange(n), row.astype(int))
        a, c = gain_a[index].mean(), gain_c[index].mean()
        rounds.append(min(a, a - c))
    assert effect.value == pytest.approx(min(gain_a.mean(), gain_a.mean() - gain_c.mean()))
    assert [effect.low, effect.high] == pytest.approx(list(np.percentile(rounds, [5, 95])))
    assert effect.artifact == pytest.approx(gain_a.mean()) and effect.control == pytest.approx(gain_c.mean())
    # a control that pushes the other way earns the artifact nothing beyond its own push
    against = cal.push_effect(clean, artifact, clean - (control - clean), 1, weights, 0.9)
    assert against.value == pytest.approx(gain_a.mean())


def test_matched_control_keeps_place_sum_and_energy_but_not_the_pattern() -> None:
    rng = np.random.default_rng(2)
    clean = rng.integers(40, 80, size=(3, SIZE, SIZE, 1)).astype(np.uint8)
    marked = clean.copy()
    marked[:, 2:7, 3:8] += 80  # a bright square near the corner (no clipping anywhere)
    rngs = cal.control_rngs(0, [0, 1, 2], "test", 1)
    control = cal.matched_control(clean, marked, rngs)
    change = marked.astype(float) - clean
    moved = control.astype(float) - clean
    for i in range(3):
        assert moved[i].sum() == pytest.approx(change[i].sum(), rel=0.02)  # same brightening ...
        assert (moved[i] ** 2).sum() == pytest.approx((change[i] ** 2).sum(), rel=0.1)  # ... and energy
        assert not moved[i, 12:, 12:].any()  # only near the square
        assert not np.array_equal(control[i, 2:7, 3:8], marked[i, 2:7, 3:8])  # not the square itself
    assert not np.array_equal(moved[0], moved[1])  # a new pattern for every image
    again = cal.matched_control(clean, marked, cal.control_rngs(0, [0, 1, 2], "test", 1))
    assert np.array_equal(control, again)


# -- planted shortcuts --------------------------------------------------------------------------------


def base_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Label = orientation of a faint diagonal grating (+45 or -45 degrees, mirror images of each other,
    so no axis-aligned mark, isotropic filter or noise carries the class) over a smooth random
    background; Poisson noise of a dose that varies from image to image."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    images = []
    for label in labels:
        angle = np.pi / 4 + np.pi / 2 * label + rng.normal(0, 0.35)
        wave = np.cos(2 * np.pi * (np.cos(angle) * yy + np.sin(angle) * xx) * SIZE / 7 + rng.uniform(0, 7))
        background = gaussian_filter(rng.standard_normal((SIZE, SIZE)), 3, mode="wrap") * 150
        image = np.clip(110 + background + rng.uniform(3, 15) * wave, 0, 255)
        photons = rng.uniform(200, 1000)
        images.append(rng.poisson(image / 255 * photons) * 255 / photons)
    return np.stack(images), labels


def low_pass(images: np.ndarray) -> np.ndarray:
    """Keep a centred disc of the spectrum, diameter 0.49 of the width (the paper's denoising filter)."""
    k = np.arange(SIZE) - SIZE // 2
    disc = (k[:, None] ** 2 + k[None, :] ** 2) <= (0.49 * SIZE / 2) ** 2
    spectrum = np.fft.fftshift(np.fft.fft2(images), axes=(-2, -1)) * disc
    return np.fft.ifft2(np.fft.ifftshift(spectrum, axes=(-2, -1))).real


def low_dose(images: np.ndarray) -> np.ndarray:
    """Re-acquire at 100 photons per unit intensity: noisier than any base image (200 to 1000)."""
    rng = np.random.default_rng(7)
    return rng.poisson(images / 255 * 100) * 255 / 100


def dataset(n: int, seed: int, plant=None) -> AuditData:
    """Base images; with ``plant``, every positive carries the shortcut."""
    images, labels = base_images(n, seed)
    if plant is not None:
        images[labels == 1] = plant(images[labels == 1])
    pixels = torch.from_numpy(np.clip(np.rint(images), 0, 255).astype(np.uint8))[:, None]
    return AuditData(pixels, torch.from_numpy(labels), Task.BINARY, ("neg", "pos"), {"source": "synthetic"})


def shifted(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The usual random-crop augmentation: the batch moved up to 3 px, the gap filled black."""
    dy, dx = (int(v) for v in torch.randint(-3, 4, (2,), generator=generator))
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3))
    return padded[:, :, 3 + dy : 3 + dy + SIZE, 3 + dx : 3 + dx + SIZE]


def trained(plant) -> tuple[AuditModel, AuditData]:
    """A tiny CNN trained for a few seconds on 600 images, bound to 300 clean test images."""
    train = dataset(600, 0, plant)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        network = SmallCNN(1, 2, width=4)
        optimiser = torch.optim.Adam(network.parameters(), lr=3e-3)
        x, y = train.images.float() / 255, train.labels
        generator = torch.Generator().manual_seed(0)
        for _ in range(25):
            for batch in torch.randperm(len(x), generator=generator).split(64):
                optimiser.zero_grad()
                loss = torch.nn.functional.cross_entropy(network(shifted(x[batch], generator)), y[batch])
                loss.backward()
                optimiser.step()
    test = dataset(300, 1)
    model = AuditModel(network.eval(), InputSpec(), ModelInfo("", "test", "", None))
    bind_model(model, test)
    return model, test


PROBE = ProbeConfig(strengths=(0.5, 1.0), bootstrap=200)  # every default artifact


@pytest.mark.parametrize(("plant", "artifact"), [(low_pass, "lowpass"), (low_dose, "dose_noise")])
def test_planted_shortcut_ranks_first_as_shortcut(plant, artifact: str) -> None:
    model, data = trained(plant)
    results = run_probe(model, data, PROBE).to_dict()
    first = results["ranking"][0]
    assert (first["artifact"], first["verdict"]) == (artifact, "shortcut"), first["summary"]
    assert first["effect_ci"][0] >= PROBE.min_effect
    assert first["effect_ci"][0] <= first["effect"] <= first["effect_ci"][1]
    assert first["position"] is None and first["control"] < first["artifact_value"]
    shortcuts = [e["verdict"] == "shortcut" for e in results["ranking"]]
    assert shortcuts == sorted(shortcuts, reverse=True)  # shortcuts first, then by evidence
    rest = [e["evidence"] for e in results["ranking"] if e["verdict"] != "shortcut"]
    assert rest == sorted(rest, reverse=True)


def test_clean_model_gets_no_shortcut() -> None:
    model, data = trained(None)
    results = run_probe(model, data, PROBE).to_dict()
    assert results["clean"]["accuracy"] > 0.7  # it learned the grating
    verdicts = {(e["artifact"], e["position"]): e["verdict"] for e in results["ranking"]}
    assert "shortcut" not in verdicts.values(), [e["summary"] for e in results["ranking"][:3]]
    assert len(verdicts) == 2 * 5 + 4  # tag and patch at five positions, four others


def test_gate_metrics_follow_the_verdicts() -> None:
    from medaudit.audits.confounders import ConfoundersAudit

    ranking = [
        {"verdict": "shortcut", "effect": 0.4, "worst_flip_rate": 0.2, "worst_auc_drop_reversed": 0.3},
        {"verdict": "fragile", "effect": 0.05, "worst_flip_rate": 0.7, "worst_auc_drop_reversed": 0.0},
        {"verdict": "shortcut", "effect": 0.2, "worst_flip_rate": 0.1, "worst_auc_drop_reversed": 0.1},
    ]
    discovery = [{"region": "top-left", "flagged": True}, {"region": "centre", "flagged": False}]
    metrics = ConfoundersAudit().extract({"ranking": ranking, "discovery": discovery})
    assert metrics == {
        "confounders.shortcuts": 2.0,
        "confounders.largest_effect": 0.4,
        "confounders.worst_flip_rate": 0.7,
        "confounders.worst_auc_drop_reversed": 0.3,
        "confounders.discovery_flagged": 1.0,
    }
    broken = ConfoundersAudit().extract({"ranking": [*ranking, "junk"]})
    assert np.isnan(broken["confounders.shortcuts"])  # a malformed report fails the gate, never passes
    assert ConfoundersAudit().extract({"subgroups": {}}) == {}
