"""Rate limiters: when a table lets inserts and samples through (Reverb semantics).

Every limiter is one base of four numbers (Reverb, arXiv 2102.04736, section 3.3):
``samples_per_insert``, ``min_size_to_sample``, ``min_diff`` and ``max_diff``. With
``diff = inserts * samples_per_insert - samples``:

* a sample of ``n`` items may go when ``size >= min_size_to_sample`` and
  ``diff - n >= min_diff``;
* an insert of ``n`` items may go when ``size + n <= min_size_to_sample`` (filling up
  is free) or ``diff + n * samples_per_insert <= max_diff``.

The presets set the four numbers: :class:`MinSize`, :class:`SampleToInsertRatio`,
:class:`Queue`, :class:`Stack`. A blocked call waits on the table's condition
variable; the table raises instead of waiting when no other thread could ever
unblock it. Counters are part of every checkpoint.

Example:
    >>> from replaydb import Table
    >>> from replaydb.rate_limiters import SampleToInsertRatio
    >>> limiter = SampleToInsertRatio(4.0, min_size_to_sample=100, error_buffer=50.0)
    >>> table = Table({"x": ((), "float32")}, 1000, rate_limiter=limiter)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from replaydb._validate import check_int, is_number
from replaydb.errors import InvalidArgumentError

__all__ = [
    "MinSize",
    "Queue",
    "RateLimiter",
    "SampleToInsertRatio",
    "Stack",
    "rate_limiter_from_config",
]


class RateLimiter:
    """The base limiter: four numbers and two counters.

    Args:
        samples_per_insert: How many samples each insert pays for.
        min_size_to_sample: Items the table must hold before any sample.
        min_diff: Lowest allowed ``inserts * samples_per_insert - samples``.
        max_diff: Highest allowed ``inserts * samples_per_insert - samples``.

    Raises:
        InvalidArgumentError: If a number is out of range.

    Example:
        >>> lim = RateLimiter(1.0, 1, -math.inf, math.inf)
        >>> lim.can_sample(1, size=0), lim.can_sample(1, size=1)
        (False, True)
    """

    def __init__(
        self,
        samples_per_insert: float,
        min_size_to_sample: int,
        min_diff: float,
        max_diff: float,
    ) -> None:
        _number("samples_per_insert", samples_per_insert)
        if not (samples_per_insert > 0 and math.isfinite(samples_per_insert)):
            raise InvalidArgumentError(
                f"samples_per_insert must be a finite number > 0, got {samples_per_insert!r}"
            )
        _min_size(min_size_to_sample)
        _number("min_diff", min_diff)
        _number("max_diff", max_diff)
        if not min_diff <= max_diff:
            raise InvalidArgumentError(
                f"min_diff must be <= max_diff, got min_diff={min_diff}, max_diff={max_diff}"
            )
        self.samples_per_insert = float(samples_per_insert)
        self.min_size_to_sample = int(min_size_to_sample)
        self.min_diff = float(min_diff)
        self.max_diff = float(max_diff)
        self.inserts = 0
        self.samples = 0

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "type")
        return f"{self.config()['type']}({params})"

    @property
    def diff(self) -> float:
        """``inserts * samples_per_insert - samples``."""
        return self.inserts * self.samples_per_insert - self.samples

    def can_sample(self, n: int, size: int) -> bool:
        """Whether a sample of ``n`` items may go now from a table holding ``size``."""
        return size >= max(self.min_size_to_sample, 1) and self.diff - n >= self.min_diff

    def can_insert(self, n: int, size: int) -> bool:
        """Whether an insert of ``n`` items may go now into a table holding ``size``."""
        if size + n <= self.min_size_to_sample:
            return True
        return self.diff + n * self.samples_per_insert <= self.max_diff

    def never_samples(self, n: int) -> bool:
        """Whether a sample of ``n`` items can never go, whatever else happens.

        ``diff`` never rises above ``max(max_diff, samples_per_insert *
        min_size_to_sample)`` (inserts beyond that block), so a sample needing
        more than that above ``min_diff`` waits for ever.
        """
        ceiling = max(self.max_diff, self.samples_per_insert * self.min_size_to_sample)
        return ceiling - n < self.min_diff

    def never_inserts(self, n: int) -> bool:
        """Whether an insert of ``n`` items can never go, whatever else happens.

        ``diff`` never drops below ``min_diff`` (samples beyond that block), so an
        insert that needs more room than ``max_diff - min_diff`` and does not fit
        under ``min_size_to_sample`` waits for ever.
        """
        return (
            n > self.min_size_to_sample
            and self.min_diff + n * self.samples_per_insert > self.max_diff
        )

    def why_sample_blocked(self, n: int, size: int) -> str:
        """Say in words why :meth:`can_sample` is false."""
        need = max(self.min_size_to_sample, 1)
        if size < need:
            return f"the table holds {size} item(s) and {self!r} needs {need} before sampling"
        return (
            f"{self!r} allows {max(0.0, self.diff - self.min_diff):.0f} more sample(s) before "
            f"further inserts (inserts={self.inserts}, samples={self.samples}); "
            f"this call wants {n}"
        )

    def why_insert_blocked(self, n: int, size: int) -> str:
        """Say in words why :meth:`can_insert` is false."""
        return (
            f"{self!r} allows no more inserts until items are sampled "
            f"(inserts={self.inserts}, samples={self.samples}, size={size}); "
            f"this call inserts {n}"
        )

    def on_insert(self, n: int) -> None:
        """Count ``n`` inserted items."""
        self.inserts += n

    def on_sample(self, n: int) -> None:
        """Count ``n`` sampled items."""
        self.samples += n

    def reset(self) -> None:
        """Zero the counters."""
        self.inserts = 0
        self.samples = 0

    def config(self) -> dict[str, Any]:
        """JSON-serializable constructor arguments with a ``"type"`` key."""
        return {
            "type": "RateLimiter",
            "samples_per_insert": self.samples_per_insert,
            "min_size_to_sample": self.min_size_to_sample,
            "min_diff": _num(self.min_diff),
            "max_diff": _num(self.max_diff),
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The counters as a tensor."""
        return {"counts": torch.tensor([self.inserts, self.samples], dtype=torch.int64)}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore the counters."""
        self.inserts, self.samples = (int(v) for v in state["counts"].tolist())


def _number(name: str, value: Any) -> None:
    """Raise unless ``value`` is a real number (not a bool, string or None; not NaN)."""
    if not is_number(value):
        raise InvalidArgumentError(
            f"{name} must be a number, got {value!r} ({type(value).__name__})"
        )
    if value != value:
        raise InvalidArgumentError(f"{name} must be a number, got NaN")


def _min_size(value: Any) -> None:
    """Raise unless ``value`` is a whole number >= 0 (``min_size_to_sample``)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float | np.integer | np.floating)
        or not math.isfinite(value)
        or int(value) != value
        or value < 0
    ):
        raise InvalidArgumentError(f"min_size_to_sample must be an int >= 0, got {value!r}")


