"""SumTree: batched prefix-sum search over non-negative leaf values, on any device.

Layout
------
The tree is one flat tensor of float64 values (by default) holding an implicit
8-ary tree, level by level from the root: level ``l`` starts at ``offsets[l]``,
and the 8 children of node ``i`` of level ``l`` are the 8 consecutive values
``offsets[l + 1] + 8 * i + [0, 8)``. Every level starts at a multiple of 8 and
torch aligns its storage to 64 bytes, so the children of a node share one cache
line: a million leaves need 7 levels below the root instead of 20 binary ones,
and a search or an update touches a third as many cache lines. The leaves (the
values themselves, exact) are the last level, ``tree[offsets[-1]:][:capacity]``.

Every node holds the sum of its 8 children, always computed in the same order
(``((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7))``) from the children, so
sums never drift and the whole tree is a function of the leaves alone. A search
walks down from the root, one level at a time for the whole batch: at each node
it takes the first child whose running sum (added left to right) exceeds the
value, never a child whose sum is zero. An update writes the leaves (the last
value of a repeated index wins) and recomputes every touched parent from its
children, level by level.

On CPU the same algorithm runs through numpy views of the torch storage, or, where
numba is installed, as two small compiled loops over the same arrays
(:mod:`replaydb._kernels`; set ``REPLAYDB_NUMBA=0`` to turn that off); all CPU
paths, and the torch path on CPU, give bit-identical results. On other devices it
runs in torch with no host synchronisation in :meth:`SumTree.find`.

:meth:`SumTree.state_dict` keeps the binary-heap layout of replaydb 0.x checkpoints
(``2 * P`` values, ``P`` the capacity rounded up to a power of two, leaves at
``[P, P + capacity)``); loading reads its leaves and recomputes every sum.

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

_K = _kernels.TREE_ARITY  # children per node
_TOP_BITS = 8  # the binary layout of state_dict keeps levels of >= 2**8 nodes (as 0.x)


def _level_sizes(capacity: int) -> list[int]:
    """Values stored per level, root first (every level below the root a multiple of 8)."""
    sizes = [capacity]
    while sizes[-1] > 1:
        sizes[-1] = -(-sizes[-1] // _K) * _K
        sizes.append(sizes[-1] // _K)
    sizes.reverse()
    return sizes


def _pair_sum_np(c: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Sum each row of ``[m, 8]`` children in the tree's order: pairs, then pairs of pairs."""
    while c.shape[1] > 1:
        c = c[:, 0::2] + c[:, 1::2]
    out: np.ndarray[Any, Any] = c[:, 0]
    return out


