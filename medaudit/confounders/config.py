"""What the confounder audits are asked to do: the probe's, the fine-tuning test's and the discovery
search's settings. Torch-free, so the options are checked before torch is imported; an artifact's
own options (from an audit file) are checked by applying it once, which does import it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from medaudit.errors import ConfigError
from medaudit.options import whole_number
from medaudit.registries import artifacts

CORNERS: tuple[str, ...] = ("top-left", "top-right", "bottom-left", "bottom-right", "centre")
Cell = tuple[str, float, str | None]
"""(artifact, strength, position or None)."""
DEFAULT_ARTIFACTS: tuple[str, ...] = ("tag", "patch", "border", "ruler", "lowpass", "dose_noise")
DEFAULT_STRENGTHS: tuple[float, ...] = (0.25, 0.5, 1.0)
POSITION_OPTION = "corner"
"""Artifacts with this keyword option are probed at every position."""
DEFAULT_FRACTIONS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.5, 0.8, 1.0)


def is_positional(name: str) -> bool:
    """Whether the artifact is placed at a corner (so its position is probed)."""
    return POSITION_OPTION in artifacts.get(name).options


def check_bootstrap(bootstrap: int, confidence: float) -> None:
    """The interval settings the probe and the fine-tuning share."""
    if not whole_number(bootstrap, 10):
        raise ConfigError(f"bootstrap must be a whole number of at least 10, got {bootstrap!r}")
    if not 0.5 <= confidence < 1:
        raise ConfigError(f"confidence must lie in [0.5, 1), got {confidence}")


@dataclass(frozen=True)
class ProbeConfig:
    artifacts: tuple[str, ...] = DEFAULT_ARTIFACTS
    strengths: tuple[float, ...] = DEFAULT_STRENGTHS
    positions: tuple[str, ...] = CORNERS
    """Positions (the ``corner`` option) for tag, patch and stamp; ignored by the others."""
    seed: int = 0
    batch_size: int = 256
    positive_class: int | None = None
    """Class whose negatives get the artifact in the reversed test (default: the last class)."""
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Extra keyword options per artifact (e.g. ``{"stamp": {"image": path}}``)."""
    bootstrap: int = 1000
    """Bootstrap resamples of the images for the intervals of the calibrated effects."""
    confidence: float = 0.95
    min_effect: float = 0.1
    """Smallest effect beyond the control (probability or AUC) that makes a shortcut: smaller ones,
    even when certain, are too small to act on."""

    def __post_init__(self) -> None:
        check_bootstrap(self.bootstrap, self.confidence)
        if not 0 <= self.min_effect < 1:
            raise ConfigError(f"min_effect must lie in [0, 1), got {self.min_effect}")
        if not self.artifacts:
            raise ConfigError("no artifacts to probe")
        if len(set(self.artifacts)) != len(self.artifacts):
            raise ConfigError(f"artifacts listed twice: {list(self.artifacts)}")
        if not self.strengths:
            raise ConfigError("no strengths to probe")
        bad = [s for s in self.strengths if not 0 < s <= 1]
        if bad:
            raise ConfigError(f"strengths must lie in (0, 1], got {bad}")
        positions = tuple("centre" if p == "center" else p for p in self.positions)
        unknown = [p for p in positions if p not in CORNERS]
        if unknown or not positions:
            raise ConfigError(f"unknown position {unknown or '(none)'}: choose from {', '.join(CORNERS)}")
        object.__setattr__(self, "positions", tuple(dict.fromkeys(positions)))
        object.__setattr__(self, "strengths", tuple(sorted(set(self.strengths))))
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        for name in self.artifacts:
            artifacts.check(name)  # unknown name -> ConfigError with suggestions, without importing it
        if self.options:  # an artifact's own options are checked by applying it once
            import torch

            from medaudit.confounders.artifacts import apply_artifact

            probe = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
            for name in self.artifacts:
                for position in self.positions_of(name):
                    apply_artifact(probe, name, 0.0, **self.options_of(name, position))

    def positions_of(self, name: str) -> tuple[str | None, ...]:
        return self.positions if is_positional(name) else (None,)

    def options_of(self, name: str, position: str | None) -> dict[str, Any]:
        extra = dict(self.options.get(name, {}))
        if position is not None:
            extra[POSITION_OPTION] = position
        return extra

    @property
    def cells(self) -> list[Cell]:
        return [
            (name, s, position)
            for name in self.artifacts
            for s in self.strengths
            for position in self.positions_of(name)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifacts": list(self.artifacts),
            "strengths": list(self.strengths),
            "positions": list(self.positions),
            "seed": self.seed,
            "batch_size": self.batch_size,
            "positive_class": self.positive_class,
            "options": {k: {o: str(v) for o, v in opts.items()} for k, opts in self.options.items()},
            "bootstrap": self.bootstrap,
            "confidence": self.confidence,
            "min_effect": self.min_effect,
        }


