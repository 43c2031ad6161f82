"""What data the user asked for (``DataSpec``, checked without torch) and loading it (``load_data``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medaudit.data.medmnist import dataset_meta
from medaudit.errors import ConfigError, DataError
from medaudit.options import whole_number
from medaudit.task import Task

if TYPE_CHECKING:
    from medaudit.data.dataset import AuditData


@dataclass(frozen=True)
class DataSpec:
    """What the user asked for; ``dataset`` may come from the model card."""

    dataset: str | None = None
    size: int | None = None
    split: str = "test"
    data_root: Path | None = None
    download: bool = False
    data: Path | None = None
    task: Task | None = None
    limit: int | None = None
    seed: int = 0
    class_order: tuple[str, ...] | None = None
    """The model card's class names: data naming the same classes in another order is relabelled
    to match (``AuditData.in_class_order``)."""

    def to_dict(self) -> dict[str, Any]:
        """The options as recorded in the JSON ``config``."""
        return {
            "dataset": self.dataset,
            "size": self.size,
            "split": self.split,
            "data": str(self.data) if self.data else None,
            "task": self.task.value if self.task else None,
            "limit": self.limit,
            "seed": self.seed,
        }

    def __post_init__(self) -> None:
        if self.dataset and self.data:
            raise ConfigError("give either --dataset or --data, not both")
        if self.size is not None and (not whole_number(self.size, 1)):
            raise ConfigError(f"--size must be a positive whole number, got {self.size!r}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be at least 1, got {self.limit}")
        if self.dataset:  # a misspelt name or size fails before the model is loaded
            dataset_meta(self.dataset, self.size or 28)
        if self.data is not None and not self.data.exists():
            raise DataError(f"data path {self.data} does not exist: check the --data argument")


def load_data(spec: DataSpec) -> AuditData:
    """Load what ``spec`` names, then apply the stratified ``--limit``."""
    from medaudit.data.dataset import stratified_indices
    from medaudit.data.files import load_image_folder, load_npz
    from medaudit.data.medmnist import load_medmnist

    if spec.data is not None:
        path = spec.data
        if path.is_dir():
            data = load_image_folder(path, spec.split, spec.size, spec.task)
        else:
            data = load_npz(path, spec.split, spec.task)
    elif spec.dataset:
        data = load_medmnist(spec.dataset, spec.split, spec.size or 28, spec.data_root, spec.download)
        if spec.task is not None and spec.task is not data.task:
            raise ConfigError(f"{spec.dataset} is a {data.task.value} task; drop --task for MedMNIST data")
    else:
        raise ConfigError(
            "no data given: pass --dataset NAME or --data FILE|DIR, or use a model whose card names its dataset"
        )
    if spec.class_order:
        data = data.in_class_order(spec.class_order)
    if spec.limit is not None and spec.limit < data.n:
        indices = stratified_indices(data.labels, spec.limit, spec.seed)
        data = data.subset(indices, {"limit": spec.limit, "limit_seed": spec.seed})
    return data
