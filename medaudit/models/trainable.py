"""A trainable copy of an audited model's network: what fine-tuning audits (``confounders
finetune``) and hardening (``medaudit harden``) train, never the user's model itself."""

from __future__ import annotations

import contextlib
import copy
import io

import torch
from torch import nn

from medaudit.errors import ConfigError
from medaudit.models.wrapper import AuditModel


def trainable_network(model: AuditModel) -> nn.Module:
    """The torch module behind the AuditModel that fine-tuning can copy; ConfigError when there is none."""
    if model.is_onnx:
        if model.twin is None or not model.twin_verified:
            raise ConfigError(
                "this ONNX model runs as a black box (no verified torch twin), so it cannot be fine-tuned: "
                "use the .pt or .pt2 file of the same model"
            )
        network = model.twin
    else:
        network = model.network
    if not any(p.is_floating_point() for p in network.parameters()):
        raise ConfigError(
            f"the {model.info.format} network has no trainable parameters (weights frozen into the graph), "
            "so it cannot be fine-tuned: use a TorchScript .pt, torch.export .pt2 or state_dict file"
        )
    return network


def copy_trainable(model: AuditModel, network: nn.Module) -> nn.Module:
    """A trainable deep copy. TorchScript round-trips through save/load: its deepcopy gives non-leaf weights."""
    try:
        if isinstance(network, torch.jit.ScriptModule):
            buffer = io.BytesIO()
            torch.jit.save(network, buffer)
            buffer.seek(0)
            clone = torch.jit.load(buffer, map_location=model.device)
        else:
            with torch.no_grad():
                clone = copy.deepcopy(network)
    except Exception as error:
        raise ConfigError(f"cannot copy the {model.info.format} network for training: {error}") from error
    parameters = [p for p in clone.parameters() if p.is_floating_point()]
    if not all(p.is_leaf for p in parameters):
        raise ConfigError(
            f"the copied {model.info.format} network has derived weights and cannot be fine-tuned"
        )
    for parameter in parameters:
        parameter.requires_grad_(True)
    return clone


def set_mode(network: nn.Module, train: bool) -> None:
    """train()/eval(), tolerating exported graphs that refuse mode switches (they keep their mode)."""
    with contextlib.suppress(NotImplementedError, RuntimeError):
        network.train(train)
