"""extract_features: the penultimate (or a named) layer of every model format, checked by hand."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medaudit.data import AuditData, DataSpec, load_data
from medaudit.errors import ConfigError
from medaudit.models import AuditModel, InputSpec, LoadOptions, bind_model, load_model
from medaudit.models.archs.small_cnn import SmallCNN
from medaudit.models.features import Features, available_layers, extract_features
from medaudit.models.wrapper import ModelInfo

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_models" / "pneumoniamnist_rescnn"
CPU = LoadOptions(device="cpu")
SIZE = 32  # the model's input; the data is 28 px, so the wrapper's resize is part of every check
SPEC = InputSpec(channels=1, input_size=SIZE, mean=(0.5,), std=(0.5,))
STATIC_BATCH = 4  # 10 images -> padded batches of 4, 4, 2


@contextmanager
def quiet() -> Iterator[None]:
    """torch's exporters warn about deprecations; the tests do not care."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def wrap(network: nn.Module, spec: InputSpec = SPEC) -> AuditModel:
    info = ModelInfo(path="", format="state_dict", sha256="", parameters=None)
    return AuditModel(network, spec, info)


def preprocessed(data: AuditData) -> torch.Tensor:
    """What the wrapper feeds the network, written out: resize to 32 px, then normalise."""
    x = data.float_images(0, data.n)
    return (F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False) - 0.5) / 0.5


@pytest.fixture(scope="module")
def cnn(make_cnn: Callable[..., SmallCNN]) -> SmallCNN:
    return make_cnn(in_channels=1, num_classes=2, width=4, seed=5)


@pytest.fixture(scope="module")
def data10(audit_data: Callable[..., AuditData]) -> AuditData:
    return audit_data(n=10, channels=1, size=28, num_classes=2, seed=7)


# ------------------------------------------------------------------------------------------ torch modules


def test_default_is_the_input_of_the_last_linear(cnn: SmallCNN, data10: AuditData) -> None:
    model = wrap(cnn)
    done: list[int] = []
    features = extract_features(model, data10, batch_size=4, progress=done.append)
    with torch.no_grad():
        expected = cnn.features(preprocessed(data10))
        logits = model.predict(data10.float_images(0, data10.n))
    assert isinstance(features, Features)
    assert features.values.shape == (10, 16) == expected.shape
    assert features.values.dtype == torch.float32 and features.values.device.type == "cpu"
    torch.testing.assert_close(features.values, expected, atol=1e-5, rtol=1e-5)
    assert features.layer == "input of classifier (Linear, 16 features)"
    assert done == [4, 4, 2]
    # the head applied to the features gives the logits: it really is the penultimate layer
    head = features.values @ cnn.classifier.weight.T + cnn.classifier.bias
    torch.testing.assert_close(head, logits, atol=1e-4, rtol=1e-4)
    # no hook is left behind, and the result is an ordinary tensor (usable outside inference mode)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in cnn.modules())
    features.values.add_(0.0)


