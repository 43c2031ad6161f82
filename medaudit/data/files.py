"""User data: a MedMNIST-layout ``.npz`` file or an image folder (one sub-folder per class)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medaudit.data.dataset import (
    AuditData,
    default_class_names,
    infer_task,
    labels_to_tensor,
    to_nchw,
)
from medaudit.data.medmnist import sha256_file
from medaudit.errors import DataError, first_line, what_raised
from medaudit.task import Task

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def read_npz_arrays(path: Path, keys: Callable[[set[str]], list[str]], fix: str) -> dict[str, np.ndarray]:
    """Read the arrays ``keys(names in the file)`` chooses, never unpickling anything.

    Every way a damaged or foreign file fails (not a zip, a truncated or corrupt member, an
    object array that only pickle could read, a bare .npy) is a one-line DataError ending in ``fix``.
    """
    where = str(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError/OSError/BadZipFile/EOFError... for foreign files
        raise DataError(f"cannot read {where} as .npz ({_npz_problem(exc)}): {fix}") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{where} is a single .npy array, not an .npz archive of named arrays: {fix}")
    with npz:
        wanted = keys(set(npz.files))
        arrays = {}
        for key in wanted:
            try:
                arrays[key] = npz[key]
            except Exception as exc:  # BadZipFile (CRC), zlib.error, EOFError, ValueError...
                raise DataError(
                    f"cannot read array '{key}' in {where} ({_npz_problem(exc)}): {fix}"
                ) from None
    return arrays


def _npz_problem(exc: Exception) -> str:
    """Why numpy could not read a file or member, without numpy's advice to allow pickles."""
    text = str(exc)
    if isinstance(exc, ValueError) and "pickle" in text.lower():
        if "object arrays" in text.lower():
            return "it holds an object array, which only pickle can read, and pickles are never loaded"
        return "it is not a zip of .npy arrays"
    return first_line(exc)


def load_npz(path: Path, split: str = "test", task: Task | None = None) -> AuditData:
    """``{split}_images``/``{split}_labels`` (MedMNIST layout), or plain ``images``/``labels``.

    An optional ``class_names`` array names the classes.
    """
    where = str(path)
    chosen: list[str] = []

    def pick(keys: set[str]) -> list[str]:
        for prefix in (f"{split}_", ""):
            if f"{prefix}images" in keys and f"{prefix}labels" in keys:
                chosen.extend([f"{prefix}images", f"{prefix}labels"])
                return [*chosen, *(["class_names"] if "class_names" in keys else [])]
        raise DataError(
            f"{where} has neither {split}_images/{split}_labels nor images/labels "
            f"(keys: {', '.join(sorted(keys)) or 'none'}): save it in MedMNIST layout"
        )

    arrays = read_npz_arrays(path, pick, "save it again with numpy.savez (numeric arrays only)")
    images, labels = arrays[chosen[0]], arrays[chosen[1]]
    for key, array in zip(chosen, (images, labels), strict=True):
        if array.ndim == 0:
            raise DataError(f"'{key}' in {where} is a single value, not an array with one entry per image")
    if len(images) != len(labels):
        raise DataError(
            f"{len(images)} images but {len(labels)} labels in {where}: give one label (row) per image"
        )
    task = task or infer_task(labels)
    label_tensor = labels_to_tensor(labels, task, where)
    names = _npz_class_names(arrays.get("class_names"), label_tensor, task, where)
    identity: dict[str, Any] = {"source": "npz", "path": where, "split": split, "sha256": sha256_file(path)}
    identity["n"] = len(images)
    return AuditData(
        images=to_nchw(images, where),
        labels=label_tensor,
        task=task,
        class_names=names or default_class_names(label_tensor, task),
        identity=identity,
    )


