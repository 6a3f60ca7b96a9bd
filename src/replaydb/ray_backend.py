"""The replay service on Ray: tables split over shard actors, one set of verbs.

This is the only module that imports Ray (lazily: a missing Ray raises
:class:`~replaydb.errors.MissingDependencyError` naming ``pip install 'replaydb[ray]'``).
Ray does membership, placement, transport and restarts; this module only decides
what goes where.

Layout
------
A :class:`RayServer` splits every table over ``K = num_shards`` *shard actors*, each
hosting an ordinary :class:`~replaydb.table.Table` built from the template's
``config()`` with ``capacity / K`` rows (the remainder spread over the first shards),
placed round-robin over the alive nodes (soft node affinity, so a full or lost node
sends a shard elsewhere).

* **Writes.** Stream ``s`` always goes to shard ``s % K``, so an episode is never
  split and sequence windows stay valid. A :class:`RayClient` batches steps per
  shard (``batch_size`` steps or ``max_latency_s`` seconds, whichever comes first) and
  keeps one batch in flight per shard, sending the next only when the previous one
  was applied: the steps of a stream arrive in order even across actor restarts.
* **Keys.** A sampled item's key is ``local_key * K + shard``: ``shard = key % K``,
  ``local_key = key // K``. :meth:`RayClient.update_priorities` routes by it. Keys
  do not survive a restore onto a different shard count.
* **Global sampling.** For a batch of ``B`` the client asks every shard for its size
  ``n_i`` (uniform) or its priority total ``T_i = sum (p + eps)^alpha`` (prioritized,
  read in O(1) from the root of its sum tree by :meth:`Table.priority_total`), draws
  the per-shard counts from ``Multinomial(B, w_i / sum w)`` and has each shard draw its
  share with its own sampler. An item's probability is then
  ``P = (w_i / sum w) * p_local``, which is ``1 / N`` for uniform and
  ``(p + eps)^alpha / sum_i T_i`` for prioritized: the true global probability. Importance
  weights are ``(N * P) ** -beta`` normalized by the batch maximum (Schaul et al. 2015,
  arXiv 1511.05952). The weights ``w_i`` come back with every shard's reply and are
  reused for 0.1 s, so a busy learner pays one round trip per batch; ``P`` is always
  computed from the weights actually used, so it stays the true probability of the
  draw even when they are slightly stale. With one shard there is nothing to split.
* **Rate limiters.** Each shard gets the template's limiter with ``min_diff`` and
  ``max_diff`` divided by ``K``. ``diff = inserts * samples_per_insert - samples`` is a
  sum over shards, so the global ``diff`` stays inside the template's
  ``[min_diff, max_diff]`` exactly; the approximation is that a shard whose share is
  used up blocks while another still has slack (the effective error buffer can
  shrink to ``1/K`` of the global one when streams are spread unevenly).
  ``min_size_to_sample`` is checked globally by the client.
* **Checkpoints** (Reverb, arXiv 2102.04736, section 3.5 for the idea of a whole-service
  checkpoint): every shard writes its own ``<table>.shard-<i>.safetensors`` into one
  temporary directory, the driver adds ``manifest.json`` (listing shards) and the
  ``COMPLETE`` marker and renames it to ``ckpt-<timestamp>``. Every write lands in one
  shard, so per-shard snapshots form a consistent cut. Restoring onto the same ``K``
  is bit-for-bit; onto another ``K`` the steps are re-inserted in write order
  (priorities kept, ``times_sampled`` reset, limiter counters summed and split).
* **Faults.** Shard actors run with ``max_restarts=-1``; a restarted shard reloads its
  file from the newest checkpoint of this server (so it loses the steps written to
  it since, bounded by ``checkpoint_interval_s``). Writes retry transparently
  (``max_task_retries=-1``); a sample skips a shard that is down and draws its share
  from the others.
* **Security.** A Ray started here has token authentication on (Ray >= 2.59 does it
  for local clusters; on 2.52-2.58 this module sets ``RAY_AUTH_MODE=token``), uses
  127.0.0.1 as its node address and no dashboard. Steps travel as numpy arrays
  through Ray's object transport; checkpoints are safetensors + JSON.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from replaydb.checkpoint import (
    CHECKPOINT_FORMAT,
    commit_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    load_table,
    save_table,
)
from replaydb.errors import (
    CheckpointError,
    ClosedError,
    InvalidArgumentError,
    RateLimiterTimeout,
    require,
)
from replaydb.rate_limiters import RateLimiter, rate_limiter_from_config
from replaydb.samplers import sampler_from_config
from replaydb.spec import Spec
from replaydb.table import LiveSteps, Sample, Table, TableInfo

__all__ = ["RayClient", "RayServer", "load_serve_config", "serve_command"]

log = logging.getLogger("replaydb.ray")

NAMESPACE = "replaydb"
_PRIORITIZED = "Prioritized"
#: A shard that does not answer a size query within this long is skipped for
#: ``_DOWN_FOR_S`` seconds (it is restarting, or its node is gone).
_STATS_TIMEOUT_S = 2.0
#: CPU a shard actor reserves: a sliver, so shards fit beside the work.
_SHARD_CPUS = 0.01
_DOWN_FOR_S = 1.0
#: Shard weights (sizes or priority totals) from the replies of the previous sharded
#: sample are reused for this long; older ones cost one extra round trip.
_WEIGHTS_MAX_AGE_S = 0.1
_BETA_KEYS = ("beta", "importance_sampling_exponent")


def _shard_placement(k: int) -> list[Any]:
    """Ray scheduling strategies for shards ``0..k-1``: round-robin over the alive nodes.

    Shard ``i`` asks for node ``i % nodes`` with *soft* node affinity (it runs
    elsewhere if that node is full or gone, and a restart may move it). Ray's
    ``SPREAD`` alone is best effort for actors created at once: in a test run it put
    both shards of a table on one node of an idle two-node cluster.
    """
    ray = _ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))
    if not nodes:
        return ["SPREAD"] * k
    return [NodeAffinitySchedulingStrategy(nodes[i % len(nodes)], soft=True) for i in range(k)]


def _ray() -> Any:
    return require("ray", "ray")


# ------------------------------------------------------------------ shard actor
def _dump_steps(table: Table) -> dict[str, Any]:
    """The live steps of ``table`` in write order (see :meth:`Table.live_steps`), as a part."""
    steps = table.live_steps()
    return {
        "data": steps.data,
        "streams": steps.streams,
        "ends": steps.ends,
        "priorities": steps.priorities,
        "counts": (steps.inserts, steps.samples),
    }


def _wire(t: torch.Tensor) -> Any:
    """A tensor as a numpy array, which Ray ships without pickling its bytes."""
    return t if t.dtype == torch.bfloat16 else t.detach().cpu().numpy()


def _torch(a: Any) -> torch.Tensor:
    if isinstance(a, np.ndarray):
        return torch.from_numpy(a if a.flags.writeable else a.copy())
    return torch.as_tensor(a)


def _sample_to_wire(s: Sample) -> dict[str, Any]:
    return {
        "data": {k: _wire(v) for k, v in s.data.items()},
        "keys": _wire(s.keys),
        "probabilities": _wire(s.probabilities),
        "weights": _wire(s.weights),
        "priorities": _wire(s.priorities),
        "times_sampled": _wire(s.times_sampled),
        "table_size": s.table_size,
        "mask": None if s.mask is None else _wire(s.mask),
    }


def _sample_from_wire(d: Mapping[str, Any]) -> Sample:
    return Sample(
        data={k: _torch(v) for k, v in d["data"].items()},
        keys=_torch(d["keys"]),
        probabilities=_torch(d["probabilities"]),
        weights=_torch(d["weights"]),
        priorities=_torch(d["priorities"]),
        times_sampled=_torch(d["times_sampled"]),
        table_size=int(d["table_size"]),
        mask=None if d["mask"] is None else _torch(d["mask"]),
    )


def _shard_file(name: str, shard: int) -> str:
    safe = "".join(c if c.isalnum() or c in "_.-" else "_" for c in name) or "table"
    return f"{safe}.shard-{shard}.safetensors"


class _Shard:
    """One shard of one table, hosted in a Ray actor (threaded: blocked calls wait apart)."""

    def __init__(
        self,
        config: dict[str, Any],
        shard: int,
        server_id: str,
        checkpoint_root: str | None,
        initial_file: str | None,
    ) -> None:
        self.shard = shard
        self.restored_from: str | None = None
        #: Why the shard's file did not load (the driver raises it as a CheckpointError).
        self.error: str | None = None
        path = _own_latest(checkpoint_root, server_id, str(config["name"]), shard)
        path = path or initial_file
        self.table: Table
        loaded = None if path is None else self._load(path, config)
        if loaded is not None:
            self.table = loaded
            self.restored_from = path
        else:
            self.table = Table.from_config(config)
        self.table.shared = True

    def _load(self, path: str, config: Mapping[str, Any]) -> Table | None:
        """The table in ``path``, or None (with :attr:`error` set) if it cannot be used.

        Loading in the actor keeps a large file off the driver; an error is kept
        rather than raised, so a bad file gives the driver a CheckpointError instead
        of a dead actor (and a restart with a damaged file comes back empty).
        """
        try:
            table: Table = load_table(path)
            got = table.config()
            for key in ("spec", "capacity", "sequence_length"):
                if got[key] != config[key]:
                    raise CheckpointError(
                        f"{path!r}: {key} {got[key]!r} does not match the manifest's "
                        f"{config[key]!r}; the file belongs to another table"
                    )
        except Exception as exc:  # a damaged file must not kill the actor
            self.error = str(exc) if isinstance(exc, CheckpointError) else f"{path!r}: {exc!r}"
            log.error("shard %d could not load %s: %s", self.shard, path, self.error)
            return None
        return table

    def extend(
        self,
        data: dict[str, Any],
        streams: Any,
        ends: Any,
        priorities: Any,
        timeout: float | None,
    ) -> int:
        self.table.extend(
            {k: _torch(v) for k, v in data.items()},
            streams=_torch(streams),
            ends=_torch(ends),
            priorities=None if priorities is None else _torch(priorities),
            timeout=timeout,
        )
        return len(self.table)

    def stats(self) -> tuple[int, float]:
        """``(items, priority total)``: the shard's weight in a global sample."""
        t = self.table
        with t.locked():
            return len(t), t.priority_total()

    def sample(
        self,
        n: int,
        beta: float | None,
        timeout: float | None,
        with_stats: bool = False,
    ) -> dict[str, Any]:
        out = _sample_to_wire(self.table.sample(n, beta=beta, timeout=timeout))
        if with_stats:
            out["stats"] = self.stats()
        return out

    def update_priorities(self, keys: torch.Tensor, priorities: torch.Tensor) -> int:
        return self.table.update_priorities(keys, priorities)

    def info(self) -> TableInfo:
        return self.table.info()

    def reset(self) -> None:
        self.table.reset()

    def save(self, path: str) -> dict[str, Any]:
        with self.table.locked():
            save_table(self.table, path)
            return {
                "file": Path(path).name,
                "size": len(self.table),
                "steps": self.table.num_steps,
            }

    def dump(self) -> dict[str, Any]:
        return _dump_steps(self.table)

    def load_steps(self, part: dict[str, Any], counts: tuple[int, int]) -> int:
        """Insert steps bypassing the limiter, then set the limiter's counters."""
        return self.table.restore_steps(
            LiveSteps(
                data=part["data"],
                streams=part["streams"],
                ends=part["ends"],
                priorities=part["priorities"],
                inserts=int(counts[0]),
                samples=int(counts[1]),
            )
        )

    def ping(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "node": _ray().get_runtime_context().get_node_id(),
            "restored_from": self.restored_from,
            "size": len(self.table),
            "error": self.error,
        }


