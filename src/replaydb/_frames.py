"""Gathering sampled rows of a :class:`~replaydb.table.Table`, with frame stacks.

A ``frame_stack`` field is served as the last ``k`` frames of each sampled step,
found by following the storage's ``prev`` links within the episode. Each frame is
stored once; the stack is assembled at sample time.

On CPU with numba one compiled pass does the whole gather: for each sampled row it
walks the links and copies every field's bytes (``k`` frames for a stacked field,
one row for the others) straight from the storage's packed groups into the output
tensors, one ``memcpy`` per frame, all fields in one buffer, with no per-field
numpy call: the stacked field's copy costs what a raw ``frames[idx]`` numpy gather
of the same bytes costs (``benchmarks/bench_frames.py``).
The links are walked one level for all rows at a time, so the cache misses of a
level overlap. Without numba (and off CPU) ``k - 1`` batched torch gathers walk
the links and one ``index_select`` per field gathers.

Layout the compiled pass relies on (``Storage``): fields of one dtype share a
packed group tensor ``[capacity, W]``; a field is the columns ``[a, b)`` of its
group, so row ``r`` of the field is ``b - a`` contiguous elements at byte
``r * W * itemsize + a * itemsize`` of the group.
"""

from __future__ import annotations

import os
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from replaydb.storage import Storage
    from replaydb.table import Table

#: The compiled pass, built on first use (``None``: numba missing or turned off).
_STATE: dict[str, Any] = {}


def _compile() -> Any:
    """The fused gather kernel, or ``None`` without numba (or ``REPLAYDB_NUMBA=0``)."""
    if os.environ.get("REPLAYDB_NUMBA", "1") == "0":
        return None
    try:
        import llvmlite.ir  # type: ignore[import-untyped,import-not-found,unused-ignore]
        import numba  # type: ignore[import-untyped,import-not-found,unused-ignore]
        import numba.core.cgutils  # type: ignore[import-untyped,import-not-found,unused-ignore]
        import numba.extending  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return None
    # Untyped on purpose: numba's partial annotations do not describe intrinsics.
    ir: Any = llvmlite.ir
    cgutils: Any = numba.core.cgutils
    intrinsic: Any = numba.extending.intrinsic

    @intrinsic  # type: ignore[untyped-decorator,unused-ignore]
    def copy_bytes(typingctx: Any, dst: Any, src: Any, nbytes: Any) -> Any:
        # memcpy(dst, src, nbytes) on raw addresses: llvm.memcpy, which LLVM lowers
        # to the C library's memcpy (numba's own slice copies go byte by byte).
        sig = numba.types.void(numba.types.intp, numba.types.intp, numba.types.intp)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            i8p = ir.IntType(8).as_pointer()
            d = builder.inttoptr(args[0], i8p)
            s = builder.inttoptr(args[1], i8p)
            cgutils.raw_memcpy(builder, d, s, args[2], 1)
            return context.get_dummy_value()

        return sig, codegen

    @intrinsic  # type: ignore[untyped-decorator,unused-ignore]
    def zero_bytes(typingctx: Any, dst: Any, nbytes: Any) -> Any:
        sig = numba.types.void(numba.types.intp, numba.types.intp)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            d = builder.inttoptr(args[0], ir.IntType(8).as_pointer())
            cgutils.memset(builder, d, args[1], 0)
            return context.get_dummy_value()

        return sig, codegen

    def stack_copy(
        rows: Any, k_max: int, key: Any, prev: Any, plan: Any, starts: Any, out: Any
    ) -> None:
        # plan[f] = (group address, group row bytes, byte offset, byte width, k, zeros);
        # field f's output is [n, k_f, width] bytes, C order, at out[starts[f] * n:].
        cap = key.shape[0]
        n = rows.shape[0]
        out_addr = out.ctypes.data
        # The rows of each step's last k_max frames, oldest first, and how many of
        # them are real frames of the episode (the walk stops at a broken link; the
        # rest repeat the oldest frame reached). One link level for every step at a
        # time: the loads of a level are independent, so their cache misses overlap.
        chain = np.empty((n, k_max), np.int64)
        real = np.ones(n, np.int64)
        for b in range(n):
            r = rows[b]
            if r < 0 or r >= cap:  # the copies below read raw addresses: never out of range
                raise IndexError("frame stack gather: a row is outside the storage")
            chain[b, k_max - 1] = r
        for j in range(k_max - 2, -1, -1):
            for b in range(n):
                r = chain[b, j + 1]
                if real[b] == k_max - 1 - j:
                    p = prev[r]
                    if p >= 0 and key[p % cap] == p:
                        r = p % cap
                        real[b] += 1
                chain[b, j] = r
        for f in range(plan.shape[0]):
            base, stride, off, width, k, zeros = plan[f]
            dst = out_addr + starts[f] * n
            for b in range(n):
                for j in range(k_max - k, k_max):
                    if zeros != 0 and j < k_max - real[b]:
                        zero_bytes(dst, width)
                    else:
                        copy_bytes(dst, base + chain[b, j] * stride + off, width)
                    dst += width

    try:
        return numba.njit(nogil=True, cache=True)(stack_copy)
    except RuntimeError:  # no writable cache location: compile in every process
        return numba.njit(nogil=True, cache=False)(stack_copy)


def _kernel() -> Any:
    if "kernel" not in _STATE:
        _STATE["kernel"] = _compile()
    return _STATE["kernel"]


