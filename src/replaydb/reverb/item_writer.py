"""``ItemWriter``: Reverb items of one producer, staged in replaydb's one ``Writer``.

Reverb's writers (:class:`~replaydb.reverb.TrajectoryWriter` and the legacy
:class:`~replaydb.reverb.Writer`) create items for any served table with any
priority. Each item goes in two steps (see :mod:`replaydb.reverb.tables`):

1. :meth:`replaydb.reverb.Table.new_ref` gives it a ref, and the writer keeps the
   item under that ref in its own ``pending`` map, apart from the table's store,
   so the store's garbage collection never drops an item that is staged but not
   yet inserted (and a writer dropped without ``close`` takes its items along);
2. the ref is staged as one row ``{"ref": r}`` (with the item's priority) in a
   :class:`replaydb.writer.Writer` for that table, whose destination, a
   :class:`RefSink`, moves the items into the store and inserts their refs with
   :meth:`replaydb.reverb.Table.insert_refs`.

So the batching and flush policy is the Writer's, the same as the observer's,
``Collector``'s and the Ray client's: a write every ``max_items`` items per table
(``64``), on ``flush`` (Reverb's ``flush``, ``end_episode`` and ``close``), and on
``try_flush`` when a reader of a served table would otherwise wait or report a
size (the server asks every open writer; it never waits on a rate limiter). A
write the rate limiter refuses leaves its items staged, and a later flush inserts
them. Items of one table go in in creation order; each table has its own Writer.

This module does not import TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

import numpy as np

from replaydb._validate import check_int, is_number
from replaydb.errors import ClosedError, InvalidArgumentError
from replaydb.reverb.tables import Item, Table
from replaydb.writer import Writer

__all__ = ["PUSH_EVERY", "ItemWriter", "RefSink"]

#: Items staged per table before one insert (the Writer's ``max_steps``).
PUSH_EVERY = 64


class RefSink:
    """The :class:`replaydb.writer.StepSink` of a Reverb table: inserts a writer's pending items.

    Args:
        table: The served Reverb table.
        pending: ``ref -> item`` of the writer; inserted items leave it.

    Example:
        >>> from replaydb.reverb.tables import Table
        >>> t, item = Table.queue("q", 4), (((np.zeros(1),), True),)
        >>> ref = t.new_ref(); sink = RefSink(t, {ref: item})
        >>> sink.extend({"ref": [ref]}, priorities=[1.0]); len(t)
        1
    """

    __slots__ = ("_pending", "_table")

    def __init__(self, table: Table, pending: MutableMapping[int, Item]) -> None:
        self._table = table
        self._pending = pending

    def extend(
        self,
        steps: Mapping[str, Any],
        *,
        streams: Any = None,
        ends: Any = None,
        priorities: Any = None,
        timeout: float | None = None,
        table: str | None = None,
    ) -> None:
        """Insert a batch of refs, in order (an item each; streams and ends do not apply).

        Args:
            steps: ``{"ref": [N]}``, refs of pending items.
            streams: Ignored (every ref is a whole item).
            ends: Ignored.
            priorities: ``[N]`` priorities (``None``: 1.0 each).
            timeout: Seconds to wait for the rate limiter (None: as long as it takes).
            table: Ignored (a sink serves one table).

        Raises:
            DeadlineExceededError: If the rate limiter refused some of the refs in time
                (they stay pending; see :meth:`replaydb.reverb.Table.insert_refs`).
        """
        refs = np.asarray(steps["ref"])
        pri = np.ones(len(refs)) if priorities is None else priorities
        self._table.insert_refs(refs, pri, timeout, pending=self._pending)


class ItemWriter:
    """Stages one producer's items per table and inserts them by the Writer's policy.

    Not thread-safe for :meth:`create` (one producer); :meth:`try_flush` may come
    from any thread.

    Args:
        lookup: ``name -> Table``: the served table of a name (e.g. ``server.table``).
        max_items: Items staged per table before one insert.

    Raises:
        InvalidArgumentError: If ``max_items`` is not an int >= 1.

    Example:
        >>> from replaydb.reverb.tables import Table
        >>> t = Table.queue("q", 4); w = ItemWriter({"q": t}.__getitem__)
        >>> w.create("q", (((np.zeros(1),), True),), 1.0); (len(t), w.flush(), len(t))
        (0, None, 1)
    """

    def __init__(self, lookup: Callable[[str], Table], max_items: int = PUSH_EVERY) -> None:
        self._lookup = lookup
        self.max_items = check_int("max_items", max_items, 1)
        self._writers: dict[str, tuple[Table, Writer, dict[int, Item]]] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"ItemWriter(tables={list(self._writers)}, staged={self.staged})"

    @property
    def staged(self) -> int:
        """Items created and not yet inserted, over all tables."""
        return sum(w.staged for _, w, _ in self._writers.values())

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def create(self, table: str, item: Item, priority: float) -> None:
        """Stage ``item`` for ``table`` with ``priority``; insert a batch when one is full.

        Args:
            table: The served table's name.
            item: The item's columns.
            priority: The item's priority (a finite number >= 0).

        Raises:
            InvalidArgumentError: For a bad priority or table name (nothing staged).
            DeadlineExceededError: If a full batch's insert timed out (the items,
                this one included when it was staged, stay staged).
            ClosedError: If the writer is closed.
        """
        if self._closed:
            raise ClosedError("create_item on a closed writer; make a new one")
        kind = type(priority)
        if not (
            (kind is float or kind is int or is_number(priority))
            and 0 <= priority < math.inf  # NaN fails too
        ):
            raise InvalidArgumentError(f"priority must be a finite number >= 0, got {priority!r}")
        if type(table) is not str:
            raise InvalidArgumentError(f"table must be a table name (str), got {table!r}")
        entry = self._writers.get(table)
        if entry is None:
            t = self._lookup(table)
            pending: dict[int, Item] = {}
            entry = (t, Writer(RefSink(t, pending), t.core.spec, max_steps=self.max_items), pending)
            self._writers[table] = entry
        t, w, pending = entry
        ref = t.new_ref()
        pending[ref] = item
        before = w.staged
        try:
            w.append((ref,), priority=float(priority))
        except BaseException:
            if w.staged <= before:  # refused before it was staged
                pending.pop(ref, None)
            raise

    def flush(self, timeout: float | None = None) -> None:
        """Insert every staged item, table by table (in the order they were first used).

        Args:
            timeout: Seconds each table's insert may wait for its rate limiter
                (None: as long as it takes).

        Raises:
            DeadlineExceededError: If a rate limiter refused in time (the refused
                items stay staged).
        """
        for _, w, _ in list(self._writers.values()):
            if w.staged:
                w.flush(timeout)

    def try_flush(self) -> None:
        """Insert staged items that go in without waiting (server side; never blocks)."""
        for _, w, _ in list(self._writers.values()):
            w.try_flush()

    def close(self) -> None:
        """Insert every staged item and refuse more. Closing twice is a no-op.

        Raises:
            DeadlineExceededError: If the final insert timed out (closed anyway).
        """
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            for _, w, pending in self._writers.values():
                w.close(flush=False)
                pending.clear()  # what a failed final insert left
