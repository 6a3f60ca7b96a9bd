"""DataLoader batches handed to the main process through reused shared-memory slots.

A ``DataLoader`` worker hands each tensor of a batch to the main process as a
fresh shared-memory segment: torch copies the tensor into it, then the main
process fetches its file descriptor from the worker (a connection and a key
handshake per segment), maps it, and frees it with the batch. For a 7 MB batch
of frames that costs the worker a copy into fresh pages (page faults and
zeroing) and the main process a round trip and a page release per segment.

Here a worker gathers a batch straight into a *slot*: a file under ``/dev/shm``
(RAM) that it maps once and reuses. The main process maps each slot once too,
so a batch travels as a few hundred bytes (slot, offsets, shapes; small tensors
by value). A slot is reused only once the main process let go of the batch:

* Each slot begins with a header of 64-bit words: ``state``, ``serial`` (the
  slot's current batch), ``exited`` (the worker is gone).
* ``state`` goes 0 (free) -> 1 (sent, written by the worker when the batch is
  pickled) -> 2 (claimed, written by the main process when it unpickles the
  batch) -> 0 (written by the main process when the last tensor viewing the
  batch is freed: the tensors hold a numpy array whose finalizer does it).
  Each transition has one writer, so no atomics are needed.
* A batch unpickled twice, or after its slot moved on, is an error, never
  another batch's data. When the main process forks while it holds batches,
  their slots go to 3 (retired, never reused): the child shares their pages.
* The worker reuses a slot only when its own tensors of the slot are freed too
  and ``state`` is 0; past :data:`MAX_SLOTS` slots in use, or where
  ``/dev/shm`` has no room for another slot, it falls back to plain memory
  (torch's own hand-over).

The main process removes a slot's file once it has mapped it, and at its exit
the directories of the workers it heard from; the worker removes its
directory when it exits (the main process keeps the mappings of batches it
holds). Only where both are killed with SIGKILL is
``/dev/shm/replaydb-batches-<pid>-*`` left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import mmap
import os
import pickle
import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass, field
from multiprocessing import util
from typing import Any

import numpy as np
import torch

from replaydb.errors import ClosedError, ReplayError
from replaydb.shared import _wire

#: Bytes before a slot's data (its header words, 64-byte aligned).
HEADER = 64
#: Slots a worker keeps in use at most (batches built, in flight or held by the main process).
MAX_SLOTS = 32
#: Tensors smaller than this that live outside a slot travel by value.
SMALL = 1 << 16
_STATE, _SERIAL, _EXITED = 0, 1, 2
_FREE, _SENT, _CLAIMED, _RETIRED = 0, 1, 2, 3
_ALIGN = 64


def aligned(n: int) -> int:
    """``n`` rounded up to the slot alignment (64 bytes)."""
    return -(-n // _ALIGN) * _ALIGN


# ------------------------------------------------------------------ worker side
@dataclass(eq=False)
class _Slot:
    path: str
    size: int
    mm: mmap.mmap
    header: np.ndarray[Any, Any]
    busy: bool = False
    serial: int = 0


@dataclass(eq=False)
class _Lease:
    slot: _Slot
    serial: int
    sent: bool = False


@dataclass(eq=False)
class _Pool:
    dir: str
    pid: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    slots: list[_Slot] = field(default_factory=list)
    #: Storage data pointer -> the lease of the slot it views.
    leases: dict[int, _Lease] = field(default_factory=dict)
    made: int = 0

    def take(self, nbytes: int) -> _Slot | None:
        with self.lock:
            for s in self.slots:
                fits = nbytes <= s.size <= 2 * nbytes + (1 << 20)
                if fits and not s.busy and int(s.header[_STATE]) == _FREE:
                    return self._lease(s)
            if len(self.slots) >= MAX_SLOTS:
                # Drop a free slot of the wrong size, or give up (plain memory).
                spare = [s for s in self.slots if not s.busy and s.header[_STATE] == _FREE]
                if not spare:
                    return None
                self._drop(spare[0])
            size = -(-nbytes // (1 << 16)) * (1 << 16)
            path = os.path.join(self.dir, f"slot-{self.made}")
            self.made += 1
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError:  # the directory is gone (the main process is exiting)
                return None
            try:
                os.ftruncate(fd, HEADER + size)
                if hasattr(os, "posix_fallocate"):
                    # Take the memory now: a full /dev/shm is an error here (and a
                    # fallback to plain memory), not a SIGBUS on the first write.
                    os.posix_fallocate(fd, 0, HEADER + size)
                mm = mmap.mmap(fd, HEADER + size)
            except OSError:
                os.unlink(path)
                return None
            finally:
                os.close(fd)
            header = np.frombuffer(mm, dtype=np.uint64, count=HEADER // 8)
            slot = _Slot(path, size, mm, header)
            self.slots.append(slot)
            return self._lease(slot)

    def _lease(self, s: _Slot) -> _Slot:
        s.busy = True
        s.serial += 1
        s.header[_SERIAL] = s.serial  # state is free: the main process does not read it
        return s

    def _drop(self, s: _Slot) -> None:
        self.slots.remove(s)
        s.header[_EXITED] = 1
        with contextlib.suppress(OSError):
            os.unlink(s.path)

    def close(self) -> None:
        if os.getpid() != self.pid:
            return
        for s in self.slots:
            s.header[_EXITED] = 1
        shutil.rmtree(self.dir, ignore_errors=True)


_POOL: _Pool | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> _Pool:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.pid != os.getpid():
            root = "/dev/shm" if os.access("/dev/shm", os.W_OK | os.X_OK) else None
            d = tempfile.mkdtemp(prefix=f"replaydb-batches-{os.getpid()}-", dir=root)
            _wire.mark_own(d)
            _POOL = _Pool(d, os.getpid())
            # At the worker's exit (a multiprocessing child skips atexit).
            util.Finalize(_POOL, _POOL.close, exitpriority=0)
        return _POOL


def _unlease(pool: _Pool, ptr: int, slot: _Slot) -> None:
    # Lock-free (a finalizer may run inside take()): forget the pointer first.
    pool.leases.pop(ptr, None)
    slot.busy = False


def block(nbytes: int, *, pooled: bool) -> torch.Tensor:
    """``nbytes`` of uint8 to gather a batch into: a reused slot where ``pooled``.

    Args:
        nbytes: Bytes needed.
        pooled: Whether to take a slot (in a DataLoader worker) rather than plain memory.

    Returns:
        A 1-D uint8 tensor (its contents are whatever the slot held before).
    """
    if not pooled:
        return torch.empty(nbytes, dtype=torch.uint8)
    pool = _pool()
    slot = pool.take(nbytes)
    if slot is None:
        return torch.empty(nbytes, dtype=torch.uint8)
    arr = np.frombuffer(slot.mm, dtype=np.uint8, count=nbytes, offset=HEADER)
    t = torch.from_numpy(arr)
    ptr = t.untyped_storage().data_ptr()
    pool.leases[ptr] = _Lease(slot, slot.serial)
    weakref.finalize(arr, _unlease, pool, ptr, slot)
    return t


_Encoded = tuple["_Lease | None", Any]


def _encode(t: torch.Tensor) -> _Encoded:
    """A tensor's reference: ``(lease, ("s", ...))`` in a slot, ``(None, ("n" or "v",
    ...))`` small by value, ``(None, None)`` for torch's own hand-over."""
    t = t.detach()
    cpu = t.device.type == "cpu"
    pool = _POOL
    if cpu and pool is not None and pool.pid == os.getpid():
        lease = pool.leases.get(t.untyped_storage().data_ptr())
        if lease is not None:
            slot = lease.slot
            off = t.storage_offset() * t.element_size()
            np_dtype = _NUMPY.get(t.dtype)
            ref: tuple[Any, ...]
            if np_dtype is not None and t.is_contiguous():
                # Rebuilt as a numpy view (a third of the cost of a torch view).
                nbytes = t.numel() * t.element_size()
                ref = ("S", slot.path, lease.serial, slot.size, off, nbytes, np_dtype,
                       tuple(t.shape))  # fmt: skip
            else:
                ref = ("s", slot.path, lease.serial, slot.size, off, _dtype_name(t.dtype),
                       tuple(t.shape), t.stride())  # fmt: skip
            return lease, ref
    if cpu and t.numel() * t.element_size() < SMALL:
        t = t.contiguous()
        try:
            a = t.numpy()
        except TypeError:  # a dtype numpy lacks (bfloat16): its bytes, rebuilt by torch
            raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
            return None, ("v", _dtype_name(t.dtype), tuple(t.shape), raw)
        return None, ("n", a.dtype.str, a.shape, a.tobytes())
    return None, None