def _num(x: float) -> float | str:
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")


class MinSize(RateLimiter):
    """Block sampling until the table holds ``min_size`` items; never block inserts.

    Example:
        >>> MinSize(100).can_sample(1, size=99)
        False
    """

    def __init__(self, min_size: int = 1) -> None:
        super().__init__(1.0, check_int("min_size", min_size, 1), -math.inf, math.inf)

    def config(self) -> dict[str, Any]:
        return {"type": "MinSize", "min_size": self.min_size_to_sample}


class SampleToInsertRatio(RateLimiter):
    """Keep the samples-per-insert ratio near a target, within an error buffer.

    Args:
        samples_per_insert: Target number of times each item is sampled.
        min_size_to_sample: Items needed before sampling starts.
        error_buffer: How far ``diff`` may stray from its target (a number: that
            much either side of ``samples_per_insert * min_size_to_sample``; a pair:
            ``(min_diff, max_diff)``). Must span at least ``2 * max(1, samples_per_insert)``
            or inserts and samples could block each other.

    Example:
        >>> lim = SampleToInsertRatio(4.0, 10, 40.0)
        >>> lim.min_diff, lim.max_diff
        (0.0, 80.0)
    """

    def __init__(
        self,
        samples_per_insert: float,
        min_size_to_sample: int,
        error_buffer: float | tuple[float, float],
    ) -> None:
        _number("samples_per_insert", samples_per_insert)
        _min_size(min_size_to_sample)
        if isinstance(error_buffer, tuple | list):
            if len(error_buffer) != 2:
                raise InvalidArgumentError(
                    f"error_buffer must be a number or a (min_diff, max_diff) pair, got "
                    f"{error_buffer!r}"
                )
            _number("error_buffer[0]", error_buffer[0])
            _number("error_buffer[1]", error_buffer[1])
            lo, hi = (float(v) for v in error_buffer)
        else:
            _number("error_buffer", error_buffer)
            if not error_buffer >= 0:
                raise InvalidArgumentError(f"error_buffer must be >= 0, got {error_buffer}")
            offset = samples_per_insert * min_size_to_sample
            lo, hi = offset - float(error_buffer), offset + float(error_buffer)
        need = 2 * max(1.0, samples_per_insert)
        if hi - lo < need:
            raise InvalidArgumentError(
                f"error_buffer spans {hi - lo} but must span at least "
                f"2 * max(1, samples_per_insert) = {need}, or inserts and samples "
                "could block each other forever; widen error_buffer"
            )
        super().__init__(samples_per_insert, min_size_to_sample, lo, hi)
        self._error_buffer = error_buffer

    def config(self) -> dict[str, Any]:
        buf = self._error_buffer
        return {
            "type": "SampleToInsertRatio",
            "samples_per_insert": self.samples_per_insert,
            "min_size_to_sample": self.min_size_to_sample,
            "error_buffer": list(buf) if isinstance(buf, tuple | list) else buf,
        }


