"""Task types, named as MedMNIST's INFO names them."""

from enum import Enum


class Task(str, Enum):
    """What the labels mean; decides the output semantics and the metrics."""

    BINARY = "binary-class"
    MULTI_CLASS = "multi-class"
    MULTI_LABEL = "multi-label, binary-class"
    ORDINAL = "ordinal-regression"

    @classmethod
    def parse(cls, value: str) -> "Task":
        """Accept the MedMNIST string or a short alias (binary, multiclass, multilabel, ordinal)."""
        from medaudit.errors import ConfigError

        aliases = {
            "binary": cls.BINARY,
            "multi-class": cls.MULTI_CLASS,
            "multiclass": cls.MULTI_CLASS,
            "multi-label": cls.MULTI_LABEL,
            "multilabel": cls.MULTI_LABEL,
            "ordinal": cls.ORDINAL,
        }
        for task in cls:
            aliases[task.value] = task
        key = value.strip().lower()
        if key not in aliases:
            raise ConfigError(f"unknown task '{value}': use binary, multi-class, multi-label or ordinal")
        return aliases[key]

    @property
    def single_label(self) -> bool:
        """Binary, multi-class and ordinal are scored as one label per image."""
        return self is not Task.MULTI_LABEL
