"""``run_probe`` and ``medaudit confounders`` (probe mode): a tag-shortcut model trained here is flagged
and a brightness model is not; records, reproducibility, the CLI on the sample model, user errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from medaudit.cli import app
from medaudit.confounders.artifacts import apply_artifact
from medaudit.confounders.config import ProbeConfig
from medaudit.confounders.probe import run_probe
from medaudit.data import AuditData
from medaudit.models import AuditModel, InputSpec, bind_model
from medaudit.models.archs.small_cnn import SmallCNN
from medaudit.models.wrapper import ModelInfo
from medaudit.task import Task

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_models" / "pneumoniamnist_rescnn.onnx"
RECORD_KEYS = {
    "artifact", "strength", "position", "flip_rate", "auc", "accuracy", "auc_reversed",
    "auc_drop_reversed", "mean_probability_change", "n",
}  # fmt: skip
TAG_CORNER = "top-left"

# the command as cli.py registers it (a callback keeps "confounders" a sub-command)


def confounders(runner: CliRunner, *args: str | Path):
    return runner.invoke(app, ["confounders", *(str(a) for a in args)])


def assert_user_error(result, *needles: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    message = " ".join(result.stderr.split())
    assert message.startswith("error:"), message
    for needle in needles:
        assert needle in message, message


def bind(network: torch.nn.Module, data: AuditData) -> AuditModel:
    model = AuditModel(network, InputSpec(), ModelInfo("", "test", "", None))
    bind_model(model, data)
    return model


# -- synthetic shortcut data -----------------------------------------------------------------------


def noise(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dark uint8 noise images (so a white tag stands out) and each image's brightness in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    brightness = torch.rand(n, 1, 1, 1, generator=g)
    images = (torch.rand(n, 1, 28, 28, generator=g) * 60 + brightness * 60).round().to(torch.uint8)
    return images, brightness.flatten()


def tag_data(n: int, seed: int) -> AuditData:
    """Label = a tag in the top-left corner, nothing else: positives (odd index) carry it."""
    images, _ = noise(n, seed)
    labels = torch.arange(n) % 2
    positives = labels == 1
    images[positives] = apply_artifact(images[positives], "tag", 1.0, seed, corner=TAG_CORNER)
    return AuditData(images, labels, Task.BINARY, ("clean", "tagged"), {"source": "synthetic"})


def brightness_data(n: int, seed: int) -> AuditData:
    """Label = mean brightness above 0.5, no tags."""
    images, brightness = noise(n, seed)
    return AuditData(
        images, (brightness > 0.5).long(), Task.BINARY, ("dark", "bright"), {"source": "synthetic"}
    )


def train(data: AuditData, epochs: int = 30) -> SmallCNN:
    """A tiny CNN fitted in a few seconds on one CPU thread."""
    torch.manual_seed(0)
    network = SmallCNN(1, 2, width=4)
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-2)
    x, y = data.images.float() / 255, data.labels
    for _ in range(epochs):
        for batch in torch.randperm(len(x)).split(64):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(network(x[batch]), y[batch]).backward()
            optimiser.step()
    return network.eval()


@pytest.fixture(scope="module")
def tag_model() -> tuple[AuditModel, AuditData]:
    test = tag_data(128, seed=1)
    return bind(train(tag_data(256, seed=0)), test), test


@pytest.fixture(scope="module")
def brightness_model() -> tuple[AuditModel, AuditData]:
    test = brightness_data(128, seed=1)
    return bind(train(brightness_data(256, seed=0)), test), test


TAG_ONLY = ProbeConfig(artifacts=("tag",), strengths=(0.5, 1.0))


def test_tag_shortcut_is_flagged(tag_model) -> None:
    model, data = tag_model
    results = run_probe(model, data, TAG_ONLY).to_dict()
    assert results["clean"]["accuracy"] > 0.95  # it works on its own test set ...
    corner = next(
        r for r in results["probes"] if r["position"] == TAG_CORNER and r["strength"] == 1.0
    )  # ... for the wrong reason: the negatives flip once tagged
    assert corner["flip_rate"] > 0.4
    assert corner["mean_probability_change"]["tagged"] > 0.3
    assert corner["auc_drop_reversed"] > 0.4 and corner["auc_reversed"] < 0.6
    verdict = results["ranking"][0]  # the tag where it was learned is the strongest shortcut
    assert (verdict["artifact"], verdict["position"], verdict["verdict"]) == ("tag", TAG_CORNER, "shortcut")
    assert verdict["towards"] == "tagged" and verdict["pushes_towards"] == "tagged"
    assert "pushes towards tagged" in verdict["summary"] or "not of class tagged" in verdict["summary"]
    by_position = {r["position"]: r for r in results["by_position"]}
    assert set(by_position) == {"top-left", "top-right", "bottom-left", "bottom-right", "centre"}
    assert by_position[TAG_CORNER]["worst_flip_rate"] == pytest.approx(verdict["worst_flip_rate"])


def test_clean_row_carries_evals_intervals(brightness_model) -> None:
    """The probe's clean accuracy and AUC have the same seeded bootstrap intervals as ``eval``."""
    from medaudit.evaluate import EvalConfig, EvalResult

    model, data = brightness_model
    config = ProbeConfig(artifacts=("tag",), strengths=(1.0,), seed=3)
    clean = run_probe(model, data, config).to_dict()["clean"]
    logits = model.predict(data.float_images(0, data.n))
    evaluated = EvalResult(logits, data.labels, data.task, data.class_names, EvalConfig(seed=3)).to_dict()
    for metric in ("accuracy", "auc"):
        assert clean[f"{metric}_ci"] == pytest.approx(evaluated[f"{metric}_ci"])
        assert clean[f"{metric}_ci"][0] <= clean[metric] <= clean[f"{metric}_ci"][1]


