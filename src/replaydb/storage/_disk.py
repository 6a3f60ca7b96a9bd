"""The data files of a disk-backed storage: one memory-mapped file per dtype block.

``Storage(..., path=DIR)`` keeps each packed dtype block (``[capacity, W]``,
row-major, native byte order) in ``DIR/data.<dtype>.bin``, mapped ``MAP_SHARED``,
so the storage's tensors *are* the files, and a two-int64 ``journal.bin``
(``generation``, ``intent``) that the table's commit protocol uses (see
:mod:`replaydb._disk`, which owns the state file and reopening). Files are created
sparse; pages take disk space when first written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from replaydb.errors import CheckpointError, DeviceError, InvalidArgumentError
from replaydb.spec import Spec, dtype_name

__all__ = ["JOURNAL", "DataFiles", "check_device", "missing_nbytes"]

JOURNAL = "journal.bin"


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
