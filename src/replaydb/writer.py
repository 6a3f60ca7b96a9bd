"""Writer: steps of streams in, rows of a table out, a batch at a time.

Every front end that writes steps (the manager's observer, :class:`~replaydb.collect.Collector`,
the Ray client, and :mod:`replaydb.reverb`'s writers, whose steps are the refs of
Reverb items: see :mod:`replaydb.reverb.item_writer`) stages them here and writes
them with one ``extend`` per batch; one ``extend`` per step would cost a lock, a
spec check and a dozen small tensor ops per step, a batch pays those once.

Data layout
-----------
The stage is one preallocated numpy array ``[max_steps, *shape]`` per field (plus a
float64 column of priorities when they are given). Single steps (:meth:`Writer.append`)
copy their array fields into the next row and keep their scalar fields as one tuple
of immutable scalars per step; the tuples become columns when the stage is written
or a batch follows. Batches (:meth:`Writer.extend`) copy into the next rows; a batch
of ``max_steps`` or more rows is written straight through after the stage, so no
step is ever staged twice. When a field has no numpy dtype (bfloat16) the stage is
a list of torch copies of the batches instead, concatenated when written. Each
staged row keeps its stream and end code (``0`` none, ``1`` terminated, ``2``
truncated): the table links the steps of one stream into episodes and makes
windows of ``sequence_length`` steps (its items) from them; see
:meth:`replaydb.table.Table.extend`.

Flush policy (the one rule of every writer)
-------------------------------------------
The stage is written to the destination when it holds ``max_steps`` steps, on
:meth:`Writer.flush` (a reader that needs the steps calls it: ``num_frames``, a
checkpoint, a sample), on :meth:`Writer.try_flush` from another thread (never
waiting on a blocking rate limiter, optionally only once the oldest staged step has
waited ``older_than`` seconds), and on :meth:`Writer.close`. A write the rate limiter
refuses leaves the steps staged.

Episodes
--------
A step's ``end`` ends its stream's episode. :meth:`Writer.end_episode` ends a
stream's open episode after the fact: when its last step is still staged, that
step's end code is set; when it was already written, the stream's next steps go to
a fresh stream id (from ``new_stream``), so the table never joins the two episodes.
"""

from __future__ import annotations

import functools
import operator
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from replaydb._constants import NUMPY_DTYPES
from replaydb._validate import check_int
from replaydb.errors import ClosedError, InvalidArgumentError, RateLimiterTimeout, SpecMismatchError
from replaydb.spec import Spec
from replaydb.table import Table

__all__ = ["StepSink", "Writer"]


class StepSink(Protocol):
    """Where a :class:`Writer` writes: anything with a client's ``extend``.

    Every :class:`~replaydb.server.TableClient` is one (the local
    :class:`~replaydb.server.Client`, the Ray client); so are the Ray client's
    per-shard sender and a Reverb table's ``replaydb.reverb.item_writer.RefSink``.
    """

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
        """Write a batch of steps (see :meth:`replaydb.table.Table.extend`)."""


def numpy_dtype(dtype: torch.dtype) -> np.dtype[Any] | None:
    """The numpy twin of a torch dtype (``None`` for bfloat16 and other torch-only ones).

    Example:
        >>> numpy_dtype(torch.float32)
        dtype('float32')
    """
    d = NUMPY_DTYPES.get(dtype)
    return None if d is None else np.dtype(d)


