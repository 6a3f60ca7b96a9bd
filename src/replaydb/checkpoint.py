"""Checkpoints: safetensors for tensors, JSON for metadata, never pickle.

Three layouts live here:

* **A table file** (:func:`save_table` / :func:`load_table`): one ``.safetensors``
  file whose header metadata holds the JSON description (format, version, table
  config, a BLAKE2b checksum over every tensor). One file, so one atomic rename.
* **A checkpoint directory** (:func:`write_checkpoint` / :func:`latest_checkpoint` /
  :func:`read_checkpoint`), the layout of :class:`~replaydb.ReplayBufferManager`:
  ``<root>/ckpt-<20-digit ns timestamp>/`` holding ``<table>.safetensors`` files, a
  ``manifest.json`` and, written last, a ``COMPLETE`` marker. It is assembled under a
  hidden temporary name and renamed into place, so a crash at any point leaves the
  previous checkpoint loadable; pruning deletes only directories this module wrote.
* **Atomic files** (:func:`atomic_write_files`): used by the Velora-format buffer.

Every write goes to a temporary name in the same directory, is fsynced, then
renamed; the directory is fsynced after the rename.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from replaydb.errors import CheckpointError
from replaydb.spec import dtype_name

__all__ = [
    "CHECKPOINT_FORMAT",
    "TABLE_FORMAT",
    "atomic_write_files",
    "commit_checkpoint",
    "latest_checkpoint",
    "list_checkpoints",
    "load_table",
    "read_checkpoint",
    "read_table_file",
    "save_table",
    "tensor_checksum",
    "write_checkpoint",
]

TABLE_FORMAT = "replaydb.table"
CHECKPOINT_FORMAT = "replaydb.checkpoint"
FORMAT_VERSION = 1
_CKPT_RE = re.compile(r"^ckpt-(\d{20})$")
_MARKER = "COMPLETE"
_MANIFEST = "manifest.json"


def tensor_checksum(tensors: Mapping[str, torch.Tensor], config: Any = None) -> str:
    """BLAKE2b digest over names, dtypes, shapes and bytes of ``tensors`` (sorted by name).

    Args:
        tensors: The tensors to digest.
        config: JSON-serializable metadata digested with them (a table's config), so
            a flipped byte in the JSON is caught too.

    Example:
        >>> len(tensor_checksum({"a": torch.zeros(3)}))
        32
    """
    h = hashlib.blake2b(digest_size=16)
    if config is not None:
        h.update(json.dumps(config, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{dtype_name(t.dtype)}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")


def atomic_write_files(writers: Mapping[Path, Callable[[Path], None]]) -> None:
    """Write several files so that each appears whole or not at all.

    Each writer is called with a temporary path beside its target; when every
    writer has succeeded, the files are fsynced and renamed into place in the
    order given. On any error the temporary files are removed and the targets
    are untouched.

    Args:
        writers: ``target path -> function writing that file's content to a path``.

    Raises:
        OSError: From the writers or the file system (disk full, read-only, ...).
    """
    tmps: list[tuple[Path, Path]] = []
    try:
        for target, write in writers.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = _tmp_name(target)
            tmps.append((tmp, target))
            write(tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        for tmp, target in tmps:
            os.replace(tmp, target)
        for parent in {t.parent for _, t in tmps}:
            _fsync_dir(parent)
    finally:
        for tmp, _ in tmps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _save_safetensors(
    tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str], path: Path
) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path), dict(meta))


def read_table_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a table file's metadata and tensors, checking format and checksum.

    Returns:
        ``(metadata, tensors)``.

    Raises:
        CheckpointError: If the file is missing, truncated, corrupt or not a table file.
    """
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"no table file at {str(p)!r}; check the path")
    try:
        with safe_open(str(p), framework="pt") as fh:
            raw_meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(
            f"{str(p)!r} is not a readable safetensors file (truncated or corrupt?): {exc}"
        ) from exc
    if "replaydb" not in raw_meta:
        raise CheckpointError(
            f"{str(p)!r} is a safetensors file but not a replaydb table "
            "(no 'replaydb' metadata); Velora-format buffers load with ReplayBuffer.load"
        )
    try:
        meta = json.loads(raw_meta["replaydb"])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{str(p)!r}: the metadata is not valid JSON ({exc})") from exc
    if meta.get("format") != TABLE_FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{str(p)!r}: format {meta.get('format')!r} version {meta.get('format_version')!r} "
            f"is not {TABLE_FORMAT!r} version {FORMAT_VERSION}; upgrade replaydb to read it"
        )
    digest = tensor_checksum(tensors, meta.get("config"))
    if digest != meta.get("checksum"):
        raise CheckpointError(
            f"{str(p)!r}: checksum mismatch (stored {meta.get('checksum')}, computed {digest}); "
            "the file is corrupt — restore it from another checkpoint"
        )
    return meta, tensors


