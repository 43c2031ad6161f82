"""Sharded audits: a deterministic split of the images and an exact merge.

``--shard i/n`` audits the i-th of n contiguous slices of the data (i from 0).
Slices are cut at multiples of ``RANDOM_BLOCK`` images, whatever the batch size,
so the parts differ by at most one block (624 images in two: 320 and 304). Every
random draw is seeded by the global index of its image (``AuditData.offset``;
``medaudit.attacks.base.Draws``), and what an audit decides for a group of images
(the sweep's probe, the honesty checks' samples) it decides per block of
``RANDOM_BLOCK`` images by global index, never per batch: a shard computes, bit
for bit, what the single run computes for its images, at any batch size.

A shard's JSON carries its per-sample state (the audit's result objects:
logits, per-eps outcomes ...) under ``shard.state`` next to its partial tables.
``medaudit merge`` concatenates the states in shard order and derives every
number once from the whole, with the same ``to_dict`` code as the single run, so
counts add up and AUCs are computed on all images, never averaged.

The state codec writes arrays as base64 of their raw bytes (exact and compact)
and rebuilds only dataclasses and enums defined in ``medaudit`` itself. Every
array in a result object is per sample (first axis = images): that is what lets
``concat`` join shards without knowing the result type.

Every part also carries ``shard.digest`` (see ``digests``): SHA-256 of the fields
that name its audit and of its slice and state. ``medaudit merge`` recomputes both
and refuses a part that does not match, so a part edited or damaged after it was
written (flipped logits or labels, another seed or config) cannot merge into a
wrong verdict. A digest is a checksum, not a signature: it detects edits and
corruption, not someone who edits a part and then recomputes its digest.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import importlib
import json
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from medaudit import __version__
from medaudit.document import dumps
from medaudit.errors import ConfigError

RANDOM_BLOCK = 32
"""Shards are cut at multiples of this many images, and audits seed and decide per block of it
(by global image index), so a shard computes what the single run does for its images."""


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

    def bounds(self, n: int, block: int = RANDOM_BLOCK) -> tuple[int, int]:
        """First and past-the-end image of this shard, on block boundaries (``RANDOM_BLOCK``):
        the shards' sizes differ by at most one block."""
        blocks = math.ceil(n / block)
        if self.count > blocks:
            raise ConfigError(
                f"--shard {self.index}/{self.count}: {n} images make only {blocks} "
                f"block{'s' if blocks > 1 else ''} of {block}; use at most {blocks} shard{'s' if blocks > 1 else ''}"
            )
        first = self.index * blocks // self.count
        last = (self.index + 1) * blocks // self.count
        return first * block, min(last * block, n)

    def to_dict(self, start: int, stop: int, total: int) -> dict[str, int]:
        return {"index": self.index, "count": self.count, "start": start, "stop": stop, "total": total}


DIGEST_FORMAT = "medaudit-shard-digest/1"
"""Names the digest scheme inside every hashed payload (a new scheme gives new digests)."""


def audit_identity(doc: dict[str, Any]) -> dict[str, Any]:
    """What names the audit a part belongs to, equal in all its parts: command, config, model,
    seed, data (less ``n`` and ``shard``, which are the part's own), how the images were split,
    and the medaudit version that wrote it (the codec and result types are that version's)."""
    data, shard = doc["data"], doc["shard"]
    return {
        "command": doc["command"],
        "config": doc["config"],
        "model": doc["model"],
        "seed": doc["seed"],
        "data": {key: value for key, value in data.items() if key not in ("n", "shard")},
        "count": shard["count"],
        "total": shard["total"],
        "medaudit": __version__,
    }


def digests(doc: dict[str, Any]) -> dict[str, str]:
    """``shard.digest`` of a part's document: ``audit``, SHA-256 of its ``audit_identity``, and
    ``state``, SHA-256 of its slice (index, start, stop) and encoded state together with the audit
    digest (a state cannot be moved to another audit). Both hash the canonical JSON of the values
    as written and read back, so the writer and ``medaudit merge`` hash the same bytes.

    A checksum, not a signature: it detects a part edited or damaged after it was written, not
    someone who edits a part and recomputes the digest (nothing here is secret)."""
    audit = _sha256({"digest": DIGEST_FORMAT, **audit_identity(doc)})
    shard = doc["shard"]
    part = {key: shard[key] for key in ("index", "start", "stop", "state")}
    return {"audit": audit, "state": _sha256({"digest": DIGEST_FORMAT, "audit": audit, **part})}


