"""Adversarial attacks (one per file, registered by name) and the worst-case sweep.

Importing this package imports no torch: ``attacks`` (declared in ``medaudit/registries.py``)
lists and checks names as it is, and imports an attack's file when ``attacks.get`` asks for it;
the names below are imported when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from medaudit.registries import attacks

if TYPE_CHECKING:
    from medaudit.attacks.base import Attack
    from medaudit.attacks.sweep import AttackConfig, AttackResult, run_attacks

_LAZY = {
    "Attack": "medaudit.attacks.base",
    "AttackConfig": "medaudit.attacks.sweep",
    "AttackResult": "medaudit.attacks.sweep",
    "run_attacks": "medaudit.attacks.sweep",
}

__all__ = ["Attack", "AttackConfig", "AttackResult", "attacks", "run_attacks"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
