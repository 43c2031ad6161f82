"""Exact nearest neighbours in chunks: float32 matrix products find candidates,
float64 differences measure them.

``|a|^2 + |b|^2 - 2 a.b`` in float32 loses the small distances that matter most
here (near-duplicates decide label sharpness; MLE takes logs of distance
ratios), so each row's few best float32 candidates (plus a margin) are
re-measured exactly from the vectors in float64 and re-ranked. Memory is
bounded by ``chunk`` x N.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

CHUNK = 1024
MARGIN = 4
"""Extra float32 candidates per row, so float32 rounding cannot drop a true neighbour."""
EXACT_ROWS = 256


def flatten(images: torch.Tensor) -> torch.Tensor:
    """N x C x H x W (uint8 or float in [0,1]) -> N x D float64 intensities in [0,1] (8-bit levels exact)."""
    x = images.reshape(len(images), -1)
    return x.double() / 255 if x.dtype == torch.uint8 else x.double()


def unique_rows(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Exact duplicates: (first row of each distinct value, indexed by value id; value id of each row)."""
    _, inverse = np.unique(x.numpy(), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    first = np.full(inverse.max() + 1, len(inverse), dtype=np.int64)
    np.minimum.at(first, inverse, np.arange(len(inverse)))
    return first, inverse


def _row_blocks(x: torch.Tensor, chunk: int) -> Iterator[tuple[int, torch.Tensor]]:
    """Approximate (float32) squared distances from each chunk of rows to every row, self = inf."""
    norms = (x * x).sum(dim=1)
    columns = x.T.contiguous()
    for start in range(0, len(x), chunk):
        rows = x[start : start + chunk]
        block = torch.addmm(norms[None, :], rows, columns, alpha=-2).add_(norms[start : start + chunk, None])
        block[torch.arange(len(block)), torch.arange(start, start + len(block))] = float("inf")
        yield start, block


def _exact(x64: torch.Tensor, rows: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """float64 distances from x64[rows[i]] to x64[candidates[i, j]] (direct differences, fused)."""
    out = []
    for start in range(0, len(rows), EXACT_ROWS):
        anchor = x64[rows[start : start + EXACT_ROWS]][:, None, :]
        others = x64[candidates[start : start + EXACT_ROWS]]
        out.append(torch.cdist(anchor, others, compute_mode="donot_use_mm_for_euclid_dist")[:, 0])
    return torch.cat(out)


def _best(
    x64: torch.Tensor, rows: torch.Tensor, block: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k exactly nearest among each row's k + MARGIN float32 candidates (inf where too few)."""
    width = min(k + MARGIN, block.shape[1])
    approx, candidates = block.topk(width, dim=1, largest=False)
    exact = _exact(x64, rows, candidates).masked_fill_(torch.isinf(approx), float("inf"))
    order = exact.argsort(dim=1, stable=True)[:, :k]
    return exact.gather(1, order), candidates.gather(1, order)


def knn(x: torch.Tensor, k: int, chunk: int = CHUNK, extra: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances (float64) and indices of each row's k nearest other rows, nearest first.

    ``extra`` further neighbours follow, measured in float32 only (for
    subsampling intervals, where 1e-6 relative error does not matter).
    """
    n = len(x)
    if not 1 <= k < n:
        raise ValueError(f"k must be in 1..{n - 1}, got {k}")
    extra = min(extra, n - 1 - k)
    x64 = x.double()
    x = x.float()
    dists, idx = [], []
    for start, block in _row_blocks(x, chunk):
        d, i = _best(x64, torch.arange(start, start + len(block)), block, k)
        if extra:
            block.scatter_(1, i, float("inf"))  # the exact ones, out of the way
            far_d, far_i = block.topk(extra, dim=1, largest=False)
            d = torch.cat([d, far_d.clamp_min(0).double().sqrt()], dim=1)
            i = torch.cat([i, far_i], dim=1)
        dists.append(d)
        idx.append(i)
    return torch.cat(dists), torch.cat(idx)


def nearest_other_label(
    x: torch.Tensor, groups: torch.Tensor, chunk: int = CHUNK
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row: the nearest row with a different label group and the nearest with the same one.

    Returns (cross distance, cross index, same distance, same index), float64;
    inf and -1 where no such row exists.
    """
    x64 = x.double()
    x = x.float()
    n = len(x)
    out = {}
    for name in ("cross", "same"):
        out[name] = (
            torch.full((n,), float("inf"), dtype=torch.float64),
            torch.full((n,), -1, dtype=torch.long),
        )
    for start, block in _row_blocks(x, chunk):
        rows = torch.arange(start, start + len(block))
        same = groups[rows, None] == groups[None, :]
        for name, mask in (("cross", same), ("same", ~same)):
            d, i = _best(x64, rows, block.masked_fill(mask, float("inf")), 1)
            out[name][0][rows] = d[:, 0]
            out[name][1][rows] = torch.where(torch.isfinite(d[:, 0]), i[:, 0], -1)
    return out["cross"][0], out["cross"][1], out["same"][0], out["same"][1]
