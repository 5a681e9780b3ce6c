"""Lazy imports of the `[data]` extra's packages with an error that names the extra."""
from __future__ import annotations

import importlib
from types import ModuleType

INSTALL_HINT = 'pip install "onestory-lab[data]"'


class MissingDependency(ImportError):
    """A package of the `[data]` extra is not installed."""


def require(module: str, package: str | None = None, extra: str = "data") -> ModuleType:
    """Import `module`, or raise MissingDependency naming the PyPI package and the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pkg = package or module.split(".")[0]
        raise MissingDependency(
            f"the OneStory data pipeline needs the '{pkg}' package ({e}); install the extra with: "
            f'pip install "onestory-lab[{extra}]"') from e
