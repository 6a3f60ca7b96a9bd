"""Reads of a :class:`~replaydb.table.Table`: drawing samples and listing its items.

``Table.sample``, ``Table.sample_data`` and ``Table.items`` check nothing
themselves and call these. A draw takes the table's lock, waits on the rate
limiter (see :mod:`replaydb._waiting`), asks the sampler for slots, counts the
draw in the item records (:mod:`replaydb._items`), gathers the rows (windows for
sequence tables, frame stacks through :mod:`replaydb._frames`), removes items that
reached ``max_times_sampled`` and wakes blocked writers.

Three short paths skip work the general path does, with the same draws and effects:

* a CPU prioritized single-step table (the sampler's compiled ``draw_items``
  draws, counts and reads the records in one pass), taken by :func:`sample` when
  the arguments are valid and the table can be sampled at once;
* a CPU uniform frame-stack table with numba, taken by :func:`sample` (one
  compiled pass counts the draws, walks the windows and gathers the stacks, all
  fields in one buffer: :func:`replaydb._frames.sample_fused`);
* a CPU uniform single-step table in :func:`sample_data` (the Velora buffer),
  which counts ``times_sampled`` only where ``max_times_sampled`` needs it:
  counting reads one random 32-byte record per drawn item, which measured +50% on
  a 256-row draw from a 1,000,000-row table, for a number only
  :attr:`~replaydb.table.Sample.times_sampled` reports.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import numpy as np
import torch

from replaydb import _frames, _items, _waiting
from replaydb._records import Sample
from replaydb._validate import check_int, check_timeout, check_unit_interval
from replaydb.errors import InvalidArgumentError, WouldBlockForeverError
from replaydb.samplers import ItemCounter, Uniform
from replaydb.storage import check_memory

if TYPE_CHECKING:
    from replaydb.table import Table

#: Samples whose output would exceed this many bytes are checked against free memory.
SAMPLE_CHECK_BYTES = 1 << 30


def sample(table: Table, batch_size: Any, beta: Any, timeout: Any) -> Sample:
    """:meth:`Table.sample`: check the arguments, wait, draw, gather, count."""
    prio = table._prio_items
    if (
        prio is not None
        and type(batch_size) is int
        and 0 < batch_size * table._item_nbytes <= SAMPLE_CHECK_BYTES
        and timeout is None
        and (beta is None or (type(beta) is float and 0.0 <= beta <= 1.0))
    ):
        # CPU prioritized single-step table, valid arguments: the short path.
        short = _sample_prioritized(table, prio, batch_size, beta)
        if short is not None:
            return short
    elif (
        type(batch_size) is int
        and beta is None
        and timeout is None
        and 0 < batch_size * table._item_nbytes <= SAMPLE_CHECK_BYTES
        and (stacked := _stacked(table)) is not None
    ):
        # CPU uniform frame-stack table, valid arguments: the short path.
        short = _sample_stacked(table, stacked, batch_size)
        if short is not None:
            return short
    d, data = draw(table, batch_size, beta, timeout, _frames.gather, table._item_nbytes)
    return Sample(
        data=data,
        keys=d.keys,
        probabilities=d.probabilities,
        weights=d.weights,
        priorities=d.priorities,
        times_sampled=d.times_sampled,
        table_size=d.table_size,
        mask=d.mask,
        ends=d.ends,
    )


class Drawn(NamedTuple):
    """What a draw of :func:`draw` reports beside the rows' use (see :class:`Sample`)."""

    keys: torch.Tensor
    probabilities: torch.Tensor
    weights: torch.Tensor
    priorities: torch.Tensor
    times_sampled: torch.Tensor
    table_size: int
    mask: torch.Tensor | None
    ends: torch.Tensor | None


T = TypeVar("T")


