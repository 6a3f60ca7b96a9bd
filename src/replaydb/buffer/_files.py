"""Velora's buffer files: :meth:`ReplayBuffer.save` and :meth:`ReplayBuffer.load`.

``<prefix>metadata.json`` and ``<prefix>state.safetensors`` (plus, for a buffer
beyond Velora's plain uniform one, ``<prefix>table-<sha>.safetensors``), the
crash-safe commit protocol described in :mod:`replaydb.buffer`, the checks of
metadata read from disk (``_check_metadata``) and the removal of temporaries of
killed saves. ``save`` and ``load`` are the bodies of the two methods.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from replaydb._table_file import fsync_dir
from replaydb._validate import is_int
from replaydb.buffer._inputs import STATE_DTYPES, check_device
from replaydb.buffer._records import _KEYS
from replaydb.checkpoint import read_json, remove_stale_temporaries
from replaydb.errors import CheckpointError, InvalidArgumentError
from replaydb.rate_limiters import rate_limiter_from_config
from replaydb.samplers import sampler_from_config
from replaydb.spec import Spec
from replaydb.table import Table

if TYPE_CHECKING:
    from replaydb.buffer._buffer import ReplayBuffer

VELORA_FORMAT = "replaydb.velora"
FORMAT_VERSION = 2
_META_KEYS = ("capacity", "state_dim", "action_dim", "hidden_dim", "position", "size", "device")


def save(self: ReplayBuffer, dirpath: str | os.PathLike[str], prefix: str) -> None:
    """The body of :meth:`ReplayBuffer.save` (``self`` is the buffer)."""
    from safetensors.torch import save_file

    if not isinstance(prefix, str) or "/" in prefix or os.sep in prefix:
        raise InvalidArgumentError(
            f"prefix must be a file name prefix without path separators, got {prefix!r}"
        )
    d = Path(dirpath)
    if d.exists() and not d.is_dir():
        raise InvalidArgumentError(f"dirpath {str(d)!r} is a file; save() needs a directory path")
    d.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(d, prefix)
    # Velora's files keep no episode boundaries: a frame-stacked buffer's stacks are
    # rebuilt from the episode links (storage.meta.*) of the table file.
    keep_table = self._keeps_table_state() or self.frame_stack is not None
    dense = torch.contiguous_format
    with self.table.locked():
        tensors = {k: self._fields[k].detach().to("cpu").clone(memory_format=dense) for k in _KEYS}
        meta: dict[str, Any] = self.metadata()
        table_state: dict[str, torch.Tensor] = {}
        if keep_table:
            table_config = self.table.config()
            table_state = {
                k: v.detach().to("cpu").clone(memory_format=dense)
                for k, v in self.table.state_dict().items()
                if not k.startswith("storage.group.")
            }

    state_path = d / f"{prefix}state.safetensors"
    meta_path = d / f"{prefix}metadata.json"
    previous = _previous_metadata(meta_path, state_path)
    tmps: list[Path] = []
    try:
        state_tmp = _tmp_beside(state_path)
        tmps.append(state_tmp)
        save_file(tensors, str(state_tmp))
        _fsync_file(state_tmp)
        meta.update(
            format=VELORA_FORMAT,
            format_version=FORMAT_VERSION,
            state_sha256=_sha256(state_tmp),
            previous=previous,
        )
        table_path: Path | None = None
        if keep_table:
            table_tmp = _tmp_beside(d / f"{prefix}table.safetensors")
            tmps.append(table_tmp)
            save_file(table_state, str(table_tmp))
            _fsync_file(table_tmp)
            digest = _sha256(table_tmp)
            # Content-addressed: never overwrites the file the old metadata names.
            table_path = d / f"{prefix}table-{digest[:16]}.safetensors"
            os.replace(table_tmp, table_path)
            meta["table"] = {"file": table_path.name, "sha256": digest, "config": table_config}
        meta_tmp = _tmp_beside(meta_path)
        tmps.append(meta_tmp)
        meta_tmp.write_text(json.dumps(meta, indent=2))
        _fsync_file(meta_tmp)
        fsync_dir(d)
        # Commit: the metadata first (it still describes the old state file as
        # "previous"), then the state file.
        os.replace(meta_tmp, meta_path)
        os.replace(state_tmp, state_path)
        fsync_dir(d)
    finally:
        for tmp in tmps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    # Table files no metadata names any more (the old save's, or a killed save's).
    keep = {table_path.name} if table_path is not None else set()
    for old in d.glob(f"{glob.escape(prefix)}table-*.safetensors"):
        if old.name not in keep:
            with contextlib.suppress(OSError):
                old.unlink()


def load(
    cls: type[ReplayBuffer],
    state_path: str | os.PathLike[str],
    metadata: Mapping[str, Any],
    *,
    device: torch.device | str | None,
) -> ReplayBuffer:
    """The body of :meth:`ReplayBuffer.load` (``cls`` is the buffer class)."""
    from safetensors.torch import load_file

    meta = _check_metadata(metadata)
    p = Path(state_path)
    if p.suffix != ".safetensors":
        p = p.with_name(p.name + ".safetensors")
    if p.name.endswith("state.safetensors"):
        remove_stale_temporaries(p.parent, p.name[: -len("state.safetensors")])
    if not p.is_file():
        raise CheckpointError(f"no buffer state file at {str(p)!r}; check state_path")
    if "state_sha256" in meta:
        digest = _sha256(p)
        if digest != meta["state_sha256"]:
            prev = meta.get("previous")
            if prev is None or prev.get("state_sha256") != digest:
                raise CheckpointError(
                    f"{str(p)!r} does not match its metadata's SHA-256: the file is corrupt, "
                    "or the metadata belongs to another save"
                )
            # A save was killed between its two renames: this is the previous buffer.
            meta = _check_metadata(prev)
    try:
        tensors = load_file(str(p))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(
            f"{str(p)!r} is not a readable safetensors file (truncated or corrupt?): {exc}"
        ) from exc
    sdim = meta["state_dim"]
    shape = (sdim,) if isinstance(sdim, int) else tuple(sdim)
    sdtype = STATE_DTYPES[meta["state_dtype"]]
    dims: dict[str, tuple[tuple[int, ...], torch.dtype]] = {
        "states": (shape, sdtype),
        "actions": ((meta["action_dim"],), torch.float32),
        "rewards": ((1,), torch.float32),
        "next_states": (shape, sdtype),
        "dones": ((1,), torch.float32),
        "hiddens": ((meta["hidden_dim"],), torch.float32),
    }
    if set(tensors) != set(_KEYS):
        raise CheckpointError(
            f"{str(p)!r} holds tensors {sorted(tensors)}, expected {sorted(_KEYS)}"
        )
    for k, (dim, dtype) in dims.items():
        t = tensors[k]
        if t.dtype != dtype or tuple(t.shape) != (meta["capacity"], *dim):
            raise CheckpointError(
                f"{str(p)!r}: tensor {k!r} is {tuple(t.shape)} {t.dtype}, the metadata "
                f"says {(meta['capacity'], *dim)} {dtype}"
            )
    if device is not None:
        dev = check_device(device)
    else:
        try:
            dev = check_device(meta["device"])
        except InvalidArgumentError as exc:
            raise CheckpointError(
                f"metadata['device'] is {meta['device']!r}: {exc}; pass load(..., "
                "device='cpu') to load it elsewhere"
            ) from exc
    cap, size, position = meta["capacity"], meta["size"], meta["position"]
    spec_args = (sdim if isinstance(sdim, int) else shape, meta["action_dim"], meta["hidden_dim"])
    table_state: dict[str, torch.Tensor] | None = None
    if meta.get("table") is not None:
        stack: int | None = meta.get("frame_stack")
        table, table_state = _load_table_file(
            p.parent,
            meta["table"],
            cls.transition_spec(*spec_args, state_dtype=sdtype),
            cap,
            dev,
            None if stack is None else {"states": stack, "next_states": stack},
        )
        buffer = cls(cap, *spec_args, state_dtype=sdtype, frame_stack=stack, table=table)
    else:
        buffer = cls(cap, *spec_args, device=dev, state_dtype=sdtype)
    total = position if size < cap else cap + position
    order = torch.arange(total - size, total) % cap  # oldest first
    buffer.table.restore_steps(
        {k: tensors[k].index_select(0, order) for k in _KEYS}, total_steps_written=total
    )
    if table_state is not None:
        live = buffer.table.state_dict()
        for k, v in table_state.items():
            if k not in live or live[k].shape != v.shape or live[k].dtype != v.dtype:
                raise CheckpointError(
                    f"the table file {meta['table']['file']!r} does not fit the buffer: "
                    f"tensor {k!r} is {tuple(v.shape)} {v.dtype}"
                )
        missing = {k for k in live if not k.startswith("storage.group.")} - set(table_state)
        if missing:
            raise CheckpointError(
                f"the table file {meta['table']['file']!r} lacks tensors {sorted(missing)}"
            )
        saved_total = int(table_state["storage.total"][0])
        keys = table_state["items.key"]
        if (
            saved_total < 0
            or saved_total % cap != position
            or min(saved_total, cap) != size
            or (keys.numel() and int(keys.max()) >= saved_total)
        ):
            raise CheckpointError(
                f"the table file {meta['table']['file']!r} does not describe the buffer of "
                f"the metadata (steps written {saved_total}, position {position}, size {size})"
            )
        # load_state_dict resets storage first: pass copies, not views of it.
        groups = {k: v.clone() for k, v in live.items() if k.startswith("storage.group.")}
        buffer.table.load_state_dict({**live, **groups, **table_state})
    return buffer


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _tmp_beside(path: Path) -> Path:
    """``.<name>.tmp-<pid>-<ns>`` beside ``path`` (the pid lets a later save clean it up)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _previous_metadata(meta_path: Path, state_path: Path) -> dict[str, Any] | None:
    """The current save's metadata (without its own ``previous``), if it describes the state file.

    Stored in the new metadata so that a kill between the two renames of a save,
    which leaves the new metadata beside the old state file, still loads.
    """
    if not meta_path.is_file() or not state_path.is_file():
        return None
    try:
        old = _check_metadata(read_json(meta_path))
    except CheckpointError:
        return None  # unreadable metadata: the old files were not loadable anyway
    old.pop("previous", None)
    if "state_sha256" not in old:  # written by Velora: hash its state file once
        old["state_sha256"] = _sha256(state_path)
    return old


