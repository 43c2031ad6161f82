"""Where code and data come from (issue #15): a model card may not make medaudit import code,
and damaged or hostile model and data files are one-line user errors (exit 2), never tracebacks."""

from __future__ import annotations

import json
import struct
import sys
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error
from typer.testing import CliRunner

from medaudit.cli import app
from medaudit.errors import ConfigError, ModelLoadError
from medaudit.models import LoadOptions, load_model
from medaudit.models.archs import architectures
from medaudit.models.archs.small_cnn import SmallCNN

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_models"
CPU = LoadOptions(device="cpu")


def invoke(runner: CliRunner, *args: str | Path):
    """Run the CLI; a RuntimeWarning (numpy's NaN/overflow warnings, PIL's decompression-bomb
    warning) would be a second, traceback-like line on the user's stderr, so it fails the test."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(app, [str(a) for a in args])
    runtime = [
        f"{w.category.__name__}: {w.message}" for w in caught if issubclass(w.category, RuntimeWarning)
    ]
    assert not runtime, runtime
    return result


@pytest.fixture
def data_npz(write_npz: Callable[..., Path]) -> Path:
    rng = np.random.default_rng(0)
    return write_npz(
        "data.npz",
        images=rng.integers(0, 256, (8, 28, 28), dtype=np.uint8),
        labels=np.arange(8) % 2,
    )


@pytest.fixture
def user_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], Path]]:
    """``user_code(name, source)`` writes ``name.py`` on sys.path and forgets the module afterwards."""
    folder = tmp_path / "user_code"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    written: list[str] = []

    def write(name: str, source: str) -> Path:
        written.append(name)
        path = folder / f"{name}.py"
        path.write_text(source)
        return path

    yield write
    for name in written:
        sys.modules.pop(name, None)


def evil_source(marker: Path) -> str:
    """A module whose import leaves a marker file (the code a card must not be able to run)."""
    return (
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('imported')\n"
        "from medaudit.models.archs.small_cnn import SmallCNN\n\n"
        "def factory(in_channels, num_classes):\n"
        "    return SmallCNN(in_channels, num_classes, width=4)\n"
    )


def state_dict_with_card(folder: Path, card: dict, network: torch.nn.Module | None = None) -> Path:
    path = folder / "model.pt"
    network = network or SmallCNN(1, 2, width=4)
    torch.save(network.state_dict(), path)
    path.with_suffix(".json").write_text(json.dumps(card))
    return path


# --------------------------------------------------------------------------- item 1: the card's arch


def test_card_cannot_make_medaudit_import_code(
    runner: CliRunner, tmp_path: Path, data_npz: Path, user_code: Callable[[str, str], Path]
) -> None:
    marker = tmp_path / "marker.txt"
    user_code("evil_mod", evil_source(marker))
    model = state_dict_with_card(tmp_path, {"arch": "evil_mod:factory", "task": "binary-class"})

    line = assert_one_line_error(invoke(runner, "eval", model, "--data", data_npz))
    assert not marker.exists(), "the card's module was imported"
    assert "evil_mod" not in sys.modules
    # names the card as the source, says how to allow it, and does not pretend the user typed --arch
    assert "card" in line and "'evil_mod:factory'" in line
    assert "pass --arch evil_mod:factory" in line and "trust" in line
    assert not line.startswith("error: --arch")
    assert "smallcnn" in line  # lists the built-in architectures a card may name

    # the same factory on the command line is the user's explicit opt-in
    result = invoke(runner, "eval", model, "--data", data_npz, "--arch", "evil_mod:factory")
    assert result.exit_code == 0, result.output
    assert marker.read_text() == "imported"


def test_card_code_arch_is_refused_by_the_library_too(
    tmp_path: Path, user_code: Callable[[str, str], Path]
) -> None:
    marker = tmp_path / "marker.txt"
    user_code("evil_mod_lib", evil_source(marker))
    model = state_dict_with_card(tmp_path, {"arch": "evil_mod_lib:factory"}, SmallCNN(1, 2, width=32))
    with pytest.raises(ModelLoadError, match="a card may only name built-in architectures"):
        load_model(model, CPU)
    assert not marker.exists()
    # the user's --arch wins over the card, and the card's module is still never imported
    loaded = load_model(model, LoadOptions(device="cpu", arch="smallcnn"))
    assert loaded.info.arch == "smallcnn"
    assert not marker.exists()


def test_card_code_arch_is_harmless_where_no_arch_is_needed(
    tmp_path: Path, user_code: Callable[[str, str], Path]
) -> None:
    """A TorchScript file's card is never used to build anything, so its arch is not imported."""
    marker = tmp_path / "marker.txt"
    user_code("evil_mod_ts", evil_source(marker))
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(SmallCNN(1, 2, width=4).eval()), str(path))
    path.with_suffix(".json").write_text(json.dumps({"arch": "evil_mod_ts:factory"}))
    assert load_model(path, CPU).info.format == "torchscript"
    assert not marker.exists()


