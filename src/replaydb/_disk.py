"""Disk-backed tables: data in memory-mapped files, bookkeeping committed atomically.

Directory layout (``Table(..., path=DIR)``)
-------------------------------------------
==========================  ==================================================
``data.<dtype>.bin``        one dtype block of the storage (``[capacity, W]``,
                            row-major, native byte order), memory-mapped
                            ``MAP_SHARED``: the storage's tensors *are* these files
``journal.bin``             two int64, memory-mapped: ``generation`` (bumped by
                            every reset) and ``intent`` (the storage's cursor
                            after the write in progress, set *before* it writes)
``state.safetensors``       the committed bookkeeping: a table file of
                            :mod:`replaydb.checkpoint` (format, config, BLAKE2b
                            checksum) holding every tensor of ``Table.state_dict``
                            except the data blocks (row keys and links, item
                            records, sampler and rate limiter state, the cursor)
==========================  ==================================================

Commit (:meth:`Table.checkpoint`), under the table's lock: msync the data files,
write ``state.safetensors`` to a temporary name, fsync, rename, fsync the
directory (:func:`~replaydb.checkpoint.atomic_write_files`), then set ``intent``
to the committed cursor ``C``.

Reopen: read the committed state (``C`` and the generation ``g``) and the journal.
Every row written after the commit holds a key in ``[C, intent)``; those rows
(``key % capacity``) may hold newer data than the committed bookkeeping says, so
the items whose windows touch them are dropped and the rows are marked empty.
If the journal's generation differs from ``g`` (a reset after the commit), every
row is suspect and every item is dropped. The result is exactly the last
committed state minus the items whose data was overwritten since; writing
resumes at key ``C``. Against a killed process (SIGKILL) this is exact, because
the kernel keeps every store to a shared mapping. After a power loss, only what
the last commit flushed is on disk, and the journal may be older than the data.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from replaydb import checkpoint
from replaydb.checkpoint import (
    TABLE_FORMAT,
    atomic_write_files,
    read_table_file,
    remove_stale_temporaries,
    tensor_checksum,
)
from replaydb.errors import CheckpointError, InvalidArgumentError, InvalidTypeError
from replaydb.spec import Spec, dtype_name
from replaydb.storage._disk import JOURNAL as JOURNAL
from replaydb.storage._disk import DataFiles as DataFiles
from replaydb.storage._disk import check_device as check_device
from replaydb.storage._disk import missing_nbytes as missing_nbytes

if TYPE_CHECKING:
    from replaydb.table import Table

STATE = "state.safetensors"
DISK_FORMAT_VERSION = 1
_ROW_COLUMNS = ("storage.meta.", "items.key", "items.priority", "items.times_sampled")


def prepare(
    path: str | os.PathLike[str],
    device: torch.device,
    spec: Spec,
    capacity: Any,
    sequence_length: int,
) -> Disk:
    """Check ``path`` before the storage maps anything: device, and the stored layout.

    Raises:
        InvalidTypeError: If ``path`` is not a string or path.
        DeviceError: For a device other than the CPU.
        InvalidArgumentError: If the directory holds a table of another spec,
            capacity or sequence length.
        CheckpointError: If its state file is corrupt.
    """
    if not isinstance(path, str | os.PathLike) or not os.fspath(path):
        raise InvalidTypeError(
            f"path must be a directory name (a non-empty string or os.PathLike), got {path!r}"
        )
    check_device(device, path)
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise InvalidArgumentError(
            f"path {str(path)!r} is not a directory; give a directory for the disk-backed table"
        )
    stored: tuple[dict[str, Any], dict[str, torch.Tensor]] | None = None
    state = root / STATE
    if root.is_dir():
        remove_stale_temporaries(root)
    if state.exists() or state.is_symlink():
        meta, tensors = read_table_file(state)
        disk = meta.get("extra", {}).get("disk")
        if not isinstance(disk, dict) or not isinstance(disk.get("generation"), int):
            raise CheckpointError(
                f"{str(state)!r} is a table file but not a disk-backed table's state "
                "(no 'disk' metadata); load it with replaydb.checkpoint.load_table"
            )
        config = meta["config"]
        given = {
            "spec": spec.to_json(),
            "capacity": int(capacity) if isinstance(capacity, int | np.integer) else capacity,
            "sequence_length": sequence_length,
        }
        for key, value in given.items():
            if json.dumps(config.get(key), sort_keys=True) != json.dumps(value, sort_keys=True):
                raise InvalidArgumentError(
                    f"path {str(path)!r} holds a table with {key}={config.get(key)!r}, but "
                    f"{key}={value!r} was given; reopen it with Table.open(path) or use "
                    "another directory"
                )
        stored = (meta, tensors)
    return Disk(root, stored)


class Disk:
    """The disk side of one table: reopen or first commit, and later commits."""

    def __init__(
        self, root: Path, stored: tuple[dict[str, Any], dict[str, torch.Tensor]] | None
    ) -> None:
        self.root = root
        self._stored = stored
        self._generation = 0
        #: Items dropped on reopen because their rows were overwritten after the commit.
        self.dropped_items = 0

    def attach(self, table: Table) -> torch.Tensor | None:
        """Restore the committed state into ``table`` (just built), or commit it if new.

        Returns:
            The item slots whose windows touch rows overwritten after the commit
            (the table removes them, then calls :meth:`recovered`), or ``None``.
        """
        stored, self._stored = self._stored, None
        if stored is None:
            self.commit(table)
            return None
        meta, tensors = stored
        where = repr(str(self.root / STATE))
        config = meta["config"]
        mine = table.config()
        for key in ("pad", "max_times_sampled", "sampler", "rate_limiter"):
            if json.dumps(config.get(key), sort_keys=True) != json.dumps(mine[key], sort_keys=True):
                raise InvalidArgumentError(
                    f"path {str(self.root)!r} holds a table with {key}={config.get(key)!r}, "
                    f"but {key}={mine[key]!r} was given; reopen it with Table.open(path) or "
                    "use another directory"
                )
        _check_state(table, tensors, where)
        try:
            table.load_state_dict(tensors)
        except Exception as exc:  # a sampler or limiter rejected its state
            raise CheckpointError(f"{where}: the table state is invalid ({exc})") from exc
        files = table.storage.files
        assert files is not None
        total = table.storage.total
        if files.generation != meta["extra"]["disk"]["generation"]:
            dirty: torch.Tensor | None = torch.arange(table.capacity)
        elif files.intent > total:
            span = min(files.intent - total, table.capacity)
            dirty = torch.arange(total, total + span) % table.capacity
        else:
            dirty = None
        if dirty is None:
            return None
        self._generation = int(meta["extra"]["disk"]["generation"])
        return _stale_slots(table, dirty)

    def recovered(self, table: Table, dropped: int) -> None:
        """After the table removed the stale items: warn, and commit the result."""
        self.dropped_items = dropped
        if dropped:
            warnings.warn(
                f"disk-backed table at {str(self.root)!r}: {dropped} item(s) were dropped "
                "because their rows were overwritten after the last checkpoint (the "
                "process stopped before committing)",
                RuntimeWarning,
                stacklevel=4,
            )
        files = table.storage.files
        assert files is not None
        files.journal[0] = self._generation
        self.commit(table)

    def commit(self, table: Table) -> int:
        """msync the data, then atomically replace the state file; return the cursor."""
        files = table.storage.files
        assert files is not None
        with table.locked():
            files.flush()
            state = {
                k: v.contiguous()
                for k, v in table.state_dict().items()
                if not k.startswith("storage.group.")
            }
            config = table.config()
            meta = {
                "format": TABLE_FORMAT,
                # The table-file version read_table_file expects (defined with the format;
                # read by name so this module follows wherever it is defined).
                "format_version": int(getattr(checkpoint, "FORMAT_VERSION")),  # noqa: B009
                "config": config,
                "checksum": tensor_checksum(state, config),
                "extra": {
                    "disk": {"format_version": DISK_FORMAT_VERSION, "generation": files.generation}
                },
            }
            encoded = {"replaydb": json.dumps(meta)}

            def write(tmp: Path) -> None:
                from safetensors.torch import save_file

                save_file(state, str(tmp), encoded)

            atomic_write_files({self.root / STATE: write})
            total = table.storage.total
            files.committed(total)
            return total


def stored_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The config of the disk-backed table under ``path`` (checked, checksummed).

    Raises:
        CheckpointError: If there is no state file or it is corrupt.
    """
    state = Path(path) / STATE
    if not (state.exists() or state.is_symlink()):
        raise CheckpointError(
            f"{str(path)!r} holds no disk-backed table (no {STATE}); create one with "
            "Table(spec, capacity, path=path)"
        )
    config: dict[str, Any] = read_table_file(state)[0]["config"]
    return config


