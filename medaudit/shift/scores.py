"""MedMNIST-C robustness scores from per-severity metrics: pure arithmetic, no model.

Balanced error BE = 1 - balanced accuracy. For a corruption c with severities s = 1..5
(medmnistc 0.1.0 ``eval.py``, the ImageNet-C mCE recipe with BE and an AlexNet reference):

- normalised BE_c = sum_s BE_{s,c} / sum_s BE_{s,c}^AlexNet = mean_s BE_{s,c} / AlexNet mean BE_c
- rBE_c = sum_s (BE_{s,c} - BE_clean) / sum_s (BE_{s,c}^AlexNet - BE_clean^AlexNet)
        = (mean_s BE_{s,c} - BE_clean) / (AlexNet mean BE_c - AlexNet BE_clean)

Values below 1 mean more robust than AlexNet. Some AlexNet rBE denominators are tiny or
negative (AlexNet barely degrades, or improves), which makes rBE explode or flip sign;
those corruptions are flagged and left out of the mean rBE. The baselines only apply to
the official 224 px test split with the published parameters, so callers pass
``baseline=None`` in any other mode and get absolute numbers only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from medaudit.shift.baselines import Baseline

RBE_MIN_DENOMINATOR = 0.02
"""rBE is flagged (reported, not averaged) when AlexNet's denominator is below this or negative."""

BASELINE_SEVERITIES = 5
"""The AlexNet numbers average five severities; fewer severities are not comparable."""


def _mean(values: Iterable[float | None]) -> float:
    """Mean of the finite values (None and NaN skipped); NaN if there are none."""
    finite = [float(v) for v in values if v is not None and not math.isnan(v)]
    return math.fsum(finite) / len(finite) if finite else math.nan


def balanced_error(metrics: Mapping[str, float]) -> float:
    """``balanced_error`` if present, else 1 - ``balanced_accuracy`` (NaN stays NaN)."""
    if "balanced_error" in metrics and metrics["balanced_error"] is not None:
        return float(metrics["balanced_error"])
    value = metrics.get("balanced_accuracy")
    return math.nan if value is None else 1.0 - float(value)


def corruption_scores(
    be_by_severity: Sequence[float], clean_be: float, baseline: Baseline | None, corruption: str
) -> dict[str, Any]:
    """Scores of one corruption from its per-severity balanced errors.

    - ``balanced_error`` = mean_s BE_s; NaN if any severity is NaN (averaging over fewer
      severities would understate the error, since severities differ in strength).
    - ``be_drop`` = mean_s BE_s - clean_be.
    - ``normalised_be`` = sum_s BE_s / (5 * A_c), A_c = AlexNet's severity-averaged BE.
    - ``rbe`` = sum_s (BE_s - clean_be) / (5 * (A_c - A_clean)); NaN if the denominator is 0.
    - ``rbe_denominator`` = A_c - A_clean; ``rbe_flagged`` = denominator < RBE_MIN_DENOMINATOR
      (this includes negative ones): rBE is still reported but kept out of the mean rBE.

    The four baseline keys are None when there is no baseline, the corruption is not in it,
    or there are not exactly 5 severities; ``baseline_note`` then says which.
    """
    if len(be_by_severity) == 0:
        raise ValueError(f"{corruption}: no severities to score")
    values = [math.nan if v is None else float(v) for v in be_by_severity]
    mean_be = math.nan if any(math.isnan(v) for v in values) else math.fsum(values) / len(values)
    result: dict[str, Any] = {
        "balanced_error": mean_be,
        "be_drop": mean_be - float(clean_be),
        "normalised_be": None,
        "rbe": None,
        "rbe_denominator": None,
        "rbe_flagged": None,
        "baseline_note": None,
    }
    if baseline is None:
        result["baseline_note"] = "no AlexNet baseline"
        return result
    if corruption not in baseline.corruption_be:
        result["baseline_note"] = f"'{corruption}' is not in the AlexNet baseline"
        return result
    if len(values) != BASELINE_SEVERITIES:
        result["baseline_note"] = f"the AlexNet baseline averages 5 severities, got {len(values)}"
        return result
    reference_be = baseline.corruption_be[corruption]
    denominator = reference_be - baseline.clean_be
    n = BASELINE_SEVERITIES
    result["normalised_be"] = math.fsum(values) / (n * reference_be) if reference_be else math.nan
    numerator = math.fsum(v - float(clean_be) for v in values)
    result["rbe"] = numerator / (n * denominator) if denominator else math.nan
    result["rbe_denominator"] = denominator
    result["rbe_flagged"] = bool(denominator < RBE_MIN_DENOMINATOR)
    return result


