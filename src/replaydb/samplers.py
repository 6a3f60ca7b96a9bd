"""Samplers: which items a sample returns, and with what probability.

A sampler sees items only as *slots* (the row of the item's first step, in
``[0, capacity)``); the :class:`~replaydb.table.Table` tells it when items appear
(:meth:`Sampler.on_insert`), disappear (:meth:`Sampler.on_remove`) or change
priority (:meth:`Sampler.update`), and asks it for slots (:meth:`Sampler.sample`).
Every sampler owns a seedable ``torch.Generator`` on the table's device, and its
whole state is tensors so it round-trips through a checkpoint exactly.

Samplers:

* :class:`Uniform` - every item equally likely.
* :class:`Prioritized` - probability proportional to ``(priority + eps) ** alpha``
  over a :class:`~replaydb.sum_tree.SumTree`, with importance weights
  ``(N * P) ** -beta`` normalised by the batch maximum (Schaul et al. 2015,
  arXiv 1511.05952).
* Reverb's deterministic selectors (arXiv 2102.04736): :class:`Fifo` (oldest
  first), :class:`Lifo` (newest first), :class:`MinHeap` (lowest priority first) and
  :class:`MaxHeap` (highest priority first); heap ties go to the oldest item.

Zero priority: the table rejects priorities that are not finite and > 0, so a
sampler never sees one; ``eps`` keeps tiny priorities reachable.

Optional fast paths a CPU table uses where a sampler has them:
``on_insert_contiguous(start, n)`` (:class:`Uniform`) and
``update_numpy(slots, priorities)`` (:class:`Prioritized`), which take plain ints or
numpy arrays instead of tensors (each tensor conversion costs about a microsecond).

Example:
    >>> from replaydb import Table
    >>> from replaydb.samplers import Prioritized
    >>> table = Table({"x": ((), "float32")}, 100, sampler=Prioritized(alpha=0.6, seed=0))
    >>> table.extend({"x": torch.zeros(8)}); table.sample(4).weights.shape
    torch.Size([4])
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from replaydb import _kernels
from replaydb.errors import InvalidArgumentError
from replaydb.sum_tree import SumTree

__all__ = [
    "Fifo",
    "Lifo",
    "MaxHeap",
    "MinHeap",
    "Prioritized",
    "Sampler",
    "Selection",
    "Uniform",
    "register_sampler",
    "sampler_from_config",
]


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
        """Choose ``n`` active slots. Only called when one is active.

        Random samplers draw with replacement. Deterministic selectors return the
        first ``min(n, active)`` distinct slots in their order (the table expands
        them by how many more times each item may be sampled).
        """

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
        InvalidArgumentError: If the config is not a mapping, the type is unknown, or
            the parameters do not fit the type.

    Example:
        >>> sampler_from_config({"type": "Uniform", "seed": 3}).config()
        {'type': 'Uniform', 'seed': 3}
    """
    if not isinstance(config, Mapping):
        raise InvalidArgumentError(
            f"a sampler config must be a mapping with a 'type' key, got {config!r}"
        )
    params = dict(config)
    kind = params.pop("type", None)
    if not isinstance(kind, str) or kind not in _REGISTRY:
        raise InvalidArgumentError(
            f"sampler type {kind!r} is unknown; expected one of {sorted(_REGISTRY)}"
        )
    try:
        return _REGISTRY[kind](**{str(k): v for k, v in params.items()})
    except TypeError as exc:
        if isinstance(exc, InvalidArgumentError):
            raise
        raise InvalidArgumentError(
            f"sampler config {dict(config)!r} does not fit {kind}: {exc}"
        ) from None


