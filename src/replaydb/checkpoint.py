"""Checkpoints: safetensors for tensors, JSON for metadata, never pickle.

Three layouts live here:

* **A table file** (:func:`save_table` / :func:`load_table`): one ``.safetensors``
  file whose header metadata holds the JSON description (format, version, table
  config, a BLAKE2b checksum over every tensor). One file, so one atomic rename.
* **A checkpoint directory** (:func:`write_checkpoint` / :func:`latest_checkpoint` /
  :func:`read_checkpoint`), the layout of :class:`~replaydb.ReplayBufferManager`:
  ``<root>/ckpt-<20-digit ns timestamp>/`` holding ``<table>.safetensors`` files, a
  ``manifest.json`` (checksummed) and, written last, a ``COMPLETE`` marker. It is assembled under a
  hidden temporary name and renamed into place, so a crash at any point leaves the
  previous checkpoint loadable; pruning deletes only directories this module wrote.
* **Atomic files** (:func:`atomic_write_files`): several files written as one step, each
  to a temporary name, fsynced, then renamed (the manifest and marker above use it; the
  Velora-format buffer has its own two-file commit protocol in ``replaydb.buffer._files``).

Every write goes to a temporary name in the same directory, is fsynced, then
renamed; the directory is fsynced after the rename. Temporaries left by a writer
that was killed are removed by the next save into that directory (or load from
it) once their process is gone.

Files are read as hostile input: every file a manifest names must resolve inside
its checkpoint directory (:func:`confined_path`); JSON is read from regular files
only and at most :data:`MAX_JSON_BYTES` of it (:func:`read_json`); every JSON
value is checked for its type before use; and a table file's config is checked
against its tensors before the table is allocated. Whatever is wrong with a file
raises :class:`~replaydb.errors.CheckpointError` naming the file and the key.
The reading primitives live in :mod:`replaydb._untrusted` and the table file format
(with :func:`atomic_write_files`) in :mod:`replaydb._table_file`; both are re-exported here.
"""

from __future__ import annotations

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

from replaydb._table_file import (
    FORMAT_VERSION,
    TABLE_FORMAT,
    atomic_write_files,
    fsync_dir,
    load_table,
    read_table_file,
    save_table,
    tensor_checksum,
)
from replaydb._untrusted import (
    MAX_JSON_BYTES,
    confined_path,
    expect_int,
    expect_json,
    parse_json,
    process_is_gone,
    read_json,
    read_small_file,
    remove_stale_temporaries,
)
from replaydb._validate import is_int
from replaydb.errors import CheckpointError

__all__ = [
    "CHECKPOINT_FORMAT",
    "MAX_JSON_BYTES",
    "TABLE_FORMAT",
    "atomic_write_files",
    "commit_checkpoint",
    "confined_path",
    "expect_json",
    "latest_checkpoint",
    "list_checkpoints",
    "load_table",
    "parse_json",
    "read_checkpoint",
    "read_json",
    "read_manifest",
    "read_small_file",
    "read_table_file",
    "remove_stale_temporaries",
    "save_table",
    "tensor_checksum",
    "write_checkpoint",
]

CHECKPOINT_FORMAT = "replaydb.checkpoint"
_CKPT_RE = re.compile(r"^ckpt-(\d{20})$")
_MARKER = "COMPLETE"
_MANIFEST = "manifest.json"


# ---------------------------------------------------------------- directories


def _check_keep(keep: Any) -> None:
    if not is_int(keep) or keep < 1:
        raise CheckpointError(f"keep must be an int >= 1 (checkpoints kept), got {keep!r}")


