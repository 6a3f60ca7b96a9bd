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
compile (about a second per kernel). The sum-tree and prioritized kernels are
top-level functions of :mod:`replaydb._tree_kernels` (a compiled function that
closes over another one is never found in that cache); the others are compiled
here and close over nothing compiled.

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
#: Tree levels of at least this many values (256 KB of float64) are prefetched while
#: the level above them is searched.
_TOUCH_FROM = 1 << 15


def _compile() -> SimpleNamespace | None:
    if os.environ.get("REPLAYDB_NUMBA", "1") == "0":
        return None
    try:
        # The sum-tree kernels are top-level functions there (numba's cache finds
        # them); importing it imports numba.
        from replaydb import _tree_kernels as tree
    except ImportError:  # no numba
        return None

    jit = tree.jit

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
        tree_find=tree.tree_find,
        tree_update=tree.tree_update,
        importance=tree.importance,
        take_items=take_items,
        windows=windows,
        live_updates=live_updates,
        prio_draw=tree.prio_draw,
        prio_take=tree.prio_take,
        prio_updates=tree.prio_updates,
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
