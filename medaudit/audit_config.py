"""The audit file read by ``medaudit run``: one TOML file names the model, the data,
the audits with their options and the release gate.

Every key is checked: a misspelt section or option is an error naming the
nearest valid one, never a silently ignored setting.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medaudit.audits import audits
from medaudit.errors import ConfigError, DataError, MedauditError, ModelLoadError, not_a_file
from medaudit.options import from_file
from medaudit.registry import parse_spec
from medaudit.settings import DataSettings, ModelSettings, RunSettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SHARED = ("model", "data", "run")
"""Sections every audit shares, declared once in ``medaudit.settings`` (keys, types, defaults)."""
GATE = "gate"
"""The release gate: metric name -> rule, checked by the gate itself."""

SAMPLE_MODEL = "sample_models/pneumoniamnist_rescnn.pt"
"""The model ``EXAMPLE`` names, as seen from the folder ``medaudit init`` runs in (a checkout of the repository)."""

EXAMPLE = """\
# medaudit audit file: `medaudit run audit.toml --json report.json --html report.html`
# Paths are relative to this file. Delete a section to skip that audit.

[model]
path = "sample_models/pneumoniamnist_rescnn.pt"   # .pt (TorchScript or state_dict), .pt2 or .onnx
# arch = "resnet18_28"        # for a state_dict: a built-in name or package.module:factory
# mean = [0.5]                # normalisation inside the model wrapper, if the model card has none
# std = [0.5]

[data]
# dataset = "pneumoniamnist"  # default: the dataset in the model card
# size = 28
split = "test"
# data = "my_test_set.npz"    # your own data instead (an .npz in MedMNIST layout or an image folder)
# limit = 500                 # a stratified, seeded subsample
seed = 0

[run]
device = "auto"               # auto, cpu or cuda
batch_size = 256

[eval]                        # clean accuracy, balanced accuracy, AUC

[attack]                      # worst case per sample over attacks and restarts
eps = "1/255,2/255"           # [0,1] pixel units; fractions allowed
norm = "linf"
attack = "auto"               # APGD-CE, APGD-DLR, Square (Square only for black-box models)

[shift]                       # MedMNIST-C corruptions
severities = [1, 2, 3, 4, 5]
# corruptions = ["gaussian_noise", "motion_blur"]   # default: the dataset's MedMNIST-C list
# modality = "xray"           # for your own data
# mode = "auto"               # medmnistc at 224 px, scaled below

[confounders]                 # shortcut probes: does a tag, frame, filter or dose change predictions?
strengths = [0.5, 1.0]
# artifacts = ["tag", "patch", "border", "ruler", "lowpass", "dose_noise"]

[intrinsic]                   # label sharpness, intrinsic dimension, model smoothness
k = 20
rounds = 10

# [features]                  # nonrobust features: trains fresh networks, minutes even with quick
# quick = true
# compare = "sample_models/pneumoniamnist_rescnn_adv.pt"   # a second model side by side (relative to this file)

[gate]                        # the release gate: every rule must hold (exit code 1 otherwise)
"eval.auc" = ">= 0.9"
"attack.robust_accuracy@1/255" = ">= 0.5"
"shift.mean_be" = "<= 0.3"
"confounders.shortcuts" = "== 0"    # calibrated verdicts: no artifact acts as a shortcut
"""


def _toml_string(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's; DEL must be escaped too)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def example_for(target: Path) -> str:
    """``EXAMPLE`` as ``medaudit init`` writes it to ``target``. Paths in an audit file are relative
    to its folder, so the sample model, as seen from the current folder, is written relative to
    ``target``'s folder (absolute where no relative path leads there, e.g. another drive)."""
    sample = os.path.abspath(SAMPLE_MODEL)
    try:
        model = Path(os.path.relpath(sample, os.path.abspath(target.parent))).as_posix()
    except ValueError:
        model = Path(sample).as_posix()
    return EXAMPLE.replace(f'path = "{SAMPLE_MODEL}"', f"path = {_toml_string(model)}", 1)


