"""Reverb's error types, as replaydb errors.

``ReverbError`` is the base of every error :mod:`replaydb.reverb` raises for a
Reverb call; ``DeadlineExceededError`` is raised when a rate limiter did not let a
call through within its timeout (Reverb's own name for it), so it is also a
:class:`replaydb.errors.RateLimiterTimeout`. Both are replaydb errors, so
``except replaydb.errors.ReplayError`` catches them too::

    ReplayError
     ├── ReverbError
     │    └── DeadlineExceededError
     └── RateLimiterTimeout (also a TimeoutError)
          └── DeadlineExceededError
"""

from __future__ import annotations

from replaydb.errors import RateLimiterTimeout, ReplayError

__all__ = ["DeadlineExceededError", "ReverbError"]


class ReverbError(ReplayError):
    """Base class of the errors raised through the Reverb API."""


class DeadlineExceededError(ReverbError, RateLimiterTimeout):
    """A call waited for the rate limiter longer than its timeout.

    Example:
        >>> issubclass(DeadlineExceededError, (RateLimiterTimeout, TimeoutError))
        True
    """
