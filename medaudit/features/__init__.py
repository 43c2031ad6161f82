"""Nonrobust features (Ilyas et al. 2019; "Useful nonrobust features are ubiquitous in biomedical
images", ISBI 2026): how useful the audited model's adversarial directions are as features, and
how stable its input attributions are under a tiny perturbation."""

from medaudit.features.construction import KINDS, Constructed, construct, default_budget
from medaudit.features.nonrobust import (
    CleanReference,
    NonrobustConfig,
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
