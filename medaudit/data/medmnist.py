"""MedMNIST files: ``{flag}{_size}.npz`` in a flat folder, as the medmnist package names them."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import urllib.error
import urllib.request
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medaudit.errors import DataError
from medaudit.task import Task

if TYPE_CHECKING:  # the catalogue (dataset_meta) is read before torch is imported
    from medaudit.data.dataset import AuditData

SIZES = (28, 64, 128, 224)
SPLITS = ("train", "val", "test")
ENV_ROOT = "MEDAUDIT_DATA_ROOT"


@cache
def info() -> dict[str, dict[str, Any]]:
    """medmnist's INFO for the 2D datasets (the 3D ones are out of scope).

    Read from medmnist's ``info.py`` alone: importing the ``medmnist`` package imports torch and
    torchvision (seconds), and a misspelt dataset name must be reported before that."""
    package = importlib.util.find_spec("medmnist")
    if package is None or not package.submodule_search_locations:
        raise DataError("the medmnist package is not installed: pip install medmnist")
    where = Path(next(iter(package.submodule_search_locations))) / "info.py"
    spec = importlib.util.spec_from_file_location("medaudit_medmnist_info", where)
    if spec is None or spec.loader is None:
        raise DataError(f"cannot read medmnist's dataset list from {where}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {flag: meta for flag, meta in module.INFO.items() if not flag.endswith("3d")}


def default_root() -> Path:
    """medmnist's own default folder."""
    return Path.home() / ".medmnist"


def resolve_root(data_root: Path | None) -> tuple[Path, str]:
    """The folder to read from and how it was chosen (for error messages)."""
    if data_root is not None:
        return Path(data_root), "--data-root"
    env = os.environ.get(ENV_ROOT)
    if env:
        return Path(env), ENV_ROOT
    return default_root(), "medmnist's default folder"


def file_name(flag: str, size: int) -> str:
    return f"{flag}{'' if size == 28 else f'_{size}'}.npz"


def dataset_meta(flag: str, size: int) -> dict[str, Any]:
    """medmnist's INFO entry of a 2D dataset; DataError for an unknown name or size."""
    datasets = info()
    if flag not in datasets:
        raise DataError(f"unknown MedMNIST dataset '{flag}': choose from {', '.join(sorted(datasets))}")
    if size not in SIZES:
        raise DataError(f"MedMNIST size {size} does not exist: choose from {SIZES}")
    return datasets[flag]


def _url_and_md5(meta: dict[str, Any], size: int) -> tuple[str, str]:
    suffix = "" if size == 28 else f"_{size}"
    return meta[f"url{suffix}"], meta[f"MD5{suffix}"]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(flag: str, size: int, root: Path) -> Path:
    """Fetch one file with its MD5 checked; write atomically so no partial file remains."""
    url, md5 = _url_and_md5(dataset_meta(flag, size), size)
    root.mkdir(parents=True, exist_ok=True)
    target = root / file_name(flag, size)
    partial = target.with_suffix(".npz.part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            while block := response.read(1 << 20):
                out.write(block)
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise DataError(f"download of {url} failed ({exc}): save the file by hand as {target}") from exc
    actual = hashlib.md5(partial.read_bytes()).hexdigest()
    if actual != md5:
        partial.unlink(missing_ok=True)
        raise DataError(f"download of {url} has MD5 {actual}, expected {md5}: try again")
    partial.replace(target)
    return target


def load_medmnist(
    flag: str,
    split: str = "test",
    size: int = 28,
    data_root: Path | None = None,
    allow_download: bool = False,
) -> AuditData:
    """One split of a 2D MedMNIST dataset, read without the medmnist Dataset class.

    (medmnist's ``__len__`` asserts the official split sizes, and we want to
    read only the two arrays we need.)
    """
    from medaudit.data.dataset import AuditData, labels_to_tensor, to_nchw

    flag = flag.lower()
    meta = dataset_meta(flag, size)
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}': choose train, val or test")
    root, how = resolve_root(data_root)
    path = root / file_name(flag, size)
    if not path.is_file():
        if not allow_download:
            url, _ = _url_and_md5(meta, size)
            raise DataError(
                f"{path.name} not found in {root} (chosen by {how}): download it from {url} "
                f"into that folder, set {ENV_ROOT} to the folder that holds it, or pass --download"
            )
        path = download(flag, size, root)
    where = str(path)
    from medaudit.data.files import read_npz_arrays

    def pick(keys: set[str]) -> list[str]:
        wanted = [f"{split}_images", f"{split}_labels"]
        missing = [k for k in wanted if k not in keys]
        if missing:
            raise DataError(f"{where} has no '{missing[0]}': the file is not in MedMNIST layout")
        return wanted

    arrays = read_npz_arrays(path, pick, "the file is corrupt; download it again")
    images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    if images.ndim == 0 or labels.ndim == 0 or len(images) != len(labels):
        raise DataError(f"{where} is not in MedMNIST layout (images {images.shape}, labels {labels.shape})")
    task = Task(meta["task"])
    class_names = tuple(meta["label"][str(i)] for i in range(len(meta["label"])))
    identity = {
        "source": "medmnist",
        "name": flag,
        "split": split,
        "size": size,
        "path": where,
        "sha256": sha256_file(path),
        "n": len(images),
    }
    return AuditData(
        images=to_nchw(images, where),
        labels=labels_to_tensor(labels, task, where),
        task=task,
        class_names=class_names,
        identity=identity,
    )
