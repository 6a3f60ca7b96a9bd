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

The device path is chosen once, when the tree is built, and kept as
:attr:`SumTree.engine`: on CPU the algorithm runs through numpy views of the torch
storage (``"numpy"``), or, where numba is installed, as two small compiled loops
over the same arrays (``"numba"``, :mod:`replaydb._kernels`; ``REPLAYDB_NUMBA=0``
turns it off); on other devices it runs in torch (``"torch"``) with no host
synchronisation in :meth:`SumTree.find`. All paths, the torch one run on CPU
included, give bit-identical results.

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

from replaydb import _devices, _huge_pages, _kernels
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
        # Large CPU trees ask for huge pages (a search reads a random node per level).
        self.tree = _huge_pages.zeros((offsets[-1] + max(sizes[-1], _K),), dtype, self.device)
        #: The device path, chosen once here (see the module docstring).
        self.engine: _TorchTree | _NumpyTree = _tree_engine(self)

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
        return isinstance(self.engine, _NumpyTree)

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
        return self._host("kernel_layout").values, self._offsets, self._sizes, self.levels

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
        return self.engine.find(prefix_values)

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
        return self.engine.sample(u)

    def sample_numpy(
        self, u: np.ndarray[Any, Any]
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], float]:
        """CPU fast path of :meth:`sample` for uniform draws ``u`` in [0, 1) as numpy.

        Returns:
            ``(indices, values, total)`` as numpy arrays and a float.

        Raises:
            InvalidArgumentError: If the tree is not on CPU, or is empty.
        """
        host = self._host("sample_numpy", "sample()")
        if u.dtype != np.float64 or not u.flags.c_contiguous:
            u = np.ascontiguousarray(u, dtype=np.float64)
        return host.search(u, scale=True)

    def _host(self, what: str, instead: str = "") -> _NumpyTree:
        """The host engine, or an error naming ``what`` needs it (a tree off the CPU)."""
        if not isinstance(self.engine, _NumpyTree):
            use = f"; use {instead}" if instead else ""
            raise InvalidArgumentError(
                f"{what} needs a CPU tree on the host (numpy) path; this one takes the "
                f"{self.engine.name} path on {self.device}{use}"
            )
        return self.engine

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
        if check:
            idx = indices.reshape(-1).to(self.device, torch.int64)
            val = values.reshape(-1).to(self.device, self.dtype)
            self._check(idx, val)
            self.engine.update(idx, val)
        else:
            self.engine.update(indices, values)

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
        host = self._host("update_numpy", "update()")
        if not indices.size:
            return
        # numpy's power (vectorized) is several times faster than a compiled loop of pow.
        flat = values.reshape(-1)
        # One call for the float64 copy and the offset (both exact as two calls).
        leaf = np.add(flat, offset, dtype=np.float64) if offset else flat.astype(np.float64)
        if power != 1.0:
            np.power(leaf, power, out=leaf)
        host.write(indices.reshape(-1), leaf)

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


# ------------------------------------------------------------------------------------
# Device paths: one engine per kind, chosen once by SumTree.__init__ (_tree_engine).
# ------------------------------------------------------------------------------------


