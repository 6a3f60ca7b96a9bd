"""Item bookkeeping of a :class:`~replaydb.table.Table`: its records, writes and draws.

A table keeps one 32-byte record per slot (key, times sampled, priority) beside its
step storage. The free functions here take the table and work on those records under
its lock: writing steps and adding the items they complete (windows with a stride,
padded windows), freeing rows for a consuming table, removing items, counting draws
and selecting a deterministic selector's next items, and priority updates on CPU.
``Table``'s public verbs check their arguments and call these; nothing else does.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from replaydb import _waiting
from replaydb._constants import END_NONE
from replaydb._validate import (
    as_numpy,
    check_keys,
    check_numbers,
    check_priority_values,
    priority_column,
)
from replaydb.errors import InvalidArgumentError, WouldBlockForeverError
from replaydb.samplers import ItemCounter, Selection

if TYPE_CHECKING:
    from replaydb.table import Table


def check_priorities(table: Table, priorities: Any, n: int) -> torch.Tensor | None:
    if priorities is None:
        return None
    return priority_column(priorities, n, table.device, table._priority_limit)


def write(
    table: Table,
    data: dict[str, torch.Tensor],
    n: int,
    streams: torch.Tensor,
    ends: torch.Tensor,
    priorities: torch.Tensor | None,
    timeout: float | None,
) -> None:
    with table._cond:
        _waiting.note_thread(table)
        lim = table.rate_limiter
        items = min(n, table.capacity)
        if table.sequence_length > 1 and (
            lim.never_inserts(items) or not lim.can_insert(items, table._size)
        ):
            # Steps are an upper bound on the items they complete; count exactly
            # only when that bound would block (admission is monotone in n).
            items = items_completed(table, n, streams, ends)
        if table.consuming and n > table.capacity:
            raise InvalidArgumentError(
                f"cannot write {n} steps at once into table {table.name!r}, which holds "
                f"{table.capacity} and never overwrites unconsumed items; write at most "
                f"{table.capacity} per call"
            )
        if lim.never_inserts(items):
            raise WouldBlockForeverError(
                f"insert of {items} item(s) into table {table.name!r} can never go: "
                f"{lim!r} admits at most {lim.max_diff - lim.min_diff:g} unsampled "
                "item(s) at a time; write fewer steps per call"
            )

        def ready() -> bool:
            return lim.can_insert(items, table._size) and _waiting.has_space(table, n)

        if not ready():
            _waiting.wait(table, ready, timeout, "insert", items)
        keys_at = free_keys(table, n) if table.consuming and table.sequence_length == 1 else None
        res = table.storage.append(data, streams, ends, keys=keys_at)
        if res.evicted_rows.numel():
            remove_slots(table, res.evicted_rows)
        keys = res.keys
        m = keys.numel()
        pri = priorities[-m:] if priorities is not None else None
        if table.sequence_length > 1:
            assert res.positions is not None
            done = starts_ok(table, res.positions - (table.sequence_length - 1))
            starts = table.storage.walk(keys[done], table.sequence_length - 1)
            ok = starts >= 0
            add_items(table, starts[ok], pri[done][ok] if pri is not None else None)
            if table.pad:
                add_padded(table, keys, res.positions, ends[-m:], pri)
        else:
            add_items(table, keys, pri)
        _waiting.notify(table)


def write_numpy(table: Table, values: Mapping[Any, Any], n: int, end: Any, stream: int) -> None:
    """``Table.extend_unchecked`` for ``n`` single-step items through numpy views (CPU,
    no links, not consuming): one ring write, then the records of its rows."""
    storage = table.storage
    fast = table._fast_insert
    if n > table.capacity:
        skip = n - table.capacity
        values = {k: np.asarray(v)[skip:] if np.ndim(v) else v for k, v in values.items()}
        end = np.asarray(end)[skip:] if np.ndim(end) else end
        with table._cond:
            storage.total += skip
        n = table.capacity
    item_key, priority, times = table._np_item_key, table._np_priority, table._np_times
    assert item_key is not None
    assert priority is not None
    assert times is not None
    with table._cond:
        table._threads.add(threading.get_ident())
        lim = table.rate_limiter
        if not lim.can_insert(n, table._size):
            _waiting.wait(table, lambda: lim.can_insert(n, table._size), None, "insert", n)
        first_key = storage.total
        row0 = storage.append_numpy(values, n, end, stream)
        replaced = 0
        done = 0
        while done < n:  # at most two segments: the batch may wrap around the ring
            a = (row0 + done) % table.capacity
            m = min(n - done, table.capacity - a)
            b = a + m
            mask = item_key[a:b] >= 0
            r = int(np.count_nonzero(mask))
            replaced += r
            item_key[a:b] = np.arange(first_key + done, first_key + done + m)
            priority[a:b] = table._max_priority
            times[a:b] = 0
            if fast is not None:
                # Replace semantics: an active slot stays active with a new item.
                fast(a, m)
            else:
                if r:
                    table.sampler.on_remove(torch.from_numpy(np.nonzero(mask)[0] + a))
                slots = torch.arange(a, b)
                table.sampler.on_insert(
                    slots, torch.full((m,), table._max_priority, dtype=torch.float64)
                )
            done += m
        table._size += n - replaced
        lim.on_insert(n)
        _waiting.notify(table)


def items_completed(table: Table, n: int, streams: torch.Tensor, ends: torch.Tensor) -> int:
    """How many items a write of these steps will add (what the limiter admits)."""
    if table.sequence_length == 1:
        return min(n, table.capacity)
    st = table.storage
    pos = st.preview_positions(streams, ends)
    # The preview continues a stream's episode even where this very write
    # overwrites the episode's last step (the write then starts a new episode
    # at position 0). Without a stride that only overcounts; with one the phase
    # changes, so count every start of those streams' steps (an upper bound).
    rephased = None
    if table.stride > 1 and st.total + n > table.capacity:
        last = st._last_key.index_select(0, streams)
        rephased = st.is_live(last) & (last < st.total + n - table.capacity)
    done = starts_ok(table, pos - (table.sequence_length - 1), rephased)
    if table.pad:
        # An ending step also completes the padded windows of its last T - 1 starts
        # (less the start at the final step itself, with final_step).
        ended = ends != END_NONE
        ending = pos[ended]
        j = torch.arange(int(table.final_step), table.sequence_length - 1, device=pos.device)
        loose = rephased[ended].unsqueeze(1) if rephased is not None else None
        pad_n = int(starts_ok(table, ending.unsqueeze(1) - j, loose).sum())
        return min(int(done.sum()) + pad_n, table.capacity)
    return min(int(done.sum()), table.capacity)


def starts_ok(
    table: Table, start_positions: torch.Tensor, any_phase: torch.Tensor | None = None
) -> torch.Tensor:
    """Which episode positions may start a window: ``>= 0`` and a multiple of the
    stride (any position where ``any_phase`` is true)."""
    ok = start_positions >= 0
    if table.stride > 1:
        on_stride = start_positions % table.stride == 0
        ok &= on_stride if any_phase is None else on_stride | any_phase
    return ok


def free_keys(table: Table, n: int) -> torch.Tensor | None:
    """Keys for ``n`` steps in free rows, in ring order from the cursor (or None)."""
    cap, total = table.capacity, table.storage.total
    cursor = total % cap
    if cursor + n <= cap:
        span = table._item_key[cursor : cursor + n]
    else:
        span = torch.cat([table._item_key[cursor:], table._item_key[: cursor + n - cap]])
    if not bool((span >= 0).any()):
        return None  # the rows at the cursor are free: a plain ring write
    free = (table._item_key < 0).roll(-cursor)
    offsets = torch.nonzero(free).squeeze(1)[:n]
    return offsets + total


def add_padded(
    table: Table,
    keys: torch.Tensor,
    positions: torch.Tensor,
    ends: torch.Tensor,
    priorities: torch.Tensor | None,
) -> None:
    """Add the padded windows of every episode that ended in this write."""
    ended = ends != END_NONE
    if not bool(ended.any()):
        return
    cur, pos = keys[ended], positions[ended]
    pri = priorities[ended] if priorities is not None else None
    starts: list[torch.Tensor] = []
    pris: list[torch.Tensor] = []
    for j in range(table.sequence_length - 1):
        # With final_step, the ending row holds the final observation and no
        # transition: no window starts there (j = 0).
        if j >= int(table.final_step):
            ok = starts_ok(table, pos - j) & table.storage.is_live(cur)
            starts.append(cur[ok])
            if pri is not None:
                pris.append(pri[ok])
        cur = table.storage.walk(cur, 1)
    if not starts:
        return
    add_items(table, torch.cat(starts), torch.cat(pris) if pri is not None else None)


def add_items(table: Table, keys: torch.Tensor, priorities: torch.Tensor | None) -> None:
    m = keys.numel()
    if m == 0:
        return
    slots = keys % table.capacity
    if priorities is None:
        priorities = torch.full((m,), table._max_priority, dtype=torch.float64, device=table.device)
    else:
        table._max_priority = max(table._max_priority, float(priorities.max()))
    table._records.add(table, slots, keys, priorities)
    table._size += m
    table.sampler.on_insert(slots, priorities)
    table.rate_limiter.on_insert(m)


def clear(table: Table) -> None:
    """:meth:`Table.reset`: no steps, no items; counters start again from zero."""
    with table._cond:
        table.storage.reset()
        table.sampler.reset()
        table.rate_limiter.reset()
        table._item_key.fill_(-1)
        table._priority.zero_()
        table._times.zero_()
        table._size = 0
        table._max_priority = 1.0
        _waiting.notify(table)


def remove_slots(table: Table, slots: torch.Tensor) -> None:
    """Remove the items at ``slots`` (slots without an item are ignored)."""
    active = slots[table._item_key.index_select(0, slots) >= 0]
    if active.numel() == 0:
        return
    active = torch.unique(active)
    table.sampler.on_remove(active)
    table._item_key[active] = -1
    table._size -= int(active.numel())


def take_items(
    table: Table, slots: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Count one more draw of each slot; return their keys, times sampled and priorities.

    A slot drawn twice counts twice, and both draws report the final count.
    """
    return table._records.take(table, slots)


