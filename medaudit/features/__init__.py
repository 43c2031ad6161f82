"""Nonrobust features (Ilyas et al. 2019; "Useful nonrobust features are ubiquitous in biomedical
images", ISBI 2026): how useful the audited model's adversarial directions are as features, and
how stable its input attributions are under a tiny perturbation.

The names below load on first use: ``NonrobustConfig`` checks the options before torch is imported."""

from __future__ import annotations

from typing import TYPE_CHECKING

from medaudit.lazy import lazy_names

if TYPE_CHECKING:
    from medaudit.features.config import KINDS, NonrobustConfig, default_budget
    from medaudit.features.construction import Constructed, construct
    from medaudit.features.nonrobust import (
        CleanReference,
        EpsZeroRuns,
        NonrobustResult,
        NonrobustRow,
        nonrobust_usefulness,
    )
    from medaudit.features.saliency import METHODS, SaliencyResult, saliency_stability, spearman
    from medaudit.features.train import accuracy, fresh_factory, train_fresh

__all__ = [
    "KINDS",
    "METHODS",
    "CleanReference",
    "Constructed",
    "EpsZeroRuns",
    "NonrobustConfig",
    "NonrobustResult",
    "NonrobustRow",
    "SaliencyResult",
    "accuracy",
    "construct",
    "default_budget",
    "fresh_factory",
    "nonrobust_usefulness",
    "saliency_stability",
    "spearman",
    "train_fresh",
]

__getattr__ = lazy_names(
    __name__,
    {
        "KINDS": "config",
        "default_budget": "config",
        "NonrobustConfig": "config",
        "Constructed": "construction",
        "construct": "construction",
        "CleanReference": "nonrobust",
        "EpsZeroRuns": "nonrobust",
        "NonrobustResult": "nonrobust",
        "NonrobustRow": "nonrobust",
        "nonrobust_usefulness": "nonrobust",
        "METHODS": "saliency",
        "SaliencyResult": "saliency",
        "saliency_stability": "saliency",
        "spearman": "saliency",
        "accuracy": "train",
        "fresh_factory": "train",
        "train_fresh": "train",
    },
)