def check_seed(seed: Any) -> int | None:
    """Return ``seed`` as an int (or None); raise unless a torch generator accepts it.

    Raises:
        InvalidArgumentError: If ``seed`` is not None or an int in ``[-2**63, 2**64)``.

    Example:
        >>> check_seed(3)
        3
    """
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise InvalidArgumentError(
            f"seed must be None or an int in [0, 2**64), got {seed!r} ({type(seed).__name__})"
        )
    if not -(2**63) <= int(seed) < 2**64:
        raise InvalidArgumentError(f"seed must be None or an int in [0, 2**64), got {seed}")
    return int(seed)


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
        self.seed = check_seed(seed)
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
        if self._np_active is not None:  # CPU: numpy on the view, as in on_insert_contiguous
            s = slots.numpy()
            self._count += int(s.size - np.count_nonzero(self._np_active[s]))
            self._np_active[s] = True
            self._high = max(self._high, int(s.max()) + 1)
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
        if self._np_active is not None:
            prob = torch.from_numpy(np.full(n, 1.0 / self._count))
        else:
            prob = torch.full((n,), 1.0 / self._count, dtype=torch.float64, device=self._device)
        return Selection(self.draw(n), prob)

    def draw(self, n: int) -> torch.Tensor:
        """Just the ``n`` slots of :meth:`sample` (each active slot has probability 1/size).

        The Velora buffer's sampling path, which has no use for the probabilities.
        """
        count, high = self._count, self._high
        if count == high:
            return torch.randint(0, high, (n,), generator=self.generator, device=self._device)
        # Active slots are scattered: rejection sampling over [0, high) is exact
        # and fast while most slots are active; fall back to listing them.
        got: list[torch.Tensor] = []
        need = n
        active_np = self._np_active
        for _ in range(4):
            draw = int(need * high / count * 1.25) + 16
            cand = torch.randint(0, high, (draw,), generator=self.generator, device=self._device)
            if active_np is not None:  # CPU: numpy's masking costs a fraction of torch's
                c = cand.numpy()
                cand = torch.from_numpy(c[active_np[c]][:need])
            else:
                cand = cand[self._active.index_select(0, cand)][:need]
            got.append(cand)
            need -= int(cand.numel())
            if need == 0:
                return got[0] if len(got) == 1 else torch.cat(got)
        active = torch.nonzero(self._active[:high]).squeeze(1)
        pick = torch.randint(
            0, active.numel(), (need,), generator=self.generator, device=self._device
        )
        got.append(active.index_select(0, pick))
        return torch.cat(got)

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