def select_in_order(table: Table, n: int) -> Selection:
    """The next ``n`` draws of a deterministic selector, as sequential draws would be.

    Each item in the selector's order is drawn as many times in a row as it may
    still be sampled (``max_times_sampled`` minus its count; without a limit the
    first item is drawn ``n`` times), exactly what ``n`` calls of ``sample(1)``
    would return.
    """
    first = table.sampler.sample(min(n, table._size)).slots
    if table.max_times_sampled is None:
        slots = first[:1].expand(n).clone()
    else:
        left = table.max_times_sampled - table._times.index_select(0, first)
        slots = torch.repeat_interleave(first, left)[:n]
    prob = torch.ones(n, dtype=torch.float64, device=table.device)
    return Selection(slots, prob)


def select(table: Table, n: int, beta: float | None) -> Selection:
    if beta is None or not table._fast.takes_beta:
        return table.sampler.sample(n)
    return table.sampler.sample(n, beta=beta)  # type: ignore[call-arg]


def update_priorities(table: Table, keys: Any, priorities: Any) -> int:
    """:meth:`Table.update_priorities`: check everything, then write the live ones."""
    prio = table._prio_items
    if prio is not None and type(keys) is torch.Tensor and type(priorities) is torch.Tensor:
        live = _update_tensors(table, prio, keys, priorities)
        if live >= 0:
            return live
    check_keys(keys)
    check_numbers("priorities", priorities)
    return table._records.update_priorities(table, keys, priorities)


