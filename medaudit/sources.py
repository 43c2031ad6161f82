"""Sources: the model and data of an audit, loaded and bound from the user's settings.

Every audit receives a ``Prepared`` (model, data, the configuration that produced them and the
loader's warnings); commands and ``run`` build it with ``prepare``. Importing this module does
not import torch, so errors found before loading answer at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medaudit.document import document
from medaudit.errors import ConfigError, ModelLoadError
from medaudit.report.atomic import mark_read
from medaudit.settings import DataSettings, Device, ModelSettings, RunSettings
from medaudit.task import Task

if TYPE_CHECKING:  # torch comes with these: imported where a model or data is loaded
    from medaudit.data import AuditData, DataSpec
    from medaudit.models import AuditModel, LoadOptions


def parse_floats(text: str | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"{option} takes numbers separated by commas, got '{text}'") from None


def model_path(model: ModelSettings) -> Path:
    """The model file, which every command but ``shift --list`` and ``intrinsic`` of data needs."""
    if model.path is None:
        raise ConfigError("give a model file")
    if not model.path.exists():  # also in formats.detect_format, for callers of load_model: here before torch
        raise ModelLoadError(f"model file {model.path} does not exist: check the path")
    if model.path.is_dir():
        raise ModelLoadError(f"{model.path} is a folder: give the model file itself")
    return model.path


def load_options(
    model: ModelSettings, device: Device, arch_source: str = "--arch", arch_search: Path | None = None
) -> LoadOptions:
    from medaudit.models.card import InputSpec

    spec = InputSpec(
        channels=model.channels,
        input_size=model.input_size,
        mean=parse_floats(model.mean, "--mean"),
        std=parse_floats(model.std, "--std"),
    )
    from medaudit.models.loading import LoadOptions  # torch: after the checks above

    return LoadOptions(
        arch=model.arch,
        arch_source=arch_source,
        arch_search=arch_search or Path.cwd(),  # --arch mymodels:f finds ./mymodels.py
        trust_checkpoint=model.trust_checkpoint,
        spec=spec,
        device=device.value,
    )


def data_spec(model: AuditModel | None, data: DataSettings) -> DataSpec:
    """The user's data options; without any, the dataset the model card names."""
    dataset, size = data.dataset, data.size
    if dataset is None and data.data is None and model is not None and model.info.dataset:
        dataset = model.info.dataset
        size = size or model.info.dataset_size
    from medaudit.data import DataSpec

    return DataSpec(
        dataset=dataset,
        size=size,
        split=data.split.value,
        data_root=data.data_root,
        download=data.download,
        data=data.data,
        task=Task.parse(data.task) if data.task else None,
        limit=data.limit,
        seed=data.seed,
        class_order=model.class_names if model is not None and model.class_names else None,
    )


def input_files(model: Path | None, data: Path | None) -> list[Path]:
    """The files a model+data audit reads directly: the model, its card and the data."""
    card = model and model.with_suffix(".json")  # medaudit.models.card.card_path_for, without torch
    return [p for p in (model, card, data) if p is not None]


@dataclass
class Prepared:
    """A bound model, its data, and the configuration that produced them (for the JSON)."""

    model: AuditModel
    data: AuditData
    warnings: list[str]
    config: dict[str, Any]
    shard: dict[str, int] | None = None
    """Which part of the data this run audits (``--shard``), None for all of it."""
    spec: DataSpec | None = None
    """What ``data`` was loaded from: audits that also need another split (``features`` trains on
    the training split) load it with ``dataclasses.replace(spec, split="train")``."""
    load: LoadOptions | None = None
    """How ``model`` was loaded: a second model audited beside it is loaded the same way."""

    def document(self, command: str, config: dict[str, Any], results: dict[str, Any], **fields: Any) -> dict:
        """The command's JSON document; the data identity is the audited images'."""
        data = {**self.data.identity, "n": self.data.n}
        return document(command, config, results, model=self.model.describe(), data=data, **fields)

    def attach_state(self, doc: dict[str, Any], sections: dict[str, Any], **extra: Any) -> None:
        """For a shard, the per-sample state ``medaudit merge`` needs and its digests, which merge
        checks (see ``medaudit.sharding``); call it on the finished document."""
        if self.shard is not None:
            state = {"sections": sections, "warnings": self.warnings, **extra}
            from medaudit.sharding import digests, encode

            doc["shard"] = {**self.shard, "state": encode(state)}
            doc["shard"]["digest"] = digests(doc)


def prepare(
    model: ModelSettings,
    data: DataSettings,
    run: RunSettings,
    *,
    shard: str | None = None,
    arch_source: str = "--arch",
    arch_search: Path | None = None,
) -> Prepared:
    """Everything an audit does before auditing: load, bind, and cut out ``shard`` ('i/n') on
    multiples of ``RANDOM_BLOCK`` images (balanced, whatever the batch size). The files it reads
    are registered with ``mark_read``, so no output can replace them."""
    from medaudit.sharding import Shard

    part = Shard.parse(shard)
    path = model_path(model)
    inputs = input_files(path, data.data)
    for source in inputs:
        mark_read(source)
    data_spec(None, data)  # the data options alone fail before anything (or torch) is loaded
    options = load_options(model, run.device, arch_source, arch_search)
    from medaudit.data import load_data
    from medaudit.models import bind_model, load_model

    audit_model = load_model(path, options)
    spec = data_spec(audit_model, data)
    audit_data = load_data(spec)
    mark_read(audit_data.identity.get("path"))  # also the MedMNIST file the card's dataset led to
    warnings_ = bind_model(audit_model, audit_data)
    record = None
    if part is not None:
        start, stop = part.bounds(audit_data.n)  # on block boundaries, not batch ones
        record = part.to_dict(start, stop, audit_data.n)
        audit_data = audit_data.shard(start, stop, record)
    config = {
        "device": run.device.value,
        "load": {
            "arch": model.arch,
            "trust_checkpoint": model.trust_checkpoint,
            "spec_overrides": options.spec.to_dict(),
        },
        "data": spec.to_dict(),
    }
    return Prepared(audit_model, audit_data, warnings_, config, record, spec, options)
