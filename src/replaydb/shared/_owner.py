"""The owning side of a shared table: its request server, and shared-memory tables.

One :class:`Owner` per shared table, in the process that created the table. It
listens on an ``AF_UNIX`` socket in a fresh private (``0700``) directory, and
each connection must prove it holds the share's random 32-byte key
(``multiprocessing.connection``'s HMAC challenge) before any request is read.
Every connection gets a daemon thread that answers requests one at a time with
the table's public verbs: ``rows`` (:meth:`Table.sample_rows`; for a uniform
table without a sample-side rate limit one draw for the caller's next ``ahead``
batches too, cut into batches by the caller, or with ``max_times_sampled``
up to ``ahead`` more draws of the same size; or a whole :meth:`Table.sample` for a
consuming table, whose rows may be reused as soon as an item is consumed, and on
a CPU that may reorder memory accesses, see :data:`IN_ORDER`),
``extend``, ``insert``, ``update_priorities``, ``info`` and ``len``. Requests
that wait on the rate limiter come in slices of at most half a second, so
:meth:`Owner.close` ends every thread promptly.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import platform
import re
import secrets
import shutil
import socket
import stat
import tempfile
import threading
from multiprocessing import AuthenticationError, util
from multiprocessing.connection import Connection, Listener
from typing import TYPE_CHECKING, Any

import torch

from replaydb.errors import (
    DeviceError,
    InvalidArgumentError,
    InvalidTypeError,
    RateLimiterTimeout,
)
from replaydb.samplers import Uniform
from replaydb.shared import _wire

if TYPE_CHECKING:
    from replaydb.shared._handle import SharedTable
    from replaydb.spec import Spec
    from replaydb.table import Table

#: Whether this CPU keeps a process's stores in order, and its loads (x86's
#: total store order). The check that finds rows overwritten while another
#: process copied them (a seqlock: the writer stores the journal's ``intent``,
#: then the rows; the copier loads the rows, then ``intent``) needs both, and
#: Python has no memory fence to ask for them. Elsewhere (ARM, POWER) the owner
#: gathers every sample itself: slower, never a torn item.
IN_ORDER = platform.machine().lower() in {"x86_64", "amd64", "i386", "i686", "x86"}

#: ``id(table) -> Owner`` for the tables this process serves.
_OWNERS: dict[int, Owner] = {}
#: ``address -> table`` for handles used in the owning process itself.
LOCAL: dict[str, Table] = {}
_LOCK = threading.Lock()


def serve(table: Table) -> SharedTable:
    """:meth:`Table.share`: start (or find) the table's owner; return its handle."""
    with _LOCK:
        owner = _OWNERS.get(id(table))
        if owner is not None and owner.table is table:
            if owner.pid != os.getpid():
                raise InvalidArgumentError(
                    f"table {table.name!r} is shared by process {owner.pid}; this process "
                    "holds a copy made by fork, which must not serve it: use the handle "
                    "that process's share() returned"
                )
            return owner.handle
        if table.device.type != "cpu":
            raise DeviceError(
                f"table {table.name!r} lives on {table.device}, which other processes cannot "
                "map; share a CPU table (replaydb.shared.memory_table or Table(..., path=DIR)) "
                "and move samples to the GPU in each process with .to(device)"
            )
        if table.path is None:
            raise InvalidArgumentError(
                f"table {table.name!r} keeps its steps in this process's memory, which other "
                "processes cannot map; create it with replaydb.shared.memory_table(spec, "
                "capacity, ...) (shared memory) or Table(spec, capacity, path=DIR) "
                "(disk-backed), then call share()"
            )
        owner = Owner(table)
        _OWNERS[id(table)] = owner
        LOCAL[owner.address] = table
        return owner.handle


