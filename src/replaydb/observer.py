"""The old home of :class:`~replaydb.manager.StepObserver`; it lives in :mod:`replaydb.manager`.

``from replaydb.observer import StepObserver`` keeps working.
"""

from __future__ import annotations

from replaydb.manager._observer import FIRST, LAST, MID, StepObserver

__all__ = ["FIRST", "LAST", "MID", "StepObserver"]
