"""Model sources (TorchScript, torch.export, state_dict, pickled module, ONNX) -> ``AuditModel``.

The names below load on first use: ``medaudit.models.card`` (what the user says about the input)
is checked before torch is imported."""

from __future__ import annotations

from typing import TYPE_CHECKING

from medaudit.lazy import lazy_names

if TYPE_CHECKING:
    from medaudit.models.bind import bind_model
    from medaudit.models.card import InputSpec
    from medaudit.models.loading import LoadOptions, choose_arch, load_model, resolve_device
    from medaudit.models.wrapper import AuditModel

__all__ = [
    "AuditModel",
    "InputSpec",
    "LoadOptions",
    "bind_model",
    "choose_arch",
    "load_model",
    "resolve_device",
]

__getattr__ = lazy_names(
    __name__,
    {
        "AuditModel": "wrapper",
        "InputSpec": "card",
        "LoadOptions": "loading",
        "bind_model": "bind",
        "choose_arch": "loading",
        "load_model": "loading",
        "resolve_device": "loading",
    },
)
