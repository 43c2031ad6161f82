"""MedMNIST-C metric layer: hand-computed BE / normalised BE / rBE, the rBE guard, baselines."""

from __future__ import annotations

import math
import random

import pytest

from medaudit.shift.baselines import BASELINES, Baseline, baseline_for
from medaudit.shift.catalogue import PARAMS
from medaudit.shift.scores import RBE_MIN_DENOMINATOR, corruption_scores, summary

# A made-up baseline: AlexNet clean BE 0.10.
#   a: 0.30 -> denominator 0.30 - 0.10 = +0.20 (fine)
#   b: 0.11 -> denominator 0.11 - 0.10 = +0.01 (< 0.02: flagged)
#   c: 0.05 -> denominator 0.05 - 0.10 = -0.05 (negative: flagged)
TOY = Baseline(clean_be=0.10, corruption_be={"a": 0.30, "b": 0.11, "c": 0.05})
CLEAN_BE = 0.05
BE = {
    "a": [0.10, 0.15, 0.20, 0.25, 0.30],  # sum 1.00, mean 0.20
    "b": [0.06, 0.07, 0.08, 0.09, 0.10],  # sum 0.40, mean 0.08
    "c": [0.06, 0.06, 0.06, 0.06, 0.06],  # sum 0.30, mean 0.06
}
ACC = {
    "a": [0.85, 0.80, 0.75, 0.70, 0.65],  # drops from 0.90: 0.05+0.10+0.15+0.20+0.25 = 0.75
    "b": [0.90, 0.90, 0.90, 0.90, 0.90],  # drops 0
    "c": [0.88, 0.88, 0.88, 0.88, 0.88],  # drops 5 * 0.02 = 0.10
}


def _cells(name: str, auc: float = 0.90) -> list[dict[str, float]]:
    return [
        {"accuracy": acc, "balanced_accuracy": 1 - be, "auc": auc, "balanced_error": be}
        for acc, be in zip(ACC[name], BE[name], strict=True)
    ]


def test_corruption_scores_hand_computed():
    s = corruption_scores(BE["a"], CLEAN_BE, TOY, "a")
    assert s["balanced_error"] == pytest.approx(0.20)  # 1.00 / 5
    assert s["be_drop"] == pytest.approx(0.15)  # 0.20 - 0.05
    assert s["normalised_be"] == pytest.approx(1.00 / 1.50)  # 1.00 / (5 * 0.30) = 0.6667
    assert s["rbe"] == pytest.approx(0.75)  # (1.00 - 5 * 0.05) / (5 * 0.20) = 0.75 / 1.00
    assert s["rbe_denominator"] == pytest.approx(0.20)
    assert s["rbe_flagged"] is False
    assert s["baseline_note"] is None


def test_sum_form_equals_upstream_mean_form():
    """medmnistc computes mean(errors) / alexnet_mean and (mean - clean) / (alex_mean - alex_clean)."""
    rng = random.Random(0)
    for _ in range(20):
        errors = [rng.uniform(0, 1) for _ in range(5)]
        clean, a_clean, a_c = rng.uniform(0, 0.5), rng.uniform(0, 0.3), rng.uniform(0.4, 0.9)
        s = corruption_scores(errors, clean, Baseline(a_clean, {"x": a_c}), "x")
        mean = sum(errors) / 5
        assert s["normalised_be"] == pytest.approx(mean / a_c)
        assert s["rbe"] == pytest.approx((mean - clean) / (a_c - a_clean))


def test_small_positive_denominator_is_flagged_but_reported():
    s = corruption_scores(BE["b"], CLEAN_BE, TOY, "b")
    assert s["rbe_denominator"] == pytest.approx(0.01)
    assert s["rbe_denominator"] < RBE_MIN_DENOMINATOR
    assert s["rbe_flagged"] is True
    assert s["rbe"] == pytest.approx(3.0)  # (0.40 - 0.25) / (5 * 0.01) = 0.15 / 0.05
    assert s["normalised_be"] == pytest.approx(0.40 / 0.55)  # 0.40 / (5 * 0.11) = 0.7273