def test_audit_file_arch_is_the_users_choice(
    runner: CliRunner, tmp_path: Path, data_npz: Path, user_code: Callable[[str, str], Path]
) -> None:
    marker = tmp_path / "marker.txt"
    user_code("evil_mod_run", evil_source(marker))
    model = tmp_path / "weights.pt"
    torch.save(SmallCNN(1, 2, width=4).state_dict(), model)
    audit = tmp_path / "audit.toml"
    audit.write_text(
        f'[model]\npath = "{model.name}"\narch = "evil_mod_run:factory"\n'
        f'[data]\ndata = "{data_npz.name}"\n[eval]\n'
    )
    result = invoke(runner, "run", audit)
    assert result.exit_code == 0, result.output
    assert marker.exists()


def test_bad_audit_file_arch_fails_before_anything_is_imported(runner: CliRunner, tmp_path: Path) -> None:
    audit = tmp_path / "audit.toml"
    audit.write_text('[model]\npath = "m.pt"\narch = ".relative:factory"\n[eval]\n')
    assert_one_line_error(invoke(runner, "run", audit), "[model] arch", "relative module")


def test_builtin_card_arch_still_loads(tmp_path: Path, data_npz: Path, runner: CliRunner) -> None:
    network = architectures.get("rescnn")(in_channels=1, num_classes=2).eval()
    model = state_dict_with_card(tmp_path, {"arch": "rescnn", "task": "binary-class"}, network)
    loaded = load_model(model, CPU)
    assert loaded.info.arch == "rescnn" and loaded.info.format == "state_dict"
    assert invoke(runner, "eval", model, "--data", data_npz).exit_code == 0


@pytest.mark.parametrize("name", ["pneumoniamnist_rescnn", "retinamnist_rescnn"])
def test_sample_model_cards_still_load(name: str) -> None:
    card = json.loads((SAMPLES / f"{name}.json").read_text())
    assert card["arch"] == "rescnn"
    for suffix in (".pt", ".pt2", ".onnx"):
        assert load_model(SAMPLES / f"{name}{suffix}", CPU).info.card is not None


@pytest.mark.parametrize(
    ("card", "needles"),
    [
        ({"arch": "smallcnnn"}, ["the card's arch 'smallcnnn'", "Did you mean smallcnn?"]),
        ({"arch": "resnet18_28"}, ["does not fit the card's arch 'resnet18_28'"]),
    ],
)
def test_card_arch_errors_name_the_card_not_the_flag(
    runner: CliRunner, tmp_path: Path, data_npz: Path, card: dict, needles: list[str]
) -> None:
    model = state_dict_with_card(tmp_path, card)
    line = assert_one_line_error(invoke(runner, "eval", model, "--data", data_npz), *needles)
    assert "--arch " + card["arch"] not in line


def test_user_arch_errors_still_name_the_flag(tmp_path: Path) -> None:
    model = state_dict_with_card(tmp_path, {})
    with pytest.raises(ModelLoadError, match="does not fit --arch resnet18_28"):
        load_model(model, LoadOptions(device="cpu", arch="resnet18_28"))
    with pytest.raises(ConfigError, match="the audit file's arch 'smallcnnn'"):
        load_model(model, LoadOptions(device="cpu", arch="smallcnnn", arch_source="the audit file's arch"))


# --------------------------------------------------------------------------- item 2a: --arch specs

USER_MODULES = {
    "trust_boom": "raise ValueError('kaboom on import\\nsecond line')\n",
    "trust_exit": "import sys\nsys.exit(3)\n",
    "trust_factories": (
        "def raises(in_channels, num_classes):\n"
        "    raise RuntimeError('factory failed')\n\n"
        "def not_a_module(**kwargs):\n"
        "    return 5\n\n"
        "value = 3\n"
    ),
}


