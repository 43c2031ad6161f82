"""The preprocessing spec and the sidecar model card ``<model>.json``.

A card sits next to the model (``model.pt`` -> ``model.json``) and is shared by
every format of one model. Keys (all optional)::

    {"name": "...", "dataset": {"name": "pneumoniamnist", "size": 28},
     "task": "binary-class", "class_names": ["normal", "pneumonia"],
     "outputs": "logits" | "probabilities", "arch": "rescnn",
     "preprocessing": {"input_size": 28, "channels": 1, "mean": [0.5], "std": [0.5]},
     "training": {...}, "metrics": {...}}
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from medaudit.errors import ConfigError, ModelLoadError, first_line
from medaudit.options import whole_number
from medaudit.task import Task

ASSUMED_UNIT_INPUT = (
    "no normalisation is known (no --mean/--std, card or ONNX metadata): "
    "medaudit assumes the model takes [0,1] pixels"
)
"""The note ``load_model`` records when neither flags, card nor ONNX metadata give mean/std."""
MAX_INPUT_SIZE = 4096
"""Largest side length a model may take: beyond it one image alone outgrows memory."""
MIN_STD = 1e-6
"""Smallest normalisation std: anything smaller is a mistake, and tiny ones overflow normalised pixels
to infinity (the model then returns NaN, blamed on its weights)."""


@dataclass(frozen=True)
class InputSpec:
    """What the network expects; the wrapper turns [0,1] data into this.

    ``None`` means "take it from the data as it is".
    """

    channels: int | None = None
    input_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.channels is not None and self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {self.channels}")
        if self.input_size is not None and self.input_size < 1:
            raise ConfigError(f"input size must be positive, got {self.input_size}")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ConfigError(f"std values must be positive, got {list(self.std)}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and len(values) not in (1, 3):
                raise ConfigError(f"{name} has {len(values)} values: give 1 value or 3 (one per RGB channel)")
            if values is not None and self.channels and len(values) not in (1, self.channels):
                raise ConfigError(
                    f"{name} has {len(values)} values but the model takes {self.channels} channels"
                )

    def overridden_by(self, other: InputSpec) -> InputSpec:
        """Fields set in ``other`` win."""
        changes = {k: v for k, v in vars(other).items() if v is not None}
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "channels": self.channels,
            "input_size": self.input_size,
            "mean": list(self.mean) if self.mean is not None else None,
            "std": list(self.std) if self.std is not None else None,
        }


@dataclass(frozen=True)
class ModelCard:
    """What a card (or ONNX metadata) tells about a model."""

    spec: InputSpec = field(default_factory=InputSpec)
    task: Task | None = None
    class_names: tuple[str, ...] | None = None
    outputs: str | None = None
    arch: str | None = None
    dataset: str | None = None
    dataset_size: int | None = None
    path: str | None = None
    raw: dict[str, Any] | None = None


def _short(value: Any) -> str:
    """A value as the card wrote it, cut to fit in a one-line message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _floats(value: Any, where: str, key: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    values = list(value) if isinstance(value, list | tuple) else [value]
    if not values or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise ModelLoadError(
            f"{where}: preprocessing '{key}' must be a number or a list of numbers, got {_short(value)}"
        )
    if not all(math.isfinite(v) for v in values):
        raise ModelLoadError(f"{where}: preprocessing '{key}' must be finite numbers, got {_short(value)}")
    return tuple(float(v) for v in values)


def _optional_str(doc: dict[str, Any], key: str, where: str) -> str | None:
    value = doc.get(key)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ModelLoadError(f"{where}: '{key}' must be a non-empty string, got {_short(value)}")
    return value.strip() if value is not None else None


def _class_names(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(n, str | int | float) and not isinstance(n, bool) for n in value
    ):
        raise ModelLoadError(f"{where}: 'class_names' must be a list of names, got {_short(value)}")
    names = tuple(str(n) for n in value)
    twice = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if twice is not None:  # outputs are matched to the data's labels by name
        raise ModelLoadError(f"{where}: 'class_names' names '{twice}' twice: give each class its own name")
    return names or None


def card_from_dict(doc: dict[str, Any], where: str) -> ModelCard:
    """Validate a card's fields; raise ModelLoadError naming the bad key."""
    if not isinstance(doc, dict):
        raise ModelLoadError(f"{where} is not a JSON object: see the README's model card format")
    pre = doc.get("preprocessing") or {}
    dataset = doc.get("dataset")
    if not isinstance(pre, dict) or not isinstance(dataset, dict | str | None):
        raise ModelLoadError(f"{where}: 'preprocessing' must be an object and 'dataset' a name or an object")
    for key in ("channels", "input_size"):
        if pre.get(key) is not None and not whole_number(pre[key]):
            raise ModelLoadError(
                f"{where}: preprocessing '{key}' must be a whole number, got {_short(pre[key])}"
            )
    if pre.get("input_size") is not None and not 1 <= pre["input_size"] <= MAX_INPUT_SIZE:
        raise ModelLoadError(
            f"{where}: preprocessing 'input_size' must be 1..{MAX_INPUT_SIZE}, got {_short(pre['input_size'])}"
        )
    std = _floats(pre.get("std"), where, "std")
    if std is not None and min(std) < MIN_STD:
        raise ModelLoadError(
            f"{where}: preprocessing 'std' must be at least {MIN_STD:g}, got {_short(pre['std'])}"
        )
    if isinstance(dataset, str):
        dataset = {"name": dataset}
    dataset = dataset or {}
    dataset_name = _optional_str(dataset, "name", f"{where}: dataset")
    dataset_size = dataset.get("size")
    if dataset_size is not None and (not whole_number(dataset_size, 1)):
        raise ModelLoadError(
            f"{where}: dataset 'size' must be a positive whole number, got {_short(dataset_size)}"
        )
    task_name = _optional_str(doc, "task", where)
    try:
        spec = InputSpec(
            channels=pre.get("channels"),
            input_size=pre.get("input_size"),
            mean=_floats(pre.get("mean"), where, "mean"),
            std=std,
        )
        task = Task.parse(task_name) if task_name else None
    except ConfigError as exc:
        raise ModelLoadError(f"{where}: {exc}") from None
    outputs = doc.get("outputs")
    if outputs not in (None, "logits", "probabilities"):
        raise ModelLoadError(f"{where}: 'outputs' must be 'logits' or 'probabilities'")
    return ModelCard(
        spec=spec,
        task=task,
        class_names=_class_names(doc.get("class_names"), where),
        outputs=outputs,
        arch=_optional_str(doc, "arch", where),
        dataset=dataset_name,
        dataset_size=dataset_size,
        path=where,
        raw=doc,
    )


CARD_KEYS = (
    "dataset",
    "task",
    "class_names",
    "outputs",
    "arch",
    "preprocessing",
    "name",
    "training",
    "metrics",
)
PREPROCESSING_KEYS = ("input_size", "channels", "mean", "std")
ALIASES = {
    "classes": "class_names",
    "labels": "class_names",
    "label_names": "class_names",
    "normalization": "preprocessing",
    "normalisation": "preprocessing",
    "transform": "preprocessing",
    "architecture": "arch",
}


def card_hints(doc: dict[str, Any]) -> list[str]:
    """Keys a card writer probably meant as one of ours, which medaudit therefore ignored (any
    other key is a free-form record): 'mean' at the top level, 'classes', 'preprocesing'."""

    def meant(key: str, known: tuple[str, ...]) -> str | None:
        close = difflib.get_close_matches(key.casefold(), known, n=1, cutoff=0.75)
        return ALIASES.get(key.casefold()) or (close[0] if close else None)

    hints = []
    for key in doc:
        if key in CARD_KEYS:
            continue
        if key.casefold() in PREPROCESSING_KEYS:
            hints.append(f"'{key}' belongs under 'preprocessing'")
        elif target := meant(key, CARD_KEYS):
            hints.append(f"'{key}' is not a card key (did you mean '{target}'?)")
    pre = doc.get("preprocessing")
    for key in pre if isinstance(pre, dict) else {}:
        if key not in PREPROCESSING_KEYS and (target := meant(key, PREPROCESSING_KEYS)):
            hints.append(f"'preprocessing.{key}' is not a card key (did you mean '{target}'?)")
    return hints


def card_path_for(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


def read_card(model_path: Path) -> ModelCard | None:
    """The sidecar card, or None when there is none."""
    path = card_path_for(model_path)
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"cannot read model card {path} ({first_line(exc)}): fix or remove it") from None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError; deep nesting recurses
        raise ModelLoadError(
            f"model card {path} is not valid JSON ({first_line(exc)}): fix or remove it"
        ) from None
    return card_from_dict(doc, str(path))
