"""User-facing errors and the exit codes they map to.

Library code raises these; only the CLI turns them into a one-line message and
the error's ``exit_code``. Each message names the problem and the fix. Any other
exception is a bug in medaudit (exit ``INTERNAL_ERROR``), never a gate verdict.
"""

from pathlib import Path

GATE_FAILED = 1
"""A release-gate rule (or a compared metric) failed: the audit ran, the model did not pass."""
USER_ERROR = 2
"""Bad input: a missing or malformed file, option, card, policy or data."""
MODEL_ERROR = 3
"""The user's model raised, or returned something that is not logits, while being audited."""
INTERNAL_ERROR = 4
"""A bug in medaudit (any unexpected exception)."""
INTERRUPTED = 130
"""Stopped by Ctrl-C / SIGINT (128 + 2, the shell convention)."""


def not_a_file(path: Path) -> str:
    """Why ``path``, which is not a file, cannot be read as one: the true reason for the message."""
    return "is a folder, not a file" if path.is_dir() else "does not exist"


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message cut to its first line (its type name when the message is empty),
    for one-line errors."""
    lines = str(exc).strip().splitlines()
    return lines[0].strip()[:limit] if lines else type(exc).__name__


def what_raised(exc: BaseException, limit: int = 200) -> str:
    """'Type: first line' (or the type alone), for an exception medaudit reports but did not raise."""
    return f"{type(exc).__name__}: {first_line(exc, limit)}" if str(exc).strip() else type(exc).__name__


class MedauditError(Exception):
    """Base class for every error caused by user input, not by a bug."""

    exit_code = USER_ERROR


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


class ModelRuntimeError(MedauditError):
    """The user's model raised, or returned an unusable output, while it ran on the audit data."""

    exit_code = MODEL_ERROR


class OutputError(MedauditError):
    """An output cannot be written (full disk, no permission); nothing partial is left behind."""