@pytest.mark.parametrize(
    ("arch", "needle"),
    [
        (".mymod:f", "relative module"),
        ("..x:f", "relative module"),
        (":f", "not of the form"),
        ("mod:", "not of the form"),
        ("a b:c", "not a Python module name"),
        (
            "trust_boom:factory",
            "importing module 'trust_boom' for 'trust_boom:factory' raised ValueError: kaboom",
        ),
        ("trust_exit:factory", "raised SystemExit"),
        ("trust_factories:raises", "--arch trust_factories:raises raised RuntimeError"),
        ("trust_factories:not_a_module", "returned int, not a torch nn.Module"),
        ("trust_factories:value", "is not callable"),
        ("trust_factories:f:g", "not a Python name"),
    ],
)
def test_bad_arch_is_one_line(
    runner: CliRunner,
    tmp_path: Path,
    data_npz: Path,
    user_code: Callable[[str, str], Path],
    arch: str,
    needle: str,
) -> None:
    for name, source in USER_MODULES.items():
        user_code(name, source)
    model = state_dict_with_card(tmp_path, {})
    assert_one_line_error(invoke(runner, "eval", model, "--data", data_npz, "--arch", arch), needle)


# --------------------------------------------------------------------------- item 2b: .npz files


def _corrupt_member(path: Path) -> None:
    """Damage the compressed bytes of the first member (the zip directory stays intact)."""
    data = bytearray(path.read_bytes())
    info = zipfile.ZipFile(path).infolist()[0]
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + 20 : start + 60] = bytes(40)
    path.write_bytes(bytes(data))


