"""Sharded audits: a deterministic split of the images and an exact merge.

``--shard i/n`` audits the i-th of n contiguous slices of the data (i from 0).
Slices are cut at multiples of the batch size, so every batch a shard processes
is a batch the single-process run processes too, and every random draw is
seeded by the global index of its batch or image (``AuditData.offset``): a
shard computes, bit for bit, what the single run computes for its images.

A shard's JSON carries its per-sample state (the audit's result objects:
logits, per-eps outcomes ...) under ``shard.state`` next to its partial tables.
``medaudit merge`` concatenates the states in shard order and derives every
number once from the whole, with the same ``to_dict`` code as the single run, so
counts add up and AUCs are computed on all images, never averaged.

The state codec writes arrays as base64 of their raw bytes (exact and compact)
and rebuilds only dataclasses and enums defined in ``medaudit`` itself. Every
array in a result object is per sample (first axis = images): that is what lets
``concat`` join shards without knowing the result type.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import torch

from medaudit.errors import ConfigError


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0 <= index < count)."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str | None) -> Shard | None:
        if text is None:
            return None
        parts = text.split("/")
        try:
            index, count = (int(p) for p in parts)
        except ValueError:
            index, count = -1, 0
        if len(parts) != 2 or count < 1 or not 0 <= index < count:
            raise ConfigError(f"--shard takes i/n with 0 <= i < n (e.g. 0/4 ... 3/4), got '{text}'")
        return cls(index, count)

    def bounds(self, n: int, block: int) -> tuple[int, int]:
        """First and past-the-end image of this shard, on batch boundaries."""
        blocks = math.ceil(n / block)
        if self.count > blocks:
            raise ConfigError(
                f"--shard {self.index}/{self.count}: {n} images make only {blocks} batches of {block}; "
                f"use at most {blocks} shards or a smaller --batch-size"
            )
        first = self.index * blocks // self.count
        last = (self.index + 1) * blocks // self.count
        return first * block, min(last * block, n)

    def to_dict(self, start: int, stop: int, total: int) -> dict[str, int]:
        return {"index": self.index, "count": self.count, "start": start, "stop": stop, "total": total}


def encode(value: Any) -> Any:
    """A result object as JSON-able data (see ``decode``)."""
    if isinstance(value, torch.Tensor):
        return {"__tensor__": _array(value.detach().cpu().numpy())}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": _array(value)}
    if isinstance(value, Enum):
        return {"__enum__": _type_name(type(value)), "value": value.value}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        return {"__dataclass__": _type_name(type(value)), "fields": fields}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {"__dict__": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot encode {type(value).__name__} in a shard state")


def decode(data: Any) -> Any:
    if isinstance(data, list):
        return [decode(v) for v in data]
    if not isinstance(data, dict):
        return data
    if "__tensor__" in data:
        return torch.from_numpy(_from_array(data["__tensor__"]))
    if "__ndarray__" in data:
        return _from_array(data["__ndarray__"])
    if "__enum__" in data:
        return _medaudit_type(data["__enum__"], Enum)(data["value"])
    if "__dataclass__" in data:
        cls = _medaudit_type(data["__dataclass__"], None)
        return cls(**{k: decode(v) for k, v in data["fields"].items()})
    if "__tuple__" in data:
        return tuple(decode(v) for v in data["__tuple__"])
    if "__dict__" in data:
        return {decode(k): decode(v) for k, v in data["__dict__"]}
    if "__float__" in data:
        return float(data["__float__"])
    raise ConfigError(f"not a medaudit shard state: unexpected keys {sorted(data)[:3]}")


def concat(parts: list[Any], where: str = "state") -> Any:
    """Join decoded shard states: arrays along the sample axis, everything else must agree."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, np.ndarray):
        return np.concatenate(parts)
    if dataclasses.is_dataclass(first) and not isinstance(first, type):
        _agree([type(p) for p in parts], where)
        fields = {
            f.name: concat([getattr(p, f.name) for p in parts], f"{where}.{f.name}")
            for f in dataclasses.fields(first)
            if f.init
        }
        return type(first)(**fields)
    if isinstance(first, dict):
        _agree([list(p) for p in parts], where)
        return {k: concat([p[k] for p in parts], f"{where}[{k!r}]") for k in first}
    if isinstance(first, list | tuple) and any(_holds_arrays(v) for v in first):
        _agree([len(p) for p in parts], where)
        return type(first)(concat([p[i] for p in parts], f"{where}[{i}]") for i in range(len(first)))
    _agree(parts, where)
    return first


def _holds_arrays(value: Any) -> bool:
    if isinstance(value, torch.Tensor | np.ndarray):
        return True
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return any(_holds_arrays(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, dict):
        return any(_holds_arrays(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_holds_arrays(v) for v in value)
    return False


def _agree(values: list[Any], where: str) -> None:
    for other in values[1:]:
        if other != values[0]:
            raise ConfigError(
                f"the shards disagree at {where} ({values[0]!r} vs {other!r}): "
                "merge only the parts of one sharded audit"
            )


def _array(array: np.ndarray) -> dict[str, Any]:
    array = np.ascontiguousarray(array)
    return {
        "dtype": array.dtype.str,
        "shape": list(array.shape),
        "base64": base64.b64encode(array.tobytes()).decode("ascii"),
    }


def _from_array(data: dict[str, Any]) -> np.ndarray:
    raw = base64.b64decode(data["base64"])
    return np.frombuffer(raw, dtype=np.dtype(data["dtype"])).reshape(data["shape"]).copy()


def _type_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _medaudit_type(name: str, base: type | None) -> Any:
    """A class named in a state; only medaudit's own dataclasses and enums are rebuilt."""
    module, _, qualname = name.partition(":")
    if module != "medaudit" and not module.startswith("medaudit."):
        raise ConfigError(f"shard state names {name}, which is not a medaudit type")
    try:
        cls: Any = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
    except (ImportError, AttributeError):
        raise ConfigError(f"shard state names {name}, unknown to this medaudit version") from None
    if not isinstance(cls, type) or not (
        issubclass(cls, base) if base is not None else dataclasses.is_dataclass(cls)
    ):
        raise ConfigError(f"shard state names {name}, which is not a result type")
    return cls