def _own_latest(root: str | None, server_id: str, name: str, shard: int) -> str | None:
    """The shard's file in the newest complete checkpoint this server wrote, if any."""
    if root is None:
        return None
    for ckpt in reversed(list_checkpoints(root)):
        try:
            manifest = _read_json(ckpt / "manifest.json")
        except CheckpointError:
            continue
        if isinstance(manifest, dict) and manifest.get("server_id") == server_id:
            try:
                return str(_inside(ckpt, _shard_file(name, shard)))
            except CheckpointError:
                return None
    return None


#: The largest manifest read (a manifest lists tables and shards: kilobytes).
_MAX_MANIFEST_BYTES = 16 << 20


def _read_json(path: Path) -> Any:
    """Parse a small JSON file; anything unreadable is a CheckpointError."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(_MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise CheckpointError(f"{str(path)!r} is unreadable ({exc})") from exc
    if len(raw) > _MAX_MANIFEST_BYTES:
        raise CheckpointError(
            f"{str(path)!r} is larger than {_MAX_MANIFEST_BYTES} bytes; it is not a manifest"
        )
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{str(path)!r} is not valid UTF-8 JSON ({exc})") from exc


def _inside(directory: Path, name: Any) -> Path:
    """``directory / name`` as a regular file that resolves inside ``directory``.

    Rejects absolute paths, ``..`` and symlinks that lead out of the checkpoint.
    (A local check; checkpoint.py's shared path helper can replace it.)
    """
    if not isinstance(name, str) or not name:
        raise CheckpointError(
            f"{str(directory)!r}: a shard 'file' must be a file name, got {name!r}"
        )
    base = directory.resolve()
    target = (directory / name).resolve()
    if not target.is_relative_to(base):
        raise CheckpointError(
            f"{str(directory)!r}: shard file {name!r} resolves to {str(target)!r}, outside the "
            "checkpoint directory; a checkpoint only reads its own files"
        )
    if not target.is_file():
        raise CheckpointError(f"{str(directory)!r}: shard file {name!r} is missing")
    return target


_ACTOR_CLASS: Any = None


def _shard_actor_class() -> Any:
    global _ACTOR_CLASS
    if _ACTOR_CLASS is None:
        _ACTOR_CLASS = _ray().remote(_Shard)
    return _ACTOR_CLASS


class _Directory:
    """A named actor that tells a client where a served table's shards are."""

    def __init__(self, meta: dict[str, Any]) -> None:
        self.meta = meta

    def get(self) -> dict[str, Any]:
        return self.meta


# ---------------------------------------------------------------- shard configs
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


def _exponent(cfg: Mapping[str, Any], keys: Sequence[str]) -> float | None:
    for key in keys:
        if cfg.get(key) is not None:
            return float(cfg[key])
    return None


@dataclass
class _TableMeta:
    """What a client needs to know about one served table (picklable)."""

    name: str
    config: dict[str, Any]
    shards: list[Any]

    @property
    def spec(self) -> Spec:
        return Spec.from_json(self.config["spec"])

    @property
    def prioritized(self) -> bool:
        return bool(self.config["sampler"].get("type") == _PRIORITIZED)


@dataclass
class _ServiceMeta:
    server_id: str
    tables: dict[str, _TableMeta]
    checkpoint_dir: str | None
    keep: int
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ checkpoints
def _write_service_checkpoint(meta: _ServiceMeta) -> Path:
    ray = _ray()
    if meta.checkpoint_dir is None:
        raise InvalidArgumentError(
            "checkpoint() needs a checkpoint directory, got checkpoint_dir=None; "
            "start the server with RayServer(..., checkpoint_dir='path')"
        )

    def fill(tmp: Path) -> dict[str, Any]:
        refs = {
            name: [s.save.remote(str(tmp / _shard_file(name, i))) for i, s in enumerate(t.shards)]
            for name, t in meta.tables.items()
        }
        entries: dict[str, Any] = {}
        for name, t in meta.tables.items():
            shards = ray.get(refs[name])
            entries[name] = {
                "config": t.config,
                "num_shards": len(t.shards),
                "size": sum(s["size"] for s in shards),
                "steps": sum(s["steps"] for s in shards),
                "shards": shards,
            }
        return {
            "backend": "ray",
            "server_id": meta.server_id,
            "tables": entries,
            "extra": meta.extra,
        }

    return commit_checkpoint(meta.checkpoint_dir, fill, keep=meta.keep)


@dataclass
class _SavedTable:
    """One table of a Ray checkpoint's manifest, checked."""

    config: dict[str, Any]
    num_shards: int
    files: list[Path]


def _read_manifest(path: str | os.PathLike[str]) -> tuple[Path, dict[str, _SavedTable]]:
    """The checkpoint directory and its tables; anything malformed is a CheckpointError."""
    p = Path(path)
    if not (p / "COMPLETE").is_file():
        latest = latest_checkpoint(p)
        if latest is None:
            raise CheckpointError(
                f"no complete replaydb checkpoint at {str(p)!r}; write one with "
                "RayServer.checkpoint() or check the path"
            )
        p = latest
    manifest = _read_json(p / "manifest.json")
    if not isinstance(manifest, dict):
        raise CheckpointError(
            f"{str(p)!r}: manifest.json must hold a JSON object, got {type(manifest).__name__}"
        )
    if manifest.get("format") != CHECKPOINT_FORMAT or manifest.get("backend") != "ray":
        raise CheckpointError(
            f"{str(p)!r} is not a checkpoint of a Ray-backed server (manifest backend "
            f"{manifest.get('backend')!r}); load local checkpoints with read_checkpoint()"
        )
    tables = manifest.get("tables")
    if not isinstance(tables, dict) or not tables:
        raise CheckpointError(
            f"{str(p)!r}: the manifest's 'tables' must be a non-empty object, got {tables!r:.80}"
        )
    out: dict[str, _SavedTable] = {}
    for name, entry in tables.items():
        where = f"{str(p)!r}: tables.{name}"
        if not isinstance(entry, dict):
            raise CheckpointError(f"{where} must be an object, got {type(entry).__name__}")
        config, k, shards = entry.get("config"), entry.get("num_shards"), entry.get("shards")
        if not isinstance(config, dict):
            raise CheckpointError(f"{where}.config must be an object, got {type(config).__name__}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise CheckpointError(f"{where}.num_shards must be an int >= 1, got {k!r:.80}")
        if not isinstance(shards, list) or len(shards) != k:
            raise CheckpointError(f"{where}.shards must be a list of {k} shard entries")
        files = []
        for i, shard in enumerate(shards):
            if not isinstance(shard, dict):
                raise CheckpointError(f"{where}.shards[{i}] must be an object")
            files.append(_inside(p, shard.get("file")))
        out[name] = _SavedTable(config, k, files)
    return p, out


def _check_saved_config(name: str, config: Mapping[str, Any], k: int) -> None:
    """Check a saved table config without allocating the table; CheckpointError if bad."""
    try:
        Spec.from_json(config["spec"])
        sampler = sampler_from_config(config["sampler"])
        rate_limiter_from_config(config["rate_limiter"])
        capacity, seq = config["capacity"], config["sequence_length"]
    except Exception as exc:
        raise CheckpointError(f"table {name!r}: the saved config is invalid ({exc!r})") from exc
    for key, value in (("capacity", capacity), ("sequence_length", seq)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CheckpointError(
                f"table {name!r}: the saved {key} must be an int >= 1, got {value!r:.80}"
            )
    if k > 1 and sampler.deterministic:
        raise InvalidArgumentError(
            f"table {name!r}: sampler {config['sampler'].get('type')} picks items in a fixed "
            f"order, which {k} shards cannot keep globally; restore it with num_shards=1"
        )
    if capacity // k < seq:
        raise InvalidArgumentError(
            f"table {name!r}: capacity {capacity} split over num_shards={k} leaves "
            f"{capacity // k} rows per shard, fewer than sequence_length {seq}; use fewer shards"
        )


def _load_shard_file(path: Path) -> Table:
    """A saved shard, loaded in the driver (for a restore onto another shard count)."""
    try:
        table: Table = load_table(path)
    except CheckpointError:
        raise
    except Exception as exc:  # any other failure of a damaged file
        raise CheckpointError(f"{str(path)!r} does not load ({exc!r})") from exc
    return table


# ----------------------------------------------------------------------- server
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
        _check_int("num_shards", num_shards, 1)
        _check_int("keep", keep, 1)
        if checkpoint_interval_s is not None and not (
            isinstance(checkpoint_interval_s, int | float) and checkpoint_interval_s > 0
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
            >>> server = RayServer.from_checkpoint("ckpts", num_shards=4)
            >>> server.client().info().size
            1000
        """
        ckpt, saved = _read_manifest(path)
        k = (
            num_shards
            if num_shards is not None
            else max((e.num_shards for e in saved.values()), default=1)
        )
        _check_int("num_shards", k, 1)
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
            >>> RayServer(table, checkpoint_dir="ckpts").checkpoint()
            '/abs/ckpts/ckpt-01795315632457654477'
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


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidArgumentError(f"{name} must be an int >= {low}, got {value!r}")


def _connect(address: str | None) -> bool:
    """Connect to Ray; return whether this call started it (and so must shut it down)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    if address is not None:
        _join(address)
        return False
    if _token_auth_supported(ray.__version__) and not _token_auth_default(ray.__version__):
        # Ray 2.52-2.58 has token auth but leaves it off; 2.59+ turns it on for local
        # clusters itself (and setting it here would fight Ray's per-process cache).
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    with _loopback_only(ray):
        ray.init(
            namespace=NAMESPACE,
            include_dashboard=False,
            _node_ip_address=_LOOPBACK,
            log_to_driver=False,
            configure_logging=False,
        )
    gcs = str(ray.get_runtime_context().gcs_address)
    if not gcs.startswith(_LOOPBACK + ":"):
        log.warning(
            "the local Ray started by replaydb listens on %s, not loopback only; "
            "firewall its ports (see docs/ray.md, 'Security')",
            gcs,
        )
    return True


_LOOPBACK = "127.0.0.1"

#: Environment of the Ray processes a local start spawns (GCS, raylet, agents,
#: workers). ``RAY_enable_metrics_collection=false`` turns the raylet's and the
#: dashboard agent's Prometheus exporters off. ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
#: tells Ray this is a single-machine cluster, so a node address of 127.0.0.1 stays
#: 127.0.0.1 (Ray >= 2.5x maps it to the host's address otherwise) and every gRPC
#: server binds loopback only.
_LOCAL_ENV = {"RAY_enable_metrics_collection": "false", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


#: How long a joining process waits for the cluster's GCS to answer the token check.
_CONNECT_TIMEOUT_S = 5.0


def _join(address: str) -> None:
    """Connect this process to a running Ray cluster; fail in seconds if it would hang.

    Before ``ray.init`` (which retries a refused or unreachable cluster for a long
    time), one GCS call with a deadline of :data:`_CONNECT_TIMEOUT_S`, carrying the
    token Ray itself would send, tells a wrong address or a missing or wrong token
    apart with a clear error. A loopback address is joined as a single-machine
    cluster (see :func:`_single_machine`), since a loopback-only cluster is not
    reachable at the host's address.
    """
    ray = _ray()
    target = address
    if address == "auto":
        target = os.environ.get("RAY_ADDRESS") or _latest_local_address(ray) or ""
        if not target:
            raise InvalidArgumentError(
                "address='auto' found no running Ray cluster on this machine; pass the "
                "address printed by `replaydb serve` (address='host:port')"
            )
    host = target.rsplit(":", 1)[0].strip("[]")
    loopback = host in ("127.0.0.1", "localhost", "::1")
    _check_gcs(target, _token_to_send(auto=address == "auto"))
    with _single_machine(ray) if loopback else contextlib.nullcontext():
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)


def _latest_local_address(ray: Any) -> str | None:
    """The address of the newest cluster started on this machine, as Ray's "auto" finds it."""
    find = getattr(getattr(ray, "_private", None), "services", None)
    find = getattr(find, "get_ray_address_from_environment", None)
    if find is None:
        return None
    try:
        found = find("auto", None)
    except Exception:  # no cluster, or several
        return None
    return None if found is None else str(found)


def _token_to_send(*, auto: bool) -> str | None:
    """The token Ray will present: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token.

    Ray sends it when ``RAY_AUTH_MODE=token``, and with the mode unset only when
    it found a local cluster itself (``address="auto"``) and a token exists.
    """
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None and mode.lower() != "token":
        return None
    token = os.environ.get("RAY_AUTH_TOKEN")
    if not token:
        path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
        with contextlib.suppress(OSError):
            token = path.read_text().strip()
    if mode is None and not (auto and token):
        return None
    return token or ""


def _check_gcs(address: str, token: str | None) -> None:
    """One GCS call with a deadline: raise at once for a refused token or no answer."""
    import importlib

    try:
        grpc: Any = importlib.import_module("grpc")
        gcs_service_pb2: Any = importlib.import_module("ray.core.generated.gcs_service_pb2")
        gcs_service_pb2_grpc: Any = importlib.import_module(
            "ray.core.generated.gcs_service_pb2_grpc"
        )
    except ImportError:  # another Ray layout: let ray.init report what it finds
        return
    metadata = [] if token is None else [("authorization", f"Bearer {token}")]
    with grpc.insecure_channel(address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(
                gcs_service_pb2.GetClusterIdRequest(),
                timeout=_CONNECT_TIMEOUT_S,
                metadata=metadata,
            )
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNAUTHENTICATED:
                if token is None:
                    raise InvalidArgumentError(
                        f"the Ray cluster at address={address!r} requires token "
                        "authentication and this process sends no token; set "
                        "RAY_AUTH_MODE=token in its environment (the token is read from "
                        "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)"
                    ) from None
                raise InvalidArgumentError(
                    f"the Ray cluster at address={address!r} refused this process's "
                    "authentication token; use the cluster's token (RAY_AUTH_TOKEN, "
                    "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token as on the head node)"
                ) from None
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise InvalidArgumentError(
                    f"no Ray cluster answered at address={address!r} within "
                    f"{_CONNECT_TIMEOUT_S:g}s ({code.name}); check the address and that "
                    "the cluster runs (`replaydb serve` prints its address)"
                ) from None
            # Any other answer means a GCS is there: let ray.init take it from here.


@contextlib.contextmanager
def _single_machine(ray: Any) -> Iterator[None]:
    """Keep 127.0.0.1 as 127.0.0.1 while ``ray.init`` runs.

    Ray maps a loopback node or cluster address to the host's address unless it
    runs as a single-machine cluster, a switch it reads once, at import, from
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` into
    ``ray._private.ray_constants.ENABLE_RAY_CLUSTER``: this flips that value for
    the duration of the call (the one private Ray name replaydb touches).
    """
    consts: Any = getattr(getattr(ray, "_private", None), "ray_constants", None)
    had = getattr(consts, "ENABLE_RAY_CLUSTER", None)
    if had is not None:
        consts.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if had is not None:
            consts.ENABLE_RAY_CLUSTER = had


@contextlib.contextmanager
def _loopback_only(ray: Any) -> Iterator[None]:
    """Start a local Ray with its node address on 127.0.0.1 and no metrics exporters.

    Sets :data:`_LOCAL_ENV` while Ray spawns its processes (they inherit it) and
    restores the environment afterwards; the driver itself runs under
    :func:`_single_machine`.
    """
    saved = {k: os.environ.get(k) for k in _LOCAL_ENV}
    for k, v in _LOCAL_ENV.items():
        if saved[k] is None:
            os.environ[k] = v
    try:
        with _single_machine(ray):
            yield
    finally:
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)


def _version(version: str) -> tuple[int, int]:
    try:
        major, minor = (int(p) for p in version.split(".")[:2])
    except ValueError:
        return (0, 0)
    return (major, minor)


def _token_auth_supported(version: str) -> bool:
    """Ray >= 2.52 has token authentication (``RAY_AUTH_MODE=token``)."""
    return _version(version) >= (2, 52)


def _token_auth_default(version: str) -> bool:
    """Ray >= 2.59 enables token authentication by default for local clusters."""
    return _version(version) >= (2, 59)


def _pick(meta: _ServiceMeta, table: str | None) -> _TableMeta:
    if table is None:
        if len(meta.tables) == 1:
            return next(iter(meta.tables.values()))
        raise InvalidArgumentError(
            f"this server has {len(meta.tables)} tables; pass table= one of {sorted(meta.tables)}"
        )
    t = meta.tables.get(table)
    if t is None:
        raise InvalidArgumentError(
            f"table {table!r} is not served here; expected one of {sorted(meta.tables)}"
        )
    return t


# ----------------------------------------------------------------------- client
@dataclass
class _Pending:
    """Steps buffered for one shard, in order: whole chunks, then single rows."""

    chunks: list[tuple[dict[str, Any], Any, Any, Any]] = field(default_factory=list)
    rows: dict[str, list[Any]] = field(default_factory=dict)
    row_meta: list[tuple[int, int, float]] = field(default_factory=list)
    with_priority: bool | None = None
    timeout: float | None = None
    count: int = 0
    since: float = 0.0

    def seal_rows(self) -> None:
        """Turn the buffered single rows into one chunk (one ``np.stack`` per field)."""
        if not self.row_meta:
            return
        meta = np.asarray(self.row_meta, dtype=np.float64)
        self.chunks.append(
            (
                {k: np.stack(v) for k, v in self.rows.items()},
                meta[:, 0].astype(np.int64),
                meta[:, 1].astype(np.int64),
                meta[:, 2].copy() if self.with_priority else None,
            )
        )
        self.rows = {}
        self.row_meta = []

    def take(self) -> tuple[dict[str, Any], Any, Any, Any]:
        self.seal_rows()
        if len(self.chunks) == 1:
            return self.chunks[0]
        first = self.chunks[0][0]
        return (
            {k: _cat([c[0][k] for c in self.chunks]) for k in first},
            np.concatenate([c[1] for c in self.chunks]),
            np.concatenate([c[2] for c in self.chunks]),
            np.concatenate([c[3] for c in self.chunks]) if self.with_priority else None,
        )


def _cat(parts: list[Any]) -> Any:
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return torch.cat(parts)


class RayClient:
    """The verbs of :class:`~replaydb.table.Table` on a sharded Ray service.

    Thread-safe. Pickles by actor handle (buffered steps stay behind: call
    :meth:`flush` before handing a client over). Writes are buffered per shard and
    sent in batches; an error of a buffered write (e.g. a rate-limiter timeout) is
    raised by the next call that sends or waits for that shard's writes.

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
        _check_int("batch_size", batch_size, 1)
        _check_int("prefetch", prefetch, 0)
        self.prefetch = prefetch
        self._queues: dict[tuple[str, int, float | None], deque[Future[Sample]]] = {}
        if not (isinstance(max_latency_s, int | float) and max_latency_s > 0):
            raise InvalidArgumentError(f"max_latency_s must be a number > 0, got {max_latency_s!r}")
        self._meta = meta
        self.batch_size = batch_size
        self.max_latency_s = float(max_latency_s)
        self._specs = {name: t.spec for name, t in meta.tables.items()}
        self._np_fields = {name: _numpy_fields(spec) for name, spec in self._specs.items()}
        self._lock = threading.RLock()
        self._pending: dict[tuple[str, int], _Pending] = {}
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
            >>> client = RayClient.connect("replaydb", address="10.0.0.5:6379")
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
        if isinstance(stream, bool) or not isinstance(stream, int | np.integer) or stream < 0:
            raise InvalidArgumentError(f"stream must be an int >= 0, got {stream!r}")
        code = _end_code(end)
        if priority is not None:
            Table.validate_priorities(float(priority), 1)
        row = self._fast_row(t.name, step)
        if row is None:  # the general path: conversions, nested fields, precise errors
            data = self._specs[t.name].coerce_step(step)
            row = {k: _wire(v[0]) for k, v in data.items()}
        with self._lock:
            key = (t.name, int(stream) % len(t.shards))
            buf = self._open_buffer(key, priority is not None)
            for k, v in row.items():
                buf.rows.setdefault(k, []).append(v)
            buf.row_meta.append((int(stream), code, 1.0 if priority is None else float(priority)))
            self._after_add(key, buf, 1, timeout)

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

    def _open_buffer(self, key: tuple[str, int], has_priority: bool) -> _Pending:
        buf = self._pending.get(key)
        if buf is not None and buf.with_priority is not None and buf.with_priority != has_priority:
            self._send(key)  # priorities given or not: one kind per batch
            buf = None
        if buf is None:
            buf = self._pending[key] = _Pending(since=time.monotonic())
        buf.with_priority = has_priority
        return buf

    def _after_add(
        self, key: tuple[str, int], buf: _Pending, n: int, timeout: float | None
    ) -> None:
        buf.count += n
        if timeout is not None:
            buf.timeout = timeout if buf.timeout is None else min(buf.timeout, timeout)
        if buf.count >= self.batch_size:
            self._send(key)
        if self._pending and self._flusher is None:
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
        with self._lock:
            for shard, m in groups:
                key = (t.name, shard)
                buf = self._open_buffer(key, priorities is not None)
                buf.seal_rows()
                cols = [streams, ends] + ([] if priorities is None else [priorities])
                if m is not None:
                    cols = [c[m] for c in cols]
                part = data if m is None else {f: v[m] for f, v in data.items()}
                buf.chunks.append(
                    (
                        {f: _wire(v) for f, v in part.items()},
                        _wire(cols[0]),
                        _wire(cols[1]),
                        None if priorities is None else _wire(cols[2]),
                    )
                )
                self._after_add(key, buf, int(cols[0].numel()), timeout)

    def _send(self, key: tuple[str, int]) -> None:
        """Send one shard's buffer, after its previous batch was applied (keeps order)."""
        buf = self._pending.pop(key, None)
        if buf is None or buf.count == 0:
            return
        self._wait_inflight(key)
        data, streams, ends, pri = buf.take()
        shard = self._meta.tables[key[0]].shards[key[1]]
        self._inflight[key] = shard.extend.remote(data, streams, ends, pri, buf.timeout)

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
        now = time.monotonic()
        with self._lock:
            for key in [k for k, b in self._pending.items() if now - b.since >= self.max_latency_s]:
                self._send(key)

    def flush(self) -> None:
        """Send every buffered step and wait until the shards applied them.

        Raises:
            RateLimiterTimeout: If a shard's limiter did not let a batch in within its timeout.

        Example:
            >>> client.insert({"x": [0.0, 0.0]}); client.flush()
        """
        with self._lock:
            for key in list(self._pending):
                self._send(key)
            for key in list(self._inflight):
                self._wait_inflight(key)

    def _flush_table(self, name: str) -> None:
        with self._lock:
            for key in [k for k in self._pending if k[0] == name]:
                self._send(key)
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
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, int | np.integer)
            or (batch_size < 1)
        ):
            raise InvalidArgumentError(f"batch_size must be an int >= 1, got {batch_size!r}")
        t = _pick(self._meta, table)
        self._flush_table(t.name)
        b = int(batch_size)
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
            >>> client.info().size
            8
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


def _numpy_fields(spec: Spec) -> dict[str, tuple[tuple[int, ...], Any]] | None:
    """``name -> (shape, numpy dtype)``, or ``None`` if a dtype has no numpy twin."""
    out = {}
    for name, f in spec.items():
        if f.dtype == torch.bfloat16:
            return None
        out[name] = (f.shape, torch.empty((), dtype=f.dtype).numpy().dtype)
    return out


def _end_code(end: Any) -> int:
    if end is None or end is False:
        return 0
    if end is True:
        return 1
    if isinstance(end, int | np.integer) and 0 <= int(end) <= 2:
        return int(end)
    raise InvalidArgumentError(
        f"end must be a bool or a code 0 (not done), 1 (terminated), 2 (truncated), got {end!r}"
    )


def _in_daemon_thread(fn: Callable[..., Sample], *args: Any) -> Future[Sample]:
    """Run ``fn(*args)`` on a daemon thread; its result or error lands in the future.

    Daemon threads rather than a ThreadPoolExecutor: the interpreter joins an
    executor's workers at exit, and a prefetch still in flight when the driver shuts
    Ray down would then hang the process in Ray's automatic reconnect.
    """
    fut: Future[Sample] = Future()

    def run() -> None:
        if not fut.set_running_or_notify_cancel():
            return
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:
            fut.set_exception(exc)

    threading.Thread(target=run, name="replaydb-prefetch", daemon=True).start()
    return fut


def _rebuild_client(
    meta: _ServiceMeta, batch_size: int, max_latency_s: float, prefetch: int
) -> RayClient:
    return RayClient(meta, batch_size=batch_size, max_latency_s=max_latency_s, prefetch=prefetch)


def _priority_column(priorities: Any, n: int) -> torch.Tensor | None:
    return None if priorities is None else Table.validate_priorities(priorities, n)


def _encode_keys(s: Sample, shard: int, k: int) -> Sample:
    if k == 1:
        return s
    keys = torch.where(s.keys >= 0, s.keys * k + shard, s.keys)
    return replace(s, keys=keys)


def _merge(
    parts: list[tuple[Sample, float]], size: int, t: _TableMeta, beta: float | None
) -> Sample:
    samples = [s for s, _ in parts]
    probs = torch.cat([s.probabilities * frac for s, frac in parts])
    if t.prioritized:
        b = beta if beta is not None else _exponent(t.config["sampler"], _BETA_KEYS)
        if b is None:
            weights = torch.cat([s.weights for s in samples])
        else:
            w = (size * probs) ** (-b)
            weights = (w / w.max()).to(torch.float32)
    else:
        weights = torch.cat([s.weights for s in samples])
    masks = [s.mask for s in samples]
    return Sample(
        data={f: torch.cat([s.data[f] for s in samples]) for f in samples[0].data},
        keys=torch.cat([s.keys for s in samples]),
        probabilities=probs,
        weights=weights,
        priorities=torch.cat([s.priorities for s in samples]),
        times_sampled=torch.cat([s.times_sampled for s in samples]),
        table_size=size,
        mask=None
        if all(m is None for m in masks)
        else torch.cat(
            [
                m if m is not None else torch.ones_like(s.keys, dtype=torch.bool)
                for m, s in zip(masks, samples, strict=True)
            ]
        ),
    )


# ------------------------------------------------------------------------ serve
def _spec_from_config(name: str, spec: Any) -> Spec:
    if not isinstance(spec, Mapping) or not spec:
        raise InvalidArgumentError(
            f"tables.{name}.spec must be a non-empty table of fields, got {spec!r}; "
            'e.g. spec = {obs = [4], reward = []} or {obs = {shape = [4], dtype = "float32"}}'
        )
    fields: dict[str, Any] = {}
    for field_name, value in spec.items():
        try:
            if isinstance(value, Mapping):
                fields[field_name] = Spec.from_json(
                    {field_name: dict(value, dtype=value.get("dtype", "float32"))}
                )[field_name]
            elif isinstance(value, list | tuple):
                fields[field_name] = Spec({field_name: tuple(value)})[field_name]
            else:
                raise InvalidArgumentError(
                    f"must be a shape list like [4] or a table with shape and dtype, "
                    f"got {value!r:.80}"
                )
        except (InvalidArgumentError, TypeError, KeyError) as exc:
            raise InvalidArgumentError(f"tables.{name}.spec.{field_name}: {exc}") from exc
    return Spec(fields)


_TABLE_KEYS = {"spec", "capacity", "sampler", "limiter", "sequence_length", "max_times_sampled"}
_TOP_KEYS = {
    "name",
    "address",
    "shards",
    "checkpoint_dir",
    "checkpoint_interval_s",
    "keep",
    "restore",
    "tables",
}


def load_serve_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``replaydb serve`` config (``.json`` or ``.toml``) and build its table templates.

    Args:
        path: The config file.

    Returns:
        The config dict, with ``"tables"`` mapped to :class:`~replaydb.table.Table` templates.

    Raises:
        InvalidArgumentError: Naming the first bad or unknown key.

    Example:
        >>> load_serve_config("serve.toml")["shards"]
        2
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidArgumentError(f"config file {str(p)!r} does not exist; check the path")
    try:
        text = p.read_bytes()[: 1 << 24].decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(
            f"config file {str(p)!r} is not readable UTF-8 text ({exc})"
        ) from exc
    try:
        if p.suffix == ".toml":
            import tomllib

            raw: Any = tomllib.loads(text)
        else:
            raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidArgumentError(f"config file {str(p)!r} does not parse: {exc}") from exc
    if not isinstance(raw, dict):
        raise InvalidArgumentError(
            f"config file {str(p)!r} must hold a table of settings (a JSON object), "
            f"got {type(raw).__name__}"
        )
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise InvalidArgumentError(
            f"config keys {unknown} are unknown; expected some of {sorted(_TOP_KEYS)}"
        )
    _check_serve_settings(raw)
    tables = raw.get("tables")
    if not isinstance(tables, Mapping) or not tables:
        raise InvalidArgumentError(
            "config needs a non-empty 'tables' section, e.g. [tables.replay] with spec and capacity"
        )
    built: dict[str, Table] = {}
    for name, tc in tables.items():
        if not isinstance(tc, Mapping):
            raise InvalidArgumentError(
                f"tables.{name} must be a table with spec and capacity, got {tc!r:.80}"
            )
        bad = sorted(set(tc) - _TABLE_KEYS)
        if bad:
            raise InvalidArgumentError(
                f"tables.{name}: keys {bad} are unknown; expected some of {sorted(_TABLE_KEYS)}"
            )
        if "capacity" not in tc or "spec" not in tc:
            raise InvalidArgumentError(f"tables.{name} needs 'spec' and 'capacity'")
        spec = _spec_from_config(name, tc["spec"])
        sampler = _from_config(name, "sampler", tc.get("sampler", {"type": "Uniform"}))
        limiter = _from_config(name, "limiter", tc.get("limiter", {"type": "MinSize"}))
        try:
            built[name] = Table(
                spec,
                tc["capacity"],
                sampler=sampler,
                rate_limiter=limiter,
                sequence_length=tc.get("sequence_length", 1),
                max_times_sampled=tc.get("max_times_sampled"),
                name=name,
            )
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"tables.{name}: {exc}") from exc
    out = dict(raw)
    out["tables"] = built
    return out


def _from_config(table: str, key: str, config: Any) -> Any:
    """A sampler or rate limiter from its config; any failure names ``tables.<t>.<key>``."""
    if not isinstance(config, Mapping):
        raise InvalidArgumentError(
            f'tables.{table}.{key} must be a table like {{type = "Uniform"}}, got {config!r:.80}'
        )
    build = sampler_from_config if key == "sampler" else rate_limiter_from_config
    try:
        return build(config)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"tables.{table}.{key}: {exc}") from exc
    except (TypeError, ValueError, KeyError) as exc:
        raise InvalidArgumentError(
            f"tables.{table}.{key} = {dict(config)!r:.120} is invalid ({exc}); give "
            "numbers where numbers are expected"
        ) from exc


