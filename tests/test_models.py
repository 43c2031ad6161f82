"""Model loading: every format from one seeded model, the wrapper's preprocessing, refusals, binding."""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medaudit.data import AuditData
from medaudit.errors import ConfigError, ModelLoadError, ShapeMismatch
from medaudit.evaluate import EvalConfig, evaluate
from medaudit.models import AuditModel, InputSpec, LoadOptions, bind_model, load_model
from medaudit.models.archs import architectures
from medaudit.models.archs.small_cnn import SmallCNN
from medaudit.task import Task

CPU = LoadOptions(device="cpu")
INPUT_SIZE = 32  # the model's input; the data is 28 px, so the wrapper resizes
MEAN, STD = 0.5, 0.5
CARD = {
    "name": "test model",
    "task": "binary-class",
    "class_names": ["normal", "abnormal"],
    "preprocessing": {"input_size": INPUT_SIZE, "channels": 1, "mean": [MEAN], "std": [STD]},
}
STATIC_BATCH = 4  # static-batch exports; 10 images -> batches of 4, 4, 2 (padded)


@contextmanager
def quiet() -> Iterator[None]:
    """torch's exporters warn about deprecations; the tests do not care."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def expected_logits(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the wrapper must compute for the card: resize to 32 px, normalise, run."""
    resized = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    return network((resized - MEAN) / STD)


@pytest.fixture(scope="module")
def reference(make_cnn: Callable[..., SmallCNN]) -> SmallCNN:
    # width 32: the built-in 'smallcnn' factory (state_dict + --arch) builds that width
    return make_cnn(in_channels=1, num_classes=2, width=32, seed=11)


