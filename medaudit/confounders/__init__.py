"""Synthetic confounders (shortcut probes): artifacts a model should ignore but may have learned.

``artifacts`` holds the artifact library; probe statistics and the CLI build on it.
"""

from medaudit.confounders.artifacts import apply_artifact, artifacts, list_artifacts

__all__ = ["apply_artifact", "artifacts", "list_artifacts"]