def _load_table_file(
    d: Path,
    entry: Mapping[str, Any],
    spec: Spec,
    capacity: int,
    device: torch.device,
    frame_stack: Mapping[str, int] | None = None,
) -> tuple[Table, dict[str, torch.Tensor]]:
    """The empty table and the saved item/sampler/limiter state named by ``metadata["table"]``.

    The table is built from the Velora metadata's spec, capacity and frame stack;
    only the sampler, rate limiter and ``max_times_sampled`` come from the JSON
    config (so a config edited to ask for a huge table allocates nothing). The
    state holds the storage's episode links too, which a frame-stacked buffer's
    stacks follow.
    """
    from safetensors.torch import load_file

    path = d / entry["file"]
    if not path.is_file():
        raise CheckpointError(f"the metadata names a table file {str(path)!r}, which is missing")
    if _sha256(path) != entry["sha256"]:
        raise CheckpointError(f"{str(path)!r} does not match its metadata's SHA-256 (corrupt)")
    cfg = entry["config"]
    want = {k: [v, "first"] for k, v in (frame_stack or {}).items()}
    if (cfg.get("frame_stack") or {}) != want:
        raise CheckpointError(
            f"the table file's config has frame_stack={cfg.get('frame_stack')!r}, the metadata "
            f"asks for {want or None}: the metadata does not belong to this save"
        )
    try:
        table = Table(
            spec,
            capacity,
            sampler=sampler_from_config(cfg["sampler"]),
            rate_limiter=rate_limiter_from_config(cfg["rate_limiter"]),
            max_times_sampled=cfg.get("max_times_sampled"),
            frame_stack=frame_stack,
            device=device,
            name=str(cfg.get("name", "replay_buffer")),
        )
    except (
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
        OverflowError,
        RecursionError,
        RuntimeError,
    ) as exc:
        raise CheckpointError(
            f"metadata['table']['config'] does not describe a table: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{str(path)!r} is not a readable safetensors file: {exc}") from exc
    return table, state