INPUT_PATHS: tuple[tuple[str, str, str, type[MedauditError]], ...] = (
    ("model", "path", "model file", ModelLoadError),
    ("data", "data", "data path", DataError),
    ("data", "data_root", "data folder", DataError),
)
"""The audit file's keys that name an input (section, key, what it is, the error if it is missing)."""


@dataclass(frozen=True)
class AuditFile:
    path: Path
    model: ModelSettings
    data: DataSettings
    run: RunSettings
    audits: dict[str, Any]
    """The settings of each audit present (its ``Audit.Options``), in run order."""
    gate: dict[str, Any] | None
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    def check_paths(self) -> None:
        """Fail before loading anything when a file the audit reads is missing, saying that the
        audit file's paths are relative to its own folder (not to the current folder)."""
        values = {
            ("model", "path"): self.model.path,
            ("data", "data"): self.data.data,
            # data_root is only read for a MedMNIST dataset, and --download may create it
            ("data", "data_root"): None if self.data.download or self.data.data else self.data.data_root,
        }
        for section, key, what, error in INPUT_PATHS:
            target = values[(section, key)]
            if target is None or target.exists():
                continue
            written = self.raw.get(section, {}).get(key)
            setting = f"[{section}] {key} = {_toml_string(str(written))} in {self.path}"
            if written is None or Path(written).expanduser().is_absolute():
                raise error(f"{what} {target} does not exist: check {setting}")
            folder = self.path.parent
            beside = "" if folder.resolve() == Path.cwd().resolve() else ", not to the current folder"
            raise error(
                f"{what} {target} does not exist: {setting} is relative to the audit file's folder "
                f"({folder}){beside}, as every path in an audit file is: fix it there or make it absolute"
            )


def _suggest(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (valid: {', '.join(valid)})"


ARCH_SOURCE = "the audit file's arch"
"""How messages name ``[model] arch`` (``LoadOptions.arch_source``): the user's own choice,
so, like ``--arch``, it may name a ``package.module:factory`` (a model card may not)."""


def _check_arch(path: Path, arch: str | None) -> None:
    """``[model] arch``: a built-in name or ``package.module:factory``, checked before anything is imported."""
    if arch is None:
        return
    if not arch.strip():
        raise ConfigError(f"{path}: [model] arch is empty: give a built-in name or package.module:factory")
    if ":" in arch:
        try:
            parse_spec(arch.strip())
        except ConfigError as exc:
            raise ConfigError(f"{path}: [model] arch: {exc}") from None


def read_audit_file(path: Path) -> AuditFile:
    """Parse and check an audit file; every problem is a one-line ConfigError."""
    if path.is_dir():
        raise ConfigError(f"audit file {path} {not_a_file(path)}: give the .toml file")
    if not path.is_file():
        raise ConfigError(f"audit file {path} not found (write an example with `medaudit init {path}`)")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    known = audits.in_order()
    sections = [*SHARED, *known, GATE]
    for section, body in raw.items():
        if section not in sections:
            raise ConfigError(f"{path}: unknown section [{section}]{_suggest(section, sections)}")
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: '{section}' must be a [section]")
    if "model" not in raw:
        raise ConfigError(f'{path}: the audit file needs a [model] section with path = "model file"')

    def resolve(value: str) -> Path:  # paths in the file are relative to its folder
        target = Path(value).expanduser()
        return target if target.is_absolute() else path.parent / target

    source = str(path)
    model = from_file(ModelSettings, raw["model"], "model", source, resolve)
    data = from_file(DataSettings, raw.get("data", {}), "data", source, resolve)
    run = from_file(RunSettings, raw.get("run", {}), "run", source, resolve)
    _check_arch(path, model.arch)
    chosen: dict[str, Any] = {
        name: from_file(audits.get(name).Options, raw[name], name, source, resolve)
        for name in known
        if name in raw
    }
    if not chosen:
        raise ConfigError(
            f"{path}: no audit to run: add at least one of {', '.join(f'[{a}]' for a in known)}"
        )
    return AuditFile(
        path=path,
        model=model,
        data=data,
        run=run,
        audits=chosen,
        gate=raw.get(GATE),
        raw=raw,
    )
