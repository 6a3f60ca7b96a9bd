"""The compiled sum-tree and prioritized-sampling kernels (numba), as top-level functions.

Imported by :func:`replaydb._kernels.get` only where numba is installed (see that
module for the tree layout and how callers switch between these and their numpy
paths). They live at module level, not inside a function, because numba's disk
cache keys a function by its code and the values it closes over: a kernel that
closes over another compiled function (``prio_take`` calling ``tree_find``)
gets a new key in every process, misses the cache and compiles again (about a
second). Kernels that call each other here reach one another as module globals.
"""

from __future__ import annotations

from typing import Any

import numba  # type: ignore[import-untyped,import-not-found,unused-ignore]
import numpy as np
from llvmlite import ir  # type: ignore[import-untyped,import-not-found,unused-ignore]
from numba import types  # type: ignore[import-untyped,import-not-found,unused-ignore]
from numba.extending import intrinsic  # type: ignore[import-untyped,import-not-found,unused-ignore]

from replaydb._kernels import _SHIFT, _TOUCH_FROM, TREE_ARITY

__all__ = [
    "child_sum",
    "importance",
    "jit",
    "prio_draw",
    "prio_take",
    "prio_updates",
    "tree_find",
    "tree_update",
]


def jit(fn: Any) -> Any:
    """``numba.njit(nogil=True)``, cached on disk where a cache location is writable."""
    try:
        return numba.njit(nogil=True, cache=True)(fn)
    except RuntimeError:  # no writable cache location: compile in every process
        return numba.njit(nogil=True, cache=False)(fn)


@jit
def child_sum(tree: Any, c: int) -> Any:
    # A node's sum from its children at tree[c : c + TREE_ARITY]: pairs, then
    # pairs of pairs (the order of SumTree's numpy and torch paths). c >= 0: unsigned
    # indices spare numba's negative-index wraparound on every load.
    u = np.uint64(c)
    one, two, three = np.uint64(1), np.uint64(2), np.uint64(3)
    if TREE_ARITY == 8:
        four = np.uint64(4)
        return ((tree[u] + tree[u + one]) + (tree[u + two] + tree[u + three])) + (
            (tree[u + four] + tree[u + four + one])
            + (tree[u + four + two] + tree[u + four + three])
        )
    return (tree[u] + tree[u + one]) + (tree[u + two] + tree[u + three])


