"""User data: a MedMNIST-layout ``.npz`` file or an image folder (one sub-folder per class)."""

from __future__ import annotations

import zipfile
from pathlib import Path

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
from medaudit.errors import DataError
from medaudit.task import Task

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def load_npz(path: Path, split: str = "test", task: Task | None = None) -> AuditData:
    """``{split}_images``/``{split}_labels`` (MedMNIST layout), or plain ``images``/``labels``.

    An optional ``class_names`` array names the classes.
    """
    where = str(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {where} as .npz ({exc}): check the file") from None
    with npz:
        keys = set(npz.files)
        for prefix in (f"{split}_", ""):
            if f"{prefix}images" in keys and f"{prefix}labels" in keys:
                images, labels = npz[f"{prefix}images"], npz[f"{prefix}labels"]
                break
        else:
            raise DataError(
                f"{where} has neither {split}_images/{split}_labels nor images/labels "
                f"(keys: {', '.join(sorted(keys)) or 'none'}): save it in MedMNIST layout"
            )
        names = tuple(str(s) for s in npz["class_names"]) if "class_names" in keys else None
    task = task or infer_task(np.asarray(labels))
    label_tensor = labels_to_tensor(labels, task, where)
    identity = {"source": "npz", "path": where, "split": split, "sha256": sha256_file(path)}
    identity["n"] = len(images)
    return AuditData(
        images=to_nchw(np.asarray(images), where),
        labels=label_tensor,
        task=task,
        class_names=names or default_class_names(label_tensor, task),
        identity=identity,
    )


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
    files: list[tuple[Path, int]] = [
        (f, label)
        for label, folder in enumerate(class_dirs)
        for f in sorted(folder.iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise DataError(f"no PNG/JPEG images under {root}: expected root/<class>/<image>.png")
    pil_images = []
    for f, _ in files:
        try:
            with Image.open(f) as img:
                img.load()
                pil_images.append(img.copy())
        except OSError as exc:
            raise DataError(f"cannot read image {f} ({exc}): remove or replace it") from None
    colour = any(img.mode not in ("L", "1", "I", "I;16", "P") for img in pil_images)
    mode = "RGB" if colour else "L"
    arrays = []
    for img in pil_images:
        if img.mode in ("I", "I;16"):
            img = Image.fromarray((np.asarray(img, dtype=np.float64) / 257).astype(np.uint8))
        img = img.convert(mode)
        if size is not None and img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BILINEAR)
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
