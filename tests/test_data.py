"""Data sources: .npz files, image folders, MedMNIST files, stratified subsampling, DataSpec."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medaudit.data import AuditData, DataSpec, load_data, stratified_indices
from medaudit.data.files import load_image_folder, load_npz
from medaudit.data.medmnist import info, load_medmnist
from medaudit.errors import ConfigError, DataError
from medaudit.task import Task

# --------------------------------------------------------------------------- npz


def test_npz_medmnist_layout_grayscale(synthetic_npz: Path) -> None:
    raw = np.load(synthetic_npz)
    for split in ("train", "test"):
        data = load_npz(synthetic_npz, split)
        images, labels = raw[f"{split}_images"], raw[f"{split}_labels"]
        assert data.n == len(images)
        assert data.channels == 1
        assert data.size == images.shape[1:]
        assert data.images.dtype == torch.uint8
        assert torch.equal(data.images[:, 0], torch.from_numpy(images))
        assert torch.equal(data.labels, torch.from_numpy(labels[:, 0]).long())
        assert data.task is Task.BINARY
        assert data.class_names == ("0", "1")
        assert data.identity["split"] == split
        assert data.identity["n"] == len(images)


def test_npz_rgb_nhwc_is_converted_to_nchw(write_npz: Callable[..., Path]) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    path = write_npz("rgb.npz", test_images=images, test_labels=np.array([0, 1, 2, 0, 1, 2]))
    data = load_npz(path)
    assert data.channels == 3
    assert data.size == (16, 16)
    assert torch.equal(data.images, torch.from_numpy(images).permute(0, 3, 1, 2))
    x = data.float_images(0, 6)
    assert x.dtype == torch.float32
    assert torch.allclose(x * 255, data.images.float())


def test_npz_plain_keys_and_class_names(write_npz: Callable[..., Path]) -> None:
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (5, 1, 12, 12), dtype=np.uint8)  # N x C x H x W
    labels = np.array([0, 1, 1, 0, 1])
    path = write_npz("plain.npz", images=images, labels=labels, class_names=np.array(["benign", "malignant"]))
    data = load_npz(path, split="val")
    assert torch.equal(data.images, torch.from_numpy(images))
    assert torch.equal(data.labels, torch.from_numpy(labels))
    assert data.class_names == ("benign", "malignant")


def test_npz_float_images_in_unit_range(write_npz: Callable[..., Path]) -> None:
    images = np.random.default_rng(3).random((4, 10, 10)).astype(np.float64)
    path = write_npz("float.npz", images=images, labels=np.array([0, 1, 0, 1]))
    data = load_npz(path)
    assert data.images.dtype == torch.float32
    assert torch.allclose(data.float_images(0, 4)[:, 0], torch.from_numpy(images).float())


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan")])
def test_npz_float_images_out_of_range_are_refused(write_npz: Callable[..., Path], bad: float) -> None:
    images = np.random.default_rng(3).random((4, 10, 10))
    images[2, 3, 3] = bad
    path = write_npz("float.npz", images=images, labels=np.array([0, 1, 0, 1]))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        load_npz(path)


def test_npz_integer_images_other_than_uint8_are_refused(write_npz: Callable[..., Path]) -> None:
    path = write_npz("int.npz", images=np.zeros((2, 8, 8), dtype=np.int32), labels=np.array([0, 1]))
    with pytest.raises(DataError, match="int32"):
        load_npz(path)


def test_npz_missing_keys_names_the_keys(write_npz: Callable[..., Path]) -> None:
    path = write_npz("wrong.npz", x=np.zeros((2, 8, 8), dtype=np.uint8), y=np.array([0, 1]))
    with pytest.raises(DataError, match="x, y"):
        load_npz(path)


def test_npz_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.npz"
    path.write_bytes(b"this is not a zip file")
    with pytest.raises(DataError, match="cannot read"):
        load_npz(path)


@pytest.mark.parametrize(
    ("labels", "task"),
    [
        (np.array([0, 1, 1, 0, 1, 0]), Task.BINARY),
        (np.array([[0], [1], [1], [0], [1], [0]]), Task.BINARY),
        (np.array([0, 1, 2, 0, 1, 2]), Task.MULTI_CLASS),
        (np.array([[0, 1, 1], [1, 0, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 0]]), Task.MULTI_LABEL),
    ],
)
def test_task_inference(write_npz: Callable[..., Path], labels: np.ndarray, task: Task) -> None:
    images = np.zeros((6, 8, 8), dtype=np.uint8)
    data = load_npz(write_npz("t.npz", images=images, labels=labels))
    assert data.task is task
    assert data.labels.dtype == torch.int64
    if task is Task.MULTI_LABEL:
        assert data.labels.shape == labels.shape
        assert data.num_classes == labels.shape[1]
    else:
        assert data.labels.shape == (6,)
        assert data.num_classes == max(2, int(labels.max()) + 1)


def test_explicit_task_overrides_inference(write_npz: Callable[..., Path]) -> None:
    path = write_npz("o.npz", images=np.zeros((4, 8, 8), dtype=np.uint8), labels=np.array([0, 1, 2, 3]))
    assert load_npz(path, task=Task.ORDINAL).task is Task.ORDINAL


def test_npz_with_no_images_is_an_error(write_npz: Callable[..., Path]) -> None:
    path = write_npz("empty.npz", images=np.zeros((0, 8, 8), dtype=np.uint8), labels=np.zeros(0, dtype=int))
    with pytest.raises(DataError, match="no images"):
        load_npz(path)


def test_audit_data_rejects_empty_and_mismatched() -> None:
    with pytest.raises(DataError, match="no images"):
        AuditData(
            torch.zeros(0, 1, 8, 8, dtype=torch.uint8),
            torch.zeros(0, dtype=torch.long),
            Task.BINARY,
            ("a", "b"),
        )
    with pytest.raises(DataError, match="N x C x H x W"):
        AuditData(
            torch.zeros(3, 8, 8, dtype=torch.uint8), torch.zeros(3, dtype=torch.long), Task.BINARY, ("a", "b")
        )


def test_npz_labels_count_mismatch(write_npz: Callable[..., Path]) -> None:
    path = write_npz("m.npz", images=np.zeros((10, 8, 8), dtype=np.uint8), labels=np.arange(9) % 2)
    with pytest.raises(DataError, match="10 images but 9 labels"):
        load_npz(path)


@pytest.mark.parametrize(
    ("labels", "task", "message"),
    [
        (np.array([[0, 1], [1, 0], [1, 1], [0, 0]]), Task.BINARY, "one label per image"),
        (np.array([0.0, 1.5, 1.0, 0.0]), None, "whole numbers"),
        (np.array([0, -1, 1, 0]), None, "negative"),
        (np.array([[0, 2], [1, 0], [1, 1], [0, 0]]), Task.MULTI_LABEL, "0/1"),
        (np.array([0, 1, 1, 0]), Task.MULTI_LABEL, "N x L"),
    ],
)
def test_npz_bad_labels(
    write_npz: Callable[..., Path], labels: np.ndarray, task: Task | None, message: str
) -> None:
    path = write_npz("bad.npz", images=np.zeros((4, 8, 8), dtype=np.uint8), labels=labels)
    with pytest.raises(DataError, match=message):
        load_npz(path, task=task)


def test_npz_bad_channel_count(write_npz: Callable[..., Path]) -> None:
    path = write_npz("c.npz", images=np.zeros((4, 8, 8, 2), dtype=np.uint8), labels=np.array([0, 1, 0, 1]))
    with pytest.raises(DataError, match="1 or 3 channels"):
        load_npz(path)


# --------------------------------------------------------------------------- image folders


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_grayscale(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for cls in ("normal", "pneumonia"):
        for i in range(3):
            arrays[(cls, i)] = rng.integers(0, 256, (12, 12), dtype=np.uint8)
            save_png(tmp_path / cls / f"{i}.png", arrays[(cls, i)])
    (tmp_path / "normal" / "notes.txt").write_text("not an image")

    data = load_image_folder(tmp_path)
    assert data.class_names == ("normal", "pneumonia")
    assert data.task is Task.BINARY
    assert data.n == 6
    assert data.channels == 1
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    expected = np.stack([arrays[(c, i)] for c in ("normal", "pneumonia") for i in range(3)])
    assert torch.equal(data.images[:, 0], torch.from_numpy(expected))


def test_image_folder_any_colour_image_makes_all_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (10, 10), dtype=np.uint8)
    save_png(tmp_path / "a" / "gray.png", gray)
    save_png(tmp_path / "b" / "rgb.png", rng.integers(0, 256, (10, 10, 3), dtype=np.uint8))
    save_png(tmp_path / "c" / "gray2.png", gray)
    data = load_image_folder(tmp_path)
    assert data.channels == 3
    assert data.task is Task.MULTI_CLASS
    assert data.num_classes == 3
    for channel in range(3):  # grayscale converted to RGB repeats the gray value
        assert torch.equal(data.images[0, channel], torch.from_numpy(gray))


def test_image_folder_split_subfolders(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    counts = {"train": 4, "test": 2}
    for split, count in counts.items():
        for cls in ("x", "y"):
            for i in range(count):
                save_png(tmp_path / split / cls / f"{i}.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    for split, count in counts.items():
        data = load_image_folder(tmp_path, split=split)
        assert data.n == 2 * count
        assert data.identity["path"] == str(tmp_path / split)


def test_image_folder_mixed_sizes_need_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    save_png(tmp_path / "a" / "small.png", rng.integers(0, 256, (10, 10), dtype=np.uint8))
    save_png(tmp_path / "b" / "large.png", rng.integers(0, 256, (20, 14), dtype=np.uint8))
    with pytest.raises(DataError, match="--size"):
        load_image_folder(tmp_path)
    data = load_image_folder(tmp_path, size=16)
    assert data.size == (16, 16)
    assert data.n == 2


def test_image_folder_without_classes_or_images(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no class sub-folders"):
        load_image_folder(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no PNG/JPEG"):
        load_image_folder(tmp_path)


def test_load_data_dispatches_folder_and_npz(tmp_path: Path, synthetic_npz: Path) -> None:
    save_png(tmp_path / "folder" / "a" / "0.png", np.zeros((8, 8), dtype=np.uint8))
    save_png(tmp_path / "folder" / "b" / "0.png", np.full((8, 8), 255, dtype=np.uint8))
    folder = load_data(DataSpec(data=tmp_path / "folder"))
    assert folder.identity["source"] == "folder"
    assert folder.float_images(0, 2).amax(dim=(1, 2, 3)).tolist() == [0.0, 1.0]
    npz = load_data(DataSpec(data=synthetic_npz, split="train"))
    assert npz.identity["source"] == "npz"
    assert npz.n == len(np.load(synthetic_npz)["train_labels"])


# --------------------------------------------------------------------------- stratified subsample


def imbalanced_labels() -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.permutation(np.repeat([0, 1, 2], [70, 23, 7])))


@pytest.mark.parametrize("limit", [1, 10, 33, 99])
def test_stratified_keeps_proportions(limit: int) -> None:
    labels = imbalanced_labels()
    indices = stratified_indices(labels, limit, seed=0)
    assert len(indices) == limit
    assert len(np.unique(indices)) == limit
    assert np.all(np.diff(indices) > 0), "indices must be sorted ascending"
    full = np.bincount(labels.numpy(), minlength=3)
    sample = np.bincount(labels.numpy()[indices], minlength=3)
    assert np.all(np.abs(sample - full * limit / len(labels)) < 1)


def test_stratified_is_seeded() -> None:
    labels = imbalanced_labels()
    first = stratified_indices(labels, 30, seed=5)
    assert np.array_equal(first, stratified_indices(labels, 30, seed=5))
    assert not np.array_equal(first, stratified_indices(labels, 30, seed=6))


def test_stratified_limit_at_least_n_returns_all() -> None:
    labels = imbalanced_labels()
    assert np.array_equal(stratified_indices(labels, 500, seed=0), np.arange(len(labels)))


def test_stratified_multilabel_uses_first_label() -> None:
    rng = np.random.default_rng(1)
    labels = torch.from_numpy(rng.integers(0, 2, (60, 4)))
    indices = stratified_indices(labels, 20, seed=0)
    full = np.bincount(labels[:, 0].numpy(), minlength=2)
    sample = np.bincount(labels[indices, 0].numpy(), minlength=2)
    assert np.all(np.abs(sample - full * 20 / 60) < 1)


def test_load_data_limit_subsamples_and_records_it(write_npz: Callable[..., Path]) -> None:
    rng = np.random.default_rng(4)
    labels = np.repeat([0, 1], [30, 10])
    images = rng.integers(0, 256, (40, 8, 8), dtype=np.uint8)
    path = write_npz("l.npz", images=images, labels=labels)
    data = load_data(DataSpec(data=path, limit=8, seed=3))
    expected = stratified_indices(torch.from_numpy(labels), 8, 3)
    assert data.n == 8
    assert torch.equal(data.images[:, 0], torch.from_numpy(images[expected]))
    assert data.labels.tolist() == labels[expected].tolist()
    assert data.identity["limit"] == 8
    assert data.identity["limit_seed"] == 3
    assert data.identity["n"] == 8


# --------------------------------------------------------------------------- DataSpec / load_data errors


def test_dataspec_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not both"):
        DataSpec(dataset="pneumoniamnist", data=tmp_path / "x.npz")
    with pytest.raises(ConfigError, match="--limit"):
        DataSpec(data=tmp_path / "x.npz", limit=0)
    with pytest.raises(ConfigError, match="no data given"):
        load_data(DataSpec())
    with pytest.raises(DataError, match="does not exist"):  # before anything is loaded
        DataSpec(data=tmp_path / "missing.npz")


def test_missing_medmnist_file_names_file_folder_and_url(tmp_path: Path) -> None:
    empty = tmp_path / "empty_root"
    empty.mkdir()
    with pytest.raises(DataError) as excinfo:
        load_medmnist("pneumoniamnist", "test", 28, empty)
    message = str(excinfo.value)
    assert "pneumoniamnist.npz" in message
    assert str(empty) in message
    assert info()["pneumoniamnist"]["url"] in message
    assert "--download" in message

    with pytest.raises(DataError) as excinfo:
        load_medmnist("breastmnist", "test", 64, empty)
    assert "breastmnist_64.npz" in str(excinfo.value)
    assert info()["breastmnist"]["url_64"] in str(excinfo.value)


def test_medmnist_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown MedMNIST dataset"):
        load_medmnist("pneumonia", "test", 28, tmp_path)
    with pytest.raises(DataError, match="size 30"):
        load_medmnist("pneumoniamnist", "test", 30, tmp_path)
    with pytest.raises(DataError, match="unknown split"):
        load_medmnist("pneumoniamnist", "validation", 28, tmp_path)


# --------------------------------------------------------------------------- real MedMNIST files


def test_real_pneumoniamnist(real_data_root: Path) -> None:
    data = load_medmnist("pneumoniamnist", "test", 28, real_data_root)
    raw_labels = np.load(real_data_root / "pneumoniamnist.npz")["test_labels"]
    assert data.n == 624 == len(raw_labels)
    assert data.channels == 1
    assert data.size == (28, 28)
    assert data.task is Task.BINARY
    assert data.num_classes == 2
    assert data.labels.tolist() == raw_labels[:, 0].tolist()
    assert data.identity["source"] == "medmnist"
    assert data.describe() == "pneumoniamnist (28 px, test)"


def test_real_retinamnist(real_data_root: Path) -> None:
    data = load_medmnist("retinamnist", "test", 28, real_data_root)
    assert data.channels == 3
    assert data.num_classes == 5
    assert data.task is Task.ORDINAL
    assert set(data.labels.tolist()) == set(range(5))


def test_real_breastmnist_64(real_data_root: Path) -> None:
    data = load_medmnist("breastmnist", "test", 64, real_data_root)
    assert data.size == (64, 64)
    assert data.channels == 1
    small = load_medmnist("breastmnist", "test", 28, real_data_root)
    assert torch.equal(data.labels, small.labels)


def test_real_load_data_with_limit_and_task_check(real_data_root: Path) -> None:
    data = load_data(DataSpec(dataset="pneumoniamnist", data_root=real_data_root, limit=50, seed=1))
    assert data.n == 50
    assert data.identity["limit"] == 50
    with pytest.raises(ConfigError, match="binary-class"):
        load_data(DataSpec(dataset="pneumoniamnist", data_root=real_data_root, task=Task.MULTI_LABEL))