def _sha256(value: dict[str, Any]) -> str:
    plain = json.loads(dumps(value))  # NaN -> null, tuples -> lists, keys -> str: as written
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def encode(value: Any) -> Any:
    """A result object as JSON-able data (see ``decode``)."""
    import torch  # here: parsing --shard must not wait for torch

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
    """A result object from ``encode``'s data; anything malformed raises ConfigError."""
    import torch  # here: parsing --shard must not wait for torch

    if isinstance(data, list):
        return [decode(v) for v in data]
    if not isinstance(data, dict):
        return data
    if "__tensor__" in data:
        array = _from_array(data["__tensor__"])
        try:
            return torch.from_numpy(array)
        except (TypeError, ValueError):
            raise ConfigError(
                f"shard state has a tensor of dtype {array.dtype.str}, which torch cannot hold"
            ) from None
    if "__ndarray__" in data:
        return _from_array(data["__ndarray__"])
    if "__enum__" in data:
        cls = _medaudit_type(data["__enum__"], Enum)
        try:
            return cls(data.get("value"))
        except ValueError:
            raise ConfigError(
                f"shard state has {_short(data.get('value'))}, not a value of {data['__enum__']}"
            ) from None
    if "__dataclass__" in data:
        return _dataclass(data)
    if "__tuple__" in data:
        return tuple(decode(v) for v in _list(data["__tuple__"], "a tuple"))
    if "__dict__" in data:
        items = _list(data["__dict__"], "a dict")
        if not all(isinstance(item, list) and len(item) == 2 for item in items):
            raise ConfigError("shard state has a dict whose items are not [key, value] pairs")
        try:
            return {decode(k): decode(v) for k, v in items}
        except TypeError:  # a key that decodes to a list, dict or array
            raise ConfigError("shard state has a dict with an unhashable key") from None
    if "__float__" in data:
        try:
            return float(data["__float__"])
        except (TypeError, ValueError):
            raise ConfigError(f"shard state has {_short(data['__float__'])}, not a number") from None
    raise ConfigError(f"not a medaudit shard state: unexpected keys {_short(sorted(data)[:3], 80)}")


def _dataclass(data: dict[str, Any]) -> Any:
    cls = _medaudit_type(data["__dataclass__"], None)
    fields = data.get("fields")
    expected = {f.name for f in dataclasses.fields(cls) if f.init}
    if not isinstance(fields, dict) or set(fields) != expected:
        given = sorted(fields) if isinstance(fields, dict) else fields
        raise ConfigError(
            f"shard state has fields {_short(given, 80)} for {data['__dataclass__']}, which has {sorted(expected)}"
        )
    values = {name: decode(value) for name, value in fields.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"shard state has a {data['__dataclass__']} that cannot be rebuilt ({type(exc).__name__})"
        ) from None


def _short(value: Any, limit: int = 40) -> str:
    """``repr`` of a value from a part, cut for a one-line message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(f"shard state has {what} that is a {type(value).__name__}, not a list")
    return value


def concat(parts: list[Any], where: str = "state") -> Any:
    """Join decoded shard states: arrays along the sample axis, everything else must agree."""
    import torch

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


def samples(value: Any) -> set[int]:
    """The lengths of the first axis of every array in a decoded state (one, the part's image
    count, for a well-formed part; an array without an axis counts as -1)."""
    import torch

    if isinstance(value, torch.Tensor | np.ndarray):
        return {value.shape[0] if value.ndim else -1}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = [getattr(value, f.name) for f in dataclasses.fields(value)]
    elif isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return set().union(*(samples(v) for v in value))
    return set()


def _holds_arrays(value: Any) -> bool:
    import torch

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


ARRAY_KINDS = "biufc"
"""numpy dtype kinds a state may hold: bool, integers, floats, complex (never objects)."""


def _from_array(data: Any) -> np.ndarray:
    shape = data.get("shape") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("dtype"), str)
        or not isinstance(data.get("base64"), str)
        or not isinstance(shape, list)
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise ConfigError("shard state has an array without a dtype string, a shape list and base64 text")
    try:
        dtype = np.dtype(data["dtype"])
    except (TypeError, ValueError):
        raise ConfigError(f"shard state has an array of unknown dtype {_short(data['dtype'])}") from None
    if dtype.kind not in ARRAY_KINDS or dtype.fields is not None or dtype.itemsize == 0:
        raise ConfigError(
            f"shard state has an array of dtype {_short(data['dtype'])}, which is not a number type"
        )
    try:
        raw = base64.b64decode(data["base64"], validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("shard state has an array whose base64 text is damaged") from None
    if len(raw) != math.prod(shape) * dtype.itemsize:
        raise ConfigError(
            f"shard state has an array of shape {shape} and dtype {dtype.str} that does not fit its {len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def _type_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _medaudit_type(name: str, base: type | None) -> Any:
    """A class named in a state; only medaudit's own dataclasses and enums are rebuilt."""
    if not isinstance(name, str):
        raise ConfigError(f"shard state names a type by {_short(name)}, not by its name")
    module, _, qualname = name.partition(":")
    if module != "medaudit" and not module.startswith("medaudit."):
        raise ConfigError(f"shard state names {_short(name)}, which is not a medaudit type")
    try:
        cls: Any = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
    except (ImportError, AttributeError):
        raise ConfigError(f"shard state names {_short(name)}, unknown to this medaudit version") from None
    if not isinstance(cls, type) or not (
        issubclass(cls, base) if base is not None else dataclasses.is_dataclass(cls)
    ):
        raise ConfigError(f"shard state names {name}, which is not a result type")
    return cls