class Queue(RateLimiter):
    """At most ``size`` unsampled items; each item sampled once, oldest first with ``Fifo``.

    Pair with ``max_times_sampled=1`` (``Table.queue`` does both).

    Example:
        >>> q = Queue(2); q.can_insert(3, size=0)
        False
    """

    def __init__(self, size: int) -> None:
        self.size = check_int("size", size, 1)
        super().__init__(1.0, 1, 0.0, float(self.size))

    def config(self) -> dict[str, Any]:
        return {"type": "Queue", "size": self.size}


class Stack(RateLimiter):
    """At most ``size`` unsampled items; each sampled once, newest first with ``Lifo``.

    The same numbers as :class:`Queue`; pair with ``max_times_sampled=1``
    (``Table.stack`` does both).

    Example:
        >>> s = Stack(2); s.can_insert(2, size=0), s.can_sample(1, size=0)
        (True, False)
    """

    def __init__(self, size: int) -> None:
        self.size = check_int("size", size, 1)
        super().__init__(1.0, 1, 0.0, float(self.size))

    def config(self) -> dict[str, Any]:
        return {"type": "Stack", "size": self.size}


_LIMITERS: dict[str, type[RateLimiter]] = {
    "RateLimiter": RateLimiter,
    "MinSize": MinSize,
    "SampleToInsertRatio": SampleToInsertRatio,
    "Queue": Queue,
    "Stack": Stack,
}


def rate_limiter_from_config(config: Mapping[str, Any]) -> RateLimiter:
    """Rebuild a limiter from its ``config()``.

    Raises:
        InvalidArgumentError: If the config is not a mapping, names an unknown type,
            or its parameters do not fit the type.

    Example:
        >>> rate_limiter_from_config({"type": "MinSize", "min_size": 5})
        MinSize(min_size=5)
    """
    if not isinstance(config, Mapping):
        raise InvalidArgumentError(
            f"a rate limiter config must be a mapping with a 'type' key, got {config!r}"
        )
    params = dict(config)
    kind = params.pop("type", None)
    if not isinstance(kind, str) or kind not in _LIMITERS:
        raise InvalidArgumentError(
            f"rate limiter type {kind!r} is unknown; expected one of {sorted(_LIMITERS)}"
        )
    for k in ("min_diff", "max_diff"):
        if isinstance(params.get(k), str):
            if params[k] not in ("inf", "-inf"):
                raise InvalidArgumentError(
                    f"rate limiter config: {k} must be a number, 'inf' or '-inf', got {params[k]!r}"
                )
            params[k] = float(params[k])
    if isinstance(params.get("error_buffer"), list):
        params["error_buffer"] = tuple(params["error_buffer"])
    try:
        return _LIMITERS[kind](**{str(k): v for k, v in params.items()})
    except TypeError as exc:
        raise InvalidArgumentError(
            f"rate limiter config {dict(config)!r} does not fit {kind}: {exc}"
        ) from None
