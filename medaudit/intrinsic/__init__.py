"""Dataset and model properties: label sharpness, intrinsic dimension, local smoothness."""

from medaudit.intrinsic.audit import IntrinsicConfig, IntrinsicResult, run_intrinsic
from medaudit.intrinsic.dimension import DimensionConfig, mle, twonn
from medaudit.intrinsic.sharpness import label_sharpness

__all__ = [
    "DimensionConfig",
    "IntrinsicConfig",
    "IntrinsicResult",
    "label_sharpness",
    "mle",
    "run_intrinsic",
    "twonn",
]