def _check_serve_settings(raw: Mapping[str, Any]) -> None:
    """Check the top-level settings' types before anything starts."""
    for key in ("shards", "keep"):
        v = raw.get(key, 1)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InvalidArgumentError(f"config key {key!r} must be an int >= 1, got {v!r:.80}")
    for key in ("name", "address", "checkpoint_dir"):
        v = raw.get(key)
        if v is not None and not isinstance(v, str):
            raise InvalidArgumentError(f"config key {key!r} must be a string, got {v!r:.80}")
    v = raw.get("checkpoint_interval_s")
    if v is not None and (
        isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0
    ):
        raise InvalidArgumentError(
            f"config key 'checkpoint_interval_s' must be a number > 0, got {v!r:.80}"
        )
    if not isinstance(raw.get("restore", True), bool):
        raise InvalidArgumentError(
            f"config key 'restore' must be true or false, got {raw.get('restore')!r:.80}"
        )


def _connect_lines(name: str, address: str) -> list[str]:
    """What ``replaydb serve`` prints: the address and a connect line that works as printed."""
    import shlex
    import sys

    token = os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
    where = " (loopback only)" if address.startswith(_LOOPBACK + ":") else ""
    call = f"RayClient.connect({json.dumps(name)}, address={json.dumps(address)})"
    code = f"from replaydb.ray_backend import RayClient; print({call}.tables())"
    env = "RAY_AUTH_MODE=token " if token else ""
    lines = [f"Ray address: {address}{where}"]
    if token:
        lines.append(
            "Ray token authentication is on: a client needs RAY_AUTH_MODE=token in its "
            "environment and this cluster's token (~/.ray/auth_token, or RAY_AUTH_TOKEN)."
        )
    lines += [
        "Connect from a shell on this machine with:",
        f"    {env}{shlex.quote(sys.executable)} -c {shlex.quote(code)}",
        f"or from a Python driver started with {env or 'this environment '}as:",
        f"    {call}",
        f"and from a Ray task or actor of this cluster: RayClient.connect({json.dumps(name)})",
    ]
    return lines


