"""The committed sample models: every format loads, agrees, and matches its card."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medaudit.data import DataSpec, load_data
from medaudit.evaluate import EvalConfig, evaluate
from medaudit.models import bind_model, load_model

REPO = Path(__file__).resolve().parents[1]
CARDS = sorted((REPO / "sample_models").glob("*.json"))


def test_there_are_sample_models() -> None:
    names = {card.stem for card in CARDS}
    assert "pneumoniamnist_rescnn" in names


@pytest.mark.parametrize("card_path", CARDS, ids=lambda p: p.stem)
def test_formats_agree_and_card_metrics_reproduce(card_path: Path, real_data_root: Path) -> None:
    card = json.loads(card_path.read_text())
    data = load_data(
        DataSpec(
            dataset=card["dataset"]["name"],
            size=card["dataset"]["size"],
            split="test",
            data_root=real_data_root,
        )
    )
    logits = {}
    for suffix in (".pt", ".pt2", ".onnx"):
        path = card_path.with_suffix(suffix)
        assert path.stat().st_size < 5 * 2**20, f"{path.name} must stay well under 5 MB"
        model = load_model(path)
        bind_model(model, data)
        assert model.has_gradients, f"{path.name}: gradients must be available (ONNX through a verified twin)"
        result = evaluate(model, data, EvalConfig(batch_size=512))
        logits[suffix] = result.logits
        if suffix == ".pt":
            measured = result.metrics()
            for key in ("accuracy", "balanced_accuracy", "auc"):
                assert measured[key] == pytest.approx(card["metrics"]["test"][key], abs=1e-9), key
            assert measured["n"] == card["metrics"]["test"]["n"] == data.n
    reference = logits[".pt"]
    for suffix in (".pt2", ".onnx"):
        assert torch.equal(logits[suffix].argmax(1), reference.argmax(1)), suffix
        assert torch.allclose(logits[suffix], reference, atol=1e-3), suffix


def test_training_script_quick_smoke(tmp_path: Path, real_data_root: Path) -> None:
    """--quick trains one epoch on 256 images and writes every format and a card."""
    out = tmp_path / "models"
    command = [
        sys.executable, str(REPO / "sample_models" / "train.py"), "--dataset", "breastmnist", "--quick",
        "--out", str(out), "--data-root", str(real_data_root),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    card = json.loads((out / "breastmnist_rescnn.json").read_text())
    assert card["dataset"] == {"name": "breastmnist", "size": 28}
    assert card["metrics"]["test"]["n"] == 64
    assert 0.0 <= card["metrics"]["robust_test"]["robust_accuracy"] <= card["metrics"]["test"]["accuracy"]
    for suffix in (".pt", ".pt2", ".onnx"):
        assert (out / f"breastmnist_rescnn{suffix}").is_file()
