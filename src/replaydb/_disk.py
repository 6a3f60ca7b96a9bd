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
from replaydb.errors import CheckpointError, DeviceError, InvalidArgumentError, InvalidTypeError
from replaydb.spec import Spec, dtype_name

if TYPE_CHECKING:
    from replaydb.table import Table

STATE = "state.safetensors"
JOURNAL = "journal.bin"
DISK_FORMAT_VERSION = 1
_ROW_COLUMNS = ("storage.meta.", "items.key", "items.priority", "items.times_sampled")


def _data_name(dtype: torch.dtype) -> str:
    return f"data.{dtype_name(dtype)}.bin"


def _widths(spec: Spec) -> dict[torch.dtype, int]:
    widths: dict[torch.dtype, int] = {}
    for field in spec.values():
        widths[field.dtype] = widths.get(field.dtype, 0) + field.numel
    return widths


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()


def check_device(device: torch.device, path: str | os.PathLike[str]) -> None:
    """Disk-backed storage is CPU memory: reject any other device."""
    if device.type != "cpu":
        raise DeviceError(
            f"device {str(device)!r}: a disk-backed table (path={str(path)!r}) lives in "
            "memory-mapped files on the CPU; use device='cpu' (move samples to the GPU "
            "with .to(device)) or drop path for an in-memory table on the GPU"
        )


def missing_nbytes(path: str | os.PathLike[str], spec: Spec, capacity: int) -> int:
    """Bytes the data files of ``spec`` still need under ``path`` (their size minus what exists)."""
    root = Path(path)
    need = 0
    for dt, w in _widths(spec).items():
        size = capacity * w * _itemsize(dt)
        f = root / _data_name(dt)
        have = f.stat().st_size if f.is_file() else 0
        need += max(size - have, 0)
    return need


class DataFiles:
    """The memory-mapped data blocks and journal of one disk-backed storage.

    Args:
        path: The directory (created if missing).
        widths: Columns per dtype block.
        capacity: Rows.

    Raises:
        CheckpointError: If a data file exists with another size (another spec or
            capacity), or is not a regular file.
    """

    def __init__(
        self, path: str | os.PathLike[str], widths: Mapping[torch.dtype, int], capacity: int
    ) -> None:
        self.root = Path(path)
        if self.root.exists() and not self.root.is_dir():
            raise InvalidArgumentError(
                f"path {str(path)!r} is not a directory; give a directory for the disk-backed table"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        self._maps: list[np.memmap[Any, Any]] = []
        self.groups: dict[torch.dtype, torch.Tensor] = {}
        for dt, w in widths.items():
            raw = self._map(self.root / _data_name(dt), capacity * w * _itemsize(dt))
            self.groups[dt] = raw.view(dt).view(capacity, w)
        journal = self._map(self.root / JOURNAL, 16)
        self._journal_map = self._maps[-1]
        self.journal: np.ndarray[Any, Any] = journal.view(torch.int64).numpy()

    def _map(self, path: Path, nbytes: int) -> torch.Tensor:
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise CheckpointError(f"{str(path)!r} is not a regular file; remove it")
        if path.exists():
            size = path.stat().st_size
            if size != nbytes:
                raise CheckpointError(
                    f"{str(path)!r} holds {size} bytes, expected {nbytes}: the directory "
                    "belongs to a table of another spec or capacity; open it with "
                    "Table.open(path) or use another directory"
                )
        else:
            with open(path, "xb") as fh:
                fh.truncate(nbytes)  # sparse: pages take disk space when first written
        if nbytes == 0:
            return torch.empty(0, dtype=torch.uint8)
        mm = np.memmap(path, dtype=np.uint8, mode="r+", shape=(nbytes,))
        self._maps.append(mm)
        return torch.from_numpy(mm)

    @property
    def generation(self) -> int:
        """Resets since the directory was created."""
        return int(self.journal[0])

    @property
    def intent(self) -> int:
        """The cursor after the last write begun (or the last commit)."""
        return int(self.journal[1])

    def will_write(self, new_total: int) -> None:
        """Record, before writing, that rows up to key ``new_total`` may change."""
        if new_total > self.journal[1]:
            self.journal[1] = new_total

    def will_reset(self) -> None:
        """Record, before zeroing, that every row changes."""
        self.journal[0] += 1
        self.journal[1] = 0

    def flush(self) -> None:
        """msync every data file."""
        for mm in self._maps:
            mm.flush()

    def committed(self, total: int) -> None:
        """After a commit at cursor ``total``: no row is newer than the state file."""
        self.journal[1] = total
        self._journal_map.flush()


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