def _tensors(obj: Any, out: dict[int, tuple[torch.Tensor, _Encoded]]) -> None:
    """Encode the tensors of a nest of dicts, lists and tuples into ``out`` (by id)."""
    if isinstance(obj, torch.Tensor):
        out[id(obj)] = (obj, _encode(obj))
    elif isinstance(obj, dict):
        for v in obj.values():
            _tensors(v, out)
    elif isinstance(obj, list | tuple):
        for v in obj:
            _tensors(v, out)


class _Out(pickle.Pickler):
    """Pickles a batch's structure; tensors become references (see :func:`_encode`)."""

    def __init__(self, buf: io.BytesIO, pre: dict[int, tuple[torch.Tensor, _Encoded]]) -> None:
        super().__init__(buf, protocol=pickle.HIGHEST_PROTOCOL)
        self.pre = pre
        self.side: list[torch.Tensor] = []
        self.sent: list[_Lease] = []

    def persistent_id(self, obj: Any) -> Any:
        if not isinstance(obj, torch.Tensor):
            return None
        pre = self.pre.get(id(obj))
        lease, ref = pre[1] if pre is not None and pre[0] is obj else _encode(obj)
        if lease is not None and lease.sent and lease not in self.sent:
            ref = None  # handed over once already: this copy goes torch's way
        elif lease is not None and lease not in self.sent:
            self.sent.append(lease)
        if ref is not None:
            return ref
        self.side.append(obj)
        return ("t", len(self.side) - 1)