@pytest.fixture(scope="module")
def exported(reference: SmallCNN, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The reference model in every format, each with a sidecar card."""
    root = tmp_path_factory.mktemp("exported")
    example = torch.rand(5, 1, INPUT_SIZE, INPUT_SIZE, generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1)
    paths = {
        "torchscript": root / "scripted.pt",
        "export_dynamic": root / "exported_dynamic.pt2",
        "export_static": root / "exported_static.pt2",
        "state_dict": root / "weights.pt",
        "onnx_dynamo": root / "dynamo.onnx",
        "onnx_legacy": root / "legacy.onnx",
        "onnx_static": root / "static.onnx",
    }
    with quiet():
        torch.jit.save(torch.jit.trace(reference, example), str(paths["torchscript"]))
        program = torch.export.export(reference, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(paths["export_dynamic"]))
        program = torch.export.export(reference, (example[:STATIC_BATCH],))
        torch.export.save(program, str(paths["export_static"]))
        torch.save(reference.state_dict(), paths["state_dict"])
        torch.onnx.export(
            reference, (example,), str(paths["onnx_dynamo"]), dynamo=True, dynamic_shapes=({0: batch},)
        )
        torch.onnx.export(
            reference,
            (example,),
            str(paths["onnx_legacy"]),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        )
        # static batch: the graph's reshapes have the batch size baked in
        torch.onnx.export(reference, (example[:STATIC_BATCH],), str(paths["onnx_static"]), dynamo=True)
    for path in paths.values():
        path.with_suffix(".json").write_text(json.dumps(CARD))
    return paths


@pytest.fixture(scope="module")
def data28(audit_data: Callable[..., AuditData]) -> AuditData:
    return audit_data(
        n=10, channels=1, size=28, num_classes=2, seed=3, class_names=tuple(CARD["class_names"])
    )


def load_bound(path: Path, data: AuditData, **options: object) -> tuple[AuditModel, list[str]]:
    model = load_model(path, LoadOptions(device="cpu", **options))  # type: ignore[arg-type]
    return model, bind_model(model, data)


# --------------------------------------------------------------------------- every format, same logits

FORMATS = [
    "torchscript",
    "export_dynamic",
    "export_static",
    "state_dict",
    "onnx_dynamo",
    "onnx_legacy",
    "onnx_static",
]
FORMAT_NAMES = {
    "torchscript": "torchscript",
    "export_dynamic": "export",
    "export_static": "export",
    "state_dict": "state_dict",
    "onnx_dynamo": "onnx",
    "onnx_legacy": "onnx",
    "onnx_static": "onnx",
}


@pytest.mark.parametrize("kind", FORMATS)
def test_every_format_gives_the_reference_logits(
    kind: str, exported: dict[str, Path], reference: SmallCNN, data28: AuditData
) -> None:
    model, warns = load_bound(exported[kind], data28, arch="smallcnn")
    assert warns == []
    assert model.info.format == FORMAT_NAMES[kind]
    assert model.info.card == str(exported[kind].with_suffix(".json"))
    assert model.spec == InputSpec(channels=1, input_size=INPUT_SIZE, mean=(MEAN,), std=(STD,))
    assert model.task is Task.BINARY
    assert model.class_names == ("normal", "abnormal")
    if model.is_onnx:
        assert model.info.parameters and model.info.parameters > 0
    else:
        assert model.info.parameters == sum(p.numel() for p in reference.parameters())

    x = data28.float_images(0, data28.n)
    with torch.no_grad():
        want = expected_logits(reference, x)
    got = model.predict(x)
    assert got.shape == (data28.n, 2)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    # different images give different logits: the comparison is not trivially true
    assert (want[0] - want[1]).abs().max() > 1e-3


def test_static_batch_export_is_padded(
    exported: dict[str, Path], reference: SmallCNN, data28: AuditData
) -> None:
    model, _ = load_bound(exported["export_static"], data28)
    assert any(f"batch size {STATIC_BATCH}" in note for note in model.info.notes)
    assert data28.n % STATIC_BATCH != 0
    for n in (1, STATIC_BATCH + 1, data28.n):
        x = data28.float_images(0, n)
        with torch.no_grad():
            torch.testing.assert_close(model.predict(x), expected_logits(reference, x), atol=1e-4, rtol=0)


def test_export_reads_input_spec_from_the_archive(exported: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "nocard.pt2"
    path.write_bytes(exported["export_static"].read_bytes())
    model = load_model(path, CPU)
    assert model.spec.channels == 1
    assert model.spec.input_size == INPUT_SIZE
    assert model.spec.mean is None
    assert model.info.card is None


def test_evaluate_batches_give_the_same_logits(exported: dict[str, Path], data28: AuditData) -> None:
    model, _ = load_bound(exported["torchscript"], data28)
    whole = model.predict(data28.float_images(0, data28.n))
    result = evaluate(model, data28, EvalConfig(batch_size=3))
    torch.testing.assert_close(result.logits, whole)
    assert result.n == data28.n
    metrics = result.to_dict()
    assert metrics["n"] == data28.n
    assert metrics["class_names"] == ["normal", "abnormal"]
    with pytest.raises(ConfigError, match="--batch-size"):
        EvalConfig(batch_size=0)


# --------------------------------------------------------------------------- ONNX twin


@pytest.mark.parametrize("kind", ["onnx_dynamo", "onnx_legacy", "onnx_static"])
def test_onnx_twin_is_verified_and_gives_the_reference_gradients(
    kind: str, exported: dict[str, Path], reference: SmallCNN, data28: AuditData
) -> None:
    model, _ = load_bound(exported[kind], data28)
    assert model.is_onnx
    assert model.twin is not None
    assert model.twin_verified
    assert model.has_gradients
    assert model.info.twin_max_abs_diff is not None and model.info.twin_max_abs_diff < 1e-4
    assert model.describe()["backend"] == "onnxruntime"

    x = data28.float_images(0, data28.n)
    ours = x.clone().requires_grad_(True)
    model(ours)[:, 1].sum().backward()
    theirs = x.clone().requires_grad_(True)
    expected_logits(reference, theirs)[:, 1].sum().backward()
    assert ours.grad is not None and theirs.grad is not None
    assert theirs.grad.abs().max() > 0
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-3, atol=1e-3 * float(theirs.grad.abs().max()))


def test_onnx_without_verification_has_no_gradients(exported: dict[str, Path]) -> None:
    model = load_model(exported["onnx_legacy"], CPU)
    assert model.twin is not None
    assert not model.twin_verified
    assert not model.has_gradients


# --------------------------------------------------------------------------- pickles


class _RunsCode:
    """Unpickling this creates ``marker``: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.makedirs, (str(self.marker),))


