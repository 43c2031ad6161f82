"""From what the user typed (``--eps``, ``--attack``, effort flags) to an ``AttackConfig``."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

from medaudit.errors import ConfigError
from medaudit.registries import attacks

if TYPE_CHECKING:  # torch: imported where a config is built, not when a request is checked
    from medaudit.attacks.sweep import AttackConfig
    from medaudit.models import AuditModel

NORMS = ("linf", "l2")
"""The threat models: L-inf and L2 balls in [0, 1] pixel units."""
WHITE_BOX_AUTO = ("apgd-ce", "apgd-dlr", "square")
BLACK_BOX_AUTO = ("square",)
# auto screens the attacks after the first (AttackConfig.probe): each runs first on about this many
# survivors nearest the boundary (per block of RANDOM_BLOCK images, its share) and on the rest only if it
# breaks one
AUTO_PROBE = 64
AUTO_PLAN = (
    f"the default: {', '.join(WHITE_BOX_AUTO)} in turn on the images still robust, each after the first "
    f"tried on about {AUTO_PROBE} nearest the boundary and run in full only if it breaks one; "
    f"{', '.join(BLACK_BOX_AUTO)} alone for a model without gradients"
)
"""What ``--attack auto`` runs, in one line (``medaudit list attacks``)."""


def parse_eps(text: str) -> tuple[float, ...]:
    """'0.004', '0.001,0.002' or '1/255,2/255' -> sorted distinct floats."""
    values = set()
    for part in text.split(","):
        part = part.strip()
        try:
            if "_" in part:  # float() reads '1_0' as 10: a typo, not a budget
                raise ValueError(part)
            numerator, _, denominator = part.partition("/")
            values.add(float(numerator) / float(denominator) if denominator else float(numerator))
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"--eps takes numbers or fractions like 0.004 or 1/255, got '{part}'") from None
    return tuple(sorted(values))


def check_budgets(values: tuple[float, ...], norm: str) -> None:
    """Each budget finite and, for L-inf, within [0, 1] pixel units (checked without torch)."""
    limit = 1.0 if norm == "linf" else math.inf
    for eps in values:
        if not (math.isfinite(eps) and 0 <= eps <= limit):
            raise ConfigError(f"eps {eps} is outside [0, 1] pixel units: use e.g. 0.004 or 1/255")


def requested_names(requested: str) -> list[str]:
    """The attacks the user listed ('auto' stays as it is), each known and listed once."""
    names = [n.strip() for n in requested.split(",") if n.strip()]
    if not names:
        raise ConfigError("--attack is empty: give auto or a comma list of attacks")
    if names != ["auto"]:
        for name in names:
            attacks.check(name)  # unknown names fail here, with the close matches (no import)
    if len(set(names)) != len(names):
        raise ConfigError("--attack lists an attack twice")
    return names


def plan_attacks(requested: str, model: AuditModel) -> tuple[tuple[str, ...], list[str]]:
    """Expand 'auto' for this model; refuse white-box attacks on a black-box model."""
    notes = []
    names = requested_names(requested)
    if names == ["auto"]:
        if model.has_gradients:
            names = list(WHITE_BOX_AUTO)
        else:
            names = list(BLACK_BOX_AUTO)
            notes.append(
                "the model is black-box only (no verified gradients): auto uses the square attack alone"
            )
    for name in names:
        attack = attacks.get(name)
        if attack.needs_gradients and not model.has_gradients:
            raise ConfigError(f"{name} needs gradients but this model is black-box only: use --attack square")
    return tuple(names), notes


def attack_params(names: tuple[str, ...], **effort: Any) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Give each attack the effort flags it has a field for (steps, restarts, step_size, queries);
    name the flags no chosen attack uses, so nothing is silently ignored."""
    params: dict[str, dict[str, Any]] = {}
    used: set[str] = set()
    for name in names:
        fields = {f.name for f in dataclasses.fields(attacks.get(name))}
        chosen = {k: v for k, v in effort.items() if v is not None and k in fields}
        used |= set(chosen)
        if chosen:
            params[name] = chosen
    unused = [
        f"--{k.replace('_', '-')} is not used by {', '.join(names)}"
        for k, v in effort.items()
        if v is not None and k not in used
    ]
    return params, unused


def _config(
    names: tuple[str, ...],
    eps: str,
    norm: str,
    batch_size: int,
    seed: int,
    effort: dict[str, Any],
    auto: bool = False,
) -> tuple[AttackConfig, list[str]]:
    """``auto``: APGD gives up on samples it cannot reach and later attacks are screened
    (both recorded in the config: ``params[...]["give_up"]`` and ``probe``)."""
    from medaudit.attacks.sweep import AttackConfig

    params, unused = attack_params(names, **effort)
    if auto:
        for name in names:
            if "give_up" in {f.name for f in dataclasses.fields(attacks.get(name))}:
                params[name] = {**params.get(name, {}), "give_up": True}
    config = AttackConfig(
        attacks=names,
        eps=parse_eps(eps),
        norm=norm,
        params=params,
        batch_size=batch_size,
        seed=seed,
        probe=AUTO_PROBE if auto and len(names) > 1 else 0,
    )
    for name in names:
        config.build(name)  # hyperparameters are validated at construction
    return config, unused


def check_request(requested: str, eps: str, norm: str, batch_size: int, seed: int, **effort: Any) -> None:
    """Everything ``build_config`` checks that does not depend on the model, before it is loaded
    ('auto' is checked as the white-box plan, the one that takes every effort flag)."""
    auto = requested_names(requested) == ["auto"]
    check_budgets(parse_eps(eps), norm)  # these fail before any attack (or torch) is imported
    _config(
        tuple(WHITE_BOX_AUTO) if auto else tuple(requested_names(requested)),
        eps,
        norm,
        batch_size,
        seed,
        effort,
        auto,
    )


def build_config(
    requested: str, model: AuditModel, eps: str, norm: str, batch_size: int, seed: int, **effort: Any
) -> tuple[AttackConfig, list[str]]:
    names, notes = plan_attacks(requested, model)
    auto = requested_names(requested) == ["auto"]
    config, unused = _config(names, eps, norm, batch_size, seed, effort, auto)
    if config.probe:
        notes.append(
            f"auto: {names[0]} stops on samples it cannot reach; {', '.join(names[1:])} run first on the "
            f"{config.probe} survivors nearest the boundary and on the rest only where that breaks one "
            f"(which ran: 'stages' in each worst-case record; the full plan: --attack {','.join(names)})"
        )
    return config, notes + unused