def _check_metadata(metadata: Any) -> dict[str, Any]:
    if not isinstance(metadata, Mapping):
        raise CheckpointError(
            "metadata must be the dict read from <prefix>metadata.json, "
            f"got {type(metadata).__name__}"
        )
    missing = [k for k in _META_KEYS if k not in metadata and k != "device"]
    if missing:
        raise CheckpointError(f"metadata is missing {missing}; expected keys {list(_META_KEYS)}")
    meta = dict(metadata)
    meta.setdefault("device", None)
    sdim = meta["state_dim"]
    # A shaped buffer's state_dim is its shape, a list.
    if isinstance(sdim, list) and (not sdim or not all(is_int(d) and d >= 1 for d in sdim)):
        raise CheckpointError(
            f"metadata['state_dim'] must be an int or a non-empty list of ints >= 1, got {sdim!r}"
        )
    meta.setdefault("state_dtype", "float32")
    if meta["state_dtype"] not in STATE_DTYPES:
        raise CheckpointError(
            f"metadata['state_dtype'] must be one of {sorted(STATE_DTYPES)}, got "
            f"{meta['state_dtype']!r}"
        )
    k = meta.get("frame_stack")
    if k is not None and (not is_int(k) or k < 1):
        raise CheckpointError(f"metadata['frame_stack'] must be an int >= 1 or null, got {k!r}")
    if k is not None and meta.get("table") is None:
        raise CheckpointError(
            f"metadata['frame_stack'] is {k}, but the metadata names no table file: a "
            "frame-stacked buffer's episode links are saved there (replaydb writes one); "
            "this metadata was not written by replaydb's save"
        )
    for k in ("capacity", "state_dim", "action_dim", "hidden_dim", "position", "size"):
        v = meta[k]
        if k == "state_dim" and isinstance(v, list):
            continue
        if not is_int(v) or v < 0:
            raise CheckpointError(f"metadata[{k!r}] must be an int >= 0, got {v!r}")
    if meta["device"] is not None and not isinstance(meta["device"], str):
        raise CheckpointError(
            f"metadata['device'] must be a string such as 'cpu' or null, got {meta['device']!r}"
        )
    if meta["capacity"] < 1 or meta["action_dim"] < 1 or meta["state_dim"] in (0, []):
        raise CheckpointError("metadata capacity, state_dim and action_dim must be >= 1")
    if meta["size"] > meta["capacity"]:
        raise CheckpointError(
            f"metadata size ({meta['size']}) exceeds capacity ({meta['capacity']})"
        )
    if meta["position"] >= meta["capacity"]:
        raise CheckpointError(
            f"metadata position ({meta['position']}) must be < capacity ({meta['capacity']})"
        )
    if meta["size"] < meta["capacity"] and meta["position"] != meta["size"]:
        raise CheckpointError(
            f"metadata position ({meta['position']}) must equal size ({meta['size']}) while "
            "the buffer is not full; the metadata does not describe a ring buffer"
        )
    if "state_sha256" in meta and not (
        isinstance(meta["state_sha256"], str) and len(meta["state_sha256"]) == 64
    ):
        raise CheckpointError(
            f"metadata['state_sha256'] must be a 64-character hex string, got "
            f"{meta['state_sha256']!r}"
        )
    prev = meta.get("previous")
    if prev is not None and not isinstance(prev, Mapping):
        raise CheckpointError(
            f"metadata['previous'] must be an object or null, got {type(prev).__name__}"
        )
    table = meta.get("table")
    if table is not None and not (
        isinstance(table, Mapping)
        and isinstance(table.get("file"), str)
        and "/" not in table["file"]
        and os.sep not in table["file"]
        and not table["file"].startswith(".")
        and isinstance(table.get("sha256"), str)
        and isinstance(table.get("config"), Mapping)
    ):
        raise CheckpointError(
            "metadata['table'] must be an object with 'file' (a file name in the same "
            f"directory), 'sha256' and 'config', got {table!r}"
        )
    return meta
