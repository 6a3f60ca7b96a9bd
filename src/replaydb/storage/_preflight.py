"""The memory preflight: a storage computes its size and checks it before allocating.

:func:`check_memory` compares the bytes a storage (or a huge sample) is about to
allocate with the device's free memory (:func:`available_memory`: psutil or
``/proc/meminfo`` for RAM, ``torch.cuda.mem_get_info`` for a GPU) and raises
:class:`~replaydb.errors.InsufficientMemoryError` naming the size, the free memory,
and the disk-backed alternative. A disk-backed storage checks its data files
against the free disk space instead (:func:`check_disk`). Setting
``REPLAYDB_MEMORY_CHECK=0`` skips both.
"""

from __future__ import annotations

import os
import shutil

import torch

from replaydb.errors import InsufficientMemoryError

__all__ = ["MEMORY_CHECK_ENV", "NO_DISK_STORAGE", "available_memory", "check_disk", "check_memory"]

#: Set this environment variable to ``0`` to skip the memory preflight.
MEMORY_CHECK_ENV = "REPLAYDB_MEMORY_CHECK"
NO_DISK_STORAGE = (
    "or keep the fields on disk: a disk-backed storage, Table(..., path=DIR), holds "
    "tables larger than memory in memory-mapped files"
)


def available_memory(device: torch.device) -> int | None:
    """Bytes that can be allocated on ``device`` now, or ``None`` where unknown.

    CPU: ``psutil.virtual_memory().available`` when psutil is installed, else
    ``MemAvailable`` from ``/proc/meminfo``. CUDA: the free bytes of
    ``torch.cuda.mem_get_info``.

    Example:
        >>> available_memory(torch.device("cpu")) is None or available_memory(
        ...     torch.device("cpu")) > 0
        True
    """
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        return int(psutil.virtual_memory().available)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.2f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")


def check_disk(nbytes: int, path: str | os.PathLike[str], what: str) -> None:
    """The disk preflight of a disk-backed storage: raise if ``nbytes`` more will not fit.

    Checks the free space (``shutil.disk_usage``) of the file system holding
    ``path`` (or its nearest existing parent). Skipped like :func:`check_memory`.

    Args:
        nbytes: Bytes the data files still need (their full size minus what exists).
        path: The storage's directory.
        what: What is allocated, for the message.

    Raises:
        InsufficientMemoryError: Naming the size, the free space and the ways out.

    Example:
        >>> check_disk(1024, "/tmp", "a test")
    """
    if os.environ.get(MEMORY_CHECK_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return
    where = os.path.abspath(path)
    while not os.path.exists(where) and os.path.dirname(where) != where:
        where = os.path.dirname(where)
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return
    if nbytes <= free:
        return
    raise InsufficientMemoryError(
        f"{what} needs {_size(nbytes)} more on the disk holding {str(path)!r}, but only "
        f"{_size(free)} is free there; use a smaller capacity or smaller fields, or another "
        f"directory. To allocate anyway, set the environment variable {MEMORY_CHECK_ENV}=0"
    )


def check_memory(nbytes: int, device: torch.device, what: str, fix: str) -> None:
    """The memory preflight: raise if ``nbytes`` will not fit in ``device``'s free memory.

    Skipped where the free memory is unknown, and when the environment variable
    ``REPLAYDB_MEMORY_CHECK`` is ``0`` (for users who know the kernel will find
    the memory, e.g. with overcommit and pages that are never touched).

    Args:
        nbytes: Bytes about to be allocated.
        device: Where.
        what: What is allocated, for the message (e.g. ``"table 'replay'"``).
        fix: How to need less, for the message.

    Raises:
        InsufficientMemoryError: Naming the size, the free memory and the ways out.

    Example:
        >>> check_memory(1024, torch.device("cpu"), "a test", "ask for less")
    """
    if os.environ.get(MEMORY_CHECK_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return
    free = available_memory(device)
    if free is None or nbytes <= free:
        return
    raise InsufficientMemoryError(
        f"{what} needs {_size(nbytes)} on {device}, but only {_size(free)} is available; "
        f"{fix}. To allocate anyway, set the environment variable {MEMORY_CHECK_ENV}=0"
    )