def test_malicious_pickle_is_refused_without_running_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(2), "payload": _RunsCode(marker)}, path)
    assert not marker.exists()
    with pytest.raises(ModelLoadError, match="--trust-checkpoint"):
        load_model(path, CPU)
    assert not marker.exists()
    with pytest.raises(ModelLoadError, match="--trust-checkpoint"):
        load_model(path, LoadOptions(device="cpu", arch="smallcnn"))
    assert not marker.exists()
    # the payload is live: plain unpickling does run it (so the checks above mean something)
    torch.load(path, weights_only=False)
    assert marker.is_dir()


def test_pickled_module_needs_trust(
    tmp_path: Path, make_cnn: Callable[..., SmallCNN], data28: AuditData
) -> None:
    network = make_cnn(width=4, seed=2)
    path = tmp_path / "whole.pt"
    torch.save(network, path)
    with pytest.raises(ModelLoadError, match="--trust-checkpoint"):
        load_model(path, CPU)
    model = load_model(path, LoadOptions(device="cpu", trust_checkpoint=True))
    assert model.info.format == "pickled-module"
    bind_model(model, data28)
    x = data28.float_images(0, data28.n)
    with torch.no_grad():
        torch.testing.assert_close(model.predict(x), network(x))


def test_trusted_state_dict_still_asks_for_arch(tmp_path: Path, make_cnn: Callable[..., SmallCNN]) -> None:
    path = tmp_path / "sd.pt"
    torch.save(make_cnn(width=4).state_dict(), path)
    with pytest.raises(ConfigError, match="--arch"):
        load_model(path, LoadOptions(device="cpu", trust_checkpoint=True))


# --------------------------------------------------------------------------- state_dict and --arch


def test_user_factory_arch(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    make_cnn: Callable[..., SmallCNN],
    data28: AuditData,
) -> None:
    network = make_cnn(in_channels=1, num_classes=3, width=6, seed=4)
    path = tmp_path / "custom.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in network.state_dict().items()}}, path)
    module_dir = tmp_path / "user_code"
    module_dir.mkdir()
    name = "medaudit_test_user_arch"
    (module_dir / f"{name}.py").write_text(
        "from medaudit.models.archs.small_cnn import SmallCNN\n\n"
        "def build(in_channels, num_classes):\n"
        "    return SmallCNN(in_channels, num_classes, width=6)\n"
    )
    monkeypatch.syspath_prepend(str(module_dir))
    request.addfinalizer(lambda: sys.modules.pop(name, None))

    model = load_model(path, LoadOptions(device="cpu", arch=f"{name}:build"))
    assert model.info.arch == f"{name}:build"
    data = AuditData(data28.images, data28.labels, Task.MULTI_CLASS, ("a", "b", "c"))
    bind_model(model, data)
    assert model.class_names == ("a", "b", "c")
    x = data.float_images(0, data.n)
    with torch.no_grad():
        torch.testing.assert_close(model.predict(x), network(x))

    with pytest.raises(ConfigError, match="no attribute"):
        load_model(path, LoadOptions(device="cpu", arch=f"{name}:missing"))
    with pytest.raises(ConfigError, match="cannot import"):
        load_model(path, LoadOptions(device="cpu", arch="no_such_module_xyz:build"))


def test_wrong_arch_is_a_load_error(exported: dict[str, Path]) -> None:
    with pytest.raises(ModelLoadError, match="does not fit --arch rescnn"):
        load_model(exported["state_dict"], LoadOptions(device="cpu", arch="rescnn"))


def test_unknown_arch_suggests_a_name(exported: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="resnet18_28"):
        load_model(exported["state_dict"], LoadOptions(device="cpu", arch="resnet18_2"))


def test_state_dict_without_arch_is_a_config_error(tmp_path: Path, exported: dict[str, Path]) -> None:
    path = tmp_path / "weights.pt"  # no card, so no arch from anywhere
    path.write_bytes(exported["state_dict"].read_bytes())
    with pytest.raises(ConfigError, match="--arch"):
        load_model(path, CPU)


def test_arch_from_card(
    tmp_path: Path, exported: dict[str, Path], reference: SmallCNN, data28: AuditData
) -> None:
    path = tmp_path / "weights.pt"
    path.write_bytes(exported["state_dict"].read_bytes())
    path.with_suffix(".json").write_text(json.dumps({**CARD, "arch": "smallcnn"}))
    model, _ = load_bound(path, data28)
    assert model.info.arch == "smallcnn"
    x = data28.float_images(0, data28.n)
    with torch.no_grad():
        torch.testing.assert_close(model.predict(x), expected_logits(reference, x), atol=1e-4, rtol=0)