def test_default_takes_the_last_of_several_linears(cnn: SmallCNN, data10: AuditData) -> None:
    torch.manual_seed(0)
    network = nn.Sequential(cnn.features, nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    features = extract_features(wrap(network), data10)
    with torch.no_grad():
        expected = network[2](network[1](cnn.features(preprocessed(data10))))
    assert features.values.shape == (10, 8)
    torch.testing.assert_close(features.values, expected, atol=1e-5, rtol=1e-5)
    assert features.layer.startswith("input of 3 (Linear")


def test_named_layer_is_that_module_output_flattened(cnn: SmallCNN, data10: AuditData) -> None:
    model = wrap(cnn)
    stage = extract_features(model, data10, layer="features.0")
    conv = extract_features(model, data10, layer="features.0.0")
    with torch.no_grad():
        x = preprocessed(data10)
        expected_stage = cnn.features[0](x).flatten(1)
        expected_conv = cnn.features[0][0](x).flatten(1)
    assert stage.values.shape == (10, 4 * SIZE * SIZE)
    torch.testing.assert_close(stage.values, expected_stage, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(conv.values, expected_conv, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(stage.values, conv.values)  # ReLU and BatchNorm sit between them
    assert conv.layer == f"output of features.0.0 (Conv2d, 4x{SIZE}x{SIZE} = {4 * SIZE * SIZE} features)"


def test_unknown_layer_names_close_matches(cnn: SmallCNN, data10: AuditData) -> None:
    model = wrap(cnn)
    with pytest.raises(ConfigError, match=r"unknown layer 'clasifier'.*did you mean classifier") as info:
        extract_features(model, data10, layer="clasifier")
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"features\.0\.0"):
        extract_features(model, data10, layer="features.0.9")
    assert "classifier" in available_layers(model) and "features.0.0" in available_layers(model)


def test_no_linear_head_is_a_config_error(data10: AuditData) -> None:
    network = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    with pytest.raises(ConfigError, match=r"no nn\.Linear"):
        extract_features(wrap(network), data10)
    assert extract_features(wrap(network), data10, layer="0").values.shape == (10, 2 * 30 * 30)


def test_batch_size_does_not_change_features(cnn: SmallCNN, data10: AuditData) -> None:
    model = wrap(cnn)
    small = extract_features(model, data10, batch_size=3).values
    large = extract_features(model, data10, batch_size=64).values
    torch.testing.assert_close(small, large, atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="batch size"):
        extract_features(model, data10, batch_size=0)


# ------------------------------------------------------------------------ every file format, static batch


@pytest.fixture(scope="module")
def exported(cnn: SmallCNN, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The seeded CNN as TorchScript, and as static-batch torch.export and ONNX files (padded batches)."""
    root = tmp_path_factory.mktemp("features")
    example = torch.rand(STATIC_BATCH, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    paths = {
        "torchscript": root / "scripted.pt",
        "export_static": root / "static.pt2",
        "onnx_static": root / "static.onnx",
        "onnx_legacy": root / "legacy.onnx",
    }
    with quiet():
        torch.jit.save(torch.jit.script(cnn), str(paths["torchscript"]))
        torch.export.save(torch.export.export(cnn, (example,)), str(paths["export_static"]))
        torch.onnx.export(cnn, (example,), str(paths["onnx_static"]), dynamo=True)
        torch.onnx.export(
            cnn,
            (example,),
            str(paths["onnx_legacy"]),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        )
    return paths


def load_bound(path: Path, data: AuditData) -> AuditModel:
    with quiet():
        model = load_model(path, LoadOptions(device="cpu", spec=SPEC))
        bind_model(model, data)
    return model


@pytest.mark.parametrize("kind", ["torchscript", "export_static", "onnx_static", "onnx_legacy"])
def test_every_format_gives_the_hand_computed_features(
    kind: str, exported: dict[str, Path], cnn: SmallCNN, data10: AuditData
) -> None:
    model = load_bound(exported[kind], data10)
    with torch.no_grad():
        expected = cnn.features(preprocessed(data10))
    for batch_size in (3, 64):  # 3 is not a multiple of the static batch: padding must be trimmed
        features = extract_features(model, data10, batch_size=batch_size)
        assert features.values.shape == (10, 16)
        torch.testing.assert_close(features.values, expected, atol=1e-4, rtol=1e-4)
    assert "16 features" in features.layer
    # the model itself is unchanged by the graph surgery
    logits = model.predict(data10.float_images(0, data10.n))
    torch.testing.assert_close(logits, cnn(preprocessed(data10)).detach(), atol=1e-4, rtol=1e-4)


def test_onnx_falls_back_to_the_verified_twin(
    exported: dict[str, Path], cnn: SmallCNN, data10: AuditData, tmp_path: Path
) -> None:
    path = tmp_path / "gone.onnx"
    shutil.copy(exported["onnx_legacy"], path)
    model = load_bound(path, data10)
    assert model.twin_verified
    path.unlink()  # onnxruntime's copy of the graph cannot be cut any more
    features = extract_features(model, data10)
    with torch.no_grad():
        expected = cnn.features(preprocessed(data10))
    torch.testing.assert_close(features.values, expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(ConfigError, match="no longer there"):
        extract_features(model, data10, layer="anything")  # names are ONNX tensors: no fallback
    model.twin_verified = False
    with pytest.raises(ConfigError, match="no longer there"):
        extract_features(model, data10)


# ----------------------------------------------------------------------------------- the sample model


@pytest.fixture(scope="module")
def real48(real_data_root: Path) -> AuditData:
    spec = DataSpec(dataset="pneumoniamnist", size=28, split="test", data_root=real_data_root, limit=48)
    return load_data(spec)


@pytest.fixture(scope="module")
def sample(real48: AuditData) -> dict[str, AuditModel]:
    models = {}
    for suffix in (".pt", ".pt2", ".onnx"):
        with quiet():
            model = load_model(SAMPLE.with_suffix(suffix), CPU)
            bind_model(model, real48)
        models[suffix] = model
    return models


def test_sample_model_formats_agree_on_penultimate_features(
    sample: dict[str, AuditModel], real48: AuditData
) -> None:
    features = {suffix: extract_features(model, real48, batch_size=64) for suffix, model in sample.items()}
    for suffix, found in features.items():
        assert found.values.shape == (48, 128), suffix
        assert found.values.abs().max() > 0.1, suffix  # not a dead layer
    assert sample[".onnx"].network.__class__.__name__ == "OrtNetwork"  # the real model, not the twin
    reference = features[".pt"].values
    for suffix in (".pt2", ".onnx"):
        torch.testing.assert_close(features[suffix].values, reference, atol=1e-4, rtol=1e-4)
    # the classifier weights map the features to the logits of every format
    scripted = sample[".pt"].network
    weight, bias = scripted.classifier.weight.detach(), scripted.classifier.bias.detach()
    for suffix, model in sample.items():
        logits = model.predict(real48.float_images(0, real48.n))
        head = features[suffix].values @ weight.T + bias
        torch.testing.assert_close(head, logits, atol=1e-4, rtol=1e-4, msg=suffix)


@pytest.mark.parametrize("suffix", [".pt", ".pt2", ".onnx"])
def test_sample_model_batch_size_independence(
    suffix: str, sample: dict[str, AuditModel], real48: AuditData
) -> None:
    small = extract_features(sample[suffix], real48, batch_size=3).values
    large = extract_features(sample[suffix], real48, batch_size=64).values
    torch.testing.assert_close(small, large, atol=1e-5, rtol=1e-5)


def test_sample_model_named_layers(sample: dict[str, AuditModel], real48: AuditData) -> None:
    """The last residual stage's output, by name, in .pt2 and .onnx; pooled, it is the default features."""
    with pytest.raises(ConfigError, match=r"\.pt2"):
        extract_features(sample[".pt"], real48, layer="features")
    assert available_layers(sample[".pt"]) == []
    assert "relu_6" in available_layers(sample[".pt2"]) and "relu_6" in available_layers(sample[".onnx"])
    exported = extract_features(sample[".pt2"], real48, layer="relu_6")
    onnx = extract_features(sample[".onnx"], real48, layer="relu_6")
    assert exported.values.shape == (48, 128 * 4 * 4)
    torch.testing.assert_close(onnx.values, exported.values, atol=1e-4, rtol=1e-4)
    default = extract_features(sample[".pt2"], real48).values
    pooled = exported.values.reshape(48, 128, 16).mean(dim=2)
    torch.testing.assert_close(pooled, default, atol=1e-5, rtol=1e-5)
    for suffix in (".pt2", ".onnx"):
        with pytest.raises(ConfigError, match=r"unknown layer 'relu6'.*relu_6"):
            extract_features(sample[suffix], real48, layer="relu6")
