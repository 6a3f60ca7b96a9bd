"""Short paths of single-step CPU tables whose fields share one dtype: rows from parts.

A :class:`RowWriter` (from :meth:`Table.row_writer`) writes steps given as *parts*:
tensors that, concatenated, fill the packed row of the table's single dtype group
(:mod:`replaydb.storage` packs every float32 field of a spec into one ``[capacity,
W]`` tensor), optionally followed by trailing numbers for its last columns. The
concatenation happens under the table's lock, straight into the ring (a block that
does not wrap) or into the writer's one staging row, so any number of threads may
write through one writer: nothing is staged per thread and no row is torn.

A write takes the short path only where it cannot wait on the rate limiter and the
table keeps no per-row links, does not consume its items and keeps its data in
memory; everywhere else, and for parts that do not fit (another total size, a tensor
on a GPU or one that requires grad), it writes nothing and returns ``False`` so that
the caller takes the checked path (:meth:`Table.extend`). The effects are those of
:meth:`Table.extend_unchecked`: keys, item records, sampler, size and limiter
counters. Where the table uses numba (``replaydb._kernels``), a row or block and its
records (key, stream, end, item key, priority, times sampled) are written in one
compiled call (:mod:`replaydb._row_kernels`, reached through :mod:`replaydb._row_direct`):
a step of four declared 1-D parts (:meth:`RowWriter.add_step`) and a block of
C-contiguous columns are copied from their addresses, after their checks; without
numba, by torch's concatenation and numpy slices.

:func:`sample_transitions` is :meth:`Table.sample_transitions`: the data, keys and
``[B, 1]`` importance weights of a draw, with every effect of :meth:`Table.sample`,
built without the per-item probabilities, priorities and counts. A prioritized
table with numba draws, counts, gathers the packed rows and weighs them in one
compiled pass (:meth:`~replaydb.samplers.Prioritized.draw_rows`).

This module is part of the table (it reads the table's private state, as ``_items``
does); front ends reach it only through the two verbs.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from replaydb import _items, _row_direct, _row_kernels
from replaydb.errors import InvalidArgumentError
from replaydb.samplers import Uniform

if TYPE_CHECKING:
    from replaydb.table import Table

__all__ = ["RowWriter", "sample_transitions"]

_INF = math.inf
_get_ident = threading.get_ident


class RowWriter:
    """Writes single-step items of a table from parts, under the table's lock.

    Built by :meth:`Table.row_writer`, which returns ``None`` where the table has no
    such short path. Thread-safe.

    Args:
        table: A single-step CPU table whose fields all have one dtype.
        scalars: How many trailing columns :meth:`add` fills from numbers.

    Example:
        >>> from replaydb import Spec, Table
        >>> table = Table(Spec({"obs": (2,), "reward": (1,)}), 8)
        >>> writer = table.row_writer(scalars=1)
        >>> writer.add((torch.ones(2),), (0.5,))
        True
    """

    def __init__(self, table: Table, scalars: int = 0) -> None:
        storage = table.storage
        (dtype,) = storage.groups
        self.table = table
        self.dtype = dtype
        self._group = storage.groups[dtype]
        self._np_group: np.ndarray[Any, Any] = self._group.numpy()
        width = self._group.shape[1]
        if isinstance(scalars, bool) or not isinstance(scalars, int) or not 0 <= scalars <= width:
            raise InvalidArgumentError(
                f"scalars must be an int in [0, {width}] (the row's width), got {scalars!r}"
            )
        self.width = width
        self.scalars = scalars
        self._stage = np.zeros(width, dtype=self._np_group.dtype)
        head = torch.from_numpy(self._stage[: width - scalars])
        self._head = head
        self._head_2d = head.view(1, -1)  # for (1, dim) parts, as agents pass them
        self._t0 = width - scalars
        self._block: torch.Tensor | None = None  # staging for a block that wraps
        self._acquire = table.locked().acquire
        self._release = table.locked().release
        self._capacity = table.capacity
        # Uniform's contiguous insert changes nothing for a slot that has an item
        # (its item is replaced): only a fresh slot needs the call.
        self._uniform = type(table.sampler) is Uniform
        # Numpy views of the bookkeeping columns (a table allocates its records once).
        self._key = storage.key.numpy()
        self._stream = storage.stream.numpy()
        self._end = storage.end.numpy()
        records = table._records
        assert isinstance(records, _items.HostRecords)  # a CPU table (see applies)
        self._item_key: np.ndarray[Any, Any] = records.key
        self._priority: np.ndarray[Any, Any] = records.priority
        self._times: np.ndarray[Any, Any] = records.times
        kernels = table._kernels  # the table's choice (numba installed and enabled)
        #: The compiled bookkeeping of a block (``None`` without numba: numpy slices).
        self._record_rows: Callable[..., int] | None = (
            kernels.record_rows if kernels is not None else None
        )
        #: The compiled writes of rows and records in one call (``None``: numpy/torch).
        self._put: Callable[..., int] | None = None
        self._put_row: Callable[..., int] | None = None
        self._kernel_step: Callable[..., int] | None = None
        self._put_step: Callable[..., int] | None = None
        self._ctx = np.zeros(_row_kernels.CTX_SIZE, np.int64)
        self._step_shapes: tuple[torch.Size, ...] = ()
        self._step_neg = False
        self._widths: tuple[int, ...] = ()  # the block widths now in the context
        self._expect: tuple[int, ...] | None = None
        self._expect_words: tuple[int, ...] = ()
        self._shapes: list[torch.Size] = []
        self._itemsize = self._np_group.itemsize
        _row_direct.setup(self, kernels)

    @staticmethod
    def applies(table: Table) -> bool:
        """Whether ``table`` has the short path (see the module docstring)."""
        st = table.storage
        return (
            table.device.type == "cpu"
            and table.sequence_length == 1
            and not table.frame_stack
            and not table.consuming
            and not st.links
            and st.files is None
            and len(st.groups) == 1
            and st._np is not None
            and table._np_item_key is not None
        )

    # ------------------------------------------------------------------ writes
    # The compiled paths (addresses checked, one kernel call) are in _row_direct.py.
    expect_step = _row_direct.expect_step
    add_step = _row_direct.add_step
    _sources = _row_direct.sources

    def add(self, parts: tuple[torch.Tensor, ...], tail: Sequence[Any] = ()) -> bool:
        """Write one step: ``parts`` concatenated, then the numbers ``tail``.

        The parts are all 1-D, or all ``(1, n)``; their sizes must add up to the
        row's width less ``scalars``. The caller checks each part's size: only the
        total is checked here, and for a wrong total torch warns that it would
        resize the staging row before it refuses. The step gets the highest priority seen
        so far, stream 0 and no episode end, as :meth:`Table.extend_unchecked`.

        Returns:
            ``True`` if the step was written; ``False`` (nothing written) where
            the short path does not apply: the rate limiter would make the write
            wait, or the parts or numbers cannot be written as given.
        """
        table = self.table
        self._acquire()
        try:
            lim = table.rate_limiter
            if lim.max_diff != _INF and not lim.can_insert(1, table._size):
                return False
            stage = self._stage
            try:
                if parts[0].dim() == 1:
                    torch.cat(parts, out=self._head)
                else:
                    torch.cat(parts, 1, out=self._head_2d)
                if len(tail) == 2 == self.scalars:
                    t0 = self._t0
                    stage[t0] = tail[0]
                    stage[t0 + 1] = tail[1]
                elif len(tail) != self.scalars:
                    return False
                elif tail:
                    stage[self._t0 :] = tail
            except (RuntimeError, TypeError, ValueError, IndexError, OverflowError):
                return False
            table._threads.add(_get_ident())
            fast = table._fast_insert
            if fast is None:
                # A sampler without the contiguous insert (prioritized): the general
                # numpy write (the tree gets the item's priority there).
                _items.write_numpy(table, {self.dtype: stage}, 1, 0, 0)
                return True
            # Table.extend_unchecked's one-row write, on views taken once.
            storage = table.storage
            total = storage.total
            put = self._put_row
            if put is not None:  # the row and its records in one compiled call
                fresh = put(self._ctx, total, table._max_priority)
                storage.total = total + 1
                if fresh:
                    fast(total % self._capacity, 1)
                    table._size += 1
                elif not self._uniform:
                    fast(total % self._capacity, 1)
                lim.inserts += 1
                if table._waiting:
                    table.locked().notify_all()
                return True
            row = total % self._capacity
            self._np_group[row] = stage
            self._key[row] = total
            self._stream[row] = 0
            self._end[row] = 0
            storage.total = total + 1
            item_key = self._item_key
            fresh = item_key[row] < 0
            item_key[row] = total
            self._priority[row] = table._max_priority
            self._times[row] = 0
            if fresh:
                fast(row, 1)
                table._size += 1
            elif not self._uniform:
                fast(row, 1)  # replace semantics: the slot keeps an item (a new one)
            lim.inserts += 1
            if table._waiting:
                table.locked().notify_all()
            return True
        finally:
            self._release()

    def expect(self, widths: Sequence[int]) -> None:
        """Declare the width of each column of the blocks :meth:`extend` gets.

        From then on :meth:`extend` checks every column's shape against these
        widths itself (``[n, w]``, or ``[n]`` for a width of 1) and refuses any
        other block, so its caller need not check shapes; and it writes the data
        of columns that require grad (as ``detach`` would) instead of refusing them.

        Args:
            widths: The columns' widths, in order; they add up to the row's width.

        Raises:
            InvalidArgumentError: If the widths are not ints >= 0 adding up to
                the row's width.
        """
        ws = tuple(widths)
        if not all(type(w) is int and w >= 0 for w in ws) or sum(ws) != self.width:
            raise InvalidArgumentError(
                f"widths must be ints >= 0 adding up to the row's width {self.width}, got {ws!r}"
            )
        self._expect = ws
        self._expect_words = tuple(w * self._itemsize // 4 for w in ws)
        self._shapes = [torch.Size((0, w)) for w in ws]

    def extend(self, columns: tuple[torch.Tensor, ...], n: int) -> bool:
        """Write ``n`` steps: the ``[n, w_i]`` ``columns`` concatenated along dim 1.

        The widths must add up to the row's width (the caller checks each
        column's shape, unless it declared the widths with :meth:`expect`: then
        they are checked here, and a column of width 1 may also be ``[n]``). A
        block that does not wrap around the ring is written straight into it
        (where the table uses numba, with its records in one compiled call, when
        every column is a C-contiguous CPU tensor of the table's dtype); one that
        wraps goes through the writer's staging block. ``n`` must be at most the
        capacity.

        Returns:
            ``True`` if the steps were written; ``False`` (nothing written) where
            the short path does not apply (see :meth:`add`).
        """
        table = self.table
        storage = table.storage
        cap = self._capacity
        if type(n) is not int or not 0 < n <= cap:
            return False
        src = self._sources(columns, n)
        if src is None:
            return False  # a column of another shape than declared
        self._acquire()
        try:
            lim = table.rate_limiter
            if lim.max_diff != _INF and not lim.can_insert(n, table._size):
                return False
            total = storage.total
            row0 = total % cap
            stop = row0 + n
            fast = table._fast_insert
            if type(src) is tuple and stop <= cap and fast is not None:
                widths, ptrs = src
                if widths is not self._widths and widths != self._widths:
                    self._ctx[_row_kernels.CTX_WIDTHS : _row_kernels.CTX_WIDTHS + len(widths)] = (
                        widths
                    )
                    self._widths = widths
                put = self._put
                assert put is not None
                fresh = put(self._ctx, n, total, table._max_priority, len(widths), *ptrs)
                if fresh >= 0:  # else a column overlaps the rows: the torch path below
                    table._threads.add(_get_ident())
                    storage.total = total + n
                    if fresh or not self._uniform:
                        fast(row0, n)  # replace semantics on the slots that keep an item
                    table._size += fresh
                    lim.inserts += n  # on_insert's count, as add does
                    if table._waiting:
                        table.locked().notify_all()
                    return True
            if self._expect is not None:  # [n] columns of width 1 as [n, 1]
                columns = tuple(c.view(n, 1) if c.dim() == 1 else c for c in columns)
            if stop > cap:  # the block wraps around the ring: stage it
                block = self._block
                if block is None or block.shape[0] != n:
                    block = self._block = torch.empty(n, self.width, dtype=self.dtype)
                try:
                    torch.cat(columns, 1, out=block)
                except (RuntimeError, TypeError, ValueError):
                    return False
                _items.write_numpy(table, {self.dtype: block.numpy()}, n, 0, 0)
                return True
            try:  # torch checks every input before it copies: a refusal writes nothing
                torch.cat(columns, 1, out=self._group[row0:stop])
            except (RuntimeError, TypeError, ValueError):
                return False
            if fast is None:
                _items.write_numpy(table, {}, n, 0, 0)  # the data is in place
                return True
            # Table.extend_unchecked's write of n rows, on views taken once.
            table._threads.add(_get_ident())
            size = table._size
            record = self._record_rows
            if record is not None:  # one compiled pass
                fresh = record(
                    self._key,
                    self._stream,
                    self._end,
                    self._item_key,
                    self._priority,
                    self._times,
                    row0,
                    n,
                    total,
                    table._max_priority,
                )
            else:
                keys = np.arange(total, total + n)
                self._key[row0:stop] = keys
                self._stream[row0:stop] = 0
                self._end[row0:stop] = 0
                item_key = self._item_key[row0:stop]
                fresh = 0 if size == cap else n - int(np.count_nonzero(item_key >= 0))
                item_key[:] = keys
                self._priority[row0:stop] = table._max_priority
                self._times[row0:stop] = 0
            storage.total = total + n
            if fresh or not self._uniform:
                fast(row0, n)  # replace semantics on the slots that keep an item
            table._size = size + fresh
            lim.on_insert(n)
            if table._waiting:
                table.locked().notify_all()
            return True
        finally:
            self._release()


class _Layout:
    """A single-group CPU table's packed rows as numpy and its fields' column widths."""

    __slots__ = ("group", "names", "np_group", "widths")

    def __init__(self, table: Table) -> None:
        storage = table.storage
        (self.group,) = storage.groups.values()
        self.np_group: np.ndarray[Any, Any] = self.group.numpy()
        self.names = list(table.spec)
        self.widths = [table.spec[name].numel for name in self.names]


#: Per table: its packed layout, where every field is a vector of one dtype (or None).
_LAYOUTS: weakref.WeakKeyDictionary[Table, _Layout | None] = weakref.WeakKeyDictionary()


def _layout(table: Table) -> _Layout | None:
    """The table's :class:`_Layout` where :func:`_gather` applies, else ``None`` (cached)."""
    try:
        layout = _LAYOUTS[table]
    except KeyError:
        st = table.storage
        vectors = all(len(f.shape) == 1 for f in table.spec.values())
        fits = len(st.groups) == 1 and st._np is not None and vectors
        layout = _LAYOUTS[table] = _Layout(table) if fits else None
    if layout is not None and next(iter(table.storage.groups.values())) is not layout.group:
        layout = _LAYOUTS[table] = _Layout(table)  # the storage reallocated
    return layout


def _gather(layout: _Layout | None, table: Table, slots: torch.Tensor) -> dict[str, torch.Tensor]:
    """``Storage.gather`` of 1-D ``slots``: one numpy take of the packed rows, split."""
    if layout is None:
        return table.storage.gather(slots)
    block = layout.np_group.take(slots.numpy(), axis=0)
    parts = torch.from_numpy(block).split_with_sizes(layout.widths, 1)
    return dict(zip(layout.names, parts, strict=True))


def sample_transitions(
    table: Table, batch_size: int, beta: float | None
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
    """:meth:`Table.sample_transitions` (see there)."""
    prio = table._prio_items
    if prio is None:
        sampler = table.sampler
        if (
            table._short_draw is not None
            and type(sampler) is Uniform
            and table.max_times_sampled is None
            and type(batch_size) is int
            and batch_size > 0
        ):
            # sample_data's short path, less its checks: a uniform draw and a gather.
            lock = table.locked()
            lock.acquire()
            try:
                lim = table.rate_limiter
                size = table._size
                if size > 0 and lim.can_sample(batch_size, size):
                    table._threads.add(_get_ident())
                    data = _gather(_layout(table), table, sampler.draw(batch_size))
                    lim.on_sample(batch_size)
                    if table._waiting:
                        lock.notify_all()
                    return data, None, None
            finally:
                lock.release()
        if sampler.deterministic or not table._fast.takes_beta:
            return table.sample_data(batch_size), None, None
        s = table.sample(batch_size, beta=beta)
        return s.data, s.keys, s.weights.unsqueeze(1)
    if not (
        type(batch_size) is int
        and 0 < batch_size * table._item_nbytes <= (1 << 30)
        and (beta is None or (type(beta) is float and 0.0 <= beta <= 1.0))
    ):
        s = table.sample(batch_size, beta=beta)
        return s.data, s.keys, s.weights.unsqueeze(1)
    b = batch_size
    layout = _layout(table)
    with table.locked():
        lim = table.rate_limiter
        size = table._size
        ready = size > 0 and lim.can_sample(b, size) and not lim.never_samples(b)
        if ready and layout is not None and table.max_times_sampled is None:
            # Draw, count, gather and weigh in one compiled pass.
            table._threads.add(_get_ident())
            block, keys_np, w = prio.draw_rows(
                b,
                beta,
                table._np_item_key,  # type: ignore[arg-type]  # set on CPU
                table._np_times,  # type: ignore[arg-type]
                layout.np_group,
            )
            lim.on_sample(b)
            if table._waiting:
                table.locked().notify_all()
            parts = torch.from_numpy(block).split_with_sizes(layout.widths, 1)
            data = dict(zip(layout.names, parts, strict=True))
            return data, torch.from_numpy(keys_np), torch.from_numpy(w).view(b, 1)
        if ready:
            table._threads.add(_get_ident())
            sel, keys, times, _ = prio.draw_items(
                b,
                beta,
                table._np_item_key,  # type: ignore[arg-type]  # set on CPU
                table._np_times,  # type: ignore[arg-type]
                table._np_priority,  # type: ignore[arg-type]
            )
            slots = sel.slots
            data = _gather(layout, table, slots)
            lim.on_sample(b)
            if table.max_times_sampled is not None:
                spent = slots[times >= table.max_times_sampled]
                if spent.numel():
                    _items.remove_slots(table, spent)
            if table._waiting:
                table.locked().notify_all()
    if not ready:
        s = table.sample(b, beta=beta)  # waits or raises, as sample does
        return s.data, s.keys, s.weights.unsqueeze(1)
    assert sel.weights is not None
    return data, keys, sel.weights.view(b, 1)
