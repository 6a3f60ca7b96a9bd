"""SharedTable: the picklable handle every process uses to reach a shared table."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

from replaydb.errors import (
    ClosedError,
    InvalidArgumentError,
    RateLimiterTimeout,
    ReplayError,
)
from replaydb.shared import _batches, _owner, _wire
from replaydb.spec import Spec
from replaydb.storage import Storage
from replaydb.table import Sample, Table, TableInfo

#: Draws of overwritten items replaced before giving up (each one is rare: the
#: ring reached the item's rows while they were being copied).
_MAX_REDRAWS = 16
_Layout = tuple[dict[torch.dtype, "np.ndarray[Any, Any]"], dict[str, tuple[torch.dtype, int, int]]]
#: Draws for its next batches a DataLoader worker's request brings along.
AHEAD = 7
_INFO = ("keys", "probabilities", "weights", "priorities", "times_sampled")


class SharedTable:
    """A picklable handle to a table that one process owns and many processes use.

    Get one from :meth:`Table.share` in the owning process and pass it to other
    processes by any means that pickles (a ``DataLoader``'s dataset, a
    ``multiprocessing.Process`` argument, ``pickle.dumps``): it carries the
    address of the owner's socket, the share's key and the table's directory,
    never its data. In another process each call reconnects (one connection per
    thread). There, :meth:`sample` asks the owner to draw (the owner's sampler,
    rate limiter, ``times_sampled`` and ``max_times_sampled`` apply to every
    process alike) and copies the drawn rows out of the shared storage itself,
    so processes gather in parallel; an item whose rows the ring overwrote
    while they were copied is detected and drawn again. Writes go through the
    owner. In the owning process the calls go straight to the table.

    It has :class:`~replaydb.server.Client`'s sampling verbs, so a
    :class:`~replaydb.dataset.Dataset` over it works in DataLoader workers.

    Args:
        address: The owner's socket.
        authkey: The share's key.
        path: The table's directory.
        config: The table's :meth:`~replaydb.table.Table.config`.
        owner_pid: The owning process.

    Do not build one yourself: :meth:`Table.share` does.

    Raises:
        ClosedError: (from any verb) if the owner exited or closed the share.
        InvalidArgumentError: (from any verb) if the owner rejected the handle's key.

    Attributes:
        across_processes: ``True``: a :class:`~replaydb.dataset.Dataset` over this
            handle may sample in DataLoader worker processes.

    Example:
        >>> import pickle
        >>> from replaydb.shared import memory_table
        >>> t = memory_table(Spec({"x": ()}), 8); h = t.share()
        >>> pickle.loads(pickle.dumps(h)).name
        'table'
        >>> h.close()
    """

    across_processes = True

    def __init__(
        self,
        address: str,
        authkey: bytes,
        path: str,
        config: Mapping[str, Any],
        owner_pid: int,
    ) -> None:
        self.address = address
        self.path = path
        self.config = dict(config)
        self.owner_pid = owner_pid
        #: The table's name.
        self.name = str(config["name"])
        self.capacity = int(config["capacity"])
        self.spec = Spec.from_json(config["spec"])
        self.frame_stack = {k: (int(v[0]), str(v[1])) for k, v in config["frame_stack"].items()}
        self._authkey = authkey
        self._lock = threading.Lock()
        self._local = threading.local()
        self._pid = os.getpid()
        self._conns: list[Connection] = []
        self._storage: Storage | None = None
        self._src: tuple[Storage, _Layout] | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            SharedTable,
            (self.address, self._authkey, self.path, self.config, self.owner_pid),
        )

    def __repr__(self) -> str:
        return f"SharedTable(name={self.name!r}, owner_pid={self.owner_pid}, path={self.path!r})"

    # ------------------------------------------------------------ plumbing
    def _here(self) -> Table | None:
        """The table itself, in the owning process while it serves."""
        if os.getpid() != self.owner_pid:
            return None
        return _owner.LOCAL.get(self.address)

    def _fresh_process(self) -> None:
        if self._pid != os.getpid():  # a fork: nothing of the parent's is ours
            self._pid = os.getpid()
            self._lock = threading.Lock()
            self._local = threading.local()
            self._conns = []
            self._storage = None
            self._src = None

    def _conn(self) -> Connection:
        self._fresh_process()
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed:
            return conn
        try:
            conn = Client(self.address, family="AF_UNIX", authkey=self._authkey)
        except AuthenticationError as exc:
            raise InvalidArgumentError(
                f"the owner of shared table {self.name!r} rejected this handle's key ({exc}); "
                "use a handle pickled from the owner's table.share()"
            ) from None
        except (OSError, EOFError) as exc:
            raise ClosedError(
                f"cannot reach the owner of shared table {self.name!r} (pid {self.owner_pid}) "
                f"at {self.address!r} ({type(exc).__name__}): it exited or closed the share; "
                "keep the owner running while other processes use the table"
            ) from None
        self._local.conn = conn
        with self._lock:
            self._conns = [c for c in self._conns if not c.closed] + [conn]
        return conn

    def _call(self, verb: str, *args: Any) -> Any:
        return _wire.call(self._conn(), self.owner_pid, self.name, verb, args)

    def _sliced(self, verb: str, timeout: float | None, send: Any) -> Any:
        """Call ``send(slice_timeout)`` until the owner's rate limiter lets it through."""
        until = _wire.deadline(timeout)
        while True:
            try:
                return send(_wire.next_slice(until))
            except RateLimiterTimeout as exc:
                if until is not None and time.monotonic() >= until:
                    raise RateLimiterTimeout(
                        f"{verb} on shared table {self.name!r} timed out after {timeout}s ({exc})"
                    ) from None

    def _check_table(self, table: str | None) -> None:
        if table is not None and table != self.name:
            raise InvalidArgumentError(
                f"this handle serves table {self.name!r}, got table={table!r}; pass "
                "table=None or the table's name"
            )

    def _store(self) -> Storage:
        self._fresh_process()
        with self._lock:
            if self._storage is None:
                if not os.path.isdir(self.path):
                    raise ClosedError(
                        f"the directory of shared table {self.name!r} ({self.path!r}) is gone: "
                        "its owner exited"
                    )
                self._storage = Storage(self.spec, self.capacity, path=self.path)
            return self._storage

    # ------------------------------------------------------------ sampling
    def _layout(self, st: Storage) -> _Layout:
        """Each dtype group as ``[capacity, bytes]`` uint8 (numpy); each field: dtype, bytes."""
        if self._src is not None and self._src[0] is st:
            return self._src[1]
        groups = {dt: g.view(torch.uint8).numpy() for dt, g in st.groups.items()}
        fields: dict[str, tuple[torch.dtype, int, int]] = {}
        for name, f in st.fields.items():
            g = st.groups[f.dtype]
            es = f.element_size()
            start = (f.storage_offset() - g.storage_offset()) * es
            fields[name] = (f.dtype, int(start), int(f[0].numel()) * es)
        layout: _Layout = (groups, fields)
        self._src = (st, layout)
        return layout

    def _copy(
        self, rows: dict[str, Any], pooled: bool
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Copy the drawn rows out of the shared storage; say which items went stale.

        Where ``pooled`` (in a DataLoader worker) every field goes straight into
        a reused shared-memory slot (:meth:`_into_slot`); elsewhere through
        :meth:`Storage.gather`.
        """
        st = self._store()
        got = self._into_slot(st, rows) if pooled else self._gathered(st, rows)
        files = st.files
        assert files is not None
        # Read after the copy: a write records its intent before touching any row.
        if files.generation != rows["generation"]:
            stale = torch.ones(len(rows["keys"]), dtype=torch.bool)
        else:
            stale = rows["oldest"] < files.intent - self.capacity
        return got, stale

    def _gathered(self, st: Storage, rows: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The rows' fields through :meth:`Storage.gather` (fresh memory)."""
        got = st.gather(rows["rows"])
        if rows["valid"] is not None:
            valid: torch.Tensor = rows["valid"]
            d = valid.dim() - 1
            k_max = int(valid.shape[-1])
            for name, v in got.items():
                stack = self.frame_stack.get(name)
                if stack is None:
                    got[name] = v.select(d, k_max - 1).contiguous()
                    continue
                k, pad = stack
                v = v.narrow(d, k_max - k, k)
                if pad == "zeros":
                    keep = valid.narrow(d, k_max - k, k)
                    v = v.masked_fill(~keep.view(*keep.shape, *[1] * (v.dim() - keep.dim())), 0)
                got[name] = v.contiguous()
        return got

    def _into_slot(self, st: Storage, rows: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The rows' fields gathered straight into one reused shared-memory slot.

        One gather per dtype group (and frame-stack depth); each field is a view
        of its columns, as :meth:`Storage.gather` returns them.
        """
        groups, fields = self._layout(st)
        where: torch.Tensor = rows["rows"]
        valid: torch.Tensor | None = rows["valid"]
        # (dtype group, rows) -> the fields gathered together.
        parts: dict[tuple[torch.dtype, int], list[str]] = {}
        for name in self.spec:
            depth = 0 if valid is None else self.frame_stack.get(name, (-1, ""))[0]
            parts.setdefault((fields[name][0], depth), []).append(name)
        plan = []
        total = 0
        for (dt, depth), names in parts.items():
            if depth == 0:
                r = where
            elif depth > 0:
                r = where.narrow(-1, where.shape[-1] - depth, depth)
            else:
                r = where.select(-1, where.shape[-1] - 1)
            row_bytes = groups[dt].shape[1]
            plan.append((dt, r, names, total, row_bytes))
            total += _batches.aligned(r.numel() * row_bytes)
        out = _batches.block(max(total, 1), pooled=True)
        got: dict[str, torch.Tensor] = {}
        for dt, r, names, off, row_bytes in plan:
            idx = r.reshape(-1).numpy()
            part = out[off : off + len(idx) * row_bytes].view(len(idx), row_bytes)
            np.take(groups[dt], idx, axis=0, out=part.numpy(), mode="clip")
            for name in names:
                _, start, width = fields[name]
                cols = part if width == row_bytes else part[:, start : start + width]
                v = cols.view(dt).view(*r.shape, *self.spec[name].shape)
                stack = self.frame_stack.get(name)
                if valid is not None and stack is not None and stack[1] == "zeros":
                    keep = valid.narrow(-1, valid.shape[-1] - stack[0], stack[0])
                    v.masked_fill_(~keep.view(*keep.shape, *[1] * len(self.spec[name].shape)), 0)
                got[name] = v
        return got

    def sample(
        self,
        batch_size: int,
        *,
        beta: float | None = None,
        timeout: float | None = None,
        table: str | None = None,
    ) -> Sample:
        """Draw ``batch_size`` items from the live table, as :meth:`Table.sample`.

        Args:
            batch_size: Number of items, > 0.
            beta: Importance-weight exponent for prioritized samplers.
            timeout: Seconds to wait for the rate limiter (None: as long as it takes).
            table: The table's name or ``None`` (for :class:`~replaydb.server.Client`
                compatibility).

        Returns:
            A :class:`~replaydb.table.Sample`.

        Raises:
            InvalidArgumentError: As :meth:`Table.sample`, or for another table name.
            RateLimiterTimeout: If the limiter did not let the sample through in time.
            ClosedError: If the owner exited or closed the share.

        Example:
            >>> from replaydb.shared import memory_table
            >>> t = memory_table(Spec({"x": ()}), 8); h = t.share()
            >>> h.extend({"x": torch.arange(4.0)}); h.sample(2)["x"].shape
            torch.Size([2])
            >>> h.close()
        """
        self._check_table(table)
        here = self._here()
        if here is not None:
            return here.sample(batch_size, beta=beta, timeout=timeout)

        def draw(n: int, ahead: int) -> tuple[str, Any]:
            return self._sliced(  # type: ignore[no-any-return]
                "sample", timeout, lambda s: self._call("rows", n, beta, s, ahead)
            )

        worker = get_worker_info() is not None
        # In a DataLoader worker (steady batches of one size) one request brings
        # the draws of the next few batches too.
        queued: dict[tuple[int, float | None], list[Any]] = self._local.__dict__.setdefault(
            "ahead", {}
        )
        waiting = queued.get((batch_size, beta))
        if waiting:
            r = waiting.pop(0)
        else:
            kind, got = draw(batch_size, AHEAD if worker else 0)
            if kind == "sample":
                return Sample(**got)
            r, *queued[(batch_size, beta)] = _wire.unpack_rows(got)
        data, stale = self._copy(r, pooled=worker)
        for _ in range(_MAX_REDRAWS):
            if not bool(stale.any()):
                return Sample(
                    data=data,
                    table_size=int(r["table_size"]),
                    mask=r["mask"],
                    ends=r["ends"],
                    **{f: r[f] for f in _INFO},
                )
            idx = torch.nonzero(stale).squeeze(1)
            _, packed = draw(int(idx.numel()), 0)
            (again,) = _wire.unpack_rows(packed)
            more, stale_again = self._copy(again, pooled=False)
            for name, v in data.items():
                v[idx] = more[name]
            for f in (*_INFO, "mask", "ends"):
                if r[f] is not None:
                    r[f][idx] = again[f]
            stale = torch.zeros_like(stale)
            stale[idx] = stale_again
        raise ReplayError(
            f"shared table {self.name!r}: {int(stale.sum())} drawn item(s) were overwritten "
            f"while being copied, {_MAX_REDRAWS} draws in a row; the ring turns over faster "
            "than samples are gathered: use a larger capacity"
        )

    @staticmethod
    def worker_batch(batch: Any, info: Any) -> list[Any]:
        """``[batch, info]`` for a DataLoader worker to return: it pickles by reference.

        In a DataLoader worker :meth:`sample` gathers into reused shared-memory
        slots; what this returns pickles its tensors that live there as slot
        references (small other tensors by value, large ones by torch's own
        shared memory), so the main process receives a batch without a copy or
        a descriptor hand-over. The main process unpickles a plain ``list``
        ``[batch, info]`` (what the DataLoader makes of a worker's tuple); a
        slot is reused once every tensor viewing it there is freed.
        :class:`~replaydb.dataset.Dataset` calls it in workers.

        Args:
            batch: The batch (any nest of tensors).
            info: Its info (any nest of tensors).

        Returns:
            A ``list`` subclass ``[batch, info]``.

        Example:
            >>> import pickle
            >>> b = SharedTable.worker_batch({"x": torch.zeros(2)}, None)
            >>> pickle.loads(pickle.dumps(b))
            [{'x': tensor([0., 0.])}, None]
        """
        return _batches.worker_batch(batch, info)

    # ------------------------------------------------------------ the other verbs
    def extend(
        self,
        steps: Mapping[str, Any],
        *,
        streams: Any = None,
        ends: Any = None,
        priorities: Any = None,
        timeout: float | None = None,
        cast: str = "checked",
    ) -> None:
        """Write a batch of steps through the owner, as :meth:`Table.extend`.

        Example:
            >>> from replaydb.shared import memory_table
            >>> t = memory_table(Spec({"x": ()}), 8); h = t.share()
            >>> h.extend({"x": torch.zeros(3)}, ends=True); len(h)
            3
            >>> h.close()
        """
        here = self._here()
        kwargs: dict[str, Any] = {
            "streams": streams,
            "ends": ends,
            "priorities": priorities,
            "cast": cast,
        }
        if here is not None:
            here.extend(steps, timeout=timeout, **kwargs)
            return
        data = dict(steps) if isinstance(steps, Mapping) else steps
        self._sliced(
            "extend", timeout, lambda s: self._call("extend", data, {**kwargs, "timeout": s})
        )

    def insert(
        self,
        step: Mapping[str, Any],
        *,
        stream: int = 0,
        end: bool | int = False,
        priority: float | None = None,
        timeout: float | None = None,
        cast: str = "checked",
    ) -> None:
        """Write one step through the owner, as :meth:`Table.insert`.

        Example:
            >>> from replaydb.shared import memory_table
            >>> t = memory_table(Spec({"x": (2,)}), 8); h = t.share()
            >>> h.insert({"x": [1.0, 2.0]}); len(h)
            1
            >>> h.close()
        """
        here = self._here()
        kwargs: dict[str, Any] = {"stream": stream, "end": end, "priority": priority, "cast": cast}
        if here is not None:
            here.insert(step, timeout=timeout, **kwargs)
            return
        data = dict(step) if isinstance(step, Mapping) else step
        self._sliced(
            "insert", timeout, lambda s: self._call("insert", data, {**kwargs, "timeout": s})
        )

    def update_priorities(self, keys: Any, priorities: Any, *, table: str | None = None) -> int:
        """Set new priorities for sampled items, as :meth:`Table.update_priorities`.

        Example:
            >>> from replaydb.shared import memory_table
            >>> t = memory_table(Spec({"x": ()}), 8); h = t.share()
            >>> h.extend({"x": torch.zeros(2)}); h.update_priorities([0, 9], [2.0, 2.0])
            1
            >>> h.close()
        """
        self._check_table(table)
        here = self._here()
        if here is not None:
            return here.update_priorities(keys, priorities)
        return int(self._call("update_priorities", keys, priorities))

    def info(self, *, table: str | None = None) -> TableInfo:
        """The table's counters, as :meth:`Table.info`.

        Example:
            >>> from replaydb.shared import memory_table
            >>> t = memory_table(Spec({"x": ()}), 8); h = t.share()
            >>> h.info().capacity
            8
            >>> h.close()
        """
        self._check_table(table)
        here = self._here()
        if here is not None:
            return here.info()
        info: TableInfo = self._call("info")
        return info

    def __len__(self) -> int:
        """Items the table holds now."""
        here = self._here()
        if here is not None:
            return len(here)
        return int(self._call("len"))

    def close(self) -> None:
        """In the owner: stop serving the table. Elsewhere: drop this process's connections.

        The table itself stays usable in the owner (and :meth:`Table.share` serves
        it again); in other processes the handle reconnects when used again.
        Idempotent.

        Example:
            >>> from replaydb.shared import memory_table
            >>> t = memory_table(Spec({"x": ()}), 8); h = t.share(); h.close()
        """
        if os.getpid() == self.owner_pid:
            owner = _owner.owner_at(self.address)
            if owner is not None:
                owner.close()
            return
        self._fresh_process()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
