"""The shard actor: one shard of one table in a Ray actor, and the service directory."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from replaydb.checkpoint import confined_path, list_checkpoints, load_table, read_json, save_table
from replaydb.errors import CheckpointError
from replaydb.ray._common import _dump_steps, _ray, _sample_to_wire, _shard_file, _torch
from replaydb.table import LiveSteps, Table, TableInfo

log = logging.getLogger("replaydb.ray")


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
            manifest = read_json(ckpt / "manifest.json")
        except CheckpointError:
            continue
        if isinstance(manifest, dict) and manifest.get("server_id") == server_id:
            try:
                return str(_inside(ckpt, _shard_file(name, shard)))
            except CheckpointError:
                return None
    return None


def _inside(directory: Path, name: Any) -> Path:
    """``directory / name`` as an existing file that resolves inside ``directory``.

    Absolute paths, ``..`` and symlinks that lead out of the checkpoint are refused
    by :func:`~replaydb.checkpoint.confined_path`.
    """
    target = confined_path(directory, name, where=f"{str(directory)!r}: shard file")
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