def list_checkpoints(root: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (only directories replaydb wrote)."""
    r = Path(root)
    if not r.is_dir():
        return []
    found = [
        d
        for d in r.iterdir()
        if _CKPT_RE.match(d.name)
        and not d.is_symlink()  # a link may lead anywhere; replaydb never writes one
        and d.is_dir()
        and (d / _MARKER).is_file()
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
    _check_keep(keep)
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
    _check_keep(keep)
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
        manifest.pop("checksum", None)
        manifest["checksum"] = _manifest_checksum(manifest)
        text = json.dumps(manifest, indent=2)
        atomic_write_files({tmp / _MANIFEST: lambda p: _write_text(p, text)})
        atomic_write_files({tmp / _MARKER: lambda p: _write_text(p, "ok\n")})
        os.replace(tmp, final)
        fsync_dir(r)
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
        if p.is_dir():
            _remove_stale_temporaries(p)  # half-written checkpoints of dead writers
        latest = latest_checkpoint(p)
        if latest is None:
            raise CheckpointError(
                f"no complete replaydb checkpoint at {str(p)!r}; "
                "write one with write_checkpoint() (a manager's checkpoint()) first"
            )
        p = latest
    manifest = read_manifest(p)
    if manifest.get("backend", "local") != "local":
        raise CheckpointError(
            f"{str(p)!r} was written by the {manifest['backend']!r} backend (one file per shard); "
            "restore it with Server(..., backend='ray') / ReplayBufferManager(..., backend='ray') "
            "or replaydb.ray.RayServer.from_checkpoint(path)"
        )
    tables = {}
    for name, entry in manifest["tables"].items():
        at = f"{str(p / _MANIFEST)!r}: tables.{name}"
        table = load_table(confined_path(p, entry["file"], f"{at}.file"), device=device)
        for key, value in (("size", len(table)), ("steps", table.num_steps)):
            if key in entry and entry[key] != value:
                raise CheckpointError(
                    f"{at}.{key} is {entry[key]}, but the table file holds {value}; "
                    "the checkpoint is inconsistent"
                )
        tables[name] = table
    return tables, manifest


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check the ``manifest.json`` of one checkpoint directory (no tables loaded).

    Args:
        path: The checkpoint directory (``ckpt-<timestamp>``).

    Returns:
        The manifest, with its checksum (when it has one) and JSON types checked:
        ``format``, ``format_version``,
        ``tables`` (``name -> {"file": str, ...}``; file names are not yet
        resolved, use :func:`confined_path`), ``extra`` (an object) and, when
        present, ``backend`` (a string).

    Raises:
        CheckpointError: If the manifest is missing, unreadable, too large, outside
            the directory, or a value has the wrong type.

    Example:
        >>> from replaydb import Table, Spec
        >>> d = write_checkpoint("/tmp/ckpts-doc", {"t": Table(Spec({"x": (1,)}), 4)})
        >>> read_manifest(d)["tables"]["t"]["file"]
        't.safetensors'
    """
    p = Path(path)
    where = repr(str(p / _MANIFEST))
    try:
        manifest = read_json(confined_path(p, _MANIFEST, "manifest.json"))
    except CheckpointError as exc:
        raise CheckpointError(f"{where}: manifest unreadable ({exc})") from exc
    expect_json(manifest, dict, f"{where}: the manifest")
    if manifest.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{str(p)!r}: not a replaydb checkpoint directory")
    if manifest.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise CheckpointError(
            f"{where}: format_version {manifest.get('format_version')!r} is not "
            f"{FORMAT_VERSION}; upgrade replaydb to read it"
        )
    if "checksum" in manifest:  # manifests of replaydb < 0.3 have none
        stored = expect_json(manifest["checksum"], str, f"{where}: checksum")
        computed = _manifest_checksum(manifest)
        if stored != computed:
            raise CheckpointError(
                f"{where}: checksum mismatch (stored {stored}, computed {computed}); the "
                "manifest is corrupt — restore the checkpoint from a copy or use an older one"
            )
    expect_json(manifest.get("backend", "local"), str, f"{where}: backend")
    expect_json(manifest.setdefault("extra", {}), dict, f"{where}: extra")
    if "tables" not in manifest:
        raise CheckpointError(f"{where} has no 'tables' key; the manifest is incomplete")
    tables = expect_json(manifest["tables"], dict, f"{where}: tables")
    for name, entry in tables.items():
        at = f"{where}: tables.{name}"
        expect_json(entry, dict, at)
        if "file" not in entry:
            raise CheckpointError(f"{at} has no 'file' key")
        expect_json(entry["file"], str, f"{at}.file")
        for key in ("size", "steps"):
            if key in entry:
                expect_int(entry[key], f"{at}.{key}")
    return dict(manifest)


def _manifest_checksum(manifest: Mapping[str, Any]) -> str:
    """BLAKE2b of the manifest's canonical JSON, its ``checksum`` key left out."""
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    try:
        text = json.dumps(body, sort_keys=True)
    except (RecursionError, ValueError, TypeError) as exc:
        raise CheckpointError(f"the manifest cannot be digested ({exc})") from exc
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _remove_stale_temporaries(root: Path) -> None:
    """Delete half-written checkpoint directories whose writing process is gone."""
    for d in root.glob(".ckpt-*.tmp-*"):
        try:  # .ckpt-<stamp>.tmp-<pid>-<random>
            pid = int(d.name.split(".tmp-", 1)[1].split("-", 1)[0])
        except (IndexError, ValueError):
            continue
        if d.is_dir() and not d.is_symlink() and process_is_gone(pid):
            shutil.rmtree(d, ignore_errors=True)


def _write_text(path: Path, text: str) -> None:
    path.write_text(text)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "table"