def save_table(
    table: Any, path: str | os.PathLike[str], extra: Mapping[str, Any] | None = None
) -> Path:
    """Save a table to one ``.safetensors`` file, atomically.

    Args:
        table: The :class:`~replaydb.Table` to save.
        path: The file to write (``.safetensors`` is appended if missing).
        extra: More JSON-serializable metadata to store beside the table's config.

    Returns:
        The path written.

    Example:
        >>> from replaydb import Table, Spec
        >>> save_table(Table(Spec({"x": (1,)}), 4), "/tmp/t.safetensors").name
        't.safetensors'
    """
    p = Path(path)
    if p.suffix != ".safetensors":
        p = p.with_name(p.name + ".safetensors")
    if p.is_dir():
        raise CheckpointError(f"{str(p)!r} is a directory; give a file path to save the table to")
    with table._cond:
        # state_dict() holds views of the live CPU tensors: copy them under the lock, or
        # a concurrent insert changes them between the checksum and the write.
        tensors = {k: v.clone() for k, v in table.state_dict().items()}
        config = table.config()
    meta = {
        "format": TABLE_FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config,
        "checksum": tensor_checksum(tensors, config),
        "extra": dict(extra or {}),
    }
    encoded = {"replaydb": json.dumps(meta)}
    atomic_write_files({p: lambda tmp: _save_safetensors(tensors, encoded, tmp)})
    return p


def load_table(path: str | os.PathLike[str], device: torch.device | str | None = None) -> Any:
    """Load a table saved by :func:`save_table`, checking it against its metadata.

    Args:
        path: The ``.safetensors`` file (the suffix may be omitted).
        device: Where to put the table (default: where it was saved from).

    Returns:
        The restored :class:`~replaydb.Table`; sampling continues exactly as it would have.

    Raises:
        CheckpointError: If the file is missing, corrupt, or inconsistent.
    """
    from replaydb.table import Table

    p = Path(path)
    if not p.exists() and p.suffix != ".safetensors":
        p = p.with_name(p.name + ".safetensors")
    meta, tensors = read_table_file(p)
    try:
        table = Table.from_config(meta["config"], device=device)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{str(p)!r}: the table config is invalid ({exc})") from exc
    except (RuntimeError, AssertionError) as exc:  # e.g. saved on a GPU this host lacks
        where = device if device is not None else meta["config"].get("device")
        raise CheckpointError(
            f"{str(p)!r}: cannot create the table on device {str(where)!r} ({exc}); "
            "pass device='cpu' (or another device this host has) to load it"
        ) from exc
    _check_state(table, tensors, str(p))
    table.load_state_dict(tensors)
    return table


_PREFIX_KEYS = (
    "storage.group.",
    "storage.meta.",
    "items.key",
    "items.priority",
    "items.times_sampled",
)


def _check_state(table: Any, tensors: Mapping[str, torch.Tensor], where: str) -> None:
    expected = table.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unknown = sorted(set(tensors) - set(expected))
    if missing or unknown:
        raise CheckpointError(
            f"{where}: tensors do not match the table config (missing {missing}, unknown {unknown})"
        )
    total_t = tensors["storage.total"]
    if total_t.shape != (1,) or total_t.dtype != torch.int64 or int(total_t[0]) < 0:
        raise CheckpointError(f"{where}: 'storage.total' must be one int64 >= 0")
    n = min(int(total_t[0]), table.capacity)
    for name, exp in expected.items():
        got = tensors[name]
        if got.dtype != exp.dtype:
            raise CheckpointError(
                f"{where}: tensor {name!r} has dtype {dtype_name(got.dtype)}, "
                f"expected {dtype_name(exp.dtype)}"
            )
        if name.startswith(_PREFIX_KEYS):
            want: tuple[int, ...] = (n, *exp.shape[1:])
        elif name.startswith("storage.streams."):
            want = (int(tensors["storage.streams.last_key"].shape[0]),)
        else:
            want = tuple(exp.shape)
        if tuple(got.shape) != want:
            raise CheckpointError(
                f"{where}: tensor {name!r} has shape {tuple(got.shape)}, expected {want}"
            )
    keys = tensors["items.key"]
    if keys.numel() and int(keys.max()) >= int(total_t[0]):
        raise CheckpointError(f"{where}: item keys exceed the number of steps written")


