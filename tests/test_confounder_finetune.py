"""Shortcut-susceptibility mode (``confounders --finetune``): the paper's o.o.d. AUC curve against p."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
import torch

from medaudit.cli import app
from medaudit.confounders.config import FinetuneConfig
from medaudit.confounders.finetune import run_finetune
from medaudit.data import AuditData
from medaudit.errors import ConfigError
from medaudit.models import AuditModel
from medaudit.models.bind import bind_model
from medaudit.models.card import InputSpec
from medaudit.models.wrapper import ModelInfo
from medaudit.task import Task

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_models" / "pneumoniamnist_rescnn.pt"


def brightness_data(n: int, seed: int) -> AuditData:
    """Label = brighter image, with overlapping classes: a genuine but imperfect signal."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    level = 0.35 + 0.15 * labels.float() + 0.12 * torch.randn(n, generator=generator)
    noise = 0.05 * torch.randn(n, 1, 28, 28, generator=generator)
    images = (level[:, None, None, None] + noise).clamp(0, 1)
    return AuditData(
        images=(images * 255).round().to(torch.uint8),
        labels=labels,
        task=Task.BINARY,
        class_names=("dark", "bright"),
        identity={"source": "synthetic"},
    )


def pretrained(make_cnn: Callable[..., torch.nn.Module], data: AuditData) -> AuditModel:
    """A SmallCNN trained briefly on the brightness signal, wrapped and bound like a loaded model."""
    network = make_cnn(width=8, seed=1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        network.classifier.weight.data.div_(30.0)
        optimiser = torch.optim.Adam(network.parameters(), lr=1e-2)
        network.train()
        x, y = data.images.float() / 255, data.labels
        for _ in range(4):
            for start in range(0, data.n, 32):
                loss = torch.nn.functional.cross_entropy(
                    network(x[start : start + 32]), y[start : start + 32]
                )
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    network.eval()
    model = AuditModel(network, InputSpec(), ModelInfo("", "test", "", None))
    bind_model(model, data)
    return model


@pytest.fixture(scope="module")
def setup(make_cnn: Callable[..., torch.nn.Module]) -> tuple[AuditModel, AuditData, AuditData]:
    train, test = brightness_data(512, 0), brightness_data(128, 1)
    return pretrained(make_cnn, train), train, test


CONFIG = FinetuneConfig(artifact="tag", strength=1.0, fractions=(0.0, 1.0), epochs=10, lr=3e-3, batch_size=32)


@pytest.fixture(scope="module")
def curve(setup: tuple[AuditModel, AuditData, AuditData]) -> dict:
    model, train, test = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = run_finetune(model, train, test, CONFIG).to_dict()
    after = model.state_dict()
    return {"result": result, "unchanged": all(torch.equal(before[k], after[k]) for k in before)}


def test_ood_auc_falls_as_p_rises(curve: dict) -> None:
    result = curve["result"]
    at0, at1 = result["curve"]
    assert (at0["fraction"], at1["fraction"]) == (0.0, 1.0)
    assert at0["n_artifact"] == 0 and at1["n_artifact"] == 256 and at1["n_train"] == 512
    assert at0["iid_auc"] > 0.75 and at1["iid_auc"] > 0.7
    assert at0["ood_auc"] - at1["ood_auc"] > 0.2
    assert "picks up the tag shortcut" in result["verdict"]
    assert result["ood_auc_drop"] == pytest.approx(at0["ood_auc"] - at1["ood_auc"])
    low, high = result["ood_auc_drop_ci"]
    assert 0.1 <= low <= result["ood_auc_drop"] <= high  # the interval excludes a small drop
    for row in result["curve"]:
        assert row["ood_auc_ci"][0] <= row["ood_auc"] <= row["ood_auc_ci"][1]
    assert result["budget"] == {"epochs": 10, "n_train": 512, "lr": 3e-3, "batch_size": 32, "fractions": 2}
    assert "after 10 epochs on 512 training images" in result["verdict"]


def test_flat_curve_states_what_was_measured(setup: tuple[AuditModel, AuditData, AuditData]) -> None:
    model, train, test = setup
    tiny = FinetuneConfig(
        artifact="tag", strength=0.01, fractions=(0.0, 1.0), epochs=1, lr=1e-7, batch_size=64
    )
    verdict = run_finetune(model, train, test, tiny).to_dict()["verdict"]
    assert "after 1 epochs on 512 training images" in verdict and "larger budget" in verdict
    assert "does not pick up" not in verdict and "picks up" not in verdict


def test_user_model_unchanged(curve: dict) -> None:
    assert curve["unchanged"]


def test_reproducible(setup: tuple[AuditModel, AuditData, AuditData], curve: dict) -> None:
    model, train, test = setup
    config = FinetuneConfig(artifact="tag", fractions=(1.0,), epochs=1, lr=1e-2, batch_size=32)
    a = run_finetune(model, train, test, config).to_dict()
    b = run_finetune(model, train, test, config).to_dict()
    assert a["curve"] == b["curve"]
    other = run_finetune(model, train, test, FinetuneConfig(**{**config.__dict__, "seed": 5})).to_dict()
    assert other["curve"] != a["curve"]


def test_black_box_onnx_refused(setup: tuple[AuditModel, AuditData, AuditData]) -> None:
    model, train, test = setup
    onnx = AuditModel(model.network, InputSpec(), ModelInfo("m.onnx", "onnx", "", None))
    with pytest.raises(ConfigError, match=r"black box.*pt2"):
        run_finetune(onnx, train, test, CONFIG)


def test_config_checks() -> None:
    with pytest.raises(ConfigError, match="fractions"):
        FinetuneConfig(fractions=(0.0, 1.5))
    with pytest.raises(ConfigError, match="unknown artifact"):
        FinetuneConfig(artifact="nope")


def test_cli_end_to_end(runner, real_env: Path, tmp_path: Path) -> None:
    out = tmp_path / "ft.json"
    args = [
        "confounders", str(SAMPLE), "--finetune", "--fractions", "0,1", "--epochs", "1",
        "--train-limit", "128", "--limit", "64", "--json", str(out),
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    schema = json.loads((REPO / "docs" / "schema" / "medaudit-1.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(doc)  # the documented report format
    assert doc["config"]["mode"] == "finetune"
    finetune = doc["results"]["finetune"]
    assert [row["fraction"] for row in finetune["curve"]] == [0.0, 1.0]
    assert finetune["artifact"] == "tag" and finetune["strength"] == 1.0
    assert all(row["n_train"] == 128 for row in finetune["curve"])
    assert finetune["curve"][0]["n_artifact"] == 0 and finetune["curve"][1]["n_artifact"] > 0
    assert 0 <= finetune["baseline"]["iid_auc"] <= 1 and finetune["verdict"]
