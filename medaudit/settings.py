"""The settings every audit shares, declared once: the model, the data and how to run.

Each is a dataclass of ``medaudit.options.setting`` fields: the commands get them as
command-line options (``options.with_settings``), ``medaudit run`` reads them from the audit file's
``[model]``, ``[data]`` and ``[run]`` sections, with the same names, help and defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from medaudit.errors import ConfigError
from medaudit.models.card import MAX_INPUT_SIZE, MIN_STD
from medaudit.options import setting

MODEL_PANEL = "Model"
DATA_PANEL = "Data"
RUN_PANEL = "Run & output"


class Split(str, Enum):
    train = "train"
    val = "val"
    test = "test"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


MODEL_HELP = "Model file: TorchScript/state_dict .pt, torch.export .pt2 or .onnx."


def check_arch_name(arch: str | None) -> None:
    """An unknown built-in architecture name fails when the options are read, before torch is
    imported and whatever the model's format (a misspelt name is never silently ignored);
    ``package.module:factory`` is checked when it is imported."""
    if arch is not None and arch.strip() and ":" not in arch:
        from medaudit.registries import architectures

        try:
            architectures.check(arch.strip())
        except ConfigError as exc:
            raise ConfigError(f"--arch: {exc}") from None


def check_normalisation(text: str | None, flag: str, least: float) -> None:
    """--mean/--std when the options are read, before torch: a NaN or a std near 0 would
    otherwise surface much later as NaN outputs blamed on the model's weights."""
    if text is None:
        return
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"{flag} takes numbers separated by commas, got '{text}'") from None
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{flag} must be finite numbers, got '{text}'")
    if min(values) < least:
        raise ConfigError(f"{flag} must be at least {least:g}, got '{text}'")


@dataclass(frozen=True)
class ModelSettings:
    path: Path | None = setting(None, MODEL_HELP, argument=True, required=True, metavar="MODEL")
    arch: str | None = setting(
        None,
        "Architecture for a state_dict: a built-in name (see `medaudit list archs`) or package.module:factory, "
        "looked for in the current folder (an audit file's arch: in its folder), then on sys.path "
        "(imported and run: only code you trust; a model card may name built-ins only).",
        panel=MODEL_PANEL,
    )
    trust_checkpoint: bool = setting(
        False, "Allow a pickled whole nn.Module (unpickling runs code from the file).", panel=MODEL_PANEL
    )
    mean: str | None = setting(
        None,
        "Normalisation mean, one value or one per channel (e.g. 0.5 or 0.485,0.456,0.406).",
        panel=MODEL_PANEL,
        listed=True,
    )
    std: str | None = setting(
        None, "Normalisation std, one value or one per channel.", panel=MODEL_PANEL, listed=True
    )
    input_size: int | None = setting(
        None,
        f"Side length the model takes (1 to {MAX_INPUT_SIZE}); data of another size is resized inside the wrapper.",
        panel=MODEL_PANEL,
    )
    channels: int | None = setting(
        None, "Channels the model takes (1 or 3); grey data is repeated for 3.", panel=MODEL_PANEL
    )

    def __post_init__(self) -> None:
        check_arch_name(self.arch)
        if self.input_size is not None and not 1 <= self.input_size <= MAX_INPUT_SIZE:
            raise ConfigError(f"--input-size must be 1..{MAX_INPUT_SIZE}, got {self.input_size}")
        check_normalisation(self.mean, "--mean", -math.inf)
        check_normalisation(self.std, "--std", MIN_STD)


@dataclass(frozen=True)
class OptionalModelSettings(ModelSettings):
    """For commands that also work without a model (``shift --list``, ``intrinsic`` of data alone)."""

    path: Path | None = setting(None, MODEL_HELP, argument=True, metavar="MODEL")


@dataclass(frozen=True)
class DataSettings:
    dataset: str | None = setting(
        None, "MedMNIST dataset (e.g. pneumoniamnist). Default: the one in the model card.", panel=DATA_PANEL
    )
    size: int | None = setting(
        None, "MedMNIST image size (28, 64, 128, 224); for image folders, resize to this.", panel=DATA_PANEL
    )
    split: Split = setting(Split.test, "Data split.", panel=DATA_PANEL)
    data_root: Path | None = setting(
        None,
        "Folder with MedMNIST .npz files (else $MEDAUDIT_DATA_ROOT, else ~/.medmnist).",
        panel=DATA_PANEL,
    )
    download: bool = setting(False, "Download the MedMNIST file if it is missing.", panel=DATA_PANEL)
    data: Path | None = setting(
        None,
        "Your data: an .npz in MedMNIST layout or an image folder (one sub-folder per class).",
        panel=DATA_PANEL,
    )
    task: str | None = setting(
        None, "binary, multi-class, multi-label or ordinal, when it cannot be inferred.", panel=DATA_PANEL
    )
    limit: int | None = setting(
        None, "Audit a stratified, seeded subsample of N images.", panel=DATA_PANEL, min=1
    )
    seed: int = setting(0, "Seed for subsampling and every random choice.", panel=RUN_PANEL, min=0)


@dataclass(frozen=True)
class RunSettings:
    device: Device = setting(Device.auto, "Where torch runs.", panel=RUN_PANEL)
    batch_size: int = setting(256, "Images per forward pass.", panel=RUN_PANEL, min=1)
