"""The data's classes are matched to the model card's by name: the same classes in another order
(image folders are alphabetical; an npz's class_names come in any order) are renumbered to the
card's order, and other names are warned about, instead of a silently wrong audit."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from conftest import random_images, seeded_cnn
from PIL import Image
from typer.testing import CliRunner

from medaudit.cli import app
from medaudit.data import AuditData
from medaudit.task import Task

CARD = ["Normal", "Malignant"]
SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "schema" / "medaudit-1.schema.json"


def data_of(labels: list[int], names: tuple[str, ...], task: Task = Task.BINARY) -> AuditData:
    tensor = torch.tensor(labels)
    return AuditData(random_images(len(tensor)), tensor, task, names, {"source": "synthetic"})


def test_same_classes_in_another_order_are_renumbered() -> None:
    data = data_of([0, 1, 1, 2], ("b", "c", "A"), Task.MULTI_CLASS)
    aligned = data.in_class_order(("a", "B", "c"))
    assert aligned.labels.tolist() == [1, 2, 2, 0]
    assert aligned.class_names == ("a", "B", "c")
    assert aligned.identity["relabelled"] == {
        "data_classes": ["b", "c", "A"],
        "model_classes": ["a", "B", "c"],
    }
    assert torch.equal(aligned.images, data.images)


def test_multi_label_columns_follow_the_names() -> None:
    labels = torch.tensor([[1, 0, 0], [0, 1, 1]])
    data = AuditData(random_images(2), labels, Task.MULTI_LABEL, ("x", "y", "z"), {})
    aligned = data.in_class_order(("z", "x", "y"))
    assert aligned.labels.tolist() == [[0, 1, 0], [1, 0, 1]]


@pytest.mark.parametrize(
    "order",
    [("b", "a", "c"), ("normal, benign", "Malignant"), ("a", "b"), ("a", "a", "c")],
    ids=["same order", "same order, other spelling", "other classes", "duplicate names"],
)
def test_data_is_unchanged_unless_it_is_a_reordering(order: tuple[str, ...]) -> None:
    names = ("normal/benign", "malignant") if "Malignant" in order else ("b", "a", "c")
    data = data_of([0, 1, 1], names, Task.MULTI_CLASS)
    assert data.in_class_order(order) is data


@pytest.fixture
def model_with_card(tmp_path: Path) -> Path:
    model = tmp_path / "model.pt"
    torch.jit.save(torch.jit.trace(seeded_cnn().eval(), torch.zeros(2, 1, 28, 28)), str(model))
    model.with_suffix(".json").write_text(json.dumps({"class_names": CARD}))
    return model


def eval_json(model: Path, data: Path, out: Path) -> dict:
    result = CliRunner().invoke(app, ["eval", str(model), "--data", str(data), "--json", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def test_npz_and_folder_in_another_order_give_the_card_order_audit(
    model_with_card: Path, tmp_path: Path
) -> None:
    images = random_images(40)[:, 0].numpy()
    labels = np.arange(40) % 2  # in the card's order: 0 normal, 1 malignant
    card_order = tmp_path / "card_order.npz"
    np.savez(card_order, test_images=images, test_labels=labels, class_names=np.array(CARD))
    reversed_npz = tmp_path / "reversed.npz"
    np.savez(
        reversed_npz,
        test_images=images,
        test_labels=1 - labels,
        class_names=np.array(["malignant", "NORMAL"]),
    )
    folder = tmp_path / "folder"  # sorted: malignant is folder 0, normal folder 1
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        target = folder / ("normal" if label == 0 else "malignant")
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(target / f"{index:03d}.png")

    expected = eval_json(model_with_card, card_order, tmp_path / "a.json")
    assert not any("classes" in w for w in expected["warnings"])
    for data in (reversed_npz, folder):
        doc = eval_json(model_with_card, data, tmp_path / f"{data.stem}.json")
        for metric in ("accuracy", "balanced_accuracy", "auc"):
            assert doc["results"][metric] == pytest.approx(expected["results"][metric]), (data, metric)
        assert any("renumbered to the card's order" in w for w in doc["warnings"])
        assert doc["data"]["relabelled"]["model_classes"] == CARD
        jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(doc)


def test_other_class_names_are_warned_about(model_with_card: Path, tmp_path: Path) -> None:
    data = tmp_path / "pets.npz"
    labels = np.arange(20) % 2
    np.savez(
        data,
        test_images=random_images(20)[:, 0].numpy(),
        test_labels=labels,
        class_names=np.array(["cat", "dog"]),
    )
    result = CliRunner().invoke(app, ["eval", str(model_with_card), "--data", str(data)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "the data's classes (cat, dog) are not the card's (Normal, Malignant)" in text


def test_card_keys_written_in_the_wrong_place_are_named(tmp_path: Path, model_with_card: Path) -> None:
    """A guessed card ('classes', a top-level 'mean') used to be accepted and silently ignored."""
    model_with_card.with_suffix(".json").write_text(
        json.dumps({"classes": CARD, "mean": [0.5], "preprocessing": {"stdev": [0.5]}, "training": {"x": 1}})
    )
    out = tmp_path / "info.json"
    result = CliRunner().invoke(app, ["info", str(model_with_card), "--json", str(out)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "'classes' is not a card key (did you mean 'class_names'?)" in text
    assert "'mean' belongs under 'preprocessing'" in text
    assert "'preprocessing.stdev' is not a card key (did you mean 'std'?)" in text
    assert "training" not in " ".join(json.loads(out.read_text())["warnings"])  # a free-form record