class _TorchTree:
    """The generic path: torch ops on the tree tensor, on any device (no host sync in find)."""

    name = "torch"

    def __init__(self, t: SumTree) -> None:
        self.t = t

    def find(self, v: torch.Tensor) -> torch.Tensor:
        return self.descend(v.to(self.t.device, self.t.dtype))[0]

    def sample(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx, total = self.descend(u.to(self.t.dtype), scale=True)
        return idx, self.t.get(idx), total

    def update(self, indices: torch.Tensor, values: torch.Tensor) -> None:
        t = self.t
        idx = indices.reshape(-1).to(t.device, torch.int64)
        if idx.numel() == 0:
            return
        val = values.reshape(-1).to(t.device, t.dtype)
        tree = t.tree
        if idx.numel() > 1:
            s, order = torch.sort(idx, stable=True)
            last = torch.searchsorted(s, s, right=True) - 1
            idx, val = s, val.index_select(0, order.index_select(0, last))
        tree.index_put_((idx + t._leaf0,), val)
        lanes = torch.arange(_K, device=t.device)
        node = idx
        for level in range(t.levels - 1, -1, -1):
            node = torch.div(node, _K, rounding_mode="floor")
            first = int(t._offsets[level + 1]) + node * _K
            both = _pair_sum_torch(tree[first.unsqueeze(1) + lanes])
            tree.index_put_((int(t._offsets[level]) + node,), both)

    def descend(self, v: torch.Tensor, scale: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Search ``v`` (times the total when ``scale``); return leaves and the 0-d total."""
        t = self.t
        tree = t.tree
        total = tree[0].clone()
        x = (v * total if scale else v).to(torch.float64)
        node = torch.zeros(x.shape[0], dtype=torch.int64, device=t.device)
        lanes = torch.arange(_K, device=t.device)
        for level in range(t.levels):
            first = int(t._offsets[level + 1]) + node * _K
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


class _NumpyTree:
    """CPU: the same algorithm through a zero-copy numpy view of the tree tensor."""

    name = "numpy"

    def __init__(self, t: SumTree) -> None:
        self.t = t
        #: The flat numpy view of every node (writes land in ``t.tree``).
        self.values: np.ndarray[Any, Any] = t.tree.numpy()

    def find(self, v: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(v.detach().to(torch.float64).cpu().numpy())
        return torch.from_numpy(self.search(x.reshape(-1), scale=False)[0])

    def sample(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx, vals, total = self.search(u.numpy(), scale=True)
        return (
            torch.from_numpy(idx),
            torch.from_numpy(vals),
            torch.tensor(total, dtype=self.t.dtype),
        )

    def update(self, indices: torch.Tensor, values: torch.Tensor) -> None:
        # Straight to numpy, no torch calls.
        idx = indices.detach().cpu().numpy().reshape(-1)
        if idx.size:
            self.write(idx, values.detach().cpu().numpy().reshape(-1))

    def search(
        self, v: np.ndarray[Any, Any], scale: bool
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], float]:
        """Search ``v`` (times the total when ``scale``); return leaves, their values, the total."""
        tree = self.values
        total = float(tree[0])
        if not total > 0:
            _empty()
        idx = self.descend(v * total if scale else v)
        return idx, tree.take(idx + self.t._leaf0), total

    def descend(self, v: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        t, tree = self.t, self.values
        x = np.array(v, dtype=np.float64)  # a copy: updated in place below
        node = np.zeros(x.shape[0], dtype=np.int64)
        rows = np.arange(x.shape[0])
        lanes = np.arange(_K)
        for level in range(t.levels):
            first = t._offsets[level + 1] + node * _K
            c = tree[first[:, None] + lanes].astype(np.float64, copy=False)
            run = np.cumsum(c, axis=1)  # running sums, added left to right
            past = (run <= x[:, None]).sum(axis=1)
            # Never a zero child: rounding may carry x past the last non-zero one.
            last_nz = (lanes * (c > 0)).max(axis=1)
            pick = np.minimum(past, last_nz)
            x -= np.where(pick > 0, run[rows, np.maximum(pick - 1, 0)], 0.0)
            node = node * _K + pick
        return node

    def write(self, idx: np.ndarray[Any, Any], val: np.ndarray[Any, Any]) -> None:
        """Set leaves ``idx`` to ``val`` (the last of a repeated index wins); fix the sums."""
        t, tree = self.t, self.values
        if idx.size > 1:
            # Last write wins: every copy of an index gets the value of its last copy.
            order = np.argsort(idx, kind="stable")
            s = idx.take(order)
            last = np.searchsorted(s, s, side="right") - 1
            idx, val = s, val.take(order.take(last))
        tree[idx + t._leaf0] = val
        lanes = np.arange(_K)
        node = idx
        for level in range(t.levels - 1, -1, -1):
            node = node // _K  # repeated parents get the same sum twice: harmless
            first = t._offsets[level + 1] + node * _K
            tree[t._offsets[level] + node] = _pair_sum_np(tree[first[:, None] + lanes])


class _NumbaTree(_NumpyTree):
    """:class:`_NumpyTree` whose search and update are compiled loops (float32/64)."""

    name = "numba"

    def __init__(self, t: SumTree, kernels: SimpleNamespace) -> None:
        super().__init__(t)
        self.kernels = kernels

    def search(
        self, v: np.ndarray[Any, Any], scale: bool
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], float]:
        t = self.t
        idx, vals, tot = self.kernels.tree_find(self.values, v, t._offsets, t.levels, scale)
        total = float(tot)
        if not total > 0:
            _empty()
        return idx, vals, total

    def write(self, idx: np.ndarray[Any, Any], val: np.ndarray[Any, Any]) -> None:
        t, tree = self.t, self.values
        self.kernels.tree_update(
            tree,
            np.ascontiguousarray(idx, dtype=np.int64),
            np.ascontiguousarray(val, dtype=tree.dtype),
            t._offsets,
            t._sizes,
            t.levels,
        )


def _empty() -> None:
    raise InvalidArgumentError(
        "cannot search an empty SumTree (every leaf is zero); update some leaves first"
    )


def _tree_engine(t: SumTree) -> _TorchTree | _NumpyTree:
    """The device path of ``t``, decided once from its device and dtype."""
    if not _devices.host_path(t.device, t.dtype):
        return _TorchTree(t)
    # numba compiles float32 and float64 loops (not float16).
    kernels = _kernels.get() if t.dtype in (torch.float32, torch.float64) else None
    return _NumbaTree(t, kernels) if kernels is not None else _NumpyTree(t)
