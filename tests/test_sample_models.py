"""The committed sample models: every format loads, agrees, and matches its card."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

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
            # counts are exact; the AUC ranks scores, and another CPU or torch build (seen on a 16-core
            # machine with torch 2.11) reorders a few near-equal ones: ~1e-5 per swapped pair
            for key, tolerance in (("accuracy", 1e-9), ("balanced_accuracy", 1e-9), ("auc", 1e-4)):
                assert measured[key] == pytest.approx(card["metrics"]["test"][key], abs=tolerance), key
            assert measured["n"] == card["metrics"]["test"]["n"] == data.n
    reference = logits[".pt"]
    for suffix in (".pt2", ".onnx"):
        assert torch.equal(logits[suffix].argmax(1), reference.argmax(1)), suffix
        assert torch.allclose(logits[suffix], reference, rtol=1e-3, atol=1e-3), suffix


@pytest.mark.slow
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


def load_table_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("table", REPO / "sample_models" / "table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quality_bar_and_the_adversarial_trade_off() -> None:
    """Standard models reach ResNet-18 (28) minus 3 points; adversarial twins are markedly more robust.

    The cards' numbers are re-measured by ``test_formats_agree_and_card_metrics_reproduce``."""
    table = load_table_script()
    cards = {p.stem: json.loads(p.read_text()) for p in CARDS}
    for name, card in cards.items():
        if card["training"]["adversarial"] is not None:
            twin = cards[name.removesuffix("_adv")]
            gain = (
                card["metrics"]["robust_test"]["robust_accuracy"]
                - twin["metrics"]["robust_test"]["robust_accuracy"]
            )
            assert gain >= 0.03, f"{name}: robust accuracy only {gain:+.3f} over {twin['name']}"
            continue
        bar = table.RESNET18_28[card["dataset"]["name"]] - table.MARGIN
        assert card["metrics"]["test"]["accuracy"] >= bar, f"{name}: test accuracy under the bar {bar:.3f}"
