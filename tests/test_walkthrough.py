"""README "Audit your own model": the walk-through from export to gate, run on a tiny trained model."""

from __future__ import annotations

import json
import re
import shlex
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_images, train_cnn
from typer.testing import CliRunner

from medaudit.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"
FACTORY = "from medaudit.models.archs.small_cnn import SmallCNN\n\n\ndef build():\n    return SmallCNN(1, 2, width=4)\n"
CARD = {
    "class_names": ["dark", "bright"],
    "preprocessing": {"input_size": 28, "channels": 1, "mean": [0.5], "std": [0.5]},
}
EVAL = "medaudit eval model.pt --data test.npz --json eval.json"
ATTACK = "medaudit attack model.pt --data test.npz --eps 1/255 --attack pgd --json attack.json"
GATE = "medaudit gate attack.json --policy policy.toml"


def walkthrough() -> str:
    text = README.read_text(encoding="utf-8")
    return text[text.index("## Audit your own model") : text.index("## Commands")]


def code_blocks(section: str, language: str) -> list[str]:
    return [
        re.sub(r"^ {3}", "", block, flags=re.M)
        for block in re.findall(rf"```{language}\n(.*?)```", section, re.S)
    ]


def invoke(runner: CliRunner, command: str, *extra: str):
    args = shlex.split(command)
    assert args[0] == "medaudit"
    return runner.invoke(app, [*args[1:], *extra])


@pytest.mark.slow  # about 6 s
def test_readme_walkthrough(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    section = walkthrough()
    for command in (EVAL, ATTACK, GATE):
        assert f"`{command}`" in section, command
    export = code_blocks(section, "python")[0]
    policy = code_blocks(section, "toml")[0]
    assert "external_data=False" in export and "--arch mymodels:build" in export

    # a tiny CNN trained on normalised inputs (mean 0.5, std 0.5): brighter half is class 1
    images = random_images(64)
    pixels = images.float() / 255
    brightness = pixels.mean(dim=(1, 2, 3))
    labels = (brightness > brightness.median()).long()
    model = train_cnn((pixels - 0.5) / 0.5, labels, 60, width=4, lr=0.02, seed=0)

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mymodels.py").write_text(FACTORY, encoding="utf-8")
    x = torch.zeros(2, 1, 28, 28)
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(export, {"torch": torch, "model": model, "x": x, "batch": batch})  # the README's export lines
    assert not Path("model.onnx.data").exists()  # external_data=False: weights inside the .onnx
    for stem in ("model", "weights"):
        (tmp_path / f"{stem}.json").write_text(json.dumps(CARD), encoding="utf-8")
    np.savez(
        "test.npz", images=images.numpy(), labels=labels.numpy(), class_names=np.array(CARD["class_names"])
    )

    runner = CliRunner()
    accuracies = {}
    for model_file, extra in (
        ("model.pt", ()),
        ("model.pt2", ()),
        ("model.onnx", ()),
        ("weights.pt", ("--arch", "mymodels:build")),
    ):
        result = invoke(runner, EVAL.replace("model.pt", model_file, 1), *extra)
        assert result.exit_code == 0, (model_file, result.output, result.exception)
        doc = json.loads(Path("eval.json").read_text(encoding="utf-8"))
        assert not any("--mean" in w for w in doc["warnings"]), doc["warnings"]
        accuracies[model_file] = doc["results"]["accuracy"]
    assert accuracies["model.pt"] >= 0.8, accuracies
    assert accuracies["model.pt2"] == accuracies["model.pt"] == accuracies["weights.pt"], accuracies
    assert abs(accuracies["model.onnx"] - accuracies["model.pt"]) <= 1e-6, accuracies

    result = invoke(runner, ATTACK)
    assert result.exit_code == 0, (result.output, result.exception)

    Path("policy.toml").write_text(policy, encoding="utf-8")
    result = invoke(runner, GATE)
    assert result.exit_code == 0, result.output
    Path("policy.toml").write_text('"attack.robust_accuracy@1/255" = ">= 1.01"\n', encoding="utf-8")
    result = invoke(runner, GATE)
    assert result.exit_code == 1, result.output
