"""Adversarial hardening of a user's model: PGD-AT, TRADES and IMA fine-tuning of a copy, with
IMA's per-sample margins, resumable checkpoints and export in every format the network allows."""

from medaudit.harden.boundary import MarginState, attack_to_boundary, bisect_to_boundary
from medaudit.harden.config import HardenConfig
from medaudit.harden.methods import Method, methods
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
    "methods",
    "save_hardened",
]
