"""Samplers: which items a sample returns, and with what probability.

A sampler sees items only as *slots* (the row of the item's first step, in
``[0, capacity)``); the :class:`~replaydb.table.Table` tells it when items appear
(:meth:`Sampler.on_insert`), disappear (:meth:`Sampler.on_remove`) or change
priority (:meth:`Sampler.update`), and asks it for slots (:meth:`Sampler.sample`).
Every sampler owns a seedable ``torch.Generator`` on the table's device, and its
whole state is tensors so it round-trips through a checkpoint exactly.

This module holds the protocol and :class:`Uniform`. The prioritized sampler
(Schaul et al. 2015, arXiv 1511.05952) and Reverb's selectors (arXiv 2102.04736)
build on the same protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from replaydb.errors import InvalidArgumentError

__all__ = ["Sampler", "Selection", "Uniform", "register_sampler", "sampler_from_config"]


@dataclass(frozen=True)
class Selection:
    """Slots chosen by a sampler.

    Attributes:
        slots: ``[n]`` int64 slots of the chosen items.
        probabilities: ``[n]`` float64 probability each was chosen with.
        weights: ``[n]`` float32 importance weights, or ``None`` for all ones.
    """

    slots: torch.Tensor
    probabilities: torch.Tensor
    weights: torch.Tensor | None = None


@runtime_checkable
class Sampler(Protocol):
    """What a table needs from a sampler. All tensors live on the bound device."""

    #: ``True`` for selectors whose choice is a deterministic order (Fifo, heaps).
    deterministic: bool

    def bind(self, capacity: int, device: torch.device) -> None:
        """Allocate state for ``capacity`` slots on ``device`` (called by the table)."""

    def on_insert(self, slots: torch.Tensor, priorities: torch.Tensor) -> None:
        """Make ``slots`` sampleable with the given float64 priorities."""

    def on_remove(self, slots: torch.Tensor) -> None:
        """Make ``slots`` unsampleable (slots that are not active are ignored)."""

    def update(self, slots: torch.Tensor, priorities: torch.Tensor) -> None:
        """Change the priorities of active ``slots``."""

    def sample(self, n: int) -> Selection:
        """Choose ``n`` active slots (with replacement). Only called when one is active."""

    def reset(self) -> None:
        """Forget every item (keep the allocation and the generator)."""

    def config(self) -> dict[str, Any]:
        """JSON-serializable constructor arguments, with a ``"type"`` key."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The sampler's state as CPU tensors (RNG state included)."""

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict` output."""


_REGISTRY: dict[str, Callable[..., Sampler]] = {}


def register_sampler(cls: type[Any]) -> type[Any]:
    """Class decorator: make a sampler rebuildable from its :meth:`Sampler.config`."""
    _REGISTRY[cls.__name__] = cls
    return cls


def sampler_from_config(config: Mapping[str, Any]) -> Sampler:
    """Rebuild a sampler from its ``config()``.

    Raises:
        InvalidArgumentError: If the type is unknown.

    Example:
        >>> sampler_from_config({"type": "Uniform", "seed": 3}).config()
        {'type': 'Uniform', 'seed': 3}
    """
    params = dict(config)
    kind = params.pop("type", None)
    if kind not in _REGISTRY:
        raise InvalidArgumentError(
            f"sampler type {kind!r} is unknown; expected one of {sorted(_REGISTRY)}"
        )
    return _REGISTRY[kind](**params)


def make_generator(device: torch.device, seed: int | None) -> torch.Generator:
    """A generator on ``device``, seeded from ``seed`` or from the global RNG once."""
    gen = torch.Generator(device=device)
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    gen.manual_seed(seed)
    return gen


@register_sampler
class Uniform:
    """Every active item equally likely, drawn with replacement.

    Args:
        seed: Seed of the sampler's generator (default: drawn once from torch's RNG).

    Example:
        >>> s = Uniform(seed=0); s.bind(4, torch.device("cpu"))
        >>> s.on_insert(torch.tensor([0, 1]), torch.ones(2, dtype=torch.float64))
        >>> sorted(set(s.sample(50).slots.tolist()))
        [0, 1]
    """

    deterministic = False

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._capacity = 0
        self._device = torch.device("cpu")
        self.generator = torch.Generator()
        self._active = torch.zeros(0, dtype=torch.bool)
        self._np_active: np.ndarray[Any, Any] | None = None
        self._count = 0
        self._high = 0  # one past the highest slot ever active

    def bind(self, capacity: int, device: torch.device) -> None:
        self._capacity = capacity
        self._device = device
        self.generator = make_generator(device, self.seed)
        self._active = torch.zeros(capacity, dtype=torch.bool, device=device)
        self._np_active = self._active.numpy() if device.type == "cpu" else None
        self._count = 0
        self._high = 0

    @property
    def size(self) -> int:
        """Number of active items."""
        return self._count

    def on_insert(self, slots: torch.Tensor, priorities: torch.Tensor) -> None:
        if slots.numel() == 0:
            return
        fresh = ~self._active.index_select(0, slots)
        self._count += int(fresh.sum())
        self._active[slots] = True
        self._high = max(self._high, int(slots.max()) + 1)

    def on_insert_contiguous(self, start: int, n: int) -> None:
        """Fast path of :meth:`on_insert` for slots ``start..start+n-1`` (no wrap).

        Slots that are already active stay active: their old item was replaced.
        """
        active = self._np_active
        if n == 1 and active is not None:
            if not active[start]:
                active[start] = True
                self._count += 1
                if start >= self._high:
                    self._high = start + 1
            return
        if active is None:
            fresh = n - int(self._active[start : start + n].sum()) if start < self._high else n
            self._active[start : start + n] = True
        else:
            if start >= self._high:
                fresh = n
            elif n == 1:
                fresh = 0 if active[start] else 1
            else:
                fresh = n - int(np.count_nonzero(active[start : start + n]))
            active[start : start + n] = True
        self._count += fresh
        if start + n > self._high:
            self._high = start + n

    def on_remove(self, slots: torch.Tensor) -> None:
        if slots.numel() == 0:
            return
        was = self._active.index_select(0, slots)
        self._count -= int(was.sum())
        self._active[slots] = False

    def update(self, slots: torch.Tensor, priorities: torch.Tensor) -> None:
        return None

    def sample(self, n: int) -> Selection:
        count, high = self._count, self._high
        prob = torch.full((n,), 1.0 / count, dtype=torch.float64, device=self._device)
        if count == high:
            slots = torch.randint(0, high, (n,), generator=self.generator, device=self._device)
            return Selection(slots, prob)
        # Active slots are scattered: rejection sampling over [0, high) is exact
        # and fast while most slots are active; fall back to listing them.
        got: list[torch.Tensor] = []
        need = n
        for _ in range(4):
            draw = int(need * high / count * 1.25) + 16
            cand = torch.randint(0, high, (draw,), generator=self.generator, device=self._device)
            cand = cand[self._active.index_select(0, cand)]
            got.append(cand[:need])
            need -= int(got[-1].numel())
            if need == 0:
                return Selection(torch.cat(got), prob)
        active = torch.nonzero(self._active[:high]).squeeze(1)
        pick = torch.randint(
            0, active.numel(), (need,), generator=self.generator, device=self._device
        )
        got.append(active.index_select(0, pick))
        return Selection(torch.cat(got), prob)

    def reset(self) -> None:
        self._active.zero_()
        self._count = 0
        self._high = 0

    def config(self) -> dict[str, Any]:
        return {"type": "Uniform", "seed": self.seed}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "rng": self.generator.get_state(),
            "active": self._active.cpu(),
            "count_high": torch.tensor([self._count, self._high], dtype=torch.int64),
        }

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.generator.set_state(state["rng"])
        self._active.copy_(state["active"])
        self._count, self._high = (int(v) for v in state["count_high"].tolist())
