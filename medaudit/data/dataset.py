"""The one dataset type every audit consumes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from medaudit.errors import DataError
from medaudit.task import Task

MAX_CLASSES = 100_000
"""Labels at or above this are refused: they cannot be class indices (and would name that many classes)."""


@dataclass(frozen=True)
class AuditData:
    """Images as uint8 NCHW (converted to float [0,1] per batch), labels and meaning.

    ``labels`` is int64 of shape (N,) for single-label tasks and (N, L) 0/1 for
    multi-label. ``identity`` says where the data came from (recorded in JSON).
    """

    images: torch.Tensor
    labels: torch.Tensor
    task: Task
    class_names: tuple[str, ...]
    identity: dict[str, Any] = field(default_factory=dict)
    offset: int = 0
    """Index of the first image in the whole audited set (non-zero for a shard): per-image
    and per-batch random draws are seeded by global index, so a shard draws what the
    single-process run draws for the same images."""
    total: int | None = None
    """Size of the whole audited set (None: this is the whole set)."""

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise DataError(f"images must be N x C x H x W, got shape {tuple(self.images.shape)}")
        if len(self.images) == 0:
            raise DataError(f"no images in {self.describe()}: choose a non-empty split or folder")
        if len(self.labels) != len(self.images):
            raise DataError(f"{len(self.images)} images but {len(self.labels)} labels in {self.describe()}")

    @property
    def n(self) -> int:
        return len(self.images)

    @property
    def population(self) -> int:
        """Images in the whole audited set this data belongs to."""
        return self.n if self.total is None else self.total

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def describe(self) -> str:
        """Short human name, e.g. 'pneumoniamnist (28 px, test)'."""
        ident = self.identity
        if ident.get("source") == "medmnist":
            return f"{ident['name']} ({ident['size']} px, {ident['split']})"
        return str(ident.get("path", "data"))

    def float_images(self, start: int, stop: int) -> torch.Tensor:
        """A slice of the images as float32 in [0, 1], always a copy (callers may write to it)."""
        chunk = self.images[start:stop]
        if chunk.dtype == torch.uint8:
            return chunk.float().div_(255.0)
        return chunk.float().clone()

    def uint8_images(self, start: int, stop: int) -> torch.Tensor:
        """A slice of the images as uint8 (float images are quantised to 8 bits)."""
        chunk = self.images[start:stop]
        if chunk.dtype == torch.uint8:
            return chunk
        return (chunk.float().clamp(0, 1) * 255).round().to(torch.uint8)

    def float_at(self, indices: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The images at ``indices`` as float32 in [0, 1]."""
        chunk = self.images[torch.as_tensor(indices, dtype=torch.long)]
        return chunk.float().div_(255.0) if chunk.dtype == torch.uint8 else chunk.float()

    def batches(self, batch_size: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Yield (start index, float images in [0,1], labels) in order."""
        for start in range(0, self.n, batch_size):
            stop = min(start + batch_size, self.n)
            yield start, self.float_images(start, stop), self.labels[start:stop]

    def subset(self, indices: np.ndarray, note: dict[str, Any]) -> AuditData:
        """A subsample; ``note`` (e.g. limit and seed) is added to the identity."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        identity = {**self.identity, **note, "n": len(idx)}
        return replace(self, images=self.images[idx], labels=self.labels[idx], identity=identity)

    def in_class_order(self, order: tuple[str, ...]) -> AuditData:
        """This data with its labels renumbered to ``order`` (the model card's class names) when
        it names the same classes in another order (``class_key`` equal); otherwise unchanged.

        Image folders come in alphabetical order and npz ``class_names`` in whatever order they
        were saved, so label i of the data need not be output i of the model."""
        ours, theirs = [class_key(n) for n in self.class_names], [class_key(n) for n in order]
        if ours == theirs or sorted(ours) != sorted(theirs) or len(set(ours)) != len(ours):
            return self
        position = torch.tensor([theirs.index(key) for key in ours])
        if self.task.single_label:
            labels = position[self.labels]
        else:  # column j of the data is the model's column position[j]
            labels = torch.empty_like(self.labels)
            labels[:, position] = self.labels
        note = {"data_classes": list(self.class_names), "model_classes": list(order)}
        return replace(self, labels=labels, class_names=order, identity={**self.identity, "relabelled": note})

    def shard(self, start: int, stop: int, note: dict[str, Any]) -> AuditData:
        """Images ``start:stop`` as a shard that keeps its global indices."""
        identity = {**self.identity, "shard": note}
        return replace(
            self, images=self.images[start:stop], labels=self.labels[start:stop], identity=identity,
            offset=self.offset + start, total=self.population,
        )  # fmt: skip


def stratified_indices(labels: torch.Tensor, limit: int, seed: int) -> np.ndarray:
    """A seeded, class-stratified sample of ``limit`` indices, in ascending order.

    Each class gets its proportional share (largest remainder rounding), so a
    quick audit of a big set keeps the class balance of the full set. Multi-label
    data is stratified on the first label.
    """
    n = len(labels)
    if limit >= n:
        return np.arange(n)
    strata = labels if labels.ndim == 1 else labels[:, 0]
    strata_np = strata.cpu().numpy()
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(strata_np, return_counts=True)
    exact = counts * limit / n
    take = np.floor(exact).astype(int)
    remainder_order = np.argsort(-(exact - take), kind="stable")
    take[remainder_order[: limit - take.sum()]] += 1
    chosen = [
        rng.choice(np.flatnonzero(strata_np == cls), size=k, replace=False)
        for cls, k in zip(classes, take, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def to_nchw(images: np.ndarray, where: str) -> torch.Tensor:
    """Accept N x H x W, N x H x W x C or N x C x H x W arrays (C in 1, 3)."""
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4:
        if images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
            images = images.transpose(0, 3, 1, 2)
        elif images.shape[1] not in (1, 3):
            raise DataError(
                f"images in {where} have shape {images.shape}: expected 1 or 3 channels "
                "(N x H x W, N x H x W x C or N x C x H x W)"
            )
    else:
        raise DataError(f"images in {where} have {images.ndim} dimensions: expected 3 or 4")
    if images.shape[2] < 1 or images.shape[3] < 1:
        raise DataError(
            f"images in {where} are {images.shape[2]} x {images.shape[3]} pixels: they have no pixels"
        )
    if images.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(images))
    if not np.issubdtype(images.dtype, np.floating):
        raise DataError(f"images in {where} are {images.dtype}: expected uint8 or float in [0, 1]")
    if images.size == 0:
        return torch.from_numpy(np.ascontiguousarray(images.astype(np.float32)))
    with np.errstate(all="ignore"):  # NaN, inf and float64 beyond float32 are reported, not warned about
        finite = np.isfinite(images)
        if not finite.all():
            raise DataError(
                f"float images in {where} must be finite and within [0, 1] "
                f"({int((~finite).sum())} NaN or infinite values): fix them or save as uint8"
            )
        low, high = float(images.min()), float(images.max())
        if low < 0.0 or high > 1.0:
            raise DataError(
                f"float images in {where} must be finite and within [0, 1] "
                f"(found {low:.3g}..{high:.3g}): rescale them or save as uint8"
            )
        arr = images.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr))


