"""``medaudit attack`` end to end on the sample model and real PneumoniaMNIST, and its user errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medaudit.attacks import attacks
from medaudit.cli import app
from medaudit.data import DataSpec, load_data

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_models" / "pneumoniamnist_rescnn"
RECORD_KEYS = {"attack", "norm", "eps", "n", "clean_accuracy", "robust_accuracy"}


@pytest.fixture
def black_box(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The sample ONNX file with the torch conversion forced to fail: onnxruntime only."""
    import medaudit.models.onnx as onnx_module

    monkeypatch.setattr(onnx_module, "convert_to_torch", lambda graph: (None, "forced"))
    return SAMPLE.with_suffix(".onnx")


def invoke(runner: CliRunner, *args: str | Path):
    return runner.invoke(app, ["attack", *(str(a) for a in args)])


def assert_user_error(result, *needles: str) -> None:
    """Exit 2, one line on stderr naming the problem, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    message = result.stderr.strip()
    assert "Traceback" not in result.output
    assert message.startswith("error:"), message
    assert len(message.splitlines()) <= 3  # one logical line; rich may wrap long lines
    for needle in needles:
        assert needle in " ".join(message.split()), message


def run_json(runner: CliRunner, *args: str | Path) -> dict:
    result = invoke(runner, *args, "--json", "-")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_attack_help(runner: CliRunner) -> None:
    result = invoke(runner, "--help")
    assert result.exit_code == 0
    assert "--eps" in result.output and "--margin" in result.output


def test_sweep_json(runner: CliRunner, real_env: Path) -> None:
    doc = run_json(
        runner, SAMPLE.with_suffix(".pt"), "--attack", "pgd", "--eps", "1/255,2/255", "--limit", "60"
    )
    assert doc["schema"] == "medaudit/1"
    assert doc["command"] == "attack"
    assert doc["config"]["eps"] == [1 / 255, 2 / 255]
    assert doc["config"]["attacks"] == ["pgd"]
    assert doc["data"]["n"] == 60
    results = doc["results"]
    sweep = results["sweep"]
    assert [(r["eps"], r["attack"]) for r in sweep] == [
        (1 / 255, "pgd"),
        (1 / 255, "worst-case"),
        (2 / 255, "pgd"),
        (2 / 255, "worst-case"),
    ]
    for record in sweep:
        assert set(record) >= RECORD_KEYS
        assert record["n"] == 60 and record["norm"] == "linf"
        assert 0 <= record["robust_accuracy"] <= record["clean_accuracy"] <= 1
    worst = [r["robust_accuracy"] for r in sweep if r["attack"] == "worst-case"]
    assert worst[1] <= worst[0]
    assert results["clean_accuracy"] > 0.6  # the sample model is a real classifier
    checks = {c["check"]: c for c in results["checks"]}
    assert {"monotone in eps", "perturbation within eps", "gradients non-zero and finite"} <= set(checks)
    assert all(isinstance(c["passed"], bool) and c["detail"] for c in checks.values())
    assert checks["perturbation within eps"]["passed"]
    assert results["curve"]["eps"] == [0.0, 1 / 255, 2 / 255]


def test_margin_json(runner: CliRunner, real_env: Path) -> None:
    doc = run_json(
        runner,
        SAMPLE.with_suffix(".pt"),
        "--margin",
        "--limit",
        "40",
        "--eps",
        "8/255",
        "--steps",
        "5",
        "--tolerance",
        "0.001",
    )
    assert doc["command"] == "attack-margin"
    assert doc["config"]["margin"]["eps_max"] == pytest.approx(8 / 255)
    assert doc["config"]["margin"]["steps"] == 5
    results = doc["results"]
    assert set(results["quantiles"]) == {"q05", "q10", "q25", "q50", "q75", "q90"}
    margins = results["margins"]
    assert len(margins) == 40
    found = [m for m in margins if m is not None]
    assert found, "the sample model is not robust at 8/255: some margins must be found"
    assert all(0 < m <= 8 / 255 + 1e-6 for m in found)
    # None marks clean-wrong or censored samples, and the counts agree
    assert len(found) == results["n_attacked"] - results["n_censored"]
    values = [v for v in results["quantiles"].values() if v is not None]
    assert values == sorted(values)


def test_save_adversarial_and_grid(runner: CliRunner, real_env: Path, tmp_path: Path) -> None:
    npz, png = tmp_path / "adv.npz", tmp_path / "grid.png"
    eps = (2 / 255, 8 / 255)
    result = invoke(
        runner,
        SAMPLE.with_suffix(".pt"),
        "--attack",
        "pgd",
        "--eps",
        "2/255,8/255",
        "--limit",
        "20",
        "--save-adv",
        npz,
        "--save-grid",
        png,
    )
    assert result.exit_code == 0, result.output
    assert npz.is_file() and png.is_file()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    clean = load_data(DataSpec(dataset="pneumoniamnist", data_root=real_env, limit=20))
    images = clean.float_images(0, clean.n).numpy()
    with np.load(npz) as saved:
        np.testing.assert_allclose(saved["eps"], eps)
        adv = saved["adv_images"]
        assert adv.shape == (2, 20, 1, 28, 28)
        assert adv.dtype == np.float32
        np.testing.assert_array_equal(saved["labels"], clean.labels.numpy())
        assert list(saved["attacks"]) == ["pgd"]
        broken_by = saved["broken_by"]
        assert broken_by.shape == (2, 20)
        for i, e in enumerate(eps):
            assert np.abs(adv[i] - images).max() <= e + 1e-6
            assert adv[i].min() >= 0 and adv[i].max() <= 1
            # clean-wrong samples are saved unchanged; broken ones really changed
            wrong = broken_by[i] == -2
            np.testing.assert_array_equal(adv[i][wrong], images[wrong])
            broken = broken_by[i] >= 0
            labels = saved["labels"]
            assert (saved["adv_predictions"][i][broken] != labels[broken]).all()
            robust = broken_by[i] == -1
            assert (saved["adv_predictions"][i][robust] == labels[robust]).all()
        assert (broken_by[1] >= 0).sum() >= (broken_by[0] >= 0).sum()


def test_save_paths_are_used_as_given(runner: CliRunner, real_env: Path, tmp_path: Path) -> None:
    """No extension added or required: the files land exactly where the user said."""
    npz, png = tmp_path / "adv", tmp_path / "grid"
    result = invoke(
        runner,
        SAMPLE.with_suffix(".pt"),
        "--attack",
        "pgd",
        "--eps",
        "16/255",
        "--limit",
        "8",
        "--save-adv",
        npz,
        "--save-grid",
        png,
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adv", "grid"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with np.load(npz) as saved:
        assert saved["adv_images"].shape == (1, 8, 1, 28, 28)


# ---- user errors: exit 2, one line, no traceback ----


def test_bad_eps_text(runner: CliRunner, real_env: Path) -> None:
    result = invoke(runner, SAMPLE.with_suffix(".pt"), "--attack", "pgd", "--eps", "abc", "--limit", "8")
    assert_user_error(result, "--eps", "abc")


def test_eps_above_one_for_linf(runner: CliRunner, real_env: Path) -> None:
    result = invoke(runner, SAMPLE.with_suffix(".pt"), "--attack", "pgd", "--eps", "2", "--limit", "8")
    assert_user_error(result, "outside [0, 1]")


def test_eps_above_one_for_linf_margin(runner: CliRunner, real_env: Path) -> None:
    result = invoke(runner, SAMPLE.with_suffix(".pt"), "--margin", "--eps", "2", "--limit", "8")
    assert_user_error(result, "outside [0, 1]")


def test_unknown_attack(runner: CliRunner, real_env: Path) -> None:
    result = invoke(runner, SAMPLE.with_suffix(".pt"), "--attack", "pgdd", "--eps", "1/255", "--limit", "8")
    assert_user_error(result, "unknown attack 'pgdd'", "pgd")


def test_bad_steps(runner: CliRunner, real_env: Path) -> None:
    result = invoke(runner, SAMPLE.with_suffix(".pt"), "--attack", "pgd", "--steps", "0", "--limit", "8")
    assert_user_error(result, "--steps")


def test_margin_zero_steps_is_an_error_not_the_default(runner: CliRunner, real_env: Path) -> None:
    result = invoke(runner, SAMPLE.with_suffix(".pt"), "--margin", "--steps", "0", "--limit", "8")
    assert_user_error(result, "--steps")


def test_save_adv_into_missing_folder(runner: CliRunner, real_env: Path, tmp_path: Path) -> None:
    target = tmp_path / "missing" / "adv.npz"
    result = invoke(runner, SAMPLE.with_suffix(".pt"), "--attack", "pgd", "--save-adv", target)
    assert_user_error(result, "does not exist")
    assert not target.parent.exists()


def test_save_adv_onto_a_folder(runner: CliRunner, real_env: Path, tmp_path: Path) -> None:
    result = invoke(runner, SAMPLE.with_suffix(".pt"), "--attack", "pgd", "--save-adv", tmp_path)
    assert_user_error(result, "is a folder")


def test_infinite_l2_eps(runner: CliRunner, real_env: Path) -> None:
    result = invoke(
        runner, SAMPLE.with_suffix(".pt"), "--attack", "pgd", "--norm", "l2", "--eps", "inf", "--limit", "8"
    )
    assert_user_error(result, "eps inf")


def test_save_with_margin_is_refused(runner: CliRunner, real_env: Path, tmp_path: Path) -> None:
    result = invoke(runner, SAMPLE.with_suffix(".pt"), "--margin", "--save-grid", tmp_path / "g.png")
    assert_user_error(result, "--margin")
    assert not (tmp_path / "g.png").exists()


def test_white_box_attack_on_black_box_model(runner: CliRunner, real_env: Path, black_box: Path) -> None:
    result = invoke(runner, black_box, "--attack", "pgd", "--eps", "1/255", "--limit", "8")
    assert_user_error(result, "pgd needs gradients", "black-box")


def test_margin_on_black_box_model(runner: CliRunner, real_env: Path, black_box: Path) -> None:
    result = invoke(runner, black_box, "--margin", "--eps", "8/255", "--limit", "8")
    assert_user_error(result, "--margin needs gradients")


@pytest.mark.skipif("square" not in attacks, reason="the square attack is not registered")
def test_square_on_black_box_model(runner: CliRunner, real_env: Path, black_box: Path) -> None:
    doc = run_json(
        runner, black_box, "--attack", "square", "--eps", "8/255", "--queries", "20", "--limit", "16"
    )
    assert doc["model"]["gradients"] is False
    assert doc["config"]["attacks"] == ["square"]
    checks = {c["check"] for c in doc["results"]["checks"]}
    assert "gradients non-zero and finite" not in checks  # no gradients to check on a black box
    worst = doc["results"]["sweep"][-1]
    assert worst["attack"] == "worst-case"
    assert 0 <= worst["robust_accuracy"] <= worst["clean_accuracy"]
