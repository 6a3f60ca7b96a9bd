"""The prioritized sampler: probability proportional to ``(priority + eps) ** alpha``.

Leaves ``(priority + eps) ** alpha`` live in a :class:`~replaydb.sum_tree.SumTree`;
a sample draws against its total and returns importance weights
``(N * P(i)) ** -beta`` normalised by the batch maximum (Schaul et al. 2015, arXiv
1511.05952). The device path is the tree's (chosen when the sampler is bound):
numpy views on CPU, with compiled passes that fuse a draw or an update with the
table's item bookkeeping where numba is installed (declared through
:meth:`Prioritized.fast_paths`), torch elsewhere.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from replaydb import _kernels
from replaydb.errors import InvalidArgumentError
from replaydb.samplers._base import (
    FastPaths,
    Selection,
    check_seed,
    make_generator,
    register_sampler,
    unit_interval,
)
from replaydb.sum_tree import SumTree

__all__ = ["Prioritized"]


def _importance_numpy(lv: np.ndarray[Any, Any], total: float) -> tuple[Any, Any]:
    """Probabilities ``lv / total`` and ratios ``lv / min(lv)`` (as ``lv * (1 / min)``)."""
    return lv / total, lv * (1.0 / lv.min())


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
        self.alpha = unit_interval("alpha", alpha)
        self.beta = unit_interval("beta", beta)
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
        self._host = False
        # The device-dependent steps, chosen by bind (see there).
        self._set: Callable[[torch.Tensor, torch.Tensor], None] = self._set_torch
        self._draw: Callable[[int, float], Selection] = self._draw_torch
        self._importance: Callable[[Any, float], tuple[Any, Any]] = _importance_numpy
        self._u = torch.empty(0, dtype=torch.float64)
        self._u_np: np.ndarray[Any, Any] = self._u.numpy()
        self._layout: tuple[Any, Any, Any, int] | None = None
        # Scratch for update_items (never handed out).
        self._scratch_slots = np.empty(0, np.int64)
        self._scratch_leaf = np.empty(0, np.float64)

    def bind(self, capacity: int, device: torch.device) -> None:
        self._device = device
        self.generator = make_generator(device, self.seed)
        self.tree = SumTree(capacity, device=device)
        # The device path is the tree's, chosen once: numpy views on CPU (with the
        # fused kernels where the tree compiled its own), torch elsewhere.
        self._host = self.tree.numpy_path
        self._kernels = _kernels.get() if self.tree.engine.name == "numba" else None
        # The tree as the kernels take it (views of the bound tree's tensor).
        self._layout = self.tree.kernel_layout() if self._kernels is not None else None
        self._set = self._set_host if self._host else self._set_torch
        self._draw = self._draw_host if self._host else self._draw_torch
        self._importance = self._kernels.importance if self._kernels else _importance_numpy

    def fast_paths(self) -> FastPaths:
        """Numpy priority updates on CPU, fused item passes with numba, the bound and total.

        See :class:`~replaydb.samplers.FastPaths`; call after :meth:`bind`.
        """
        return FastPaths(
            update_numpy=self.update_numpy if self._host else None,
            items=self if self._kernels is not None else None,
            priority_bound=self.priority_bound,
            takes_beta=True,
            priority_total=self._total,
        )

    def _total(self) -> float:
        return self.tree.total

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

    def _set_host(self, slots: torch.Tensor, priorities: torch.Tensor) -> None:
        # numpy on zero-copy views: a fraction of torch's per-call overhead.
        pri = priorities if not priorities.requires_grad else priorities.detach()
        self.update_numpy(slots.numpy(), pri.numpy())

    def _set_torch(self, slots: torch.Tensor, priorities: torch.Tensor) -> None:
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
        b = self.beta if beta is None else unit_interval("beta", beta)
        return self._draw(n, b)

    def _draw_host(self, n: int, b: float) -> Selection:
        # CPU: numpy on zero-copy views, a fraction of torch's per-call overhead.
        # The uniform draws go into a scratch tensor (read before this returns):
        # the same numbers as a fresh torch.rand, without an allocation.
        if self._u.numel() != n:
            self._u = torch.empty(n, dtype=torch.float64)
            self._u_np = self._u.numpy()
        torch.rand(n, dtype=torch.float64, generator=self.generator, out=self._u)
        idx, lv, total = self.tree.sample_numpy(self._u_np)
        prob, ratio = self._importance(lv, total)
        if b == 0.0:
            w = np.ones(n, dtype=np.float32)
        else:
            w = np.power(ratio, -b, out=ratio).astype(np.float32)
        return Selection(torch.from_numpy(idx), torch.from_numpy(prob), torch.from_numpy(w))

    def _draw_torch(self, n: int, b: float) -> Selection:
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
        return self._kernels is not None

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
        b = self.beta if beta is None else unit_interval("beta", beta)
        kernels, layout = self._kernels, self._layout
        assert kernels is not None
        assert layout is not None
        values, offsets, _, levels = layout
        if self._u_np.shape[0] != n:
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

    def draw_rows(
        self,
        n: int,
        beta: float | None,
        item_key: np.ndarray[Any, Any],
        times: np.ndarray[Any, Any],
        rows: np.ndarray[Any, Any],
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """:meth:`draw_items` for transitions: the drawn rows, keys and weights in one pass.

        The same draws and counts as :meth:`draw_items` from the same generator
        state, and the same weights; instead of the slots, probabilities and
        priorities it returns the drawn slots' rows of ``rows`` (a packed
        ``[capacity, W]`` array, e.g. a table's one dtype group), gathered in the
        same compiled pass. Only where :attr:`counts_items` is true.

        Args:
            n: Number of draws, > 0.
            beta: Importance-weight exponent in [0, 1] (``None``: the sampler's own).
            item_key: ``[capacity]`` int64 keys of the table's items (a view).
            times: ``[capacity]`` int64 times sampled (a view, incremented).
            rows: ``[capacity, W]`` packed rows to gather from.

        Returns:
            ``([n, W]`` rows, ``[n]`` int64 item keys, ``[n]`` float32 weights``)``,
            fresh arrays.

        Raises:
            InvalidArgumentError: If ``beta`` is out of range or every leaf is zero
                (nothing is counted then).

        Example:
            >>> s = Prioritized(seed=0); s.bind(4, torch.device("cpu"))
            >>> s.on_insert(torch.tensor([0, 1]), torch.tensor([1.0, 3.0], dtype=torch.float64))
            >>> keys, times, rows = np.array([0, 1, -1, -1]), np.zeros(4, np.int64), np.eye(4)
            >>> if s.counts_items:
            ...     out, k, w = s.draw_rows(2, None, keys, times, rows)
            ...     assert out.shape == (2, 4) and int(times.sum()) == 2
        """
        kernels, layout = self._kernels, self._layout
        assert kernels is not None
        assert layout is not None
        if beta is None:
            b = self.beta
        elif type(beta) is float and 0.0 <= beta <= 1.0:
            b = beta
        else:
            b = unit_interval("beta", beta)  # raises where it is not a number in [0, 1]
        values, offsets, _, levels = layout
        if self._u_np.shape[0] != n:
            self._u = torch.empty(n, dtype=torch.float64)
            self._u_np = self._u.numpy()
        torch.rand(n, dtype=torch.float64, generator=self.generator, out=self._u)
        out = np.empty((n, rows.shape[1]), rows.dtype)
        keys = np.empty(n, np.int64)
        ratio = np.empty(n, np.float64)
        total = kernels.prio_take(
            values, self._u_np, offsets, levels, item_key, times, rows, out, keys, ratio
        )
        if not total > 0:
            raise InvalidArgumentError(
                "cannot search an empty SumTree (every leaf is zero); update some leaves first"
            )
        if b == 0.0:
            w = np.ones(n, dtype=np.float32)
        else:  # float64 powers cast to float32, as draw_items computes them
            w = np.power(ratio, -b, out=ratio).astype(np.float32)
        return out, keys, w

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
            priorities: ``[K]`` float64 (or float32) new priorities.
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
        kernels, layout = self._kernels, self._layout
        assert kernels is not None
        assert layout is not None
        n = keys.shape[0]
        if self._scratch_slots.shape[0] != n:  # sized to the call: no slicing below
            self._scratch_slots = np.empty(n, np.int64)
            self._scratch_leaf = np.empty(n, np.float64)
        slots, leaf = self._scratch_slots, self._scratch_leaf
        m, hi, bad = kernels.prio_updates(
            keys, priorities, item_key, priority, limit, self.eps, slots, leaf
        )
        if bad >= 0 or not m:
            return 0, 0.0, bad
        if m < n:
            slots, leaf = slots[:m], leaf[:m]
        if self.alpha != 1.0:
            np.power(leaf, self.alpha, out=leaf)
        values, offsets, sizes, levels = layout
        kernels.tree_update(values, slots, leaf, offsets, sizes, levels)
        return m, hi, -1

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
