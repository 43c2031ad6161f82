"""Bad input found by review: each is one 'error:' line and exit 2, found before any work where
it can be, never a crash (exit 4) or a misleading report later on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, fresh_cli
from PIL import Image
from typer.testing import CliRunner

from medaudit.cli import app
from medaudit.data.files import load_image_folder, load_npz
from medaudit.errors import DataError, ModelLoadError
from medaudit.models.archs.small_cnn import SmallCNN
from medaudit.models.card import card_from_dict

REPO = Path(__file__).resolve().parents[1]
MODEL = str(REPO / "sample_models" / "pneumoniamnist_rescnn.pt")


@pytest.fixture
def state_dict(tmp_path: Path) -> Path:
    """A smallcnn state_dict with a card naming its architecture."""
    torch.manual_seed(0)
    model = tmp_path / "net.pt"
    torch.save(SmallCNN(1, 2).state_dict(), model)
    (tmp_path / "net.json").write_text(json.dumps({"arch": "smallcnn", "preprocessing": {"channels": 1}}))
    return model


def npz_with_names(path: Path, names: list[str]) -> Path:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 28, 28), dtype=np.uint8)
    np.savez(path, images=images, labels=np.arange(8) % 2, class_names=np.array(names))
    return path


# ---- 1. duplicate class names ----


def test_duplicate_npz_class_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"class_names in .* names 'x' twice"):
        load_npz(npz_with_names(tmp_path / "dup.npz", ["x", "x"]))


def test_duplicate_npz_class_names_fail_the_command(tmp_path: Path, state_dict: Path) -> None:
    data = npz_with_names(tmp_path / "dup.npz", ["x", "x"])
    result = CliRunner().invoke(app, ["eval", str(state_dict), "--data", str(data)])
    assert_one_line_error(result, "'x' twice")


@pytest.mark.parametrize("names", [["a", "a"], ["1", 1], ["a", "b", "a"]])
def test_duplicate_card_class_names_are_refused(names: list) -> None:
    with pytest.raises(ModelLoadError, match=r"card\.json: 'class_names' names .* twice"):
        card_from_dict({"class_names": names}, "card.json")


def test_duplicate_card_class_names_fail_the_command(tmp_path: Path, state_dict: Path) -> None:
    card = {"arch": "smallcnn", "class_names": ["a", "a"], "preprocessing": {"channels": 1}}
    state_dict.with_suffix(".json").write_text(json.dumps(card))
    data = npz_with_names(tmp_path / "ok.npz", ["a", "b"])
    result = CliRunner().invoke(app, ["eval", str(state_dict), "--data", str(data)])
    assert_one_line_error(result, "'a' twice")


# ---- 2. harden --out that names a folder ----


@pytest.mark.parametrize("out", [".", "", "..", "dd/", "dd", "dd/."])
def test_harden_out_that_is_a_folder_fails_before_torch(tmp_path: Path, out: str) -> None:
    (tmp_path / "dd").mkdir()
    outcome, stderr = fresh_cli("harden", MODEL, "--out", out, "--method", "pgd-at", cwd=tmp_path)
    assert outcome == {"code": 2, "torch": False}, (out, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "is a folder: give a file stem" in lines[0], stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dd"]
    assert not list(tmp_path.parent.glob("*.pt2"))


def test_harden_out_ending_in_a_slash_is_refused_even_when_missing(tmp_path: Path) -> None:
    outcome, stderr = fresh_cli("harden", MODEL, "--out", "new/", cwd=tmp_path)
    assert outcome == {"code": 2, "torch": False}, stderr
    assert "--out new/ is a folder" in stderr
    assert not list(tmp_path.iterdir())


# ---- 3. input size bound ----


@pytest.mark.parametrize("size", ["100000", "4097"])
def test_input_size_is_bounded_before_torch(tmp_path: Path, size: str) -> None:
    outcome, stderr = fresh_cli("eval", MODEL, "--input-size", size, cwd=tmp_path)
    assert outcome == {"code": 2, "torch": False}, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "--input-size" in lines[0] and "4096" in lines[0], stderr


def test_input_size_help_states_the_bound() -> None:
    result = CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "200"})
    assert "4096" in result.output


def test_card_input_size_is_bounded() -> None:
    with pytest.raises(ModelLoadError, match=r"card\.json: preprocessing 'input_size' must be 1\.\.4096"):
        card_from_dict({"preprocessing": {"input_size": 100000}}, "card.json")
    assert card_from_dict({"preprocessing": {"input_size": 4096}}, "card.json").spec.input_size == 4096


# ---- 5. mean/std that can only give NaN ----


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--mean", "nan"], "--mean must be finite numbers, got 'nan'"),
        (["--mean", "0.5,inf,0.5"], "--mean must be finite numbers"),
        (["--std", "nan"], "--std must be finite numbers, got 'nan'"),
        (["--std", "1e-300"], "--std must be at least 1e-06"),
        (["--std", "0"], "--std must be at least 1e-06"),
        (["--mean", "x"], "--mean takes numbers separated by commas"),
    ],
)
def test_mean_and_std_are_checked_before_torch(tmp_path: Path, args: list[str], needle: str) -> None:
    outcome, stderr = fresh_cli("eval", MODEL, *args, cwd=tmp_path)
    assert outcome == {"code": 2, "torch": False}, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], stderr


def test_audit_file_mean_nan_is_refused_in_its_words(tmp_path: Path) -> None:
    audit = tmp_path / "audit.toml"
    audit.write_text(f'[model]\npath = "{MODEL}"\nmean = [nan]\nstd = [0.5]\n[eval]\n')
    result = CliRunner().invoke(app, ["run", str(audit)])
    assert_one_line_error(result, "[model] mean must be finite numbers")


def test_card_std_must_not_be_tiny() -> None:
    with pytest.raises(ModelLoadError, match=r"card\.json: preprocessing 'std' must be at least 1e-06"):
        card_from_dict({"preprocessing": {"std": [1e-300]}}, "card.json")


# ---- 4. class images in nested folders ----


def save_png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(path)


def test_class_with_images_only_in_nested_folders_is_refused(tmp_path: Path) -> None:
    save_png(tmp_path / "normal" / "0.png")
    save_png(tmp_path / "pneumonia" / "sub" / "0.png")
    with pytest.raises(DataError, match=r"pneumonia has no images directly in it .*sub.*DIR/<class>/"):
        load_image_folder(tmp_path)


def test_an_empty_class_folder_is_still_allowed(tmp_path: Path) -> None:
    save_png(tmp_path / "normal" / "0.png")
    (tmp_path / "pneumonia" / "empty").mkdir(parents=True)
    data = load_image_folder(tmp_path)
    assert data.class_names == ("normal", "pneumonia") and data.n == 1


# ---- a folder where a file is expected: the true reason ----


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "folder"], "audit file folder is a folder, not a file"),
        (
            ["features", "model.pt", "--data", "data.npz", "--compare", "folder"],
            "--compare folder is a folder",
        ),
        (["eval", "model.pt", "--data", "data.npz", "--json", ""], "--json is empty: give a file name"),
    ],
    ids=["run", "features --compare", "--json ''"],
)
def test_a_folder_or_an_empty_path_is_named_as_such(
    toy_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, args: list[str], needle: str
) -> None:
    model, _ = toy_files
    monkeypatch.chdir(model.parent)
    (model.parent / "folder").mkdir()
    assert_one_line_error(CliRunner().invoke(app, args), needle)