def npz_case(name: str, tmp_path: Path) -> Path:
    """The bad .npz files, written on demand."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    labels = np.arange(6) % 2
    path = tmp_path / f"{name}.npz"
    arrays: dict[str, np.ndarray] = {"images": images, "labels": labels}
    if name == "object_array":
        arrays["images"] = np.array([images[0], "not an image", None], dtype=object)
    elif name == "object_labels":
        arrays["labels"] = np.array([0, 1, {"a": 1}, 0, 1, 0], dtype=object)
    elif name == "complex_images":
        arrays["images"] = images.astype(np.complex64)
    elif name == "complex_labels":
        arrays["labels"] = labels.astype(np.complex128)
    elif name == "string_labels":
        arrays["labels"] = np.array(list("ababab"))
    elif name == "bool_images":
        arrays["images"] = images > 128
    elif name == "scalar_images":
        arrays["images"] = np.array(7, dtype=np.uint8)
    elif name == "scalar_labels":
        arrays["labels"] = np.array(1)
    elif name == "mismatched_lengths":
        arrays["labels"] = labels[:4]
    elif name == "nan_images":
        arrays["images"] = np.full((6, 28, 28), np.nan, dtype=np.float32)
    elif name == "inf_labels":
        arrays["labels"] = np.array([0, 1, np.inf, 0, 1, 0])
    elif name == "huge_labels":
        arrays["labels"] = np.array([0, 1, 10**12, 0, 1, 0])
    elif name == "empty_pixels":
        arrays["images"] = np.zeros((6, 0, 0), dtype=np.uint8)
    elif name == "scalar_class_names":
        arrays["class_names"] = np.array("one name")
    elif name == "too_few_class_names":
        arrays["labels"] = np.arange(6) % 3
        arrays["class_names"] = np.array(["a", "b"])
    if name == "text_file":
        path.write_text("images,labels\n1,2\n")
    elif name == "npy_file":
        with open(path, "wb") as handle:
            np.save(handle, images)
    elif name == "truncated_zip":
        np.savez(path, **arrays)
        path.write_bytes(path.read_bytes()[:300])
    elif name == "corrupt_member":
        np.savez_compressed(path, **arrays)
        _corrupt_member(path)
    else:
        np.savez(path, **arrays)
    return path


NPZ_CASES = {
    "object_array": "pickle",
    "object_labels": "pickle",
    "complex_images": "complex64",
    "complex_labels": "complex128",
    "string_labels": "not numbers",
    "bool_images": "bool",
    "scalar_images": "single value",
    "scalar_labels": "single value",
    "mismatched_lengths": "6 images but 4 labels",
    "nan_images": "NaN",
    "inf_labels": "not whole numbers",
    "huge_labels": "class indices must be below",
    "empty_pixels": "no pixels",
    "scalar_class_names": "class_names",
    "too_few_class_names": "names 2 classes",
    "text_file": "not a zip",
    "npy_file": "single .npy array",
    "truncated_zip": "cannot read",
    "corrupt_member": "cannot read array",
}


@pytest.mark.parametrize("case", sorted(NPZ_CASES))
def test_bad_npz_is_one_line(
    runner: CliRunner, tmp_path: Path, make_cnn: Callable[..., SmallCNN], case: str
) -> None:
    model = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(make_cnn()), str(model))
    path = npz_case(case, tmp_path)
    line = assert_one_line_error(invoke(runner, "eval", model, "--data", path), NPZ_CASES[case])
    assert str(path) in line or path.name in line
    assert "allow_pickle" not in line  # never suggest loading pickles


def test_bool_labels_are_binary_labels(write_npz: Callable[..., Path]) -> None:
    """Not an error: True/False labels are the two classes of a binary task."""
    from medaudit.data.files import load_npz

    path = write_npz(
        "bool.npz", images=np.zeros((4, 8, 8), dtype=np.uint8), labels=np.array([0, 1, 1, 0]) > 0
    )
    data = load_npz(path)
    assert data.labels.tolist() == [0, 1, 1, 0] and data.task.value == "binary-class"


# --------------------------------------------------------------------------- item 2c: image folders


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def huge_png_header(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG file whose header declares a huge image (a decompression bomb, cheaply)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def image_folder(root: Path, bad_name: str, bad: bytes | None, side: int = 28) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8)).save(
                root / label / f"{i}.png"
            )
    if bad is not None:
        (root / "a" / bad_name).write_bytes(bad)
    return root


def _good_png(side: int = 28) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (side, side), dtype=np.uint8)).save(
        buffer, "PNG"
    )
    return buffer.getvalue()


IMAGE_CASES = {
    "bomb.png": (huge_png_header(), "too large to decode safely"),
    "bomb_warning.png": (huge_png_header(10000, 10000), "too large to decode safely"),  # PIL only warns
    "truncated.png": (_good_png()[:200], "cannot read image"),
    "header_only.png": (_good_png()[:30], "cannot read image"),
    "zero.png": (b"", "cannot read image"),
    "notes.png": (b"these are notes, not pixels\n", "cannot read image"),
    "scan.jpg": (b"\xff\xd8\xff\xe0 broken jpeg", "cannot read image"),
}


@pytest.mark.parametrize("name", sorted(IMAGE_CASES))
def test_bad_image_is_one_line(
    runner: CliRunner, tmp_path: Path, make_cnn: Callable[..., SmallCNN], name: str
) -> None:
    model = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(make_cnn()), str(model))
    content, needle = IMAGE_CASES[name]
    root = image_folder(tmp_path / "images", name, content)
    line = assert_one_line_error(invoke(runner, "eval", model, "--data", root), needle)
    assert name in line  # names the file


@pytest.mark.parametrize(("limit", "side"), [(100, 28), (100, 12)])  # 784 > 2x limit: error; 144: warning
def test_images_over_a_lowered_bomb_limit_are_refused(
    runner: CliRunner,
    tmp_path: Path,
    make_cnn: Callable[..., SmallCNN],
    monkeypatch: pytest.MonkeyPatch,
    limit: int,
    side: int,
) -> None:
    from PIL import Image

    model = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(make_cnn()), str(model))
    root = image_folder(tmp_path / "images", "x.png", None, side=side)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    assert_one_line_error(invoke(runner, "eval", model, "--data", root), "too large to decode safely")


def test_folder_named_like_an_image_is_skipped(
    runner: CliRunner, tmp_path: Path, make_cnn: Callable[..., SmallCNN]
) -> None:
    model = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(make_cnn()), str(model))
    root = image_folder(tmp_path / "images", "x.png", None)
    (root / "a" / "more.png").mkdir()
    assert invoke(runner, "eval", model, "--data", root).exit_code == 0


# --------------------------------------------------------------------------- item 2d: cards and model files


CARD_CASES = {
    "list": ([{"arch": "smallcnn"}], "not a JSON object"),
    "class_names_number": ({"class_names": 5}, "'class_names' must be a list of names"),
    "class_names_string": ({"class_names": "ab"}, "'class_names' must be a list of names"),
    "dataset_size_string": ({"dataset": {"name": "pneumoniamnist", "size": "28"}}, "dataset 'size'"),
    "dataset_name_number": ({"dataset": {"name": 5}}, "'name' must be a non-empty string"),
    "task_number": ({"task": 5}, "'task' must be a non-empty string"),
    "arch_number": ({"arch": 5}, "'arch' must be a non-empty string"),
    "std_nan": ({"preprocessing": {"std": [float("nan")]}}, "'std' must be finite"),
    "mean_string": ({"preprocessing": {"mean": "0.5"}}, "'mean' must be a number or a list of numbers"),
    "deeply_nested": ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    "not_utf8": (b"\xff\xfe{}", "cannot read model card"),
}


@pytest.mark.parametrize("case", sorted(CARD_CASES))
def test_bad_card_is_one_line(runner: CliRunner, tmp_path: Path, data_npz: Path, case: str) -> None:
    card, needle = CARD_CASES[case]
    model = tmp_path / "model.pt"
    torch.save(SmallCNN(1, 2, width=32).state_dict(), model)
    if isinstance(card, bytes):
        model.with_suffix(".json").write_bytes(card)
    else:
        model.with_suffix(".json").write_text(card if isinstance(card, str) else json.dumps(card))
    line = assert_one_line_error(
        invoke(runner, "eval", model, "--data", data_npz, "--arch", "smallcnn"), needle
    )
    assert "model.json" in line


def _zip_with_undecodable_name(path: Path) -> None:
    """A zip whose member name is flagged UTF-8 but is not (zipfile raises UnicodeDecodeError)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/é.pkl", b"x")
    path.write_bytes(path.read_bytes().replace("é".encode(), b"\xc3\x28"))


