"""Adversarial attacks (one per file, registered by name) and the worst-case sweep.

Importing this package imports no torch: ``attacks`` (declared in ``medaudit/registries.py``)
lists and checks names as it is, and imports an attack's file when ``attacks.get`` asks for it;
the names below are imported when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medaudit.lazy import lazy_names
from medaudit.registries import attacks

if TYPE_CHECKING:
    from medaudit.attacks.base import Attack
    from medaudit.attacks.sweep import AttackConfig, AttackResult, run_attacks

__all__ = ["Attack", "AttackConfig", "AttackResult", "attacks", "run_attacks"]

__getattr__ = lazy_names(
    __name__, {"Attack": "base", "AttackConfig": "sweep", "AttackResult": "sweep", "run_attacks": "sweep"}
)
