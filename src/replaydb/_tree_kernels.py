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
    # pairs of pairs (the order of SumTree's numpy and torch paths).
    if TREE_ARITY == 8:
        return ((tree[c] + tree[c + 1]) + (tree[c + 2] + tree[c + 3])) + (
            (tree[c + 4] + tree[c + 5]) + (tree[c + 6] + tree[c + 7])
        )
    return (tree[c] + tree[c + 1]) + (tree[c + 2] + tree[c + 3])


@jit
def tree_find(tree: Any, v: Any, off: Any, levels: int, scale: bool) -> Any:
    total = tree[0]
    n = v.shape[0]
    x = np.empty(n, np.float64)
    node = np.zeros(n, np.int64)
    for b in range(n):
        x[b] = v[b] * total if scale else v[b]
    # Level by level over the whole batch: the loads of one level are
    # independent, so the CPU overlaps their cache misses. At a node, the 8
    # children are one cache line: count the running sums (added left to right)
    # of the first 7 at or below x and take the last of those off x, with no
    # load or branch depending on a comparison, so nodes of different draws
    # overlap. The pick is a zero child only when rounding carried x past the
    # node's last non-zero child (or x < 0): then take the last non-zero child
    # below the count. SumTree._descend_numpy computes the same.
    touched = 0.0
    for level in range(levels):
        base = off[level + 1]
        stop = off[level + 2] if level + 2 <= levels else tree.shape[0]
        # Touch each draw's node first: short independent loads, so many cache
        # misses are in flight at once (the search below has long chains). Only
        # on levels too large to stay in a core's cache (256 KB and up).
        if stop - base >= _TOUCH_FROM:
            for b in range(n):
                touched += tree[base + node[b] * TREE_ARITY]
        for b in range(n):
            c = base + node[b] * TREE_ARITY
            xb = x[b]
            run = 0.0
            before = 0.0
            past = 0
            for j in range(TREE_ARITY - 1):
                cj = tree[c + j]
                run += cj
                below = run <= xb
                past += below
                before = run if below else before
            if tree[c + past] == 0:
                past += tree[c + TREE_ARITY - 1] + run <= xb
                last_nz = 0
                for j in range(TREE_ARITY):
                    if tree[c + j] > 0:
                        last_nz = j
                past = min(past, last_nz)
                before = 0.0
                for j in range(past):
                    before += tree[c + j]
            x[b] = xb - before
            node[b] = node[b] * TREE_ARITY + past
    if touched < 0:  # never (sums are >= 0); keeps the touching loads
        total = touched
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
    slots, leaves, total = tree_find(tree, u, off, levels, True)
    n = slots.shape[0]
    if not total > 0:
        return total
    inv = 1.0 / leaves.min()
    for b in range(n):
        ratio[b] = leaves[b] * inv
        times[slots[b]] += 1  # every draw counts, duplicates included
    width = src.shape[1]
    for b in range(n):
        s = slots[b]
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
    cap = item_key.shape[0]
    m = 0
    hi = 0.0
    for j in range(n):
        k = keys[j]
        s = k % cap
        if k < 0 or item_key[s] != k:
            continue
        p = pri[j]
        slots[m] = s
        leaf[m] = p + eps
        priority[s] = p
        hi = max(hi, p)
        m += 1
    return m, hi, -1
