"""The packages whose names load on first use (``medaudit.lazy``): each exported name is the object
its home module defines, however the package was reached, and never a submodule's name (a submodule
imported first would shadow it on the package)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

LAZY = ["attacks", "confounders", "data", "features", "harden", "intrinsic", "models"]


@pytest.mark.parametrize("name", LAZY)
def test_exported_names_are_their_homes_objects_and_no_submodule(name: str) -> None:
    package = importlib.import_module(f"medaudit.{name}")
    submodules = {info.name for info in pkgutil.iter_modules(package.__path__)}
    for export in package.__all__:
        assert export not in submodules, f"medaudit.{name}.{export} is also a submodule"
        for submodule in sorted(submodules):  # loaded in any order first, the name still resolves
            importlib.import_module(f"medaudit.{name}.{submodule}")
        value = getattr(package, export)
        assert not isinstance(value, type(package)), (name, export)
        home = importlib.import_module(value.__module__) if hasattr(value, "__module__") else None
        assert home is None or getattr(home, export, value) is value, (name, export)


def test_an_unknown_name_is_an_attribute_error() -> None:
    models = importlib.import_module("medaudit.models")
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        models.nope  # noqa: B018