def _check_state(table: Table, tensors: Mapping[str, torch.Tensor], where: str) -> None:
    """Check stored bookkeeping against the freshly built table's own state (names, dtypes,
    shapes, ranges) before loading it."""
    fresh = {k: v for k, v in table.state_dict().items() if not k.startswith("storage.group.")}
    missing, unknown = sorted(set(fresh) - set(tensors)), sorted(set(tensors) - set(fresh))
    if missing or unknown:
        raise CheckpointError(
            f"{where}: tensors do not match the table (missing {missing}, unknown {unknown})"
        )
    total_t = tensors["storage.total"]
    if total_t.shape != (1,) or total_t.dtype != torch.int64 or int(total_t[0]) < 0:
        raise CheckpointError(f"{where}: 'storage.total' must be one int64 >= 0")
    total = int(total_t[0])
    n = min(total, table.capacity)
    for name, exp in fresh.items():
        got = tensors[name]
        if name.startswith(_ROW_COLUMNS):
            want: tuple[int, ...] = (n,)
        elif name.startswith("storage.streams."):
            want = (int(tensors["storage.streams.last_key"].shape[0]),)
        else:
            want = tuple(exp.shape)
        if got.dtype != exp.dtype or tuple(got.shape) != want:
            raise CheckpointError(
                f"{where}: tensor {name!r} is {dtype_name(got.dtype)}{list(got.shape)}, "
                f"expected {dtype_name(exp.dtype)}{list(want)}"
            )
    for name, low in (("storage.meta.key", -1), ("items.key", -1)):
        t = tensors[name]
        if t.numel() and (int(t.min()) < low or int(t.max()) >= max(total, 1)):
            raise CheckpointError(
                f"{where}: tensor {name!r} holds values outside [{low}, {max(total, 1)}); "
                "the file is corrupt or was not written by replaydb"
            )


def _stale_slots(table: Table, rows: torch.Tensor) -> torch.Tensor:
    """Mark ``rows`` empty; return the slots of the items whose windows touch them."""
    storage = table.storage
    dirty = torch.zeros(table.capacity, dtype=torch.bool)
    dirty[rows] = True
    keys = table.items(fields=()).keys
    stale = torch.empty(0, dtype=torch.int64)
    if keys.numel():
        windows = storage.window_rows(keys, table.sequence_length)
        stale = keys[dirty[windows].any(dim=1)] % table.capacity
    storage.key[rows] = -1
    return stale
