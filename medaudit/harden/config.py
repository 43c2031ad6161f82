"""``HardenConfig``: every setting of one hardening run, so a hardened model is reproducible from its card."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from medaudit.attacks.plan import NORMS
from medaudit.errors import ConfigError
from medaudit.registries import methods


@dataclass(frozen=True)
class MethodRules:
    """What a hardening method takes besides the shared settings, checked by ``HardenConfig``
    before torch is imported (each method class in ``harden/methods.py`` names its rules)."""

    default_beta: float | None = None
    """None: the method takes no --beta."""
    beta_low: float = 0.0
    beta_high: float = math.inf
    beta_low_open: bool = False
    """True: beta must be above ``beta_low``, not equal to it."""
    uses_margins: bool = False
    """IMA's per-sample margins: --margin-step and --margin-max apply."""

    def check_beta(self, method: str, beta: float | None) -> None:
        if self.default_beta is None:
            if beta is not None:
                raise ConfigError(f"--beta is not a setting of {method}")
            return
        above = beta is not None and (beta > self.beta_low if self.beta_low_open else beta >= self.beta_low)
        if not (above and beta is not None and beta <= self.beta_high):
            wanted = (
                "be positive" if self.beta_low_open else f"lie in [{self.beta_low:g}, {self.beta_high:g}]"
            )
            raise ConfigError(f"--beta of {method} must {wanted}, got {beta}")


METHOD_RULES = {
    "pgd-at": MethodRules(),
    "trades": MethodRules(default_beta=6.0, beta_low_open=True),
    "ima": MethodRules(default_beta=0.5, beta_high=1.0, uses_margins=True),
}
"""The built-in methods' rules; a method registered elsewhere gives its class's ``rules``."""


@dataclass(frozen=True)
class HardenConfig:
    """Settings of ``harden``; ``None`` fields are resolved per method in ``__post_init__``.

    Budgets are in [0, 1] pixel units (the ``AuditModel`` wrapper normalises after the attack).
    """

    method: str = "pgd-at"
    eps: float = 2 / 255
    """PGD-AT / TRADES: the training budget. IMA: sets the margin defaults below."""
    norm: str = "linf"
    epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-3
    """AdamW learning rate (constant); 0 runs the method without changing the weights."""
    weight_decay: float = 5e-4
    steps: int = 5
    """Inner attack steps per batch (PGD-AT, TRADES: step 2.5 eps / steps; IMA: step 4 margin / steps)."""
    beta: float | None = None
    """TRADES: weight of the KL term (default 6). IMA: weight of the adversarial loss (default 0.5)."""
    margin_step: float | None = None
    """IMA: the expansion step (the paper's Delta, also every margin's start); default eps / 2."""
    margin_max: float | None = None
    """IMA: the largest margin; default 2 eps."""
    bisection_steps: int = 10
    """IMA: bisection steps that move an adversarial example onto the decision boundary."""
    limit: int | None = None
    """Training images used (stratified, seeded); None: the whole training split."""
    margin_samples: int = 256
    """Training images whose minimal perturbation is measured before and after (0: skip)."""
    seed: int = 0
    checkpoint: str | None = None
    """Written after every epoch; a run whose settings match resumes from it."""

    def __post_init__(self) -> None:
        methods.check(self.method)  # ConfigError naming the choices, without importing torch
        if self.norm not in NORMS:
            raise ConfigError(f"--norm must be linf or l2, got '{self.norm}'")
        if not (math.isfinite(self.eps) and self.eps > 0) or (self.norm == "linf" and self.eps > 1):
            raise ConfigError(f"--eps {self.eps} must be positive and in [0, 1] pixel units, e.g. 2/255")
        for name, value, least in (
            ("epochs", self.epochs, 1),
            ("batch-size", self.batch_size, 2),
            ("steps", self.steps, 1),
            ("bisection-steps", self.bisection_steps, 1),
            ("margin-samples", self.margin_samples, 0),
        ):
            if value < least:
                raise ConfigError(f"--{name} must be at least {least}, got {value}")
        if self.limit is not None and self.limit < 2:
            raise ConfigError(f"--limit must be at least 2, got {self.limit}")
        if not (math.isfinite(self.lr) and self.lr >= 0):
            raise ConfigError(f"--lr must be zero or positive, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"--weight-decay must be zero or positive, got {self.weight_decay}")
        rules = METHOD_RULES.get(self.method) or methods.get(self.method).rules
        if self.beta is None:
            object.__setattr__(self, "beta", rules.default_beta)
        rules.check_beta(self.method, self.beta)
        if rules.uses_margins:
            if self.margin_step is None:
                object.__setattr__(self, "margin_step", self.eps / 2)
            if self.margin_max is None:
                object.__setattr__(self, "margin_max", 2 * self.eps)
            step, most = float(self.margin_step or 0), float(self.margin_max or 0)
            if not (math.isfinite(step) and step > 0):
                raise ConfigError(f"--margin-step must be positive, got {self.margin_step}")
            if not (math.isfinite(most) and most >= step):
                raise ConfigError(
                    f"--margin-max must be at least --margin-step ({step}), got {self.margin_max}"
                )
        elif self.margin_step is not None or self.margin_max is not None:
            raise ConfigError(f"--margin-step and --margin-max are IMA settings, not {self.method}'s")

    @classmethod
    def for_data(cls, n_train: int, **settings: Any) -> HardenConfig:
        """Defaults scaled to the training set: more epochs and smaller batches for small sets
        (a few hundred images need more passes to move a pretrained model), fewer for large ones."""
        if n_train < 2000:
            defaults = {"epochs": 10, "batch_size": 64}
        elif n_train < 20000:
            defaults = {"epochs": 5, "batch_size": 128}
        else:
            defaults = {"epochs": 3, "batch_size": 256}
        return cls(**{**defaults, **settings})

    def matching_key(self) -> dict[str, Any]:
        """The settings a checkpoint must share to be resumed (all but where it is written)."""
        return {k: v for k, v in self.to_dict().items() if k != "checkpoint"}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
