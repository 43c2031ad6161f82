"""medaudit: audit trained medical-image classifiers before release."""

__version__ = "0.1.0"
