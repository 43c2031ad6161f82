"""``medaudit harden``: a hardened copy written in every format with its card, both models audited
the same way, the input never touched, and bad input refused before any work."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from conftest import assert_one_line_error
from typer.testing import CliRunner

from medaudit.cli import app
from medaudit.models.archs.small_cnn import SmallCNN

SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "schema" / "medaudit-1.schema.json"


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, Path]:
    """A smallcnn state_dict with its card, and data whose class is the image's brightness."""
    torch.manual_seed(0)
    model = tmp_path / "net.pt"
    torch.save(SmallCNN(1, 2).state_dict(), model)
    card = {"arch": "smallcnn", "class_names": ["dark", "bright"], "preprocessing": {"channels": 1}}
    (tmp_path / "net.json").write_text(json.dumps(card))
    rng = np.random.default_rng(0)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % 2
        base = np.where(labels[:, None, None] == 1, 150, 90)
        return (base + rng.integers(-40, 40, (n, 28, 28))).clip(0, 255).astype(np.uint8), labels[:, None]

    (train_x, train_y), (test_x, test_y) = split(48), split(24)
    data = tmp_path / "data.npz"
    np.savez(data, train_images=train_x, train_labels=train_y, test_images=test_x, test_labels=test_y)
    return model, data


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_harden_writes_the_copy_and_audits_both(workspace: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = workspace
    before = digest(model)
    out = tmp_path / "hardened"
    args = ["harden", str(model), "--data", str(data), "--out", str(out), "--epochs", "1", "--steps", "2"]
    args += ["--audit-eps", "2/255", "--json", str(tmp_path / "harden.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert digest(model) == before
    doc = json.loads((tmp_path / "harden.json").read_text())
    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(doc)
    res = doc["results"]
    assert res["training"]["config"]["method"] == "pgd-at" and res["training"]["config"]["epochs"] == 1
    assert doc["config"]["harden"]["eps"] == pytest.approx(2 / 255)
    for side in ("before", "after"):
        assert set(res[side]) == {"eval", "attack"}
        assert res[side]["eval"]["n"] == 24
    # the written model is the audited one: auditing the file gives the "after" numbers
    written = Path(res["written"]["torchscript"])
    assert (
        written.is_file()
        and json.loads(written.with_suffix(".json").read_text())["training"]["hardening"]["method"]
        == "pgd-at"
    )
    again = CliRunner().invoke(
        app, ["eval", str(written), "--data", str(data), "--json", str(tmp_path / "again.json")]
    )
    assert again.exit_code == 0, again.output
    audited = json.loads((tmp_path / "again.json").read_text())["results"]
    assert audited["accuracy"] == res["after"]["eval"]["accuracy"]
    assert audited["auc"] == pytest.approx(res["after"]["eval"]["auc"], abs=1e-6)
    assert "Before and after hardening" in result.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--eps", "1/255,2/255"], "--eps takes one training budget"),
        (["--method", "fgsm-at"], "fgsm-at"),
        (["--split", "train"], "trains on the train split"),
        (["--audit-eps", "abc"], "--eps takes numbers or fractions"),
    ],
)
def test_bad_options_fail_before_loading(
    workspace: tuple[Path, Path], tmp_path: Path, extra: list[str], message: str
) -> None:
    model, data = workspace
    args = ["harden", str(model), "--data", str(data), "--out", str(tmp_path / "h"), *extra]
    assert_one_line_error(CliRunner().invoke(app, args), message)
    assert not list(tmp_path.glob("h*"))


def test_existing_outputs_are_never_overwritten(workspace: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = workspace
    (tmp_path / "h.onnx").write_text("keep")
    result = CliRunner().invoke(
        app, ["harden", str(model), "--data", str(data), "--out", str(tmp_path / "h")]
    )
    assert_one_line_error(result, "exists")
    assert (tmp_path / "h.onnx").read_text() == "keep"
    onnx = model.with_suffix(".onnx")
    onnx.write_bytes(b"")  # the stem may not name the input model's own files either
    result = CliRunner().invoke(
        app, ["harden", str(model), "--data", str(data), "--out", str(model.with_suffix(""))]
    )
    assert_one_line_error(result, "exists")


def test_the_report_cannot_take_the_cards_name(workspace: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = workspace
    args = [
        "harden",
        str(model),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "h"),
        "--json",
        str(tmp_path / "h.json"),
    ]
    assert_one_line_error(CliRunner().invoke(app, args), "card")
    assert not list(tmp_path.glob("h*"))
