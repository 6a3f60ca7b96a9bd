"""RayServer: tables split over shard actors, checkpoints, restores."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import uuid
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from replaydb._validate import check_int, is_number
from replaydb.errors import CheckpointError, ClosedError, InvalidArgumentError
from replaydb.rate_limiters import RateLimiter, rate_limiter_from_config
from replaydb.ray._checkpoint import (
    _check_saved_config,
    _load_shard_file,
    _read_manifest,
    _write_service_checkpoint,
)
from replaydb.ray._common import (
    _SHARD_CPUS,
    NAMESPACE,
    _dump_steps,
    _pick,
    _ray,
    _ServiceMeta,
    _TableMeta,
)
from replaydb.ray._connect import _connect
from replaydb.ray._shard import _Directory, _shard_actor_class, _shard_placement
from replaydb.ray.client import RayClient
from replaydb.spec import Spec
from replaydb.table import Table

__all__ = ["RayServer"]

log = logging.getLogger("replaydb.ray")


def _shard_config(config: Mapping[str, Any], shard: int, k: int) -> dict[str, Any]:
    """The template's config for shard ``shard`` of ``k``: a share of capacity and limits."""
    cfg: dict[str, Any] = json.loads(json.dumps(dict(config)))
    cap = int(cfg["capacity"])
    cfg["capacity"] = cap // k + (1 if shard < cap % k else 0)
    if k == 1:
        return cfg
    sampler = dict(cfg["sampler"])
    if sampler.get("seed") is not None:
        sampler["seed"] = int(sampler["seed"]) + shard
    cfg["sampler"] = sampler
    lim = rate_limiter_from_config(cfg["rate_limiter"])
    cfg["rate_limiter"] = RateLimiter(
        lim.samples_per_insert, 1, lim.min_diff / k, lim.max_diff / k
    ).config()
    return cfg


def _check_template(table: Table, k: int) -> None:
    if k > 1 and table.sampler.deterministic:
        raise InvalidArgumentError(
            f"table {table.name!r}: sampler {table.sampler.config()['type']} picks items in a "
            f"fixed order, which {k} shards cannot keep globally; use num_shards=1 for "
            "queues, stacks and heaps, or a Uniform/Prioritized sampler"
        )
    if table.capacity // k < table.sequence_length:
        raise InvalidArgumentError(
            f"table {table.name!r}: capacity {table.capacity} split over num_shards={k} "
            f"leaves {table.capacity // k} rows per shard, fewer than sequence_length "
            f"{table.sequence_length}; use fewer shards or a larger capacity"
        )