#: Torch dtypes numpy has, as numpy dtype strings.
_NUMPY = {
    dt: np.dtype(n).str
    for dt, n in (
        (torch.uint8, "uint8"),
        (torch.int8, "int8"),
        (torch.int16, "int16"),
        (torch.int32, "int32"),
        (torch.int64, "int64"),
        (torch.float16, "float16"),
        (torch.float32, "float32"),
        (torch.float64, "float64"),
        (torch.bool, "bool"),
        (torch.complex64, "complex64"),
        (torch.complex128, "complex128"),
    )
}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class WorkerBatch(list[Any]):
    """``[batch, info]`` from a DataLoader worker, pickled by slot reference.

    What the main process unpickles is a plain ``list`` (what the DataLoader
    makes of a worker's tuple), its tensors views of the slots the worker
    gathered into; tensors outside slots travel by value (small ones) or by
    torch's own shared-memory hand-over. The references are worked out where
    the batch is made (:func:`worker_batch`): pickling then runs no torch call,
    since the DataLoader pickles in a daemon thread that a worker's exit may
    end at any moment (inside a torch call, that aborts the process).
    """

    def __init__(
        self, items: Any, pre: dict[int, tuple[torch.Tensor, _Encoded]] | None = None
    ) -> None:
        super().__init__(items)
        self.pre = {} if pre is None else pre

    def __copy__(self) -> WorkerBatch:
        return WorkerBatch(self, self.pre)

    def __reduce__(self) -> tuple[Any, ...]:
        buf = io.BytesIO()
        out = _Out(buf, self.pre)
        try:
            out.dump(list(self))
        except Exception:
            return (list, (list(self),))  # not ours to encode: torch's way
        for lease in out.sent:
            lease.sent = True
            lease.slot.header[_STATE] = _SENT
        return (_rebuild, (buf.getvalue(), out.side))


def worker_batch(batch: Any, info: Any) -> WorkerBatch:
    """``WorkerBatch([batch, info])`` with its tensors' references worked out now."""
    wb = WorkerBatch([batch, info])
    _tensors(wb, wb.pre)
    return wb


# ------------------------------------------------------------------ main side
@dataclass(eq=False)
class _Mapped:
    path: str
    mm: mmap.mmap
    header: np.ndarray[Any, Any]
    claims: int = 0


_MAPPED: dict[str, _Mapped] = {}
_MAPPED_LOCK = threading.Lock()


