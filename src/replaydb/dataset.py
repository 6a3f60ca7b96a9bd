"""Dataset: an endless iterator of sampled batches, prefetched by background threads.

A :class:`Dataset` turns a client's ``sample`` into the input pipeline of a learner,
in the shape TF-Agents code expects from Reverb's ``as_dataset`` (Cassirer et al.
2021, arXiv 2102.04736): each element is ``(batch, info)`` where every leaf of
``batch`` is ``[B, num_steps, *shape]`` and ``info`` is a :class:`SampleInfo` whose
fields are ``[B, num_steps]``.

Rows and chunks
---------------
Items are windows of ``sequence_length`` (T) steps. ``num_steps`` must divide T;
each item is cut into ``k = T // num_steps`` consecutive chunks, and chunks become
batch rows in order: rows ``r*k .. r*k + k - 1`` are the chunks of one item, first
chunk first (so with ``num_steps == T``, the usual case, one row is one item).
When ``B`` is not a multiple of ``k`` the chunks left over from the last item of a
batch open the next batch of the same thread; no sampled step is dropped. Every
row's info is that of the item it was cut from.

Threads
-------
With ``prefetch(n)`` (``n >= 1``) or ``num_parallel_calls > 1``, that many sampling
threads keep up to ``n`` batches ready in a queue. Each thread waits for the rate
limiter (in short polls, so :meth:`Dataset.close` stops it promptly) and gives up
after ``timeout`` seconds with a :class:`~replaydb.errors.RateLimiterTimeout`. An
error in a thread is raised in the consumer at the next ``next()``. Without
prefetch and with one call, sampling happens in the consumer's own thread.

Processes
---------
Over a client that serves other processes (``client.across_processes``: a
:class:`~replaydb.shared.SharedTable` from :meth:`Table.share`), the dataset
works in ``DataLoader`` workers, forked or spawned: each worker asks the owning
process for its own draws from the live table. A dataset pickles without its
threads and queue, and a process that did not start them (a fork of one that
iterated already) starts its own, so a dataset iterated in the main process
first does not hang its workers. Over any other client a worker raises, naming
the fix, since it would sample a frozen copy of the table. In a worker, a
:class:`~replaydb.shared.SharedTable` gathers each batch straight into a reused
shared-memory slot, and the dataset returns it through the handle's
``worker_batch``: the DataLoader then hands the batch to the main process as a
few hundred bytes of references instead of a copy into fresh shared memory (see
``docs/processes.md``). The main process receives ``[batch, info]``, a list,
as the DataLoader makes of any worker's tuple.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch.utils.data import IterableDataset, get_worker_info

from replaydb._validate import check_int, check_timeout
from replaydb.errors import ClosedError, InvalidArgumentError, RateLimiterTimeout
from replaydb.nest import Nest

if TYPE_CHECKING:
    from replaydb.server import TableClient

__all__ = ["AUTOTUNE", "Dataset", "SampleInfo"]

#: Pass to :meth:`Dataset.prefetch` to keep two batches per sampling thread ready.
AUTOTUNE = -1
_POLL_S = 0.05


class SampleInfo(NamedTuple):
    """Per-row facts about a batch, each ``[B, num_steps]`` (Reverb's ``SampleInfo``).

    Attributes:
        key: int64 key of the item the row was cut from (for priority updates).
        probability: float64 probability the item was drawn with.
        table_size: int64 items the table held when the item was drawn.
        priority: float64 priority of the item when drawn.
        times_sampled: int64 times the item has been sampled, this time included.

    Example:
        >>> ds = Dataset(client, batch_size=4)
        >>> _, info = next(ds); info.key.shape, info.probability.dtype
        (torch.Size([4, 2]), torch.float64)
        >>> ds.close()
    """

    key: torch.Tensor
    probability: torch.Tensor
    table_size: torch.Tensor
    priority: torch.Tensor
    times_sampled: torch.Tensor


class _StoppedError(Exception):
    """Raised inside a worker when the dataset is closing."""


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Dataset(IterableDataset[tuple[Any, SampleInfo]]):
    """Endless batches of ``[B, num_steps, ...]`` from a table, with background prefetch.

    Iterating never ends by itself; stop with ``break``, ``itertools.islice`` or
    :meth:`close`. It is also a ``torch.utils.data.IterableDataset``: use it with
    ``DataLoader(dataset, batch_size=None)`` (batches are already formed). With
    ``num_workers > 0`` the client must serve other processes: a
    :class:`~replaydb.shared.SharedTable` (``table.share()`` of a
    :func:`~replaydb.shared.memory_table` or a disk-backed table), and each
    worker draws its own batches from the live table. Over an in-process client
    a worker would sample a frozen copy of the table, the same batches in every
    worker, so it raises instead.

    Args:
        client: A :class:`~replaydb.server.Client` (or anything with its ``sample``
            and ``info``).
        batch_size: Rows per batch (``B``), >= 1.
        num_steps: Steps per row; must divide the table's ``sequence_length``
            (default: the whole ``sequence_length``).
        table: The table to sample (``None``: the client's only table).
        num_parallel_calls: Sampling threads, >= 1.
        timeout: Seconds a batch may wait for the rate limiter before
            :class:`~replaydb.errors.RateLimiterTimeout` (``None``: wait for ever).

    Raises:
        InvalidArgumentError: (a ``ValueError``) for a bad size, thread count,
            timeout, or a ``num_steps`` that does not divide ``sequence_length``.

    Example:
        >>> ds = Dataset(client, batch_size=32, num_steps=2).prefetch(2)
        >>> batch, info = next(iter(ds)); info.key.shape
        torch.Size([32, 2])
        >>> ds.close()
    """

    def __init__(
        self,
        client: TableClient,
        batch_size: int,
        num_steps: int | None = None,
        *,
        table: str | None = None,
        num_parallel_calls: int = 1,
        timeout: float | None = None,
    ) -> None:
        super().__init__()
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.num_parallel_calls = check_int("num_parallel_calls", num_parallel_calls, 1)
        if timeout is not None:
            check_timeout(timeout)
        self.timeout = None if timeout is None else float(timeout)
        self.client = client
        self.table = table
        seq = int(client.info(table=table).sequence_length)
        self.sequence_length = seq
        if num_steps is None:
            num_steps = seq
        num_steps = check_int("num_steps", num_steps, 1, what="None or an int")
        if seq % num_steps:
            raise InvalidArgumentError(
                f"num_steps ({num_steps}) must divide the table's sequence_length ({seq}); "
                f"use one of {[d for d in range(1, seq + 1) if seq % d == 0]}"
            )
        self.num_steps = num_steps
        self.buffer_size = 0
        #: Rebuilds a nested batch from ``field -> tensor`` (``None``: a flat dict).
        self.structure: Nest | None = None
        #: Called before each sample (the manager flushes its observers here).
        self.before_sample: Callable[[], None] | None = None
        self._chunks = seq // num_steps
        self._stop = threading.Event()
        self._closed = False
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._queue: queue.Queue[Any] | None = None
        self._carry: tuple[dict[str, torch.Tensor], list[torch.Tensor]] | None = None
        self._children: list[Dataset] = []
        self._start_lock = threading.Lock()
        self._pid = os.getpid()

    def _fresh_process(self) -> None:
        """In a process that did not start them (a fork), forget the parent's threads."""
        self._pid = os.getpid()
        self._stop = threading.Event()
        self._error = None
        self._threads = []
        self._queue = None
        self._carry = None
        self._start_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        if not getattr(self.client, "across_processes", False):
            raise InvalidArgumentError(
                f"this Dataset samples a {type(self.client).__name__} of this process, which "
                "another process (e.g. a spawned DataLoader worker) cannot reach; share the "
                "table: build it with replaydb.shared.memory_table(...) or Table(..., "
                "path=DIR) and pass Dataset(table.share(), ...)"
            )
        state = self.__dict__.copy()
        for name in ("_stop", "_threads", "_queue", "_start_lock", "_carry", "_error"):
            state.pop(name, None)
        state["_children"] = []
        state["_pid"] = -1
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._fresh_process()

    def __repr__(self) -> str:
        return (
            f"Dataset(batch_size={self.batch_size}, num_steps={self.num_steps}, "
            f"sequence_length={self.sequence_length}, "
            f"num_parallel_calls={self.num_parallel_calls}, "
            f"prefetch={self.buffer_size}{', closed' if self._closed else ''})"
        )

    # ------------------------------------------------------------ building
    def prefetch(self, buffer_size: int) -> Dataset:
        """A new dataset like this one that keeps ``buffer_size`` batches ready.

        Args:
            buffer_size: Batches to keep ready, >= 0, or :data:`AUTOTUNE` (two per
                sampling thread).

        Returns:
            The new dataset (closed with this one).

        Raises:
            InvalidArgumentError: If ``buffer_size`` is not an int >= 0 or AUTOTUNE.
            ClosedError: If this dataset is closed.

        Example:
            >>> ds = Dataset(client, 64).prefetch(3)
        """
        self._check_open()
        if buffer_size != AUTOTUNE:
            check_int("buffer_size", buffer_size, 0)
        child = Dataset(
            self.client,
            self.batch_size,
            self.num_steps,
            table=self.table,
            num_parallel_calls=self.num_parallel_calls,
            timeout=self.timeout,
        )
        child.structure = self.structure
        child.before_sample = self.before_sample
        child.buffer_size = 2 * self.num_parallel_calls if buffer_size == AUTOTUNE else buffer_size
        self._children.append(child)
        return child

    # ------------------------------------------------------------ iterating
    def __iter__(self) -> Dataset:
        self._check_open()
        worker = get_worker_info()
        if worker is not None and not getattr(self.client, "across_processes", False):
            raise InvalidArgumentError(
                f"this Dataset samples a {type(self.client).__name__} of the main process, "
                f"which DataLoader worker {worker.id} can only see as a frozen copy (every "
                "worker would return the same batches and never see new data); share the "
                "table between processes: build it with replaydb.shared.memory_table(...) "
                "or Table(..., path=DIR) and pass Dataset(table.share(), ...), or use "
                "DataLoader(dataset, batch_size=None, num_workers=0) with "
                "num_parallel_calls/prefetch for parallel sampling"
            )
        if self._pid != os.getpid():
            self._fresh_process()
        return self

    def __next__(self) -> tuple[Any, SampleInfo]:
        self._check_open()
        if self._pid != os.getpid():
            self._fresh_process()
        if self._error is not None:
            raise self._error
        if self.buffer_size == 0 and self.num_parallel_calls == 1:
            try:
                return self._finish(*self._produce(self._stop, self, "_carry"))
            except _StoppedError:
                raise ClosedError("the dataset was closed while sampling") from None
        q = self._ensure_started()
        while True:
            try:
                got = q.get(timeout=_POLL_S)
            except queue.Empty:
                self._check_open()
                continue
            if isinstance(got, _Failure):
                self._error = got.exc
                self._shutdown()
                raise got.exc
            return self._finish(*got)

    def _finish(
        self, data: dict[str, torch.Tensor], info: list[torch.Tensor]
    ) -> tuple[Any, SampleInfo]:
        batch = self.structure.pack(data) if self.structure is not None else data
        hand_over = getattr(self.client, "worker_batch", None)
        if hand_over is not None and get_worker_info() is not None:
            # [batch, info] that pickles by reference to the shared memory it was
            # gathered into; the main process gets a list, as from a worker's tuple.
            return hand_over(batch, SampleInfo(*info))  # type: ignore[no-any-return]
        return batch, SampleInfo(*info)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("this Dataset is closed; create a new one to keep sampling")

    def _ensure_started(self) -> queue.Queue[Any]:
        with self._start_lock:
            if self._queue is None:
                _RUNNING.add(self)
                self._queue = queue.Queue(maxsize=max(1, self.buffer_size))
                for i in range(self.num_parallel_calls):
                    t = threading.Thread(
                        target=_worker,
                        args=(weakref.ref(self), self._queue, self._stop),
                        name=f"replaydb-dataset-{i}",
                        daemon=True,
                    )
                    self._threads.append(t)
                    t.start()
            return self._queue

    # ------------------------------------------------------------ sampling
    def _sample(self, n: int, stop: threading.Event) -> Any:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            if stop.is_set():
                raise _StoppedError
            if self.before_sample is not None:
                self.before_sample()
            wait = _POLL_S
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            try:
                return self.client.sample(n, timeout=wait, table=self.table)
            except RateLimiterTimeout as exc:
                if deadline is not None and time.monotonic() >= deadline:
                    raise RateLimiterTimeout(
                        f"the dataset waited {self.timeout}s for a batch of {n} item(s) and "
                        f"the rate limiter did not let it through ({exc}); insert more data, "
                        "or pass a longer timeout"
                    ) from exc

    def _produce(
        self, stop: threading.Event, owner: Any, attr: str
    ) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        """One batch; leftover chunks are kept in ``owner.<attr>`` for the next one."""
        b, s, k = self.batch_size, self.num_steps, self._chunks
        parts: list[tuple[dict[str, torch.Tensor], list[torch.Tensor]]] = []
        carry = getattr(owner, attr)
        have = 0
        if carry is not None:
            parts.append(carry)
            have = int(carry[1][0].shape[0])
            setattr(owner, attr, None)
        while have < b:
            n_items = math.ceil((b - have) / k)
            smp = self._sample(n_items, stop)
            parts.append(self._rows(smp, k, s))
            have += n_items * k
        if len(parts) == 1 and have == b:
            return parts[0]
        data = {name: torch.cat([p[0][name] for p in parts]) for name in parts[0][0]}
        info = [torch.cat([p[1][i] for p in parts]) for i in range(5)]
        if have > b:
            setattr(owner, attr, ({n: v[b:] for n, v in data.items()}, [v[b:] for v in info]))
            data = {n: v[:b] for n, v in data.items()}
            info = [v[:b] for v in info]
        return data, info

    def _rows(self, smp: Any, k: int, s: int) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        n = int(smp.keys.shape[0])
        data: dict[str, torch.Tensor] = {}
        for name, t in smp.data.items():
            if self.sequence_length == 1:
                t = t.unsqueeze(1)
            data[name] = t.reshape(n * k, s, *t.shape[2:]) if k > 1 else t
        size = torch.full((n,), int(smp.table_size), dtype=torch.int64, device=smp.keys.device)
        per_item = (smp.keys, smp.probabilities, size, smp.priorities, smp.times_sampled)
        info = [
            v.reshape(n, 1, 1).expand(n, k, s).reshape(n * k, s)
            if k > 1
            else v.reshape(n, 1).expand(n, s).contiguous()
            for v in per_item
        ]
        return data, info

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> Dataset:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _join_until(self, deadline: float) -> None:
        """Wait for the sampling threads to end, until ``deadline`` (monotonic)."""
        for t in list(self._threads):
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    def _shutdown(self) -> None:
        self._stop.set()
        q = self._queue
        for t in self._threads:
            while t.is_alive():
                if q is not None:
                    try:
                        while True:
                            q.get_nowait()
                    except queue.Empty:
                        pass
                t.join(timeout=_POLL_S)
        self._threads = []

    def close(self) -> None:
        """Stop the sampling threads (and those of datasets made by :meth:`prefetch`).

        Batches already prefetched are discarded. Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        self._shutdown()
        for child in self._children:
            child.close()


#: Datasets that started sampling threads in this process (see :func:`_stop_at_exit`).
_RUNNING: weakref.WeakSet[Dataset] = weakref.WeakSet()
#: The longest the exit hook waits for sampling threads to finish their call.
_EXIT_JOIN_S = 2.0
#: The longest a DataLoader worker's exit waits for its queue's last sends (the
#: DataLoader ends a worker that takes more than 5 s to exit).
_EXIT_FEED_S = 4.0


def _stop_at_exit() -> None:
    """Stop every dataset's sampling threads while Python can still serve them.

    A daemon thread that is inside a torch call (a gather, a copy) when the
    interpreter starts to finalize is ended by Python as soon as it asks for the
    GIL back, which aborts the process; a spawned DataLoader worker (which ends
    through ``sys.exit``) died so. ``atexit`` hooks run before finalization.
    """
    running = list(_RUNNING)
    for ds in running:
        ds._stop.set()
    deadline = time.monotonic() + _EXIT_JOIN_S
    for ds in running:
        ds._join_until(deadline)
    if get_worker_info() is not None:
        _flush_feeders(time.monotonic() + _EXIT_FEED_S)


def _flush_feeders(deadline: float) -> None:
    """In a DataLoader worker: let its queue's feeder thread send what it holds.

    The worker returns batches through a ``multiprocessing`` queue whose daemon
    feeder thread pickles and sends them; when the worker ends (its queue
    closed), that thread may still be at work on the last ones, in torch calls
    (a tensor's hand-over or release) that give up the GIL. A spawned worker
    then finalizes Python, which ends such a thread as it takes the GIL back
    and aborts the process ("terminate called without an active exception").
    Waiting for the closed queue's feeder to finish its last sends avoids it.
    """
    for t in threading.enumerate():
        if t.daemon and t.name == "QueueFeederThread" and t is not threading.current_thread():
            t.join(timeout=max(0.0, deadline - time.monotonic()))


atexit.register(_stop_at_exit)


def _worker(ref: weakref.ref[Dataset], q: queue.Queue[Any], stop: threading.Event) -> None:
    """Sample batches into ``q`` until stopped, or until the dataset is garbage-collected."""
    state = threading.local()
    state.carry = None
    try:
        while not stop.is_set():
            ds = ref()
            if ds is None:  # dropped without close(): stop rather than sample for ever
                return
            item: Any = ds._produce(stop, state, "carry")
            del ds
            while not stop.is_set():
                try:
                    q.put(item, timeout=_POLL_S)
                    break
                except queue.Full:
                    if ref() is None:
                        return
    except _StoppedError:
        return
    except BaseException as exc:
        stop.set()
        while True:
            try:
                q.put(_Failure(exc), timeout=_POLL_S)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    q.get_nowait()
