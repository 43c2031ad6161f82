"""Synthetic confounders (shortcut probes): artifacts a model should ignore but may have learned.

``artifacts`` holds the artifact library (its registry: ``medaudit.registries.artifacts``); probe
statistics and the CLI build on it. The names below load on first use: the settings
(``medaudit.confounders.config``) are checked before torch is imported."""

from __future__ import annotations

from typing import TYPE_CHECKING

from medaudit.lazy import lazy_names

if TYPE_CHECKING:
    from medaudit.confounders.artifacts import apply_artifact, list_artifacts

__all__ = ["apply_artifact", "list_artifacts"]

__getattr__ = lazy_names(__name__, {"apply_artifact": "artifacts", "list_artifacts": "artifacts"})
