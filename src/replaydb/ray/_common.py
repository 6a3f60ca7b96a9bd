"""Names every module of :mod:`replaydb.ray` shares: constants, table metadata, wire format."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from replaydb.errors import InvalidArgumentError, require
from replaydb.spec import Spec
from replaydb.table import Sample, Table

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


def _ray() -> Any:
    return require("ray", "ray")


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