def test_model_without_the_tag_is_not_flagged(brightness_model) -> None:
    model, data = brightness_model
    results = run_probe(model, data, TAG_ONLY).to_dict()
    assert results["clean"]["accuracy"] > 0.9
    assert all(r["flip_rate"] < 0.1 for r in results["probes"])
    assert all(r["auc_drop_reversed"] < 0.1 for r in results["probes"])
    assert all(r["verdict"] != "shortcut" for r in results["ranking"])


def test_records_are_the_model_on_the_marked_images(brightness_model) -> None:
    model, data = brightness_model
    config = ProbeConfig(artifacts=("patch", "lowpass"), strengths=(1.0,), positions=("centre",))
    results = run_probe(model, data, config).to_dict()
    records = results["probes"]
    assert [(r["artifact"], r["position"]) for r in records] == [("patch", "centre"), ("lowpass", None)]
    assert all(set(r) >= RECORD_KEYS and r["n"] == data.n for r in records)
    assert {r["artifact"] for r in results["ranking"]} == {"patch", "lowpass"}
    # recompute the patch cell by hand
    clean = torch.softmax(model.predict(data.images.float() / 255), 1)
    marked = apply_artifact(data.images, "patch", 1.0, 0, corner="centre")
    probs = torch.softmax(model.predict(marked.float() / 255), 1)
    flips = ((probs[:, 1] > 0.5) != (clean[:, 1] > 0.5)).float().mean().item()
    assert records[0]["flip_rate"] == pytest.approx(flips)
    change = (probs[:, 1] - clean[:, 1]).mean().item()
    assert records[0]["mean_probability_change"]["bright"] == pytest.approx(change, abs=1e-6)
    assert records[0]["accuracy"] == pytest.approx(((probs[:, 1] > 0.5).long() == data.labels).float().mean())