def _update_tensors(
    table: Table, prio: ItemCounter, keys: torch.Tensor, priorities: torch.Tensor
) -> int:
    """:func:`update_priorities` of the common call in one compiled pass, or ``-1``.

    CPU int64 keys and float32/float64 priorities, contiguous, of equal sizes (any
    shapes, as the checked path flattens them): the sampler's kernel checks every
    priority before writing any and takes float32 as it is (widening is exact).
    Anything else, or a rejected priority, returns ``-1`` with nothing written,
    and the checked path runs (and raises, naming the value).
    """
    if (
        keys.dtype is not torch.int64
        or priorities.dtype not in _KERNEL_FLOATS
        or not (keys.is_cpu and priorities.is_cpu)
        or priorities.requires_grad
        or not (keys.is_contiguous() and priorities.is_contiguous())
    ):
        return -1
    k = keys.numpy()
    p = priorities.numpy()
    if k.ndim != 1:
        k = k.reshape(-1)
    if p.ndim != 1:
        p = p.reshape(-1)  # e.g. [B, 1] like a batch's fields
    if k.shape[0] != p.shape[0] or not k.shape[0]:
        return -1
    with table._cond:
        live, hi, bad = prio.update_items(
            k,
            p,
            table._np_item_key,  # type: ignore[arg-type]  # set where _prio_items is
            table._np_priority,  # type: ignore[arg-type]
            table._priority_limit,
        )
        if bad >= 0:
            return -1
        if live and hi > table._max_priority:
            table._max_priority = hi
    return live