def test_non_model_torch_save_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(ModelLoadError, match="not a model or state_dict"):
        load_model(path, LoadOptions(device="cpu", arch="smallcnn"))


# --------------------------------------------------------------------------- unreadable files


def test_truncated_pt_is_a_load_error(tmp_path: Path, exported: dict[str, Path]) -> None:
    for kind in ("torchscript", "state_dict"):
        content = exported[kind].read_bytes()
        path = tmp_path / f"truncated_{kind}.pt"
        path.write_bytes(content[: len(content) // 2])
        with pytest.raises(ModelLoadError):
            load_model(path, LoadOptions(device="cpu", arch="smallcnn"))


def test_random_bytes_onnx_is_a_load_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelLoadError):
        load_model(path, CPU)


def test_missing_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope.pt", CPU)
    with pytest.raises(ModelLoadError, match="is a folder"):
        load_model(tmp_path, CPU)
    odd = tmp_path / "model.weird"
    odd.write_bytes(b"hello")
    with pytest.raises(ModelLoadError, match="cannot tell the format"):
        load_model(odd, CPU)


def test_bad_card_is_a_load_error(tmp_path: Path, exported: dict[str, Path]) -> None:
    path = tmp_path / "scripted.pt"
    path.write_bytes(exported["torchscript"].read_bytes())
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_model(path, CPU)
    path.with_suffix(".json").write_text(json.dumps({"outputs": "scores"}))
    with pytest.raises(ModelLoadError, match="'outputs'"):
        load_model(path, CPU)
    path.with_suffix(".json").write_text(json.dumps({"preprocessing": {"channels": 1, "mean": [0.1, 0.2]}}))
    with pytest.raises(ModelLoadError, match="mean has 2 values"):
        load_model(path, CPU)


# --------------------------------------------------------------------------- binding: shape problems


def trace_to(path: Path, network: nn.Module, example: torch.Tensor) -> Path:
    with quiet():
        torch.jit.save(torch.jit.trace(network.eval(), example), str(path))
    return path


def test_rgb_data_into_one_channel_model(
    exported: dict[str, Path], audit_data: Callable[..., AuditData]
) -> None:
    rgb = audit_data(n=6, channels=3, size=28)
    model = load_model(exported["state_dict"], LoadOptions(device="cpu", arch="smallcnn"))
    with pytest.raises(ShapeMismatch, match="3 channels but the model takes 1"):
        bind_model(model, rgb)


def test_gray_data_into_three_channel_model_is_broadcast(
    tmp_path: Path, make_cnn: Callable[..., SmallCNN], data28: AuditData
) -> None:
    network = make_cnn(in_channels=3, width=32, seed=5)
    path = tmp_path / "rgb_weights.pt"
    torch.save(network.state_dict(), path)
    model = load_model(path, LoadOptions(device="cpu", arch="smallcnn"))
    assert model.spec.channels == 3
    bind_model(model, data28)
    x = data28.float_images(0, data28.n)
    with torch.no_grad():
        torch.testing.assert_close(model.predict(x), network(x.expand(-1, 3, -1, -1)))


def test_data_size_the_model_cannot_take(tmp_path: Path, audit_data: Callable[..., AuditData]) -> None:
    torch.manual_seed(0)
    network = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 2))
    path = trace_to(tmp_path / "fixed28.pt", network, torch.rand(2, 1, 28, 28))
    model = load_model(path, CPU)
    assert bind_model(model, audit_data(n=6, size=28)) == []  # the right size binds
    model = load_model(path, CPU)
    with pytest.raises(ShapeMismatch, match="1x64x64"):
        bind_model(model, audit_data(n=6, size=64))


class _NaNOutput(nn.Module):
    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) * float("nan")


def test_model_returning_nan_is_refused_at_bind(
    tmp_path: Path, make_cnn: Callable[..., SmallCNN], data28: AuditData
) -> None:
    path = trace_to(tmp_path / "nan.pt", _NaNOutput(make_cnn()), torch.rand(2, 1, 28, 28))
    model = load_model(path, CPU)
    with pytest.raises(ModelLoadError, match="NaN"):
        bind_model(model, data28)


