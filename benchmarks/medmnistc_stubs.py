"""Import ``medmnistc``'s corruption registry without ImageMagick (shared by the parity test and
the speed benchmark).

``medmnistc.corruptions.registry`` imports Wand for motion blur only; without the
ImageMagick library that import fails. Stub modules stand in while the registry
is imported and are removed afterwards, so motion blur stays unavailable.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from collections.abc import Iterator

WAND = ("wand", "wand.api", "wand.image")


@contextlib.contextmanager
def wand_stubs() -> Iterator[None]:
    """Stand-ins for Wand while the registry is imported, when ImageMagick is absent."""
    try:
        importlib.import_module("wand.image")
    except (ImportError, OSError):
        pass
    else:  # real Wand and ImageMagick: nothing to stub
        yield
        return
    saved = {name: sys.modules.get(name) for name in WAND}
    stubs = {name: types.ModuleType(name) for name in WAND}
    stubs["wand.image"].Image = type("Image", (), {})
    stubs["wand.api"].library = types.SimpleNamespace()
    sys.modules.update(stubs)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
