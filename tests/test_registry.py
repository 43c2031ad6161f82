"""The name -> object registry with lazy ``"pkg.module:attr"`` entries."""

from __future__ import annotations

import json
import os.path

import pytest

from medaudit.errors import ConfigError
from medaudit.registry import Registry, import_object


def test_register_by_decorator_and_directly() -> None:
    registry: Registry[object] = Registry("widget")

    @registry.register("square")
    def square(x: int) -> int:
        return x * x

    registry.register("cube", lambda x: x**3)
    assert registry.get("square") is square
    assert registry.get("square")(4) == 16
    assert registry.get("cube")(2) == 8
    assert "square" in registry
    assert "circle" not in registry
    assert registry.names() == ["cube", "square"]
    assert list(registry) == ["cube", "square"]


def test_duplicate_name_is_a_value_error() -> None:
    registry: Registry[object] = Registry("widget")
    registry.register("one", 1)
    with pytest.raises(ValueError, match="widget 'one' is already registered"):
        registry.register("one", 2)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("one")(lambda: None)
    assert registry.get("one") == 1


def test_unknown_name_suggests_close_matches() -> None:
    registry: Registry[object] = Registry("attack")
    for name in ("fgsm", "pgd", "deepfool"):
        registry.register(name, name.upper())
    with pytest.raises(ConfigError) as excinfo:
        registry.get("pgdd")
    message = str(excinfo.value)
    assert "unknown attack 'pgdd'" in message
    assert "Did you mean pgd?" in message
    assert "deepfool, fgsm, pgd" in message

    with pytest.raises(ConfigError) as excinfo:
        registry.get("zzzzzz")
    assert "Did you mean" not in str(excinfo.value)


def test_lazy_entries_are_imported_on_first_use() -> None:
    registry: Registry[object] = Registry("function")
    registry.register("dumps", "json:dumps")
    registry.register("join", "os.path:join")
    assert registry.get("dumps") is json.dumps
    assert registry.get("join") is os.path.join
    assert registry.get("dumps") is json.dumps  # cached, still the same object


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("json.dumps", "not of the form"),
        (":dumps", "not of the form"),
        ("json:", "not of the form"),
        ("no_such_module_for_medaudit:x", "cannot import module"),
        ("json:no_such_attribute", "has no attribute 'no_such_attribute'"),
    ],
)
def test_bad_lazy_entries_are_config_errors(spec: str, message: str) -> None:
    registry: Registry[object] = Registry("thing")
    registry.register("broken", spec)  # registering is lazy: nothing is imported yet
    with pytest.raises(ConfigError, match=message):
        registry.get("broken")
    with pytest.raises(ConfigError, match=message):
        import_object(spec)


def test_builtin_architectures_are_registered() -> None:
    from medaudit.models.archs import architectures

    assert set(architectures.names()) >= {
        "resnet18_28",
        "resnet50_28",
        "resnet18_224",
        "resnet50_224",
        "smallcnn",
        "rescnn",
    }
    assert callable(architectures.get("smallcnn"))
