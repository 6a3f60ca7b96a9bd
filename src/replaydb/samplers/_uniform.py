"""The uniform sampler: every active item equally likely, drawn with replacement.

Active slots are a bool column, kept as a numpy view on CPU (numpy's stores and
masks cost a fraction of torch's per call) and as a tensor elsewhere: one
:class:`_ActiveSet` per device kind, chosen when the sampler is bound.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from replaydb import _devices
from replaydb.samplers._base import (
    FastPaths,
    Selection,
    check_seed,
    make_generator,
    register_sampler,
)

__all__ = ["Uniform"]


class _TorchActive:
    """Active slots as a bool tensor on any device, with their count and extent."""

    name = "torch"

    def __init__(self, capacity: int, device: torch.device) -> None:
        self.device = device
        self.active = torch.zeros(capacity, dtype=torch.bool, device=device)
        self.count = 0  # active slots
        self.high = 0  # one past the highest slot ever active

    def insert(self, slots: torch.Tensor) -> None:
        fresh = ~self.active.index_select(0, slots)
        self.count += int(fresh.sum())
        self.active[slots] = True
        self.high = max(self.high, int(slots.max()) + 1)

    def insert_contiguous(self, start: int, n: int) -> None:
        """Slots ``start..start+n-1`` (no wrap); active ones stay active (replaced)."""
        fresh = n - int(self.active[start : start + n].sum()) if start < self.high else n
        self.active[start : start + n] = True
        self.count += fresh
        if start + n > self.high:
            self.high = start + n

    def remove(self, slots: torch.Tensor) -> None:
        was = self.active.index_select(0, slots)
        self.count -= int(was.sum())
        self.active[slots] = False

    def probabilities(self, n: int) -> torch.Tensor:
        return torch.full((n,), 1.0 / self.count, dtype=torch.float64, device=self.device)

    def keep_active(self, cand: torch.Tensor, need: int) -> torch.Tensor:
        """The first ``need`` of the candidate slots ``cand`` that are active."""
        return cand[self.active.index_select(0, cand)][:need]


class _HostActive(_TorchActive):
    """CPU: the same through a numpy view (numpy's stores and masks cost less per call)."""

    name = "numpy"

    def __init__(self, capacity: int, device: torch.device) -> None:
        super().__init__(capacity, device)
        self.view: np.ndarray[Any, Any] = self.active.numpy()

    def insert(self, slots: torch.Tensor) -> None:
        s = slots.numpy()
        self.count += int(s.size - np.count_nonzero(self.view[s]))
        self.view[s] = True
        self.high = max(self.high, int(s.max()) + 1)

    def insert_contiguous(self, start: int, n: int) -> None:
        active = self.view
        if n == 1:  # the hot path of a per-step add
            if not active[start]:
                active[start] = True
                self.count += 1
                if start >= self.high:
                    self.high = start + 1
            return
        fresh = n if start >= self.high else n - int(np.count_nonzero(active[start : start + n]))
        active[start : start + n] = True
        self.count += fresh
        if start + n > self.high:
            self.high = start + n

    def probabilities(self, n: int) -> torch.Tensor:
        return torch.from_numpy(np.full(n, 1.0 / self.count))

    def keep_active(self, cand: torch.Tensor, need: int) -> torch.Tensor:
        c = cand.numpy()
        return torch.from_numpy(c[self.view[c]][:need])


def _active_set(capacity: int, device: torch.device) -> _TorchActive:
    if _devices.host_path(device, torch.bool):
        return _HostActive(capacity, device)
    return _TorchActive(capacity, device)


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
        self.seed = check_seed(seed)
        self._device = torch.device("cpu")
        self.generator = torch.Generator()
        #: The active slots on the bound device's path (chosen by :meth:`bind`).
        self.engine: _TorchActive = _TorchActive(0, self._device)

    def bind(self, capacity: int, device: torch.device) -> None:
        self._device = device
        self.generator = make_generator(device, self.seed)
        self.engine = _active_set(capacity, device)

    def fast_paths(self) -> FastPaths:
        """A contiguous insert and a slots-only draw (see :class:`FastPaths`)."""
        return FastPaths(insert_contiguous=self.engine.insert_contiguous, draw=self.draw)

    @property
    def size(self) -> int:
        """Number of active items."""
        return self.engine.count

    def on_insert(self, slots: torch.Tensor, priorities: torch.Tensor) -> None:
        if slots.numel():
            self.engine.insert(slots)

    def on_insert_contiguous(self, start: int, n: int) -> None:
        """Fast path of :meth:`on_insert` for slots ``start..start+n-1`` (no wrap).

        Slots that are already active stay active: their old item was replaced.
        """
        self.engine.insert_contiguous(start, n)

    def on_remove(self, slots: torch.Tensor) -> None:
        if slots.numel():
            self.engine.remove(slots)

    def update(self, slots: torch.Tensor, priorities: torch.Tensor) -> None:
        return None

    def sample(self, n: int) -> Selection:
        return Selection(self.draw(n), self.engine.probabilities(n))

    def draw(self, n: int) -> torch.Tensor:
        """Just the ``n`` slots of :meth:`sample` (each active slot has probability 1/size).

        The Velora buffer's sampling path, which has no use for the probabilities.
        """
        act = self.engine
        count, high = act.count, act.high
        if count == high:
            return torch.randint(0, high, (n,), generator=self.generator, device=self._device)
        # Active slots are scattered: rejection sampling over [0, high) is exact
        # and fast while most slots are active; fall back to listing them.
        got: list[torch.Tensor] = []
        need = n
        for _ in range(4):
            draw = int(need * high / count * 1.25) + 16
            cand = torch.randint(0, high, (draw,), generator=self.generator, device=self._device)
            cand = act.keep_active(cand, need)
            got.append(cand)
            need -= int(cand.numel())
            if need == 0:
                return got[0] if len(got) == 1 else torch.cat(got)
        active = torch.nonzero(act.active[:high]).squeeze(1)
        pick = torch.randint(
            0, active.numel(), (need,), generator=self.generator, device=self._device
        )
        got.append(active.index_select(0, pick))
        return torch.cat(got)

    def reset(self) -> None:
        self.engine.active.zero_()
        self.engine.count = 0
        self.engine.high = 0

    def config(self) -> dict[str, Any]:
        return {"type": "Uniform", "seed": self.seed}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "rng": self.generator.get_state(),
            "active": self.engine.active.cpu(),
            "count_high": torch.tensor([self.engine.count, self.engine.high], dtype=torch.int64),
        }

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.generator.set_state(state["rng"])
        self.engine.active.copy_(state["active"])
        self.engine.count, self.engine.high = (int(v) for v in state["count_high"].tolist())