def infer_task(labels: np.ndarray) -> Task:
    """Guess the task from label values; --task overrides."""
    if labels.ndim == 2 and labels.shape[1] > 1:
        return Task.MULTI_LABEL
    return Task.BINARY if len(np.unique(labels)) <= 2 else Task.MULTI_CLASS


def labels_to_tensor(labels: np.ndarray, task: Task, where: str) -> torch.Tensor:
    """(N,) int64 for single-label tasks, (N, L) int64 for multi-label."""
    labels = np.asarray(labels)
    if not (
        np.issubdtype(labels.dtype, np.integer)
        or np.issubdtype(labels.dtype, np.floating)
        or labels.dtype == bool
    ):
        raise DataError(f"labels in {where} are {labels.dtype}, not numbers: store class indices 0..C-1")
    if task.single_label:
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1:
            raise DataError(
                f"labels in {where} have shape {labels.shape} but task {task.value} "
                "needs one label per image: pass --task multi-label if that is meant"
            )
    elif labels.ndim != 2:
        raise DataError(f"multi-label labels in {where} must be N x L, got {labels.shape}")
    if labels.size:
        with np.errstate(all="ignore"):  # NaN/inf labels are reported below, not warned about
            if not np.issubdtype(labels.dtype, np.integer) and not (
                np.isfinite(labels).all() and np.all(np.equal(np.mod(labels, 1), 0))
            ):
                raise DataError(f"labels in {where} are not whole numbers: expected class indices")
            if labels.min() < 0:
                raise DataError(f"labels in {where} contain negative values: expected 0..C-1")
            if labels.max() >= MAX_CLASSES:
                raise DataError(
                    f"labels in {where} go up to {labels.max():.0f}: class indices must be below {MAX_CLASSES}"
                )
    out = torch.from_numpy(labels.astype(np.int64))
    if not task.single_label and len(out) and out.max() > 1:
        raise DataError(f"multi-label labels in {where} must be 0/1")
    return out


def class_key(name: str) -> str:
    """A class name as matched against another source's: case, spaces and punctuation aside
    ('normal, benign' is 'Normal/Benign')."""
    return "".join(ch for ch in name.casefold() if ch.isalnum())


def default_class_names(labels: torch.Tensor, task: Task) -> tuple[str, ...]:
    """'0'..'C-1' when the source does not name its classes."""
    if task is Task.MULTI_LABEL:
        count = labels.shape[1]
    else:
        count = max(int(labels.max()) + 1 if len(labels) else 0, 2)
    return tuple(str(i) for i in range(count))
