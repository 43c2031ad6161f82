"""MedMNIST-C corruptions (batched, seeded per image) and the shift benchmark."""

from medaudit.shift import blur, color, digital, marks, noise  # noqa: F401  (registers the corruptions)
from medaudit.shift.corrupt import corrupt, corruptions

__all__ = ["corrupt", "corruptions"]
