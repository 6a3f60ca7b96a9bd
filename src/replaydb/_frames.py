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
level overlap. For ``Table.sample`` of a uniform table the same pass first does the
sample's bookkeeping (:func:`sample_fused`, one call per sample): it counts the
draws in the item records, writes the keys, counts, priorities, probabilities and
weights into a second, small buffer, and walks each window's ``next`` links; the
sample (:class:`StackSample`) makes those columns into tensors when first read.
Without numba (and off CPU) ``k - 1`` batched torch gathers walk the links and one
``index_select`` per field gathers.

Layout the compiled pass relies on (``Storage``): fields of one dtype share a
packed group tensor ``[capacity, W]``; a field is the columns ``[a, b)`` of its
group, so row ``r`` of the field is ``b - a`` contiguous elements at byte
``r * W * itemsize + a * itemsize`` of the group.
"""

from __future__ import annotations

import os
import weakref
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from replaydb._records import Sample

if TYPE_CHECKING:
    from replaydb.storage import Storage
    from replaydb.table import Table

#: :func:`layout`'s answer: bytes of the fields' and columns' buffers, the columns'
#: byte offsets, and ``(shape, dtype, offset)`` of each field and each column.
Layout = tuple[int, int, Any, list[Any], list[Any]]

#: The compiled pass, built on first use (``None``: numba missing or turned off).
_STATE: dict[str, Any] = {}

#: ``memcpy`` and ``memset`` on raw addresses for :func:`_stack_sample`, numba
#: intrinsics set by :func:`_compile` (globals, not closure cells: see there).
_copy_bytes: Any = None
_zero_bytes: Any = None


def _compile() -> SimpleNamespace | None:
    """The compiled pass (``sample``: :func:`_stack_sample`), or ``None`` without
    numba (or ``REPLAYDB_NUMBA=0``)."""
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

    global _copy_bytes, _zero_bytes
    _copy_bytes, _zero_bytes = copy_bytes, zero_bytes
    try:
        sample = numba.njit(nogil=True, cache=True)(_stack_sample)
    except RuntimeError:  # no writable cache location: compile in every process
        sample = numba.njit(nogil=True, cache=False)(_stack_sample)
    return SimpleNamespace(sample=sample)


def _stack_sample(
    slots: Any,
    take: bool,
    records: Any,
    length: int,
    pad: bool,
    nxt: Any,
    end: Any,
    cols: Any,
    offs: Any,
    inv_count: float,
    k_max: int,
    key: Any,
    prev: Any,
    plan: Any,
    starts: Any,
    out: Any,
) -> None:
    # One pass, one call (each call from Python costs microseconds that the
    # gather's cache eviction makes dearer). With ``take``, Table.sample's
    # bookkeeping first: count each draw in the item records ([cap, 4] int64:
    # key, times sampled, priority bits, unused), write the items' columns into
    # cols at the byte offsets offs (keys, times, priorities, probabilities
    # inv_count, weights 1; then for windows the end codes and, padded, the
    # mask), and gather the slots' rows, or each window's rows walked from its
    # item's key by next links. Without ``take``, ``slots`` are the rows.
    # Then the gather: plan[f] = (group address, group row bytes, byte offset,
    # byte width, k, zeros); field f's output is [n, k_f, width] bytes, C
    # order, at out[starts[f] * n:]. (One module-level function whose intrinsics
    # are module globals: a function that closes over another dispatcher or an
    # intrinsic is never found in numba's cache, the closure pickles differently in
    # every process.)
    rows = slots
    if take:
        n = slots.shape[0]
        rcap = records.shape[0]
        for b in range(n):
            s = slots[b]
            if s < 0 or s >= rcap:
                raise IndexError("frame stack sample: a slot is outside the item records")
            records[s, 1] += 1  # every draw counts, duplicates included
        keys = cols[offs[0] : offs[0] + 8 * n].view(np.int64)
        times = cols[offs[1] : offs[1] + 8 * n].view(np.int64)
        bits = cols[offs[2] : offs[2] + 8 * n].view(np.int64)  # float64 priorities
        prob = cols[offs[3] : offs[3] + 8 * n].view(np.float64)
        weights = cols[offs[4] : offs[4] + 4 * n].view(np.float32)
        for b in range(n):
            s = slots[b]
            keys[b] = records[s, 0]
            times[b] = records[s, 1]
            bits[b] = records[s, 2]
            prob[b] = inv_count
            weights[b] = 1.0
        if length > 1:
            # Windows (Storage.windows): past an episode's end the last row repeats.
            rows = np.empty(n * length, np.int64)
            ends = cols[offs[5] : offs[5] + 8 * n * length].view(np.int64)
            for b in range(n):
                r = keys[b] % rcap
                for t in range(length):
                    rows[b * length + t] = r
                    ends[b * length + t] = end[r]
                    k2 = nxt[r]
                    if k2 >= 0:
                        r = k2 % rcap
            if pad:  # False from the first repeated row on (Storage.window_mask)
                for b in range(n):
                    live = True
                    for t in range(length):
                        i = b * length + t
                        if t > 0 and rows[i] == rows[i - 1]:
                            live = False
                        cols[offs[6] + i] = 1 if live else 0
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
                    _zero_bytes(dst, width)
                else:
                    _copy_bytes(dst, base + chain[b, j] * stride + off, width)
                dst += width


def _kernel() -> Any:
    if "kernel" not in _STATE:
        _STATE["kernel"] = _compile()
    return _STATE["kernel"]


class Plan:
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
        #: Per (batch size, window length): what :func:`layout` computes.
        self.layouts: dict[tuple[int, int], Layout] = {}
        self.names = [f[0] for f in self.fields]
        #: The table's item records ``[capacity, 4]`` int64 (key, times sampled,
        #: priority bits, unused): CPU wherever the storage takes the compiled path.
        self.records = table._items.numpy()
        self.starts = np.array([f[3] for f in self.fields], dtype=np.int64)
        self.plan = np.array(rows, dtype=np.int64).reshape(-1, 6)
        #: The compiled pass (``stack_sample``), its arguments between the slots
        #: and the columns' buffer (for :func:`sample_fused`), and after the
        #: columns' offsets and probability, but the output.
        self.kernel = _kernel().sample
        self.pad = table.pad
        self.head = (
            self.records,
            table.sequence_length,
            table.pad,
            engine.next,  # window walks: next links and end codes
            engine.end,
        )
        self.tail = (table._stack_k, engine.key, engine.prev, self.plan, self.starts)
        #: The columns' buffer and offsets of a gather alone (never written).
        self.no_cols = (np.empty(0, np.uint8), np.zeros(7, np.int64))

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
_PLANS: weakref.WeakKeyDictionary[Storage, Plan | None] = weakref.WeakKeyDictionary()


def _plan(table: Table) -> Plan | None:
    st = table.storage
    plan = _PLANS.get(st, _NO_PLAN)
    if plan is _NO_PLAN:
        plan = _PLANS[st] = Plan(table) if Plan.usable(table) and _kernel() is not None else None
    return plan  # type: ignore[no-any-return]


_I64, _F64, _F32, _BOOL = (np.dtype(t) for t in (np.int64, np.float64, np.float32, np.bool_))


def layout(plan: Plan, n: int, length: int) -> Layout:
    """The buffers of a sample of ``n`` windows of ``length`` rows: bytes of the
    fields' buffer and of the item columns' buffer, the kernel's byte offsets of the
    columns, and ``(shape, dtype, offset)`` of each field (``plan.fields`` order) and
    each column (keys, times sampled, priorities, probabilities, weights; then for
    windows the end codes and, padded, the mask)."""
    got = plan.layouts.get((n, length))
    if got is None:
        if len(plan.layouts) > 16:  # a few batch sizes are usual; never grow without end
            plan.layouts.clear()
        rows = n * length
        lead: tuple[int, ...] = (n,) if length == 1 else (n, length)
        fields = [((*lead, *shape), dt, a * rows) for _, dt, shape, a, _ in plan.fields]
        cols: list[tuple[tuple[int, ...], np.dtype[Any], int]] = []
        at = 0
        for dt in (_I64, _I64, _F64, _F64, _F32):
            cols.append(((n,), dt, at))
            at += -(-n * dt.itemsize // 8) * 8
        offs = [c[2] for c in cols] + [at, at + 8 * rows]
        if length > 1:
            cols.append((lead, _I64, at))
            if plan.pad:
                cols.append((lead, _BOOL, at + 8 * rows))
        at += 9 * rows
        got = (rows * plan.row_bytes, at, np.array(offs, np.int64), fields, cols)
        plan.layouts[(n, length)] = got
    return got


def sample_plan(table: Table) -> Plan | None:
    """The plan :func:`sample_fused` needs, or ``None`` where it does not apply: a
    frame-stack table on the compiled path with numpy item records."""
    if not table.frame_stack or table._np_item_key is None:
        return None
    return _plan(table)


def sample_fused(plan: Plan, slots: Any, layout: Layout, inv_count: float) -> tuple[Any, ...]:
    """Count the draws of ``slots`` (a numpy int64 vector), walk their windows and
    gather, in one compiled pass; ``layout`` is :func:`layout`'s for them.

    The effects and values of ``_items.take_items``, ``Storage.windows`` and
    ``window_mask`` (windows) and :func:`gather`, with probabilities ``inv_count``
    and unit weights (a uniform draw). The fields are views of one buffer, the item
    columns live in another (a column kept alone does not keep the frames alive).
    Call with the table's lock held. Returns ``(data, columns)``: the fields, and
    the item columns' buffer and layout for :func:`stack_sample`.
    """
    nbytes, ncols, offs, fields, columns = layout
    buf = np.empty(nbytes, dtype=np.uint8)
    cols = np.empty(ncols, dtype=np.uint8)
    plan.kernel(slots, True, *plan.head, cols, offs, inv_count, *plan.tail, buf)
    nd, tensor = np.ndarray, torch.from_numpy
    data = {
        name: tensor(nd(s, dt, buf, at))
        for name, (s, dt, at) in zip(plan.names, fields, strict=True)
    }
    return data, (cols, columns)


def times_sampled(columns: tuple[Any, list[Any]]) -> Any:
    """The times-sampled column of :func:`sample_fused`'s columns, as numpy."""
    cols, layout = columns
    shape, dt, at = layout[1]
    return np.ndarray(shape, dt, cols, at)


