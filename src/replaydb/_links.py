"""Episode links of a :class:`~replaydb.storage.Storage`: streams, predecessors, positions.

A linked storage keeps, per row, the key of the step before and after it in the
same episode (``prev``/``next``), and per stream the key of its open episode's last
step and that episode's length. The free functions here grow the per-stream
columns, compute the links and episode positions of new steps (a compiled kernel
on CPU, batched torch elsewhere) and follow ``next`` links for windows. The step
end codes (from :mod:`replaydb._constants`) are re-exported for ``storage``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from replaydb._constants import END_NONE as END_NONE
from replaydb._constants import END_TERMINATED as END_TERMINATED
from replaydb._constants import END_TRUNCATED as END_TRUNCATED
from replaydb.errors import InvalidArgumentError

if TYPE_CHECKING:
    from replaydb.storage import Storage

#: Stream ids are in ``[0, MAX_STREAMS)``.
MAX_STREAMS = 1 << 20


def grow_streams(storage: Storage, max_stream: int) -> None:
    if max_stream >= MAX_STREAMS:
        raise InvalidArgumentError(
            f"stream ids must be in [0, {MAX_STREAMS}), got {max_stream}; "
            "number your environments or actors from 0"
        )
    size = storage._last_key.numel()
    if max_stream < size:
        return
    new = max(max_stream + 1, 2 * size)
    grow = new - size
    storage._last_key = torch.cat(
        [storage._last_key, torch.full((grow,), -1, dtype=torch.int64, device=storage.device)]
    )
    storage._ep_len = torch.cat(
        [storage._ep_len, torch.zeros(grow, dtype=torch.int64, device=storage.device)]
    )


def advance_streams(storage: Storage, streams: torch.Tensor, ends: torch.Tensor) -> None:
    """Account for steps that were dropped before storage (N > capacity)."""
    if streams.numel() == 0:
        return
    grow_streams(storage, int(streams.max()))
    # Every stream touched loses its link: the dropped steps are gone.
    storage._last_key[streams] = -1
    storage._ep_len[streams] = 0


def positions(
    storage: Storage, keys: torch.Tensor, streams: torch.Tensor, ends: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Episode links of new steps (read-only): sorted order, predecessors, positions."""
    n = keys.numel()
    dev = storage.device
    order = torch.argsort(streams, stable=True)
    ss, ks, es = streams[order], keys[order], ends[order] != END_NONE
    first = torch.ones(n, dtype=torch.bool, device=dev)
    first[1:] = ss[1:] != ss[:-1]
    last = torch.ones(n, dtype=torch.bool, device=dev)
    last[:-1] = first[1:]
    prev = torch.empty(n, dtype=torch.int64, device=dev)
    prev[1:] = torch.where(es[:-1], torch.full_like(ks[:-1], -1), ks[:-1])
    # Steps of this batch are live once written; a carried predecessor is live
    # unless an earlier write (or, in ``append``, this one) overwrote it.
    carried = storage._last_key.index_select(0, ss)
    carried = torch.where(storage.is_live(carried), carried, torch.full_like(carried, -1))
    prev = torch.where(first, carried, prev)
    new_ep = prev < 0
    idx = torch.arange(n, device=dev)
    carry_len = torch.where(
        first & ~new_ep, storage._ep_len.index_select(0, ss), torch.zeros_like(idx)
    )
    reset = torch.where(first | new_ep, idx, torch.full_like(idx, -1))
    last_reset = torch.cummax(reset, dim=0).values
    pos = idx - last_reset + carry_len.index_select(0, last_reset)
    return order, ss, ks, es, last, prev, pos


def link(
    storage: Storage, keys: torch.Tensor, streams: torch.Tensor, ends: torch.Tensor
) -> torch.Tensor:
    """Link each new step to its predecessor in the same stream; return positions."""
    grow_streams(storage, int(streams.max()))
    return storage.engine.link(keys, streams, ends)


def link_torch(
    storage: Storage, keys: torch.Tensor, streams: torch.Tensor, ends: torch.Tensor
) -> torch.Tensor:
    """:func:`link` by torch ops (any device; the storage's streams already grown)."""
    order, ss, ks, es, last, prev, pos = positions(storage, keys, streams, ends)
    # index_copy_ rather than tensor-indexed assignment: same result (keys and
    # streams within one call are distinct), a fraction of the per-call cost.
    rows = ks % storage.capacity
    storage.prev.index_copy_(0, rows, prev)
    has = prev >= 0
    if n_has := int(has.sum()):
        src = ks if n_has == prev.numel() else ks[has]
        dst = prev if n_has == prev.numel() else prev[has]
        storage.next.index_copy_(0, dst % storage.capacity, src)
    ls, ks_last, es_last, pos_last = ss[last], ks[last], es[last], pos[last]
    storage._last_key.index_copy_(0, ls, torch.where(es_last, torch.full_like(ls, -1), ks_last))
    storage._ep_len.index_copy_(0, ls, torch.where(es_last, torch.zeros_like(ls), pos_last + 1))
    return torch.empty_like(pos).index_copy_(0, order, pos)


def follow_links(storage: Storage, start_keys: torch.Tensor, length: int) -> torch.Tensor:
    cap = storage.capacity
    cols = [start_keys % cap]
    cur = start_keys
    for _ in range(length - 1):
        nxt = storage.next.index_select(0, cur % cap)
        cur = torch.where(nxt >= 0, nxt, cur)
        cols.append(cur % cap)
    return torch.stack(cols, dim=1)