@dataclass(frozen=True)
class FinetuneConfig:
    artifact: str = "tag"
    strength: float = 1.0
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    epochs: int = 3
    lr: float = 1e-3  # 1e-4 barely moves a trained model in a few epochs (sample model: no change)
    batch_size: int = 64
    limit: int | None = 2000
    """Training images used (stratified, seeded); None: the whole training split."""
    seed: int = 0
    positive_class: int | None = None
    """Class whose training images get the artifact (default: the last class)."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Extra keyword options of the artifact (e.g. ``{"corner": "top-right"}``)."""
    bootstrap: int = 1000
    """Resamples of the test images for the intervals of the o.o.d. AUC and its drop."""
    confidence: float = 0.95

    def __post_init__(self) -> None:
        check_bootstrap(self.bootstrap, self.confidence)
        if self.artifact not in artifacts:
            raise ConfigError(f"unknown artifact '{self.artifact}': see `medaudit confounders --list`")
        if not 0 < self.strength <= 1:
            raise ConfigError(f"strength must lie in (0, 1], got {self.strength}")
        if not self.fractions:
            raise ConfigError("no fractions to fine-tune with")
        bad = [p for p in self.fractions if not 0 <= p <= 1]
        if bad:
            raise ConfigError(f"fractions must lie in [0, 1], got {bad}")
        if len(set(self.fractions)) != len(self.fractions):
            raise ConfigError(f"fractions listed twice: {list(self.fractions)}")
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be at least 1, got {self.epochs}")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 2:
            raise ConfigError(f"--train-limit must be at least 2, got {self.limit}")

    def n_train(self, available: int) -> int:
        """Training images actually used out of ``available``."""
        return available if self.limit is None else min(self.limit, available)

    def total_work(self, n_train: int, n_test: int) -> int:
        """Progress units of a run: images trained on and images predicted."""
        return len(self.fractions) * (self.epochs * n_train + 2 * n_test)

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "strength": self.strength,
            "fractions": list(self.fractions),
            "epochs": self.epochs,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "train_limit": self.limit,
            "seed": self.seed,
            "positive_class": self.positive_class,
            "options": dict(self.options),
            "bootstrap": self.bootstrap,
            "confidence": self.confidence,
        }


@dataclass(frozen=True)
class DiscoveryConfig:
    grid: int = 3
    """Regions per side."""
    patch: float = 0.2
    """Patch side as a fraction of the image width."""
    steps: int = 20
    """Optimiser steps (white-box) or random-search candidates (black-box) per region and class."""
    n_fit: int = 64
    """Images the patch is fitted on; the flip rate is measured on up to ``n_eval`` others."""
    n_eval: int = 256
    min_flip_rate: float = 0.5
    margin: float = 0.3
    seed: int = 0
    batch_size: int = 256

    def __post_init__(self) -> None:
        if not whole_number(self.grid, 1) or self.grid > 8:
            raise ConfigError(f"grid must be a whole number in 1..8, got {self.grid!r}")
        if not 0 < self.patch <= 0.5:
            raise ConfigError(f"patch must be a fraction of the width in (0, 0.5], got {self.patch}")
        for name in ("steps", "n_fit", "n_eval", "batch_size"):
            value = getattr(self, name)
            if not whole_number(value, 1):
                raise ConfigError(f"{name} must be a whole number of at least 1, got {value!r}")
        if not 0 < self.min_flip_rate <= 1:
            raise ConfigError(f"min_flip_rate must lie in (0, 1], got {self.min_flip_rate}")
        if not 0 <= self.margin < 1:
            raise ConfigError(f"margin must lie in [0, 1), got {self.margin}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "grid": self.grid,
            "patch": self.patch,
            "steps": self.steps,
            "n_fit": self.n_fit,
            "n_eval": self.n_eval,
            "min_flip_rate": self.min_flip_rate,
            "margin": self.margin,
            "seed": self.seed,
        }