#: Priority dtypes the compiled update takes as they are.
_KERNEL_FLOATS = (torch.float32, torch.float64)


def update_priorities_torch(table: Table, keys: Any, priorities: Any) -> int:
    """:func:`update_priorities` by torch ops (any device; keys and values checked)."""
    k = torch.as_tensor(keys, device=table.device).to(torch.int64).reshape(-1)
    p = torch.as_tensor(priorities, dtype=torch.float64, device=table.device).reshape(-1)
    if k.shape != p.shape:
        raise InvalidArgumentError(
            f"keys and priorities must have the same length, got {k.numel()} keys and "
            f"{p.numel()} priorities"
        )
    check_priority_values(p, table._priority_limit)
    with table._cond:
        slots = k.clamp(min=0) % table.capacity
        live = (k >= 0) & (table._item_key.index_select(0, slots) == k)
        slots, p = slots[live], p[live]
        if slots.numel():
            table._priority[slots] = p
            table._max_priority = max(table._max_priority, float(p.max()))
            table.sampler.update(slots, p)
        return int(live.sum())


def remove_keys(table: Table, keys: Any) -> int:
    """:meth:`Table.remove`: remove the live items among ``keys``; return how many."""
    k = torch.as_tensor(np.asarray(keys, dtype=np.int64).reshape(-1), device=table.device)
    with table._cond:
        slots = k.clamp(min=0) % table.capacity
        live = (k >= 0) & (table._item_key.index_select(0, slots) == k)
        n = int(live.sum())
        if n:
            remove_slots(table, slots[live])
            _waiting.notify(table)
        return n


def update_priorities_numpy(table: Table, keys: Any, priorities: Any, records: HostRecords) -> int:
    """:meth:`update_priorities` on CPU through numpy views (same checks and effects)."""
    k = as_numpy(keys, np.int64)
    p = as_numpy(priorities, np.float64)
    if k.shape != p.shape:
        raise InvalidArgumentError(
            f"keys and priorities must have the same length, got {k.size} keys and "
            f"{p.size} priorities"
        )
    if k.size == 0:
        return 0
    item_key, priority = records.key, records.priority
    prio = table._prio_items
    if prio is not None:
        # Compiled: check, write the live priorities and update the sum tree.
        with table._cond:
            live, hi, bad = prio.update_items(k, p, item_key, priority, table._priority_limit)
            if bad >= 0:
                # raises, naming the value
                check_priority_values(torch.from_numpy(p), table._priority_limit)
            if live and hi > table._max_priority:
                table._max_priority = hi
            return live
    with table._cond:
        slots, live_p, hi = records.live_updates(table, k, p)
        if slots.size:
            if hi > table._max_priority:
                table._max_priority = float(hi)
            if table._update_numpy is not None:
                table._update_numpy(slots, live_p)
            else:
                table.sampler.update(torch.from_numpy(slots), torch.from_numpy(live_p))
        return int(slots.size)


