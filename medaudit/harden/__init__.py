"""Adversarial hardening of a user's model: PGD-AT, TRADES and IMA fine-tuning of a copy, with
IMA's per-sample margins, resumable checkpoints and export in every format the network allows.

The names below load on first use: ``HardenConfig`` checks the settings before torch is imported."""

from __future__ import annotations

from typing import TYPE_CHECKING

from medaudit.lazy import lazy_names

if TYPE_CHECKING:
    from medaudit.harden.boundary import MarginState, attack_to_boundary, bisect_to_boundary
    from medaudit.harden.config import HardenConfig
    from medaudit.harden.methods import Method
    from medaudit.harden.save import hardened_card, save_hardened
    from medaudit.harden.training import HardenResult, Progress, harden, hardenable_network

__all__ = [
    "HardenConfig",
    "HardenResult",
    "MarginState",
    "Method",
    "Progress",
    "attack_to_boundary",
    "bisect_to_boundary",
    "harden",
    "hardenable_network",
    "hardened_card",
    "save_hardened",
]

__getattr__ = lazy_names(
    __name__,
    {
        "MarginState": "boundary",
        "attack_to_boundary": "boundary",
        "bisect_to_boundary": "boundary",
        "HardenConfig": "config",
        "Method": "methods",
        "hardened_card": "save",
        "save_hardened": "save",
        "HardenResult": "training",
        "Progress": "training",
        "harden": "training",
        "hardenable_network": "training",
    },
)
