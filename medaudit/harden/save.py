"""Write a hardened model in every format its network can be written in, each with a card.

As ``sample_models/train.py`` writes the sample models: TorchScript ``.pt``, ``torch.export``
``.pt2`` and ONNX, the normalisation in the card (the network itself takes normalised input);
plus a state_dict ``<stem>_state_dict.pt`` with its own card naming the architecture when the
network is a built-in one. A format whose export fails is reported, not written.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medaudit.data import AuditData
from medaudit.errors import first_line
from medaudit.harden.training import HardenResult
from medaudit.models import AuditModel
from medaudit.report.atomic import write_atomic


def hardened_card(result: HardenResult, source: AuditModel, data: AuditData, name: str) -> dict[str, Any]:
    """The card: the input model's preprocessing, task and classes, and how it was hardened."""
    model = result.model
    identity = data.identity
    dataset = (
        {"name": identity["name"], "size": identity["size"]}
        if identity.get("source") == "medmnist"
        else {"name": source.info.dataset, "size": source.info.dataset_size}
    )
    settings = {k: v for k, v in result.config.to_dict().items() if k != "checkpoint"}
    card: dict[str, Any] = {
        "name": name,
        "dataset": {k: v for k, v in dataset.items() if v is not None} or None,
        "task": model.task.value if model.task else None,
        "class_names": list(model.class_names) if model.class_names else None,
        "outputs": model.outputs or "logits",
        "arch": result.arch,
        "preprocessing": {k: v for k, v in model.spec.to_dict().items() if v is not None},
        "training": {
            "hardening": {
                "method": result.config.method,
                "settings": settings,
                "seed": result.config.seed,
                "source": {
                    "path": source.info.path,
                    "sha256": source.info.sha256,
                    "format": source.info.format,
                },
                "data": result.data,
                "history": result.history,
                "torch": torch.__version__,
            }
        },
    }
    return {k: v for k, v in card.items() if v is not None}


def _export_bytes(write: Callable[[Path], None], suffix: str) -> bytes:
    """What ``write`` puts in a fresh file (exporters want a path; the output is then written atomically)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"model{suffix}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            write(path)
        return path.read_bytes()


def _writers(network: nn.Module, example: torch.Tensor) -> dict[str, tuple[str, Callable[[Path], None]]]:
    """format -> (suffix, writer)."""
    batch = torch.export.Dim("batch", min=1)

    def torchscript(path: Path) -> None:
        scripted = (
            network if isinstance(network, torch.jit.ScriptModule) else torch.jit.trace(network, example)
        )
        torch.jit.save(scripted, str(path))

    def export(path: Path) -> None:
        torch.export.save(torch.export.export(network, (example,), dynamic_shapes=({0: batch},)), str(path))

    def onnx(path: Path) -> None:
        torch.onnx.export(
            network, (example,), str(path), dynamo=True, verbose=False, dynamic_shapes=({0: batch},),
            input_names=["images"], output_names=["logits"], external_data=False,
        )  # fmt: skip

    return {"torchscript": (".pt", torchscript), "export": (".pt2", export), "onnx": (".onnx", onnx)}


def save_hardened(result: HardenResult, source: AuditModel, data: AuditData, stem: Path) -> dict[str, str]:
    """Write ``stem.pt`` / ``.pt2`` / ``.onnx`` + ``stem.json`` (and the state_dict pair when the
    architecture is built-in); return format -> written path, or 'not written: reason'."""
    stem = Path(stem)
    model = result.model
    network = model.network.eval()
    example = model.preprocess(data.float_images(0, min(2, data.n)).to(model.device))
    card = hardened_card(result, source, data, stem.name)
    written: dict[str, str] = {}
    for fmt, (suffix, write) in _writers(network, example).items():
        target = stem.with_name(stem.name + suffix)
        try:
            content = _export_bytes(write, suffix)
        except Exception as exc:  # exporters raise anything on graphs they cannot handle
            written[fmt] = f"not written: {type(exc).__name__}: {first_line(exc)}"
            continue
        write_atomic(target, content)
        written[fmt] = str(target)
    if result.arch is not None:
        target = stem.with_name(f"{stem.name}_state_dict.pt")
        write_atomic(target, _export_bytes(lambda path: torch.save(network.state_dict(), path), ".pt"))
        write_atomic(target.with_suffix(".json"), json.dumps({**card, "arch": result.arch}, indent=2) + "\n")
        written["state_dict"] = str(target)
    write_atomic(stem.with_name(stem.name + ".json"), json.dumps(card, indent=2) + "\n")
    return written
