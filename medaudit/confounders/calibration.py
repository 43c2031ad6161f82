"""Calibrated confounder verdicts: each artifact against a matched control, with bootstrap intervals.

A model can move under an artifact for two different reasons: it learned the artifact as
evidence for a class (a *shortcut*), or any change of that size moves it (*fragility*). To
tell them apart every artifact cell gets a **matched control**: per image, a change in the
same place (the pixels the artifact changes and those within a few pixels of them) with the same mean (the same brightening
or darkening) and the same energy (sum of squared pixel changes) as the artifact's own change,
but shaped as a random smooth field with a new random pattern for every image, so it carries
nothing a model could have learned. The
artifact's effect is measured *beyond* its control, per image, and the interval comes from a
bootstrap over images (the same seeded resamples for every cell, so cells are comparable).

Two directional effects towards a class c (the class whose probability the artifact raises
most), each the artifact's own response less whatever the control does in the same direction,
``min(artifact, artifact - control)``: a control that moves the other way earns nothing.

- **push**: the mean gain of p_c under the artifact (control: under the control);
- **reversed AUC**: the drop of class c's one-vs-rest AUC when the artifact is put on every
  image not of class c (the "Source Matters" reversed test; control: the control there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from medaudit.shift.corrupt import sample_rngs

CONTROL_SMOOTHING = 0.07
"""Correlation length (Gaussian sigma, fraction of the width) of the control's random field."""


def matched_control(clean: np.ndarray, marked: np.ndarray, rngs: list[np.random.Generator]) -> np.ndarray:
    """uint8 NHWC control images: each image's artifact change replaced, on the pixels it changes and
    their immediate surroundings, by a random smooth field with the same sum and energy (one field
    for all channels; clipped and rounded like the artifacts)."""
    _, height, width, channels = clean.shape
    change = marked.astype(np.float64) - clean.astype(np.float64)
    noise = np.stack([rng.standard_normal((height, width)) for rng in rngs])
    sigma = CONTROL_SMOOTHING * width
    fields = _smooth(noise, sigma)
    reach = max(1, round(sigma))
    changed = torch.from_numpy((np.abs(change).max(axis=-1) > 0).astype(np.float32))[:, None]
    places = torch.nn.functional.max_pool2d(changed, 2 * reach + 1, stride=1, padding=reach)[:, 0].numpy() > 0
    control = clean.astype(np.float64)
    for i, (field, place) in enumerate(zip(fields, places, strict=True)):
        if not place.any():
            continue
        inside = change[i][place]
        mean = inside.mean()
        rest = np.sqrt(((inside - mean) ** 2).sum())
        local = field[place] - field[place].mean()
        norm = np.sqrt((local**2).sum() * channels)
        control[i][place] += mean + (local * (rest / norm if norm > 0 else 0.0))[:, None]
    return np.clip(np.rint(control), 0, 255).astype(np.uint8)


def _smooth(noise: np.ndarray, sigma: float) -> np.ndarray:
    """Circular Gaussian smoothing (std ``sigma`` px) of each N x H x W image, through the FFT."""
    fy = np.fft.fftfreq(noise.shape[1])[:, None]
    fx = np.fft.fftfreq(noise.shape[2])[None, :]
    gain = np.exp(-2 * np.pi**2 * sigma**2 * (fx**2 + fy**2))
    return np.fft.ifft2(np.fft.fft2(noise) * gain).real


def control_rngs(seed: int, indices: range | list[int], cell: str, level: int) -> list[np.random.Generator]:
    """One generator per image for a cell's control, from the image's global index (shards agree)."""
    return sample_rngs(seed, list(indices), f"control:{cell}", level)


def bootstrap_weights(n: int, rounds: int, seed: int) -> np.ndarray:
    """(rounds x n) resample counts of a bootstrap over images; row sums are n."""
    rng = np.random.default_rng([seed, 0xB007])
    return rng.multinomial(n, np.full(n, 1.0 / n), size=rounds).astype(np.float64)