def summary(
    clean_metrics: Mapping[str, float],
    severity_metrics: Mapping[str, Sequence[Mapping[str, float]]],
    baseline: Baseline | None,
) -> dict[str, Any]:
    """The benchmark summary, with each corruption's ``corruption_scores`` under ``per_corruption``.

    ``clean_metrics`` has ``accuracy``, ``auc`` and ``balanced_error`` (or
    ``balanced_accuracy``); ``severity_metrics`` maps each corruption to its per-severity
    metric dicts (severity 1 first) with the same keys. Pass ``baseline=None`` unless the
    scores come from the official 224 px test split with the published parameters.

    - ``mean_be`` = mean over corruptions of mean_s BE_{s,c}; ``worst_corruption`` the c
      with the highest, ``worst_corruption_be`` its value.
    - ``mean_normalised_be`` = mean_c normalised BE_c (MedMNIST-C summary ``be``) over the
      corruptions the baseline covers (the others are listed in ``baseline_missing``).
    - ``mean_rbe`` = mean_c rBE_c (MedMNIST-C summary ``rbe``) over un-flagged corruptions;
      the flagged ones are listed in ``rbe_excluded``.
      Both means are None without a baseline.
    - ``mean_accuracy_drop`` = mean over all corruption x severity cells of
      clean accuracy - corrupted accuracy; ``mean_auc_drop`` the same for AUC.

    NaN metrics are skipped in every mean (a mean of nothing is NaN).
    """
    clean_be = balanced_error(clean_metrics)
    per_corruption = {
        name: corruption_scores([balanced_error(m) for m in cells], clean_be, baseline, name)
        for name, cells in severity_metrics.items()
    }

    ranked = [(s["balanced_error"], name) for name, s in per_corruption.items()]
    ranked = [(be, name) for be, name in ranked if not math.isnan(be)]
    worst_be, worst = max(ranked, key=lambda item: item[0]) if ranked else (math.nan, None)

    covered = {name: s for name, s in per_corruption.items() if s["normalised_be"] is not None}
    excluded = [name for name, s in covered.items() if s["rbe_flagged"]]
    mean_normalised_be: float | None
    mean_rbe: float | None
    if covered:
        mean_normalised_be = _mean(s["normalised_be"] for s in covered.values())
        mean_rbe = _mean(s["rbe"] for s in covered.values() if not s["rbe_flagged"])
    else:
        mean_normalised_be = mean_rbe = None
    missing = [name for name in per_corruption if name not in covered] if baseline is not None else []

    def drops(key: str) -> float:
        clean = clean_metrics.get(key)
        if clean is None or math.isnan(clean):
            return math.nan
        return _mean(
            clean - cell[key]
            for cells in severity_metrics.values()
            for cell in cells
            if cell.get(key) is not None
        )

    return {
        "clean_be": clean_be,
        "mean_be": _mean(s["balanced_error"] for s in per_corruption.values()),
        "worst_corruption": worst,
        "worst_corruption_be": worst_be,
        "mean_normalised_be": mean_normalised_be,
        "mean_rbe": mean_rbe,
        "rbe_excluded": excluded,
        "baseline_missing": missing,
        "mean_accuracy_drop": drops("accuracy"),
        "mean_auc_drop": drops("auc"),
        "per_corruption": per_corruption,
    }