def _tuple_getter(indices: list[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """``values -> tuple(values[i] for i in indices)``, in C where possible."""
    if not indices:
        return lambda values: ()
    if len(indices) == 1:
        only = indices[0]
        return lambda values: (values[only],)
    return operator.itemgetter(*indices)


def _int_column(
    name: str, value: Any, n: int, kinds: str, high: int | None
) -> tuple[np.ndarray[Any, Any], list[int]]:
    """Check ``value`` (int or ``[n]``) holds ints in ``[0, high]``; return it and a list."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    a = np.asarray(value)
    what = "ints >= 0" if high is None else "codes 0 (none), 1 (terminated), 2 (truncated)"
    if a.dtype.kind not in kinds:
        raise InvalidArgumentError(
            f"{name} must be {what}, a scalar or shape ({n},); got values of dtype {a.dtype}"
        )
    if a.ndim == 0:
        v = int(a)
        out = [v] * n
        lo = hi = v
    elif a.shape != (n,):
        raise InvalidArgumentError(f"{name} must be a scalar or have shape ({n},), got {a.shape}")
    else:
        out = a.tolist()
        if not n:
            return np.zeros(0, dtype=np.int64), out
        # Python's min/max beat numpy's reductions on the few values of a step.
        lo, hi = (min(out), max(out)) if n <= 64 else (int(a.min()), int(a.max()))
    if lo < 0 or (high is not None and hi > high):
        raise InvalidArgumentError(f"{name} must be {what}, got {value!r}")
    return a, [int(x) for x in out] if a.dtype.kind == "b" else out


def _int64(a: np.ndarray[Any, Any], n: int) -> np.ndarray[Any, Any]:
    """A checked column of :func:`_int_column` as ``[n]`` int64 (for a write)."""
    return a.astype(np.int64, copy=False) if a.ndim else np.full(n, int(a), dtype=np.int64)


class Writer:
    """Stages the steps of one or more streams and writes them as batches to a table.

    One writer serves one producer thread; :meth:`flush`, :meth:`try_flush` and
    :meth:`discard` may come from any thread.

    Args:
        destination: A :class:`~replaydb.table.Table`, or a client of one (any
            :class:`~replaydb.server.TableClient`; in general a :class:`StepSink`).
        spec: The fields of a step (the destination table's spec, or the same fields
            in another order: :meth:`append` takes values in this order).
        table: The client's table (``None``: its only table); ignored for a Table.
        max_steps: Steps staged before one write.
        new_stream: Returns a stream id no other writer uses; needed only to end an
            episode whose last step was already written (see :meth:`end_episode`).
            With it, the streams given to :meth:`append` and :meth:`extend` are this
            writer's own numbering, mapped to fresh ids on first use.

    Raises:
        InvalidArgumentError: If ``max_steps`` is not an int >= 1 or ``spec`` is no Spec.

    Example:
        >>> table = Table(Spec({"x": ()}), 100, sequence_length=2)
        >>> writer = Writer(table, table.spec, max_steps=8)
        >>> for t in range(3): writer.append([float(t)], end=int(t == 2))
        >>> writer.flush(); len(table)
        2
    """

    def __init__(
        self,
        destination: Table | StepSink,
        spec: Spec,
        *,
        table: str | None = None,
        max_steps: int = 4096,
        new_stream: Callable[[], int] | None = None,
    ) -> None:
        self.max_steps = check_int("max_steps", max_steps, 1)
        if not isinstance(spec, Spec):
            raise InvalidArgumentError(f"spec must be a replaydb Spec, got {type(spec).__name__}")
        self.spec = spec
        self._dest = destination
        self._table = table
        # The destination's extend, with the table chosen once.
        self._extend: Callable[..., None] = (
            destination.extend
            if isinstance(destination, Table)
            else functools.partial(destination.extend, table=table)
        )
        self._new_stream = new_stream
        self.names = list(spec)
        fields = [spec[n] for n in self.names]
        self._np_dtypes = [numpy_dtype(f.dtype) for f in fields]
        #: Whether the stage is preallocated numpy (every field has a numpy dtype);
        #: else it is a list of torch batches.
        self.staging = all(d is not None for d in self._np_dtypes)
        w = self.max_steps if self.staging else 0
        self._chunks: list[dict[str, torch.Tensor]] = []
        self._bufs: list[np.ndarray[Any, Any]] = [
            np.zeros((w, *f.shape), dtype=d) for f, d in zip(fields, self._np_dtypes, strict=True)
        ]
        self._array_idx = [i for i, f in enumerate(fields) if f.shape]
        self._scalar_idx = [i for i, f in enumerate(fields) if not f.shape]
        self._get_scalars = _tuple_getter(self._scalar_idx)
        self._pris: list[float] = []
        self._timeout: float | None = None  # the smallest timeout staged steps came with
        self._with_priority: bool | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._staged = 0
        self._rows: list[tuple[Any, ...]] = []  # scalar fields of rows _rows_from..
        self._rows_from = 0
        self._streams: list[int] = []
        self._ends: list[int] = []
        self._since = 0.0  # when the oldest staged step arrived
        # Logical stream -> physical stream id (only with new_stream).
        self._phys: dict[int, int] = {}
        # Logical stream -> staged row of its open episode's last step (-1: written).
        self._tails: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"Writer(staged={self._staged}, max_steps={self.max_steps}, table={self._table!r})"

    # ------------------------------------------------------------------ state
    @property
    def staged(self) -> int:
        """Steps given to this writer and not yet written."""
        return self._staged

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def stream_id(self, stream: int) -> int:
        """The table stream id a logical stream writes now (itself without ``new_stream``)."""
        if self._new_stream is None:
            return stream
        phys = self._phys.get(stream)
        if phys is None:
            phys = self._phys[stream] = self._new_stream()
        return phys

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("this writer is closed; make a new one")

    # ----------------------------------------------------------------- writes
    def append(
        self,
        values: Sequence[Any],
        *,
        stream: int = 0,
        end: int = 0,
        priority: float | None = None,
        timeout: float | None = None,
    ) -> None:
        """Stage one step.

        Args:
            values: The step's values in :attr:`names` order, already checked: arrays
                (or anything numpy assigns) of the field's shape, and immutable
                scalars of the field's kind for scalar fields.
            stream: The step's stream (an int >= 0).
            end: End code of the step: ``0`` none, ``1`` terminated, ``2`` truncated.
            priority: Priority of the item this step completes (default: the table's).
            timeout: Seconds the write carrying this step may wait for the rate
                limiter (the smallest of a batch's applies; ``None``: no limit).

        Raises:
            SpecMismatchError: If an array value does not fit its field (nothing staged).
            ClosedError: If the writer is closed.
        """
        if not self.staging:
            self.extend(
                {n: torch.as_tensor(v)[None] for n, v in zip(self.names, values, strict=True)},
                streams=stream,
                ends=end,
                priorities=None if priority is None else [priority],
                timeout=timeout,
            )
            return
        with self._lock:
            if self._closed:
                raise ClosedError("this writer is closed; make a new one")
            if self._staged >= self.max_steps:  # a full stage whose write failed
                self._flush_locked(None, None)
            if priority is not None:
                if self._with_priority is not True:  # one kind per batch
                    self._priority_mode(True)
            elif self._with_priority:
                self._priority_mode(False)
            pos = self._staged
            bufs = self._bufs
            i = -1
            try:
                for i in self._array_idx:
                    bufs[i][pos] = values[i]
            except (TypeError, ValueError, OverflowError) as exc:
                raise SpecMismatchError(
                    f"field {self.names[i]!r}: value does not fit shape "
                    f"{bufs[i].shape[1:]} and dtype {bufs[i].dtype} ({exc})"
                ) from exc
            if priority is not None:
                self._pris.append(priority)
            if timeout is not None:
                self._timeout = timeout if self._timeout is None else min(self._timeout, timeout)
            self._rows.append(self._get_scalars(values))
            phys = stream if self._new_stream is None else self.stream_id(stream)
            self._streams.append(phys)
            self._ends.append(end)
            if end:
                self._tails.pop(stream, None)
            else:
                self._tails[stream] = pos
            if pos == 0:
                self._since = time.monotonic()
            self._staged = pos + 1
            if pos + 1 >= self.max_steps:
                self._flush_locked(None, None)

    def extend(
        self,
        steps: Mapping[str, Any],
        *,
        streams: Any = 0,
        ends: Any = 0,
        priorities: Any = None,
        timeout: float | None = None,
    ) -> None:
        """Stage a batch of steps (or write it through when it fills a batch by itself).

        Args:
            steps: ``name -> [N, *shape]`` values for every field, numpy-assignable
                (checked by the caller or, written through, by the destination).
            streams: Stream of each step (int or ``[N]``, >= 0).
            ends: End code of each step (int or ``[N]``, 0/1/2 or bools).
            priorities: Priority of the item each step completes (``[N]``; ``None``:
                the table's default).
            timeout: Seconds the write carrying these steps may wait for the rate
                limiter (see :meth:`append`).

        Raises:
            SpecMismatchError: If a field is missing or does not fit (nothing staged).
            InvalidArgumentError: For bad ``streams`` or ``ends``.
            ClosedError: If the writer is closed.
        """
        missing = [n for n in self.names if n not in steps]
        if missing:
            raise SpecMismatchError(
                f"steps lack field(s) {missing}; every write needs all of {self.names}"
            )
        first = steps[self.names[0]]
        shape = getattr(first, "shape", None)
        if shape is None:
            shape = np.shape(first)
        n = int(shape[0]) if len(shape) else -1
        if n < 0:
            raise SpecMismatchError(
                f"field {self.names[0]!r}: expected a batch [N, *shape], got {first!r}"
            )
        s, s_list = _int_column("streams", streams, n, "iu", None)
        e, e_list = _int_column("ends", ends, n, "biu", 2)
        p = None if priorities is None else np.asarray(priorities, dtype=np.float64).reshape(-1)
        if p is not None and p.shape != (n,):
            raise InvalidArgumentError(
                f"priorities must have shape ({n},) (one per step), got {p.shape}"
            )
        if n == 0:
            return
        with self._lock:
            self._check_open()
            if self._new_stream is not None:
                logical = s_list
                phys_list = [self.stream_id(x) for x in logical]
                phys = np.asarray(phys_list, dtype=np.int64)
            else:
                logical, phys, phys_list = None, None, s_list
            if n >= self.max_steps:
                self._flush_locked(None, None)
                if phys is None:
                    phys = _int64(s, n)
                self._write(dict(steps), phys, _int64(e, n), p, timeout)
                if logical is not None:
                    for x, code in zip(logical, e_list, strict=True):
                        if code:
                            self._tails.pop(x, None)
                        else:
                            self._tails[x] = -1
                return
            if self._staged + n > self.max_steps:
                self._flush_locked(None, None)
            if p is not None or self._with_priority:
                self._priority_mode(p is not None)
            pos = self._staged
            self._put(steps, pos, n)
            if p is not None:
                self._pris.extend(p.tolist())
            if timeout is not None:
                self._timeout = timeout if self._timeout is None else min(self._timeout, timeout)
            self._streams.extend(phys_list)
            codes = e_list
            self._ends.extend(codes)
            if logical is not None:
                for row, (x, code) in enumerate(zip(logical, codes, strict=True), pos):
                    if code:
                        self._tails.pop(x, None)
                    else:
                        self._tails[x] = row
            if pos == 0:
                self._since = time.monotonic()
            self._staged = pos + n
            self._rows_from = self._staged
            if self._staged >= self.max_steps:
                self._flush_locked(None, None)

    def end_episode(self, stream: int = 0, code: int = 2) -> None:
        """End ``stream``'s open episode after its last step (no-op if none is open).

        Args:
            stream: The stream (as given to :meth:`append`).
            code: End code, ``1`` terminated or ``2`` truncated.

        Raises:
            InvalidArgumentError: For a bad code, or when the last step was already
                written and the writer has no ``new_stream`` to continue on.
        """
        if code not in (1, 2):
            raise InvalidArgumentError(
                f"code must be 1 (terminated) or 2 (truncated), got {code!r}"
            )
        with self._lock:
            row = self._tails.get(stream)
            if row is None:
                return
            if row >= 0:
                self._ends[row] = code
            elif self._new_stream is None:
                raise InvalidArgumentError(
                    f"stream {stream}'s last step was already written, so its episode cannot "
                    "be ended now; give the Writer new_stream= to continue on a fresh stream, "
                    "or pass end= with the step"
                )
            else:
                self._phys[stream] = self._new_stream()
            del self._tails[stream]

    def is_open(self, stream: int) -> bool:
        """Whether ``stream`` has an episode that has steps and has not ended."""
        return stream in self._tails

    # ------------------------------------------------------------------ flush
    def flush(self, timeout: float | None = None, *, limit: int | None = None) -> None:
        """Write the staged steps (the oldest ``limit`` of them, if given).

        Args:
            timeout: Seconds to wait for the rate limiter (``None``: the smallest
                timeout the staged steps came with, else as long as it takes).
            limit: Write at most this many steps; the rest stay staged, in order.

        Raises:
            RateLimiterTimeout: If the limiter refused the write in time (the steps
                stay staged).
            ClosedError: If the writer is closed.
        """
        self._check_open()
        with self._lock:
            self._flush_locked(timeout, limit)

    def try_flush(
        self, *, older_than: float = 0.0, wait_lock: bool = False, timeout: float | None = 0.0
    ) -> None:
        """Flush unless a blocking rate limiter (or, without ``wait_lock``, a busy writer) stops it.

        Args:
            older_than: Flush only when the oldest staged step has waited this long (s).
            wait_lock: Wait for another thread using the writer instead of giving up.
            timeout: The write's rate-limiter timeout (default ``0``: never wait;
                ``None``: as :meth:`flush`). A refused write leaves the steps staged.
        """
        if self._closed or self._staged == 0:
            return
        if older_than and time.monotonic() - self._since < older_than:
            return
        if not self._lock.acquire(blocking=wait_lock):
            return
        try:
            self._flush_locked(timeout, None)
        except RateLimiterTimeout:
            pass
        finally:
            self._lock.release()

    def discard(self) -> None:
        """Drop the staged steps and forget open episodes (the table was emptied)."""
        with self._lock:
            self._clear(self._staged)
            self._tails.clear()

    def close(self, *, flush: bool = True, timeout: float | None = None) -> None:
        """Write the staged steps (unless ``flush=False``) and refuse more. Idempotent.

        Raises:
            RateLimiterTimeout: If the final write timed out (the writer is closed anyway).
        """
        if self._closed:
            return
        try:
            if flush:
                with self._lock:
                    self._flush_locked(timeout, None)
        finally:
            self._closed = True

    # -------------------------------------------------------------- internals
    def _priority_mode(self, with_priority: bool) -> None:
        """One kind per batch: priorities given for every staged step or for none."""
        if self._staged and bool(self._with_priority) != with_priority:
            self._flush_locked(None, None)
        self._with_priority = with_priority

    def _put(self, steps: Mapping[str, Any], pos: int, n: int) -> None:
        """Copy a batch into rows ``pos..pos+n`` of the stage (nothing staged on error)."""
        if not self.staging:
            chunk = {}
            for name in self.names:
                try:
                    chunk[name] = torch.as_tensor(steps[name]).clone()
                except (TypeError, ValueError, RuntimeError) as exc:
                    raise SpecMismatchError(
                        f"field {name!r}: cannot convert {type(steps[name]).__name__} to a "
                        f"tensor ({exc})"
                    ) from exc
            self._chunks.append(chunk)
            return
        self._seal_rows()
        for i, name in enumerate(self.names):
            buf = self._bufs[i]
            try:
                buf[pos : pos + n] = steps[name]
            except (TypeError, ValueError, OverflowError) as exc:
                raise SpecMismatchError(
                    f"field {name!r}: values do not fit shape [{n}, "
                    f"{', '.join(map(str, buf.shape[1:]))}] and dtype {buf.dtype} ({exc})"
                ) from exc

    def _seal_rows(self) -> None:
        """Turn the scalar tuples of appended rows into columns of the stage."""
        rows = self._rows
        if not rows:
            return
        start = self._rows_from
        end = start + len(rows)
        if self._scalar_idx:
            columns = list(zip(*rows, strict=True))
            for j, i in enumerate(self._scalar_idx):
                try:
                    self._bufs[i][start:end] = columns[j]
                except (TypeError, ValueError, OverflowError) as exc:
                    raise SpecMismatchError(
                        f"field {self.names[i]!r}: a staged value does not fit dtype "
                        f"{self._bufs[i].dtype} ({exc})"
                    ) from exc
        rows.clear()
        self._rows_from = end

    def _flush_locked(self, timeout: float | None, limit: int | None) -> None:
        staged = self._staged
        if staged == 0:
            return
        self._seal_rows()
        self._rows_from = staged
        k = staged if limit is None else max(0, min(limit, staged))
        if k == 0:
            return
        if self.staging:
            data: dict[str, Any] = {n: b[:k] for n, b in zip(self.names, self._bufs, strict=True)}
        else:
            if len(self._chunks) > 1:
                self._chunks = [{n: torch.cat([c[n] for c in self._chunks]) for n in self.names}]
            data = {n: v[:k] for n, v in self._chunks[0].items()}
        pri = np.asarray(self._pris[:k], dtype=np.float64) if self._with_priority else None
        streams = np.asarray(self._streams[:k], dtype=np.int64)
        ends = np.asarray(self._ends[:k], dtype=np.int64)
        self._write(data, streams, ends, pri, self._timeout if timeout is None else timeout)
        self._clear(k)

    def _write(
        self,
        data: dict[str, Any],
        streams: np.ndarray[Any, Any],
        ends: np.ndarray[Any, Any],
        priorities: np.ndarray[Any, Any] | None,
        timeout: float | None,
    ) -> None:
        self._extend(data, streams=streams, ends=ends, priorities=priorities, timeout=timeout)

    def _clear(self, k: int) -> None:
        """Forget the oldest ``k`` staged rows (moving any later ones to the front)."""
        rest = self._staged - k
        if rest > 0:
            if self.staging:
                for b in self._bufs:
                    b[:rest] = b[k : self._staged].copy()
            else:  # flushed: one chunk
                self._chunks = [{n: v[k:].clone() for n, v in self._chunks[0].items()}]
            del self._streams[:k]
            del self._ends[:k]
            del self._pris[:k]
            self._since = time.monotonic()
        else:
            self._chunks = []
            self._streams.clear()
            self._ends.clear()
            self._pris.clear()
            self._with_priority = None
            self._timeout = None
        self._rows.clear()
        self._staged = rest
        self._rows_from = rest
        for s, row in list(self._tails.items()):
            if row >= 0:
                self._tails[s] = row - k if row >= k else -1
