"""``Server``: named tables behind an address, in this process.

``Server(tables, port)`` registers itself under ``port``; ``Client('localhost:<port>')``
(or any ``host:<port>``) finds it in that registry. There is no network: every
client of a ``replaydb.reverb`` server lives in the server's process (Reverb's
gRPC protocol is out of scope). The server also keeps its open writers, so a
reader can ask them to flush staged items before it waits or reports a size.
"""

from __future__ import annotations

import socket
import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from replaydb._validate import check_int
from replaydb.errors import ClosedError, InvalidArgumentError
from replaydb.reverb.tables import Table

if TYPE_CHECKING:
    from replaydb.reverb.client import Client
    from replaydb.reverb.item_writer import ItemWriter

__all__ = ["Server", "Table", "resolve"]

_REGISTRY: dict[int, Server] = {}
_REGISTRY_LOCK = threading.Lock()
#: Ports ever chosen for ``port=None``: never handed out twice in one process, so a
#: client (or a dataset) of a stopped server cannot reach a later one by accident.
_USED: set[int] = set()


def _free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _USED and port not in _REGISTRY:
            _USED.add(port)
            return port


def resolve(address: str) -> Server:
    """The running server of this process at ``address`` (``'host:port'``).

    Raises:
        InvalidArgumentError: If the address is malformed.
        ClosedError: If no server of this process listens on that port.

    Example:
        >>> # resolve(f"localhost:{server.port}") is server
    """
    if not isinstance(address, str) or ":" not in address:
        raise InvalidArgumentError(
            f"server address must be 'host:port', got {address!r}; use f'localhost:{{server.port}}'"
        )
    port_text = address.rsplit(":", 1)[1]
    if not port_text.isdigit():
        raise InvalidArgumentError(f"server address {address!r} has no numeric port")
    with _REGISTRY_LOCK:
        server = _REGISTRY.get(int(port_text))
    if server is None:
        raise ClosedError(
            f"no replaydb.reverb server on port {port_text} in this process (address "
            f"{address!r}); replaydb.reverb serves in-process only: start Server(...) in the "
            "process that uses the Client, and keep it running"
        )
    return server


class Server:
    """Serves tables to clients of this process (Reverb's ``Server``).

    Args:
        tables: The tables (unique names, each served once).
        port: Port to register under (None: a free one).
        checkpointer: Where :meth:`Client.checkpoint` writes; if it holds a
            checkpoint, the newest one is restored into the tables now.

    Raises:
        InvalidArgumentError: For duplicate names, a table served twice, or a port in use.

    Example:
        >>> from replaydb.reverb import Table
        >>> server = Server([Table.queue("q", 10)])
        >>> client = server.localhost_client(); server.stop()
    """

    def __init__(
        self,
        tables: Sequence[Table] | None = None,
        port: int | None = None,
        checkpointer: Any = None,
    ) -> None:
        tables = list(tables or [])
        names = [t.name for t in tables if isinstance(t, Table)]
        if len(names) != len(tables):
            bad = next(t for t in tables if not isinstance(t, Table))
            raise InvalidArgumentError(
                f"tables must be reverb.Table objects, got {type(bad).__name__}"
            )
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise InvalidArgumentError(f"table names must be unique, got {sorted(dup)} twice")
        if port is not None:
            port = check_int("port", port, 0, what="None or an int")
        self._tables = {t.name: t for t in tables}
        self._writers: weakref.WeakSet[ItemWriter] = weakref.WeakSet()
        self._writers_lock = threading.Lock()
        if checkpointer is None:
            from replaydb.reverb.checkpointers import default_checkpointer

            checkpointer = default_checkpointer()
        self._checkpointer = checkpointer
        with _REGISTRY_LOCK:
            for t in tables:
                if getattr(t, "_served_by", None) is not None:
                    raise InvalidArgumentError(
                        f"table {t.name!r} is already served by another Server; make a new Table"
                    )
            chosen = port or _free_port()
            if chosen in _REGISTRY:
                raise InvalidArgumentError(
                    f"port {chosen} is already used by another replaydb.reverb Server in this "
                    "process; pass port=None for a free one"
                )
            self._port = chosen
            _REGISTRY[chosen] = self
            for t in tables:
                t._served_by = self  # type: ignore[attr-defined]
        for t in tables:
            t.set_flush_hook(self.push_writers)
        self._stopped = False
        try:
            checkpointer.load_latest(self._tables)
        except BaseException:
            self.stop()
            raise

    def __repr__(self) -> str:
        return f"Server(port={self._port}, tables={sorted(self._tables)})"

    @property
    def port(self) -> int:
        """The port clients address this server by."""
        return self._port

    @property
    def tables(self) -> dict[str, Table]:
        """``name -> Table``."""
        return dict(self._tables)

    def table(self, name: str) -> Table:
        """The served table ``name``.

        Raises:
            InvalidArgumentError: If there is no such table (the message lists them).
        """
        if self._stopped:
            raise ClosedError(f"the server on port {self._port} was stopped")
        try:
            return self._tables[name]
        except KeyError:
            raise InvalidArgumentError(
                f"no table {name!r} on this server; tables: {sorted(self._tables)}"
            ) from None

    def localhost_client(self) -> Client:
        """A client of this server."""
        from replaydb.reverb.client import Client

        return Client(f"localhost:{self._port}")

    def register_writer(self, writer: ItemWriter) -> None:
        """Keep ``writer`` (a writer's item stage) so readers can ask it to flush."""
        with self._writers_lock:
            self._writers.add(writer)

    def unregister_writer(self, writer: ItemWriter) -> None:
        """Forget a closed writer."""
        with self._writers_lock:
            self._writers.discard(writer)

    def push_writers(self) -> None:
        """Ask every open writer to insert its staged items (never waits: skips busy writers)."""
        with self._writers_lock:
            writers = list(self._writers)
        for w in writers:
            w.try_flush()

    def checkpoint(self) -> str:
        """Write every table to the checkpointer; return the checkpoint's path."""
        self.push_writers()
        return str(self._checkpointer.save(self._tables))

    def stop(self) -> None:
        """Stop serving: the address no longer resolves. Stopping twice is a no-op."""
        with _REGISTRY_LOCK:
            if _REGISTRY.get(self._port) is self:
                del _REGISTRY[self._port]
            for t in self._tables.values():
                if getattr(t, "_served_by", None) is self:
                    t._served_by = None  # type: ignore[attr-defined]
        for t in self._tables.values():
            t.set_flush_hook(None)
        self._stopped = True

    def wait(self) -> None:
        """Reverb blocks until the server stops; in-process there is nothing to wait for."""
        return None