def test_reproducible_and_independent_of_batch_size(make_cnn, audit_data) -> None:
    data = audit_data(n=20, num_classes=3)
    model = bind(make_cnn(1, 3), data)
    config = ProbeConfig(artifacts=("dose_noise", "tag"), strengths=(0.5, 1.0), positions=("centre",), seed=3)
    first = run_probe(model, data, config)
    again = run_probe(model, data, ProbeConfig(**{**config.__dict__, "batch_size": 7}))
    for cell, logits in first.cell_logits.items():
        assert torch.allclose(logits, again.cell_logits[cell], atol=1e-5), cell
        assert torch.allclose(first.control_logits[cell], again.control_logits[cell], atol=1e-5), cell
    for a, b in zip(first.to_dict()["probes"], again.to_dict()["probes"], strict=True):
        assert a["flip_rate"] == b["flip_rate"] and a["auc_reversed"] == pytest.approx(b["auc_reversed"])
    other = run_probe(model, data, ProbeConfig(**{**config.__dict__, "seed": 4}))
    noisy = ("dose_noise", 1.0, None)
    assert not torch.equal(first.cell_logits[noisy], other.cell_logits[noisy])
    records = first.to_dict()["probes"]
    assert set(records[0]["mean_probability_change"]) == {"c0", "c1", "c2"}
    assert sum(records[0]["mean_probability_change"].values()) == pytest.approx(0, abs=1e-5)


def test_multi_label_is_refused(make_cnn) -> None:
    data = AuditData(
        torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.zeros(4, 3, dtype=torch.long),
        Task.MULTI_LABEL, ("a", "b", "c"), {"source": "synthetic"},
    )  # fmt: skip
    with pytest.raises(Exception, match="multi-label"):
        run_probe(bind(make_cnn(1, 3), data), data, TAG_ONLY)


def test_cli_on_the_sample_model(runner: CliRunner, real_env: Path, tmp_path: Path) -> None:
    out, grid = tmp_path / "probe.json", tmp_path / "grid.png"
    result = confounders(
        runner, SAMPLE, "--limit", "64", "--artifacts", "tag,lowpass", "--strengths", "0.5,1",
        "--json", out, "--save-grid", grid,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ranked by evidence" in result.stderr
    doc = json.loads(out.read_text())
    assert doc["command"] == "confounders" and doc["config"]["mode"] == "probe"
    results = doc["results"]
    records = results["probes"]
    assert len(records) == 2 * 5 + 2  # tag at five positions, lowpass once, two strengths each
    assert all(set(r) >= RECORD_KEYS and r["n"] == 64 for r in records)
    assert {r["strength"] for r in records} == {0.5, 1.0}
    assert results["positive_class"] == "pneumonia"
    assert 0.7 < results["clean"]["accuracy"] <= 1
    assert len(results["ranking"]) == 5 + 1  # tag at each position, lowpass
    assert {r["verdict"] for r in results["ranking"]} <= {"shortcut", "fragile", "none"}
    with Image.open(grid) as image:
        assert image.width > 100 and image.height > 100


def test_list_needs_no_model(runner: CliRunner) -> None:
    result = confounders(runner, "--list")
    assert result.exit_code == 0, result.output
    for name in ("tag", "patch", "border", "ruler", "lowpass", "dose_noise", "stamp"):
        assert name in result.stderr


def test_user_errors(runner: CliRunner, real_env: Path, tmp_path: Path) -> None:
    assert_user_error(confounders(runner, "probe"), "Missing argument 'MODEL'")
    assert_user_error(confounders(runner, SAMPLE, "--artifacts", "tga"), "unknown artifact 'tga'", "tag")
    assert_user_error(confounders(runner, SAMPLE, "--strengths", "1.5"), "strengths must lie in (0, 1]")
    assert_user_error(confounders(runner, SAMPLE, "--strengths", "high"), "--strengths takes numbers")
    assert_user_error(confounders(runner, SAMPLE, "--positions", "middle"), "unknown position")
    assert_user_error(
        confounders(runner, SAMPLE, "--save-grid", tmp_path / "missing" / "g.png"), "does not exist"
    )
    assert_user_error(
        confounders(runner, SAMPLE, "--limit", "8", "--positive-class", "nope"), "--positive-class 'nope'"
    )
