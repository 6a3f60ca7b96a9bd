"""Reverb's deterministic selectors: Fifo, Lifo, MinHeap and MaxHeap (arXiv 2102.04736).

Each keeps the insertion number and priority of every slot (torch columns on the
bound device, the same ops everywhere) and sorts the active slots per sample,
O(active log active), which suits queue-sized tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from replaydb.samplers._base import Selection, register_sampler

__all__ = ["Fifo", "Lifo", "MaxHeap", "MinHeap"]


class _Selector:
    """Shared state of the deterministic selectors: insertion order and priority.

    ``order`` is the insertion number of each active slot (``-1``: inactive); a
    sample sorts the active slots by the subclass's key. Sorting is O(active log
    active) per sample, which suits queue-sized tables.
    """

    deterministic = True

    def __init__(self) -> None:
        self._device = torch.device("cpu")
        self._order = torch.full((0,), -1, dtype=torch.int64)
        self._priority = torch.zeros(0, dtype=torch.float64)
        self._counter = 0

    def bind(self, capacity: int, device: torch.device) -> None:
        self._device = device
        self._order = torch.full((capacity,), -1, dtype=torch.int64, device=device)
        self._priority = torch.zeros(capacity, dtype=torch.float64, device=device)
        self._counter = 0

    def on_insert(self, slots: torch.Tensor, priorities: torch.Tensor) -> None:
        m = slots.numel()
        if m == 0:
            return
        self._order[slots] = torch.arange(
            self._counter, self._counter + m, dtype=torch.int64, device=self._device
        )
        self._priority[slots] = priorities.to(self._device, torch.float64)
        self._counter += m

    def on_remove(self, slots: torch.Tensor) -> None:
        if slots.numel():
            self._order[slots] = -1

    def update(self, slots: torch.Tensor, priorities: torch.Tensor) -> None:
        if slots.numel():
            self._priority[slots] = priorities.to(self._device, torch.float64)

    #: The order: "fifo", "lifo", "min" or "max" (set by each selector).
    _kind = "fifo"

    def _rank(self, active: torch.Tensor, k: int) -> torch.Tensor:
        """Positions into ``active`` of the first ``k`` in selection order."""
        if self._kind in ("fifo", "lifo"):
            order = self._order.index_select(0, active)
            return torch.topk(order, k, largest=self._kind == "lifo", sorted=True).indices
        # Oldest first among equal priorities: order by insertion, then a stable
        # sort by priority keeps that order within ties.
        by_age = torch.argsort(self._order.index_select(0, active))
        pri = self._priority.index_select(0, active.index_select(0, by_age))
        ranked = torch.sort(pri, descending=self._kind == "max", stable=True).indices
        return by_age.index_select(0, ranked[:k])

    def sample(self, n: int) -> Selection:
        active = torch.nonzero(self._order >= 0).squeeze(1)
        k = min(n, int(active.numel()))
        slots = active.index_select(0, self._rank(active, k))
        prob = torch.ones(k, dtype=torch.float64, device=self._device)
        return Selection(slots, prob)

    def reset(self) -> None:
        self._order.fill_(-1)
        self._counter = 0

    def config(self) -> dict[str, Any]:
        return {"type": type(self).__name__}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "order": self._order.cpu(),
            "priority": self._priority.cpu(),
            "counter": torch.tensor([self._counter], dtype=torch.int64),
        }

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self._order.copy_(state["order"])
        self._priority.copy_(state["priority"])
        self._counter = int(state["counter"][0])


@register_sampler
class Fifo(_Selector):
    """Oldest item first (Reverb's ``Fifo``); pair with ``max_times_sampled`` for a queue.

    Example:
        >>> s = Fifo(); s.bind(4, torch.device("cpu"))
        >>> s.on_insert(torch.tensor([2, 0]), torch.ones(2, dtype=torch.float64))
        >>> s.sample(2).slots.tolist()
        [2, 0]
    """

    _kind = "fifo"


@register_sampler
class Lifo(_Selector):
    """Newest item first (Reverb's ``Lifo``); pair with ``max_times_sampled`` for a stack.

    Example:
        >>> s = Lifo(); s.bind(4, torch.device("cpu"))
        >>> s.on_insert(torch.tensor([2, 0]), torch.ones(2, dtype=torch.float64))
        >>> s.sample(2).slots.tolist()
        [0, 2]
    """

    _kind = "lifo"


@register_sampler
class MinHeap(_Selector):
    """Lowest priority first, oldest first among equals (Reverb's ``MinHeap``).

    Example:
        >>> s = MinHeap(); s.bind(4, torch.device("cpu"))
        >>> s.on_insert(torch.tensor([0, 1]), torch.tensor([2.0, 1.0], dtype=torch.float64))
        >>> s.sample(1).slots.tolist()
        [1]
    """

    _kind = "min"


@register_sampler
class MaxHeap(_Selector):
    """Highest priority first, oldest first among equals (Reverb's ``MaxHeap``).

    Example:
        >>> s = MaxHeap(); s.bind(4, torch.device("cpu"))
        >>> s.on_insert(torch.tensor([0, 1]), torch.tensor([2.0, 1.0], dtype=torch.float64))
        >>> s.sample(1).slots.tolist()
        [0]
    """

    _kind = "max"
