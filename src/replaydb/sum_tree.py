"""SumTree: batched prefix-sum search over non-negative leaf values, on any device.

Layout
------
The tree is one flat tensor of ``2 * P`` float64 values in binary-heap order, where
``P`` is the capacity rounded up to a power of two: the leaves are
``tree[P : P + capacity]`` and node ``i`` holds ``tree[2i] + tree[2i + 1]``.

Only the levels from the leaves up to a *top level* of at most 256 nodes are
kept. A search starts with one ``cumsum`` + ``searchsorted`` over the top level
(which replaces the eight binary levels above it), then walks down the remaining
levels with one vectorized step per level for the whole batch. An update writes
the leaves and recomputes each touched parent from its two children, level by
level, so sums never drift. Every operation is a handful of array operations per
level for the whole batch; there are no per-item Python loops.

On CPU the same algorithm runs through numpy views of the torch storage (numpy's
per-call overhead is several times lower than torch's for batches of a few hundred),
or, where numba is installed, as two small compiled loops over the same arrays
(:mod:`replaydb._kernels`; set ``REPLAYDB_NUMBA=0`` to turn that off); all CPU
paths give bit-identical results. On other devices it runs in torch with no host
synchronisation in :meth:`SumTree.find`.

The sum tree of prioritized replay: Schaul et al. 2015, arXiv 1511.05952, appendix B.2.1.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from replaydb import _kernels
from replaydb.errors import InvalidArgumentError

__all__ = ["SumTree"]

_TOP_BITS = 8  # the top level holds at most 2**8 nodes


class SumTree:
    """Leaf values whose prefix sums can be searched in batches.

    Args:
        capacity: Number of leaves, >= 1.
        device: Where the tree lives (default CPU).
        dtype: Floating dtype of the sums (default float64).

    Raises:
        InvalidArgumentError: If ``capacity`` is not a positive int or ``dtype`` is
            not floating point.

    Example:
        >>> tree = SumTree(4)
        >>> tree.update(torch.tensor([0, 2]), torch.tensor([1.0, 3.0], dtype=torch.float64))
        >>> tree.find(torch.tensor([0.5, 1.5], dtype=torch.float64)).tolist()
        [0, 2]
    """

    def __init__(
        self,
        capacity: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int | np.integer) or capacity < 1:
            raise InvalidArgumentError(f"capacity must be an int >= 1, got {capacity!r}")
        if not dtype.is_floating_point:
            raise InvalidArgumentError(f"dtype must be a floating dtype, got {dtype}")
        self.capacity = int(capacity)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.depth = max(0, (self.capacity - 1).bit_length())  # leaves at level `depth`
        self.top = min(self.depth, _TOP_BITS)  # shallowest level kept
        self._p = 1 << self.depth
        self.tree = torch.zeros(2 * self._p, dtype=dtype, device=self.device)
        self._np: np.ndarray[Any, Any] | None = None
        self._kernels: SimpleNamespace | None = None
        if self.device.type == "cpu" and dtype != torch.bfloat16:
            self._np = self.tree.numpy()
            # numba compiles float32 and float64 loops (not float16).
            self._kernels = _kernels.get() if dtype in (torch.float32, torch.float64) else None

    def __repr__(self) -> str:
        return f"SumTree(capacity={self.capacity}, device={self.device}, dtype={self.dtype})"

    # ------------------------------------------------------------------ reads
    @property
    def max_leaf(self) -> float:
        """The largest value :meth:`update` accepts: ``capacity`` of them sum to a finite total."""
        return float(torch.finfo(self.dtype).max) / self.capacity

    @property
    def numpy_path(self) -> bool:
        """Whether :meth:`sample_numpy` and :meth:`update_numpy` are available (CPU)."""
        return self._np is not None

    @property
    def leaves(self) -> torch.Tensor:
        """The ``[capacity]`` leaf values (a view; write through :meth:`update`)."""
        return self.tree[self._p : self._p + self.capacity]

    def _top_level(self) -> torch.Tensor:
        lo = 1 << self.top
        return self.tree[lo : 2 * lo]

    def total_tensor(self) -> torch.Tensor:
        """The sum of all leaves as a 0-d tensor on the tree's device (no host sync)."""
        return self._top_level().sum()

    @property
    def total(self) -> float:
        """The sum of all leaves (the root)."""
        return float(self.total_tensor())

    def get(self, indices: torch.Tensor) -> torch.Tensor:
        """Return the leaf values at ``indices``."""
        return self.tree.index_select(0, indices.to(self.device) + self._p)

    def find(self, prefix_values: torch.Tensor) -> torch.Tensor:
        """For each value ``v``, the first leaf ``i`` with ``sum(leaves[:i+1]) > v``.

        Leaves whose value is zero are never returned. A ``v`` at or above the total
        (possible through rounding) returns the last non-zero leaf.

        Args:
            prefix_values: ``[n]`` values in ``[0, total)``.

        Returns:
            ``[n]`` int64 leaf indices on the tree's device.

        Raises:
            InvalidArgumentError: If the tree is empty (every leaf is zero); only
                checked on CPU, where the check costs no synchronisation.

        Example:
            >>> t = SumTree(3); t.update(torch.arange(3), torch.tensor([1.0, 0.0, 1.0]))
            >>> t.find(torch.tensor([0.0, 0.99, 1.0, 1.99])).tolist()
            [0, 0, 2, 2]
        """
        if self._np is not None:
            v = prefix_values.detach().to(torch.float64).cpu().numpy()
            return torch.from_numpy(self._find_numpy(v))
        return self._find_torch(prefix_values.to(self.device, self.dtype))[0]

    def sample(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw ``n`` leaves with probability proportional to their values.

        Args:
            n: Number of draws (with replacement).
            generator: Source of the uniform draws (on the tree's device).

        Returns:
            ``(indices, values, total)``: ``[n]`` int64 leaf indices, ``[n]`` their
            values and the 0-d total they were drawn against, all on the tree's device.

        Example:
            >>> t = SumTree(3); t.update(torch.arange(3), torch.tensor([0.0, 1.0, 0.0]))
            >>> t.sample(4, torch.Generator().manual_seed(0))[0].tolist()
            [1, 1, 1, 1]
        """
        u = torch.rand(n, dtype=torch.float64, device=self.device, generator=generator)
        if self._np is not None:
            idx, vals, total = self.sample_numpy(u.numpy())
            return (
                torch.from_numpy(idx),
                torch.from_numpy(vals),
                torch.tensor(total, dtype=self.dtype),
            )
        idx_t, total_t = self._find_torch(u.to(self.dtype), scale=True)
        return idx_t, self.get(idx_t), total_t

    def sample_numpy(
        self, u: np.ndarray[Any, Any]
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], float]:
        """CPU fast path of :meth:`sample` for uniform draws ``u`` in [0, 1) as numpy.

        Returns:
            ``(indices, values, total)`` as numpy arrays and a float.

        Raises:
            InvalidArgumentError: If the tree is not on CPU, or is empty.
        """
        if self._np is None:
            raise InvalidArgumentError(
                f"sample_numpy needs a CPU tree, this one is on {self.device}; use sample()"
            )
        if u.dtype != np.float64 or not u.flags.c_contiguous:
            u = np.ascontiguousarray(u, dtype=np.float64)
        return self._find_numpy_scaled(u)

    def _find_numpy(self, v: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return self._find_numpy_scaled(v, scale=False)[0]

    def _find_numpy_scaled(
        self, v: np.ndarray[Any, Any], scale: bool = True
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], float]:
        """Search ``v`` (times the total when ``scale``); return leaves, their values, the total."""
        tree = self._np
        assert tree is not None
        lo = 1 << self.top
        if self._kernels is not None:
            idx, vals, tot = self._kernels.tree_find(
                tree, v, lo, self.depth - self.top, self._p, scale
            )
            if not tot > 0:
                raise InvalidArgumentError(
                    "cannot search an empty SumTree (every leaf is zero); update some leaves first"
                )
            return idx, vals, float(tot)
        cs = np.cumsum(tree[lo : 2 * lo])
        total = float(cs[-1])
        if not total > 0:
            raise InvalidArgumentError(
                "cannot search an empty SumTree (every leaf is zero); update some leaves first"
            )
        if scale:
            v = v * total
        last = np.searchsorted(cs, cs[-1], side="left")
        i = np.minimum(np.searchsorted(cs, v, side="right"), last)
        v = v - (cs.take(i) - tree.take(i + lo))
        v0 = v.copy()
        node = start = i + lo
        for _ in range(self.depth - self.top):
            child = node << 1
            left = tree.take(child)
            go = v >= left
            np.subtract(v, left, out=v, where=go)
            node = child + go
        leaf: np.ndarray[Any, Any] = node - self._p
        if self.depth > self.top:
            hit = tree.take(node)
            if not hit.all():
                # Rounding sent a search a few ulps past a subtree's sum into an
                # all-zero right half: redo those few with a guard against that.
                bad = np.flatnonzero(hit == 0)
                leaf[bad] = self._descend_guarded(start.take(bad), v0.take(bad))
        return leaf, tree.take(leaf + self._p), total

    def _descend_guarded(
        self, node: np.ndarray[Any, Any], v: np.ndarray[Any, Any]
    ) -> np.ndarray[Any, Any]:
        tree = self._np
        assert tree is not None
        for _ in range(self.depth - self.top):
            child = node << 1
            left = tree.take(child)
            go = (v >= left) & (tree.take(child + 1) > 0)
            v = v - left * go
            node = child + go
        out: np.ndarray[Any, Any] = node - self._p
        return out

    def _find_torch(
        self, v: torch.Tensor, scale: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Search ``v`` (times the total when ``scale``); return leaves and the 0-d total."""
        tree = self.tree
        lo = 1 << self.top
        cs = torch.cumsum(tree[lo : 2 * lo], 0)
        total = cs[-1]
        if scale:
            v = v * total
        last = torch.searchsorted(cs, cs[-1:], right=False)
        i = torch.minimum(torch.searchsorted(cs, v, right=True), last)
        v = v - (cs.index_select(0, i) - tree.index_select(0, i + lo))
        node = i + lo
        for _ in range(self.depth - self.top):
            node = node * 2
            left = tree.index_select(0, node)
            go = (v >= left) & (tree.index_select(0, node + 1) > 0)
            v = v - left * go
            node = node + go.to(torch.int64)
        return node - self._p, total

    # ----------------------------------------------------------------- writes
    def update(self, indices: torch.Tensor, values: torch.Tensor, *, check: bool = True) -> None:
        """Set ``leaves[indices] = values`` and fix every sum above them.

        When an index appears more than once, the last of its values wins.

        Args:
            indices: ``[m]`` int64 leaf indices in ``[0, capacity)``.
            values: ``[m]`` finite values >= 0 (zero makes a leaf unsearchable).
            check: Validate ``indices`` and ``values`` first (costs a host sync on
                GPU; callers that validated already pass ``False``).

        Raises:
            InvalidArgumentError: If shapes differ, an index is out of range or a
                value is negative, NaN, infinite or above :attr:`max_leaf` (nothing is
                written).

        Example:
            >>> t = SumTree(2); t.update(torch.tensor([1, 1]), torch.tensor([5.0, 2.0]))
            >>> t.leaves.tolist(), t.total
            ([0.0, 2.0], 2.0)
        """
        if self._np is not None and not check:
            # Trusted CPU callers: straight to numpy, no torch calls.
            idx_np = indices.detach().cpu().numpy().reshape(-1)
            if idx_np.size:
                self._update_numpy(idx_np, values.detach().cpu().numpy().reshape(-1))
            return
        idx = indices.reshape(-1).to(self.device, torch.int64)
        val = values.reshape(-1).to(self.device, self.dtype)
        if check:
            self._check(idx, val)
        if idx.numel() == 0:
            return
        if self._np is not None:
            self._update_numpy(idx.cpu().numpy(), val.cpu().numpy())
        else:
            self._update_torch(idx, val)

    def update_numpy(
        self,
        indices: np.ndarray[Any, Any],
        values: np.ndarray[Any, Any],
        *,
        offset: float = 0.0,
        power: float = 1.0,
    ) -> None:
        """CPU fast path of :meth:`update` for trusted numpy input (nothing is validated).

        Sets ``leaves[indices] = (values + offset) ** power`` (prioritized replay's
        ``(priority + eps) ** alpha``), computed in float64.

        Raises:
            InvalidArgumentError: If the tree is not on CPU.
        """
        if self._np is None:
            raise InvalidArgumentError(
                f"update_numpy needs a CPU tree, this one is on {self.device}; use update()"
            )
        if not indices.size:
            return
        # numpy's power (vectorized) is several times faster than a compiled loop of pow.
        leaf = values.reshape(-1).astype(np.float64, copy=True)
        if offset:
            leaf += offset
        if power != 1.0:
            np.power(leaf, power, out=leaf)
        self._update_numpy(indices.reshape(-1), leaf)

    def _check(self, idx: torch.Tensor, val: torch.Tensor) -> None:
        if idx.shape != val.shape:
            raise InvalidArgumentError(
                f"indices and values must have the same length, got {idx.numel()} and {val.numel()}"
            )
        if idx.numel() == 0:
            return
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= self.capacity:
            raise InvalidArgumentError(
                f"indices must be in [0, {self.capacity}), got {lo if lo < 0 else hi}"
            )
        bad = ~torch.isfinite(val) | (val < 0)
        if bool(bad.any()):
            raise InvalidArgumentError(
                f"values must be finite and >= 0, got {float(val[bad][0])}; "
                "use 0 to make a leaf unsearchable"
            )
        if bool((val > self.max_leaf).any()):
            raise InvalidArgumentError(
                f"values must be at most {self.max_leaf:g} (the largest {self.dtype} divided by "
                f"capacity {self.capacity}, so the total cannot overflow), got "
                f"{float(val.max()):g}; scale the values down"
            )

    def _update_numpy(self, idx: np.ndarray[Any, Any], val: np.ndarray[Any, Any]) -> None:
        tree = self._np
        assert tree is not None
        if self._kernels is not None:
            self._kernels.tree_update(
                tree,
                np.ascontiguousarray(idx, dtype=np.int64),
                np.ascontiguousarray(val, dtype=tree.dtype),
                self.depth - self.top,
                self._p,
            )
            return
        if idx.size > 1:
            # Last write wins: every copy of an index gets the value of its last copy.
            order = np.argsort(idx, kind="stable")
            s = idx.take(order)
            last = np.searchsorted(s, s, side="right") - 1
            idx, val = s, val.take(order.take(last))
        node = idx + self._p
        tree[node] = val
        for _ in range(self.depth - self.top):
            both = tree.take(node & -2) + tree.take(node | 1)
            node = node >> 1
            tree[node] = both

    def _update_torch(self, idx: torch.Tensor, val: torch.Tensor) -> None:
        tree = self.tree
        if idx.numel() > 1:
            s, order = torch.sort(idx, stable=True)
            last = torch.searchsorted(s, s, right=True) - 1
            idx, val = s, val.index_select(0, order.index_select(0, last))
        node = idx + self._p
        tree.index_put_((node,), val)
        for _ in range(self.depth - self.top):
            node = node >> 1
            both = tree.index_select(0, node * 2) + tree.index_select(0, node * 2 + 1)
            tree.index_put_((node,), both)

    def reset(self) -> None:
        """Set every leaf to zero."""
        self.tree.zero_()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The whole tree as a CPU tensor (sums included, so a reload is bit-exact)."""
        return {"tree": self.tree.cpu().clone()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict` output of a tree of the same capacity.

        Raises:
            InvalidArgumentError: If the saved tree has another shape.
        """
        t = state["tree"]
        if tuple(t.shape) != tuple(self.tree.shape):
            raise InvalidArgumentError(
                f"state['tree'] has shape {tuple(t.shape)}, expected {tuple(self.tree.shape)}; "
                "it was saved from a SumTree of another capacity"
            )
        self.tree.copy_(t)
