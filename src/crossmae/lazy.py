"""A package's public names, imported on first use (PEP 562).

`crossmae` and `crossmae.models` name classes that need torch; importing them eagerly would
make `crossmae --help`, a mistyped flag or a wrong path wait seconds for torch and timm.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any


def lazy_names(
    package: str, module_of: dict[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The package's `__getattr__` and `__dir__`: each name in `module_of` is imported from
    its module when first asked for, then kept in the package's `namespace`; a subpackage or
    module is imported when first used as an attribute, as the eager imports made it."""

    def __getattr__(name: str) -> Any:
        if name in module_of:
            value = getattr(importlib.import_module(module_of[name]), name)
        elif importlib.util.find_spec(f"{package}.{name}") is not None:
            value = importlib.import_module(f"{package}.{name}")  # `crossmae.models.registry`
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *module_of})

    return __getattr__, __dir__