def serve_command(argv: list[str]) -> int:
    """``replaydb serve CONFIG [--for SECONDS]``: run a Ray-backed server until interrupted.

    Args:
        argv: The arguments after ``serve``.

    Returns:
        The exit status (0 on a clean stop, 2 for a bad config).

    Example:
        >>> serve_command(["serve.toml"])  # doctest: +SKIP
    """
    import argparse
    import signal
    import sys

    parser = argparse.ArgumentParser(
        prog="replaydb serve",
        description="Serve replay tables on Ray shard actors (see docs/ray.md for the format).",
    )
    parser.add_argument("config", help="a .toml or .json file describing tables and shards")
    parser.add_argument(
        "--for",
        dest="duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: run until Ctrl-C or SIGTERM)",
    )
    args = parser.parse_args(argv)
    try:
        cfg = load_serve_config(args.config)
        name = str(cfg.get("name", "replaydb"))
        ckpt_dir = cfg.get("checkpoint_dir")
        options: dict[str, Any] = {
            "checkpoint_dir": ckpt_dir,
            "keep": int(cfg.get("keep", 1)),
            "checkpoint_interval_s": cfg.get("checkpoint_interval_s"),
            "address": cfg.get("address") or None,
        }
        shards = int(cfg.get("shards", 1))
        if cfg.get("restore", True) and ckpt_dir and latest_checkpoint(ckpt_dir) is not None:
            server = RayServer.from_checkpoint(ckpt_dir, num_shards=shards, **options)
            origin = f"restored from {latest_checkpoint(ckpt_dir)}"
        else:
            server = RayServer(cfg["tables"], num_shards=shards, **options)
            origin = "empty"
        server.register(name)
    except (InvalidArgumentError, CheckpointError) as exc:
        print(f"replaydb serve: {exc}", file=sys.stderr)
        return 2
    ray = _ray()
    address = str(ray.get_runtime_context().gcs_address)
    print(
        f"replaydb serving {server.tables()} as {name!r} on {shards} shard(s) per table ({origin})"
    )
    for line in _connect_lines(name, address):
        print(line)
    sys.stdout.flush()
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGTERM)
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait(args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
        if ckpt_dir:
            print(f"final checkpoint: {server.checkpoint()}")
        server.close()
    return 0
