"""The command line: help, happy paths on real data, and every user-error path."""

from __future__ import annotations

import json
import os
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medaudit.attacks import attacks
from medaudit.attacks.plan import WHITE_BOX_AUTO
from medaudit.cli import _globals_first, app
from medaudit.commands.info import listing
from medaudit.models.archs.small_cnn import SmallCNN
from medaudit.registry import describe as description

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_models" / "pneumoniamnist_rescnn"


def invoke(runner: CliRunner, *args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def assert_user_error(result, *needles: str) -> None:
    """Exit 2, one line on stderr naming the problem, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    message = result.stderr.strip()
    assert "Traceback" not in result.output
    assert message.startswith("error:"), message
    assert len(message.splitlines()) <= 3  # one logical line; rich may wrap long lines
    for needle in needles:
        assert needle in " ".join(message.split()), message


def save_torchscript(path: Path, network: torch.nn.Module, channels: int = 1, size: int = 28) -> Path:
    network.eval()
    traced = torch.jit.trace(network, torch.zeros(2, channels, size, size))
    torch.jit.save(traced, str(path))
    return path


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return save_torchscript(tmp_path / "tiny.pt", SmallCNN(1, 2, width=4))


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    np.savez(
        path,
        test_images=rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
        test_labels=rng.integers(0, 2, (40, 1)),
    )
    return path


@pytest.mark.parametrize("command", [[], ["eval"], ["info"], ["list"]])
def test_help(runner: CliRunner, command: list[str]) -> None:
    result = invoke(runner, *command, "--help")
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_eval_sample_model_on_real_data(runner, real_data_root, tmp_path, monkeypatch) -> None:
    """The README's main job: the card names the dataset, so no data option is needed."""
    monkeypatch.setenv("MEDAUDIT_DATA_ROOT", str(real_data_root))
    out = tmp_path / "eval.json"
    result = invoke(runner, "eval", SAMPLE.with_suffix(".pt"), "--json", out)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["schema"] == "medaudit/1"
    assert doc["command"] == "eval"
    assert doc["data"]["name"] == "pneumoniamnist" and doc["data"]["n"] == 624
    assert len(doc["model"]["sha256"]) == 64
    card = json.loads(SAMPLE.with_suffix(".json").read_text())
    assert doc["results"]["accuracy"] == pytest.approx(card["metrics"]["test"]["accuracy"], abs=1e-9)
    confusion = np.array(doc["results"]["confusion_matrix"])
    assert confusion.sum() == 624
    assert np.trace(confusion) / 624 == pytest.approx(doc["results"]["accuracy"])


def test_json_stdout_is_pure_and_deterministic(runner, real_data_root, monkeypatch) -> None:
    monkeypatch.setenv("MEDAUDIT_DATA_ROOT", str(real_data_root))
    args = ["eval", SAMPLE.with_suffix(".onnx"), "--limit", "100", "--seed", "3", "--json", "-"]
    first, second = invoke(runner, *args), invoke(runner, *args)
    assert first.exit_code == 0, first.output
    doc_a, doc_b = json.loads(first.stdout), json.loads(second.stdout)
    assert doc_a["results"] == doc_b["results"]
    assert doc_a["data"]["n"] == 100 and doc_a["seed"] == 3
    other = json.loads(invoke(runner, *args[:-4], "--seed", "4", "--json", "-").stdout)
    assert other["data"]["n"] == 100
    # stratified: every seed keeps the class counts of the full test split (234 normal / 390 pneumonia)
    support = [sum(row) for row in other["results"]["confusion_matrix"]]
    assert support == [sum(row) for row in doc_a["results"]["confusion_matrix"]] == [38, 62]


def test_eval_user_data_npz(runner, tiny_model, tiny_npz) -> None:
    result = invoke(runner, "eval", tiny_model, "--data", tiny_npz, "--json", "-")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["data"]["source"] == "npz" and doc["results"]["n"] == 40
    assert doc["results"]["task"] == "binary-class"


def test_info_reports_format_and_gradients(runner, tiny_model) -> None:
    result = invoke(runner, "info", tiny_model, "--json", "-")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["results"]["format"] == "torchscript"
    assert doc["results"]["gradients"] is True
    assert doc["results"]["parameters"] == sum(p.numel() for p in SmallCNN(1, 2, width=4).parameters())


def test_list_archs(runner) -> None:
    result = invoke(runner, "list", "archs")
    assert result.exit_code == 0
    for name in ("resnet18_28", "resnet50_224", "smallcnn"):
        assert name in result.output


@pytest.mark.parametrize("what", ["archs", "attacks", "corruptions", "artifacts"])
def test_list_gives_every_entry_a_one_line_description(runner, monkeypatch, what: str) -> None:
    """A description, never the constructor signature a dataclass uses as the docstring of a class without one."""
    rows = listing(what)
    assert rows and all(text and "\n" not in text for _, text in rows), rows
    monkeypatch.setenv("COLUMNS", "250")  # one table row per entry
    result = invoke(runner, "list", what)
    assert result.exit_code == 0, result.output
    for name, text in rows:
        assert f"{name} " in result.output and text in result.output


def test_list_attacks_shows_descriptions_not_signatures(runner, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    output = invoke(runner, "list", "attacks").output
    for name in attacks:
        cls = attacks.get(name)
        assert f"{cls.__name__}(" not in output
        assert description(cls) and not description(cls).startswith(f"{cls.__name__}(")
    assert "steps:" not in output and "'int'" not in output
    auto = next(line for line in output.splitlines() if "│ auto " in line)  # the default plan is listed too
    assert all(name in auto for name in WHITE_BOX_AUTO), auto


def test_list_refuses_an_unknown_registry(runner) -> None:
    assert_user_error(invoke(runner, "list", "nope"), "archs, attacks, corruptions, artifacts")


def test_info_on_onnx_without_onnx2pytorch(runner, monkeypatch) -> None:
    """onnx2pytorch is the optional onnx-gradients extra: without it an ONNX model loads black-box,
    the note names the extra to install, and ``versions`` leaves the package out."""
    real_version = metadata.version

    def version(package: str) -> str:
        if package == "onnx2pytorch":
            raise metadata.PackageNotFoundError(package)
        return real_version(package)

    monkeypatch.setitem(sys.modules, "onnx2pytorch", None)  # any import of it raises ImportError
    monkeypatch.setattr(metadata, "version", version)
    result = invoke(runner, "info", SAMPLE.with_suffix(".onnx"), "--json", "-")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["results"]["gradients"] is False
    notes = " ".join(doc["results"]["notes"])
    assert "black-box only" in notes and "pip install 'medaudit[onnx-gradients]'" in notes
    assert "onnx2pytorch" not in doc["versions"] and doc["versions"]["onnxruntime"]


def test_debug_shows_traceback(runner, tmp_path) -> None:
    result = runner.invoke(app, ["--debug", "info", str(tmp_path / "missing.pt")])
    assert result.exit_code == 2  # the same documented code as without --debug
    assert "Traceback" in result.output and "does not exist" in result.output


# ---- error paths: exit 2, one line, no traceback, no file touched ----


def test_missing_model_file(runner, tmp_path) -> None:
    assert_user_error(invoke(runner, "info", tmp_path / "nope.pt"), "does not exist")


def test_truncated_model(runner, tiny_model) -> None:
    data = tiny_model.read_bytes()
    tiny_model.write_bytes(data[: len(data) // 2])
    assert_user_error(invoke(runner, "info", tiny_model), "corrupt or truncated")


def test_wrong_format(runner, tmp_path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(os.urandom(256))
    assert_user_error(invoke(runner, "info", path), "ONNX")


def test_pickled_module_refused(runner, tmp_path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(SmallCNN(1, 2, width=4), path)
    assert_user_error(invoke(runner, "info", path), "--trust-checkpoint", "runs code")
    assert invoke(runner, "info", path, "--trust-checkpoint").exit_code == 0


def test_state_dict_needs_arch(runner, tmp_path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(SmallCNN(1, 2).state_dict(), path)
    assert_user_error(invoke(runner, "info", path), "--arch")
    assert invoke(runner, "info", path, "--arch", "smallcnn").exit_code == 0
    assert_user_error(invoke(runner, "info", path, "--arch", "resnet18_28"), "does not fit")
    assert_user_error(invoke(runner, "info", path, "--arch", "smallcnnn"), "Did you mean")


def test_channel_mismatch(runner, tiny_model, tmp_path) -> None:
    rgb = tmp_path / "rgb.npz"
    rng = np.random.default_rng(1)
    np.savez(
        rgb,
        test_images=rng.integers(0, 256, (8, 28, 28, 3), dtype=np.uint8),
        test_labels=rng.integers(0, 2, (8, 1)),
    )
    assert_user_error(invoke(runner, "eval", tiny_model, "--data", rgb, "--channels", "1"), "3 channels")
    # without a declared spec, the forward pass itself fails: still a one-line error
    assert_user_error(invoke(runner, "eval", tiny_model, "--data", rgb), "cannot take")


def test_size_mismatch(runner, tmp_path) -> None:
    torch.manual_seed(0)
    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 2))
    tiny_model = save_torchscript(tmp_path / "flat.pt", flat)
    path = tmp_path / "big.npz"
    rng = np.random.default_rng(2)
    np.savez(
        path,
        test_images=rng.integers(0, 256, (8, 64, 64), dtype=np.uint8),
        test_labels=rng.integers(0, 2, (8, 1)),
    )
    assert_user_error(invoke(runner, "eval", tiny_model, "--data", path), "--input-size")
    ok = invoke(runner, "eval", tiny_model, "--data", path, "--input-size", "28")
    assert ok.exit_code == 0, ok.output


def test_labels_outside_model_classes(runner, tiny_model, tmp_path) -> None:
    path = tmp_path / "five.npz"
    rng = np.random.default_rng(3)
    np.savez(
        path, test_images=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), test_labels=np.arange(10) % 5
    )
    assert_user_error(invoke(runner, "eval", tiny_model, "--data", path), "labels go up to 4")


def test_non_finite_outputs(runner, tmp_path, tiny_npz) -> None:
    class Broken(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :2] * float("nan")

    model = save_torchscript(tmp_path / "nan.pt", Broken())
    assert_user_error(invoke(runner, "eval", model, "--data", tiny_npz), "NaN")


def test_empty_data(runner, tiny_model, tmp_path) -> None:
    path = tmp_path / "empty.npz"
    np.savez(path, test_images=np.zeros((0, 28, 28), np.uint8), test_labels=np.zeros((0, 1)))
    assert_user_error(invoke(runner, "eval", tiny_model, "--data", path), "no images")


def test_missing_medmnist_file_says_where(runner, tiny_model, tmp_path) -> None:
    result = invoke(
        runner, "eval", tiny_model, "--dataset", "bloodmnist", "--size", "64", "--data-root", tmp_path
    )
    assert_user_error(result, "bloodmnist_64.npz", str(tmp_path), "--download")


def test_no_data_and_no_card(runner, tiny_model) -> None:
    assert_user_error(invoke(runner, "eval", tiny_model), "--dataset")


def test_json_never_overwrites_inputs(runner, tiny_model, tiny_npz) -> None:
    before = tiny_model.read_bytes()
    result = invoke(runner, "eval", tiny_model, "--data", tiny_npz, "--json", tiny_model)
    assert_user_error(result, "overwrite")
    assert tiny_model.read_bytes() == before


def test_json_folder_missing(runner, tiny_model, tiny_npz, tmp_path) -> None:
    result = invoke(runner, "eval", tiny_model, "--data", tiny_npz, "--json", tmp_path / "no" / "x.json")
    assert_user_error(result, "does not exist")


def test_bad_option_values(runner, tiny_model, tiny_npz) -> None:
    assert_user_error(invoke(runner, "eval", tiny_model, "--data", tiny_npz, "--mean", "a,b"), "--mean")
    assert_user_error(invoke(runner, "eval", tiny_model, "--data", tiny_npz, "--limit", "0"), "--limit")
    assert_user_error(invoke(runner, "eval", tiny_model, "--data", tiny_npz, "--task", "regress"), "task")
    usage = invoke(runner, "eval", tiny_model, "--split", "holdout")
    assert usage.exit_code == 2 and "Traceback" not in usage.output


def test_global_flags_work_after_the_command(runner) -> None:
    """``--quiet``/``--debug`` typed after the command (as users do) act as if typed before it."""
    assert _globals_first(["eval", "m.pt", "--quiet", "--json", "o.json"]) == [
        "--quiet", "eval", "m.pt", "--json", "o.json",
    ]  # fmt: skip
    assert _globals_first(["run", "a.toml", "--", "--debug"]) == ["run", "a.toml", "--", "--debug"]
    assert invoke(runner, "list", "archs", "--debug").exit_code == 0
