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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from replaydb import _disk, _frames, _items, _kernels, _rows, _waiting
from replaydb._table_checks import (
    check_keys,
    check_numbers,
    check_priority_values,
    check_sequence_options,
    check_table_args,
    check_timeout,
    end_column,
    field_hint,
    int_column,
    preset_capacity,
)
from replaydb.errors import (
    CheckpointError,
    InvalidArgumentError,
    InvalidTypeError,
    WouldBlockForeverError,
)
from replaydb.rate_limiters import MinSize, Queue, RateLimiter, Stack, rate_limiter_from_config
from replaydb.samplers import Fifo, Lifo, Prioritized, Sampler, Uniform, sampler_from_config
from replaydb.spec import Spec
from replaydb.storage import (
    END_NONE,
    END_TERMINATED,
    NO_DISK_STORAGE,
    Storage,
    check_memory,
    resolve_device,
)
from replaydb.sum_tree import SumTree

__all__ = ["LiveSteps", "Sample", "Table", "TableInfo"]


@dataclass(frozen=True)
class Sample:
    """A batch of items and everything a learner needs to weigh and re-prioritize them.

    ``sample["obs"]`` reads a field. Fields are ``[B, *shape]`` when the table's
    ``sequence_length`` is 1, else ``[B, T, *shape]``; a field in the table's
    ``frame_stack`` has a ``k`` dimension after those (``[B, k, *shape]`` or
    ``[B, T, k, *shape]``).

    Attributes:
        data: ``name -> tensor`` for every field of the spec.
        keys: ``[B]`` int64 item keys, for :meth:`Table.update_priorities`.
        probabilities: ``[B]`` float64 probability each item was drawn with.
        weights: ``[B]`` float32 importance weights (ones for uniform sampling).
        priorities: ``[B]`` float64 priorities of the items when drawn.
        times_sampled: ``[B]`` int64 times each item has been sampled, this one included.
        table_size: Items the table held when the sample was drawn.
        mask: ``[B, T]`` bool, ``False`` at padding past an episode end, or ``None``.
        ends: ``[B, T]`` int64 end codes of the window's steps (``0`` none, ``1``
            terminated, ``2`` truncated after the step), for sequence tables; else ``None``.

    Example:
        >>> table = Table(Spec({"x": ()}), 10); table.extend({"x": torch.arange(4.0)})
        >>> s = table.sample(3); s["x"].shape, s.keys.shape, s.weights.shape
        (torch.Size([3]), torch.Size([3]), torch.Size([3]))
    """

    data: dict[str, torch.Tensor]
    keys: torch.Tensor
    probabilities: torch.Tensor
    weights: torch.Tensor
    priorities: torch.Tensor
    times_sampled: torch.Tensor
    table_size: int
    mask: torch.Tensor | None = None
    ends: torch.Tensor | None = None

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.data[name]

    def __len__(self) -> int:
        """Number of items in the batch."""
        return int(self.keys.shape[0])


@dataclass(frozen=True)
class TableInfo:
    """A snapshot of a table's counters, for logs and dashboards.

    Example:
        >>> Table(Spec({"x": (1,)}), 10).info().size
        0
    """

    name: str
    capacity: int
    size: int
    num_steps: int
    sequence_length: int
    total_steps_written: int
    inserts: int
    samples: int
    sampler: dict[str, Any]
    rate_limiter: dict[str, Any]
    max_times_sampled: int | None
    device: str
    nbytes: int
    spec: dict[str, Any] = field(default_factory=dict)


_END_CODES = {None: END_NONE, False: END_NONE, True: END_TERMINATED}
#: Bytes of bookkeeping per row beside the storage: the 32-byte item record and
#: the sampler's state (at most a float64 sum tree of two nodes per slot, padded).
_ROW_OVERHEAD = 32 + 32
#: Samples whose output would exceed this many bytes are checked against free memory.
_SAMPLE_CHECK_BYTES = 1 << 30