def _unit_interval(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentError(f"{name} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise InvalidArgumentError(f"{name} must be in [0, 1], got {value}")
    return float(value)


@register_sampler
class Prioritized:
    """Items drawn with probability proportional to ``(priority + eps) ** alpha``.

    Each sample also returns importance weights ``(N * P(i)) ** -beta`` divided by
    their maximum over the batch, i.e. ``(P(i) / min_j P(j)) ** -beta``. New items
    get the highest priority seen so far (the table passes it in).

    Args:
        alpha: Priority exponent in [0, 1] (0: uniform).
        beta: Default importance-weight exponent in [0, 1]; ``Table.sample(beta=...)``
            overrides it per call (anneal it towards 1 during training).
        eps: Added to every priority before the exponent, >= 0.
        seed: Seed of the sampler's generator (default: drawn once from torch's RNG).

    Raises:
        InvalidArgumentError: If a number is out of range.

    Example:
        >>> s = Prioritized(alpha=1.0, eps=0.0, seed=0); s.bind(4, torch.device("cpu"))
        >>> s.on_insert(torch.tensor([0, 1]), torch.tensor([1.0, 3.0], dtype=torch.float64))
        >>> s.sample(2).probabilities.tolist()[0] in (0.25, 0.75)
        True
    """

    deterministic = False

    def __init__(
        self, alpha: float = 0.6, beta: float = 0.4, eps: float = 1e-6, seed: int | None = None
    ) -> None:
        self.alpha = _unit_interval("alpha", alpha)
        self.beta = _unit_interval("beta", beta)
        if (
            isinstance(eps, bool)
            or not isinstance(eps, int | float)
            or not (math.isfinite(eps) and eps >= 0)
        ):
            raise InvalidArgumentError(f"eps must be a finite number >= 0, got {eps!r}")
        self.eps = float(eps)
        self.seed = check_seed(seed)
        self._device = torch.device("cpu")
        self.generator = torch.Generator()
        self.tree = SumTree(1)
        self._kernels: SimpleNamespace | None = None
        self._u = torch.empty(0, dtype=torch.float64)
        self._u_np: np.ndarray[Any, Any] = self._u.numpy()
        # Scratch for update_items (never handed out).
        self._scratch_slots = np.empty(0, np.int64)
        self._scratch_leaf = np.empty(0, np.float64)

    def bind(self, capacity: int, device: torch.device) -> None:
        self._device = device
        self.generator = make_generator(device, self.seed)
        self.tree = SumTree(capacity, device=device)
        self._kernels = _kernels.get() if self.tree.numpy_path else None

    @property
    def priority_bound(self) -> float:
        """The largest priority this bound sampler accepts: its tree total stays finite.

        A leaf is ``(priority + eps) ** alpha`` and the tree sums at most ``capacity``
        leaves, so a leaf at most ``float64 max / capacity`` keeps every node finite:
        ``(float64 max / capacity) ** (1 / alpha) - eps``, about ``1.8e302`` for a
        million slots with ``alpha=1`` (infinite for ``alpha=0``). The table rejects
        larger priorities before writing anything.
        """
        if self.alpha == 0.0:
            return math.inf
        log_leaf = math.log(torch.finfo(self.tree.dtype).max / self.tree.capacity)
        log_bound = log_leaf / self.alpha
        if log_bound >= math.log(sys.float_info.max):
            return math.inf
        # A hair below the exact bound, so rounding in exp/log cannot tip a full tree over.
        return math.exp(log_bound) * (1 - 1e-9) - self.eps

    def _leaf(self, priorities: torch.Tensor) -> torch.Tensor:
        p = priorities.to(self._device, torch.float64)
        if self.eps:
            p = p + self.eps
        if self.alpha == 1.0:
            return p
        return p.pow(self.alpha)

    def _set(self, slots: torch.Tensor, priorities: torch.Tensor) -> None:
        if self.tree.numpy_path and priorities.device.type == "cpu":
            # numpy on zero-copy views: a fraction of torch's per-call overhead.
            pri = priorities if not priorities.requires_grad else priorities.detach()
            self.update_numpy(slots.numpy(), pri.numpy())
        else:
            self.tree.update(slots, self._leaf(priorities), check=False)

    def on_insert(self, slots: torch.Tensor, priorities: torch.Tensor) -> None:
        self._set(slots, priorities)

    def on_remove(self, slots: torch.Tensor) -> None:
        zeros = torch.zeros(slots.shape, dtype=torch.float64, device=slots.device)
        self.tree.update(slots, zeros, check=False)

    def update(self, slots: torch.Tensor, priorities: torch.Tensor) -> None:
        self._set(slots, priorities)

    def update_numpy(self, slots: np.ndarray[Any, Any], priorities: np.ndarray[Any, Any]) -> None:
        """:meth:`update` for int64 slots and float64 priorities as numpy arrays (CPU).

        The table's CPU path, which holds both as numpy already.
        """
        self.tree.update_numpy(slots, priorities, offset=self.eps, power=self.alpha)

    def sample(self, n: int, beta: float | None = None) -> Selection:
        """Draw ``n`` slots with replacement; ``beta`` overrides the default exponent."""
        b = self.beta if beta is None else _unit_interval("beta", beta)
        if self.tree.numpy_path:
            # CPU: numpy on zero-copy views, a fraction of torch's per-call overhead.
            # The uniform draws go into a scratch tensor (read before this returns):
            # the same numbers as a fresh torch.rand, without an allocation.
            if self._u.numel() != n:
                self._u = torch.empty(n, dtype=torch.float64)
                self._u_np = self._u.numpy()
            torch.rand(n, dtype=torch.float64, generator=self.generator, out=self._u)
            idx, lv, total = self.tree.sample_numpy(self._u_np)
            if self._kernels is not None:
                prob, ratio = self._kernels.importance(lv, total)
            else:
                prob, ratio = lv / total, lv * (1.0 / lv.min())
            if b == 0.0:
                w = np.ones(n, dtype=np.float32)
            else:
                w = np.power(ratio, -b, out=ratio).astype(np.float32)
            return Selection(torch.from_numpy(idx), torch.from_numpy(prob), torch.from_numpy(w))
        slots, leaf, total_t = self.tree.sample(n, self.generator)
        prob = leaf / total_t
        if b == 0.0:
            weights = torch.ones(n, dtype=torch.float32, device=self._device)
        else:
            weights = (leaf / leaf.min()).pow_(-b).to(torch.float32)
        return Selection(slots, prob, weights)

    @property
    def counts_items(self) -> bool:
        """Whether :meth:`draw_items` is available (a CPU tree with compiled kernels)."""
        return self._kernels is not None and self.tree.numpy_path

    def draw_items(
        self,
        n: int,
        beta: float | None,
        item_key: np.ndarray[Any, Any],
        times: np.ndarray[Any, Any],
        priority: np.ndarray[Any, Any],
    ) -> tuple[Selection, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`sample` and a table's item bookkeeping in one compiled pass (CPU).

        The same draws, probabilities and weights as :meth:`sample` from the same
        generator state; then, for each drawn slot in order, ``times[slot] += 1`` and
        the slot's key, count and priority are read, as ``Table.sample`` does. Only
        where :attr:`counts_items` is true (the table checks once).

        Args:
            n: Number of draws, > 0.
            beta: Importance-weight exponent (``None``: the sampler's own).
            item_key: ``[capacity]`` int64 keys of the table's items (a view).
            times: ``[capacity]`` int64 times sampled (a view, incremented).
            priority: ``[capacity]`` float64 priorities (a view).

        Returns:
            The :class:`Selection`, then the drawn items' keys, times sampled
            (after counting) and priorities.

        Raises:
            InvalidArgumentError: If ``beta`` is out of range or every leaf is zero
                (nothing is counted then).

        Example:
            >>> s = Prioritized(seed=0); s.bind(4, torch.device("cpu"))
            >>> s.on_insert(torch.tensor([0, 1]), torch.tensor([1.0, 3.0], dtype=torch.float64))
            >>> keys, times = np.array([0, 1, -1, -1]), np.zeros(4, np.int64)
            >>> if s.counts_items:
            ...     sel, k, t, p = s.draw_items(2, None, keys, times, np.ones(4))
            ...     assert int(times.sum()) == 2
        """
        b = self.beta if beta is None else _unit_interval("beta", beta)
        kernels = self._kernels
        assert kernels is not None
        values, offsets, _, levels = self.tree.kernel_layout()
        if self._u.numel() != n:
            self._u = torch.empty(n, dtype=torch.float64)
            self._u_np = self._u.numpy()
        torch.rand(n, dtype=torch.float64, generator=self.generator, out=self._u)
        # Fresh outputs every call (the caller keeps them): slots, keys, times and
        # probabilities, ratios, priorities as rows of two blocks.
        ints = np.empty((3, n), np.int64)
        reals = np.empty((3, n), np.float64)
        total = kernels.prio_draw(
            values, self._u_np, offsets, levels, item_key, times, priority, ints, reals
        )
        if not total > 0:
            raise InvalidArgumentError(
                "cannot search an empty SumTree (every leaf is zero); update some leaves first"
            )
        if b == 0.0:
            w = np.ones(n, dtype=np.float32)
        else:
            w = np.power(reals[1], -b, out=reals[1]).astype(np.float32)
        sel = Selection(torch.from_numpy(ints[0]), torch.from_numpy(reals[0]), torch.from_numpy(w))
        return sel, torch.from_numpy(ints[1]), torch.from_numpy(ints[2]), torch.from_numpy(reals[2])

    def update_items(
        self,
        keys: np.ndarray[Any, Any],
        priorities: np.ndarray[Any, Any],
        item_key: np.ndarray[Any, Any],
        priority: np.ndarray[Any, Any],
        limit: float,
    ) -> tuple[int, float, int]:
        """A table's ``update_priorities`` on CPU in two compiled passes.

        Checks every priority (finite, > 0, at most ``limit``) before writing any;
        then writes the priority of each key that still names its item
        (``item_key[key % capacity] == key``) and sets its leaf to
        ``(priority + eps) ** alpha`` as :meth:`update_numpy` does. Only where
        :attr:`counts_items` is true.

        Args:
            keys: ``[K]`` int64 item keys.
            priorities: ``[K]`` float64 new priorities.
            item_key: ``[capacity]`` int64 keys of the table's items (a view).
            priority: ``[capacity]`` float64 priorities (a view, written).
            limit: The largest priority accepted.

        Returns:
            ``(live, highest live priority, bad)``: ``bad`` is the position of the
            first rejected priority (nothing written) or ``-1``.

        Example:
            >>> s = Prioritized(seed=0); s.bind(4, torch.device("cpu"))
            >>> keys, pri = np.array([0, 1, -1, -1]), np.ones(4)
            >>> if s.counts_items:
            ...     assert s.update_items(np.array([1, 6]), np.array([2.0, 3.0]), keys, pri,
            ...                           1e9) == (1, 2.0, -1)
        """
        kernels = self._kernels
        assert kernels is not None
        n = keys.shape[0]
        if self._scratch_slots.shape[0] < n:
            self._scratch_slots = np.empty(n, np.int64)
            self._scratch_leaf = np.empty(n, np.float64)
        m, hi, bad = kernels.prio_updates(
            keys,
            priorities,
            item_key,
            priority,
            limit,
            self.eps,
            self._scratch_slots,
            self._scratch_leaf,
        )
        if bad >= 0 or not m:
            return 0, 0.0, int(bad)
        slots, leaf = self._scratch_slots[:m], self._scratch_leaf[:m]
        if self.alpha != 1.0:
            np.power(leaf, self.alpha, out=leaf)
        values, offsets, sizes, levels = self.tree.kernel_layout()
        kernels.tree_update(values, slots, leaf, offsets, sizes, levels)
        return int(m), float(hi), -1

    def reset(self) -> None:
        self.tree.reset()

    def config(self) -> dict[str, Any]:
        return {
            "type": "Prioritized",
            "alpha": self.alpha,
            "beta": self.beta,
            "eps": self.eps,
            "seed": self.seed,
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"rng": self.generator.get_state(), "tree": self.tree.state_dict()["tree"]}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.tree.load_state_dict({"tree": state["tree"]})
        self.generator.set_state(state["rng"])


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
