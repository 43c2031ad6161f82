"""User-facing errors.

Library code raises these; only the CLI turns them into a one-line message and
exit code 2. Each message names the problem and the fix.
"""


class MedauditError(Exception):
    """Base class for every error caused by user input, not by a bug."""


class ModelLoadError(MedauditError):
    """The model file cannot be read, is the wrong format, or is refused."""


class DataError(MedauditError):
    """The data cannot be found, read, or is unusable (empty, bad labels)."""


class ShapeMismatch(MedauditError):
    """Data and model disagree on channels, size or classes."""


class ConfigError(MedauditError):
    """An option or option combination is invalid."""


class PolicyError(MedauditError):
    """A gate policy file is invalid."""
