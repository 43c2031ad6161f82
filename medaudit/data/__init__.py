"""Data sources (MedMNIST, npz, image folders) -> one ``AuditData``.

The names below load on first use: ``DataSpec`` checks the data options before torch is imported."""

from __future__ import annotations

from typing import TYPE_CHECKING

from medaudit.lazy import lazy_names

if TYPE_CHECKING:
    from medaudit.data.dataset import AuditData, stratified_indices
    from medaudit.data.spec import DataSpec, load_data

__all__ = ["AuditData", "DataSpec", "load_data", "stratified_indices"]

__getattr__ = lazy_names(
    __name__,
    {"AuditData": "dataset", "stratified_indices": "dataset", "DataSpec": "spec", "load_data": "spec"},
)