def test_labels_beyond_the_models_classes(
    tmp_path: Path, make_cnn: Callable[..., SmallCNN], audit_data: Callable[..., AuditData]
) -> None:
    path = trace_to(tmp_path / "two.pt", make_cnn(num_classes=2), torch.rand(2, 1, 28, 28))
    model = load_model(path, CPU)
    with pytest.raises(ShapeMismatch, match="labels go up to 2 but the model has 2 classes"):
        bind_model(model, audit_data(n=9, num_classes=3))


def test_multilabel_width_mismatch(
    tmp_path: Path, make_cnn: Callable[..., SmallCNN], data28: AuditData
) -> None:
    path = trace_to(tmp_path / "two.pt", make_cnn(num_classes=2), torch.rand(2, 1, 28, 28))
    labels = (torch.arange(data28.n * 3).reshape(data28.n, 3) % 2).long()
    data = AuditData(data28.images, labels, Task.MULTI_LABEL, ("a", "b", "c"))
    with pytest.raises(ShapeMismatch, match="3 labels per image but the model outputs 2"):
        bind_model(load_model(path, CPU), data)
    model = load_model(path, LoadOptions(device="cpu", task=Task.MULTI_LABEL))
    with pytest.raises(ShapeMismatch, match="multi-label"):
        bind_model(model, data28)


# --------------------------------------------------------------------------- output conventions


def test_probability_outputs_are_detected(
    tmp_path: Path, make_cnn: Callable[..., SmallCNN], data28: AuditData
) -> None:
    data28 = AuditData(data28.images, data28.labels, Task.MULTI_CLASS, ("a", "b", "c"))  # 3 classes
    base = make_cnn(num_classes=3, seed=6)
    path = trace_to(tmp_path / "probs.pt", nn.Sequential(base, nn.Softmax(dim=1)), torch.rand(2, 1, 28, 28))
    model = load_model(path, CPU)
    assert model.outputs is None
    warns = bind_model(model, data28)
    assert model.outputs == "probabilities"
    assert len(warns) == 1 and "probabilities" in warns[0]
    assert model.describe()["outputs"] == "probabilities"
    x = data28.float_images(0, data28.n)
    with torch.no_grad():
        base_logits = base(x)
    logits = model.predict(x)
    assert torch.equal(logits.argmax(dim=1), base_logits.argmax(dim=1))
    torch.testing.assert_close(
        torch.softmax(logits, dim=1), torch.softmax(base_logits, dim=1), atol=1e-5, rtol=1e-4
    )


def test_logit_model_gets_no_probability_warning(
    tmp_path: Path, make_cnn: Callable[..., SmallCNN], data28: AuditData
) -> None:
    data28 = AuditData(data28.images, data28.labels, Task.MULTI_CLASS, ("a", "b", "c"))  # 3 classes
    path = trace_to(tmp_path / "logits.pt", make_cnn(num_classes=3, seed=6), torch.rand(2, 1, 28, 28))
    model = load_model(path, CPU)
    assert bind_model(model, data28) == []
    assert model.outputs is None


def test_single_logit_binary_model(
    tmp_path: Path, make_cnn: Callable[..., SmallCNN], data28: AuditData
) -> None:
    base = make_cnn(num_classes=1, seed=7)
    path = trace_to(tmp_path / "single.pt", base, torch.rand(2, 1, 28, 28))
    model = load_model(path, CPU)
    bind_model(model, data28)
    assert model.class_names == data28.class_names
    x = data28.float_images(0, data28.n)
    with torch.no_grad():
        z = base(x)[:, 0]
    logits = model.predict(x)
    assert logits.shape == (data28.n, 2)
    assert z.abs().max() > 1e-3
    torch.testing.assert_close(torch.softmax(logits, dim=1)[:, 1], torch.sigmoid(z))


# --------------------------------------------------------------------------- built-in architectures


