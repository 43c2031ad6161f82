"""``medaudit features`` as a command and as a ``[features]`` section of ``run``: the JSON (schema,
configuration, both models side by side), gate metrics, the HTML section and its pictures, and
bad settings refused in one line before anything is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from conftest import assert_one_line_error
from typer.testing import CliRunner

from medaudit.audits import audits
from medaudit.cli import app
from medaudit.models.archs.small_cnn import SmallCNN

SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "schema" / "medaudit-1.schema.json"
QUICK = ["--nonrobust-steps", "3", "--epochs", "1", "--saliency-limit", "8", "--no-shift"]


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Two smallcnn state_dicts with cards, and data whose class is the image's brightness."""
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = tmp_path / f"net{seed}.pt"
        torch.save(SmallCNN(1, 2).state_dict(), model)
        card = {"arch": "smallcnn", "class_names": ["dark", "bright"], "preprocessing": {"channels": 1}}
        model.with_suffix(".json").write_text(json.dumps(card))
        paths.append(model)
    rng = np.random.default_rng(0)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % 2
        base = np.where(labels[:, None, None] == 1, 150, 90)
        return (base + rng.integers(-40, 40, (n, 28, 28))).clip(0, 255).astype(np.uint8), labels[:, None]

    (train_x, train_y), (test_x, test_y) = split(40), split(20)
    data = tmp_path / "data.npz"
    np.savez(data, train_images=train_x, train_labels=train_y, test_images=test_x, test_labels=test_y)
    return paths[0], paths[1], data


def test_features_command_measures_both_models(workspace: tuple[Path, Path, Path], tmp_path: Path) -> None:
    model, other, data = workspace
    out = tmp_path / "features.json"
    args = ["features", str(model), "--data", str(data), "--compare", str(other), *QUICK, "--json", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(doc)
    assert doc["command"] == "features"
    models = doc["results"]["models"]
    assert [m["label"] for m in models] == ["model", "compare"]
    assert models[1]["path"] == str(other)
    for measured in models:
        kinds = [row["kind"] for row in measured["nonrobust"]["rows"]]
        assert kinds == ["rand", "det"]
        assert measured["saliency"]["n"] == 8
        assert measured["shift"] is None
        assert set(measured["seconds"]) == {"clean", "attack", "nonrobust", "saliency"}
    shared = [m["nonrobust"] for m in models]
    assert [n["eps_zero_reused"] for n in shared] == [False, True]  # same fresh network: trained once
    assert shared[1]["reference"]["accuracy"] == shared[0]["reference"]["accuracy"]
    assert "were trained once" in " ".join(result.output.split())
    config = doc["config"]
    assert config["nonrobust"]["steps"] == 3 and config["nonrobust"]["epochs"] == 1
    assert config["compare"] == str(other)
    metrics = audits.get("features").extract(doc["results"])
    first = models[0]["nonrobust"]["rows"][0]
    assert metrics["features.drand_accuracy"] == first["accuracy"]
    assert metrics["features.drand_gain"] == pytest.approx(first["accuracy"] - first["control_accuracy"])
    assert metrics["features.chance"] == 0.5
    reference = models[0]["nonrobust"]["reference"]
    assert metrics["features.clean_reference_accuracy"] == reference["accuracy"]
    assert "Trade-off" in result.output and "D_rand" in result.output
    assert "clean (original labels)" in result.output


def test_quick_fills_only_what_is_not_given() -> None:
    options = audits.get("features").Options(quick=True, saliency_limit=7)
    assert options.resolved("saliency_limit") == 7
    assert options.resolved("nonrobust_steps") == 20
    assert audits.get("features").Options().resolved("nonrobust_steps") == 100


@pytest.mark.slow
def test_features_section_of_an_audit_file(workspace: tuple[Path, Path, Path], tmp_path: Path) -> None:
    model, _, data = workspace
    audit = tmp_path / "audit.toml"
    audit.write_text(
        f'[model]\npath = "{model.name}"\n[data]\ndata = "{data.name}"\n'
        "[features]\nnonrobust_steps = 2\nepochs = 1\nsaliency_limit = 4\nshift = false\n"
        'datasets = "det"\n[gate]\n"features.saliency_stability" = ">= -1"\n'
    )
    html = tmp_path / "report.html"
    result = CliRunner().invoke(
        app, ["run", str(audit), "--html", str(html), "--json", str(tmp_path / "r.json")]
    )
    assert result.exit_code == 0, result.output
    page = html.read_text()
    assert "Nonrobust features" in page and "D_det" in page and "trade-off" in page
    assert "clean (original labels)" in page
    assert page.count("data:image/png") >= 2  # the trade-off bars and the saliency examples
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [row["kind"] for row in doc["results"]["features"]["models"][0]["nonrobust"]["rows"]] == ["det"]


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--datasets", "rand,nope"], "--datasets"),
        (["--robust-eps", "3"], "--robust-eps"),
        (["--saliency-eps", "x/255"], "--saliency-eps"),
        (["--compare", "missing.pt"], "--compare"),
        (["--split", "train"], "train split"),
        (["--shard", "1/2"], "--shard"),
    ],
)
def test_bad_settings_fail_in_one_line(
    workspace: tuple[Path, Path, Path], extra: list[str], words: str
) -> None:
    model, _, data = workspace
    result = CliRunner().invoke(app, ["features", str(model), "--data", str(data), *extra])
    assert_one_line_error(result, words)
