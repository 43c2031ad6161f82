"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020): score-based black-box.

Random search that only reads the model's logits (``model.predict``, so it runs
on onnxruntime and needs no gradients). Each iteration proposes a change of one
random square window (two for L2) per sample and keeps it if the margin loss
``max_{k != y} z_k - z_y`` grew; a sample stops being queried once misclassified.

* L-inf (Algorithms 1 and 2): start from vertical stripes of width one, each
  stripe's colour uniform in ``{-eps, eps}^c``; a proposal sets an ``h x h``
  window to ``x + eps * rho_c`` with one ``rho_c`` in ``{-1, 1}`` per channel.
* L2 (Algorithm 3): start from a grid of ``h x h`` tiles (about 5 per side), each a
  centred pattern ``eta`` with a random sign per channel, rescaled to norm eps; a
  proposal moves the perturbation mass of window ``W2`` (and any unused budget)
  into window ``W1``, mixed with a fresh ``+-eta``, keeping the norm at eps.
  ``eta`` is the paper's two opposite-signed blocks of concentric squares,
  ``eta^(h1,h2)_{r,s} = sum_{k=0}^{M(r,s)} (n + 1 - k)^-2``, randomly transposed.
* Square side: ``h = round(sqrt(p * H * W))`` with ``p = p_init`` halved at
  iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of a 10 000-query
  run, the iteration rescaled to ``queries`` (so the schedule spans any budget).

Randomness comes from the passed ``Draws`` (one stream per image, so an image's draws do not
depend on the others in its batch) or ``torch.Generator`` only. ``queries`` counts the
initial point; each restart (run only on samples not yet fooled) gets ``queries``
more, and one extra query per image checks the clean prediction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from medaudit.attacks.base import (
    Attack,
    Draws,
    Eps,
    Random,
    attacks,
    best_of_restarts,
    is_correct,
    margin,
    subset,
)
from medaudit.errors import ConfigError
from medaudit.models import AuditModel

HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # iterations of a 10 000-query run
SCHEDULE_LENGTH = 10_000
L2_TILES = 5  # initial L2 grid: about this many tiles per side


def _randint(high: int, size: tuple[int, ...], generator: Random, device: torch.device) -> torch.Tensor:
    """``size[0]`` is the batch: with ``Draws``, one row per image from its own stream."""
    if isinstance(generator, Draws):
        return generator.integers(high, size[1:], device)
    return torch.randint(0, high, size, generator=generator, device=generator.device).to(device)


def _signs(size: tuple[int, ...], generator: Random, like: torch.Tensor) -> torch.Tensor:
    return (_randint(2, size, generator, like.device) * 2 - 1).to(like.dtype)