class Table:
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
        device = resolve_device(device)
        disk = None
        if path is not None:
            disk = _disk.prepare(path, device, spec, capacity, sequence_length)
        if (
            isinstance(capacity, int | np.integer)
            and not isinstance(capacity, bool)
            and capacity > 0
        ):
            check_memory(
                Storage.required_nbytes(spec, int(capacity), on_disk=path is not None)
                + _ROW_OVERHEAD * int(capacity),
                device,
                f"table {name!r} (capacity={int(capacity)} rows of {spec.step_nbytes} bytes "
                "plus bookkeeping)",
                "use a smaller capacity or smaller fields (e.g. uint8 frames)"
                + ("; " + NO_DISK_STORAGE if path is None else ""),
            )
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
        #: The largest priority the sampler takes without overflowing (e.g. its sum tree).
        self._priority_limit = float(getattr(self.sampler, "priority_bound", math.inf))
        #: Bytes one sampled item takes, for the memory check of huge samples.
        extra = sum((k - 1) * spec[f].numel * spec[f].dtype.itemsize for f, (k, _) in stack.items())
        self._item_nbytes = (spec.step_nbytes + extra) * sequence_length + 64
        # Samplers with a contiguous-insert fast path (replace semantics on active slots).
        self._fast_insert = getattr(self.sampler, "on_insert_contiguous", None)
        # Samplers that take priority updates as numpy arrays (the CPU path).
        self._update_numpy = (
            getattr(self.sampler, "update_numpy", None) if self.device.type == "cpu" else None
        )
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
        #: CPU prioritized single-step tables: the sampler draws and counts the items
        #: in one compiled pass (Prioritized.draw_items/update_items), or None.
        self._prio_items = (
            self.sampler
            if isinstance(self.sampler, Prioritized)
            and self.sampler.counts_items
            and self._kernels is not None
            and sequence_length == 1
            and not stack
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
        self._items = torch.zeros((cap, 4), dtype=torch.int64, device=dev)
        self._item_key = self._items[:, 0]
        self._times = self._items[:, 1]
        self._priority = self._items[:, 2].view(torch.float64)
        self._item_key.fill_(-1)
        self._size = 0
        self._max_priority = 1.0
        self._np_item_key = self._item_key.numpy() if dev.type == "cpu" else None
        self._np_priority = self._priority.numpy() if dev.type == "cpu" else None
        self._np_times = self._times.numpy() if dev.type == "cpu" else None
        self._kernels = _kernels.get() if dev.type == "cpu" else None

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
        if not isinstance(steps, Mapping) and not hasattr(steps, "keys"):  # TensorDict ok
            raise InvalidTypeError(
                f"steps must be a mapping of field name -> [N, *shape] values, got "
                f"{type(steps).__name__}; e.g. table.extend({{{field_hint(self.spec)}}})"
            )
        if timeout is not None:
            check_timeout(timeout)
        data, n = self.spec.coerce_batch(steps, self.device, cast=cast)
        if n == 0:
            return
        stream_t = int_column("streams", streams, n, self.device, 0)
        if int(stream_t.min()) < 0:
            raise InvalidArgumentError(
                f"streams must be >= 0, got {int(stream_t.min())}; number streams from 0"
            )
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
        if not isinstance(step, Mapping) and not hasattr(step, "keys"):
            raise InvalidTypeError(
                f"step must be a mapping of field name -> value, got {type(step).__name__}; "
                f"e.g. table.insert({{{field_hint(self.spec)}}})"
            )
        if timeout is not None:
            check_timeout(timeout)
        data = self.spec.coerce_step(step, self.device, cast=cast)
        stream_t = int_column("stream", stream, 1, self.device, 0)
        if int(stream_t[0]) < 0:
            raise InvalidArgumentError(f"stream must be >= 0, got {int(stream_t[0])}")
        end_t = end_column(end, 1, self.device)
        if (
            priority is None
            and not self.storage.links
            and self.storage._np is not None
            and not self.consuming
            and self.rate_limiter.max_diff == math.inf
        ):
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
        fast = self._fast_insert
        if (
            n == 1
            and fast is not None
            and self._np_item_key is not None
            and not storage.links
            and not self.consuming
        ):
            # One row: the hot path of a per-step add, kept to a few numpy stores.
            with self._cond:
                self._threads.add(threading.get_ident())
                lim = self.rate_limiter
                if lim.max_diff != math.inf and not lim.can_insert(1, self._size):
                    _waiting.wait(self, lambda: lim.can_insert(1, self._size), None, "insert", 1)
                row = storage.append_numpy(values, 1, end, stream)
                fresh = self._np_item_key[row] < 0
                self._np_item_key[row] = storage.total - 1
                self._np_priority[row] = self._max_priority  # type: ignore[index]
                self._np_times[row] = 0  # type: ignore[index]
                fast(row, 1)
                self._size += int(fresh)
                lim.inserts += 1
                _waiting.notify(self)
            return
        if storage._np is None or storage.links or self.consuming:
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
        prio = self._prio_items
        if (
            prio is not None
            and type(batch_size) is int
            and 0 < batch_size * self._item_nbytes <= _SAMPLE_CHECK_BYTES
            and timeout is None
            and (beta is None or (type(beta) is float and 0.0 <= beta <= 1.0))
        ):
            # CPU prioritized single-step table, valid arguments: the short path.
            short = self._sample_prioritized(prio, batch_size, beta)
            if short is not None:
                return short
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, int | np.integer)
            or (batch_size < 1)
        ):
            raise InvalidArgumentError(f"batch_size must be an int >= 1, got {batch_size!r}")
        b = int(batch_size)
        if beta is not None and (
            isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 <= beta <= 1
        ):
            raise InvalidArgumentError(f"beta must be a number in [0, 1], got {beta!r}")
        if timeout is not None:
            check_timeout(timeout)
        if b * self._item_nbytes > _SAMPLE_CHECK_BYTES:
            check_memory(
                b * self._item_nbytes,
                self.device,
                f"sample(batch_size={b}) of {self._item_nbytes} bytes per item",
                "sample fewer items per call",
            )
        with self._cond:
            _waiting.note_thread(self)
            lim = self.rate_limiter
            if lim.never_samples(b) or (
                self.consuming and b > self.capacity * (self.max_times_sampled or 1)
            ):
                raise WouldBlockForeverError(
                    f"sample of {b} item(s) from table {self.name!r} can never go: {lim!r} "
                    f"and capacity {self.capacity} never let that many be drawn at once; "
                    "sample fewer items per call"
                )

            def ready() -> bool:
                return self._size > 0 and lim.can_sample(b, self._size) and _waiting.enough(self, b)

            if not ready():
                _waiting.wait(self, ready, timeout, "sample", b)
            prio = self._prio_items
            if prio is not None:
                # One compiled pass: the same draws and counts as the two calls below.
                sel, keys, times, priorities = prio.draw_items(
                    b,
                    beta,
                    self._np_item_key,  # type: ignore[arg-type]  # set on CPU
                    self._np_times,  # type: ignore[arg-type]
                    self._np_priority,  # type: ignore[arg-type]
                )
            else:
                sel = (
                    _items.select_in_order(self, b)
                    if self.sampler.deterministic
                    else _items.select(self, b, beta)
                )
                keys, times, priorities = _items.take_items(self, sel.slots)
            slots = sel.slots
            mask = ends = None
            if self.sequence_length == 1:
                rows = slots
            else:
                rows, ends = self.storage.windows(keys, self.sequence_length)
                if self.pad:
                    mask = self.storage.window_mask(rows)
            data = _frames.gather(self, rows)
            size = self._size
            lim.on_sample(b)
            if self.max_times_sampled is not None:
                spent = slots[times >= self.max_times_sampled]
                if spent.numel():
                    _items.remove_slots(self, spent)
            _waiting.notify(self)
        weights = sel.weights
        if weights is None:
            weights = (
                torch.from_numpy(np.ones(b, np.float32))
                if self._np_item_key is not None
                else torch.ones(b, dtype=torch.float32, device=self.device)
            )
        return Sample(
            data=data,
            keys=keys,
            probabilities=sel.probabilities,
            weights=weights,
            priorities=priorities,
            times_sampled=times,
            table_size=size,
            mask=mask,
            ends=ends,
        )

    def _sample_prioritized(self, prio: Prioritized, b: int, beta: float | None) -> Sample | None:
        """:meth:`sample` of a CPU prioritized single-step table with valid arguments.

        The same draws, counts, removals and limiter accounting as the general path
        (one compiled pass draws the slots and counts the items); ``None`` where the
        table cannot be sampled at once (the general path then waits or raises).
        """
        with self._cond:
            lim = self.rate_limiter
            size = self._size
            if not (size > 0 and lim.can_sample(b, size)) or lim.never_samples(b):
                return None
            self._threads.add(threading.get_ident())
            sel, keys, times, priorities = prio.draw_items(
                b,
                beta,
                self._np_item_key,  # type: ignore[arg-type]  # set on CPU
                self._np_times,  # type: ignore[arg-type]
                self._np_priority,  # type: ignore[arg-type]
            )
            slots = sel.slots
            data = self.storage.gather(slots)
            lim.on_sample(b)
            if self.max_times_sampled is not None:
                spent = slots[times >= self.max_times_sampled]
                if spent.numel():
                    _items.remove_slots(self, spent)
            if self._waiting:
                self._cond.notify_all()
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
        check_keys(keys)
        check_numbers("priorities", priorities)
        if self._np_item_key is not None:
            return _items.update_priorities_numpy(self, keys, priorities)
        k = torch.as_tensor(keys, device=self.device).to(torch.int64).reshape(-1)
        p = torch.as_tensor(priorities, dtype=torch.float64, device=self.device).reshape(-1)
        if k.shape != p.shape:
            raise InvalidArgumentError(
                f"keys and priorities must have the same length, got {k.numel()} keys and "
                f"{p.numel()} priorities"
            )
        check_priority_values(p, self._priority_limit)
        with self._cond:
            slots = k.clamp(min=0) % self.capacity
            live = (k >= 0) & (self._item_key.index_select(0, slots) == k)
            slots, p = slots[live], p[live]
            if slots.numel():
                self._priority[slots] = p
                self._max_priority = max(self._max_priority, float(p.max()))
                self.sampler.update(slots, p)
            return int(live.sum())

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
        with self._cond:
            return TableInfo(
                name=self.name,
                capacity=self.capacity,
                size=self._size,
                num_steps=self.num_steps,
                sequence_length=self.sequence_length,
                total_steps_written=self.storage.total,
                inserts=self.rate_limiter.inserts,
                samples=self.rate_limiter.samples,
                sampler=self.sampler.config(),
                rate_limiter=self.rate_limiter.config(),
                max_times_sampled=self.max_times_sampled,
                device=str(self.device),
                nbytes=self.storage.nbytes,
                spec=self.spec.to_json(),
            )

    def reset(self) -> None:
        """Remove every item and step; counters start again from zero."""
        with self._cond:
            self.storage.reset()
            self.sampler.reset()
            self.rate_limiter.reset()
            self._item_key.fill_(-1)
            self._priority.zero_()
            self._times.zero_()
            self._size = 0
            self._max_priority = 1.0
            _waiting.notify(self)

    def config(self) -> dict[str, Any]:
        """JSON-serializable description from which :meth:`from_config` rebuilds the table."""
        return {
            "name": self.name,
            "capacity": self.capacity,
            "sequence_length": self.sequence_length,
            "max_times_sampled": self.max_times_sampled,
            "pad": self.pad,
            "stride": self.stride,
            "final_step": self.final_step,
            "frame_stack": {k: [n, pad] for k, (n, pad) in self.frame_stack.items()},
            "spec": self.spec.to_json(),
            "sampler": self.sampler.config(),
            "rate_limiter": self.rate_limiter.config(),
            "device": str(self.device),
        }

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], device: torch.device | str | None = None
    ) -> Table:
        """Build an empty table from :meth:`config` output (``device`` overrides).

        Configs written before ``stride``, ``final_step`` and ``frame_stack``
        existed load with their defaults (1, ``False``, none).
        """
        return cls(
            Spec.from_json(config["spec"]),
            int(config["capacity"]),
            sampler=sampler_from_config(config["sampler"]),
            rate_limiter=rate_limiter_from_config(config["rate_limiter"]),
            sequence_length=int(config["sequence_length"]),
            max_times_sampled=config.get("max_times_sampled"),
            device=device if device is not None else config.get("device", "cpu"),
            name=str(config.get("name", "table")),
            pad=bool(config.get("pad", False)),
            stride=config.get("stride", 1),
            final_step=config.get("final_step", False),
            frame_stack=config.get("frame_stack") or None,
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor of the table's state, on CPU (storage, items, sampler, limiter)."""
        with self._cond:
            n = self.storage.num_rows
            out = {f"storage.{k}": v for k, v in self.storage.state_dict().items()}
            # Columns of the packed records: copied out densely.
            dense = torch.contiguous_format
            out["items.key"] = self._item_key[:n].cpu().clone(memory_format=dense)
            out["items.priority"] = self._priority[:n].cpu().clone(memory_format=dense)
            out["items.times_sampled"] = self._times[:n].cpu().clone(memory_format=dense)
            out["items.scalars"] = torch.tensor(
                [float(self._size), self._max_priority], dtype=torch.float64
            )
            out.update({f"sampler.{k}": v for k, v in self.sampler.state_dict().items()})
            out.update({f"limiter.{k}": v for k, v in self.rate_limiter.state_dict().items()})
            return out

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict` output into this (same-config) table."""
        with self._cond:
            self.storage.load_state_dict(
                {k[len("storage.") :]: v for k, v in state.items() if k.startswith("storage.")}
            )
            n = self.storage.num_rows
            self._item_key.fill_(-1)
            self._priority.zero_()
            self._times.zero_()
            self._item_key[:n].copy_(state["items.key"])
            self._priority[:n].copy_(state["items.priority"])
            self._times[:n].copy_(state["items.times_sampled"])
            size, max_p = state["items.scalars"].tolist()
            self._size, self._max_priority = int(size), float(max_p)
            self.sampler.load_state_dict(
                {k[len("sampler.") :]: v for k, v in state.items() if k.startswith("sampler.")}
            )
            self.rate_limiter.load_state_dict(
                {k[len("limiter.") :]: v for k, v in state.items() if k.startswith("limiter.")}
            )
            _waiting.notify(self)

    def snapshot(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """A consistent copy of the table: its :meth:`config` and :meth:`state_dict`.

        Both are taken under the table's lock and the tensors are copied, so a
        concurrent insert or sample cannot change them afterwards (what a
        checkpoint writer needs).

        Returns:
            ``(config, state)``: JSON-serializable config and CPU tensors that share
            no memory with the table.

        Example:
            >>> table = Table(Spec({"x": ()}), 4)
            >>> config, state = table.snapshot()
            >>> config["capacity"], int(state["storage.total"][0])
            (4, 0)
        """
        with self._cond:
            state = self.state_dict()
            # state_dict() already copies the item columns; the rest may be live views.
            fresh = ("items.key", "items.priority", "items.times_sampled", "items.scalars")
            return self.config(), {k: v if k in fresh else v.clone() for k, v in state.items()}

    def item_priorities(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and priorities of the items that can be sampled now.

        Returns:
            ``(keys, priorities)``: int64 item keys (the key of an item's first step)
            and their float64 priorities, on CPU, in slot order, copied under the lock.

        Example:
            >>> table = Table(Spec({"x": ()}), 4)
            >>> table.extend({"x": torch.zeros(3)})
            >>> table.item_priorities()[0].tolist()
            [0, 1, 2]
        """
        with self._cond:
            n = self.storage.num_rows
            live = self._item_key[:n] >= 0
            return (
                self._item_key[:n][live].cpu().clone(),
                self._priority[:n][live].cpu().clone(),
            )

    # ------------------------------------------- verbs for front ends (Velora buffer)
    @property
    def total_steps_written(self) -> int:
        """Steps written since the table was created or reset (the next step's key).

        Example:
            >>> t = Table(Spec({"x": ()}), 2); t.extend({"x": torch.zeros(3)})
            >>> t.total_steps_written, t.num_steps
            (3, 2)
        """
        return self.storage.total

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
        return self._cond

    def sample_data(
        self, batch_size: int, *, timeout: float | None = None
    ) -> dict[str, torch.Tensor]:
        """The data of :meth:`sample`, with every effect of :meth:`sample`.

        The same draws from the sampler's generator, the same removals
        (``max_times_sampled``), rate-limiter accounting and waiting as
        ``sample(batch_size).data``, without building the per-item keys,
        probabilities and weights. A uniform single-step table on CPU (the Velora
        buffer) takes a short path; every other table calls :meth:`sample`.

        One difference, on the short path only: ``times_sampled`` is counted only
        when the table has ``max_times_sampled`` (where the count decides what later
        draws return). Counting reads one random 32-byte item record per drawn item,
        which measured +50% on a 256-row draw from a 1,000,000-row table, for a
        number that nothing but :attr:`Sample.times_sampled` reports.

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
            >>> t = Table(Spec({"x": ()}), 10, sampler=Uniform(seed=0))
            >>> t.extend({"x": torch.arange(4.0)})
            >>> t.sample_data(3)["x"].shape
            torch.Size([3])
        """
        sampler = self.sampler
        if (
            self.sequence_length != 1
            or self.frame_stack
            or not isinstance(sampler, Uniform)
            or self._np_item_key is None
            or isinstance(batch_size, bool)
            or not isinstance(batch_size, int | np.integer)
            or batch_size < 1
        ):
            return self.sample(batch_size, timeout=timeout).data
        b = int(batch_size)
        with self._cond:
            lim = self.rate_limiter
            if self._size > 0 and lim.can_sample(b, self._size):
                self._threads.add(threading.get_ident())
                slots = sampler.draw(b)  # the same draw as Uniform.sample
                data = self.storage.gather(slots)
                lim.on_sample(b)
                if self.max_times_sampled is not None:
                    _, times, _ = _items.take_items(self, slots)
                    spent = slots[times >= self.max_times_sampled]
                    if spent.numel():
                        _items.remove_slots(self, spent)
                _waiting.notify(self)
                return data
        # Waiting or refusing: exactly what sample does.
        return self.sample(b, timeout=timeout).data

    def restore_steps(self, steps: Mapping[str, Any], *, total_steps_written: int) -> None:
        """Refill an empty single-step table with saved steps, without waiting on its limiter.

        The steps are the newest ``N`` of a table that had written
        ``total_steps_written`` steps, oldest first: they get keys
        ``total_steps_written - N ... total_steps_written - 1`` and land in rows
        ``key % capacity``, as they were. Each becomes an item at the highest
        priority seen so far; the limiter counts the inserts but never blocks them.

        Args:
            steps: ``name -> [N, *shape]`` values for every field, ``N <= capacity``.
            total_steps_written: Steps the saved table had written, ``>= N``.

        Raises:
            InvalidArgumentError: If the table is not empty or a sequence table, or
                the counts do not fit.
            SpecMismatchError: If the steps do not match the spec (nothing is written).

        Example:
            >>> t = Table(Spec({"x": ()}), 4)
            >>> t.restore_steps({"x": torch.arange(4.0)}, total_steps_written=6)
            >>> t.storage.fields["x"].tolist(), t.total_steps_written
            ([2.0, 3.0, 0.0, 1.0], 6)
        """
        if self.sequence_length != 1:
            raise InvalidArgumentError(
                f"restore_steps is for single-step tables; table {self.name!r} has "
                f"sequence_length={self.sequence_length} (use load_state_dict)"
            )
        data, n = self.spec.coerce_batch(steps, self.device)
        total = total_steps_written
        if isinstance(total, bool) or not isinstance(total, int | np.integer) or total < n:
            raise InvalidArgumentError(
                f"total_steps_written must be an int >= the {n} steps given, got {total!r}"
            )
        if n > self.capacity:
            raise InvalidArgumentError(
                f"restore_steps got {n} steps for a table of capacity {self.capacity}; "
                "pass the newest capacity steps at most"
            )
        with self._cond:
            if self.storage.total != 0:
                raise InvalidArgumentError(
                    f"restore_steps needs an empty table; table {self.name!r} has written "
                    f"{self.storage.total} steps (call reset() first)"
                )
            self.storage.seek(int(total) - n)
            if n:
                res = self.storage.append(data)
                _items.add_items(self, res.keys, None)
            _waiting.notify(self)

    # ------------------------------------------------- verbs for front ends (Ray)
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
        with self._cond:
            tree = getattr(self.sampler, "tree", None)
            if isinstance(tree, SumTree) and not self.sampler.deterministic:
                return float(tree.total) if self._size else 0.0
            return float(self._size)

    def live_steps(self) -> LiveSteps:
        """A copy of the live steps in write order, for moving a table's contents.

        Each step carries the priority of the item it completes (the table's highest
        priority seen for steps that complete no live item), and the snapshot carries
        the rate limiter's counters. :meth:`restore_live_steps` writes it into another table
        (of any capacity), which then holds the same items, minus ``times_sampled``.

        Returns:
            A :class:`LiveSteps` on CPU.

        Example:
            >>> t = Table(Spec({"x": ()}), 10); t.extend({"x": torch.arange(3.0)})
            >>> t.live_steps().data["x"].tolist()
            [0.0, 1.0, 2.0]
        """
        with self._cond:
            st = self.storage
            n = st.num_rows
            keys = st.key[:n]
            live_rows = torch.nonzero(keys >= 0).squeeze(1)
            rows = live_rows.index_select(0, torch.argsort(keys.index_select(0, live_rows)))
            item_slots = torch.nonzero(self._item_key[:n] >= 0).squeeze(1)
            pri = torch.full(
                (rows.numel(),), self._max_priority, dtype=torch.float64, device=self.device
            )
            if item_slots.numel():
                if self.sequence_length == 1:
                    last = item_slots
                else:
                    starts = self._item_key.index_select(0, item_slots)
                    last = st.window_rows(starts, self.sequence_length)[:, -1]
                where = torch.full((self.capacity,), -1, dtype=torch.int64, device=self.device)
                where[rows] = torch.arange(rows.numel(), device=self.device)
                idx = where.index_select(0, last)
                ok = idx >= 0
                pri[idx[ok]] = self._priority.index_select(0, item_slots)[ok]
            return LiveSteps(
                data={k: v.cpu().clone() for k, v in st.gather(rows).items()},
                streams=st.stream.index_select(0, rows).cpu(),
                ends=st.end.index_select(0, rows).cpu(),
                priorities=pri.cpu(),
                inserts=int(self.rate_limiter.inserts),
                samples=int(self.rate_limiter.samples),
            )

    def restore_live_steps(self, steps: LiveSteps) -> int:
        """Write :meth:`live_steps` output past the rate limiter, then take its counters.

        The steps are written as one :meth:`extend` (so they must fit the spec and
        the streams must be new to this table) without waiting on the limiter; the
        limiter's insert and sample counters are then set to ``steps.inserts`` and
        ``steps.samples``, and blocked callers are woken.

        Args:
            steps: The steps to write, with the counters to take.

        Returns:
            The number of items in the table afterwards.

        Raises:
            SpecMismatchError: If the steps do not match the spec (nothing is written).
            InvalidArgumentError: For bad streams, ends, priorities or counters.

        Example:
            >>> a = Table(Spec({"x": ()}), 10); a.extend({"x": torch.arange(3.0)})
            >>> Table(Spec({"x": ()}), 5).restore_live_steps(a.live_steps())
            3
        """
        for name in ("inserts", "samples"):
            value = getattr(steps, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidArgumentError(f"steps.{name} must be an int >= 0, got {value!r}")
        with self._cond:
            limiter = self.rate_limiter
            self.rate_limiter = RateLimiter(1.0, 0, -math.inf, math.inf)
            try:
                if steps.streams.numel():
                    self.extend(
                        steps.data,
                        streams=steps.streams,
                        ends=steps.ends,
                        priorities=steps.priorities,
                    )
            finally:
                self.rate_limiter = limiter
            limiter.inserts, limiter.samples = steps.inserts, steps.samples
            self._cond.notify_all()
            return self._size

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
        p = torch.as_tensor(priorities, dtype=torch.float64).detach().cpu()
        if p.dim() == 0:
            p = p.expand(n).clone()
        if p.shape != (n,):
            raise InvalidArgumentError(
                f"priorities must be a scalar or have shape ({n},), got {tuple(p.shape)}"
            )
        check_priority_values(p)
        return p

    # ------------------------------------------------ disk-backed tables (issue 14)
    @property
    def path(self) -> str | None:
        """The directory of a disk-backed table, ``None`` for an in-memory one.

        Example:
            >>> Table(Spec({"x": ()}), 4).path is None
            True
        """
        return str(self._disk.root) if self._disk is not None else None

    def checkpoint(self) -> int:
        """Make the table's directory a durable, crash-consistent copy of the table now.

        Flushes the memory-mapped data files (msync), then atomically replaces the
        directory's ``state.safetensors`` (item records, sampler and rate limiter
        state, links, the cursor). Reopening the directory gives the state of the
        last call, minus the items whose rows were overwritten since (see
        :mod:`replaydb._disk`). Costs one write of the bookkeeping (about 100
        bytes per row), never a copy of the data.

        Returns:
            The cursor committed (:attr:`total_steps_written`).

        Raises:
            InvalidArgumentError: If the table is not disk-backed.
            OSError: If the disk is full or read-only (the previous state stays).

        Example:
            >>> import tempfile
            >>> t = Table(Spec({"x": ()}), 4, path=tempfile.mkdtemp())
            >>> t.extend({"x": torch.ones(3)}); t.checkpoint()
            3
        """
        if self._disk is None:
            raise InvalidArgumentError(
                "checkpoint() is for disk-backed tables (Table(..., path=DIR)); save an "
                "in-memory table with replaydb.checkpoint.save_table"
            )
        return self._disk.commit(self)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Table:
        """Reopen the disk-backed table in ``path`` with its stored configuration.

        The data files are mapped, not read: reopening costs a read of the
        bookkeeping, whatever the size of the data.

        Args:
            path: A directory written by ``Table(..., path=path)``.

        Returns:
            The table, as of its last :meth:`checkpoint`.

        Raises:
            CheckpointError: If ``path`` holds no table, or its files are corrupt.

        Example:
            >>> import tempfile
            >>> d = tempfile.mkdtemp(); Table(Spec({"x": ()}), 4, path=d).checkpoint()
            0
            >>> Table.open(d).capacity
            4
        """
        config = _disk.stored_config(path)
        try:
            spec = Spec.from_json(config["spec"])
            sampler = sampler_from_config(config["sampler"])
            rate_limiter = rate_limiter_from_config(config["rate_limiter"])
        except Exception as exc:  # a constructor rejected a value of the config
            raise CheckpointError(f"{str(path)!r}: the table config is invalid ({exc})") from exc
        return cls(
            spec,
            int(config["capacity"]),
            sampler=sampler,
            rate_limiter=rate_limiter,
            sequence_length=int(config["sequence_length"]),
            max_times_sampled=config.get("max_times_sampled"),
            name=str(config.get("name", "table")),
            pad=bool(config.get("pad", False)),
            path=path,
            stride=config.get("stride", 1),
            final_step=config.get("final_step", False),
            frame_stack=config.get("frame_stack") or None,
        )

    # ------------------------------------------- verbs for front ends (replaydb.reverb)
    def items(self) -> Sample:
        """Every live item, oldest key first, read without counting as a draw.

        Nothing changes: times sampled, the rate limiter and the sampler are left
        as they are. Front ends use it to list what a table holds (for exports,
        inspection and side stores keyed by a field).

        Returns:
            A :class:`Sample` of all ``len(self)`` items; ``probabilities`` are
            ``1 / len(self)`` and ``weights`` ones (this is not a draw).

        Example:
            >>> table = Table(Spec({"x": ()}), 4); table.extend({"x": torch.arange(6.0)})
            >>> table.items()["x"].tolist()
            [2.0, 3.0, 4.0, 5.0]
        """
        with self._cond:
            live = torch.nonzero(self._item_key >= 0).squeeze(1)
            keys = self._item_key.index_select(0, live)
            order = torch.argsort(keys)
            live, keys = live[order], keys[order]
            times = self._times.index_select(0, live)
            priorities = self._priority.index_select(0, live)
            mask = ends = None
            if self.sequence_length == 1:
                rows = live
            else:
                rows, ends = self.storage.windows(keys, self.sequence_length)
                if self.pad:
                    mask = self.storage.window_mask(rows)
            data = self.storage.gather(rows)
            size = self._size
        n = int(keys.numel())
        return Sample(
            data=data,
            keys=keys,
            probabilities=torch.full(
                (n,), 1.0 / max(n, 1), dtype=torch.float64, device=self.device
            ),
            weights=torch.ones(n, dtype=torch.float32, device=self.device),
            priorities=priorities,
            times_sampled=times,
            table_size=size,
            mask=mask,
            ends=ends,
        )

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
        k = torch.as_tensor(np.asarray(keys, dtype=np.int64).reshape(-1), device=self.device)
        with self._cond:
            slots = k.clamp(min=0) % self.capacity
            live = (k >= 0) & (self._item_key.index_select(0, slots) == k)
            n = int(live.sum())
            if n:
                _items.remove_slots(self, slots[live])
                _waiting.notify(self)
            return n

    # --- velora verbs begin ---
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
        return _rows.RowWriter(self, scalars) if _rows.RowWriter.applies(self) else None

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
            >>> t = Table(Spec({"x": ()}), 10, sampler=Prioritized(seed=0))
            >>> t.extend({"x": torch.arange(4.0)})
            >>> data, keys, weights = t.sample_transitions(3); weights.shape
            torch.Size([3, 1])
        """
        return _rows.sample_transitions(self, batch_size, beta)

    # --- velora verbs end ---


@dataclass(frozen=True)
class LiveSteps:
    """The live steps of a table in write order, from :meth:`Table.live_steps`.

    Attributes:
        data: ``name -> [N, *shape]`` values of every field.
        streams: ``[N]`` int64 stream of each step.
        ends: ``[N]`` int64 end code of each step.
        priorities: ``[N]`` float64 priority of the item each step completes.
        inserts: The rate limiter's insert counter.
        samples: The rate limiter's sample counter.
    """

    data: dict[str, torch.Tensor]
    streams: torch.Tensor
    ends: torch.Tensor
    priorities: torch.Tensor
    inserts: int
    samples: int
