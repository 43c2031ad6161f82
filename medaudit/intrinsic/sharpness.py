"""Label sharpness K_F (Konz & Mazurowski, ICLR 2024): how close differently-labelled images get.

K_F = max over pairs j, k of |y_j - y_k| / ||x_j - x_k||_2 on the flattened
images; for binary and multi-class labels the numerator is the indicator of
differing labels (multi-label: of differing label vectors), so

    K_F = 1 / min over cross-label pairs of ||x_j - x_k||,

the reciprocal of the closest cross-label pair. Computed exactly over all pairs
(not the 2,000 random pairs, nor the inverted same-label numerator, of the
reference code; see ../shared/reference/intrinsic.md §1.3). Being a maximum,
one mislabelled near-duplicate decides it, so the per-sample sharpness
s_i = 1 / (distance from i to its nearest other-label image) is summarised
by quantiles too. Exact duplicates are counted first; a duplicate pair with
different labels would make K_F infinite, so those pairs are reported and K_F
is computed over the remaining images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medaudit.intrinsic.neighbours import flatten, nearest_other_label, unique_rows

QUANTILES = (0.5, 0.9, 0.99)
CLOSEST_PAIRS = 5


def label_groups(labels: torch.Tensor) -> torch.Tensor:
    """One integer per distinct label (a label vector for multi-label data)."""
    if labels.ndim == 1:
        return labels.long()
    _, inverse = torch.unique(labels, dim=0, return_inverse=True)
    return inverse


@dataclass(frozen=True)
class SharpnessResult:
    n: int
    dims: int
    per_sample: torch.Tensor
    """s_i = 1 / nearest other-label distance (0 where a sample's label is the only one present)."""
    cross_distance: torch.Tensor
    cross_index: torch.Tensor
    same_distance: torch.Tensor
    exact_duplicates: int
    cross_label_duplicates: list[tuple[int, int]]
    kept: np.ndarray
    """Indices (into the audited data) of the images the distances are over."""

    @property
    def k_f(self) -> float:
        return float(self.per_sample.max()) if len(self.per_sample) else float("nan")

    def closest_pairs(self) -> list[dict[str, Any]]:
        """The closest cross-label pairs (each pair once), as indices of the audited data."""
        order = torch.argsort(self.cross_distance, stable=True)
        pairs, seen = [], set()
        for i in order.tolist():
            j = int(self.cross_index[i])
            if j < 0 or not np.isfinite(float(self.cross_distance[i])):
                break
            key = (min(i, j), max(i, j))
            if key in seen:
                continue
            seen.add(key)
            pairs.append(
                {
                    "a": int(self.kept[key[0]]),
                    "b": int(self.kept[key[1]]),
                    "distance": float(self.cross_distance[i]),
                }
            )
            if len(pairs) == CLOSEST_PAIRS:
                break
        return pairs

    def to_dict(self) -> dict[str, Any]:
        finite = self.cross_distance[torch.isfinite(self.cross_distance)]
        ratio = self.cross_distance / self.same_distance
        ratio = ratio[torch.isfinite(ratio)]
        return {
            "k_f": self.k_f,
            "quantiles": {f"q{int(q * 100)}": float(torch.quantile(self.per_sample, q)) for q in QUANTILES},
            "closest_cross_label_distance": float(finite.min()) if len(finite) else None,
            "median_cross_label_distance": float(finite.median()) if len(finite) else None,
            "median_same_label_distance": float(
                self.same_distance[torch.isfinite(self.same_distance)].median()
            )
            if torch.isfinite(self.same_distance).any()
            else None,
            "nearest_neighbour_label_disagreement": float((ratio < 1).double().mean())
            if len(ratio)
            else None,
            "closest_pairs": self.closest_pairs(),
            "exact_duplicates": self.exact_duplicates,
            "cross_label_duplicates": [list(p) for p in self.cross_label_duplicates],
            "n": self.n,
            "dims": self.dims,
        }


def duplicate_report(
    images: torch.Tensor, groups: torch.Tensor
) -> tuple[np.ndarray, int, list[tuple[int, int]]]:
    """(indices to keep: the first of each distinct image, number of exact duplicates,
    pairs (first, duplicate) of identical images with different labels)."""
    first, value_of = unique_rows(images.reshape(len(images), -1))
    conflicts = [
        (int(first[v]), i) for i, v in enumerate(value_of) if first[v] != i and groups[first[v]] != groups[i]
    ]
    return np.sort(first), len(images) - len(first), conflicts


def label_sharpness(images: torch.Tensor, labels: torch.Tensor) -> SharpnessResult:
    """K_F and its robust summaries over all pairs of distinct images (chunked)."""
    groups = label_groups(labels)
    kept, duplicates, conflicts = duplicate_report(images, groups)
    x = flatten(images[torch.as_tensor(kept)])
    kept_groups = groups[torch.as_tensor(kept)]
    cross_d, cross_i, same_d, _ = nearest_other_label(x, kept_groups)
    per_sample = torch.where(torch.isfinite(cross_d), 1.0 / cross_d, torch.zeros_like(cross_d))
    return SharpnessResult(
        n=len(images),
        dims=x.shape[1],
        per_sample=per_sample,
        cross_distance=cross_d,
        cross_index=cross_i,
        same_distance=same_d,
        exact_duplicates=duplicates,
        cross_label_duplicates=conflicts,
        kept=kept,
    )