def test_negative_denominator_is_flagged_but_reported():
    s = corruption_scores(BE["c"], CLEAN_BE, TOY, "c")
    assert s["rbe_denominator"] == pytest.approx(-0.05)
    assert s["rbe_flagged"] is True
    assert s["rbe"] == pytest.approx(-0.2)  # (0.30 - 0.25) / (5 * -0.05) = 0.05 / -0.25
    assert s["normalised_be"] == pytest.approx(1.2)  # 0.30 / (5 * 0.05)


def test_real_pneumoniamnist_contrast_up_is_negative_and_flagged():
    base = baseline_for("pneumoniamnist")
    assert base is not None
    # 0.09529914529914527 - 0.10085470085470083 = -0.0055556
    s = corruption_scores([0.15] * 5, 0.10, base, "contrast_up")
    assert round(s["rbe_denominator"], 4) == -0.0056
    assert s["rbe_flagged"] is True
    assert math.isfinite(s["rbe"])  # still a number, for transparency
    assert corruption_scores([0.15] * 5, 0.10, base, "impulse_noise")["rbe_flagged"] is False


def test_summary_hand_computed_and_rbe_exclusion():
    clean = {"accuracy": 0.90, "balanced_accuracy": 1 - CLEAN_BE, "auc": 0.95}
    out = summary(clean, {name: _cells(name) for name in BE}, TOY)
    assert out["clean_be"] == pytest.approx(0.05)  # 1 - balanced_accuracy when no balanced_error key
    assert out["mean_be"] == pytest.approx((0.20 + 0.08 + 0.06) / 3)  # 0.1133
    assert out["worst_corruption"] == "a"
    assert out["worst_corruption_be"] == pytest.approx(0.20)
    # (1/1.5 + 0.40/0.55 + 1.2) / 3 = (0.6667 + 0.7273 + 1.2) / 3 = 0.8646
    assert out["mean_normalised_be"] == pytest.approx((1 / 1.5 + 0.40 / 0.55 + 1.2) / 3)
    # b (+0.01) and c (-0.05) are flagged: mean rBE is a's 0.75 alone, not (0.75 + 3.0 - 0.2) / 3
    assert out["mean_rbe"] == pytest.approx(0.75)
    assert out["rbe_excluded"] == ["b", "c"]
    assert out["baseline_missing"] == []
    assert out["mean_accuracy_drop"] == pytest.approx((0.75 + 0.0 + 0.10) / 15)  # 15 cells: 0.0567
    assert out["mean_auc_drop"] == pytest.approx(0.05)  # 0.95 - 0.90 in every cell
    assert out["per_corruption"]["b"]["rbe"] == pytest.approx(3.0)


def test_no_baseline_gives_none():
    s = corruption_scores(BE["a"], CLEAN_BE, None, "a")
    assert s["balanced_error"] == pytest.approx(0.20)
    for key in ("normalised_be", "rbe", "rbe_denominator", "rbe_flagged"):
        assert s[key] is None
    clean = {"accuracy": 0.90, "balanced_error": CLEAN_BE, "auc": 0.95}
    out = summary(clean, {name: _cells(name) for name in BE}, None)
    assert out["mean_normalised_be"] is None
    assert out["mean_rbe"] is None
    assert out["rbe_excluded"] == []
    assert out["mean_be"] == pytest.approx(0.34 / 3)


def test_corruption_missing_from_baseline_and_wrong_severity_count():
    s = corruption_scores(BE["a"], CLEAN_BE, TOY, "zoom_blur")
    assert s["normalised_be"] is None and s["rbe"] is None and s["rbe_flagged"] is None
    assert "zoom_blur" in s["baseline_note"]
    # three severities cannot be compared with AlexNet's five-severity mean
    s = corruption_scores([0.1, 0.2, 0.3], CLEAN_BE, TOY, "a")
    assert s["balanced_error"] == pytest.approx(0.2)
    assert s["normalised_be"] is None
    clean = {"accuracy": 0.90, "balanced_error": CLEAN_BE, "auc": 0.95}
    cells = {"a": _cells("a"), "zoom_blur": _cells("b")}
    out = summary(clean, cells, TOY)
    assert out["baseline_missing"] == ["zoom_blur"]
    assert out["mean_normalised_be"] == pytest.approx(1 / 1.5)  # only a is covered
    with pytest.raises(ValueError):
        corruption_scores([], CLEAN_BE, TOY, "a")


