"""Server and Client: named tables behind one handle, in-process or on Ray.

A :class:`Server` hosts tables by name; a :class:`Client` offers the verbs of
:class:`~replaydb.table.Table` (``insert``, ``extend``, ``sample``,
``update_priorities``, ``info``, ``reset``) plus ``checkpoint`` and ``tables``, with a
``table=`` argument to pick a table (``None``: the server's only table). This is the
shape of Reverb's server and client (Cassirer et al. 2021, arXiv 2102.04736).

Two backends share the client interface:

* ``backend="local"`` (this module): the tables live in this process. The server
  sets ``table.shared = True`` so a blocked call waits for other threads instead
  of raising :class:`~replaydb.errors.WouldBlockForeverError`. Every table verb
  takes the table's lock, so one client (or many) can be used from many threads.
* ``backend="ray"``: :class:`replaydb.ray.RayServer` shards the tables over
  Ray actors; the given tables are templates (config and current contents).

Checkpoints go to ``checkpoint_dir`` in the directory layout of
:func:`replaydb.checkpoint.write_checkpoint`, one at a time, keeping the newest
``keep``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from replaydb._validate import check_int
from replaydb.checkpoint import write_checkpoint
from replaydb.errors import ClosedError, InvalidArgumentError, require
from replaydb.table import Sample, Table, TableInfo

__all__ = ["Client", "Server", "TableClient"]

_BACKENDS = ("local", "ray")


@runtime_checkable
class TableClient(Protocol):
    """The verbs every client of served tables has: :class:`Client` and the Ray client.

    Front ends that write or read through a client (the manager and its observer,
    :class:`~replaydb.dataset.Dataset`, :class:`~replaydb.writer.Writer`) are typed
    against this protocol, so the local and the Ray backend are interchangeable.
    Each verb has the arguments, results and errors of the
    :class:`~replaydb.table.Table` method of the same name, plus ``table=`` (the
    table's name; ``None``: the only one).

    Example:
        >>> client = Server(Table(Spec({"x": ()}), 10)).client()
        >>> isinstance(client, TableClient)
        True
    """

    def insert(
        self,
        step: Mapping[str, Any],
        *,
        stream: int = 0,
        end: bool | int = False,
        priority: float | None = None,
        timeout: float | None = None,
        table: str | None = None,
    ) -> None:
        """Write one step."""

    def extend(
        self,
        steps: Mapping[str, Any],
        *,
        streams: Any = None,
        ends: Any = None,
        priorities: Any = None,
        timeout: float | None = None,
        table: str | None = None,
    ) -> None:
        """Write a batch of steps."""

    def sample(
        self,
        batch_size: int,
        *,
        beta: float | None = None,
        timeout: float | None = None,
        table: str | None = None,
    ) -> Sample:
        """Draw a batch of items."""
        raise NotImplementedError

    def update_priorities(self, keys: Any, priorities: Any, *, table: str | None = None) -> int:
        """Set new priorities; return how many keys named a live item."""
        raise NotImplementedError

    def info(self, *, table: str | None = None) -> TableInfo:
        """A snapshot of a table's counters."""
        raise NotImplementedError

    def reset(self, *, table: str | None = None) -> None:
        """Empty a table."""

    def checkpoint(self) -> str:
        """Write a checkpoint of every table; return its path."""
        raise NotImplementedError

    def tables(self) -> list[str]:
        """Names of the served tables."""
        raise NotImplementedError


def _named_tables(tables: Any) -> dict[str, Table]:
    if isinstance(tables, Table):
        return {tables.name: tables}
    if isinstance(tables, Mapping):
        out: dict[str, Table] = {}
        for name, table in tables.items():
            if not isinstance(name, str) or not name:
                raise InvalidArgumentError(f"table names must be non-empty strings, got {name!r}")
            if not isinstance(table, Table):
                raise InvalidArgumentError(
                    f"tables[{name!r}] must be a replaydb Table, got {type(table).__name__}"
                )
            out[name] = table
    elif isinstance(tables, Sequence) and not isinstance(tables, str | bytes):
        out = {}
        for i, table in enumerate(tables):
            if not isinstance(table, Table):
                raise InvalidArgumentError(
                    f"tables[{i}] must be a replaydb Table, got {type(table).__name__}"
                )
            if table.name in out:
                raise InvalidArgumentError(
                    f"two tables are named {table.name!r}; give each table a distinct name= "
                    "or pass a mapping {name: table}"
                )
            out[table.name] = table
    else:
        raise InvalidArgumentError(
            f"tables must be a Table, a sequence of Tables or a mapping name -> Table, "
            f"got {type(tables).__name__}"
        )
    if not out:
        raise InvalidArgumentError("a Server needs at least one table, got none")
    return out


class Server:
    """Hosts named tables; hands out clients; writes checkpoints.

    Args:
        tables: A :class:`~replaydb.table.Table`, a sequence of tables (named by their
            ``name``) or a mapping ``name -> Table``.
        checkpoint_dir: Where :meth:`checkpoint` writes (``None``: checkpoints are
            refused with a clear error).
        keep: How many complete checkpoints to keep; older ones that replaydb wrote
            are deleted, nothing else in the directory is touched.
        backend: ``"local"`` (in this process) or ``"ray"`` (Ray actors; needs
            ``pip install 'replaydb[ray]'``).
        **backend_options: Passed to the Ray backend (``num_shards``,
            ``checkpoint_interval_s``, ``address``); the local backend takes none.

    Raises:
        InvalidArgumentError: For bad tables, names, ``keep``, backend or options.
        MissingDependencyError: For ``backend="ray"`` without Ray installed.

    Example:
        >>> server = Server(Table(Spec({"x": (2,)}), 100, name="replay"))
        >>> server.client().insert({"x": [1.0, 2.0]})
        >>> server.client().info().size
        1
    """

    def __init__(
        self,
        tables: Table | Sequence[Table] | Mapping[str, Table],
        *,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        keep: int = 1,
        backend: str = "local",
        **backend_options: Any,
    ) -> None:
        if backend not in _BACKENDS:
            raise InvalidArgumentError(f"backend must be one of {list(_BACKENDS)}, got {backend!r}")
        named = _named_tables(tables)
        keep = check_int("keep", keep, 1)
        #: JSON-serializable data stored in every checkpoint's manifest under
        #: ``extra`` (local backend); the manager keeps its data-spec nest here.
        self.checkpoint_extra: dict[str, Any] = {}
        self._ray: Any = None
        self._closed = False
        self._lock = threading.Lock()
        self._tables: dict[str, Table] = {}
        self.checkpoint_dir = None if checkpoint_dir is None else os.fspath(checkpoint_dir)
        self.keep = keep
        self.backend = backend
        if backend == "ray":
            require("ray", "ray")
            from replaydb.ray import RayServer

            self._ray = RayServer(
                named, checkpoint_dir=checkpoint_dir, keep=keep, **backend_options
            )
            return
        if backend_options:
            raise InvalidArgumentError(
                f"the local backend takes no backend options, got {sorted(backend_options)}; "
                "options such as num_shards and address are for backend='ray'"
            )
        for table in named.values():
            table.shared = True
        self._tables = named

    def __repr__(self) -> str:
        names = [] if self._closed else self.tables()
        state = "closed" if self._closed else "open"
        return f"Server(tables={names}, backend={self.backend!r}, {state})"

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("this Server is closed; create a new Server to serve tables again")

    def client(self) -> Client:
        """A client bound to this server (a ``RayClient`` for the Ray backend).

        Raises:
            ClosedError: If the server is closed.
        """
        self._check_open()
        if self._ray is not None:
            return self._ray.client()  # type: ignore[no-any-return]
        return Client(self)

    def tables(self) -> list[str]:
        """Names of the hosted tables, in the order given."""
        self._check_open()
        if self._ray is not None:
            return list(self._ray.tables())
        return list(self._tables)

    def table(self, name: str | None = None) -> Table:
        """The hosted :class:`Table` called ``name`` (``None``: the only one). Local only.

        Raises:
            InvalidArgumentError: For an unknown name, or ``None`` with several tables.
            ClosedError: If the server is closed.
        """
        self._check_open()
        if self._ray is not None:
            raise InvalidArgumentError(
                "table objects live in Ray actors with backend='ray'; use client() instead"
            )
        if name is None:
            if len(self._tables) == 1:
                return next(iter(self._tables.values()))
            raise InvalidArgumentError(
                f"this server hosts {len(self._tables)} tables {list(self._tables)}; "
                "pass table=<name> to choose one"
            )
        try:
            return self._tables[name]
        except KeyError:
            raise InvalidArgumentError(
                f"table {name!r} is not hosted here; the server has {list(self._tables)}"
            ) from None

    def checkpoint(self) -> str:
        """Write every table into a new checkpoint directory; return its path.

        Checkpoints are written one at a time; each table is copied under its lock,
        so writers and samplers wait only for the copy, not the disk.

        Raises:
            InvalidArgumentError: If the server has no ``checkpoint_dir``.
            ClosedError: If the server is closed.
        """
        self._check_open()
        if self._ray is not None:
            return str(self._ray.checkpoint())
        if self.checkpoint_dir is None:
            raise InvalidArgumentError(
                "this Server has no checkpoint_dir; pass checkpoint_dir=... to Server()"
            )
        with self._lock:
            path = write_checkpoint(
                self.checkpoint_dir, self._tables, keep=self.keep, extra=self.checkpoint_extra
            )
        return str(path)

    def close(self) -> None:
        """Stop serving; later calls on the server or its clients raise ``ClosedError``."""
        if self._closed:
            return
        self._closed = True
        if self._ray is not None:
            self._ray.close()
            self._ray = None
        for table in self._tables.values():
            table.shared = False
        self._tables = {}


class Client:
    """The table verbs of a local :class:`Server`, safe to share between threads.

    Every method takes ``table=`` (``None``: the server's only table) and otherwise
    has the arguments, results and errors of the :class:`~replaydb.table.Table`
    method of the same name.

    Args:
        server: The local server to talk to (usually via :meth:`Server.client`).

    Example:
        >>> client = Server(Table(Spec({"x": ()}), 10)).client()
        >>> client.extend({"x": [1.0, 2.0, 3.0]})
        >>> client.sample(2).keys.shape
        torch.Size([2])
    """

    def __init__(self, server: Server) -> None:
        if not isinstance(server, Server):
            raise InvalidArgumentError(f"server must be a Server, got {type(server).__name__}")
        self._server = server

    def __repr__(self) -> str:
        return f"Client({self._server!r})"

    def _table(self, table: str | None) -> Table:
        return self._server.table(table)

    def insert(
        self,
        step: Mapping[str, Any],
        *,
        stream: int = 0,
        end: bool | int = False,
        priority: float | None = None,
        timeout: float | None = None,
        table: str | None = None,
    ) -> None:
        """Write one step; see :meth:`Table.insert <replaydb.table.Table.insert>`."""
        self._table(table).insert(step, stream=stream, end=end, priority=priority, timeout=timeout)

    def extend(
        self,
        steps: Mapping[str, Any],
        *,
        streams: Any = None,
        ends: Any = None,
        priorities: Any = None,
        timeout: float | None = None,
        table: str | None = None,
    ) -> None:
        """Write a batch of steps; see :meth:`Table.extend <replaydb.table.Table.extend>`."""
        self._table(table).extend(
            steps, streams=streams, ends=ends, priorities=priorities, timeout=timeout
        )

    def sample(
        self,
        batch_size: int,
        *,
        beta: float | None = None,
        timeout: float | None = None,
        table: str | None = None,
    ) -> Sample:
        """Draw a batch of items; see :meth:`Table.sample <replaydb.table.Table.sample>`."""
        return self._table(table).sample(batch_size, beta=beta, timeout=timeout)

    def update_priorities(self, keys: Any, priorities: Any, *, table: str | None = None) -> int:
        """Re-prioritize items; see :meth:`Table.update_priorities`."""
        return self._table(table).update_priorities(keys, priorities)

    def info(self, *, table: str | None = None) -> TableInfo:
        """A snapshot of a table's counters; see :meth:`Table.info`."""
        return self._table(table).info()

    def reset(self, *, table: str | None = None) -> None:
        """Empty a table; see :meth:`Table.reset`."""
        self._table(table).reset()

    def checkpoint(self) -> str:
        """Write a checkpoint of every table of the server; return its path."""
        return self._server.checkpoint()

    def tables(self) -> list[str]:
        """Names of the server's tables."""
        return self._server.tables()
