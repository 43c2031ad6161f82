"""Shortcut discovery: a small mark that is not in the artifact library, planted here in one corner of the
positive training images, is found in that corner (white-box and black-box search); a model trained on
clean images gets no flagged region; the picture is a PNG."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from medaudit.confounders.config import DiscoveryConfig
from medaudit.confounders.discovery import regions, run_discovery
from medaudit.confounders.figures import discovery_png
from medaudit.data import AuditData
from medaudit.errors import ConfigError
from medaudit.models import AuditModel, InputSpec, bind_model
from medaudit.models.wrapper import ModelInfo
from medaudit.task import Task

SIZE = 28


def images(n: int, seed: int, mark: bool) -> AuditData:
    """Label = orientation of a faint diagonal grating on a smooth random background; with ``mark``,
    every positive carries a small bright plus sign near the top-left corner (rows and cols 1..5)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    out = []
    for label in labels:
        angle = np.pi / 4 + np.pi / 2 * label + rng.normal(0, 0.35)
        wave = np.cos(2 * np.pi * (np.cos(angle) * yy + np.sin(angle) * xx) * SIZE / 7 + rng.uniform(0, 7))
        background = gaussian_filter(rng.standard_normal((SIZE, SIZE)), 3, mode="wrap") * 150
        image = 110 + background + rng.uniform(3, 15) * wave + rng.normal(0, 4, (SIZE, SIZE))
        if mark and label == 1:
            image[3, 1:6] = image[1:6, 3] = 250
        out.append(image)
    pixels = torch.from_numpy(np.clip(np.rint(np.stack(out)), 0, 255).astype(np.uint8))[:, None]
    return AuditData(pixels, torch.from_numpy(labels), Task.BINARY, ("neg", "pos"), {"source": "synthetic"})


def position_aware_cnn() -> torch.nn.Module:
    """Two conv stages and a fully connected head over the feature map: where a mark is matters to it
    (a global-pooling head would take a mark anywhere, so no region could stand out)."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(16 * 7 * 7, 2),
    )  # fmt: skip


def trained(mark: bool) -> tuple[AuditModel, AuditData]:
    """A tiny CNN trained for a few seconds on 600 images, bound to 300 test images without the mark."""
    train = images(600, 0, mark)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        network = position_aware_cnn()
        optimiser = torch.optim.Adam(network.parameters(), lr=3e-3)
        x, y = train.images.float() / 255, train.labels
        for _ in range(20):
            for batch in torch.randperm(len(x)).split(64):
                optimiser.zero_grad()
                torch.nn.functional.cross_entropy(network(x[batch]), y[batch]).backward()
                optimiser.step()
    test = images(300, 1, mark=False)
    model = AuditModel(network.eval(), InputSpec(), ModelInfo("", "test", "", None))
    bind_model(model, test)
    return model, test


class BlackBox(AuditModel):
    """The same network, declared without gradients (like an ONNX file without a torch twin)."""

    @property
    def has_gradients(self) -> bool:
        return False


@pytest.fixture(scope="module")
def marked() -> tuple[AuditModel, AuditData]:
    return trained(mark=True)


CONFIG = DiscoveryConfig(steps=20, n_fit=64, n_eval=200)


def test_regions_cover_the_grid_with_corners_flush() -> None:
    named = regions(28, DiscoveryConfig(grid=3, patch=0.2))
    assert [name for name, _ in named][:3] == ["top-left", "top", "top-right"]
    assert named[0][1] == (0, 0, 6, 6) and named[-1][1] == (22, 22, 6, 6) and named[4][0] == "centre"
    assert len(regions(28, DiscoveryConfig(grid=4))) == 16


def test_planted_mark_is_found_in_its_corner(marked) -> None:
    model, data = marked
    result = run_discovery(model, data, CONFIG)
    rows = result.to_dict()["discovery"]
    first = rows[0]
    assert (first["region"], first["towards"], first["flagged"]) == ("top-left", "pos", True), rows[:3]
    assert first["box"] == [0, 0, 6, 6] and first["flip_rate"] > 0.8
    assert first["flip_rate"] - first["control_flip_rate"] >= CONFIG.margin
    assert [r["region"] for r in rows if r["flagged"]] == ["top-left"]
    # an independent check of the reported flip rate: paste the found patch by hand
    patch = result.patches[0, 1]
    held = data.images.float() / 255
    clean = model.predict(held).argmax(1)
    pasted = held.clone()
    pasted[:, :, 0:6, 0:6] = patch
    flipped = (model.predict(pasted).argmax(1) == 1)[clean != 1].float().mean().item()
    assert flipped > 0.8  # on all 300 test images, not only the held-out ones


def test_black_box_random_search_finds_the_corner_too(marked) -> None:
    model, data = marked
    blind = BlackBox(model.network, InputSpec(), ModelInfo("", "test", "", None))
    bind_model(blind, data)
    result = run_discovery(blind, data, CONFIG)
    assert result.method == "random"
    first = result.to_dict()["discovery"][0]
    assert (first["region"], first["towards"], first["flagged"]) == ("top-left", "pos", True)


def test_clean_model_has_no_flagged_region() -> None:
    model, data = trained(mark=False)
    rows = run_discovery(model, data, CONFIG).to_dict()["discovery"]
    assert len(rows) == 9 and not any(r["flagged"] for r in rows), rows[:2]


def test_picture_and_reproducibility(marked) -> None:
    model, data = marked
    first = run_discovery(model, data, DiscoveryConfig(steps=3, n_fit=16, n_eval=32, seed=4))
    again = run_discovery(model, data, DiscoveryConfig(steps=3, n_fit=16, n_eval=32, seed=4))
    assert torch.equal(first.patches, again.patches)
    assert np.array_equal(first.flip_rates, again.flip_rates, equal_nan=True)
    png = discovery_png(data.images[0].float() / 255, first, "synthetic")
    with Image.open(io.BytesIO(png)) as picture:
        assert picture.format == "PNG" and picture.width >= 400 and picture.height >= 200


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="grid"):
        DiscoveryConfig(grid=0)
    with pytest.raises(ConfigError, match="patch"):
        DiscoveryConfig(patch=0.9)
    with pytest.raises(ConfigError, match="steps"):
        DiscoveryConfig(steps=0)