class TorchRecords:
    """Item records through torch ops on the table's tensors (any device)."""

    name = "torch"

    def add(
        self, table: Table, slots: torch.Tensor, keys: torch.Tensor, priorities: torch.Tensor
    ) -> None:
        """Record new items at ``slots``: keys, priorities, zero draws."""
        table._item_key[slots] = keys
        table._priority[slots] = priorities
        table._times[slots] = 0

    def take(
        self, table: Table, slots: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:func:`take_items`."""
        table._times.index_add_(0, slots, torch.ones_like(slots))
        return (
            table._item_key.index_select(0, slots),
            table._times.index_select(0, slots),
            table._priority.index_select(0, slots),
        )

    def update_priorities(self, table: Table, keys: Any, priorities: Any) -> int:
        """:func:`update_priorities` after its argument checks."""
        return update_priorities_torch(table, keys, priorities)

    def ones(self, table: Table, n: int) -> torch.Tensor:
        """``n`` float32 ones on the table's device (uniform weights)."""
        return torch.ones(n, dtype=torch.float32, device=table.device)


class HostRecords:
    """CPU: item records through zero-copy numpy views of the table's columns
    (torch's strided index_put costs several microseconds a call)."""

    name = "numpy"

    def __init__(self, table: Table) -> None:
        self.key: np.ndarray[Any, Any] = table._item_key.numpy()
        self.priority: np.ndarray[Any, Any] = table._priority.numpy()
        self.times: np.ndarray[Any, Any] = table._times.numpy()

    def add(
        self, table: Table, slots: torch.Tensor, keys: torch.Tensor, priorities: torch.Tensor
    ) -> None:
        """Record new items at ``slots``: keys, priorities, zero draws."""
        s = slots.numpy()
        self.key[s] = keys.numpy()
        self.priority[s] = priorities.numpy()
        self.times[s] = 0

    def take(
        self, table: Table, slots: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:func:`take_items`."""
        s = slots.numpy()
        times = self.times
        np.add.at(times, s, 1)
        # Fancy indexing, not take: take copies a strided column whole first.
        keys, t, p = self.key[s], times[s], self.priority[s]
        return torch.from_numpy(keys), torch.from_numpy(t), torch.from_numpy(p)

    def update_priorities(self, table: Table, keys: Any, priorities: Any) -> int:
        """:func:`update_priorities` after its argument checks."""
        return update_priorities_numpy(table, keys, priorities, self)

    def live_updates(
        self, table: Table, k: np.ndarray[Any, Any], p: np.ndarray[Any, Any]
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], Any]:
        """Check every priority, write the live ones; return their slots, values, max."""
        lo, hi = p.min(), p.max()
        if not (lo > 0 and hi <= table._priority_limit and hi < np.inf):  # NaN fails
            check_priority_values(torch.from_numpy(p), table._priority_limit)
        slots = k % table.capacity
        live = (self.key[slots] == k) & (k >= 0)
        live_p = p
        if not live.all():
            slots, live_p = slots[live], p[live]
            hi = live_p.max() if live_p.size else hi
        self.priority[slots] = live_p
        return slots, live_p, hi

    def ones(self, table: Table, n: int) -> torch.Tensor:
        """``n`` float32 ones (uniform weights)."""
        return torch.from_numpy(np.ones(n, np.float32))


class NumbaRecords(HostRecords):
    """:class:`HostRecords` whose draw counting and priority updates are compiled."""

    name = "numba"

    def __init__(self, table: Table, kernels: SimpleNamespace) -> None:
        super().__init__(table)
        self.kernels = kernels

    def take(
        self, table: Table, slots: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:func:`take_items`."""
        keys, t, p = self.kernels.take_items(slots.numpy(), self.key, self.times, self.priority)
        return torch.from_numpy(keys), torch.from_numpy(t), torch.from_numpy(p)

    def live_updates(
        self, table: Table, k: np.ndarray[Any, Any], p: np.ndarray[Any, Any]
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], Any]:
        """One pass: check every priority, keep and write the live ones."""
        slots, live_p, hi, bad = self.kernels.live_updates(
            k, p, self.key, self.priority, table._priority_limit
        )
        if bad >= 0:
            # raises, naming the value
            check_priority_values(torch.from_numpy(p), table._priority_limit)
        return slots, live_p, hi


#: A table's item-record path, chosen once when its records are allocated.
Records = TorchRecords | HostRecords
