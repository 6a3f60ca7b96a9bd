"""Compiled CPU loops for the hot paths of sampling and writing, where numba is installed.

Each function here is one pass over a batch that would otherwise be a chain of
numpy or torch calls (one to several microseconds of dispatch each, which at a
batch of 256 costs more than the memory traffic itself). Every caller keeps a numpy path that gives
the same results; :func:`get` returns ``None`` without numba or with
``REPLAYDB_NUMBA=0``, and tests switch between the two with :func:`use`.

The functions take numpy arrays that are zero-copy views of a table's torch
tensors (see ``Table``, ``Storage`` and ``SumTree``), so writes land in the
tensors. Compiled code is cached on disk next to this file (or in numba's user
cache directory where that is read-only), so only the first process pays the
compile (about a second per kernel).

The sum tree layout is the one of :mod:`replaydb.sum_tree`: an implicit tree of
``K = TREE_ARITY`` children per node, stored level by level from the root
(``tree[0]``), level ``l`` at ``off[l]`` with ``sizes[l]`` values, the children
of node ``i`` of level ``l`` at ``off[l + 1] + K * i + [0, K)``, the leaves the
last level (``levels`` below the root).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

from replaydb import _row_kernels

__all__ = ["TREE_ARITY", "get", "use"]

#: Children per sum-tree node (4 or 8), a compile-time constant of the kernels;
#: SumTree uses the same on every path. 8 float64 sums fill one 64-byte cache line;
#: 4 measured no faster at a million leaves (more levels, shorter scans).
TREE_ARITY = 8
_SHIFT = TREE_ARITY.bit_length() - 1
#: Tree levels of at least this many values are touched before they are searched.
_TOUCH_FROM = 1 << 15


def _compile() -> SimpleNamespace | None:
    if os.environ.get("REPLAYDB_NUMBA", "1") == "0":
        return None
    try:
        import numba  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return None

    def jit(fn: Any) -> Any:
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
    def take_items(slots: Any, item_key: Any, times: Any, priority: Any) -> Any:
        n = slots.shape[0]
        for b in range(n):  # every draw counts, duplicates included
            times[slots[b]] += 1
        keys = np.empty(n, np.int64)
        out_times = np.empty(n, np.int64)
        out_pri = np.empty(n, np.float64)
        for b in range(n):
            s = slots[b]
            keys[b] = item_key[s]
            out_times[b] = times[s]
            out_pri[b] = priority[s]
        return keys, out_times, out_pri

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
    def record_rows(
        key: Any,
        stream: Any,
        end: Any,
        item_key: Any,
        priority: Any,
        times: Any,
        row0: int,
        n: int,
        total: int,
        max_priority: float,
    ) -> Any:
        # A row writer's bookkeeping of rows row0 .. row0 + n - 1 (no wrap), keys
        # total, total + 1, ...: the step records (key, stream 0, no end) and the
        # item records (key, the highest priority, no draws), as the numpy path
        # writes them. Returns how many of the slots held no item before. Zeros are
        # written only over other values: a line that stays clean is not written back.
        fresh = 0
        for i in range(n):
            r = row0 + i
            k = total + i
            key[r] = k
            if stream[r] != 0:
                stream[r] = 0
            if end[r] != 0:
                end[r] = 0
            fresh += item_key[r] < 0
            item_key[r] = k
            priority[r] = max_priority
            if times[r] != 0:
                times[r] = 0
        return fresh

    @jit
    def windows(starts: Any, key: Any, nxt: Any, end: Any, length: int) -> Any:
        # Follow ``next`` links from each start; past an episode's end (padded
        # windows) the last row repeats, as Storage._follow_links does.
        cap = key.shape[0]
        n = starts.shape[0]
        rows = np.empty((n, length), np.int64)
        ends = np.empty((n, length), np.int64)
        for b in range(n):
            k = starts[b]
            r = k % cap
            for t in range(length):
                rows[b, t] = r
                ends[b, t] = end[r]
                k2 = nxt[r]
                if k2 >= 0:
                    r = k2 % cap
        return rows, ends

    @jit
    def live_updates(keys: Any, pri: Any, item_key: Any, priority: Any, limit: float) -> Any:
        # Validate every priority first (nothing is written if one is bad: finite,
        # > 0 and <= limit), then keep and write the (slot, priority) pairs whose
        # key still names its item.
        n = keys.shape[0]
        for j in range(n):
            if not (pri[j] > 0.0 and pri[j] < np.inf and pri[j] <= limit):  # NaN fails
                return np.empty(0, np.int64), np.empty(0, np.float64), 0.0, j
        cap = item_key.shape[0]
        slots = np.empty(n, np.int64)
        kept = np.empty(n, np.float64)
        m = 0
        hi = 0.0
        for j in range(n):
            k = keys[j]
            s = k % cap
            if k < 0 or item_key[s] != k:
                continue
            slots[m] = s
            kept[m] = pri[j]
            priority[s] = pri[j]
            hi = max(hi, pri[j])
            m += 1
        return slots[:m], kept[:m], hi, -1

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

    @jit
    def link_steps(
        keys: Any, streams: Any, ends: Any, key: Any, prev: Any, nxt: Any, last: Any, ep_len: Any
    ) -> Any:
        # Storage._link in one pass over steps in key order: each step's predecessor
        # is its stream's last step (if that is still live and its episode did not
        # end); set prev/next links, return episode positions, advance the streams.
        cap = key.shape[0]
        n = keys.shape[0]
        pos = np.empty(n, np.int64)
        for j in range(n):
            k = keys[j]
            s = streams[j]
            p = last[s]
            if p >= 0 and key[p % cap] != p:
                p = -1
            prev[k % cap] = p
            if p >= 0:
                nxt[p % cap] = k
                pos[j] = ep_len[s]
            else:
                pos[j] = 0
            if ends[j] != 0:
                last[s] = -1
                ep_len[s] = 0
            else:
                last[s] = k
                ep_len[s] = pos[j] + 1
        return pos

    @jit
    def walk(keys: Any, steps: int, key: Any, links: Any) -> Any:
        # Storage.walk: follow links ``steps`` times; -1 where a link is broken.
        cap = key.shape[0]
        n = keys.shape[0]
        out = np.empty(n, np.int64)
        for j in range(n):
            cur = keys[j]
            for _ in range(steps):
                if cur < 0 or key[cur % cap] != cur:
                    cur = -1
                    break
                cur = links[cur % cap]
            out[j] = cur if cur >= 0 and key[cur % cap] == cur else -1
        return out

    @jit
    def narrow(src: Any, dst: Any) -> Any:
        # Spec's checked integer cast in one pass: copy src into a narrower integer
        # (or bool) dst and return src's min and max; the caller checks them
        # against dst's range before it uses dst. src has at least one element.
        lo = src[0]
        hi = src[0]
        for i in range(src.shape[0]):
            v = src[i]
            lo = min(lo, v)
            hi = max(hi, v)
            dst[i] = v
        return lo, hi

    @jit
    def narrow_float(src: Any, dst: Any) -> Any:
        # Spec's checked float cast: copy src into a narrower float dst and count the
        # infinities in dst (0: no value overflowed; else the caller looks closer,
        # since src may hold infinities itself). Branch-free, so it vectorizes.
        hits = 0
        for i in range(src.shape[0]):
            dst[i] = src[i]
            hits += np.isinf(dst[i])
        return hits

    return SimpleNamespace(
        narrow=narrow,
        narrow_float=narrow_float,
        link_steps=link_steps,
        walk=walk,
        tree_find=tree_find,
        tree_update=tree_update,
        importance=importance,
        take_items=take_items,
        windows=windows,
        live_updates=live_updates,
        prio_draw=prio_draw,
        prio_take=prio_take,
        prio_updates=prio_updates,
        record_rows=record_rows,
        **_window_kernels(jit),
        **_row_kernels.compile_kernels(jit),
    )


_STATE: dict[str, Any] = {}


def get() -> SimpleNamespace | None:
    """The compiled kernels, or ``None`` (numba missing, ``REPLAYDB_NUMBA=0``, or off).

    numba is imported on the first call (a CPU table or tree being built), not when
    replaydb is imported.
    """
    if "compiled" not in _STATE:
        _STATE["compiled"] = _compile()
        _STATE.setdefault("enabled", True)
    return _STATE["compiled"] if _STATE["enabled"] else None


def use(enabled: bool) -> None:
    """Turn the compiled kernels on or off for objects created afterwards (tests).

    Args:
        enabled: ``False`` selects the numpy paths; ``True`` the kernels, where
            numba is installed.
    """
    _STATE["enabled"] = bool(enabled)


# ------------------------------------------------------------------------------------
# Window and link walking kernels (owned by the sequence/frame-stack code in table.py).
# Kept apart from the sum-tree kernels above; `_compile` adds them to its namespace.
# ------------------------------------------------------------------------------------


def _window_kernels(jit: Callable[[Any], Any]) -> dict[str, Any]:
    """Compile the link-walking kernels with ``jit`` (numba's ``njit`` wrapper)."""

    @jit
    def stack_rows(rows: Any, k: int, key: Any, prev: Any) -> Any:
        # For each row, the rows of its last k frames, oldest first: follow ``prev``
        # links k - 1 times. Where a link is broken (episode start, or the earlier
        # step was overwritten) the walk stops; earlier positions repeat the oldest
        # frame reached and are marked invalid.
        cap = key.shape[0]
        n = rows.shape[0]
        out = np.empty((n, k), np.int64)
        valid = np.empty((n, k), np.bool_)
        for b in range(n):
            r = rows[b]
            out[b, k - 1] = r
            valid[b, k - 1] = True
            ok = True
            for j in range(k - 2, -1, -1):
                if ok:
                    p = prev[r]
                    if p >= 0 and key[p % cap] == p:
                        r = p % cap
                    else:
                        ok = False
                out[b, j] = r
                valid[b, j] = ok
        return out, valid

    return {"stack_rows": stack_rows}
