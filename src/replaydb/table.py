"""Table: storage, a sampler, a rate limiter and a window length, behind one lock.

A table stores *steps* in a :class:`~replaydb.storage.Storage` ring and serves
*items*: windows of ``sequence_length`` consecutive steps of one episode
(``sequence_length=1``: single steps). An item is named by its *key*, the key of
its first step; its *slot* is that step's row. Items appear when their last step
is written and disappear when their first row is overwritten, when they have been
sampled ``max_times_sampled`` times, or on :meth:`Table.reset`. A key names one
item for ever: a priority update for an item that was overwritten since it was
sampled is ignored.

A table whose sampler is a deterministic selector (``Fifo``, ``Lifo``, heaps) and
that has ``max_times_sampled`` *consumes* its items (a queue or a stack): an
unconsumed item is never overwritten. Inserts into a full single-step table go to
free rows (keys skip the rows still held); inserts into a full sequence table wait
until the oldest item has been consumed.

With ``pad=True`` a sequence table also serves the last ``sequence_length - 1``
starts of every finished episode (and episodes shorter than a window), padded by
repeating the last step, with :attr:`Sample.mask` ``False`` at the padding; with
``final_step=True`` (the collectors' steps layout) no padded window starts at the
episode's final-step row. With ``stride=S`` only windows that start at episode
steps ``0, S, 2S, ...`` are items. With ``frame_stack`` a field is sampled as the
last ``k`` frames of each step, gathered through the episode links.

All verbs take the table's lock; blocked inserts and samples wait on its
condition variable until the rate limiter lets them through. A call that no other
thread could ever unblock raises :class:`~replaydb.errors.WouldBlockForeverError`
at once instead of hanging.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from replaydb import _devices, _disk, _frames, _items, _kernels, _sampling, _table_state, _waiting
from replaydb._huge_pages import zeros as huge_zeros
from replaydb._records import LiveSteps, Sample, TableInfo
from replaydb._table_checks import (
    check_mapping,
    check_sequence_options,
    check_table_args,
    check_table_memory,
    preset_capacity,
)
from replaydb._table_frontends import TableFrontEndVerbs
from replaydb._table_persist import TableStateVerbs
from replaydb._validate import check_timeout, end_column, priority_column, stream_column
from replaydb.rate_limiters import MinSize, Queue, RateLimiter, Stack
from replaydb.samplers import Fifo, Lifo, Sampler, Uniform, fast_paths
from replaydb.spec import Spec
from replaydb.storage import Storage, resolve_device

if TYPE_CHECKING:
    pass

__all__ = ["LiveSteps", "Sample", "Table", "TableInfo"]


class Table(TableStateVerbs, TableFrontEndVerbs):
    """Items over a ring of preallocated steps, sampled by a pluggable sampler.

    Args:
        spec: The fields of one step.
        capacity: Steps the ring holds (rows).
        sampler: Chooses items (default :class:`~replaydb.samplers.Uniform`).
        rate_limiter: When inserts and samples may go (default ``MinSize(1)``).
        sequence_length: Steps per item (``T``); items never cross an episode end.
        max_times_sampled: Remove an item after it was sampled this many times.
        device: Where the tensors live (default CPU).
        name: The table's name in a server.
        pad: Also serve windows that run past an episode's end, padded, with a
            mask (sequence tables only).
        path: Keep the fields in memory-mapped files under this directory (a
            disk-backed table, CPU only; see :meth:`checkpoint`). A directory that
            already holds a table is reopened (same spec, capacity and sequence
            length) without copying its data.
        stride: Only windows that start at episode step ``0, stride, 2 * stride,
            ...`` are items (Reverb's and Acme's *period*; sequence tables only).
            Positions count from the first step of an episode that the ring still
            linked when the step was written.
        final_step: The row that carries an episode's end code is a *final step*
            (its last observation, with no action or reward after it), as the
            collectors' steps layout and TF-Agents' LAST steps write it: padded
            windows never start there. Default ``False``: the end code follows the
            step's action, and the padded window of that step is a real (terminal)
            transition. See :func:`~replaydb.nstep.nstep_returns` ``final_step``.
        frame_stack: ``name -> k`` or ``name -> (k, pad)``: sample each of these
            fields as the last ``k`` frames of each step, ``[B, k, *shape]``
            (``[B, T, k, *shape]`` for sequences), oldest first, following the
            episode links. Each frame is stored once. Where an episode has fewer
            than ``k - 1`` earlier steps, or they were overwritten, ``pad`` fills
            in: ``"first"`` (default) repeats the oldest frame available, ``"zeros"``
            uses zeros. A stack never crosses an episode or a stream. It is a
            constructor argument, not a ``sample`` keyword, because single-step
            tables keep episode links only when asked (they cost every write), and
            so that every verb and front end that samples (``sample_data``,
            datasets, the Velora buffer) returns the same stacks.

    Every argument is checked before anything is allocated, and the table's size
    (storage plus bookkeeping) is checked against the device's free memory first:
    see :func:`~replaydb.storage.check_memory` (``REPLAYDB_MEMORY_CHECK=0`` skips it).
    A disk-backed table checks only its bookkeeping against RAM, and its data
    against free disk space.

    Raises:
        InvalidArgumentError: For a bad capacity, sequence length or max_times_sampled.
        DeviceError: For a device that names none or is not usable here (a
            ``RuntimeError``).
        InvalidTypeError: For a spec, sampler, rate limiter, name or device of the
            wrong kind (e.g. ``sampler="uniform"``).
        InsufficientMemoryError: If the table would not fit in free memory (or,
            with ``path``, on the disk).
        CheckpointError: If ``path`` holds a corrupt table.

    Example:
        >>> table = Table(Spec({"obs": (4,), "reward": ()}), capacity=1000)
        >>> table.extend({"obs": torch.zeros(8, 4), "reward": torch.ones(8)})
        >>> table.sample(4)["obs"].shape
        torch.Size([4, 4])
        >>> frames = Table(Spec({"obs": ((84, 84), "uint8")}), 100, frame_stack={"obs": 4})
        >>> frames.extend({"obs": torch.zeros(10, 84, 84, dtype=torch.uint8)})
        >>> frames.sample(2)["obs"].shape
        torch.Size([2, 4, 84, 84])
    """

    def __init__(
        self,
        spec: Spec | Mapping[str, Any],
        capacity: int,
        *,
        sampler: Sampler | None = None,
        rate_limiter: RateLimiter | None = None,
        sequence_length: int = 1,
        max_times_sampled: int | None = None,
        device: torch.device | str | None = None,
        name: str = "table",
        pad: bool = False,
        path: str | os.PathLike[str] | None = None,
        stride: int = 1,
        final_step: bool = False,
        frame_stack: Mapping[str, Any] | None = None,
    ) -> None:
        spec = check_table_args(
            spec, capacity, sampler, rate_limiter, sequence_length, max_times_sampled, name, pad
        )
        stack = check_sequence_options(
            spec, sequence_length, stride, final_step, frame_stack, max_times_sampled, sampler
        )
        sequence_length = int(sequence_length)  # a numpy int is welcome, stored as int
        max_times_sampled = None if max_times_sampled is None else int(max_times_sampled)
        device = resolve_device(device)
        disk = None
        if path is not None:
            disk = _disk.prepare(path, device, spec, capacity, sequence_length)
        check_table_memory(spec, capacity, device, name, on_disk=path is not None)
        self.name = name
        self.pad = pad
        self.sequence_length = sequence_length
        self.max_times_sampled = max_times_sampled
        #: Windows start only at episode steps 0, stride, 2 * stride, ...
        self.stride = int(stride)
        #: The row carrying an episode's end code holds its final observation, no
        #: transition: padded windows never start there.
        self.final_step = final_step
        #: ``name -> (k, pad)``: fields sampled as the last ``k`` frames of each step.
        self.frame_stack = stack
        self._stack_k = max((k for k, _ in stack.values()), default=1)
        links = sequence_length > 1 or bool(stack)
        self.storage = Storage(spec, capacity, device, links=links, path=path)
        self.spec = spec
        self.capacity = self.storage.capacity
        self.device = self.storage.device
        self.sampler: Sampler = sampler if sampler is not None else Uniform()
        self.sampler.bind(self.capacity, self.device)
        #: The sampler's declared fast paths (samplers.FastPaths), read once here.
        self._fast = fast_paths(self.sampler)
        #: The largest priority the sampler takes without overflowing (e.g. its sum tree).
        self._priority_limit = self._fast.priority_bound
        #: Bytes one sampled item takes, for the memory check of huge samples.
        extra = sum((k - 1) * spec[f].numel * spec[f].dtype.itemsize for f, (k, _) in stack.items())
        self._item_nbytes = (spec.step_nbytes + extra) * sequence_length + 64
        # Samplers with a contiguous-insert fast path (replace semantics on active slots).
        self._fast_insert = self._fast.insert_contiguous
        # Samplers that take priority updates as numpy arrays (the CPU path).
        self._update_numpy = self._fast.update_numpy
        self.rate_limiter = rate_limiter if rate_limiter is not None else MinSize(1)
        #: Items are consumed (a queue or stack): never overwrite an unconsumed one.
        self.consuming = bool(self.sampler.deterministic) and max_times_sampled is not None
        #: Block on the rate limiter even when no other thread has used this table
        #: (set by servers and datasets whose writers arrive later).
        self.shared = False
        self._cond = threading.Condition(threading.RLock())
        self._waiting = 0  # threads blocked in _wait: notify only when there are some
        self._threads: set[int] = set()
        self._alloc_items()
        #: Single steps go through numpy rows (CPU storage, no links, not consuming).
        self._row_path = self.storage._np is not None and not links and not self.consuming
        #: ``extend_unchecked``'s one-row path: the sampler's contiguous insert where
        #: the records are numpy views and the row path applies, else ``None``.
        self._one_row = (
            self._fast_insert
            if self._np_item_key is not None and not links and not self.consuming
            else None
        )
        #: ``sample_data``'s short path: the uniform draw of a single-step table with
        #: CPU records, else ``None``.
        self._short_draw: Callable[[int], torch.Tensor] | None = (
            self.sampler.draw
            if isinstance(self.sampler, Uniform)
            and sequence_length == 1
            and not stack
            and self._np_item_key is not None
            else None
        )
        #: CPU prioritized single-step tables: the sampler draws and counts the items
        #: in one compiled pass (Prioritized.draw_items/update_items), or None.
        self._prio_items = (
            self._fast.items
            if self._kernels is not None and sequence_length == 1 and not stack
            else None
        )
        #: The directory of a disk-backed table (``None`` in memory).
        self._disk = disk
        if disk is not None and (stale := disk.attach(self)) is not None:
            _items.remove_slots(self, stale)
            disk.recovered(self, int(stale.numel()))

    def _alloc_items(self) -> None:
        cap, dev = self.capacity, self.device
        # One 32-byte record per slot (key, times sampled, priority as float64
        # bits, unused), so a sampled item costs one cache miss, not three.
        self._items = huge_zeros((cap, 4), torch.int64, dev)  # large: asks for huge pages
        self._item_key = self._items[:, 0]
        self._times = self._items[:, 1]
        self._priority = self._items[:, 2].view(torch.float64)
        self._item_key.fill_(-1)
        self._size = 0
        self._max_priority = 1.0
        #: The item-record path (torch ops, numpy views, or compiled loops on them),
        #: chosen once here: the item verbs call it without deciding again.
        self._records: _items.Records = _items.TorchRecords()
        #: Numpy views of the records (CPU), read by the short paths; else ``None``.
        self._np_item_key: np.ndarray[Any, Any] | None = None
        self._np_priority: np.ndarray[Any, Any] | None = None
        self._np_times: np.ndarray[Any, Any] | None = None
        self._kernels = None
        if _devices.host_path(dev):  # CPU, unless a test forces the torch path
            self._kernels = _kernels.get()
            host = (
                _items.NumbaRecords(self, self._kernels)
                if self._kernels is not None
                else _items.HostRecords(self)
            )
            self._records = host
            self._np_item_key, self._np_priority, self._np_times = (
                host.key,
                host.priority,
                host.times,
            )

    # ---------------------------------------------------------------- presets
    @classmethod
    def queue(
        cls,
        spec: Spec | Mapping[str, Any],
        size: int,
        *,
        sequence_length: int = 1,
        device: torch.device | str | None = None,
        name: str = "queue",
    ) -> Table:
        """A FIFO queue of at most ``size`` items, each sampled once (Reverb's ``Table.queue``).

        ``Fifo`` sampler, ``Queue(size)`` limiter and ``max_times_sampled=1``:
        samples return the oldest items, inserts block while ``size`` items wait
        and samples block while none does.

        Args:
            spec: The fields of one step.
            size: Items the queue holds.
            sequence_length: Steps per item.
            device: Where the tensors live.
            name: The table's name.

        Returns:
            The table.

        Example:
            >>> q = Table.queue(Spec({"x": ()}), 3); q.extend({"x": torch.arange(3.0)})
            >>> q.sample(2)["x"].tolist()
            [0.0, 1.0]
        """
        return cls(
            spec,
            preset_capacity(size, sequence_length),
            sampler=Fifo(),
            rate_limiter=Queue(size),
            sequence_length=sequence_length,
            max_times_sampled=1,
            device=device,
            name=name,
        )

    @classmethod
    def stack(
        cls,
        spec: Spec | Mapping[str, Any],
        size: int,
        *,
        sequence_length: int = 1,
        device: torch.device | str | None = None,
        name: str = "stack",
    ) -> Table:
        """A LIFO stack of at most ``size`` items, each sampled once (Reverb's ``Table.stack``).

        Like :meth:`queue` with a ``Lifo`` sampler and a ``Stack(size)`` limiter.

        Example:
            >>> s = Table.stack(Spec({"x": ()}), 3); s.extend({"x": torch.arange(3.0)})
            >>> s.sample(2)["x"].tolist()
            [2.0, 1.0]
        """
        return cls(
            spec,
            preset_capacity(size, sequence_length),
            sampler=Lifo(),
            rate_limiter=Stack(size),
            sequence_length=sequence_length,
            max_times_sampled=1,
            device=device,
            name=name,
        )

    def __repr__(self) -> str:
        return (
            f"Table(name={self.name!r}, size={self._size}, capacity={self.capacity}, "
            f"sequence_length={self.sequence_length}, sampler={self.sampler.config()['type']}, "
            f"rate_limiter={self.rate_limiter!r}, device={self.device})"
        )

    def __len__(self) -> int:
        """Number of sampleable items."""
        return self._size

    @property
    def num_steps(self) -> int:
        """Steps stored (rows in use)."""
        return self.storage.num_rows

    # ----------------------------------------------------------------- writes
    def extend(
        self,
        steps: Mapping[str, Any],
        *,
        streams: Any = None,
        ends: Any = None,
        priorities: Any = None,
        timeout: float | None = None,
        cast: str = "checked",
    ) -> None:
        """Write a batch of N steps.

        Args:
            steps: ``name -> [N, *shape]`` values for every field of the spec.
            streams: Stream of each step (int or ``[N]``); steps of one stream are
                consecutive steps of its episodes, in order. Default 0.
            ends: Whether the episode ends after each step: bool (terminated) or
                int codes ``0`` none, ``1`` terminated, ``2`` truncated; scalar or ``[N]``.
            priorities: Priority of each item completed by these steps (scalar or
                ``[N]``, > 0); default the highest priority seen so far.
            timeout: Seconds to wait for the rate limiter (None: wait as long as it takes).
            cast: How values are converted to a field's dtype. ``"checked"`` (default)
                converts only when no value changes: int64 ``300`` into a ``uint8``
                field, a float into an integer field or a finite float64 that
                overflows float32 is rejected. ``"unsafe"`` converts as torch's
                ``.to()`` does (``300`` is stored as ``44`` in ``uint8``).

        Every argument and every field is checked (dense, with data, convertible
        without loss, of the right shape) before anything is written: a rejected
        call leaves the table exactly as it was.

        Raises:
            SpecMismatchError: If the steps do not match the spec (nothing is written).
            InvalidArgumentError: For bad streams, ends, priorities, timeout or cast.
            InvalidTypeError: If ``steps`` is not a mapping.
            RateLimiterTimeout: If the limiter did not let the insert through in time.
            WouldBlockForeverError: If the limiter blocks and no other thread samples.

        Example:
            >>> table = Table(Spec({"x": ((), "uint8")}), 10)
            >>> table.extend({"x": torch.tensor([1, 300])}, cast="unsafe"); len(table)
            2
        """
        check_mapping("steps", steps, self.spec, "extend", "[N, *shape] values")
        if timeout is not None:
            check_timeout(timeout)
        data, n = self.spec.coerce_batch(steps, self.device, cast=cast)
        if n == 0:
            return
        stream_t = stream_column("streams", streams, n, self.device)
        end_t = end_column(ends, n, self.device)
        pri_t = _items.check_priorities(self, priorities, n)
        _items.write(self, data, n, stream_t, end_t, pri_t, timeout)

    def insert(
        self,
        step: Mapping[str, Any],
        *,
        stream: int = 0,
        end: bool | int = False,
        priority: float | None = None,
        timeout: float | None = None,
        cast: str = "checked",
    ) -> None:
        """Write one step (no batch dimension). See :meth:`extend` for the arguments.

        Example:
            >>> table = Table(Spec({"x": (2,)}), 10)
            >>> table.insert({"x": [1.0, 2.0]}); len(table)
            1
        """
        check_mapping("step", step, self.spec, "insert", "value")
        if timeout is not None:
            check_timeout(timeout)
        data = self.spec.coerce_step(step, self.device, cast=cast)
        stream_t = stream_column("stream", stream, 1, self.device)
        end_t = end_column(end, 1, self.device)
        if priority is None and self._row_path and self.rate_limiter.max_diff == math.inf:
            # A checked single step on CPU: the numpy row path (inserts never block here).
            row = {k: v.numpy()[0] for k, v in data.items()}
            self.extend_unchecked(row, 1, int(end_t[0]), int(stream_t[0]))
            return
        _items.write(
            self, data, 1, stream_t, end_t, _items.check_priorities(self, priority, 1), timeout
        )

    def extend_unchecked(
        self, values: Mapping[Any, Any], n: int, end: Any = 0, stream: int = 0
    ) -> None:
        """Fast path: ``n`` single-step items of one stream on CPU, values already checked.

        ``values[name]`` must broadcast to ``(n, *shape)`` by numpy's rules; the
        caller checks every shape first, since a failed write part-way would tear a
        row. Falls back to :meth:`extend` where the fast path does not apply (GPU,
        sequences). Use :meth:`extend` unless a profiler says otherwise.
        """
        storage = self.storage
        fast = self._one_row
        if n == 1 and fast is not None:
            # One row: the hot path of a per-step add, kept to a few numpy stores.
            with self._cond:
                self._threads.add(threading.get_ident())
                lim = self.rate_limiter
                if lim.max_diff != math.inf and not lim.can_insert(1, self._size):
                    _waiting.wait(self, lambda: lim.can_insert(1, self._size), None, "insert", 1)
                row = storage.append_numpy(values, 1, end, stream)
                fresh = self._np_item_key[row] < 0  # type: ignore[index]
                self._np_item_key[row] = storage.total - 1  # type: ignore[index]
                self._np_priority[row] = self._max_priority  # type: ignore[index]
                self._np_times[row] = 0  # type: ignore[index]
                fast(row, 1)
                self._size += int(fresh)
                lim.inserts += 1
                _waiting.notify(self)
            return
        if not self._row_path:
            # torch.tensor copies: a broadcast view is read-only.
            data = {
                k: torch.tensor(np.broadcast_to(np.asarray(v), (n, *self.spec[k].shape)))
                for k, v in values.items()
            }
            self.extend(
                data, streams=stream, ends=torch.tensor(np.broadcast_to(np.asarray(end), (n,)))
            )
            return
        _items.write_numpy(self, values, n, end, stream)

    # ------------------------------------------------------------------ reads
    def sample(
        self, batch_size: int, *, beta: float | None = None, timeout: float | None = None
    ) -> Sample:
        """Draw ``batch_size`` items (with replacement, unless the sampler is a selector).

        Args:
            batch_size: Number of items, > 0.
            beta: Importance-weight exponent for prioritized samplers (default: the
                sampler's own).
            timeout: Seconds to wait for the rate limiter (None: as long as it takes).

        Returns:
            A :class:`Sample`.

        Raises:
            InvalidArgumentError: If ``batch_size`` is not a positive int, or ``beta`` or
                ``timeout`` is out of range.
            InsufficientMemoryError: If the batch would not fit in free memory (checked
                only for batches over 1 GiB).
            RateLimiterTimeout: If the limiter did not let the sample through in time.
            WouldBlockForeverError: If the table cannot be sampled and no other thread
                could change that (e.g. a single thread sampling an empty table).
        """
        return _sampling.sample(self, batch_size, beta, timeout)

    def update_priorities(self, keys: Any, priorities: Any) -> int:
        """Set new priorities for sampled items; stale keys are ignored.

        Args:
            keys: ``[K]`` item keys from :attr:`Sample.keys`.
            priorities: ``[K]`` new priorities, finite and > 0.

        Returns:
            How many keys named a live item (the others were overwritten or removed).

        Raises:
            InvalidArgumentError: If shapes differ, a key is not a whole number, or a
                priority is not finite and > 0 or exceeds what the sampler can sum
                without overflow (``Prioritized.priority_bound``). Nothing is written.
            InvalidTypeError: If keys or priorities are not numbers (``None``, strings).

        Example:
            >>> t = Table(Spec({"x": ()}), 4); t.extend({"x": torch.zeros(2)})
            >>> t.update_priorities(torch.tensor([0, 7]), torch.tensor([2.0, 3.0]))
            1
        """
        return _items.update_priorities(self, keys, priorities)

    # ----------------------------------------- internals tests and benchmarks probe
    def _items_completed(self, n: int, streams: torch.Tensor, ends: torch.Tensor) -> int:
        """How many items a write of these steps will add (see ``_items.items_completed``)."""
        return _items.items_completed(self, n, streams, ends)

    def _gather(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every field at ``rows``, frame stacks included (see ``_frames.gather``)."""
        return _frames.gather(self, rows)

    # -------------------------------------------------------------- lifecycle
    def info(self) -> TableInfo:
        """A snapshot of the table's counters and configuration."""
        return _table_state.info(self)

    def reset(self) -> None:
        """Remove every item and step; counters start again from zero."""
        _items.clear(self)

    # ------------------------------------------------- argument checks, no table
    @staticmethod
    def validate_ends(ends: Any, n: int) -> torch.Tensor:
        """Check an ``ends`` argument as :meth:`extend` does, without a table.

        Args:
            ends: Bool (terminated) or codes ``0`` none, ``1`` terminated, ``2``
                truncated; scalar or ``[n]``.
            n: The number of steps.

        Returns:
            ``[n]`` int64 end codes on CPU.

        Raises:
            InvalidArgumentError: For a bad shape or code.

        Example:
            >>> Table.validate_ends(True, 2).tolist()
            [1, 1]
        """
        return end_column(ends, n, torch.device("cpu"))

    @staticmethod
    def validate_priorities(priorities: Any, n: int) -> torch.Tensor:
        """Check priorities as :meth:`extend` and :meth:`update_priorities` do, without a table.

        Args:
            priorities: A scalar or ``[n]`` values, each finite and > 0.
            n: The number of items.

        Returns:
            ``[n]`` float64 priorities on CPU.

        Raises:
            InvalidArgumentError: For a bad shape or a value that is not finite and > 0.

        Example:
            >>> Table.validate_priorities(2.0, 3).tolist()
            [2.0, 2.0, 2.0]
        """
        return priority_column(priorities, n)
