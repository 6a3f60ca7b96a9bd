"""Deprecated: :class:`~replaydb.manager.StepObserver` lives in :mod:`replaydb.manager`.

This alias goes in the next release.

Example:
    >>> from replaydb.manager import StepObserver  # instead of replaydb.observer
"""

from __future__ import annotations

import warnings

from replaydb.manager._observer import FIRST, LAST, MID, StepObserver

__all__ = ["FIRST", "LAST", "MID", "StepObserver"]

warnings.warn(
    "replaydb.observer is deprecated and will be removed in the next release; "
    "import StepObserver (and FIRST, MID, LAST) from replaydb.manager",
    DeprecationWarning,
    stacklevel=2,
)
