"""Auditing your own model (issue #21, stumbles 2 and 3): a model trained on normalised inputs but
audited without --mean/--std is called out with the flags that fit it, and the torchvision
"resnet18 adapted to 28 px" recipe has a built-in whose name a mismatching checkpoint's error gives."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, random_images, train_cnn
from torch import nn
from typer.testing import CliRunner

from medaudit.cli import app
from medaudit.models import LoadOptions, load_model
from medaudit.models.bind import ASSUMED_UNIT_INPUT

N = 128


def brightness_data(folder: Path) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """1-channel noise images labelled by brightness (above or below the median): an npz file
    and the float [0, 1] images and labels it holds."""
    images = random_images(N, channels=1, seed=3)
    x = images.float() / 255
    brightness = x.mean(dim=(1, 2, 3))
    labels = (brightness > brightness.median()).long()
    path = folder / "bright.npz"
    np.savez(path, images=images[:, 0].numpy(), labels=labels.numpy())
    return path, x, labels


def scripted(path: Path, network: nn.Module) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(network.eval(), torch.rand(2, 1, 28, 28)), str(path))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CNN trained on (x - 0.5) / 0.5, one trained on raw [0, 1] pixels, and their data."""
    folder = tmp_path_factory.mktemp("normalised")
    data, x, labels = brightness_data(folder)
    normalised = train_cnn((x - 0.5) / 0.5, labels, steps=150, seed=1)
    raw = train_cnn(x, labels, steps=150, seed=1)
    return {
        "data": data,
        "normalised": scripted(folder / "normalised.pt", normalised),
        "raw": scripted(folder / "raw.pt", raw),
    }


def eval_json(runner: CliRunner, model: Path, data: Path, out: Path, *flags: str) -> tuple[str, dict]:
    result = runner.invoke(app, ["eval", str(model), "--data", str(data), "--json", str(out), *flags])
    assert result.exit_code == 0, (result.output, result.exception)
    return " ".join(result.stderr.split()), json.loads(out.read_text())


# --------------------------------------------------------------------------- stumble 2: forgotten --mean/--std


def test_forgotten_normalisation_is_called_out_with_the_flags(
    runner: CliRunner, trained: dict[str, Path], tmp_path: Path
) -> None:
    stderr, doc = eval_json(runner, trained["normalised"], trained["data"], tmp_path / "out.json")
    assert doc["results"]["accuracy"] < 0.6  # the audit itself is as given: [0, 1] pixels
    assert "--mean 0.5 --std 0.5" in stderr
    assert "assumes the model takes [0,1] pixels" in stderr
    flagged = [w for w in doc["warnings"] if "--mean 0.5 --std 0.5" in w]
    assert len(flagged) == 1, doc["warnings"]
    assert "probe images against" in flagged[0]
    assert doc["model"]["input"]["mean"] is None and doc["model"]["input"]["std"] is None
    assert ASSUMED_UNIT_INPUT in doc["model"]["notes"]


def test_given_normalisation_gives_no_warning(
    runner: CliRunner, trained: dict[str, Path], tmp_path: Path
) -> None:
    stderr, doc = eval_json(
        runner, trained["normalised"], trained["data"], tmp_path / "out.json", "--mean", "0.5", "--std", "0.5"
    )
    assert "--mean" not in stderr and not any("--mean" in w for w in doc["warnings"])
    assert ASSUMED_UNIT_INPUT not in doc["model"]["notes"]
    assert doc["results"]["accuracy"] > 0.9


def test_model_trained_on_unit_pixels_gives_no_warning(
    runner: CliRunner, trained: dict[str, Path], tmp_path: Path
) -> None:
    stderr, doc = eval_json(runner, trained["raw"], trained["data"], tmp_path / "out.json")
    assert "with --mean" not in stderr and not any("--mean" in w for w in doc["warnings"])
    # nothing is known, so the assumption is recorded and said on screen, as a note
    assert ASSUMED_UNIT_INPUT in doc["model"]["notes"]
    assert "warning" not in stderr and f"note: {ASSUMED_UNIT_INPUT}" in " ".join(stderr.split())


# --------------------------------------------------------------------------- stumble 3: torchvision 28 px resnet


def torchvision_resnet18_28(in_channels: int, num_classes: int) -> nn.Module:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so the comparison means something
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_torchvision_28px_resnet_loads_as_builtin(tmp_path: Path) -> None:
    network = torchvision_resnet18_28(1, 3)
    path = tmp_path / "tv.pth"
    torch.save(network.state_dict(), path)
    model = load_model(path, LoadOptions(device="cpu", arch="resnet18_tv28"))
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model.predict(x), network(x))


def test_torchvision_28px_resnet_audits_with_the_cli(runner: CliRunner, tmp_path: Path) -> None:
    network = torchvision_resnet18_28(1, 2)
    path = tmp_path / "tv.pth"
    torch.save(network.state_dict(), path)
    data, _, _ = brightness_data(tmp_path)
    out = tmp_path / "out.json"
    result = runner.invoke(
        app, ["eval", str(path), "--arch", "resnet18_tv28", "--data", str(data), "--json", str(out)]
    )
    assert result.exit_code == 0, (result.output, result.exception)
    assert json.loads(out.read_text())["model"]["arch"] == "resnet18_tv28"


def test_wrong_arch_names_the_closest_builtin(runner: CliRunner, tmp_path: Path) -> None:
    network = torchvision_resnet18_28(1, 2)
    path = tmp_path / "tv.pth"
    torch.save(network.state_dict(), path)
    data, _, _ = brightness_data(tmp_path)
    result = runner.invoke(app, ["eval", str(path), "--arch", "resnet18_28", "--data", str(data)])
    assert_one_line_error(
        result, "does not fit --arch resnet18_28", "closest built-in: resnet18_tv28 (fits exactly)"
    )
