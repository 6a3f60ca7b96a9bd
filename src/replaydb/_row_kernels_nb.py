"""The row writer's numba kernels (see :mod:`replaydb._row_kernels`), at module level.

Imported only where numba is installed and enabled (:func:`replaydb._kernels.get`).
The kernels and the intrinsics they call are module globals, so numba's on-disk cache
finds them again in the next process (intrinsics captured in a closure would give
every process a new cache key, and a compile).
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from replaydb._row_kernels import (
    _AHEAD,
    _LEAD,
    CTX_CAP,
    CTX_END,
    CTX_ITEM_KEY,
    CTX_ITEM_STRIDE,
    CTX_KEY,
    CTX_PRIORITY,
    CTX_RING,
    CTX_STAGE,
    CTX_STEP,
    CTX_STREAM,
    CTX_TIMES,
    CTX_WIDTHS,
    CTX_WORDS,
    MAX_COLUMNS,
    STEP_PARTS,
)

__all__ = ["put_row", "put_rows", "put_step"]

nb: Any = importlib.import_module("numba")
types: Any = importlib.import_module("numba.core.types")
cgutils: Any = importlib.import_module("numba.core.cgutils")
intrinsic: Any = importlib.import_module("numba.extending").intrinsic
ir: Any = importlib.import_module("llvmlite.ir")


def _jit(fn: Any) -> Any:
    # As replaydb._kernels' jit: releases the GIL, cached on disk where possible.
    try:
        return nb.njit(nogil=True, cache=True)(fn)
    except RuntimeError:  # no writable cache location: compile in every process
        return nb.njit(nogil=True, cache=False)(fn)


def _held(fn: Any) -> Any:
    # Like jit, but the call keeps the GIL: releasing and taking it back costs
    # more than the one-row kernels take to run.
    try:
        return nb.njit(cache=True)(fn)
    except RuntimeError:  # no writable cache location
        return nb.njit(cache=False)(fn)


def _pointer(item: Any) -> Any:
    @intrinsic  # type: ignore[untyped-decorator,unused-ignore]
    def cast(typingctx: Any, addr: Any) -> Any:
        sig = types.CPointer(item)(types.int64)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

        return sig, codegen

    return cast


words = _pointer(types.uint32)
longs = _pointer(types.int64)
doubles = _pointer(types.float64)


@intrinsic  # type: ignore[untyped-decorator,unused-ignore]
def prefetch_write(typingctx: Any, addr: Any) -> Any:
    # Ask for the cache line at ``addr`` for writing, ahead of the stores: rows
    # written word by word into cold memory otherwise wait on each line in turn.
    sig = types.void(types.int64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        ptr = builder.inttoptr(args[0], i8p)
        # rw = 1 (write), locality = 3 (keep), cache = 1 (data)
        builder.call(fn, [ptr, i32(1), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@_jit
def records(ctx: Any, row0: int, n: int, total: int, max_priority: float) -> Any:
    # record_rows on the writer's columns: the step records of rows row0 ..
    # row0 + n - 1 (key, stream 0, no end), their item records (key, the highest
    # priority, no draws); returns how many of the slots held no item before.
    cap = ctx[CTX_CAP]
    key = nb.carray(longs(ctx[CTX_KEY]), (cap,))
    stream = nb.carray(longs(ctx[CTX_STREAM]), (cap,))
    end = nb.carray(longs(ctx[CTX_END]), (cap,))
    s = ctx[CTX_ITEM_STRIDE]
    item_key = nb.carray(longs(ctx[CTX_ITEM_KEY]), (cap * s,))
    times = nb.carray(longs(ctx[CTX_TIMES]), (cap * s,))
    priority = nb.carray(doubles(ctx[CTX_PRIORITY]), (cap * s,))
    fresh = 0
    for i in range(n):
        r = row0 + i
        k = total + i
        key[r] = k
        if stream[r] != 0:
            stream[r] = 0
        if end[r] != 0:
            end[r] = 0
        q = r * s
        fresh += item_key[q] < 0
        item_key[q] = k
        priority[q] = max_priority
        if times[q] != 0:
            times[q] = 0
    return fresh


@_jit
def put_rows(
    ctx: Any,
    n: int,
    total: int,
    max_priority: float,
    cols: int,
    p0: int,
    p1: int,
    p2: int,
    p3: int,
    p4: int,
    p5: int,
) -> Any:
    # Write n rows at ring rows total % cap ... (the caller makes sure they do not
    # wrap) from ``cols`` C-contiguous sources at addresses p0.. (``[n, width_j]``
    # words each, or with cols == 0 one full row at p0), then their records as
    # record_rows does. Returns the fresh-slot count, or -1 (nothing written)
    # where a source overlaps the rows written.
    cap = ctx[CTX_CAP]
    w = ctx[CTX_WORDS]
    row0 = total % cap
    ring = words(ctx[CTX_RING])
    dst_lo = ctx[CTX_RING] + row0 * w * 4
    dst_hi = dst_lo + n * w * 4
    srcs = (p0, p1, p2, p3, p4, p5)
    if not 0 <= cols <= MAX_COLUMNS:
        return -1
    if cols == 0:
        if p0 < dst_hi and dst_lo < p0 + w * 4:
            return -1
        src = words(p0)
        base = row0 * w
        for k in range(w):
            ring[base + k] = src[k]
    else:
        # Per word of a row: its source address in row 0 and the step to the
        # next row, so that each row is one loop of w words.
        at = np.empty(w, np.int64)
        step = np.empty(w, np.int64)
        m = 0
        for j in range(cols):
            m += ctx[CTX_WIDTHS + j]
        if m != w:  # the widths must fill the row: else write nothing
            return -1
        m = 0
        for j in range(cols):
            wj = ctx[CTX_WIDTHS + j]
            if srcs[j] < dst_hi and dst_lo < srcs[j] + n * wj * 4:
                return -1
            for k in range(wj):
                at[m] = srcs[j] + 4 * k
                step[m] = 4 * wj
                m += 1
        q = dst_lo - (dst_lo & 63)
        si = ctx[CTX_ITEM_STRIDE] * 8
        # The records' lines too, _LEAD rows ahead of the row copied (the first
        # _LEAD rows' now), so that the records pass below finds them cached.
        for i in range(0, min(n, _LEAD), 2):
            prefetch_write(ctx[CTX_ITEM_KEY] + (row0 + i) * si)
        for i in range(0, min(n, _LEAD), 8):
            prefetch_write(ctx[CTX_KEY] + (row0 + i) * 8)
            prefetch_write(ctx[CTX_STREAM] + (row0 + i) * 8)
            prefetch_write(ctx[CTX_END] + (row0 + i) * 8)
        for i in range(n):
            base = (row0 + i) * w
            ahead = dst_lo + base * 4 - row0 * w * 4 + _AHEAD
            while q < ahead and q < dst_hi:
                prefetch_write(q)
                q += 64
            if i + _LEAD < n:
                r2 = row0 + i + _LEAD
                if (i & 1) == 0:
                    prefetch_write(ctx[CTX_ITEM_KEY] + r2 * si)
                if (i & 7) == 0:
                    prefetch_write(ctx[CTX_KEY] + r2 * 8)
                    prefetch_write(ctx[CTX_STREAM] + r2 * 8)
                    prefetch_write(ctx[CTX_END] + r2 * 8)
            for m in range(w):
                ring[base + m] = words(at[m] + i * step[m])[0]
    return records(ctx, row0, n, total, max_priority)


@_held
def put_row(ctx: Any, total: int, max_priority: float) -> Any:
    # put_rows of one row from the writer's staging row (at ctx[CTX_STAGE]).
    return put_rows(ctx, 1, total, max_priority, 0, ctx[CTX_STAGE], 0, 0, 0, 0, 0)


floats = _pointer(types.float32)


@_held
def put_step(
    ctx: Any,
    total: int,
    max_priority: float,
    a0: int,
    a1: int,
    a2: int,
    a3: int,
    x: float,
    y: float,
) -> Any:
    # One float32 row at total % cap from four contiguous parts at a0 .. a3
    # (ctx[CTX_STEP + j] words each) and the numbers x, y (rounded to float32),
    # then its records. -1 (nothing written) where a part overlaps the row.
    cap = ctx[CTX_CAP]
    w = ctx[CTX_WORDS]
    row = total % cap
    lo = ctx[CTX_RING] + row * w * 4
    hi = lo + w * 4
    srcs = (a0, a1, a2, a3)
    m = 2
    for j in range(STEP_PARTS):
        m += ctx[CTX_STEP + j]
        if srcs[j] < hi and lo < srcs[j] + ctx[CTX_STEP + j] * 4:
            return -1
    if m != w:  # sizes not declared (or not this row's): write nothing
        return -1
    ring = words(ctx[CTX_RING])
    base = row * w
    for j in range(STEP_PARTS):
        src = words(srcs[j])
        wj = ctx[CTX_STEP + j]
        for k in range(wj):
            ring[base + k] = src[k]
        base += wj
    out = floats(ctx[CTX_RING])
    t0 = row * w + ctx[CTX_STEP + STEP_PARTS]
    out[t0] = x
    out[t0 + 1] = y
    return records(ctx, row, 1, total, max_priority)
