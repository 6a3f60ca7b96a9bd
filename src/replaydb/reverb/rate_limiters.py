"""Rate limiters: when a Reverb table lets inserts and samples go.

Reverb's presets over one base of four numbers (``samples_per_insert``,
``min_size_to_sample``, ``min_diff``, ``max_diff``). Each is a description; a
:class:`~replaydb.reverb.Table` builds its own replaydb
:class:`~replaydb.rate_limiters.RateLimiter` (with its own counters) from it, so
one preset object may configure several tables, as in Reverb.
"""

from __future__ import annotations

import sys

from replaydb import rate_limiters as _native
from replaydb._validate import check_int
from replaydb.errors import InvalidArgumentError

__all__ = ["MinSize", "Queue", "RateLimiter", "SampleToInsertRatio", "Stack"]


class RateLimiter:
    """The base of the presets: four numbers.

    Args:
        samples_per_insert: Samples each insert pays for.
        min_size_to_sample: Items the table must hold before any sample.
        min_diff: Lowest allowed ``inserts * samples_per_insert - samples``.
        max_diff: Highest allowed ``inserts * samples_per_insert - samples``.

    Example:
        >>> RateLimiter(1.0, 1, -10.0, 10.0).make().max_diff
        10.0
    """

    def __init__(
        self, samples_per_insert: float, min_size_to_sample: int, min_diff: float, max_diff: float
    ) -> None:
        self.samples_per_insert = float(samples_per_insert)
        self.min_size_to_sample = int(min_size_to_sample)
        self.min_diff = float(min_diff)
        self.max_diff = float(max_diff)
        self.make()  # validate now, as Reverb does

    def make(self) -> _native.RateLimiter:
        """A fresh replaydb limiter (zero counters) with these numbers."""
        return _native.RateLimiter(
            self.samples_per_insert, self.min_size_to_sample, self.min_diff, self.max_diff
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(samples_per_insert={self.samples_per_insert}, "
            f"min_size_to_sample={self.min_size_to_sample}, min_diff={self.min_diff}, "
            f"max_diff={self.max_diff})"
        )


class MinSize(RateLimiter):
    """Samples wait until the table holds ``min_size_to_sample`` items; inserts never wait.

    Example:
        >>> MinSize(3).min_size_to_sample
        3
    """

    def __init__(self, min_size_to_sample: int) -> None:
        n = check_int("min_size_to_sample", min_size_to_sample, 1)
        big = sys.float_info.max
        super().__init__(1.0, n, -big, big)


class SampleToInsertRatio(RateLimiter):
    """Keep ``samples / inserts`` near ``samples_per_insert`` once the table is big enough.

    Args:
        samples_per_insert: The target ratio, > 0.
        min_size_to_sample: Items before sampling starts, >= 1.
        error_buffer: Allowed deviation: one number (centred on
            ``samples_per_insert * min_size_to_sample``) or a ``(min_diff, max_diff)`` pair.

    Raises:
        InvalidArgumentError: If the range is narrower than ``2 * max(1, samples_per_insert)``
            or lies above ``samples_per_insert * min_size_to_sample`` (it would deadlock).
    """

    def __init__(
        self,
        samples_per_insert: float,
        min_size_to_sample: int,
        error_buffer: float | tuple[float, float],
    ) -> None:
        if isinstance(error_buffer, int | float):
            offset = samples_per_insert * min_size_to_sample
            lo, hi = offset - error_buffer, offset + error_buffer
        else:
            lo, hi = (float(v) for v in error_buffer)
        if not samples_per_insert > 0:
            raise InvalidArgumentError(
                f"samples_per_insert must be > 0, got {samples_per_insert!r}"
            )
        if hi - lo < 2 * max(1.0, samples_per_insert):
            raise InvalidArgumentError(
                f"error_buffer gives the range ({lo}, {hi}), narrower than "
                f"2 * max(1, samples_per_insert) = {2 * max(1.0, samples_per_insert)}; "
                "widen error_buffer or samples and inserts could block for ever"
            )
        n = check_int("min_size_to_sample", min_size_to_sample, 1)
        if lo > samples_per_insert * n:
            raise InvalidArgumentError(
                f"error_buffer's range starts at {lo}, above samples_per_insert * "
                f"min_size_to_sample = {samples_per_insert * n}; sampling would deadlock once "
                "min_size_to_sample items are in; lower error_buffer's minimum"
            )
        super().__init__(samples_per_insert, n, lo, hi)


class Queue(RateLimiter):
    """At most ``size`` unsampled items (use :meth:`Table.queue` rather than this directly)."""

    def __init__(self, size: int) -> None:
        super().__init__(1.0, 1, 0.0, float(check_int("size", size, 1)))


class Stack(RateLimiter):
    """At most ``size`` unsampled items (use :meth:`Table.stack` rather than this directly)."""

    def __init__(self, size: int) -> None:
        super().__init__(1.0, 1, 0.0, float(check_int("size", size, 1)))
