"""RayClient: the verbs of a Table on a sharded Ray service."""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from replaydb._validate import check_int
from replaydb.errors import ClosedError, InvalidArgumentError, RateLimiterTimeout
from replaydb.rate_limiters import rate_limiter_from_config
from replaydb.ray._checkpoint import _write_service_checkpoint
from replaydb.ray._client_parts import (
    _encode_keys,
    _end_code,
    _in_daemon_thread,
    _merge,
    _numpy_fields,
    _priority_column,
    _ShardSink,
)
from replaydb.ray._common import (
    _DOWN_FOR_S,
    _STATS_TIMEOUT_S,
    _WEIGHTS_MAX_AGE_S,
    NAMESPACE,
    _pick,
    _ray,
    _sample_from_wire,
    _ServiceMeta,
    _TableMeta,
    _wire,
)
from replaydb.ray._connect import _join
from replaydb.table import Sample, Table, TableInfo
from replaydb.writer import Writer

__all__ = ["RayClient"]

log = logging.getLogger("replaydb.ray")


class RayClient:
    """The verbs of :class:`~replaydb.table.Table` on a sharded Ray service.

    Thread-safe. Pickles by actor handle (buffered steps stay behind: call
    :meth:`flush` before handing a client over). Writes are staged per shard in a
    :class:`~replaydb.writer.Writer` of ``batch_size`` steps and sent in batches (a
    batch of ``batch_size`` or more goes straight to its shard), and a background
    thread sends steps staged longer than ``max_latency_s``; an error of a sent
    write (e.g. a rate-limiter timeout) is raised by the next call that sends or
    waits for that shard's writes.

    Example:
        >>> client = server.client()
        >>> client.extend({"x": torch.zeros(8, 2)}, streams=torch.arange(8) % 4)
        >>> client.sample(4).keys.shape
        torch.Size([4])
    """

    def __init__(
        self,
        meta: _ServiceMeta,
        *,
        batch_size: int = 64,
        max_latency_s: float = 0.05,
        prefetch: int = 0,
    ) -> None:
        batch_size = check_int("batch_size", batch_size, 1)
        self.prefetch = check_int("prefetch", prefetch, 0)
        self._queues: dict[tuple[str, int, float | None], deque[Future[Sample]]] = {}
        if not (isinstance(max_latency_s, int | float) and max_latency_s > 0):
            raise InvalidArgumentError(f"max_latency_s must be a number > 0, got {max_latency_s!r}")
        self._meta = meta
        self.batch_size = batch_size
        self.max_latency_s = float(max_latency_s)
        self._specs = {name: t.spec for name, t in meta.tables.items()}
        self._np_fields = {name: _numpy_fields(spec) for name, spec in self._specs.items()}
        self._lock = threading.RLock()
        self._writers: dict[tuple[str, int], Writer] = {}
        self._inflight: dict[tuple[str, int], Any] = {}
        self._flusher: threading.Thread | None = None
        self._down_until: dict[tuple[str, int], float] = {}
        self._gen = torch.Generator().manual_seed(int.from_bytes(os.urandom(7), "little"))
        self._gen_lock = threading.Lock()
        #: ``table -> (when queried, shard -> (size, priority total))``, refreshed by
        #: every sharded sample's replies and re-queried when older than 0.1 s.
        self._weights: dict[str, tuple[float, dict[int, tuple[int, float]]]] = {}

    @classmethod
    def connect(
        cls,
        name: str = "replaydb",
        *,
        address: str | None = None,
        batch_size: int = 64,
        max_latency_s: float = 0.05,
        prefetch: int = 0,
    ) -> RayClient:
        """Connect to a service published by ``replaydb serve`` or :meth:`RayServer.register`.

        Args:
            name: The service name.
            address: The cluster (``"host:port"`` or ``"auto"``); default: the Ray this
                process is connected to.
            batch_size: See :meth:`RayServer.client`.
            max_latency_s: See :meth:`RayServer.client`.
            prefetch: See :meth:`RayServer.client`.

        Returns:
            A client of that service.

        Raises:
            InvalidArgumentError: If no service of that name runs on the cluster.

        Example:
            >>> server.register("replaydb-docs")  # in the process hosting the tables
            >>> client = RayClient.connect("replaydb-docs")  # any driver on the cluster
            >>> client.tables()
            ['table']
        """
        ray = _ray()
        if not ray.is_initialized():
            _join(address or "auto")
        try:
            directory = ray.get_actor(name, namespace=NAMESPACE)
        except ValueError as exc:
            raise InvalidArgumentError(
                f"no replaydb service named {name!r} on this Ray cluster; start one with "
                "`replaydb serve CONFIG` (its output prints the name) or check the name"
            ) from exc
        meta = ray.get(directory.get.remote())["service"]
        return cls(meta, batch_size=batch_size, max_latency_s=max_latency_s, prefetch=prefetch)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_client, (self._meta, self.batch_size, self.max_latency_s, self.prefetch))

    # -- writes
    def insert(
        self,
        step: Mapping[str, Any],
        *,
        stream: int = 0,
        end: bool | int = False,
        priority: float | None = None,
        timeout: float | None = None,
        table: str | None = None,
    ) -> None:
        """Buffer one step for its stream's shard. See :meth:`extend`.

        Example:
            >>> client.insert({"x": [1.0, 2.0]}, stream=3, end=True)
        """
        t = _pick(self._meta, table)
        stream = check_int("stream", stream, 0)
        code = _end_code(end)
        if priority is not None:
            Table.validate_priorities(float(priority), 1)
        row = self._fast_row(t.name, step)
        if row is None:  # the general path: conversions, nested fields, precise errors
            data = self._specs[t.name].coerce_step(step)
            row = {k: _wire(v[0]) for k, v in data.items()}
        writer = self._writer((t.name, int(stream) % len(t.shards)))
        values = [row[n] for n in writer.names]
        values = [v[()] if v.ndim == 0 else v for v in values]  # scalars: immutable
        writer.append(
            values,
            stream=int(stream),
            end=code,
            priority=None if priority is None else float(priority),
            timeout=timeout,
        )
        self._after_add()

    def _fast_row(self, name: str, step: Mapping[str, Any]) -> dict[str, Any] | None:
        """``step`` as numpy values if every field already has its exact shape and dtype."""
        fields = self._np_fields[name]
        if fields is None or len(step) != len(fields):
            return None
        out = {}
        for k, (shape, dtype) in fields.items():
            v = step.get(k)
            if v is None:
                return None
            a = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
            if a.shape != shape or a.dtype != dtype:
                return None
            out[k] = a
        return out

    def _writer(self, key: tuple[str, int]) -> Writer:
        """The stage of one shard of a table (made on first use)."""
        writer = self._writers.get(key)
        if writer is None:
            with self._lock:
                writer = self._writers.get(key)
                if writer is None:
                    writer = self._writers[key] = Writer(
                        _ShardSink(self, key),
                        self._specs[key[0]],
                        max_steps=self.batch_size,
                    )
        return writer

    def _after_add(self) -> None:
        if self._flusher is None:
            with self._lock:
                if self._flusher is None:
                    self._start_flusher()

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
        """Buffer N steps; stream ``s`` goes to shard ``s % num_shards``.

        Args:
            steps: ``name -> [N, *shape]`` values for every field.
            streams: Stream of each step (int or ``[N]``, default 0).
            ends: Episode ends (bool or codes 0/1/2, scalar or ``[N]``).
            priorities: Priority of each item these steps complete (scalar or ``[N]``).
            timeout: Seconds a shard may wait on its rate limiter for this batch.
            table: The table (default: the only one).

        Raises:
            SpecMismatchError: If the steps do not match the spec (nothing is buffered).
            InvalidArgumentError: For bad streams, ends, priorities or table.
        """
        t = _pick(self._meta, table)
        data, n = self._specs[t.name].coerce_batch(steps)
        if n == 0:
            return
        s = torch.as_tensor(0 if streams is None else streams)
        if s.dtype.is_floating_point or s.dtype == torch.bool:
            raise InvalidArgumentError(f"streams must be integers, got dtype {s.dtype}")
        s = s.to(torch.int64).reshape(-1).expand(n).clone() if s.numel() == 1 else s.to(torch.int64)
        if s.shape != (n,):
            raise InvalidArgumentError(
                f"streams must be a scalar or have shape ({n},), got {tuple(s.shape)}"
            )
        if int(s.min()) < 0:
            raise InvalidArgumentError(f"streams must be >= 0, got {int(s.min())}")
        e = Table.validate_ends(ends, n)
        p = _priority_column(priorities, n)
        self._buffer(t, data, s, e, p, timeout)

    def _buffer(
        self,
        t: _TableMeta,
        data: dict[str, torch.Tensor],
        streams: torch.Tensor,
        ends: torch.Tensor,
        priorities: torch.Tensor | None,
        timeout: float | None,
    ) -> None:
        k = len(t.shards)
        dest = streams % k
        groups: list[tuple[int, torch.Tensor | None]]
        first = int(dest[0])
        if k == 1 or bool((dest == first).all()):
            groups = [(first, None)]
        else:
            groups = [(int(i), dest == i) for i in torch.unique(dest).tolist()]
        for shard, m in groups:
            cols = [streams, ends] + ([] if priorities is None else [priorities])
            if m is not None:
                cols = [c[m] for c in cols]
            part = data if m is None else {f: v[m] for f, v in data.items()}
            self._writer((t.name, shard)).extend(
                part,
                streams=cols[0],
                ends=cols[1],
                priorities=None if priorities is None else cols[2],
                timeout=timeout,
            )
        self._after_add()

    def _wait_inflight(self, key: tuple[str, int]) -> None:
        ref = self._inflight.pop(key, None)
        if ref is not None:
            _ray().get(ref)
            self._down_until.pop(key, None)  # it answered: sample from it again

    def _start_flusher(self) -> None:
        ref = weakref.ref(self)
        period = self.max_latency_s / 2

        def loop() -> None:
            while True:
                time.sleep(period)
                client = ref()
                if client is None:
                    return
                try:
                    client._flush_old()
                except Exception:  # raised again by the next call on that shard
                    log.debug("background flush failed", exc_info=True)
                del client

        self._flusher = threading.Thread(target=loop, name="replaydb-flusher", daemon=True)
        self._flusher.start()

    def _flush_old(self) -> None:
        if not _ray().is_initialized():
            return  # nothing to send to; see _sample_now
        for writer in list(self._writers.values()):
            writer.try_flush(older_than=self.max_latency_s, wait_lock=True, timeout=None)

    def flush(self) -> None:
        """Send every buffered step and wait until the shards applied them.

        Raises:
            RateLimiterTimeout: If a shard's limiter did not let a batch in within its timeout.

        Example:
            >>> client.insert({"x": [0.0, 0.0]}); client.flush()
        """
        for writer in list(self._writers.values()):
            writer.flush()
        with self._lock:
            for key in list(self._inflight):
                self._wait_inflight(key)

    def _flush_table(self, name: str) -> None:
        for key, writer in list(self._writers.items()):
            if key[0] == name:
                writer.flush()
        with self._lock:
            for key in [k for k in self._inflight if k[0] == name]:
                self._wait_inflight(key)

    # -- reads
    def sample(
        self,
        batch_size: int,
        *,
        beta: float | None = None,
        timeout: float | None = None,
        table: str | None = None,
    ) -> Sample:
        """Draw ``batch_size`` items from all shards with their true global probabilities.

        Args:
            batch_size: Number of items, > 0.
            beta: Importance-weight exponent for prioritized tables (default: the sampler's).
            timeout: Seconds to wait for data and the rate limiters (None: as long as it takes).
            table: The table (default: the only one).

        Returns:
            A :class:`~replaydb.table.Sample`; keys encode the shard (``key % num_shards``).

        Raises:
            InvalidArgumentError: If ``batch_size`` is not a positive int.
            RateLimiterTimeout: If the items or the limiters did not allow it in time.

        Example:
            >>> batch = client.sample(32); batch.probabilities.shape
            torch.Size([32])
        """
        b = check_int("batch_size", batch_size, 1)
        t = _pick(self._meta, table)
        self._flush_table(t.name)
        if self.prefetch == 0:
            return self._sample_now(t, b, beta, timeout)
        with self._lock:
            queue = self._queues.setdefault((t.name, b, beta), deque())
            while len(queue) < self.prefetch + 1:
                queue.append(_in_daemon_thread(self._sample_now, t, b, beta, timeout))
            oldest = queue.popleft()
        return oldest.result()

    def _sample_now(
        self, t: _TableMeta, b: int, beta: float | None, timeout: float | None
    ) -> Sample:
        if not _ray().is_initialized():
            # Any .remote() now would auto-start a new Ray and hang on the dead cluster
            # (a prefetch still queued when the driver shut Ray down, for one).
            raise ClosedError(
                "Ray was shut down, so this client can no longer reach its server; "
                "connect a new client to a running server"
            )
        if len(t.shards) == 1:
            return _sample_from_wire(_ray().get(t.shards[0].sample.remote(b, beta, timeout)))
        return self._sample_sharded(t, b, beta, timeout)

    def _sample_sharded(
        self, t: _TableMeta, b: int, beta: float | None, timeout: float | None
    ) -> Sample:
        ray = _ray()
        k = len(t.shards)
        deadline = None if timeout is None else time.monotonic() + timeout
        min_size = max(1, rate_limiter_from_config(t.config["rate_limiter"]).min_size_to_sample)
        parts: list[tuple[Sample, float]] = []
        sizes_seen = 0
        need = b
        while need > 0:
            now = time.monotonic()
            up = [i for i in range(k) if self._down_until.get((t.name, i), 0.0) <= now]
            stats = self._fresh_stats(t, up)
            sizes = {i: s[0] for i, s in stats.items()}
            weights = {i: s[1] for i, s in stats.items() if s[0] > 0 and s[1] > 0}
            total_size = sum(sizes.values())
            if total_size < min_size or not weights:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise RateLimiterTimeout(
                        f"sample on table {t.name!r} timed out after {timeout}s: the reachable "
                        f"shards hold {total_size} item(s) and the table needs {min_size} before "
                        "sampling"
                    )
                time.sleep(0.01 if remaining is None else min(0.01, remaining))
                continue
            ids = sorted(weights)
            w = torch.tensor([weights[i] for i in ids], dtype=torch.float64)
            share = w / w.sum()
            with self._gen_lock:
                draw = torch.multinomial(share, need, replacement=True, generator=self._gen)
            counts = torch.bincount(draw, minlength=len(ids)).tolist()
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            calls = {
                i: t.shards[i].sample.options(max_task_retries=0).remote(c, beta, remaining, True)
                for i, c in zip(ids, counts, strict=True)
                if c > 0
            }
            for (i, ref), frac in zip(
                calls.items(), [share[ids.index(i)] for i in calls], strict=True
            ):
                try:
                    wire = ray.get(ref)
                except ray.exceptions.RayActorError:
                    self._down_until[(t.name, i)] = time.monotonic() + _DOWN_FOR_S
                    self._weights.pop(t.name, None)
                    continue
                s = _sample_from_wire(wire)
                self._note_stats(t.name, i, wire["stats"])
                parts.append((_encode_keys(s, i, k), float(frac)))
                need -= len(s)
            sizes_seen = total_size
        return _merge(parts, sizes_seen, t, beta)

    def _fresh_stats(self, t: _TableMeta, up: list[int]) -> dict[int, tuple[int, float]]:
        """Shard sizes and priority totals: those the last sample returned if recent enough."""
        cached = self._weights.get(t.name)
        now = time.monotonic()
        if (
            cached is not None
            and now - cached[0] <= _WEIGHTS_MAX_AGE_S
            and set(up) <= set(cached[1])
        ):
            return {i: cached[1][i] for i in up}
        stats = self._stats(t, up)
        self._weights[t.name] = (now, dict(stats))
        return stats

    def _note_stats(self, name: str, shard: int, stats: tuple[int, float]) -> None:
        cached = self._weights.get(name)
        if cached is not None:
            cached[1][shard] = (int(stats[0]), float(stats[1]))

    def _stats(self, t: _TableMeta, up: list[int]) -> dict[int, tuple[int, float]]:
        ray = _ray()
        refs = {i: t.shards[i].stats.options(max_task_retries=0).remote() for i in up}
        out: dict[int, tuple[int, float]] = {}
        for i, ref in refs.items():
            try:
                out[i] = ray.get(ref, timeout=_STATS_TIMEOUT_S)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                self._down_until[(t.name, i)] = time.monotonic() + _DOWN_FOR_S
        return out

    def update_priorities(self, keys: Any, priorities: Any, *, table: str | None = None) -> int:
        """Set new priorities, routed to shards by key; stale keys are ignored.

        Args:
            keys: ``[K]`` keys from :attr:`Sample.keys`.
            priorities: ``[K]`` new priorities, finite and > 0.
            table: The table (default: the only one).

        Returns:
            How many keys named a live item.

        Raises:
            InvalidArgumentError: If shapes differ or a priority is not finite and > 0.

        Example:
            >>> client.update_priorities(batch.keys, torch.rand(32) + 0.1)
            32
        """
        t = _pick(self._meta, table)
        kk = torch.as_tensor(keys, dtype=torch.int64).reshape(-1)
        p = torch.as_tensor(priorities, dtype=torch.float64).reshape(-1)
        if kk.shape != p.shape:
            raise InvalidArgumentError(
                f"keys and priorities must have the same length, got {kk.numel()} keys and "
                f"{p.numel()} priorities"
            )
        Table.validate_priorities(p, p.numel())
        k = len(t.shards)
        ok = kk >= 0
        kk, p = kk[ok], p[ok]
        shard = kk % k
        refs = []
        for i in torch.unique(shard).tolist():
            m = shard == i
            refs.append(t.shards[int(i)].update_priorities.remote(kk[m] // k, p[m]))
        return int(sum(_ray().get(refs)))

    def info(self, *, table: str | None = None) -> TableInfo:
        """Counters summed over the table's shards (after this client's writes land).

        Example:
            >>> info = client.info(); 0 < info.size <= info.capacity
            True
        """
        t = _pick(self._meta, table)
        self._flush_table(t.name)
        infos: list[TableInfo] = _ray().get([s.info.remote() for s in t.shards])
        for i in range(len(t.shards)):
            self._down_until.pop((t.name, i), None)
        cfg = t.config
        return replace(
            infos[0],
            capacity=sum(i.capacity for i in infos),
            size=sum(i.size for i in infos),
            num_steps=sum(i.num_steps for i in infos),
            total_steps_written=sum(i.total_steps_written for i in infos),
            inserts=sum(i.inserts for i in infos),
            samples=sum(i.samples for i in infos),
            sampler=cfg["sampler"],
            rate_limiter=cfg["rate_limiter"],
            nbytes=sum(i.nbytes for i in infos),
        )

    def reset(self, *, table: str | None = None) -> None:
        """Remove every item and step from every shard of the table."""
        t = _pick(self._meta, table)
        self._flush_table(t.name)
        with self._lock:  # prefetched batches hold items that are about to be removed
            for key in [k for k in self._queues if k[0] == t.name]:
                del self._queues[key]
            self._weights.pop(t.name, None)
        _ray().get([s.reset.remote() for s in t.shards])

    def checkpoint(self) -> str:
        """Checkpoint the whole service (see :meth:`RayServer.checkpoint`)."""
        self.flush()
        return str(_write_service_checkpoint(self._meta))

    def tables(self) -> list[str]:
        """The names of the served tables."""
        return list(self._meta.tables)

    @property
    def num_shards(self) -> dict[str, int]:
        """``table name -> number of shards``."""
        return {n: len(t.shards) for n, t in self._meta.tables.items()}


def _rebuild_client(
    meta: _ServiceMeta, batch_size: int, max_latency_s: float, prefetch: int
) -> RayClient:
    return RayClient(meta, batch_size=batch_size, max_latency_s=max_latency_s, prefetch=prefetch)
