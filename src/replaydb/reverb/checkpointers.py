"""Checkpointers: where a :class:`~replaydb.reverb.Server` saves and restores its tables.

``DefaultCheckpointer(path)`` has Reverb's semantics, which sbsim's create/load/
clear logic rests on: a new ``Server`` given one restores the newest complete
checkpoint under ``path`` (table settings and rate-limiter counters included; a
checkpointed table must exist in the server) and starts empty, without error,
when there is none. Saving writes a new checkpoint and keeps only the newest.

The format is replaydb's checkpoint directory (:mod:`replaydb.checkpoint`):
``<path>/ckpt-<ns>/`` with, per table, the replaydb table file (selection,
priorities, limiter counters) and ``table-<i>.items.safetensors`` (the items'
columns, stacked per shape group), the Reverb settings in ``manifest.json``.

Checkpoints written by dm-reverb itself (``<path>/<timestamp>/{tables,items,
chunks}.tfrecord`` + ``DONE``) are read through
``replaydb._reverb_checkpoint.read_reverb_checkpoint`` when that module is
present (see :func:`load_reverb_format`).
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from replaydb.checkpoint import commit_checkpoint, latest_checkpoint, load_table
from replaydb.errors import CheckpointError
from replaydb.reverb.tables import Item, Table

__all__ = [
    "CheckpointerBase",
    "DefaultCheckpointer",
    "TempDirCheckpointer",
    "default_checkpointer",
    "load_reverb_format",
]

_KIND = "replaydb.reverb"


class CheckpointerBase:
    """Saves and restores a server's tables under :attr:`path`."""

    def __init__(self, path: str | os.PathLike[str], group: str = "") -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={str(self.path)!r})"

    def save(self, tables: dict[str, Table]) -> Path:
        """Write every table into a new checkpoint; return its directory."""
        entries: dict[str, Any] = {}

        def fill(tmp: Path) -> dict[str, Any]:
            for i, (name, table) in enumerate(tables.items()):
                _, items = table.live_items()
                from replaydb.checkpoint import save_table

                save_table(table.core, tmp / f"table-{i}.safetensors")
                _save_items(items, tmp / f"table-{i}.items.safetensors")
                entries[name] = {
                    "file": f"table-{i}.safetensors",
                    "items": f"table-{i}.items.safetensors",
                    "settings": table.settings(),
                    "signature": _encode_signature(table.signature),
                    "size": len(items),
                }
            return {"tables": entries, "extra": {"kind": _KIND}}

        return commit_checkpoint(self.path, fill, keep=1)

    def load_latest(self, tables: dict[str, Table]) -> Path | None:
        """Restore the newest checkpoint into ``tables``; None (and no change) if there is none.

        Raises:
            CheckpointError: If the checkpoint holds a table the server lacks, or is damaged.
        """
        latest = latest_checkpoint(self.path)
        if latest is None:
            return load_reverb_format(self.path, tables)
        try:
            manifest = json.loads((latest / "manifest.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{str(latest)!r}: manifest unreadable ({exc})") from exc
        if manifest.get("extra", {}).get("kind") != _KIND:
            raise CheckpointError(
                f"{str(latest)!r} is a replaydb checkpoint but not one of replaydb.reverb "
                "(written by ReplayBufferManager?); load it with replaydb.ReplayBufferManager"
            )
        entries = manifest.get("tables", {})
        missing = sorted(set(entries) - set(tables))
        if missing:
            raise CheckpointError(
                f"checkpoint {str(latest)!r} holds table(s) {missing} that the server does not "
                f"serve ({sorted(tables)}); create the Server with those tables"
            )
        for name, entry in entries.items():
            core = load_table(latest / entry["file"])
            items = _load_items(latest / entry["items"])
            tables[name].restore(
                entry["settings"], core, items, _decode_signature(entry.get("signature"))
            )
        return latest


class DefaultCheckpointer(CheckpointerBase):
    """Checkpoints under ``path`` (Reverb's ``DefaultCheckpointer``).

    Example:
        >>> # server = Server([table], checkpointer=DefaultCheckpointer(path="/tmp/rb"))
    """


class TempDirCheckpointer(CheckpointerBase):
    """Checkpoints under a fresh temporary directory (Reverb's default).

    Unlike Reverb, which creates the directory with the server, the directory is
    created by the first :meth:`save` only: a server that never checkpoints (most
    servers: every ``Server`` without a checkpointer gets one of these) leaves
    nothing behind in the temporary directory.

    Example:
        >>> ckpt = TempDirCheckpointer()
        >>> ckpt.load_latest({}) is None  # nothing saved: nothing created
        True
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, group: str = "") -> None:
        self._given = path is not None
        super().__init__(path if path is not None else Path(tempfile.gettempdir()))

    def __repr__(self) -> str:
        if self._given:
            return super().__repr__()
        return f"{type(self).__name__}(path=<a new temporary directory on the first save>)"

    def save(self, tables: dict[str, Table]) -> Path:
        """Write every table into a new checkpoint; return its directory."""
        if not self._given:
            self.path = Path(tempfile.mkdtemp(prefix="replaydb-reverb-"))
            self._given = True
        return super().save(tables)

    def load_latest(self, tables: dict[str, Table]) -> Path | None:
        """Restore the newest checkpoint saved through this checkpointer, if any."""
        if not self._given:
            return None
        return super().load_latest(tables)


def default_checkpointer(group: str | None = None) -> CheckpointerBase:
    """The checkpointer a Server uses when given none: a temporary directory."""
    return TempDirCheckpointer()


# -------------------------------------------------------------------- items
def _save_items(items: dict[int, Item], path: Path) -> None:
    from safetensors.torch import save_file

    groups: dict[Any, list[int]] = {}
    for ref, item in items.items():
        key = tuple((len(s), q, s[0].shape, s[0].dtype.str) for s, q in item)
        groups.setdefault(key, []).append(ref)
    tensors: dict[str, torch.Tensor] = {}
    meta: list[dict[str, Any]] = []
    for g, (key, refs) in enumerate(groups.items()):
        tensors[f"g{g}.refs"] = torch.tensor(refs, dtype=torch.int64)
        for c, (_, _squeeze, _, dtype) in enumerate(key):
            steps = [a for r in refs for a in items[r][c][0]]
            arr = np.stack(steps)
            if arr.dtype == object or arr.dtype.kind in "USV":
                raise CheckpointError(
                    f"column {c} holds {np.dtype(dtype)} data, which safetensors cannot store; "
                    "write numeric arrays"
                )
            tensors[f"g{g}.c{c}"] = torch.from_numpy(np.ascontiguousarray(arr))
        meta.append({"n": len(refs), "columns": [[k[0], k[1]] for k in key]})
    save_file(tensors, str(path), {"groups": json.dumps(meta)})


def _load_items(path: Path) -> dict[int, Item]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {})["groups"])
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    except Exception as exc:
        raise CheckpointError(f"{str(path)!r}: items unreadable ({exc})") from exc
    items: dict[int, Item] = {}
    for g, group in enumerate(meta):
        refs = tensors[f"g{g}.refs"].tolist()
        cols = []
        for c, (t, _squeeze) in enumerate(group["columns"]):
            arr = tensors[f"g{g}.c{c}"].numpy()
            cols.append(arr.reshape(len(refs), t, *arr.shape[1:]))
        for i, ref in enumerate(refs):
            items[ref] = tuple(
                (tuple(col[i]), bool(squeeze))
                for col, (_, squeeze) in zip(cols, group["columns"], strict=True)
            )
    return items


def _encode_signature(signature: Any) -> str | None:
    if signature is None:
        return None
    from tensorflow.python.saved_model import (  # type: ignore[import-untyped, unused-ignore]
        nested_structure_coder,
    )

    proto = nested_structure_coder.encode_structure(signature)
    return base64.b64encode(proto.SerializeToString()).decode()


def _decode_signature(text: str | None) -> Any:
    if text is None:
        return None
    from tensorflow.core.protobuf import struct_pb2  # type: ignore[import-untyped, unused-ignore]
    from tensorflow.python.saved_model import (  # type: ignore[import-untyped, unused-ignore]
        nested_structure_coder,
    )

    proto = struct_pb2.StructuredValue()
    proto.ParseFromString(base64.b64decode(text))
    return nested_structure_coder.decode_proto(proto)


# --------------------------------------------------------- dm-reverb format
def _reader() -> Any:
    """``replaydb._reverb_checkpoint`` (the TF-free reader of dm-reverb checkpoints), or None."""
    try:
        import importlib

        return importlib.import_module("replaydb._reverb_checkpoint")
    except ImportError:
        return None


def load_reverb_format(root: Path, tables: dict[str, Table]) -> Path | None:
    """Restore the newest checkpoint written by dm-reverb 0.14 under ``root``, if any.

    Uses ``replaydb._reverb_checkpoint.read_reverb_checkpoint`` (the TF-free reader;
    interface: ``latest_reverb_checkpoint(root)``, ``read_reverb_checkpoint(path)``
    giving tables with settings, rate-limiter counters and items with priority and
    per-column arrays). Settings, priorities, the signature and the rate limiter's
    insert and sample counts are restored; item keys are new and ``times_sampled``
    starts at 0. Without the reader, a root that holds a dm-reverb checkpoint raises
    instead of silently starting empty.

    Returns:
        The checkpoint directory restored, or None if ``root`` holds none.

    Raises:
        CheckpointError: If the reader is missing, the checkpoint is damaged, or it
            holds a table the server does not serve.
    """
    if not root.is_dir():
        return None
    reader = _reader()
    if reader is None:
        found = sorted(d for d in root.iterdir() if d.is_dir() and (d / "DONE").is_file())
        if not found:
            return None
        raise CheckpointError(
            f"{str(found[-1])!r} is a checkpoint written by dm-reverb; restoring it needs "
            "replaydb's Reverb checkpoint reader (replaydb._reverb_checkpoint), which this "
            "build does not include; convert it with `replaydb import-reverb` where available"
        )
    latest = reader.latest_reverb_checkpoint(root)
    if latest is None:
        return None
    ckpt = reader.read_reverb_checkpoint(latest)
    missing = sorted(t.name for t in ckpt.tables if t.name not in tables)
    if missing:
        raise CheckpointError(
            f"dm-reverb checkpoint {str(latest)!r} holds table(s) {missing} that the server "
            f"does not serve ({sorted(tables)}); create the Server with those tables"
        )
    for rt in ckpt.tables:
        _restore_reverb_table(tables[rt.name], rt)
    return Path(latest)


def _selector_settings(dist: Any) -> dict[str, Any]:
    kinds = {"fifo": "Fifo", "lifo": "Lifo", "uniform": "Uniform", "prioritized": "Prioritized"}
    if dist.kind == "heap":
        return {"type": "MinHeap" if dist.min_heap else "MaxHeap"}
    out: dict[str, Any] = {"type": kinds[dist.kind]}
    if dist.kind == "prioritized":
        out["priority_exponent"] = float(dist.priority_exponent or 0.0)
    return out


def _restore_reverb_table(table: Table, rt: Any) -> None:
    """Replace ``table`` with the dm-reverb table ``rt`` (settings, counters, items)."""
    from replaydb.reverb import rate_limiters as rl
    from replaydb.reverb.tables import _selector_from_json

    lim = rt.rate_limiter
    settings = {
        "name": rt.name,
        "sampler": _selector_settings(rt.sampler),
        "remover": _selector_settings(rt.remover),
        "max_size": int(rt.max_size),
        "max_times_sampled": int(rt.max_times_sampled),
        "rate_limiter": [
            float(lim.samples_per_insert),
            int(lim.min_size_to_sample),
            float(lim.min_diff),
            float(lim.max_diff),
        ],
    }
    staging = Table(
        rt.name,
        _selector_from_json(settings["sampler"]),
        _selector_from_json(settings["remover"]),
        int(rt.max_size),
        # No limiter while staging: the items are in the checkpoint already.
        rl.RateLimiter(1.0, 1, -float("inf"), float("inf")),
        max_times_sampled=0,
    )
    items: list[Item] = []
    for item in rt.items:
        squeeze = item.squeeze or (False,) * len(item.columns)
        items.append(
            tuple(
                ((col,), True) if sq else (tuple(col), False)
                for col, sq in zip(item.columns, squeeze, strict=True)
            )
        )
    staging.insert_items(items, [float(i.priority) for i in rt.items])
    core = staging.core
    restored = Table(
        rt.name,
        _selector_from_json(settings["sampler"]),
        _selector_from_json(settings["remover"]),
        int(rt.max_size),
        rl.RateLimiter(*settings["rate_limiter"]),
        max_times_sampled=int(rt.max_times_sampled),
    ).core
    restored.load_state_dict(core.state_dict())
    restored.rate_limiter.inserts = int(lim.insert_count)
    restored.rate_limiter.samples = int(lim.sample_count)
    _, store = staging.live_items()
    signature = None
    if rt.signature_bytes:
        from tensorflow.core.protobuf import (  # type: ignore[import-untyped, unused-ignore]
            struct_pb2,
        )
        from tensorflow.python.saved_model import (  # type: ignore[import-untyped, unused-ignore]
            nested_structure_coder,
        )

        signature = nested_structure_coder.decode_proto(
            struct_pb2.StructuredValue.FromString(rt.signature_bytes)
        )
    table.restore(settings, restored, store, signature)