class Owner:
    """The request server of one shared table (see the module docstring)."""

    def __init__(self, table: Table) -> None:
        from replaydb.shared._handle import SharedTable

        self.table = table
        self.pid = os.getpid()
        table.shared = True  # waits must not call a lone thread stuck: children write
        remove_left_behind()
        self.dir = tempfile.mkdtemp(prefix=f"replaydb-share-{self.pid}-")  # mode 0700
        _wire.mark_own(self.dir)
        self.address = os.path.join(self.dir, "socket")
        self.authkey = secrets.token_bytes(32)
        self._listener = Listener(self.address, family="AF_UNIX", authkey=self.authkey)
        self._closed = False
        self._conns: set[Connection] = set()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        assert table.path is not None
        self.handle = SharedTable(self.address, self.authkey, table.path, table.config(), self.pid)
        self._accepter = threading.Thread(
            target=self._accept, name=f"replaydb-share-{table.name}", daemon=True
        )
        self._accepter.start()
        # Runs at exit of this process, also of a multiprocessing child (which skips atexit).
        self._finalizer = util.Finalize(None, self.close, exitpriority=10)

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn = self._listener.accept()
            except (AuthenticationError, EOFError, ConnectionError):
                continue  # a wrong key, or a client gone mid-handshake
            except OSError:
                if self._closed:
                    return
                continue
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self._conns.add(conn)
                t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
                self._threads = [x for x in self._threads if x.is_alive()] + [t]
            t.start()

    def _serve(self, conn: Connection) -> None:
        try:
            while True:
                try:
                    msg = conn.recv_bytes()
                except (EOFError, OSError):
                    return
                try:
                    verb, args = pickle.loads(msg)
                    reply = _wire.dumps(("ok", _wire.to_wire(self._answer(verb, args))))
                except BaseException as exc:  # sent to the caller, raised there
                    reply = _wire.error_reply(exc)
                try:
                    conn.send_bytes(reply)
                except OSError:
                    return
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _answer(self, verb: str, args: tuple[Any, ...]) -> Any:
        table = self.table
        args = _wire.from_wire(args)
        if verb == "rows":
            b, beta, timeout, ahead = args
            if table.consuming or not IN_ORDER:
                # An item's rows may be reused once it is consumed; or this CPU may
                # reorder the copy's reads (see IN_ORDER): gather here.
                s = table.sample(b, beta=beta, timeout=timeout)
                return ("sample", {f: getattr(s, f) for f in _SAMPLE_FIELDS})
            ahead = ahead if _draws_ahead(table) else 0
            if ahead and table.max_times_sampled is None:
                # One draw for the caller's next batches too: a draw's cost is mostly
                # per call. Cut into batches, it is what consecutive draws would give.
                both = table.sample_rows(b * (1 + ahead), beta=beta, timeout=timeout)
                return ("rows", _wire.pack_rows([both], parts=1 + ahead))
            draws = [table.sample_rows(b, beta=beta, timeout=timeout)]
            for _ in range(ahead):
                # Draws for the caller's next batches (one request instead of several).
                try:
                    draws.append(table.sample_rows(b, beta=beta, timeout=0))
                except RateLimiterTimeout:
                    break
            return ("rows", _wire.pack_rows(draws))
        if verb == "extend":
            steps, kwargs = args
            table.extend(steps, **kwargs)
            return None
        if verb == "insert":
            step, kwargs = args
            table.insert(step, **kwargs)
            return None
        if verb == "update_priorities":
            return table.update_priorities(*args)
        if verb == "info":
            return table.info()
        if verb == "len":
            return len(table)
        raise InvalidArgumentError(f"unknown request {verb!r}")

    def close(self) -> None:
        """Stop serving: refuse new connections, end the open ones, remove the socket."""
        if self._closed or self.pid != os.getpid():
            return
        self._closed = True
        self._finalizer.cancel()
        # Wake the accept: a bare connect, closed at once (the handshake then fails in
        # the accepting thread, which sees _closed); never waits on that thread.
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as wake:
            wake.settimeout(5)
            wake.connect(self.address)
        self._accepter.join(timeout=5)
        self._listener.close()
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for conn in conns:
            with contextlib.suppress(OSError):
                # shutdown wakes the thread blocked in recv (close alone would not).
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=os.dup(conn.fileno()))
                s.shutdown(socket.SHUT_RDWR)
                s.close()
        for t in threads:
            t.join(timeout=2 * _wire.SLICE_S + 1)
        shutil.rmtree(self.dir, ignore_errors=True)
        with _LOCK:
            if _OWNERS.get(id(self.table)) is self:
                del _OWNERS[id(self.table)]
            LOCAL.pop(self.address, None)


def _draws_ahead(table: Table) -> bool:
    """Whether drawing a caller's next batches early changes nothing it could see.

    Uniform draws do not depend on priorities the learner has yet to update, and
    a limiter without a sample-side limit (``MinSize``) takes no permit another
    process waits for (with a DataLoader's in-order delivery, a worker left
    waiting for permits another one took early would stall the loader).
    """
    return isinstance(table.sampler, Uniform) and table.rate_limiter.min_diff == -math.inf


_SAMPLE_FIELDS = (
    "data",
    "keys",
    "probabilities",
    "weights",
    "priorities",
    "times_sampled",
    "table_size",
    "mask",
    "ends",
)


def owner_at(address: str) -> Owner | None:
    """The owner serving at ``address`` in this process, if any."""
    with _LOCK:
        for owner in _OWNERS.values():
            if owner.address == address and owner.pid == os.getpid():
                return owner
    return None