def test_nan_metrics_are_skipped_not_propagated():
    s = corruption_scores([0.1, math.nan, 0.3, 0.4, 0.5], CLEAN_BE, TOY, "a")
    assert math.isnan(s["balanced_error"])  # a missing severity would understate the mean
    clean = {"accuracy": 0.90, "balanced_error": CLEAN_BE, "auc": 0.95}
    cells = {name: _cells(name) for name in BE}
    cells["a"][0]["balanced_error"] = math.nan
    cells["b"][0]["auc"] = math.nan
    out = summary(clean, cells, TOY)
    assert out["mean_be"] == pytest.approx((0.08 + 0.06) / 2)  # a skipped
    assert out["worst_corruption"] == "b"
    assert out["mean_normalised_be"] == pytest.approx((0.40 / 0.55 + 1.2) / 2)
    assert math.isnan(out["mean_rbe"])  # a was the only un-flagged one
    assert out["mean_auc_drop"] == pytest.approx(0.05)  # 14 finite cells, all 0.05
    clean_nan_auc = {**clean, "auc": math.nan}
    assert math.isnan(summary(clean_nan_auc, cells, TOY)["mean_auc_drop"])


# ../shared/reference/medmnist_c.md §8: clean BE, mean corrupted BE, worst, mildest, rBE denominators < 0.02
TABLE = {
    "bloodmnist": (0.0184, 0.1125, "defocus_blur", "saturate", {"saturate": 0.0164}),
    "breastmnist": (0.1454, 0.2994, "pixelate", "contrast_down", {"contrast_down": 0.0133}),
    "chestmnist": (
        0.2839,
        0.3677,
        "shot_noise",
        "gamma_corr_up",
        {
            "brightness_up": 0.0155,
            "brightness_down": 0.0132,
            "contrast_up": 0.0036,
            "contrast_down": 0.0116,
            "gamma_corr_up": 0.0036,
            "gamma_corr_down": 0.0053,
        },
    ),
    "dermamnist": (0.3986, 0.6147, "shot_noise", "contrast_up", {}),
    "octmnist": (0.2020, 0.3687, "motion_blur", "jpeg_compression", {}),
    "organamnist": (0.0501, 0.2693, "impulse_noise", "pixelate", {}),
    "organcmnist": (0.0760, 0.2842, "impulse_noise", "contrast_up", {}),
    "organsmnist": (0.2430, 0.4038, "impulse_noise", "jpeg_compression", {}),
    "pathmnist": (0.0884, 0.2770, "defocus_blur", "bubble", {"bubble": 0.0198}),
    "pneumoniamnist": (
        0.1009,
        0.2654,
        "impulse_noise",
        "contrast_up",
        {"contrast_up": -0.0056, "gamma_corr_up": -0.0048},
    ),
    "retinamnist": (0.5582, 0.6486, "motion_blur", "brightness_down", {}),
    "tissuemnist": (0.3918, 0.5375, "impulse_noise", "brightness_up", {}),
}


@pytest.mark.parametrize("dataset", sorted(TABLE))
def test_baselines_match_reference_table(dataset):
    clean, mean_corrupted, worst, mildest, small = TABLE[dataset]
    base = BASELINES[dataset]
    values = base.corruption_be
    assert round(base.clean_be, 4) == clean
    assert round(sum(values.values()) / len(values), 4) == mean_corrupted
    assert max(values, key=values.__getitem__) == worst
    assert min(values, key=values.__getitem__) == mildest
    denominators = {c: be - base.clean_be for c, be in values.items()}
    flagged = {c: round(d, 4) for c, d in denominators.items() if d < RBE_MIN_DENOMINATOR}
    assert flagged == small


def test_baselines_cover_the_catalogue_exactly():
    assert set(BASELINES) == set(PARAMS)
    for dataset, params in PARAMS.items():
        base = baseline_for(dataset)
        assert base is not None
        assert set(base.corruption_be) == set(params), dataset


def test_baseline_for_unknown_and_case():
    assert baseline_for("mnist") is None
    assert baseline_for("PathMNIST") is BASELINES["pathmnist"]
    with pytest.raises(AttributeError):
        BASELINES["pathmnist"].clean_be = 0.0  # type: ignore[misc]