def _windows(
    top: torch.Tensor, left: torch.Tensor, side: int, channels: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Advanced index of one ``side x side`` window per sample, at (top, left): N x C x side x side."""
    device = top.device
    offsets = torch.arange(side, device=device)
    return (
        torch.arange(len(top), device=device).view(-1, 1, 1, 1),
        torch.arange(channels, device=device).view(1, -1, 1, 1),
        (top[:, None] + offsets).view(-1, 1, side, 1),
        (left[:, None] + offsets).view(-1, 1, 1, side),
    )


def _eta_block(h1: int, h2: int) -> torch.Tensor:
    """``eta^(h1,h2)_{r,s} = sum_{k=0}^{M(r,s)} 1 / (n + 1 - k)^2`` with ``n = floor(h1/2)`` and
    ``M(r,s) = n - max(|r - floor(h1/2) - 1|, |s - floor(h2/2) - 1|)`` (r, s from 1), 0 where M < 0."""
    n = h1 // 2
    r = torch.arange(1, h1 + 1).view(-1, 1)
    s = torch.arange(1, h2 + 1).view(1, -1)
    m = n - torch.maximum((r - n - 1).abs(), (s - h2 // 2 - 1).abs())
    terms = 1.0 / (n + 1 - torch.arange(n + 1, dtype=torch.float64)) ** 2
    cumulative = terms.cumsum(0)
    return torch.where(m >= 0, cumulative[m.clamp(0, n)], torch.zeros((), dtype=torch.float64))


def pattern(side: int) -> torch.Tensor:
    """The paper's L2 window pattern: ``(eta^(h,k), -eta^(h,h-k))``, ``k = floor(h/2)``, unit L2 norm."""
    k = side // 2
    if k == 0:
        eta = torch.ones(side, side, dtype=torch.float64)
    else:
        eta = torch.cat([_eta_block(side, k), -_eta_block(side, side - k)], dim=1)
    return (eta / eta.norm()).float()


def _oriented(base: torch.Tensor, flip: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``base`` or its transpose per entry of ``flip``: flip.shape + base.shape."""
    base = base.to(device=like.device, dtype=like.dtype)
    return torch.where(flip.view(*flip.shape, 1, 1), base.T, base)


def _norms(t: torch.Tensor) -> torch.Tensor:
    """L2 norm over the last two dims."""
    return t.flatten(-2).norm(dim=-1)


@attacks.register("square")
@dataclass(frozen=True)
class Square(Attack):
    """Square Attack: score-based random search (L-inf and L2), no gradients, so black-box models too."""

    name: ClassVar[str] = "square"
    needs_gradients: ClassVar[bool] = False
    queries: int = 1000
    p_init: float = 0.8
    restarts: int = 1

    def __post_init__(self) -> None:
        if self.queries < 1:
            raise ConfigError(f"square: queries must be at least 1, got {self.queries}")
        if not 0.0 < self.p_init <= 1.0:
            raise ConfigError(f"square: p_init must be in (0, 1], got {self.p_init}")
        if self.restarts < 1:
            raise ConfigError(f"square: restarts must be at least 1, got {self.restarts}")

    def fraction(self, iteration: int) -> float:
        """``p`` at this iteration: p_init halved at the paper's iterations, rescaled to ``queries``."""
        scaled = int(iteration / self.queries * SCHEDULE_LENGTH)
        return self.p_init / 2 ** sum(scaled > t for t in HALVINGS)

    def side(self, iteration: int, height: int, width: int, norm: str) -> int:
        """Square side ``round(sqrt(p * H * W))``: at least 1 (3 for L2's pattern), below the image side."""
        side = round(math.sqrt(self.fraction(iteration) * height * width))
        smallest = 3 if norm == "l2" else 1
        largest = max(min(height, width) - 1, 1)
        return max(min(side, largest), min(smallest, largest))

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
        if isinstance(eps, torch.Tensor):
            raise TypeError(f"{self.name} takes one eps for the whole batch, not one per sample")
        logits = model.predict(x)
        fooled = ~is_correct(logits, y, model.task)
        return best_of_restarts(
            x,
            fooled,
            self.restarts,
            lambda todo: self._run(model, x[todo], y[todo], eps, norm, subset(generator, todo)),
        )

    def _run(
        self,
        model: AuditModel,
        x: torch.Tensor,
        y: torch.Tensor,
        eps: float,
        norm: str,
        generator: Random,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One run: (first misclassified point or best point, its margin, misclassified) per sample."""
        task = model.task
        height, width = x.shape[-2:]
        init = self._init_linf if norm == "linf" else self._init_l2
        propose = self._propose_linf if norm == "linf" else self._propose_l2
        current = init(x, eps, generator)
        logits = model.predict(current)
        loss = margin(logits, y, task)
        fooled = ~is_correct(logits, y, task)
        for iteration in range(1, self.queries):
            live = (~fooled).nonzero().squeeze(1)
            if len(live) == 0:
                break
            side = self.side(iteration, height, width, norm)
            candidate = propose(x[live], current[live], eps, side, subset(generator, live))
            changed = (candidate != current[live]).flatten(1).any(dim=1)
            if not changed.any():  # no-op proposals cannot raise the loss: skip their queries
                continue
            asked, candidate = live[changed], candidate[changed]
            logits = model.predict(candidate)
            new_loss = margin(logits, y[asked], task)
            hit = ~is_correct(logits, y[asked], task)
            accept = (new_loss > loss[asked]) | hit
            current[asked[accept]] = candidate[accept]
            loss[asked[accept]] = new_loss[accept]
            fooled[asked[hit]] = True
        return current, loss, fooled

    # ---- L-inf

    @staticmethod
    def _init_linf(x: torch.Tensor, eps: float, generator: Random) -> torch.Tensor:
        """Vertical stripes of width one, each coloured uniformly from {-eps, eps}^c."""
        n, c, _, w = x.shape
        return (x + eps * _signs((n, c, 1, w), generator, x)).clamp(0.0, 1.0)

    @staticmethod
    def _propose_linf(
        x: torch.Tensor, current: torch.Tensor, eps: float, side: int, generator: Random
    ) -> torch.Tensor:
        """Algorithm 2: one window per sample set to x + eps * rho_c (the projection of x_hat + 2 eps rho_c)."""
        n, c, h, w = x.shape
        top = _randint(h - side + 1, (n,), generator, x.device)
        left = _randint(w - side + 1, (n,), generator, x.device)
        index = _windows(top, left, side, c)
        rho = _signs((n, c), generator, x).view(n, c, 1, 1)
        candidate = current.clone()
        candidate[index] = (x[index] + eps * rho).clamp(0.0, 1.0)
        return candidate

    # ---- L2

    @staticmethod
    def _init_l2(x: torch.Tensor, eps: float, generator: Random) -> torch.Tensor:
        """A centred grid of tiles, each ``+-eta`` per channel (random orientation), scaled to norm eps."""
        n, c, h, w = x.shape
        tile = max(min(h, w) // L2_TILES, 1)
        rows, cols = h // tile, w // tile
        signs = _signs((n, c, rows, cols), generator, x)
        flips = _randint(2, (n, 1, rows, cols), generator, x.device).bool()
        tiles = _oriented(pattern(tile), flips, x) * signs[..., None, None]  # n, c, rows, cols, tile, tile
        grid = tiles.permute(0, 1, 2, 4, 3, 5).reshape(n, c, rows * tile, cols * tile)
        delta = torch.zeros_like(x)
        top, left = (h - rows * tile) // 2, (w - cols * tile) // 2
        delta[:, :, top : top + rows * tile, left : left + cols * tile] = grid
        delta = delta * (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).view(-1, 1, 1, 1)
        return (x + delta).clamp(0.0, 1.0)

    @staticmethod
    def _propose_l2(
        x: torch.Tensor, current: torch.Tensor, eps: float, side: int, generator: Random
    ) -> torch.Tensor:
        """Algorithm 3: refill window W1 with +-eta* plus its own direction, using W2's and the unused mass."""
        n, c, h, w = x.shape
        nu = current - x
        top1 = _randint(h - side + 1, (n,), generator, x.device)
        left1 = _randint(w - side + 1, (n,), generator, x.device)
        top2 = _randint(h - side + 1, (n,), generator, x.device)
        left2 = _randint(w - side + 1, (n,), generator, x.device)
        flip = _randint(2, (n,), generator, x.device).bool()
        rho = _signs((n, c), generator, x).view(n, c, 1, 1)
        window1 = _windows(top1, left1, side, c)
        window2 = _windows(top2, left2, side, c)

        unused = (eps**2 - nu.flatten(1).pow(2).sum(dim=1)).clamp_min(0.0)  # n
        eta = _oriented(pattern(side), flip, x)[:, None]  # n, 1, side, side
        inside = nu[window1]
        direction = rho * eta + inside / _norms(inside).clamp_min(1e-12)[..., None, None]
        union = torch.zeros(n, 1, h, w, dtype=torch.bool, device=x.device)
        union[_windows(top1, left1, side, 1)] = True
        union[_windows(top2, left2, side, 1)] = True
        union_mass = (nu.pow(2) * union).flatten(2).sum(dim=2)  # n, c
        available = (union_mass + unused[:, None] / c).sqrt()
        nu = nu.clone()
        nu[window2] = 0.0
        nu[window1] = (
            direction / _norms(direction).clamp_min(1e-12)[..., None, None] * available[..., None, None]
        )
        return (x + nu).clamp(0.0, 1.0)