class RayServer:
    """Tables served by shard actors on a Ray cluster.

    Args:
        tables: Templates: a Table, a sequence of them, or ``name -> Table``. Each is
            split over ``num_shards`` actors; its current contents are copied in.
        checkpoint_dir: Where :meth:`checkpoint` writes (``None``: no checkpoints, and a
            restarted shard comes back empty).
        keep: How many complete checkpoints to keep.
        num_shards: Shard actors per table (``K``).
        checkpoint_interval_s: Checkpoint every this many seconds from a background
            thread; bounds what a crashed shard loses (``None``: only on request).
        address: A Ray cluster to join (``"auto"`` or ``"host:port"``). ``None``: use the
            Ray this process is already connected to, else start a local one on
            127.0.0.1 with token authentication, shut down by :meth:`close`.

    Raises:
        InvalidArgumentError: For a bad argument or a table that cannot be sharded.

    Example:
        >>> server = RayServer(Table(Spec({"x": (2,)}), 100), num_shards=2)
        >>> client = server.client(); client.insert({"x": [1.0, 2.0]})
        >>> client.info().size, server.close()
        (1, None)
    """

    def __init__(
        self,
        tables: Table | Sequence[Table] | Mapping[str, Table],
        *,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        keep: int = 1,
        num_shards: int = 1,
        checkpoint_interval_s: float | None = None,
        address: str | None = None,
    ) -> None:
        templates = _as_table_dict(tables)
        num_shards = check_int("num_shards", num_shards, 1)
        keep = check_int("keep", keep, 1)
        if checkpoint_interval_s is not None and not (
            is_number(checkpoint_interval_s) and checkpoint_interval_s > 0
        ):
            raise InvalidArgumentError(
                f"checkpoint_interval_s must be None or a number > 0, got {checkpoint_interval_s!r}"
            )
        if checkpoint_interval_s is not None and checkpoint_dir is None:
            raise InvalidArgumentError(
                f"checkpoint_interval_s={checkpoint_interval_s} needs a checkpoint_dir to "
                "write to; pass checkpoint_dir='path'"
            )
        for t in templates.values():
            _check_template(t, num_shards)
        self._owns_ray = _connect(address)
        self._closed = False
        self._init_service(
            {name: t.config() for name, t in templates.items()},
            num_shards,
            checkpoint_dir,
            keep,
            initial_files={},
        )
        loaded = False
        for name, t in templates.items():
            if t.num_steps:
                self._load_parts(name, [_dump_steps(t)])
                loaded = True
        self._start_checkpointer(checkpoint_interval_s, first=loaded)

    # -- construction helpers
    def _init_service(
        self,
        configs: Mapping[str, dict[str, Any]],
        k: int,
        checkpoint_dir: str | os.PathLike[str] | None,
        keep: int,
        initial_files: Mapping[str, list[str]],
    ) -> None:
        cls = _shard_actor_class()
        server_id = uuid.uuid4().hex
        root = None if checkpoint_dir is None else str(Path(checkpoint_dir).resolve())
        metas: dict[str, _TableMeta] = {}
        placement = _shard_placement(k)
        for name, cfg in configs.items():
            cfg = dict(cfg, name=name)
            files = initial_files.get(name)
            shards = [
                cls.options(
                    num_cpus=_SHARD_CPUS,
                    max_restarts=-1,
                    max_task_retries=-1,
                    max_concurrency=16,
                    scheduling_strategy=placement[i],
                ).remote(
                    _shard_config(cfg, i, k),
                    i,
                    server_id,
                    root,
                    None if files is None else files[i],
                )
                for i in range(k)
            ]
            metas[name] = _TableMeta(name, cfg, shards)
        self._meta = _ServiceMeta(server_id, metas, root, keep)
        self.num_shards = k
        self._directory: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        pings = _ray().get([s.ping.remote() for t in metas.values() for s in t.shards])
        errors = [p["error"] for p in pings if p.get("error")]
        if errors:
            raise CheckpointError(
                "the checkpoint's shard files do not load: "
                + "; ".join(errors)
                + "; restore from another checkpoint"
            )

    def _load_parts(self, name: str, parts: list[dict[str, Any]]) -> None:
        """Route dumped steps to shards by ``stream % K`` and insert them."""
        ray = _ray()
        t = self._meta.tables[name]
        k = len(t.shards)
        per: list[list[dict[str, Any]]] = [[] for _ in range(k)]
        ins = sum(p["counts"][0] for p in parts)
        smp = sum(p["counts"][1] for p in parts)
        for part in parts:
            dest = part["streams"] % k
            for i in range(k):
                m = dest == i
                if bool(m.any()):
                    per[i].append(
                        {
                            "data": {f: v[m] for f, v in part["data"].items()},
                            "streams": part["streams"][m],
                            "ends": part["ends"][m],
                            "priorities": part["priorities"][m],
                        }
                    )
        refs = []
        for i, shard in enumerate(t.shards):
            merged = _concat_parts(per[i], t.spec)
            counts = (ins // k + (1 if i < ins % k else 0), smp // k + (1 if i < smp % k else 0))
            refs.append(shard.load_steps.remote(merged, counts))
        ray.get(refs)

    def _start_checkpointer(self, interval: float | None, *, first: bool) -> None:
        if first and self._meta.checkpoint_dir is not None:
            self.checkpoint()
        if interval is None:
            return
        ref = weakref.ref(self)
        stop = self._stop

        def loop() -> None:
            while not stop.wait(interval):
                server = ref()
                if server is None or server._closed:
                    return
                try:
                    server.checkpoint()
                except Exception:  # keep serving; the next tick tries again
                    log.exception("periodic checkpoint failed")
                del server

        self._thread = threading.Thread(target=loop, name="replaydb-checkpointer", daemon=True)
        self._thread.start()

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        *,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        keep: int = 1,
        num_shards: int | None = None,
        checkpoint_interval_s: float | None = None,
        address: str | None = None,
    ) -> RayServer:
        """Start a server from a checkpoint written by :meth:`checkpoint`.

        Args:
            path: A checkpoint directory, or a root holding them (the newest is taken).
            checkpoint_dir: Where new checkpoints go (default: the root ``path`` lives in).
            keep: How many complete checkpoints to keep.
            num_shards: Shards per table (default: as saved). The same count restores
                every shard bit-for-bit; another count re-inserts the steps in write order.
            checkpoint_interval_s: As for :class:`RayServer`.
            address: As for :class:`RayServer`.

        Returns:
            The running server.

        Raises:
            CheckpointError: If there is no complete Ray checkpoint at ``path``.

        Example:
            >>> first = RayServer(Table(Spec({"x": (2,)}), 100), checkpoint_dir="ckpts")
            >>> c = first.client(); c.extend({"x": torch.ones(10, 2)}); c.flush()
            >>> _ = first.checkpoint(); first.close()
            >>> again = RayServer.from_checkpoint("ckpts", num_shards=2)
            >>> again.client().info().size, again.close()
            (10, None)
        """
        ckpt, saved = _read_manifest(path)
        k = (
            num_shards
            if num_shards is not None
            else max((e.num_shards for e in saved.values()), default=1)
        )
        k = check_int("num_shards", k, 1)
        for name, e in saved.items():
            _check_saved_config(name, e.config, k)
        root = checkpoint_dir if checkpoint_dir is not None else ckpt.parent
        self = cls.__new__(cls)
        self._owns_ray = _connect(address)
        self._closed = False
        try:
            same = {n: [str(f) for f in e.files] for n, e in saved.items() if e.num_shards == k}
            self._init_service(
                {n: e.config for n, e in saved.items()}, k, root, keep, initial_files=same
            )
            moved = False
            for name, e in saved.items():
                if name in same:
                    continue
                self._load_parts(name, [_dump_steps(_load_shard_file(f)) for f in e.files])
                moved = True
            self._start_checkpointer(checkpoint_interval_s, first=moved)
        except BaseException:
            if hasattr(self, "_meta"):
                self.close()  # stops the shards, and Ray if this call started it
            elif self._owns_ray:
                _ray().shutdown()
            raise
        return self

    # -- verbs
    def client(
        self, *, batch_size: int = 64, max_latency_s: float = 0.05, prefetch: int = 0
    ) -> RayClient:
        """A client bound to this server (picklable: pass it to Ray tasks and actors).

        Args:
            batch_size: Steps a client buffers per shard before sending them.
            max_latency_s: Longest a buffered step waits before it is sent.
            prefetch: Sample requests kept in flight per ``(table, batch_size, beta)``:
                each :meth:`RayClient.sample` returns the oldest and issues a new one,
                so a learner's compute overlaps the transfer. Prefetched items are
                drawn (and counted by the rate limiter) up to ``prefetch`` calls early.

        Returns:
            A :class:`RayClient`.

        Example:
            >>> client = server.client(batch_size=256)
        """
        self._check_open()
        return RayClient(
            self._meta, batch_size=batch_size, max_latency_s=max_latency_s, prefetch=prefetch
        )

    def checkpoint(self) -> str:
        """Checkpoint every shard of every table into one new directory.

        Steps still buffered in a client are not included (``client.checkpoint()``
        flushes that client first).

        Returns:
            The path of the new ``ckpt-<timestamp>`` directory.

        Raises:
            InvalidArgumentError: If the server has no checkpoint directory.

        Example:
            >>> saving = RayServer(table, checkpoint_dir="ckpts"); saving.checkpoint()
            '.../ckpts/ckpt-...'
            >>> saving.close()
        """
        self._check_open()
        with self._lock:
            return str(_write_service_checkpoint(self._meta))

    def tables(self) -> list[str]:
        """The names of the served tables."""
        return list(self._meta.tables)

    def shard_handles(self, table: str | None = None) -> list[Any]:
        """The Ray actor handles of a table's shards (for monitoring and fault drills)."""
        return list(_pick(self._meta, table).shards)

    def register(self, name: str) -> None:
        """Publish this server under ``name`` so other drivers can :meth:`RayClient.connect`.

        Args:
            name: The service name (a named Ray actor in namespace ``"replaydb"``).

        Raises:
            ClosedError: If the server is closed.

        Example:
            >>> server.register("replay"); RayClient.connect("replay").tables()
            ['table']
        """
        self._check_open()
        ray = _ray()
        meta = {"server_id": self._meta.server_id, "service": self._meta}
        self._directory = (
            ray.remote(_Directory).options(name=name, namespace=NAMESPACE, num_cpus=0).remote(meta)
        )
        ray.get(self._directory.get.remote())

    def close(self) -> None:
        """Stop the checkpoint thread, the shard actors and (if this server started it) Ray."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        ray = _ray()
        if not ray.is_initialized():
            return
        for t in self._meta.tables.values():
            for s in t.shards:
                with contextlib.suppress(Exception):
                    ray.kill(s, no_restart=True)
        if self._directory is not None:
            with contextlib.suppress(Exception):
                ray.kill(self._directory, no_restart=True)
        if self._owns_ray:
            ray.shutdown()

    def __enter__(self) -> RayServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("this RayServer is closed; start a new one")


def _concat_parts(parts: list[dict[str, Any]], spec: Spec) -> dict[str, Any]:
    if not parts:
        return {
            "data": {n: torch.zeros((0, *f.shape), dtype=f.dtype) for n, f in spec.items()},
            "streams": torch.zeros(0, dtype=torch.int64),
            "ends": torch.zeros(0, dtype=torch.int64),
            "priorities": torch.zeros(0, dtype=torch.float64),
        }
    if len(parts) == 1:
        return parts[0]
    return {
        "data": {n: torch.cat([p["data"][n] for p in parts]) for n in parts[0]["data"]},
        "streams": torch.cat([p["streams"] for p in parts]),
        "ends": torch.cat([p["ends"] for p in parts]),
        "priorities": torch.cat([p["priorities"] for p in parts]),
    }


def _as_table_dict(tables: Any) -> dict[str, Table]:
    if isinstance(tables, Table):
        return {tables.name: tables}
    if isinstance(tables, Mapping):
        out = dict(tables)
    elif isinstance(tables, Sequence) and not isinstance(tables, str | bytes):
        out = {}
        for t in tables:
            if isinstance(t, Table) and t.name in out:
                raise InvalidArgumentError(
                    f"two tables are named {t.name!r}; give each table a unique name"
                )
            out[getattr(t, "name", str(len(out)))] = t
    else:
        raise InvalidArgumentError(
            f"tables must be a Table, a sequence of Tables or a name -> Table mapping, "
            f"got {type(tables).__name__}"
        )
    if not out:
        raise InvalidArgumentError("tables is empty; give at least one Table")
    for name, t in out.items():
        if not isinstance(t, Table):
            raise InvalidArgumentError(f"tables[{name!r}] must be a Table, got {type(t).__name__}")
    return out