def weighted_auc(positive: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC (ties count one half) of ``scores`` for ``positive`` under each row of ``weights``.

    Scores are sorted once and every bootstrap row is a weighting of the same images, so all
    rounds cost one cumulative sum. NaN where a row has no positive or no negative weight.
    """
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    is_pos = positive[order].astype(bool)
    w = np.atleast_2d(weights)[:, order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    pos = np.add.reduceat(w * is_pos, starts, axis=1)
    neg = np.add.reduceat(w * ~is_pos, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    wins = (pos * (below + 0.5 * neg)).sum(axis=1)
    return np.divide(wins, pairs, out=np.full(len(w), math.nan), where=pairs > 0)


@dataclass(frozen=True)
class Effect:
    """An effect beyond the control with its bootstrap interval."""

    measure: str
    """``push`` or ``reversed_auc``."""
    value: float
    low: float
    high: float
    artifact: float
    """The artifact's own value of the measure (push, or drop from the clean AUC)."""
    control: float
    """The control's value of the same measure."""

    @property
    def evidence(self) -> float:
        """The lower end of the interval: how surely the artifact beats its control (NaN: unknown)."""
        return self.low

    def to_dict(self) -> dict[str, object]:
        return {
            "effect": self.value,
            "ci": [self.low, self.high],
            "artifact": self.artifact,
            "control": self.control,
        }


def _interval(point: float, rounds: np.ndarray, confidence: float) -> tuple[float, float]:
    finite = rounds[np.isfinite(rounds)]
    if not math.isfinite(point) or len(finite) == 0:
        return math.nan, math.nan
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def _beyond(measure: str, artifact: np.ndarray, control: np.ndarray, confidence: float) -> Effect:
    """``min(artifact, artifact - control)`` from (point, rounds...) arrays whose first entry is the point."""
    effect = np.minimum(artifact, artifact - control)
    point = float(effect[0])
    return Effect(
        measure,
        point,
        *_interval(point, effect[1:], confidence),
        artifact=float(artifact[0]),
        control=float(control[0]),
    )


def _with_point(weights: np.ndarray) -> np.ndarray:
    """The weights with an all-ones row first: row 0 gives the point estimate."""
    return np.vstack([np.ones((1, weights.shape[1])), weights])


def push_effect(
    clean: np.ndarray,
    artifact: np.ndarray,
    control: np.ndarray,
    c: int,
    weights: np.ndarray,
    confidence: float,
) -> Effect:
    """Mean gain of class c's probability under the artifact beyond the control (probabilities n x C)."""
    w = _with_point(weights)
    total = w.sum(axis=1)
    gain_artifact = w @ (artifact[:, c] - clean[:, c]) / total
    gain_control = w @ (control[:, c] - clean[:, c]) / total
    return _beyond("push", gain_artifact, gain_control, confidence)


def reversed_effect(
    clean: np.ndarray,
    artifact: np.ndarray,
    control: np.ndarray,
    labels: np.ndarray,
    c: int,
    weights: np.ndarray,
    confidence: float,
) -> Effect:
    """Drop of class c's AUC with the artifact on the other classes' images, beyond the control's drop."""
    target = labels == c
    w = _with_point(weights)
    base = weighted_auc(target, clean[:, c], w)

    def drop(probs: np.ndarray) -> np.ndarray:
        return base - weighted_auc(target, np.where(target, clean[:, c], probs[:, c]), w)

    return _beyond("reversed_auc", drop(artifact), drop(control), confidence)


def direction(clean: np.ndarray, artifact: np.ndarray) -> int:
    """The class whose probability the artifact raises most on average (probabilities n x C)."""
    return int(np.argmax((artifact - clean).mean(axis=0)))


def is_shortcut(effects: list[Effect], min_effect: float) -> bool:
    """Directional and beyond the control: an effect whose whole interval lies above ``min_effect`` (> 0)."""
    return any(e.low > 0 and e.low >= min_effect for e in effects)


def evidence(effects: list[Effect]) -> float:
    """The strongest lower interval end over the measures (-inf when none is known)."""
    known = [e.low for e in effects if math.isfinite(e.low)]
    return max(known) if known else -math.inf


def strongest(effects: list[Effect]) -> Effect:
    """The measure with the strongest evidence (the push when none is known)."""
    known = [e for e in effects if math.isfinite(e.low)]
    return max(known, key=lambda e: e.low) if known else effects[0]
