"""Whole-service checkpoints of a Ray-backed server: writing, and reading them back safely."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replaydb._validate import is_int
from replaydb.checkpoint import (
    CHECKPOINT_FORMAT,
    commit_checkpoint,
    latest_checkpoint,
    load_table,
    read_json,
)
from replaydb.errors import CheckpointError, InvalidArgumentError
from replaydb.rate_limiters import rate_limiter_from_config
from replaydb.ray._common import _ray, _ServiceMeta, _shard_file
from replaydb.ray._shard import _inside
from replaydb.samplers import sampler_from_config
from replaydb.spec import Spec
from replaydb.table import Table


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
    manifest = read_json(p / "manifest.json")
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
        if not is_int(k) or k < 1:
            raise CheckpointError(f"{where}.num_shards must be an int >= 1, got {k!r:.80}")
        if not isinstance(shards, list) or len(shards) != k:
            raise CheckpointError(f"{where}.shards must be a list of {k} shard entries")
        files = []
        for i, shard in enumerate(shards):
            if not isinstance(shard, dict):
                raise CheckpointError(f"{where}.shards[{i}] must be an object")
            files.append(_inside(p, shard.get("file")))
        out[name] = _SavedTable(config, int(k), files)
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
        if not is_int(value) or value < 1:
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