def draw(
    table: Table,
    batch_size: Any,
    beta: Any,
    timeout: Any,
    use_rows: Callable[[Table, torch.Tensor], T],
    item_nbytes: int,
) -> tuple[Drawn, T]:
    """One draw with every effect of :meth:`Table.sample`; ``use_rows`` reads the rows.

    Checks the arguments (and, for outputs of ``item_nbytes`` per item over
    :data:`SAMPLE_CHECK_BYTES`, free memory), waits on the rate limiter, draws,
    counts the draw in the item records, and calls ``use_rows(table, rows)`` under
    the table's lock before the draw is counted by the limiter and spent items are
    removed: rows are ``[B]`` (single-step) or ``[B, T]`` (windows). The gather of
    :func:`sample` and the row bookkeeping of ``Table.sample_rows`` are its two uses.
    """
    b = check_int("batch_size", batch_size, 1)
    if beta is not None:
        check_unit_interval("beta", beta)
    if timeout is not None:
        check_timeout(timeout)
    if b * item_nbytes > SAMPLE_CHECK_BYTES:
        check_memory(
            b * item_nbytes,
            table.device,
            f"sample(batch_size={b}) of {item_nbytes} bytes per item",
            "sample fewer items per call",
        )
    with table._cond:
        _waiting.note_thread(table)
        lim = table.rate_limiter
        if lim.never_samples(b) or (
            table.consuming and b > table.capacity * (table.max_times_sampled or 1)
        ):
            raise WouldBlockForeverError(
                f"sample of {b} item(s) from table {table.name!r} can never go: {lim!r} "
                f"and capacity {table.capacity} never let that many be drawn at once; "
                "sample fewer items per call"
            )

        def ready() -> bool:
            return table._size > 0 and lim.can_sample(b, table._size) and _waiting.enough(table, b)

        if not ready():
            _waiting.wait(table, ready, timeout, "sample", b)
        prio = table._prio_items
        if prio is not None:
            # One compiled pass: the same draws and counts as the two calls below.
            sel, keys, times, priorities = prio.draw_items(
                b,
                beta,
                table._np_item_key,  # type: ignore[arg-type]  # set on CPU
                table._np_times,  # type: ignore[arg-type]
                table._np_priority,  # type: ignore[arg-type]
            )
        else:
            sel = (
                _items.select_in_order(table, b)
                if table.sampler.deterministic
                else _items.select(table, b, beta)
            )
            keys, times, priorities = _items.take_items(table, sel.slots)
        slots = sel.slots
        mask = ends = None
        if table.sequence_length == 1:
            rows = slots
        else:
            rows, ends = table.storage.windows(keys, table.sequence_length)
            if table.pad:
                mask = table.storage.window_mask(rows)
        used = use_rows(table, rows)
        size = table._size
        lim.on_sample(b)
        if table.max_times_sampled is not None:
            spent = slots[times >= table.max_times_sampled]
            if spent.numel():
                _items.remove_slots(table, spent)
        _waiting.notify(table)
    weights = sel.weights
    if weights is None:
        weights = table._records.ones(table, b)
    drawn = Drawn(keys, sel.probabilities, weights, priorities, times, size, mask, ends)
    return drawn, used


def _sample_prioritized(
    table: Table, prio: ItemCounter, b: int, beta: float | None
) -> Sample | None:
    """:func:`sample` of a CPU prioritized single-step table with valid arguments.

    The same draws, counts, removals and limiter accounting as the general path
    (one compiled pass draws the slots and counts the items); ``None`` where the
    table cannot be sampled at once (the general path then waits or raises).
    """
    with table._cond:
        lim = table.rate_limiter
        size = table._size
        if not (size > 0 and lim.can_sample(b, size)) or lim.never_samples(b):
            return None
        _waiting.note_thread(table)
        sel, keys, times, priorities = prio.draw_items(
            b,
            beta,
            table._np_item_key,  # type: ignore[arg-type]  # set on CPU
            table._np_times,  # type: ignore[arg-type]
            table._np_priority,  # type: ignore[arg-type]
        )
        slots = sel.slots
        data = table.storage.gather(slots)
        lim.on_sample(b)
        if table.max_times_sampled is not None:
            spent = slots[times >= table.max_times_sampled]
            if spent.numel():
                _items.remove_slots(table, spent)
        _waiting.notify(table)
    assert sel.weights is not None
    return Sample(
        data=data,
        keys=keys,
        probabilities=sel.probabilities,
        weights=sel.weights,
        priorities=priorities,
        times_sampled=times,
        table_size=size,
        mask=None,
        ends=None,
    )


_NOT_MADE: Any = object()


class _Stacked:
    """What :func:`_sample_stacked` keeps per table: the uniform sampler, the
    compiled plan, and per batch size a slots tensor the draw fills in place (used
    under the table's lock only), its numpy view and the sample's buffer layout."""

    def __init__(self, sampler: Uniform, plan: _frames.Plan, length: int) -> None:
        self.sampler = sampler
        self.plan = plan
        self.length = length
        self.batches: dict[int, tuple[torch.Tensor, Any, _frames.Layout]] = {}

    def batch(self, b: int) -> tuple[torch.Tensor, Any, _frames.Layout]:
        """Make (and keep) what a sample of ``b`` items uses."""
        if len(self.batches) > 16:  # a few batch sizes are usual; never grow without end
            self.batches.clear()
        t = torch.empty(b, dtype=torch.int64)
        got = self.batches[b] = (t, t.numpy(), _frames.layout(self.plan, b, self.length))
        return got


#: Table -> its frame-stack short path (None: it does not apply), made on first use.
_STACKED: weakref.WeakKeyDictionary[Table, _Stacked | None] = weakref.WeakKeyDictionary()