def _pair_sum_torch(c: torch.Tensor) -> torch.Tensor:
    while c.shape[1] > 1:
        c = c[:, 0::2] + c[:, 1::2]
    return c[:, 0]


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
        sizes = _level_sizes(self.capacity)
        offsets = [0]
        for s in sizes[:-1]:
            offsets.append(offsets[-1] + max(s, _K))
        self.levels = len(sizes) - 1  # levels below the root
        self._sizes = np.asarray(sizes, dtype=np.int64)
        self._offsets = np.asarray(offsets, dtype=np.int64)
        self._leaf0 = offsets[-1]
        self.tree = torch.zeros(offsets[-1] + max(sizes[-1], _K), dtype=dtype, device=self.device)
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

    def kernel_layout(
        self,
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any], int]:
        """The CPU tree as the compiled kernels take it (``replaydb._kernels``).

        For samplers that fuse a search or an update with their own bookkeeping in
        one kernel call; nothing is validated on that path.

        Returns:
            ``(values, offsets, sizes, levels)``: the flat numpy view of every node
            (writes land in :attr:`tree`), where each level starts, how many values
            it has, and the number of levels below the root.

        Raises:
            InvalidArgumentError: If the tree is not on CPU.

        Example:
            >>> values, offsets, sizes, levels = SumTree(100).kernel_layout()
            >>> levels, int(sizes[levels]) >= 100, int(values.shape[0]) > 100
            (3, True, True)
        """
        if self._np is None:
            raise InvalidArgumentError(
                f"kernel_layout needs a CPU tree, this one is on {self.device}"
            )
        return self._np, self._offsets, self._sizes, self.levels

    @property
    def leaves(self) -> torch.Tensor:
        """The ``[capacity]`` leaf values (a view; write through :meth:`update`)."""
        return self.tree[self._leaf0 : self._leaf0 + self.capacity]

    def total_tensor(self) -> torch.Tensor:
        """The sum of all leaves as a 0-d tensor on the tree's device (no host sync)."""
        return self.tree[0].clone()

    @property
    def total(self) -> float:
        """The sum of all leaves (the root)."""
        return float(self.tree[0])

    def get(self, indices: torch.Tensor) -> torch.Tensor:
        """Return the leaf values at ``indices``."""
        return self.tree.index_select(0, indices.to(self.device) + self._leaf0)

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
            v = np.ascontiguousarray(prefix_values.detach().to(torch.float64).cpu().numpy())
            return torch.from_numpy(self._find_numpy(v.reshape(-1), scale=False)[0])
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
        return self._find_numpy(u, scale=True)

    def _find_numpy(
        self, v: np.ndarray[Any, Any], scale: bool
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], float]:
        """Search ``v`` (times the total when ``scale``); return leaves, their values, the total."""
        tree = self._np
        assert tree is not None
        if self._kernels is not None:
            idx, vals, tot = self._kernels.tree_find(tree, v, self._offsets, self.levels, scale)
            total = float(tot)
        else:
            total = float(tree[0])
            if total > 0:
                idx = self._descend_numpy(v * total if scale else v)
                vals = tree.take(idx + self._leaf0)
        if not total > 0:
            raise InvalidArgumentError(
                "cannot search an empty SumTree (every leaf is zero); update some leaves first"
            )
        return idx, vals, total

    def _descend_numpy(self, v: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        tree = self._np
        assert tree is not None
        x = np.array(v, dtype=np.float64)  # a copy: updated in place below
        node = np.zeros(x.shape[0], dtype=np.int64)
        rows = np.arange(x.shape[0])
        lanes = np.arange(_K)
        for level in range(self.levels):
            first = self._offsets[level + 1] + node * _K
            c = tree[first[:, None] + lanes].astype(np.float64, copy=False)
            run = np.cumsum(c, axis=1)  # running sums, added left to right
            past = (run <= x[:, None]).sum(axis=1)
            # Never a zero child: rounding may carry x past the last non-zero one.
            last_nz = (lanes * (c > 0)).max(axis=1)
            pick = np.minimum(past, last_nz)
            x -= np.where(pick > 0, run[rows, np.maximum(pick - 1, 0)], 0.0)
            node = node * _K + pick
        return node

    def _find_torch(
        self, v: torch.Tensor, scale: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Search ``v`` (times the total when ``scale``); return leaves and the 0-d total."""
        tree = self.tree
        total = tree[0].clone()
        x = (v * total if scale else v).to(torch.float64)
        node = torch.zeros(x.shape[0], dtype=torch.int64, device=self.device)
        lanes = torch.arange(_K, device=self.device)
        for level in range(self.levels):
            first = int(self._offsets[level + 1]) + node * _K
            c = tree[first.unsqueeze(1) + lanes].to(torch.float64)
            # Running sums added left to right (as on CPU), not a parallel scan.
            cols = [c[:, 0]]
            for j in range(1, _K):
                cols.append(cols[-1] + c[:, j])
            run = torch.stack(cols, dim=1)
            past = (run <= x.unsqueeze(1)).sum(dim=1)
            last_nz = (lanes * (c > 0)).amax(dim=1)
            pick = torch.minimum(past, last_nz)
            before = run.gather(1, (pick - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
            x = x - torch.where(pick > 0, before, torch.zeros_like(before))
            node = node * _K + pick
        return node, total

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
        flat = values.reshape(-1)
        # One call for the float64 copy and the offset (both exact as two calls).
        leaf = np.add(flat, offset, dtype=np.float64) if offset else flat.astype(np.float64)
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
                self._offsets,
                self._sizes,
                self.levels,
            )
            return
        if idx.size > 1:
            # Last write wins: every copy of an index gets the value of its last copy.
            order = np.argsort(idx, kind="stable")
            s = idx.take(order)
            last = np.searchsorted(s, s, side="right") - 1
            idx, val = s, val.take(order.take(last))
        tree[idx + self._leaf0] = val
        lanes = np.arange(_K)
        node = idx
        for level in range(self.levels - 1, -1, -1):
            node = node // _K  # repeated parents get the same sum twice: harmless
            first = self._offsets[level + 1] + node * _K
            tree[self._offsets[level] + node] = _pair_sum_np(tree[first[:, None] + lanes])

    def _update_torch(self, idx: torch.Tensor, val: torch.Tensor) -> None:
        tree = self.tree
        if idx.numel() > 1:
            s, order = torch.sort(idx, stable=True)
            last = torch.searchsorted(s, s, right=True) - 1
            idx, val = s, val.index_select(0, order.index_select(0, last))
        tree.index_put_((idx + self._leaf0,), val)
        lanes = torch.arange(_K, device=self.device)
        node = idx
        for level in range(self.levels - 1, -1, -1):
            node = torch.div(node, _K, rounding_mode="floor")
            first = int(self._offsets[level + 1]) + node * _K
            both = _pair_sum_torch(tree[first.unsqueeze(1) + lanes])
            tree.index_put_((int(self._offsets[level]) + node,), both)

    def _rebuild(self) -> None:
        """Recompute every sum from the leaves (the order the updates use)."""
        for level in range(self.levels - 1, -1, -1):
            lo, n = int(self._offsets[level + 1]), int(self._sizes[level + 1])
            up = int(self._offsets[level])
            self.tree[up : up + n // _K] = _pair_sum_torch(self.tree[lo : lo + n].view(-1, _K))

    def reset(self) -> None:
        """Set every leaf to zero."""
        self.tree.zero_()

    # ------------------------------------------------------------------ state
    def _binary_size(self) -> tuple[int, int]:
        depth = max(0, (self.capacity - 1).bit_length())
        return depth, 1 << depth

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The tree as a CPU tensor in the binary-heap layout of replaydb 0.x checkpoints.

        ``tree[P : P + capacity]`` are the leaves (``P`` the capacity rounded up to a
        power of two) and node ``i`` holds ``tree[2i] + tree[2i + 1]`` for the levels
        of at least 256 nodes, as 0.x wrote it; :meth:`load_state_dict` reads only
        the leaves, so a reload is bit-exact.
        """
        depth, p = self._binary_size()
        out = torch.zeros(2 * p, dtype=self.dtype)
        out[p : p + self.capacity] = self.leaves.cpu()
        for d in range(depth - 1, min(depth, _TOP_BITS) - 1, -1):
            lo = 1 << d
            out[lo : 2 * lo] = out[2 * lo : 4 * lo : 2] + out[2 * lo + 1 : 4 * lo : 2]
        return {"tree": out}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict` output of a tree of the same capacity.

        Only the leaves are read; every sum is recomputed from them.

        Raises:
            InvalidArgumentError: If the saved tree has another shape.
        """
        t = state["tree"]
        _, p = self._binary_size()
        if tuple(t.shape) != (2 * p,):
            raise InvalidArgumentError(
                f"state['tree'] has shape {tuple(t.shape)}, expected {(2 * p,)}; "
                "it was saved from a SumTree of another capacity"
            )
        self.tree.zero_()
        self.leaves.copy_(t[p : p + self.capacity])
        self._rebuild()
