"""What the nonrobust-feature probe is asked to do: the datasets, the attack budget (Ilyas et al.'s,
scaled to the image size) and the training of the fresh network. Torch-free, so the options are
checked before torch is imported."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from medaudit.errors import ConfigError

KINDS = ("rand", "det")
"""D_rand: a target drawn uniformly from all C classes (it may be the true one); D_det: (y + 1) mod C."""

REFERENCE_DIMS = 3 * 32 * 32
"""CIFAR-10, where Ilyas et al. set the budget below."""
REFERENCE_EPS = 0.5
REFERENCE_STEP = 0.1


def default_budget(channels: int, height: int, width: int) -> tuple[float, float]:
    """Ilyas et al.'s CIFAR-10 L2 budget, eps 0.5 and step 0.1 over d = 3 x 32 x 32 = 3072 pixels,
    scaled to ``d = channels x height x width`` as ``eps = 0.5 * sqrt(d / 3072)`` (and the step
    alike): the L2 norm of a perturbation of the same per-pixel size grows with sqrt(d).
    28 x 28 x 1 gives eps 0.2526 and step 0.0505."""
    scale = math.sqrt(channels * height * width / REFERENCE_DIMS)
    return REFERENCE_EPS * scale, REFERENCE_STEP * scale


STEP_FRACTION = 5
"""With ``eps`` given and no step size: step eps / 5, Ilyas et al.'s 0.1 for 0.5."""


@dataclass(frozen=True)
class NonrobustConfig:
    """Settings of ``nonrobust_usefulness``; budgets are L2 norms in [0, 1] pixel units."""

    kinds: tuple[str, ...] = KINDS
    eps: float | None = None
    """None: Ilyas et al.'s 0.5 scaled to the image size (``default_budget``)."""
    step_size: float | None = None
    """None: the default step scaled alike, or eps / 5 when ``eps`` is given."""
    steps: int = 100
    epochs: int = 10
    train_batch_size: int = 128
    lr: float = 1e-3
    limit: int | None = None
    """Training images used (stratified, seeded); None: the whole training split."""
    control: bool = True
    """Also run the pipeline at eps 0: with the target labels (the sanity control) and with the
    original labels (the clean reference)."""
    seed: int = 0
    batch_size: int = 256
    """Images per attack and evaluation batch."""

    def __post_init__(self) -> None:
        if not self.kinds:
            raise ConfigError("--datasets must name at least one of rand, det")
        for kind in self.kinds:
            if kind not in KINDS:
                raise ConfigError(f"--datasets: unknown dataset '{kind}', use rand or det")
        if len(set(self.kinds)) != len(self.kinds):
            raise ConfigError(f"--datasets names a dataset twice: {', '.join(self.kinds)}")
        if self.eps is not None and not (math.isfinite(self.eps) and self.eps > 0):
            raise ConfigError(f"--nonrobust-eps must be positive, got {self.eps}")
        if self.step_size is not None and not (math.isfinite(self.step_size) and self.step_size > 0):
            raise ConfigError(f"--nonrobust-step must be positive, got {self.step_size}")
        for name, value, least in (
            ("nonrobust-steps", self.steps, 1),
            ("epochs", self.epochs, 1),
            ("train-batch-size", self.train_batch_size, 2),
            ("batch-size", self.batch_size, 1),
        ):
            if value < least:
                raise ConfigError(f"--{name} must be at least {least}, got {value}")
        if self.limit is not None and self.limit < 2:
            raise ConfigError(f"--train-limit must be at least 2, got {self.limit}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"--lr must be positive, got {self.lr}")

    def budget(self, channels: int, height: int, width: int) -> tuple[float, float]:
        """(eps, step size) for images of this shape, defaults resolved."""
        eps, step = default_budget(channels, height, width)
        if self.eps is not None:
            eps, step = self.eps, self.eps / STEP_FRACTION
        return eps, self.step_size if self.step_size is not None else step

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["kinds"] = list(self.kinds)
        return doc