class _Plan:
    """A table's fields as byte ranges of its storage's packed groups (see module doc),
    and where each field's output goes in the one buffer a gather allocates."""

    def __init__(self, table: Table) -> None:
        st = table.storage
        from replaydb.storage._rings import HostRing  # here: _rings imports this module

        engine = st.engine
        assert isinstance(engine, HostRing)
        groups = engine.groups
        #: Kept so the addresses in ``plan`` stay valid while the plan lives.
        self.groups = groups
        #: Per field: name, dtype, shape of one sampled row, start in the output
        #: (in units of the number of rows) and bytes per row.
        self.fields: list[tuple[str, np.dtype[Any], tuple[int, ...], int, int]] = []
        rows = []
        start = 0
        for name, (dt, a, b) in st._where.items():
            g = groups[dt]
            k, pad = table.frame_stack.get(name, (0, "first"))
            isz = g.itemsize
            width = (b - a) * isz
            # A field without a stack is one frame per row (k = 1 in the pass).
            rows.append((g.ctypes.data, g.strides[0], a * isz, width, max(k, 1), pad == "zeros"))
            shape = tuple(table.spec[name].shape)
            nbytes = width * max(k, 1)
            self.fields.append((name, g.dtype, shape if k == 0 else (k, *shape), start, nbytes))
            start += -(-nbytes // 64) * 64  # every output starts on a cache line
        #: Output bytes per sampled row, all fields.
        self.row_bytes = start
        self.starts = np.array([f[3] for f in self.fields], dtype=np.int64)
        self.plan = np.array(rows, dtype=np.int64).reshape(-1, 6)
        #: The compiled pass and its arguments but the rows and the output.
        self.call = (_kernel(), table._stack_k, engine.key, engine.prev, self.plan, self.starts)

    @staticmethod
    def usable(table: Table) -> bool:
        """Whether the storage takes the compiled path and every group is C-ordered."""
        engine = table.storage.engine
        groups = getattr(engine, "groups", {})
        return engine.name == "numba" and all(
            g.ndim == 2 and g.flags.c_contiguous for g in groups.values()
        )


_NO_PLAN: Any = object()

#: Storage -> its plan (None: the compiled pass does not apply to it), made once
#: per storage: its device path and groups never change.
_PLANS: weakref.WeakKeyDictionary[Storage, _Plan | None] = weakref.WeakKeyDictionary()


def _plan(table: Table) -> _Plan | None:
    st = table.storage
    plan = _PLANS.get(st, _NO_PLAN)
    if plan is _NO_PLAN:
        plan = _PLANS[st] = _Plan(table) if _Plan.usable(table) and _kernel() is not None else None
    return plan  # type: ignore[no-any-return]


def _fused(plan: _Plan, rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`gather` by the compiled pass (CPU, numba): one output buffer, one call."""
    flat = rows.numpy().reshape(-1)
    n = len(flat)
    # One buffer for every field's output (numpy's allocation is 16-byte aligned and
    # every field starts at a multiple of 64 bytes: each view is aligned).
    buf = np.empty(n * plan.row_bytes, dtype=np.uint8)
    if n:
        kernel, k_max, key, prev, fields, starts = plan.call
        kernel(flat, k_max, key, prev, fields, starts, buf)
    lead = rows.shape
    return {
        name: torch.from_numpy(buf[a * n : (a + size) * n].view(dt).reshape(*lead, *shape))
        for name, dt, shape, a, size in plan.fields
    }


def gather(table: Table, rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every field at ``rows``; ``frame_stack`` fields as their last ``k`` frames.

    A stacked field comes back as ``[*rows.shape, k, *shape]``: for each row, the
    rows of its ``k - 1`` predecessors in the same episode (``prev`` links,
    walked by the compiled pass on CPU with numba and by ``k - 1`` batched
    gathers elsewhere), oldest first. A predecessor that does not exist (the episode
    started later) or is no longer live (overwritten) stops the walk: earlier
    frames repeat the oldest one reached (``"first"``) or are zeros (``"zeros"``).
    """
    if not table.frame_stack:
        return table.storage.gather(rows)
    plan = _plan(table)  # a CPU table's: its rows are CPU tensors
    if plan is not None:
        return _fused(plan, rows)
    st = table.storage
    k_max = table._stack_k
    lead = tuple(rows.shape)
    out: dict[str, torch.Tensor] = {}
    flat = rows.reshape(-1)
    stack_rows, valid = stack_rows_torch(flat, k_max, st.key, st.prev)
    for name, tensor in st.fields.items():
        stack = table.frame_stack.get(name)
        shape = table.spec[name].shape
        if stack is None:
            out[name] = tensor.index_select(0, flat).view(*lead, *shape)
            continue
        k, pad = stack
        picked = tensor.index_select(0, stack_rows[:, k_max - k :].reshape(-1))
        picked = picked.view(*lead, k, *shape)
        if pad == "zeros":
            keep = valid[:, k_max - k :].reshape(*lead, k, *([1] * len(shape)))
            picked = picked.masked_fill(~keep, 0)
        out[name] = picked
    return out


def stack_rows_torch(
    rows: torch.Tensor, k: int, key: torch.Tensor, prev: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel ``stack_rows`` in torch: ``[N, k]`` rows of each row's last ``k``
    frames (oldest first) and whether each is a real frame of the episode."""
    cap = key.numel()
    cols, valid = [rows], [torch.ones_like(rows, dtype=torch.bool)]
    cur, ok = rows, valid[0]
    for _ in range(k - 1):
        p = prev.index_select(0, cur)
        ok = ok & (p >= 0) & (key.index_select(0, p.clamp(min=0) % cap) == p)
        cur = torch.where(ok, p % cap, cur)
        cols.append(cur)
        valid.append(ok)
    return torch.stack(cols[::-1], dim=1), torch.stack(valid[::-1], dim=1)
