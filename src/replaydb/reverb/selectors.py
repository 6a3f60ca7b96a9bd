"""Item selectors: which item a table samples next, and which it removes when full.

Reverb's presets (``reverb.selectors``), each a small description that a
:class:`~replaydb.reverb.Table` turns into a replaydb sampler of its own:

===============  ==========================================  =================
selector         replaydb sampler                            deterministic
===============  ==========================================  =================
``Uniform()``    :class:`replaydb.samplers.Uniform`          no
``Prioritized``  :class:`replaydb.samplers.Prioritized`      no
``Fifo()``       :class:`replaydb.samplers.Fifo`             yes
``Lifo()``       :class:`replaydb.samplers.Lifo`             yes
``MinHeap()``    :class:`replaydb.samplers.MinHeap`          yes
``MaxHeap()``    :class:`replaydb.samplers.MaxHeap`          yes
===============  ==========================================  =================

As a *remover*, replaydb tables always evict the oldest item when full (Reverb's
``Fifo``, the remover TF-Agents and sbsim use); another remover is accepted and
reported by ``TableInfo.remover_options`` but eviction stays oldest-first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from replaydb import samplers
from replaydb._validate import check_unit_interval

__all__ = ["Fifo", "Lifo", "MaxHeap", "MinHeap", "Prioritized", "Selector", "Uniform"]


@dataclass(frozen=True)
class KeyDistributionOptions:
    """What ``TableInfo.sampler_options`` / ``remover_options`` report (Reverb's proto fields).

    Attributes:
        kind: ``"uniform"``, ``"prioritized"``, ``"fifo"``, ``"lifo"`` or ``"heap"``.
        is_deterministic: Whether the selector's choice is a function of the items.
        priority_exponent: The exponent of a prioritized selector, else 0.
        min_heap: For heaps: whether the lowest priority comes first.
    """

    kind: str
    is_deterministic: bool
    priority_exponent: float = 0.0
    min_heap: bool = False


class Selector:
    """Base of the presets: builds a fresh replaydb sampler per table."""

    kind = "uniform"
    is_deterministic = False

    def make_sampler(self) -> Any:
        """A new replaydb sampler implementing this selector."""
        raise NotImplementedError

    def options(self) -> KeyDistributionOptions:
        """The options a :class:`~replaydb.reverb.tables.TableInfo` reports."""
        return KeyDistributionOptions(self.kind, self.is_deterministic)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Uniform(Selector):
    """Every item equally likely.

    Example:
        >>> Uniform().is_deterministic
        False
    """

    def make_sampler(self) -> Any:
        return samplers.Uniform()


class Prioritized(Selector):
    """Items drawn with probability proportional to ``priority ** priority_exponent``.

    Args:
        priority_exponent: The exponent, in [0, 1].

    Raises:
        InvalidArgumentError: If the exponent is outside [0, 1].

    Example:
        >>> Prioritized(0.8).priority_exponent
        0.8
    """

    kind = "prioritized"

    def __init__(self, priority_exponent: float) -> None:
        self.priority_exponent = check_unit_interval("priority_exponent", priority_exponent)

    def make_sampler(self) -> Any:
        return samplers.Prioritized(alpha=self.priority_exponent, beta=0.0, eps=0.0)

    def options(self) -> KeyDistributionOptions:
        return KeyDistributionOptions(self.kind, False, self.priority_exponent)

    def __repr__(self) -> str:
        return f"Prioritized(priority_exponent={self.priority_exponent})"


class Fifo(Selector):
    """The oldest item first.

    Example:
        >>> Fifo().is_deterministic
        True
    """

    kind = "fifo"
    is_deterministic = True

    def make_sampler(self) -> Any:
        return samplers.Fifo()


class Lifo(Selector):
    """The newest item first."""

    kind = "lifo"
    is_deterministic = True

    def make_sampler(self) -> Any:
        return samplers.Lifo()


class MinHeap(Selector):
    """The item with the lowest priority first."""

    kind = "heap"
    is_deterministic = True

    def make_sampler(self) -> Any:
        return samplers.MinHeap()

    def options(self) -> KeyDistributionOptions:
        return KeyDistributionOptions(self.kind, True, min_heap=True)


class MaxHeap(Selector):
    """The item with the highest priority first."""

    kind = "heap"
    is_deterministic = True

    def make_sampler(self) -> Any:
        return samplers.MaxHeap()
