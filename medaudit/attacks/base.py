"""What every attack shares: the interface, per-sample losses and projections.

An attack is a frozen dataclass with its hyperparameters; calling it on a batch
returns adversarial images within the budget:

    attack(model, x, y, eps=0.004, norm="linf", generator=g) -> x_adv

``x`` is float [0, 1] N x C x H x W, ``y`` the labels ((N,) or (N, L) for
multi-label). ``eps`` is in [0, 1] pixel units; the model wrapper normalises.
Every returned image satisfies ``||x_adv - x||_p <= eps`` and ``0 <= x_adv <= 1``
exactly, and an attack keeps, per sample, the first iterate that misclassifies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from medaudit.attacks.plan import NORMS
from medaudit.errors import ConfigError, ModelRuntimeError, first_line
from medaudit.models import AuditModel
from medaudit.registries import attacks as attacks  # re-exported: the attack files register with it
from medaudit.task import Task

Eps = float | torch.Tensor  # a budget for the whole batch, or one per sample (N,)


@dataclass(frozen=True)
class Attack:
    """Base class; subclasses implement ``perturb``."""

    name: ClassVar[str] = ""
    needs_gradients: ClassVar[bool] = True
    norms: ClassVar[tuple[str, ...]] = NORMS

    def __call__(
        self,
        model: AuditModel,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: Eps,
        norm: str,
        generator: Random,
    ) -> torch.Tensor:
        if norm not in self.norms:
            raise ConfigError(f"{self.name} does not support norm '{norm}': use {' or '.join(self.norms)}")
        if len(x) == 0 or (not isinstance(eps, torch.Tensor) and eps == 0):
            return x.clone()
        x_adv = self.perturb(model, x, y, eps=eps, norm=norm, generator=generator)
        return project(x, x_adv, eps, norm)

    def perturb(
        self,
        model: AuditModel,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: Eps,
        norm: str,
        generator: Random,
    ) -> torch.Tensor:
        raise NotImplementedError


# ``attacks`` (imported above): declared in medaudit/registries.py, filled by each file's @attacks.register


def seeded_generator(seed: int, *key: int) -> torch.Generator:
    """A generator for one unit of work (e.g. an epoch of training), so its draws do not depend on
    what ran before. Audits of images draw from ``Draws`` instead, one stream per image."""
    state = np.random.SeedSequence([seed, *key]).generate_state(1, np.uint64)[0]
    return torch.Generator(device="cpu").manual_seed(int(state))


_GAMMA = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (numpy wraps uint64 arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class Draws:
    """Random numbers per image: row ``r`` of every draw comes from its own stream, keyed by
    (seed, key, the image's global index, how many draws that image has had), so an image draws the
    same numbers whatever batch, shard or subset it is attacked in, and whatever the other images do.

    An attack draws from ``draws.rows(live)`` for a subset of its rows; the subset shares the
    per-image counts, so each image's k-th draw is the same in every run (``rand``, ``randn``,
    ``integers``: shape ``(rows, *shape)``). Values are computed on the CPU with splitmix64."""

    def __init__(self, seed: int, key: tuple[int, ...], index: np.ndarray | range) -> None:
        state = np.random.SeedSequence([seed, *key]).generate_state(1, np.uint64)[0]
        self._streams = _mix(np.asarray(index, dtype=np.int64).astype(np.uint64) ^ _mix(np.array([state])))
        self._counts = np.zeros(len(self._streams), dtype=np.uint64)
        self._rows = np.arange(len(self._streams))

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self, which: np.ndarray | torch.Tensor) -> Draws:
        """The draws of these rows (positions in this object), sharing their counts."""
        if isinstance(which, torch.Tensor):
            which = which.cpu().numpy()
        sub = object.__new__(Draws)
        sub._streams, sub._counts, sub._rows = self._streams, self._counts, self._rows[which]
        return sub

    def _bits(self, shape: tuple[int, ...]) -> np.ndarray:
        """uint64 (rows, prod(shape)): splitmix64's stream for each row's next draw."""
        size = int(np.prod(shape, dtype=np.int64))
        seeds = _mix(self._streams[self._rows] ^ _mix(self._counts[self._rows] + _GAMMA))
        self._counts[self._rows] += np.uint64(1)
        steps = (np.arange(1, size + 1, dtype=np.uint64) * _GAMMA)[None, :]
        return _mix(seeds[:, None] + steps)

    def _unit(self, shape: tuple[int, ...]) -> np.ndarray:
        """float64 uniform in [0, 1), (rows, prod(shape))."""
        return (self._bits(shape) >> np.uint64(11)).astype(np.float64) * 2.0**-53

    def rand(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """Uniform in [0, 1), (rows, *shape), in ``like``'s dtype and device."""
        return self._out(self._unit(shape), shape, like)

    def randn(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """Standard normal (Box-Muller), (rows, *shape)."""
        size = int(np.prod(shape, dtype=np.int64))
        unit = self._unit((2 * size,))
        radius = np.sqrt(-2.0 * np.log1p(-unit[:, :size]))  # 1 - u in (0, 1]
        return self._out(radius * np.cos(2 * np.pi * unit[:, size:]), shape, like)

    def integers(self, high: int, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """Uniform in {0, ..., high - 1}, int64 (rows, *shape)."""
        values = np.minimum(np.floor(self._unit(shape) * high), high - 1).astype(np.int64)
        return torch.from_numpy(values.reshape(len(self), *shape)).to(device)

    def _out(self, values: np.ndarray, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        tensor = torch.from_numpy(values.reshape(len(self), *shape))
        return tensor.to(device=like.device, dtype=like.dtype)


Random = torch.Generator | Draws
"""Where an attack draws from: ``Draws`` (one stream per image, what audits pass) or a
``torch.Generator`` (one stream for the batch, e.g. adversarial training)."""


def subset(generator: Random, rows: np.ndarray | torch.Tensor) -> Random:
    """The source for a subset of a batch's rows: their own streams, or the batch's generator."""
    return generator.rows(rows) if isinstance(generator, Draws) else generator


def best_of_restarts(
    x: torch.Tensor,
    fooled: torch.Tensor,
    restarts: int,
    run: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
) -> torch.Tensor:
    """Restart loop shared by APGD and Square: each run attacks only the samples no run has
    fooled yet (``run(todo) -> (points, losses, fooled)``); keep a fooling point, else the max-loss one."""
    x_adv = x.clone()
    best_loss = torch.full((len(x),), float("-inf"), device=x.device)
    fooled = fooled.clone()
    for _ in range(restarts):
        todo = (~fooled).nonzero().squeeze(1)
        if len(todo) == 0:
            break
        points, losses, hits = run(todo)
        take = hits | (losses > best_loss[todo])
        x_adv[todo[take]] = points[take]
        best_loss[todo] = torch.maximum(best_loss[todo], losses)
        fooled[todo] = hits
    return x_adv


# ---- per-sample correctness and losses (higher loss = closer to a wrong answer) ----


def is_correct(logits: torch.Tensor, y: torch.Tensor, task: Task | None) -> torch.Tensor:
    """Per-sample correctness; multi-label counts a sample correct only if every label is.

    ``task`` None (a model ``bind_model`` has not set one for) scores as single-label, as here
    and in the losses below every task but multi-label does.

    Non-finite outputs are never correct (argmax would pick a NaN and call it right).
    """
    finite = torch.isfinite(logits).all(dim=1)
    if task is Task.MULTI_LABEL:
        return ((logits > 0).long() == y).all(dim=1) & finite
    return (logits.argmax(dim=1) == y) & finite


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, task: Task | None) -> torch.Tensor:
    """Per-sample CE; per-label BCE summed for multi-label."""
    if task is Task.MULTI_LABEL:
        return F.binary_cross_entropy_with_logits(logits, y.float(), reduction="none").sum(dim=1)
    return F.cross_entropy(logits, y, reduction="none")


def margin(logits: torch.Tensor, y: torch.Tensor, task: Task | None) -> torch.Tensor:
    """CW margin: best wrong logit minus true logit (> 0 means misclassified).

    Multi-label: the largest signed margin over labels (the label closest to flipping).
    """
    if task is Task.MULTI_LABEL:
        return (-(2 * y.float() - 1) * logits).max(dim=1).values
    true = logits.gather(1, y[:, None])[:, 0]
    others = logits.scatter(1, y[:, None], float("-inf"))
    return others.max(dim=1).values - true


def dlr(logits: torch.Tensor, y: torch.Tensor, task: Task | None) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein 2020), scale invariant; needs >= 3 classes."""
    sorted_logits, _ = logits.sort(dim=1, descending=True)
    denominator = sorted_logits[:, 0] - sorted_logits[:, 2] + 1e-12
    return margin(logits, y, task) / denominator


LOSSES = {"ce": cross_entropy, "margin": margin, "dlr": dlr}


# ---- budget geometry ----


def _flat_norm(delta: torch.Tensor) -> torch.Tensor:
    return delta.flatten(1).norm(dim=1).view(-1, *([1] * (delta.ndim - 1)))


def eps_view(eps: Eps, x: torch.Tensor) -> Eps:
    """A per-sample eps tensor (N,) becomes (N, 1, 1, 1); a float stays a float."""
    if isinstance(eps, torch.Tensor):
        return eps.to(x.device, x.dtype).view(-1, *([1] * (x.ndim - 1)))
    return eps


def project(x: torch.Tensor, x_adv: torch.Tensor, eps: Eps, norm: str) -> torch.Tensor:
    """Into the eps-ball around ``x``, then into [0, 1] (which only shrinks the step).

    ``eps`` is a float or a per-sample tensor (N,).
    """
    eps = eps_view(eps, x)
    delta = x_adv - x
    if norm == "linf":
        delta = torch.maximum(torch.minimum(delta, torch.as_tensor(eps)), -torch.as_tensor(eps))
    else:
        length = _flat_norm(delta)
        delta = delta * torch.clamp(torch.as_tensor(eps) / length.clamp_min(1e-12), max=1.0)
    return (x + delta).clamp(0.0, 1.0)


def random_start(x: torch.Tensor, eps: Eps, norm: str, generator: Random) -> torch.Tensor:
    """Uniform in the L-inf ball, or uniform direction and radius in the L2 ball."""
    eps_v = eps_view(eps, x)

    def draw(kind: str, shape: tuple[int, ...]) -> torch.Tensor:
        if isinstance(generator, Draws):
            per_row = shape[1:]
            return generator.rand(per_row, x) if kind == "uniform" else generator.randn(per_row, x)
        sample = torch.rand if kind == "uniform" else torch.randn
        return sample(shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)

    if norm == "linf":
        delta = (2 * draw("uniform", tuple(x.shape)) - 1) * eps_v
    else:
        direction = draw("normal", tuple(x.shape))
        direction = direction / _flat_norm(direction).clamp_min(1e-12)
        radius = draw("uniform", (len(x),)).view(-1, *([1] * (x.ndim - 1)))
        delta = direction * radius * eps_v
    return project(x, x + delta, eps, norm)


def steepest_step(grad: torch.Tensor, step_size: Eps, norm: str) -> torch.Tensor:
    """Sign of the gradient for L-inf, the normalised gradient for L2."""
    step_size = eps_view(step_size, grad)
    if norm == "linf":
        return step_size * grad.sign()
    return step_size * grad / _flat_norm(grad).clamp_min(1e-12)


def loss_and_grad(
    model: AuditModel, x: torch.Tensor, y: torch.Tensor, loss_name: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-sample loss, logits, d loss / d x), one forward and one backward."""
    task = model.task
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        loss = LOSSES[loss_name](logits, y, task)
        # materialize_grads: a network that ignores its input has a zero gradient, not an error
        try:
            (grad,) = torch.autograd.grad(loss.sum(), x, materialize_grads=True)
        except RuntimeError as exc:  # the backward pass runs the user's graph
            raise ModelRuntimeError(
                f"gradients through the model {model.info.path} failed ({first_line(exc)}): "
                "audit it with a black-box attack (--attack square)"
            ) from exc
    return loss.detach(), logits.detach(), grad.detach()
