"""Adversarial attacks (one per file, registered by name) and the worst-case sweep."""

from medaudit.attacks import apgd, fgsm, pgd, square  # noqa: F401  (registers the attacks)
from medaudit.attacks.base import Attack, attacks
from medaudit.attacks.sweep import AttackConfig, AttackResult, run_attacks

__all__ = ["Attack", "AttackConfig", "AttackResult", "attacks", "run_attacks"]