def _stacked(table: Table) -> _Stacked | None:
    """What a table that takes :func:`_sample_stacked` needs, else ``None``
    (decided once per table)."""
    got = _STACKED.get(table, _NOT_MADE)
    if got is _NOT_MADE:
        plan = _frames.sample_plan(table)
        sampler = table.sampler
        ok = plan is not None and type(sampler) is Uniform
        made = _Stacked(sampler, plan, table.sequence_length) if ok else None  # type: ignore[arg-type]
        got = _STACKED[table] = made
    return got  # type: ignore[no-any-return]


def _sample_stacked(table: Table, stacked: _Stacked, b: int) -> Sample | None:
    """:func:`sample` of a CPU uniform frame-stack table, valid arguments.

    The same draws, counts, removals and limiter accounting as the general path:
    the sampler's generator draws the slots (``Uniform.draw``'s draw, written in
    place into a tensor kept for the next call where every active slot is
    ``< high``: ``torch.randint`` is ``random_`` on a new tensor), one compiled pass
    counts them in the item records, walks the windows and gathers every field
    (:func:`_frames.sample_fused`); the item columns become tensors when first
    read (:class:`_frames.StackSample`). ``None`` where the table cannot be sampled
    at once (the general path then waits or raises).
    """
    sampler = stacked.sampler
    slots_t, slots, layout = stacked.batches.get(b) or stacked.batch(b)
    with table._cond:
        lim = table.rate_limiter
        size = table._size
        if not (size > 0 and lim.can_sample(b, size)) or lim.never_samples(b):
            return None
        _waiting.note_thread(table)
        act = sampler.engine
        count = act.count
        if count == act.high:
            slots_t.random_(0, count, generator=sampler.generator)
        else:  # active slots are scattered: the sampler's rejection sampling
            slots = sampler.draw(b).numpy()
        data, columns = _frames.sample_fused(stacked.plan, slots, layout, 1.0 / count)
        lim.on_sample(b)
        if table.max_times_sampled is not None:
            spent = slots[_frames.times_sampled(columns) >= table.max_times_sampled]
            if len(spent):
                _items.remove_slots(table, torch.from_numpy(spent))
        _waiting.notify(table)
    return _frames.stack_sample(data, columns, size)


def sample_data(table: Table, batch_size: Any, timeout: Any) -> dict[str, torch.Tensor]:
    """:meth:`Table.sample_data`: the uniform CPU short path, else ``sample(...).data``."""
    draw = table._short_draw
    if (
        draw is None
        or isinstance(batch_size, bool)
        or not isinstance(batch_size, int | np.integer)
        or batch_size < 1
    ):
        return sample(table, batch_size, None, timeout).data
    b = int(batch_size)
    with table._cond:
        lim = table.rate_limiter
        if table._size > 0 and lim.can_sample(b, table._size):
            _waiting.note_thread(table)
            slots = draw(b)  # the same draw as Uniform.sample
            data = table.storage.gather(slots)
            lim.on_sample(b)
            if table.max_times_sampled is not None:
                _, times, _ = _items.take_items(table, slots)
                spent = slots[times >= table.max_times_sampled]
                if spent.numel():
                    _items.remove_slots(table, spent)
            _waiting.notify(table)
            return data
    # Waiting or refusing: exactly what sample does.
    return sample(table, b, None, timeout).data


def items(table: Table, fields: Sequence[str] | None) -> Sample:
    """:meth:`Table.items`: every live item, oldest key first, without counting a draw."""
    if fields is not None:
        if isinstance(fields, str):
            raise InvalidArgumentError(
                f"fields must be a sequence of field names, got the string {fields!r}; "
                f"pass [{fields!r}]"
            )
        unknown = [f for f in fields if f not in table.spec]
        if unknown:
            raise InvalidArgumentError(
                f"fields {unknown!r} are not in the spec; expected names from {list(table.spec)}"
            )
    with table._cond:
        live = torch.nonzero(table._item_key >= 0).squeeze(1)
        keys = table._item_key.index_select(0, live)
        order = torch.argsort(keys)
        live, keys = live[order], keys[order]
        times = table._times.index_select(0, live)
        priorities = table._priority.index_select(0, live)
        mask = ends = None
        if table.sequence_length == 1:
            rows = live
        else:
            rows, ends = table.storage.windows(keys, table.sequence_length)
            if table.pad:
                mask = table.storage.window_mask(rows)
        if fields is None:
            data = table.storage.gather(rows)
        else:
            data = {
                f: table.storage.fields[f]
                .index_select(0, rows.reshape(-1))
                .reshape(*rows.shape, *table.spec[f].shape)
                for f in fields
            }
        size = table._size
    n = int(keys.numel())
    return Sample(
        data=data,
        keys=keys,
        probabilities=torch.full((n,), 1.0 / max(n, 1), dtype=torch.float64, device=table.device),
        weights=torch.ones(n, dtype=torch.float32, device=table.device),
        priorities=priorities,
        times_sampled=times,
        table_size=size,
        mask=mask,
        ends=ends,
    )
