"""Intrinsic dimension: Levina-Bickel MLE and TwoNN on exact nearest neighbours.

- MLE (Levina & Bickel 2004) with MacKay-Ghahramani pooling: per point
  inv_i = (1/c) sum_{j<k} log(T_k(x_i) / T_j(x_i)), d = 1 / mean_i inv_i, with
  c = k-1 (the paper's formula, scikit-dimension's default) or c = k-2 (Pope et
  al.'s code, which Konz & Mazurowski used: 19/18 = 5.6 % lower at k = 20).
- TwoNN (Facco et al. 2017): mu_i = T_2/T_1, the largest 10 % discarded,
  least squares through the origin of -log(1 - i/N), i = 1.., on log mu
  (scikit-dimension 0.5's recipe).

Exact duplicates are removed first (a zero distance breaks both). The 95 %
interval is estimate +- 1.96 standard errors from the delete-d jackknife:
``rounds`` random subsamples of ``fraction`` m/n of the points, variance
m/(n-m) x the variance of their estimates. (Percentiles of the subsample
estimates themselves would be off-centre: both estimators drift with the
number of points, and overlapping subsamples vary less than fresh samples.)
The neighbours of a subsample are read off each point's longer full neighbour
list, so a round costs no new distance computation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medaudit.errors import ConfigError
from medaudit.intrinsic.config import DimensionConfig, Normalizer
from medaudit.intrinsic.neighbours import knn, unique_rows

TWONN_DISCARD = 0.1
NEAR_TWIN_RATIO = 4.0
"""A point whose second neighbour is this much farther than its first has a near-twin (TwoNN reads
only these two distances, so many near-twins pull it far below MLE)."""


def mle_inverse(dists: torch.Tensor, k: int, normalizer: Normalizer) -> torch.Tensor:
    """Per-point inverse dimension from the k nearest distances (nearest first)."""
    c = {"k-1": k - 1, "k-2": k - 2}[normalizer]
    logs = torch.log(dists[:, k - 1 : k] / dists[:, : k - 1])
    return logs.sum(dim=1) / c


def mle(dists: torch.Tensor, k: int = 20, normalizer: Normalizer = "k-1") -> float:
    """Levina-Bickel MLE pooled as the inverse of the mean inverse."""
    return float(1.0 / mle_inverse(dists, k, normalizer).mean())


def twonn(dists: torch.Tensor, discard: float = TWONN_DISCARD) -> float:
    """TwoNN slope from the first two neighbour distances."""
    n = len(dists)
    mu = torch.sort(dists[:, 1] / dists[:, 0]).values
    keep = int(n * (1 - discard))
    x = torch.log(mu[:keep])
    y = -torch.log(1 - torch.arange(1, keep + 1, dtype=torch.float64) / n)  # F_i = i / N, i from 1
    return float((x * y).sum() / (x * x).sum())


def _subsample_neighbours(
    idx: torch.Tensor, dists: torch.Tensor, members: np.ndarray, k: int
) -> torch.Tensor:
    """Each member's k nearest other members, from its full neighbour list (nearest first)."""
    inside = torch.zeros(len(idx), dtype=torch.bool)
    inside[torch.as_tensor(members)] = True
    rows_idx, rows_d = idx[members], dists[members]
    alive = inside[rows_idx]
    if bool((alive.sum(dim=1) < k).any()):
        raise ValueError("neighbour list too short for this subsample")
    order = torch.argsort((~alive).to(torch.int8), dim=1, stable=True)[:, :k]
    return rows_d.gather(1, order)


def _jackknife_interval(value: float, estimates: list[float], size: int, n: int) -> list[float] | None:
    """value +- 1.96 delete-d jackknife standard errors (d = n - size)."""
    if len(estimates) < 2:
        return None
    se = float(np.sqrt(size / (n - size) * np.var(estimates, ddof=1)))
    return [value - 1.96 * se, value + 1.96 * se]


def estimate(vectors: torch.Tensor, config: DimensionConfig) -> dict[str, Any]:
    """MLE and TwoNN with subsampling intervals on N x D vectors (duplicates removed)."""
    first, _ = unique_rows(vectors)
    x = vectors[torch.as_tensor(np.sort(first))]
    n = len(x)
    if n <= config.k + 1:
        raise ConfigError(f"{n} distinct points: need more than k + 1 = {config.k + 1} for the dimension")
    dists, idx = knn(x, config.k, extra=config.k + 24)  # room for the subsamples' neighbours
    result: dict[str, Any] = {
        "mle": mle(dists, config.k, config.normalizer),
        "twonn": twonn(dists),
        "near_twin_fraction": float((dists[:, 1] > NEAR_TWIN_RATIO * dists[:, 0]).double().mean()),
        "n": n,
        "duplicates_removed": len(vectors) - n,
        "dims": x.shape[1],
        "k": config.k,
        "normalizer": config.normalizer,
    }
    rng = np.random.default_rng(config.seed)
    size = round(config.fraction * n)
    samples: dict[str, list[float]] = {"mle": [], "twonn": []}
    if config.rounds and size > config.k + 1 and size < n:
        for _ in range(config.rounds):
            members = np.sort(rng.choice(n, size=size, replace=False))
            try:
                sub = _subsample_neighbours(idx, dists, members, config.k)
            except ValueError:
                sub, _ = knn(x[torch.as_tensor(members)], config.k)
            samples["mle"].append(mle(sub, config.k, config.normalizer))
            samples["twonn"].append(twonn(sub))
    for name, values in samples.items():
        result[f"{name}_interval"] = _jackknife_interval(result[name], values, size, n)
    result["interval"] = {"rounds": len(samples["mle"]), "fraction": config.fraction, "seed": config.seed}
    result["nn_distances"] = dists[:, 0]
    return result