def _npz_class_names(
    array: np.ndarray | None, labels: torch.Tensor, task: Task, where: str
) -> tuple[str, ...] | None:
    """The optional ``class_names`` array: 1-D strings (or numbers), enough for the labels."""
    if array is None:
        return None
    if array.ndim != 1 or array.dtype.kind not in "USiuf":
        raise DataError(
            f"class_names in {where} must be a 1-D array of names, got shape {array.shape} of {array.dtype}"
        )
    names = tuple(str(s) for s in array)
    twice = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if twice is not None:  # labels are matched to the model's outputs by name
        raise DataError(f"class_names in {where} names '{twice}' twice: give each class its own name")
    if task is Task.MULTI_LABEL:
        needed = labels.shape[1]
        if len(names) != needed:
            raise DataError(f"{where} names {len(names)} classes but its labels have {needed} columns")
    elif len(labels) and int(labels.max()) >= len(names):
        raise DataError(
            f"{where} names {len(names)} classes but its labels go up to {int(labels.max())}: "
            "give one name per class"
        )
    return names


def load_image_folder(
    root: Path, split: str = "test", size: int | None = None, task: Task | None = None
) -> AuditData:
    """``root/<class>/*.png``, or ``root/<split>/<class>/*.png`` when split folders exist.

    Grayscale stays one channel unless any image has colour. Images of mixed
    sizes need ``--size``, which resizes them all (bilinear).
    """
    from PIL import Image

    if (root / split).is_dir():
        root = root / split
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    if not class_dirs:
        raise DataError(f"{root} has no class sub-folders: put each class's images in root/<class>/")
    for folder in class_dirs:
        _check_not_nested(folder)
    files: list[tuple[Path, int]] = [
        (f, label)
        for label, folder in enumerate(class_dirs)
        for f in sorted(folder.iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES and not f.is_dir()
    ]
    if not files:
        raise DataError(f"no PNG/JPEG images under {root}: expected root/<class>/<image>.png")
    pil_images = [read_image(f) for f, _ in files]
    colour = any(img.mode not in ("L", "1", "P") and not img.mode.startswith("I") for img in pil_images)
    mode = "RGB" if colour else "L"
    arrays = []
    for (f, _), img in zip(files, pil_images, strict=True):
        try:
            if img.mode.startswith("I"):  # 16- and 32-bit grey: 0..65535 -> 0..255
                wide = np.clip(np.asarray(img, dtype=np.float64), 0, 65535)
                img = Image.fromarray((wide / 257).astype(np.uint8))
            img = img.convert(mode)
            if size is not None and img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR)
        except (ValueError, OSError) as exc:  # e.g. a pixel mode PIL cannot convert
            raise DataError(
                f"cannot convert image {f} (mode {img.mode}) to {mode}: {first_line(exc)}; save it as 8-bit PNG"
            ) from None
        arrays.append(np.asarray(img))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(
            f"images under {root} have different sizes ({len(shapes)} shapes): pass --size N to resize"
        )
    labels = torch.tensor([label for _, label in files], dtype=torch.long)
    task = task or (Task.BINARY if len(class_dirs) == 2 else Task.MULTI_CLASS)
    if not task.single_label:
        raise DataError("an image folder holds one class per image: multi-label needs an .npz")
    return AuditData(
        images=to_nchw(np.stack(arrays), str(root)),
        labels=labels,
        task=task,
        class_names=tuple(d.name for d in class_dirs),
        identity={"source": "folder", "path": str(root), "split": split, "n": len(files)},
    )


def _check_not_nested(folder: Path) -> None:
    """A class folder with no images of its own but images further down is a layout mistake, not
    an empty class (which is allowed): refuse it rather than audit without those images."""
    if any(f.suffix.lower() in IMAGE_SUFFIXES and f.is_file() for f in folder.iterdir()):
        return
    nested = next((f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()), None)
    if nested is not None:
        raise DataError(
            f"class folder {folder} has no images directly in it but has {nested.relative_to(folder)}: "
            "images must sit directly in DIR/<class>/"
        )


def read_image(path: Path) -> Any:
    """One image file, fully decoded; every way it can fail is a DataError naming the file.

    Images over PIL's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) are refused
    before they are decoded, including the sizes PIL would only warn about.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return img.copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(
            f"image {path} is too large to decode safely ({first_line(exc)}): shrink or remove it"
        ) from None
    except UnidentifiedImageError:
        raise DataError(
            f"cannot read image {path}: it is empty, damaged or not an image PIL can read; remove or replace it"
        ) from None
    except Exception as exc:  # PIL's decoders raise OSError, SyntaxError, ValueError, struct.error...
        raise DataError(f"cannot read image {path} ({what_raised(exc)}): remove or replace it") from None