# ------------------------------------------------------------------ shared memory
def _shm_root() -> str:
    root = "/dev/shm"
    if os.path.isdir(root) and os.access(root, os.W_OK | os.X_OK):
        return root
    return tempfile.gettempdir()


def _remove(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


#: Directories a process of replaydb names after itself: a shared-memory table's
#: steps, a DataLoader worker's slots, an owner's socket.
_LEFT = re.compile(r"replaydb-(?:batches-|share-)?(\d+)-[^/]+")


def remove_left_behind() -> list[str]:
    """Remove what processes killed with SIGKILL left: directories of dead processes.

    A ``memory_table``'s directory (``replaydb-<pid>-*``), a DataLoader worker's
    slots (``replaydb-batches-<pid>-*``) and an owner's socket directory
    (``replaydb-share-<pid>-*``) are removed by their process when it exits; one
    killed with SIGKILL cannot. Called when a shared-memory table is made or a
    table is shared: removes those directories, in ``/dev/shm`` (or the
    fallback) and the temporary directory, whose process no longer exists,
    owned by this user and marked as replaydb's own when made (a
    ``.replaydb-own`` file: a directory of the user's that is only named like
    one stays). (A process of another PID namespace that shares
    ``/dev/shm`` would look dead: containers have their own ``/dev/shm``.)

    Returns:
        The directories removed.
    """
    removed = []
    uid = os.getuid() if hasattr(os, "getuid") else None
    for root in dict.fromkeys((_shm_root(), tempfile.gettempdir())):
        try:
            names = os.listdir(root)
        except OSError:
            continue
        for name in names:
            m = _LEFT.fullmatch(name)
            if m is None:
                continue
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if (
                stat.S_ISDIR(st.st_mode)
                and (uid is None or st.st_uid == uid)
                and _owned(os.path.join(path, _wire.OWN_MARK))
                and not _wire.alive(int(m.group(1)))
            ):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def _owned(mark: str) -> bool:
    """Whether ``mark`` is a regular file (the directory is replaydb's own)."""
    try:
        return stat.S_ISREG(os.lstat(mark).st_mode)
    except OSError:
        return False


def memory_table(spec: Spec | Any, capacity: int, **kwargs: Any) -> Table:
    """A :class:`~replaydb.table.Table` whose steps live in shared memory, ready to share.

    The data goes to memory-mapped files in a private directory under
    ``/dev/shm`` (RAM; the system temporary directory where there is none), so
    :meth:`Table.share` can hand it to other processes; the bookkeeping stays in
    this process. Everything else is an ordinary in-memory table: same verbs,
    same speed. The directory is removed when the table is garbage-collected or
    this process exits normally; a process killed with SIGKILL leaves it behind
    (``replaydb-<pid>-*``) until the next ``memory_table`` or ``share()`` on
    the machine removes it (that of any process no longer alive).

    Args:
        spec: The fields of one step.
        capacity: Steps the ring holds.
        **kwargs: Any other :class:`~replaydb.table.Table` argument except
            ``path`` and a device other than the CPU.

    Returns:
        The table (its :attr:`~replaydb.table.Table.path` is the directory).

    Raises:
        InvalidArgumentError: If ``path`` is given.
        DeviceError: For a device other than the CPU (GPU memory cannot be shared).
        Exception: Whatever :class:`~replaydb.table.Table` raises for its arguments.

    Example:
        >>> table = memory_table(Spec({"obs": ((84, 84), "uint8")}), 1000)
        >>> table.path.startswith(("/dev/shm", tempfile.gettempdir()))
        True
    """
    from replaydb.storage import resolve_device
    from replaydb.table import Table

    if "path" in kwargs:
        raise InvalidArgumentError(
            "memory_table chooses its own directory in shared memory; drop path=, or use "
            "Table(spec, capacity, path=DIR) for a disk-backed table"
        )
    device = kwargs.get("device")
    if device is not None and not isinstance(device, str | torch.device):
        raise InvalidTypeError(f"device must be a str or torch.device, got {device!r}")
    if device is not None and str(device).split(":")[0] != "cpu":
        raise DeviceError(
            f"device {str(device)!r}: a shared-memory table lives in CPU memory, and GPU "
            "memory cannot be mapped by other processes; use device='cpu' and move samples "
            "to the GPU with .to(device)"
        )
    if device is not None:
        resolve_device(device)
    remove_left_behind()
    root = tempfile.mkdtemp(prefix=f"replaydb-{os.getpid()}-", dir=_shm_root())
    try:
        _wire.mark_own(root)
        table = Table(spec, capacity, path=root, **kwargs)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    # On collection, or at exit (also of a multiprocessing child, which skips atexit);
    # never in a forked child that inherited it (Finalize checks the pid).
    util.Finalize(table, _remove, args=(root,), exitpriority=0)
    return table
