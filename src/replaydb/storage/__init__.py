"""Storage: a ring of preallocated step rows on one device, in memory or on disk.

The package holds one noun, :class:`Storage`, and what it is built from:

* ``_memory`` - :class:`Storage` itself: the packed layout, keys, episode links,
  writes, windows and gathers (see its module docstring for the data layout).
* ``_rings`` - the device paths, one implementation object per device kind, picked
  once when a storage is built (``Storage.engine``).
* ``_preflight`` - the memory preflight (:func:`check_memory`,
  :func:`available_memory`) and the disk preflight (:func:`check_disk`).
* ``_disk`` - the memory-mapped data files of a disk-backed storage
  (``Storage(..., path=DIR)``).

Example:
    >>> import torch
    >>> from replaydb.spec import Spec
    >>> s = Storage(Spec({"x": (2,)}), capacity=4)
    >>> s.append({"x": torch.ones(3, 2)}).keys.tolist()
    [0, 1, 2]
"""

from __future__ import annotations

from replaydb._devices import resolve_device as resolve_device

# The end codes are defined beside the links and re-exported here (their public home).
from replaydb._links import END_NONE as END_NONE
from replaydb._links import END_TERMINATED as END_TERMINATED
from replaydb._links import END_TRUNCATED as END_TRUNCATED
from replaydb._links import MAX_STREAMS as MAX_STREAMS
from replaydb.storage._memory import AppendResult as AppendResult
from replaydb.storage._memory import Storage as Storage
from replaydb.storage._preflight import MEMORY_CHECK_ENV as MEMORY_CHECK_ENV
from replaydb.storage._preflight import NO_DISK_STORAGE as NO_DISK_STORAGE
from replaydb.storage._preflight import available_memory as available_memory
from replaydb.storage._preflight import check_disk as check_disk
from replaydb.storage._preflight import check_memory as check_memory

__all__ = [
    "MEMORY_CHECK_ENV",
    "AppendResult",
    "Storage",
    "available_memory",
    "check_disk",
    "check_memory",
    "resolve_device",
]