@pytest.mark.parametrize(
    ("name", "size", "batch"),
    [
        ("resnet18_28", 28, 2),
        ("resnet50_28", 28, 2),
        ("resnet18_224", 224, 1),
        ("resnet50_224", 224, 1),
        ("smallcnn", 28, 2),
        ("rescnn", 28, 2),
    ],
)
def test_builtin_architectures_run(name: str, size: int, batch: int) -> None:
    torch.manual_seed(0)
    network = architectures.get(name)(in_channels=3, num_classes=5).eval()
    with torch.no_grad():
        out = network(torch.rand(batch, 3, size, size))
    assert out.shape == (batch, 5)
    assert torch.isfinite(out).all()


def test_resnet_state_dict_names_match_medmnist_and_torchvision() -> None:
    small = architectures.get("resnet18_28")(in_channels=1, num_classes=2).state_dict()
    assert "linear.weight" in small
    assert "layer2.0.shortcut.0.weight" in small
    assert "fc.weight" not in small
    large = architectures.get("resnet18_224")(in_channels=3, num_classes=2).state_dict()
    assert "fc.weight" in large
    assert "layer2.0.downsample.0.weight" in large
    assert "linear.weight" not in large
    assert tuple(large["conv1.weight"].shape) == (64, 3, 7, 7)
    assert tuple(small["conv1.weight"].shape) == (64, 1, 3, 3)


def test_builtin_resnet_state_dict_round_trip(tmp_path: Path, audit_data: Callable[..., AuditData]) -> None:
    torch.manual_seed(1)
    network = architectures.get("resnet18_28")(in_channels=1, num_classes=4).eval()
    path = tmp_path / "resnet.pth"
    torch.save({"model_state_dict": network.state_dict(), "epoch": 3}, path)
    model = load_model(path, LoadOptions(device="cpu", arch="resnet18_28"))
    data = audit_data(n=4, num_classes=4)
    bind_model(model, data)
    x = data.float_images(0, data.n)
    with torch.no_grad():
        torch.testing.assert_close(model.predict(x), network(x))


# --------------------------------------------------------------------------- preprocessing


def test_command_line_spec_beats_the_card(
    exported: dict[str, Path], reference: SmallCNN, data28: AuditData
) -> None:
    flags = InputSpec(mean=(0.0,), std=(1.0,))
    model = load_model(exported["torchscript"], LoadOptions(device="cpu", spec=flags))
    bind_model(model, data28)
    assert model.spec == InputSpec(channels=1, input_size=INPUT_SIZE, mean=(0.0,), std=(1.0,))
    x = data28.float_images(0, data28.n)
    resized = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(model.predict(x), reference(resized), atol=1e-4, rtol=0)
        assert not torch.allclose(model.predict(x), expected_logits(reference, x), atol=1e-2)


def test_three_value_normalisation_without_known_channels(
    tmp_path: Path, make_cnn: Callable[..., SmallCNN], audit_data: Callable[..., AuditData]
) -> None:
    network = make_cnn(in_channels=3, seed=8)
    path = trace_to(tmp_path / "rgb.pt", network, torch.rand(2, 3, 28, 28))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    model = load_model(path, LoadOptions(device="cpu", spec=InputSpec(mean=mean, std=std)))
    assert model.spec.channels is None
    data = audit_data(n=4, channels=3)
    bind_model(model, data)
    x = data.float_images(0, data.n)
    normalised = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model.predict(x), network(normalised))


def test_downsizing_in_the_wrapper(
    tmp_path: Path, make_cnn: Callable[..., SmallCNN], audit_data: Callable[..., AuditData]
) -> None:
    network = make_cnn(seed=9)
    path = trace_to(tmp_path / "small.pt", network, torch.rand(2, 1, 28, 28))
    model = load_model(path, LoadOptions(device="cpu", spec=InputSpec(input_size=28)))
    data = audit_data(n=4, size=64)
    bind_model(model, data)
    x = data.float_images(0, data.n)
    shrunk = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        torch.testing.assert_close(model.predict(x), network(shrunk), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channels": 2}, "channels must be 1 or 3"),
        ({"input_size": 0}, "input size"),
        ({"std": (0.5, 0.0, 0.5)}, "std values must be positive"),
        ({"mean": (0.1, 0.2)}, "mean has 2 values"),
        ({"channels": 1, "mean": (0.1, 0.2, 0.3)}, "model takes 1 channels"),
    ],
)
def test_input_spec_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        InputSpec(**kwargs)  # type: ignore[arg-type]