def _prefetch(typingctx: Any, addr: Any) -> Any:
    """Ask the CPU to bring the cache line at address ``addr`` (an int) in; no fault, no wait."""
    sig = types.void(types.intp)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i8p = ir.PointerType(ir.IntType(8))
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p], fnty)
        # read, keep in every cache level, data
        builder.call(fn, [builder.inttoptr(args[0], i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


#: ``prefetch(address)`` in compiled code (numba typing: one intp argument).
prefetch: Any = intrinsic(_prefetch)


@jit
def descend(tree: Any, x: Any, node: Any, off: Any, levels: int, rows: Any, recs: Any) -> None:
    # The search of tree_find from the root (node 0) for the values x, which it
    # reduces in place; node ends as the leaf slots. Level by level over the whole
    # batch: the loads of one level are independent, so the CPU overlaps their
    # cache misses. At a node, the 8 children are one cache line: count the running
    # sums (added left to right) of the first 7 at or below x and take the last of
    # those off x, with no load or branch depending on a comparison, so nodes of
    # different draws overlap. The pick is a zero child only when rounding carried
    # x past the node's last non-zero child (or x < 0): then take the last non-zero
    # child below the count. SumTree._descend_numpy computes the same.
    #
    # Each pick also prefetches what the next pass reads: the child's line one
    # level down (on levels of >= _TOUCH_FROM values, which miss the core's
    # caches), and from the leaves, each slot's row of rows and record of recs
    # (a 2-D and a 1-D array the caller reads next; empty ones for none). The search
    # then overlaps those misses with the compares of the other draws.
    n = x.shape[0]
    addr = tree.ctypes.data
    row_addr, row_step = rows.ctypes.data, rows.strides[0]
    row_last = rows.shape[1] * rows.itemsize - 1
    rec_addr, rec_step = recs.ctypes.data, recs.strides[0]
    fetch_rows = rows.shape[0] > 0 and row_last >= 0
    fetch_recs = recs.shape[0] > 0
    for level in range(levels):
        base = off[level + 1]
        down = off[level + 2] if level + 1 < levels else 0
        stop = off[level + 3] if level + 2 < levels else tree.shape[0]
        fetch_down = level + 1 < levels and stop - down >= _TOUCH_FROM
        leaf = level + 1 == levels
        for b in range(n):
            # Unsigned indices: numba then skips the negative-index wraparound
            # (three instructions a load, a third of the search's time).
            c = np.uint64(base + node[b] * TREE_ARITY)
            xb = x[b]
            run = 0.0
            before = 0.0
            past = 0
            for j in range(TREE_ARITY - 1):
                cj = tree[c + np.uint64(j)]
                run += cj
                below = run <= xb
                past += below
                before = run if below else before
            if tree[c + np.uint64(past)] == 0:
                past += tree[c + np.uint64(TREE_ARITY - 1)] + run <= xb
                last_nz = 0
                for j in range(TREE_ARITY):
                    if tree[c + np.uint64(j)] > 0:
                        last_nz = j
                past = min(past, last_nz)
                before = 0.0
                for j in range(past):
                    before += tree[c + np.uint64(j)]
            x[b] = xb - before
            child = node[b] * TREE_ARITY + past
            node[b] = child
            if fetch_down:
                prefetch(addr + (down + child * TREE_ARITY) * 8)
            elif leaf:
                if fetch_recs:
                    prefetch(rec_addr + child * rec_step)
                if fetch_rows:
                    a = row_addr + child * row_step
                    for line in range(0, row_last, 64):
                        prefetch(a + line)
                    prefetch(a + row_last)


#: No rows or records to prefetch (descend's empty arrays).
_NO_ROWS = np.empty((0, 1), np.float64)
_NO_RECS = np.empty(0, np.int64)


@jit
def tree_find(tree: Any, v: Any, off: Any, levels: int, scale: bool) -> Any:
    # Leaf slots, their values and the total for values v (scaled by the total
    # first where scale): see descend.
    total = tree[0]
    n = v.shape[0]
    x = np.empty(n, np.float64)
    node = np.zeros(n, np.int64)
    for b in range(n):
        x[b] = v[b] * total if scale else v[b]
    descend(tree, x, node, off, levels, _NO_ROWS, _NO_RECS)
    leaf0 = off[levels]
    leaves = np.empty(n, tree.dtype)
    for b in range(n):
        leaves[b] = tree[leaf0 + node[b]]
    return node, leaves, total


@jit
def tree_update(tree: Any, idx: Any, val: Any, off: Any, sizes: Any, levels: int) -> None:
    m = idx.shape[0]
    leaf0 = off[levels]
    node = np.empty(m, np.int64)
    for j in range(m):
        node[j] = idx[j]
        tree[leaf0 + idx[j]] = val[j]  # in order: the last write of an index wins
    for level in range(levels - 1, -1, -1):  # each parent level, from the leaves up
        up = off[level]
        lo = off[level + 1]
        parents = sizes[level + 1] >> _SHIFT
        for j in range(m):
            node[j] >>= _SHIFT
        if parents <= m:
            # A level no larger than the batch: recompute all of it, once each.
            for i in range(parents):
                tree[up + i] = child_sum(tree, lo + TREE_ARITY * i)
        else:
            for j in range(m):
                i = node[j]
                tree[up + i] = child_sum(tree, lo + TREE_ARITY * i)


@jit
def importance(leaf: Any, total: float) -> Any:
    # Probabilities leaf / total and ratios leaf / min(leaf) (as leaf * (1 / min)),
    # as Prioritized's numpy path computes them; the caller raises the ratios to
    # -beta with numpy's vectorized power (several times faster than a loop of pow).
    n = leaf.shape[0]
    prob = np.empty(n, np.float64)
    ratio = np.empty(n, np.float64)
    if n:
        inv = 1.0 / leaf.min()
        for b in range(n):
            prob[b] = leaf[b] / total
            ratio[b] = leaf[b] * inv
    return prob, ratio


@jit
def prio_draw(
    tree: Any,
    u: Any,
    off: Any,
    levels: int,
    item_key: Any,
    times: Any,
    pri: Any,
    ints: Any,
    reals: Any,
) -> Any:
    # Prioritized.sample and Table's item bookkeeping in one call (a table's CPU
    # short path): tree_find on the scaled draws, importance, then take_items,
    # exactly as those kernels compute them. Writes slots, keys and times into
    # ints[0..2] and probabilities, ratios and priorities into reals[0..2]
    # (arrays the caller owns: boxing new arrays costs more than the work);
    # returns the total. An empty tree (total 0) counts nothing.
    slots, leaves, total = tree_find(tree, u, off, levels, True)
    n = slots.shape[0]
    if not total > 0:
        return total
    inv = 1.0 / leaves.min()
    for b in range(n):
        ints[0, b] = slots[b]
        reals[0, b] = leaves[b] / total
        reals[1, b] = leaves[b] * inv
        times[slots[b]] += 1  # every draw counts, duplicates included
    for b in range(n):
        s = slots[b]
        ints[1, b] = item_key[s]
        ints[2, b] = times[s]
        reals[2, b] = pri[s]
    return total


@jit
def prio_take(
    tree: Any,
    u: Any,
    off: Any,
    levels: int,
    item_key: Any,
    times: Any,
    src: Any,
    out: Any,
    keys: Any,
    ratio: Any,
) -> Any:
    # prio_draw for a single-step table's transitions: the same search and
    # counts, then each drawn slot's item key into keys, its ratio leaf / min
    # leaf into ratio (the caller raises them to -beta) and its packed row
    # src[slot] into out (Storage.gather of the slots). Returns the total; an
    # empty tree (total 0) writes and counts nothing.
    # The search prefetches each drawn slot's record and row on its way.
    total = tree[0]
    n = u.shape[0]
    x = np.empty(n, np.float64)
    slots = np.zeros(n, np.int64)
    for b in range(n):
        x[b] = u[b] * total
    descend(tree, x, slots, off, levels, src, item_key)
    if not total > 0:
        return total
    leaf0 = np.uint64(off[levels])
    lo = np.inf
    for b in range(n):
        lo = min(lo, tree[leaf0 + np.uint64(slots[b])])
    inv = 1.0 / lo
    for b in range(n):  # slots are >= 0: unsigned indices skip the wraparound
        s = np.uint64(slots[b])
        ratio[b] = tree[leaf0 + s] * inv
        times[s] += 1  # every draw counts, duplicates included
    width = src.shape[1]
    for b in range(n):
        s = np.uint64(slots[b])
        keys[b] = item_key[s]
        for j in range(width):
            out[b, j] = src[s, j]
    return total


@jit
def prio_updates(
    keys: Any,
    pri: Any,
    item_key: Any,
    priority: Any,
    limit: float,
    eps: float,
    slots: Any,
    leaf: Any,
) -> Any:
    # live_updates into the caller's scratch arrays: check every priority first
    # (nothing written if one is bad), then write the live ones and put their
    # slots and leaves before the exponent (priority + eps, as
    # SumTree.update_numpy adds it) in slots[:m], leaf[:m]. Returns (m, the
    # highest live priority, the position of the first bad priority or -1).
    n = keys.shape[0]
    for j in range(n):
        if not (pri[j] > 0.0 and pri[j] < np.inf and pri[j] <= limit):  # NaN fails
            return 0, 0.0, j
    cap = np.uint64(item_key.shape[0])
    m = 0
    hi = 0.0
    for j in range(n):
        k = keys[j]
        if k < 0:
            continue
        s = np.uint64(k) % cap  # unsigned: no sign fix-up, no wraparound on the loads
        if item_key[s] != k:
            continue
        p = pri[j]
        slots[m] = s
        leaf[m] = p + eps
        priority[s] = p
        hi = max(hi, p)
        m += 1
    return m, hi, -1
