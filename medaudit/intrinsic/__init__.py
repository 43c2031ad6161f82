"""Dataset and model properties: label sharpness, intrinsic dimension, local smoothness.

The names below load on first use: the settings (``medaudit.intrinsic.config``) are checked before
torch is imported."""

from __future__ import annotations

from typing import TYPE_CHECKING

from medaudit.lazy import lazy_names

if TYPE_CHECKING:
    from medaudit.intrinsic.audit import IntrinsicResult, run_intrinsic
    from medaudit.intrinsic.config import DimensionConfig, IntrinsicConfig, LipschitzConfig
    from medaudit.intrinsic.dimension import mle, twonn
    from medaudit.intrinsic.sharpness import label_sharpness

__all__ = [
    "DimensionConfig",
    "IntrinsicConfig",
    "IntrinsicResult",
    "LipschitzConfig",
    "label_sharpness",
    "mle",
    "run_intrinsic",
    "twonn",
]

__getattr__ = lazy_names(
    __name__,
    {
        "DimensionConfig": "config",
        "IntrinsicConfig": "config",
        "LipschitzConfig": "config",
        "IntrinsicResult": "audit",
        "run_intrinsic": "audit",
        "label_sharpness": "sharpness",
        "mle": "dimension",
        "twonn": "dimension",
    },
)
