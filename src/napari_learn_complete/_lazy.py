"""PEP 562 lazy attributes for package ``__init__`` modules.

``import napari_learn_complete`` (napari imports it for the reader, the widgets and the menus) must
stay light: the names a package re-exports are imported from their home module on first use, so
the engine's torch is loaded only by code that really calls it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, homes: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``homes`` maps each exported name to the
    module (relative to the package) that defines it."""

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(homes[name], package), name)

    def __dir__() -> list[str]:
        return sorted(homes)

    return __getattr__, __dir__
