"""What the intrinsic audit is asked to do (the estimators' settings). Torch-free, so the options
are checked before torch is imported."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from medaudit.errors import ConfigError

Normalizer = Literal["k-1", "k-2"]
OUTPUTS = ("logits", "probabilities")
"""What the Lipschitz estimate differentiates: the model's logits or its probabilities."""


@dataclass(frozen=True)
class DimensionConfig:
    k: int = 20
    normalizer: Normalizer = "k-1"
    rounds: int = 20
    fraction: float = 0.8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 3:
            raise ConfigError(f"--k must be at least 3, got {self.k}")
        if self.normalizer not in ("k-1", "k-2"):
            raise ConfigError(f"--normalizer is k-1 or k-2, got '{self.normalizer}'")
        if not 0 < self.fraction <= 1 or self.rounds < 0:
            raise ConfigError("bootstrap needs 0 < fraction <= 1 and rounds >= 0")


@dataclass(frozen=True)
class LipschitzConfig:
    """Estimator settings; the defaults are the reference's (eps, steps, step size in [0, 1] pixels)."""

    eps: float = 0.01
    steps: int = 10
    step_size: float = 0.003
    batch_size: int = 256
    seed: int = 0
    output: str = "logits"

    def __post_init__(self) -> None:
        if not self.eps > 0:
            raise ConfigError(f"the Lipschitz radius eps must be positive, got {self.eps}")
        if self.steps < 1:
            raise ConfigError(f"the Lipschitz estimate needs at least 1 step, got {self.steps}")
        if not self.step_size > 0:
            raise ConfigError(f"the Lipschitz step size must be positive, got {self.step_size}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.output not in OUTPUTS:
            raise ConfigError(f"unknown Lipschitz output '{self.output}': choose {' or '.join(OUTPUTS)}")


@dataclass(frozen=True)
class IntrinsicConfig:
    dimension: DimensionConfig = field(default_factory=DimensionConfig)
    layer: str | None = None
    batch_size: int = 256
    lipschitz: LipschitzConfig | None = field(default_factory=LipschitzConfig)
    """None skips the model-smoothness estimate."""
    lipschitz_limit: int = 512
    """Images the (gradient-based, ~2 x steps passes each) Lipschitz estimate uses."""

    def to_dict(self) -> dict[str, Any]:
        lip = self.lipschitz
        return {
            "k": self.dimension.k,
            "normalizer": self.dimension.normalizer,
            "bootstrap": {"rounds": self.dimension.rounds, "fraction": self.dimension.fraction},
            "layer": self.layer,
            "lipschitz": None
            if lip is None
            else {
                "eps": lip.eps,
                "steps": lip.steps,
                "step_size": lip.step_size,
                "limit": self.lipschitz_limit,
            },
        }