# ---------------------------------------------------------------- directories
def list_checkpoints(root: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (only directories replaydb wrote)."""
    r = Path(root)
    if not r.is_dir():
        return []
    found = [
        d for d in r.iterdir() if d.is_dir() and _CKPT_RE.match(d.name) and (d / _MARKER).is_file()
    ]
    return sorted(found, key=lambda d: d.name)


def latest_checkpoint(root: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint directory under ``root``, or ``None``."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def write_checkpoint(
    root: str | os.PathLike[str],
    tables: Mapping[str, Any],
    *,
    keep: int = 1,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write every table into a new checkpoint directory under ``root``.

    Args:
        root: The checkpoint root (created if missing).
        tables: ``name -> Table``.
        keep: How many complete checkpoints to keep (older ones that replaydb wrote are
            deleted; nothing else in ``root`` is touched).
        extra: JSON-serializable data stored in the manifest (e.g. a data spec nest).

    Returns:
        The new checkpoint directory.

    Raises:
        CheckpointError: If ``root`` exists and is not a directory, ``keep < 1``, or two
            table names would be saved to the same file.
        OSError: If the disk is full or read-only (the previous checkpoint is untouched).
    """
    if keep < 1:
        raise CheckpointError(f"keep must be >= 1, got {keep}")
    r = Path(root)
    if r.exists() and not r.is_dir():
        raise CheckpointError(f"checkpoint root {str(r)!r} is a file; give a directory path")
    files: dict[str, str] = {}  # lower-cased file name -> table name
    for name in tables:
        file = f"{_safe(name)}.safetensors"
        if file.lower() in files:
            raise CheckpointError(
                f"table names {files[file.lower()]!r} and {name!r} would both be saved to "
                f"{file!r}; rename one of them"
            )
        files[file.lower()] = name

    def fill(tmp: Path) -> dict[str, Any]:
        entries = {}
        for name, table in tables.items():
            path = save_table(table, tmp / f"{_safe(name)}.safetensors")
            entries[name] = {"file": path.name, "size": len(table), "steps": table.num_steps}
        return {"tables": entries, "extra": dict(extra or {})}

    return commit_checkpoint(r, fill, keep=keep)


def commit_checkpoint(
    root: str | os.PathLike[str],
    fill: Callable[[Path], Mapping[str, Any]],
    *,
    keep: int = 1,
) -> Path:
    """Stage, complete and publish one checkpoint directory; prune older ones.

    The shared transaction under every checkpoint writer: a hidden temporary
    directory is made under ``root``; ``fill(tmp)`` writes the data files into it and
    returns the manifest entries (``tables``, ``extra``, ...); the manifest and then
    the ``COMPLETE`` marker are written; the directory is renamed to
    ``ckpt-<timestamp>``. On any error the temporary directory is removed and the
    previous checkpoint stays the latest. Half-written directories of writers that
    died are removed first.

    Args:
        root: The checkpoint root (created if missing).
        fill: Writes the payload into the temporary directory; returns manifest entries.
        keep: How many complete checkpoints to keep (only replaydb's are deleted).

    Returns:
        The new checkpoint directory.

    Raises:
        CheckpointError: If ``root`` is a file or ``keep < 1``.
    """
    if keep < 1:
        raise CheckpointError(f"keep must be >= 1, got {keep}")
    r = Path(root)
    if r.exists() and not r.is_dir():
        raise CheckpointError(f"checkpoint root {str(r)!r} is a file; give a directory path")
    r.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(r)
    stamp = time.time_ns()
    latest = latest_checkpoint(r)
    if latest is not None:
        stamp = max(stamp, int(latest.name[5:]) + 1)
    final = r / f"ckpt-{stamp:020d}"
    tmp = r / f".ckpt-{stamp:020d}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        manifest: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "format_version": FORMAT_VERSION,
            "created_unix_ns": stamp,
            "tables": {},
            "extra": {},
        }
        manifest.update(fill(tmp))
        text = json.dumps(manifest, indent=2)
        atomic_write_files({tmp / _MANIFEST: lambda p: _write_text(p, text)})
        atomic_write_files({tmp / _MARKER: lambda p: _write_text(p, "ok\n")})
        os.replace(tmp, final)
        _fsync_dir(r)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(r)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_checkpoint(
    path: str | os.PathLike[str], device: torch.device | str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load every table of a checkpoint directory.

    Args:
        path: A checkpoint directory, or a root holding them (the newest complete one
            is taken).
        device: Where to put the tables.

    Returns:
        ``(tables, manifest)``: ``name -> Table`` and the manifest dict.

    Raises:
        CheckpointError: If there is no complete checkpoint or a file is damaged.
    """
    p = Path(path)
    if not (p / _MARKER).is_file():
        latest = latest_checkpoint(p)
        if latest is None:
            raise CheckpointError(
                f"no complete replaydb checkpoint at {str(p)!r}; "
                "write one with write_checkpoint() (a manager's checkpoint()) first"
            )
        p = latest
    try:
        manifest = json.loads((p / _MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{str(p)!r}: manifest unreadable ({exc})") from exc
    if manifest.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{str(p)!r}: not a replaydb checkpoint directory")
    if manifest.get("backend", "local") != "local":
        raise CheckpointError(
            f"{str(p)!r} was written by the {manifest['backend']!r} backend (one file per shard); "
            "restore it with Server(..., backend='ray') / ReplayBufferManager(..., backend='ray') "
            "or replaydb.ray_backend.RayServer.from_checkpoint(path)"
        )
    tables = {
        name: load_table(p / entry["file"], device=device)
        for name, entry in manifest.get("tables", {}).items()
    }
    return tables, manifest


def _remove_stale_temporaries(root: Path) -> None:
    """Delete half-written checkpoint directories whose writing process is gone."""
    for d in root.glob(".ckpt-*.tmp-*"):
        try:  # .ckpt-<stamp>.tmp-<pid>-<random>
            pid = int(d.name.split(".tmp-", 1)[1].split("-", 1)[0])
        except (IndexError, ValueError):
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            continue


def _write_text(path: Path, text: str) -> None:
    path.write_text(text)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "table"
