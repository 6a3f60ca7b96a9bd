"""The verbs of :class:`~replaydb.table.Table` that serve its front ends.

Reads and writes that the Velora buffer (``row_writer``, ``sample_transitions``,
``sample_data``), the Ray service (``priority_total``), ``replaydb.reverb``
(``items``, ``remove``) and ``replaydb.shared`` (``sample_rows``, ``share``) need
beyond ``extend``/``sample``, with ``locked`` and ``total_steps_written`` for
consistent reads. :class:`Table` inherits them from :class:`TableFrontEndVerbs`;
the bodies live in :mod:`replaydb._sampling`, :mod:`replaydb._items`,
:mod:`replaydb._rows` and :mod:`replaydb._shared_rows`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import torch

from replaydb import _items, _rows, _sampling
from replaydb._records import Sample
from replaydb._shared_rows import RowSample, sample_rows

if TYPE_CHECKING:
    from replaydb.shared import SharedTable
    from replaydb.table import Table

__all__ = ["TableFrontEndVerbs"]


def _t(verbs: TableFrontEndVerbs) -> Table:
    """``verbs`` as the :class:`Table` it is (the only class that inherits these)."""
    return cast("Table", verbs)


class TableFrontEndVerbs:
    """Reads and writes for front ends: a base of :class:`Table`."""

    __slots__ = ()

    @property
    def total_steps_written(self) -> int:
        """Steps written since the table was created or reset (the next step's key).

        Example:
            >>> t = Table(Spec({"x": ()}), 2); t.extend({"x": torch.zeros(3)})
            >>> t.total_steps_written, t.num_steps
            (3, 2)
        """
        t = _t(self)
        return t.storage.total

    def locked(self) -> threading.Condition:
        """The table's lock, for reading several things as one consistent snapshot.

        Use it only as a context manager; every verb may be called inside it (the
        lock is re-entrant). Writers and samplers in other threads wait meanwhile,
        so keep the block short.

        Returns:
            A context manager holding the lock.

        Example:
            >>> t = Table(Spec({"x": ()}), 4); t.extend({"x": torch.ones(2)})
            >>> with t.locked():
            ...     n, x = t.num_steps, t.storage.fields["x"][:2].clone()
            >>> n, x.tolist()
            (2, [1.0, 1.0])
        """
        t = _t(self)
        return t._cond

    def sample_data(
        self, batch_size: int, *, timeout: float | None = None
    ) -> dict[str, torch.Tensor]:
        """The data of :meth:`sample`, with every effect of :meth:`sample`.

        The same draws from the sampler's generator, the same removals
        (``max_times_sampled``), rate-limiter accounting and waiting as
        ``sample(batch_size).data``, without building the per-item keys,
        probabilities and weights. A uniform single-step table on CPU (the Velora
        buffer) takes a short path; every other table calls :meth:`sample`.

        On the short path ``times_sampled`` is counted only where ``max_times_sampled``
        needs it (why: :mod:`replaydb._sampling`).

        Args:
            batch_size: Number of items, > 0.
            timeout: Seconds to wait for the rate limiter (None: as long as it takes).

        Returns:
            ``name -> [batch_size, *shape]`` tensors.

        Raises:
            InvalidArgumentError: If ``batch_size`` is not a positive int.
            RateLimiterTimeout: If the limiter did not let the sample through in time.
            WouldBlockForeverError: As :meth:`sample`.

        Example:
            >>> from replaydb.samplers import Uniform
            >>> t = Table(Spec({"x": ()}), 10, sampler=Uniform(seed=0))
            >>> t.extend({"x": torch.arange(4.0)})
            >>> t.sample_data(3)["x"].shape
            torch.Size([3])
        """
        t = _t(self)
        return _sampling.sample_data(t, batch_size, timeout)

    def priority_total(self) -> float:
        """The sum of the sampler's weights over the live items, in O(1).

        An item's probability is its weight divided by this total. For a
        :class:`~replaydb.samplers.Prioritized` sampler the weight is
        ``(priority + eps) ** alpha``, and the total is the root of its sum tree;
        every other sampler weighs items equally, so the total is the item count.
        A sharded service splits a batch over shards by these totals.

        Returns:
            The total weight (``0.0`` for an empty table).

        Example:
            >>> t = Table(Spec({"x": ()}), 10); t.extend({"x": torch.zeros(3)})
            >>> t.priority_total()
            3.0
        """
        t = _t(self)
        with t._cond:
            total = t._fast.priority_total
            if total is not None and not t.sampler.deterministic:
                return total() if t._size else 0.0
            return float(t._size)

    def items(self, fields: Sequence[str] | None = None) -> Sample:
        """Every live item, oldest key first, read without counting as a draw.

        Nothing changes: times sampled, the rate limiter and the sampler are left
        as they are. Front ends use it to list what a table holds (for exports,
        inspection and side stores keyed by a field).

        Args:
            fields: Gather only these fields (``()``: none, for keys and priorities
                alone); default every field.

        Returns:
            A :class:`Sample` of all ``len(self)`` items; ``probabilities`` are
            ``1 / len(self)`` and ``weights`` ones (this is not a draw).

        Raises:
            InvalidArgumentError: If ``fields`` names a field not in the spec.

        Example:
            >>> table = Table(Spec({"x": ()}), 4); table.extend({"x": torch.arange(6.0)})
            >>> table.items()["x"].tolist(), table.items(fields=()).keys.tolist()
            ([2.0, 3.0, 4.0, 5.0], [2, 3, 4, 5])
        """
        t = _t(self)
        return _sampling.items(t, fields)

    def remove(self, keys: Any) -> int:
        """Remove items by key, as if they had been overwritten; stale keys are ignored.

        The rate limiter's counters are not changed (a removal is neither an insert
        nor a sample).

        Args:
            keys: ``[K]`` item keys (from :attr:`Sample.keys` or :meth:`items`).

        Returns:
            How many keys named a live item.

        Example:
            >>> table = Table(Spec({"x": ()}), 4); table.extend({"x": torch.arange(3.0)})
            >>> table.remove([0, 7]), len(table)
            (1, 2)
        """
        t = _t(self)
        return _items.remove_keys(t, keys)

    def row_writer(self, scalars: int = 0) -> _rows.RowWriter | None:
        """A writer of single-step items given as parts, or ``None`` if the table has none.

        For a CPU table whose fields all share one dtype (one packed row per step),
        with ``sequence_length=1``, no frame stacks, no disk storage and no consuming
        selector: :meth:`~replaydb._rows.RowWriter.add` writes one step from tensors
        that, concatenated, fill the row, followed by ``scalars`` numbers for its
        last columns; :meth:`~replaydb._rows.RowWriter.extend` writes a block from
        ``[N, w]`` columns. Both concatenate under the table's lock (no torn rows,
        any number of threads) and return ``False``, writing nothing, where they do
        not apply (the rate limiter would wait, the parts do not fit): then use
        :meth:`extend`. The caller checks each part's shape; the effects are those of
        :meth:`extend_unchecked`. The Velora buffer's ``add`` and ``add_multi``.

        Args:
            scalars: Trailing columns that ``add`` fills from numbers.

        Returns:
            The writer, or ``None``.

        Raises:
            InvalidArgumentError: If ``scalars`` is not an int in ``[0, row width]``.

        Example:
            >>> table = Table(Spec({"obs": (2,), "reward": (1,)}), 8)
            >>> table.row_writer(scalars=1).add((torch.ones(2),), (0.5,)), len(table)
            (True, 1)
        """
        t = _t(self)
        return _rows.RowWriter(t, scalars) if _rows.RowWriter.applies(t) else None

    def sample_transitions(
        self, batch_size: int, *, beta: float | None = None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
        """The data, keys and ``[B, 1]`` weights of a draw, with every effect of :meth:`sample`.

        What a learner of single-step transitions uses: ``(data, keys, weights)``,
        where ``weights`` are :attr:`Sample.weights` as a ``[batch_size, 1]`` column
        (like a ``[B, 1]`` reward) and ``keys`` :attr:`Sample.keys`; both are
        ``None`` for a sampler without importance weights (uniform, selectors),
        whose draw is :meth:`sample_data`'s. The same draws, counts, removals,
        rate-limiter accounting and waiting as :meth:`sample`, without building the
        probabilities, priorities and counts a :class:`Sample` reports (a short path
        on a CPU prioritized single-step table).

        Args:
            batch_size: Number of items, > 0.
            beta: Importance-weight exponent (default: the sampler's own).

        Returns:
            ``(data, keys, weights)``.

        Raises:
            InvalidArgumentError: As :meth:`sample`.
            WouldBlockForeverError: As :meth:`sample`.

        Example:
            >>> from replaydb.samplers import Prioritized
            >>> t = Table(Spec({"x": ()}), 10, sampler=Prioritized(seed=0))
            >>> t.extend({"x": torch.arange(4.0)})
            >>> data, keys, weights = t.sample_transitions(3); weights.shape
            torch.Size([3, 1])
        """
        t = _t(self)
        return _rows.sample_transitions(t, batch_size, beta)

    def sample_rows(
        self, batch_size: int, *, beta: float | None = None, timeout: float | None = None
    ) -> RowSample:
        """:meth:`sample` without copying the data out: the rows that hold each item.

        The same draw, with every effect of :meth:`sample` (rate limiter,
        ``times_sampled``, ``max_times_sampled`` removals). A process that maps the
        same storage gathers the rows itself (:mod:`replaydb.shared`); the rows hold
        the items until the ring overwrites them (see :class:`RowSample`).

        Args:
            batch_size: Number of items, > 0.
            beta: Importance-weight exponent for prioritized samplers.
            timeout: Seconds to wait for the rate limiter (None: as long as it takes).

        Returns:
            A :class:`~replaydb.shared.RowSample`.

        Raises:
            InvalidArgumentError: As :meth:`sample`.
            RateLimiterTimeout: If the limiter did not let the sample through in time.
            WouldBlockForeverError: As :meth:`sample`.

        Example:
            >>> t = Table(Spec({"x": ()}), 4); t.extend({"x": torch.arange(3.0)})
            >>> r = t.sample_rows(2); t.storage.gather(r.rows)["x"].shape
            torch.Size([2])
        """
        t = _t(self)
        return sample_rows(t, batch_size, beta, timeout)

    def share(self) -> SharedTable:
        """Serve this table to other processes; return a picklable handle to it.

        The table must keep its steps where other processes can map them: a
        disk-backed table (``path=``) or one from
        :func:`replaydb.shared.memory_table` (shared memory). This process stays
        the owner (sampler, rate limiter and items stay here); the handle works in
        DataLoader workers, ``multiprocessing`` children (fork or spawn) and here.
        Calling it again returns the same handle until that is closed.

        Returns:
            A :class:`~replaydb.shared.SharedTable`.

        Raises:
            InvalidArgumentError: If the table is in this process's memory (or on
                a GPU): other processes cannot map it.

        Example:
            >>> from replaydb.shared import memory_table
            >>> t = memory_table(Spec({"x": ()}), 8); handle = t.share()
            >>> handle.extend({"x": torch.arange(3.0)}); len(t)
            3
            >>> handle.close()
        """
        t = _t(self)
        from replaydb.shared._owner import serve

        return serve(t)
