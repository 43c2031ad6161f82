"""Binding: probability outputs are recognised (issue #15 item 9), class counts must agree (item 10)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from medaudit.cli import app
from medaudit.data import AuditData, DataSpec, load_data
from medaudit.errors import ShapeMismatch
from medaudit.evaluate import EvalConfig, evaluate
from medaudit.models import AuditModel, InputSpec, LoadOptions, bind_model, load_model
from medaudit.models.bind import PROBE_SIZE
from medaudit.models.wrapper import ModelInfo
from medaudit.task import Task

CPU = LoadOptions(device="cpu")
REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_models" / "pneumoniamnist_rescnn"


class Brightness(nn.Module):
    """Column k is ``scale * (mean pixel - centre_k) + shift``: outputs that follow the image."""

    def __init__(self, centres: tuple[float, ...], scale: float, shift: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("centres", torch.tensor(centres).view(1, -1))
        self.scale = scale
        self.shift = shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (x.mean(dim=(1, 2, 3))[:, None] - self.centres) + self.shift


def wrap(network: nn.Module, outputs: str | None = None, task: Task | None = None) -> AuditModel:
    info = ModelInfo(path="memory", format="torch", sha256="", parameters=None)
    return AuditModel(network.eval(), InputSpec(), info, task=task, outputs=outputs)


def save_scripted(path: Path, network: nn.Module, card: dict | None = None) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(network.eval(), torch.rand(2, 1, 28, 28)), str(path))
    if card is not None:
        path.with_suffix(".json").write_text(json.dumps(card))
    return path


def sorted_by_brightness(data: AuditData, labels: torch.Tensor | None = None) -> AuditData:
    """Darkest first, so the first PROBE_SIZE images all look alike (like a class-sorted folder)."""
    order = data.images.float().mean(dim=(1, 2, 3)).argsort()
    images = data.images[order]
    if labels is None:
        labels = (images.float().mean(dim=(1, 2, 3)) / 255 > 0.5).long()
        labels[::7] = 1 - labels[::7]  # not a perfect model: accuracies below 1
    return AuditData(images, labels, data.task, data.class_names, {"source": "synthetic"})


def accuracy_and_predictions(model: AuditModel, data: AuditData) -> tuple[float, torch.Tensor]:
    result = evaluate(model, data, EvalConfig(batch_size=64))
    return result.metrics()["accuracy"], result.logits.argmax(dim=1)


# --------------------------------------------------------------------------- item 9: probabilities


@pytest.mark.parametrize("num_classes", [2, 3, 5])
def test_softmax_model_is_detected_and_audited_like_its_logits(
    num_classes: int, make_cnn: Callable[..., nn.Module], audit_data: Callable[..., AuditData]
) -> None:
    data = audit_data(n=90, num_classes=num_classes, seed=4)
    base = make_cnn(num_classes=num_classes, seed=12)
    logit_model = wrap(base, outputs="logits")
    assert bind_model(logit_model, data) == []
    x = data.float_images(0, data.n)
    ref_acc, ref_pred = accuracy_and_predictions(logit_model, data)
    for declared in (None, "logits"):  # undeclared, and a card that contradicts the outputs
        model = wrap(nn.Sequential(base, nn.Softmax(dim=1)), outputs=declared)
        warns = bind_model(model, data)
        assert model.outputs == "probabilities", declared
        assert model.describe()["outputs"] == "probabilities"
        assert len(warns) == 1 and "probabilit" in warns[0]
        if declared == "logits":
            assert '"outputs": "logits"' in warns[0]
        torch.testing.assert_close(
            torch.softmax(model.predict(x), 1), torch.softmax(logit_model.predict(x), 1), atol=1e-5, rtol=1e-4
        )
        acc, pred = accuracy_and_predictions(model, data)
        assert torch.equal(pred, ref_pred) and acc == ref_acc


def test_softmax_torchscript_with_the_copied_logits_card(
    tmp_path: Path, make_cnn: Callable[..., nn.Module], audit_data: Callable[..., AuditData]
) -> None:
    """The reported case: a softmax head appended, the card's "outputs": "logits" copied along."""
    base = make_cnn(num_classes=2, seed=3)
    card = {"task": "binary-class", "class_names": ["c0", "c1"], "outputs": "logits"}
    path = save_scripted(tmp_path / "soft.pt", nn.Sequential(base, nn.Softmax(dim=1)), card)
    data = audit_data(n=40, num_classes=2, seed=2)
    model = load_model(path, CPU)
    assert model.outputs == "logits"
    warns = bind_model(model, data)
    assert model.outputs == "probabilities" and model.describe()["outputs"] == "probabilities"
    assert len(warns) == 1 and "card" in warns[0]
    x = data.float_images(0, data.n)
    with torch.no_grad():
        torch.testing.assert_close(torch.softmax(model.predict(x), 1), torch.softmax(base(x), 1))