def _onnx_with_metadata(path: Path, value: str) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 2, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.metadata_props.add(key="medaudit_card", value=value)
    onnx.save(model, str(path))


def model_case(name: str, tmp_path: Path) -> Path:
    if name == "undecodable_zip_name.pt":
        path = tmp_path / name
        _zip_with_undecodable_name(path)
    elif name == "int_keys.pt":
        path = tmp_path / name
        torch.save({0: torch.zeros(2), 1: torch.ones(2)}, path)
    elif name == "random.onnx":
        path = tmp_path / name
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif name == "bad_card_json.onnx":
        path = tmp_path / name
        _onnx_with_metadata(path, "{not json")
    elif name == "nested_card_json.onnx":
        path = tmp_path / name
        _onnx_with_metadata(path, "[" * 100_000 + "]" * 100_000)
    elif name == "card_list.onnx":
        path = tmp_path / name
        _onnx_with_metadata(path, "[1, 2]")
    else:
        raise AssertionError(name)
    return path


MODEL_CASES = {
    "undecodable_zip_name.pt": "damaged archive",
    "int_keys.pt": "not a model or state_dict",
    "random.onnx": "cannot read",
    "bad_card_json.onnx": "'medaudit_card' is not valid JSON",
    "nested_card_json.onnx": "'medaudit_card' is not valid JSON",
    "card_list.onnx": "not a JSON object",
}


@pytest.mark.parametrize("name", sorted(MODEL_CASES))
def test_bad_model_file_is_one_line(runner: CliRunner, tmp_path: Path, name: str) -> None:
    path = model_case(name, tmp_path)
    assert_one_line_error(invoke(runner, "info", path, "--arch", "smallcnn"), MODEL_CASES[name])


def test_damaged_export_archive_is_one_line_and_quiet(
    runner: CliRunner, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """torch.export logs a whole traceback before it raises; none of it reaches the user."""
    path = tmp_path / "model.pt2"
    network = SmallCNN(1, 2, width=4).eval()
    torch.export.save(torch.export.export(network, (torch.zeros(2, 1, 28, 28),)), str(path))
    data = bytearray(path.read_bytes())
    record = next(i for i in zipfile.ZipFile(path).infolist() if "weight" in i.filename)
    data[record.header_offset : record.header_offset + 4] = bytes(4)  # break one record's header
    path.write_bytes(bytes(data))
    capfd.readouterr()
    line = assert_one_line_error(invoke(runner, "info", path), "cannot load torch.export archive")
    assert "warnings above" not in line  # the logged cause is in the message instead
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out