def _map(path: str, size: int) -> _Mapped:
    with _MAPPED_LOCK:
        m = _MAPPED.get(path)
        if m is not None:
            return m
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise ClosedError(
                f"the shared memory of a DataLoader batch ({path!r}) is gone "
                f"({type(exc).__name__}): the worker that made it exited; batches are "
                "received by the DataLoader that started the worker, while it runs"
            ) from None
        try:
            mm = mmap.mmap(fd, HEADER + size)
        finally:
            os.close(fd)
        # Mapped: the name is no longer needed (the worker keeps its own mapping).
        with contextlib.suppress(OSError):
            os.unlink(path)
        if not _SEEN:
            atexit.register(_remove_seen)
        _SEEN.add(os.path.dirname(path))
        m = _Mapped(path, mm, np.frombuffer(mm, dtype=np.uint64, count=HEADER // 8))
        # Slots of exited workers that this process no longer uses: unmap them.
        for p, other in list(_MAPPED.items()):
            if other.claims == 0 and int(other.header[_EXITED]):
                del _MAPPED[p]
        _MAPPED[path] = m
        return m


#: Slot directories of the workers this process received batches from.
_SEEN: set[str] = set()


def _remove_seen() -> None:
    """At exit: remove what the workers left (they are ended with SIGTERM when a
    DataLoader is still open as this process exits, and cannot clean up)."""
    for d in _SEEN:
        shutil.rmtree(d, ignore_errors=True)


def _release(m: _Mapped, serial: int, pid: int) -> None:
    if os.getpid() != pid:
        return  # a forked copy of the tensors: the parent still holds the batch
    m.claims -= 1
    if int(m.header[_SERIAL]) == serial and int(m.header[_STATE]) == _CLAIMED:
        m.header[_STATE] = _FREE
    if m.claims == 0 and int(m.header[_EXITED]):
        with _MAPPED_LOCK:
            if _MAPPED.get(m.path) is m:
                del _MAPPED[m.path]


def _retire_claims() -> None:
    """Before a fork: slots of batches held now are shared with the child, never reused."""
    for m in list(_MAPPED.values()):
        if m.claims and int(m.header[_STATE]) == _CLAIMED:
            m.header[_STATE] = _RETIRED


os.register_at_fork(before=_retire_claims)


def _claim(path: str, serial: int, size: int) -> np.ndarray[Any, Any]:
    m = _map(path, size)
    state, now = int(m.header[_STATE]), int(m.header[_SERIAL])
    if state != _SENT or now != serial:
        raise ReplayError(
            f"a DataLoader batch (slot {path!r}, batch {serial}) was unpickled a second "
            f"time or after its slot moved on (slot state {state}, batch {now}); a "
            "worker's batch is received once, by the DataLoader"
        )
    m.header[_STATE] = _CLAIMED
    arr = np.frombuffer(m.mm, dtype=np.uint8, count=size, offset=HEADER)
    m.claims += 1
    weakref.finalize(arr, _release, m, serial, os.getpid())
    return arr


class _In(pickle.Unpickler):
    def __init__(self, data: bytes, side: list[torch.Tensor]) -> None:
        super().__init__(io.BytesIO(data))
        self.side = side
        self.slots: dict[str, np.ndarray[Any, Any]] = {}
        self.storages: dict[str, torch.UntypedStorage] = {}

    def persistent_load(self, pid: Any) -> Any:
        kind = pid[0]
        if kind == "n":
            _, dtype, shape, raw = pid
            return torch.from_numpy(np.ndarray(shape, dtype, bytearray(raw)))
        if kind == "t":
            return self.side[pid[1]]
        if kind == "v":
            _, dtype, shape, raw = pid
            dt = getattr(torch, dtype)
            if not raw:
                return torch.empty(shape, dtype=dt)
            return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dt).view(shape)
        path, serial, size = pid[1:4]
        arr = self.slots.get(path)
        if arr is None:
            arr = self.slots[path] = _claim(path, serial, size)
        if kind == "S":
            _, _, _, _, off, nbytes, np_dtype, shape = pid
            return torch.from_numpy(arr[off : off + nbytes].view(np_dtype).reshape(shape))
        _, _, _, _, off, dtype, shape, stride = pid
        storage = self.storages.get(path)
        if storage is None:
            storage = self.storages[path] = torch.from_numpy(arr).untyped_storage()
        dt = getattr(torch, dtype)
        t = torch.empty(0, dtype=dt)
        return t.set_(storage, off // t.element_size(), shape, stride)


def _rebuild(data: bytes, side: list[torch.Tensor]) -> list[Any]:
    got: list[Any] = _In(data, side).load()
    return got