def test_single_sigmoid_column_is_detected_on_class_sorted_data(audit_data: Callable[..., AuditData]) -> None:
    data = sorted_by_brightness(audit_data(n=4 * PROBE_SIZE, seed=5))
    first = data.float_images(0, PROBE_SIZE)
    logits = Brightness((0.5,), scale=20.0)
    assert float(torch.sigmoid(logits(first)).max()) < 0.2  # the first images alone look alike
    logit_model = wrap(logits)
    assert bind_model(logit_model, data) == []
    ref_acc, ref_pred = accuracy_and_predictions(logit_model, data)
    assert 0.6 < ref_acc < 1
    x = data.float_images(0, data.n)
    for declared in (None, "logits"):
        model = wrap(nn.Sequential(Brightness((0.5,), scale=20.0), nn.Sigmoid()), outputs=declared)
        warns = bind_model(model, data)
        assert model.outputs == "probabilities" and len(warns) == 1, declared
        assert ("sigmoid" in warns[0]) and (declared is None or "card" in warns[0])
        acc, pred = accuracy_and_predictions(model, data)
        assert torch.equal(pred, ref_pred) and acc == ref_acc
        torch.testing.assert_close(model.predict(x), logit_model.predict(x), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("declared", [None, "logits"])
def test_multilabel_sigmoid_is_detected_even_when_saturated(
    declared: str | None, audit_data: Callable[..., AuditData]
) -> None:
    base = audit_data(n=120, seed=6)
    mean = base.images.float().mean(dim=(1, 2, 3)) / 255
    labels = torch.stack([mean > 0.4, mean > 0.5, mean > 0.6], dim=1).long()
    labels[::5, 1] = 1 - labels[::5, 1]
    data = AuditData(base.images, labels, Task.MULTI_LABEL, ("a", "b", "c"))
    centres = (0.4, 0.5, 0.6)
    sigmoid = nn.Sequential(Brightness(centres, scale=80.0), nn.Sigmoid())
    with torch.no_grad():
        probs = sigmoid(data.float_images(0, data.n))
    assert probs.min() == 0 or probs.max() == 1  # float32 sigmoid saturates on confident images
    model = wrap(sigmoid, outputs=declared)
    warns = bind_model(model, data)
    assert model.outputs == "probabilities" and len(warns) == 1
    logit_model = wrap(Brightness(centres, scale=80.0))
    bind_model(logit_model, data)
    x = data.float_images(0, data.n)
    assert torch.equal(model.predict(x) > 0, logit_model.predict(x) > 0)
    ours = evaluate(model, data, EvalConfig()).metrics()
    theirs = evaluate(logit_model, data, EvalConfig()).metrics()
    # saturated probabilities tie where their logits did not: only the ranking (AUC, its interval)
    # and the confidences (ECE) may move, by rounding
    for key in ("auc", "auc_ci", "ece"):
        assert ours.pop(key) == pytest.approx(theirs.pop(key), abs=1e-3)
    assert ours.pop("reliability")["count"] == theirs.pop("reliability")["count"]
    assert ours == theirs


def test_plain_logit_models_are_never_read_as_probabilities(
    make_cnn: Callable[..., nn.Module], audit_data: Callable[..., AuditData]
) -> None:
    binary = sorted_by_brightness(audit_data(n=100, seed=7))
    base3 = audit_data(n=100, num_classes=3, seed=7)
    columns = torch.stack([torch.arange(100) % 2, (torch.arange(100) // 2) % 2], dim=1)
    multi = AuditData(binary.images, columns, Task.MULTI_LABEL, ("a", "b"))

    class HalfSummingToOne(nn.Module):
        """Rows [m, 1 - m] (a distribution) on dark images, scaled out of [0, 1] on bright ones."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            m = x.mean(dim=(1, 2, 3))[:, None]
            rows = torch.cat([m, 1 - m], dim=1)
            return torch.where(m > 0.55, 3 * rows, rows)

    cases = [
        # one undecided logit near 0.3 on every image: in [0, 1] but not a probability
        (Brightness((0.5,), scale=0.2, shift=0.3), binary, "too few or too alike"),
        # multi-label logits all in (0, 1), barely spread
        (Brightness((0.45, 0.55), scale=0.5, shift=0.5), multi, "too few or too alike"),
        (make_cnn(num_classes=3, seed=8), base3, None),
        (HalfSummingToOne(), binary, None),
    ]
    for network, data, warning in cases:
        model = wrap(network)
        warns = bind_model(model, data)
        assert model.outputs is None and model.describe()["outputs"] == "logits"
        assert len(warns) == (0 if warning is None else 1)
        if warning is not None:
            assert warning in warns[0]
        x = data.float_images(0, data.n)
        with torch.no_grad():
            raw = network(x)
        logits = model.predict(x)
        if raw.shape[1] == 1 and data.task.single_label:  # one logit z is audited as [-z/2, z/2]
            torch.testing.assert_close(logits[:, 1] - logits[:, 0], raw[:, 0])
        else:
            torch.testing.assert_close(logits, raw)


def test_probabilities_declared_but_outputs_outside_unit_interval(
    make_cnn: Callable[..., nn.Module], audit_data: Callable[..., AuditData]
) -> None:
    data = audit_data(n=30, num_classes=3, seed=9)
    network = make_cnn(num_classes=3, seed=10)
    model = wrap(network, outputs="probabilities")
    warns = bind_model(model, data)
    assert model.outputs == "logits" and len(warns) == 1 and '"outputs": "probabilities"' in warns[0]
    x = data.float_images(0, data.n)
    with torch.no_grad():
        torch.testing.assert_close(model.predict(x), network(x))


def test_softmax_sample_model_with_its_copied_card_on_real_data(
    runner, real_env: Path, tmp_path: Path
) -> None:
    """The issue's reproduction: the sample model plus nn.Softmax, its card copied next to it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sample = torch.jit.load(str(SAMPLE.with_suffix(".pt")))
        wrapped = torch.jit.script(nn.Sequential(sample, nn.Softmax(dim=1)))
    path = tmp_path / "softmax.pt"
    wrapped.save(str(path))
    path.with_suffix(".json").write_text(SAMPLE.with_suffix(".json").read_text())
    docs = {}
    for name, model_path in (("softmax", path), ("sample", SAMPLE.with_suffix(".pt"))):
        out = tmp_path / f"eval_{name}.json"  # not softmax.json: that is the card
        result = runner.invoke(app, ["eval", str(model_path), "--limit", "100", "--json", str(out)])
        assert result.exit_code == 0, result.output
        docs[name] = json.loads(out.read_text())
    assert docs["softmax"]["model"]["outputs"] == "probabilities"
    assert any("probabilit" in w for w in docs["softmax"]["warnings"])
    assert docs["sample"]["model"]["outputs"] == "logits"
    for key in ("accuracy", "balanced_accuracy", "confusion_matrix"):
        assert docs["softmax"]["results"][key] == docs["sample"]["results"][key], key
    assert docs["softmax"]["results"]["auc"] == pytest.approx(docs["sample"]["results"]["auc"], abs=1e-4)


# --------------------------------------------------------------------------- item 10: class counts


def two_class_npz(write_npz: Callable[..., Path], names: bool = True) -> Path:
    rng = np.random.default_rng(0)
    arrays = {
        "test_images": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(30) % 2).reshape(-1, 1),
    }
    if names:
        arrays["class_names"] = np.array(["normal", "pneumonia"])
    return write_npz("two.npz", **arrays)


@pytest.mark.parametrize("outputs", [5, 7])
def test_cli_refuses_a_class_count_mismatch(
    outputs: int, runner, tmp_path: Path, write_npz: Callable[..., Path], make_cnn: Callable[..., nn.Module]
) -> None:
    card = {"task": "binary-class", "class_names": ["normal", "pneumonia"], "outputs": "logits"}
    model = save_scripted(tmp_path / "wide.pt", make_cnn(num_classes=outputs, seed=1), card)
    result = runner.invoke(app, ["eval", str(model), "--data", str(two_class_npz(write_npz)), "--json", "-"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    message = " ".join(result.stderr.split())
    assert message.startswith("error:") and len(result.stderr.strip().splitlines()) <= 3
    for needle in (f"outputs {outputs} classes", "card names 2 (normal, pneumonia)", "data has 2"):
        assert needle in message, message


def test_class_count_mismatch_on_real_medmnist(runner, real_env: Path, tmp_path: Path, make_cnn) -> None:
    card = json.loads(SAMPLE.with_suffix(".json").read_text())
    del card["arch"]
    card["preprocessing"] = {"channels": 1}
    model = save_scripted(tmp_path / "five.pt", make_cnn(num_classes=5, seed=2), card)
    result = runner.invoke(app, ["eval", str(model), "--limit", "50"])
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert "outputs 5 classes" in message and "card names 2" in message and "data has 2" in message


def test_class_count_mismatch_in_the_api(
    make_cnn: Callable[..., nn.Module], audit_data: Callable[..., AuditData]
) -> None:
    binary = audit_data(n=20, num_classes=2)
    three = audit_data(n=21, num_classes=3)
    with pytest.raises(
        ShapeMismatch, match="outputs 5 classes, its card names no classes and the data has 2"
    ):
        bind_model(wrap(make_cnn(num_classes=5)), binary)
    card_wrong = wrap(make_cnn(num_classes=3))
    card_wrong.class_names = ("normal", "abnormal")
    with pytest.raises(ShapeMismatch, match=r"outputs 3 classes, its card names 2 \(normal, abnormal\)"):
        bind_model(card_wrong, three)
    labels = torch.stack([torch.arange(21) % 2] * 3, dim=1)
    multi = AuditData(three.images, labels, Task.MULTI_LABEL, ("a", "b", "c"))
    card_wrong = wrap(make_cnn(num_classes=3))
    card_wrong.class_names = ("a", "b")
    with pytest.raises(ShapeMismatch, match="card names 2"):
        bind_model(card_wrong, multi)


def test_legitimate_class_counts_still_bind(
    tmp_path: Path, write_npz: Callable[..., Path], make_cnn: Callable[..., nn.Module]
) -> None:
    # an npz that names no classes only shows the labels it holds: more outputs is a warning
    data = load_data(DataSpec(data=two_class_npz(write_npz, names=False)))
    model = wrap(make_cnn(num_classes=3, seed=4))
    warns = bind_model(model, data)
    assert len(warns) == 1 and "absent" in warns[0]
    assert model.class_names == ("0", "1", "2")
    # a 1-output binary model on 2-class data, with a 2-class card
    single = wrap(make_cnn(num_classes=1, seed=4))
    single.class_names = ("normal", "pneumonia")
    assert bind_model(single, load_data(DataSpec(data=two_class_npz(write_npz)))) == []
    positive_only = wrap(make_cnn(num_classes=1, seed=4))
    positive_only.class_names = ("pneumonia",)  # a single-logit card may name the positive class only
    assert bind_model(positive_only, load_data(DataSpec(data=two_class_npz(write_npz)))) == []
    assert positive_only.class_names == ("normal", "pneumonia")
    # a --limit subsample that misses a rare class keeps the dataset's class count
    rng = np.random.default_rng(1)
    labels = np.array([2] + [0, 1] * 20)
    npz = write_npz(
        "rare.npz",
        test_images=rng.integers(0, 256, (41, 28, 28), dtype=np.uint8),
        test_labels=labels,
        class_names=np.array(["a", "b", "rare"]),
    )
    limited = load_data(DataSpec(data=npz, limit=6))
    assert int(limited.labels.max()) == 1 and limited.num_classes == 3
    model = wrap(make_cnn(num_classes=3, seed=4))
    assert bind_model(model, limited) == []
    assert model.class_names == ("a", "b", "rare")
    # an image folder whose split has no image of one class: the (empty) class folder still counts
    for name, value in (("a", 40), ("b", 200)):
        (tmp_path / "folder" / "test" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((28, 28), value + i, np.uint8)).save(
                tmp_path / "folder" / "test" / name / f"{i}.png"
            )
    (tmp_path / "folder" / "test" / "c_missing").mkdir()
    folder = load_data(DataSpec(data=tmp_path / "folder"))
    model = wrap(make_cnn(num_classes=3, seed=4))
    assert bind_model(model, folder) == []
    assert model.class_names == ("a", "b", "c_missing")
