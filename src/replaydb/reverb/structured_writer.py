"""``reverb.structured_writer``: names only; StructuredWriter and pattern datasets are out of scope.

Libraries such as ``rlds`` name these types in annotations at import time, so the
names exist; building a config, a pattern or a :class:`PatternDataset` raises
:class:`~replaydb.errors.InvalidArgumentError` saying so.
"""

from __future__ import annotations

from typing import Any, NoReturn

from replaydb.errors import InvalidArgumentError

__all__ = [
    "Condition",
    "Config",
    "Pattern",
    "PatternDataset",
    "ReferenceStep",
    "create_config",
    "pattern_from_transform",
]

_WHY = (
    "Reverb's StructuredWriter and pattern datasets are not implemented by replaydb.reverb; "
    "write items with Client.trajectory_writer() and read them with TrajectoryDataset"
)


def _unsupported(*args: Any, **kwargs: Any) -> NoReturn:
    raise InvalidArgumentError(_WHY)


class Config:
    """A StructuredWriter config (not supported: constructing one raises)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _unsupported()


class ReferenceStep:
    """A pattern's reference step (not supported)."""


class Pattern:
    """A StructuredWriter pattern (not supported)."""


class Condition:
    """A StructuredWriter condition (not supported)."""


class PatternDataset:
    """Reverb's pattern dataset (not supported: constructing one raises)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _unsupported()


def create_config(*args: Any, **kwargs: Any) -> NoReturn:
    """Not supported: raises."""
    _unsupported()


def pattern_from_transform(*args: Any, **kwargs: Any) -> NoReturn:
    """Not supported: raises."""
    _unsupported()
