"""``run_shift`` and ``medaudit shift``: on real PneumoniaMNIST with the sample model, on synthetic
224 px data for the AlexNet comparison, and the user errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from medaudit.cli import app
from medaudit.models import AuditModel, InputSpec, bind_model
from medaudit.models.wrapper import ModelInfo
from medaudit.shift.benchmark import ShiftConfig, run_shift
from medaudit.shift.catalogue import PARAMS
from medaudit.shift.corrupt import corrupt

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_models" / "pneumoniamnist_rescnn.pt"
RECORD_KEYS = {"corruption", "severity", "accuracy", "balanced_error", "auc", "n", "accuracy_drop"}


def shift(runner: CliRunner, *args: str | Path):
    return runner.invoke(app, ["shift", *(str(a) for a in args)])


def run_json(runner: CliRunner, *args: str | Path) -> dict:
    result = shift(runner, *args, "--json", "-")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_user_error(result, *needles: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    message = " ".join(result.stderr.split())
    assert message.startswith("error:"), message
    for needle in needles:
        assert needle in message, message


def bound_model(make_cnn, data) -> AuditModel:
    model = AuditModel(
        make_cnn(data.channels, data.num_classes), InputSpec(), ModelInfo("", "test", "", None)
    )
    bind_model(model, data)
    return model


def test_sample_model_on_real_pneumonia(runner: CliRunner, real_env: Path, tmp_path: Path) -> None:
    grid, heatmap = tmp_path / "grid.png", tmp_path / "heat.png"
    doc = run_json(
        runner, SAMPLE, "--limit", "96", "--corruptions", "gaussian_noise,brightness_down,pixelate",
        "--save-grid", grid, "--save-heatmap", heatmap,
    )  # fmt: skip
    results = doc["results"]
    assert doc["command"] == "shift" and doc["config"]["mode"] == "scaled"
    assert results["label"] == "MedMNIST-C-style" and results["baseline"] is None
    assert "scaled" in results["baseline_note"]
    records = results["corruptions"]
    assert len(records) == 15 and all(set(r) >= RECORD_KEYS for r in records)
    assert all(r["n"] == 96 for r in records)
    clean = results["clean"]["accuracy"]
    assert 0.7 < clean <= 1
    noise = {r["severity"]: r["accuracy"] for r in records if r["corruption"] == "gaussian_noise"}
    assert noise[5] < clean  # the sample model is not noise-proof at sigma 0.08
    summary = results["summary"]
    assert summary["worst_corruption"] in {"gaussian_noise", "brightness_down", "pixelate"}
    mean_be = sum(r["balanced_error"] for r in records) / len(records)
    assert summary["mean_be"] == pytest.approx(mean_be)
    for path in (grid, heatmap):
        with Image.open(path) as image:
            assert image.width > 200 and image.height > 200


def test_reproducible_and_independent_of_batch_size(make_cnn, audit_data) -> None:
    data = audit_data(n=20, channels=1, size=28)
    model = bound_model(make_cnn, data)
    config = ShiftConfig(
        corruptions=("speckle_noise", "impulse_noise", "motion_blur"), source="breastmnist", mode="scaled"
    )
    first = run_shift(model, data, config).to_dict()
    again = run_shift(model, data, replace(config, batch_size=7)).to_dict()
    assert first["corruptions"] == again["corruptions"]
    other_seed = run_shift(model, data, replace(config, seed=1)).to_dict()
    assert first["corruptions"] != other_seed["corruptions"]


def test_cells_are_the_model_on_the_corrupted_images(make_cnn, audit_data) -> None:
    """A cell's accuracy equals the model's accuracy on corrupt() of the same images and seed."""
    data = audit_data(n=16, channels=1, size=28)
    model = bound_model(make_cnn, data)
    config = ShiftConfig(corruptions=("gaussian_noise",), source="pneumoniamnist", mode="scaled", seed=4)
    records = run_shift(model, data, config).to_dict()["corruptions"]
    for record in records:
        x = corrupt(data.images, "gaussian_noise", record["severity"], 4, dataset="pneumoniamnist")
        with torch.inference_mode():
            predicted = model.predict(x.float() / 255).argmax(dim=1)
        assert record["accuracy"] == pytest.approx(float((predicted == data.labels).float().mean()))


def test_alexnet_comparison_only_for_the_official_224_px_setting(make_cnn, audit_data) -> None:
    data = audit_data(n=8, channels=1, size=224)
    data = replace(data, identity={"source": "medmnist", "name": "breastmnist", "size": 224, "split": "test"})
    model = bound_model(make_cnn, data)
    names = tuple(PARAMS["breastmnist"])
    official = run_shift(model, data, ShiftConfig(corruptions=names, source="breastmnist", mode="medmnistc"))
    results = official.to_dict()
    assert results["label"] == "MedMNIST-C" and results["baseline_note"] is None
    per = {p["corruption"]: p for p in results["per_corruption"]}
    assert per["contrast_down"]["rbe_flagged"] is True  # AlexNet denominator +0.0133 < 0.02
    assert "contrast_down" in results["summary"]["rbe_excluded"]
    assert results["summary"]["mean_normalised_be"] is not None
    scaled = run_shift(model, data, ShiftConfig(corruptions=names, source="breastmnist", mode="scaled"))
    assert scaled.to_dict()["baseline"] is None
    subset = ShiftConfig(corruptions=names, source="breastmnist", mode="medmnistc", severities=(1, 2))
    assert "five severities" in run_shift(model, data, subset).to_dict()["baseline_note"]


def test_list_needs_no_model(runner: CliRunner) -> None:
    result = shift(runner, "--list", "--dataset", "breastmnist")
    assert result.exit_code == 0, result.output
    text = result.stderr
    assert "speckle_noise" in text and "gaussian_noise" not in text


def test_user_errors(runner: CliRunner, real_env: Path, tmp_path: Path, synthetic_npz: Path) -> None:
    assert_user_error(shift(runner), "give a model file")
    assert_user_error(shift(runner, SAMPLE, "--severities", "1,x"), "--severities")
    assert_user_error(shift(runner, SAMPLE, "--severities", "0,6", "--limit", "8"), "1..5")
    assert_user_error(
        shift(runner, SAMPLE, "--corruptions", "fog", "--limit", "8"), "unknown corruption 'fog'"
    )
    assert_user_error(shift(runner, SAMPLE, "--save-grid", tmp_path / "missing" / "g.png"), "does not exist")
    assert_user_error(shift(runner, SAMPLE, "--data", synthetic_npz, "--task", "binary"), "--modality")
    card = SAMPLE.with_suffix(".json")
    before = card.read_bytes()
    assert_user_error(shift(runner, SAMPLE, "--save-heatmap", card), "overwrite an input file")
    assert card.read_bytes() == before


def test_user_data_with_a_modality(runner: CliRunner, real_env: Path, synthetic_npz: Path) -> None:
    doc = run_json(
        runner, SAMPLE, "--data", synthetic_npz, "--task", "binary", "--modality", "ultrasound",
        "--severities", "1,5",
    )  # fmt: skip
    assert doc["config"]["params"] == "breastmnist"
    assert {r["corruption"] for r in doc["results"]["corruptions"]} == set(PARAMS["breastmnist"])
    assert {r["severity"] for r in doc["results"]["corruptions"]} == {1, 5}