class _Column:
    """A :class:`Sample` attribute made from the sample's column buffer when first
    read (then kept in the instance, which this non-data descriptor defers to)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        d = obj.__dict__
        cols, layout = d["_columns"]
        if self.index < len(layout):
            shape, dt, at = layout[self.index]
            value = torch.from_numpy(np.ndarray(shape, dt, cols, at))
        else:
            value = None  # ends of single steps, mask of unpadded windows
        d[self.name] = value
        return value


class StackSample(Sample):
    """A :class:`Sample` of :func:`sample_fused` whose item columns (keys, counts,
    priorities, probabilities, weights, end codes, mask) become tensors when first
    read: a learner that reads only the data pays for none of them. It pickles
    and copies as a plain :class:`Sample`."""

    keys = _Column(0)
    times_sampled = _Column(1)
    priorities = _Column(2)
    probabilities = _Column(3)
    weights = _Column(4)
    ends = _Column(5)
    mask = _Column(6)

    def __reduce__(self) -> tuple[Any, ...]:
        names = ("data", "keys", "probabilities", "weights", "priorities", "times_sampled")
        args = tuple(getattr(self, f) for f in names)
        return (Sample, (*args, self.table_size, self.mask, self.ends))


def stack_sample(
    data: dict[str, torch.Tensor], columns: tuple[Any, list[Any]], table_size: int
) -> Sample:
    """The :class:`Sample` of :func:`sample_fused`'s outputs (item columns made on
    first read)."""
    got = object.__new__(StackSample)
    d = got.__dict__
    d["data"] = data
    d["table_size"] = table_size
    d["_columns"] = columns
    return got


def _fused(plan: Plan, rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`gather` by the compiled pass (CPU, numba): one output buffer, one call."""
    flat = rows.numpy().reshape(-1)
    n = len(flat)
    # One buffer for every field's output (numpy's allocation is 16-byte aligned and
    # every field starts at a multiple of 64 bytes: each view is aligned).
    buf = np.empty(n * plan.row_bytes, dtype=np.uint8)
    if n:
        plan.kernel(flat, False, *plan.head, *plan.no_cols, 1.0, *plan.tail, buf)
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
