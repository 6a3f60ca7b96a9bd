"""``Client``: Reverb's Python client over an in-process server, and the legacy ``Writer``.

A client holds only its address and looks the server up on every call, so it
pickles by address (as Reverb's does) and fails clearly once the server stopped.
Both writers it makes stage their items in an
:class:`~replaydb.reverb.item_writer.ItemWriter`, i.e. in replaydb's one
:class:`~replaydb.writer.Writer` with its batching and flush policy.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Mapping
from typing import Any

import numpy as np

from replaydb.errors import ClosedError, InvalidArgumentError
from replaydb.reverb.item_writer import PUSH_EVERY, ItemWriter
from replaydb.reverb.replay_sample import ReplaySample, SampleInfo, stack_columns
from replaydb.reverb.server import Server, resolve
from replaydb.reverb.tables import Item, TableInfo
from replaydb.reverb.trajectory_writer import StepBuffer, TrajectoryWriter, to_numpy

__all__ = ["Client", "Writer"]


class Writer:
    """Reverb's legacy writer: append whole steps, create items over the last N.

    Items of this writer keep a time axis on every column (``[N, ...]``). They are
    staged and inserted like a :class:`~replaydb.reverb.TrajectoryWriter`'s (every
    ``64`` per table, on ``flush``/``end_episode``/``close``, and before a read).

    Args:
        client: The client whose server receives the items.
        max_sequence_length: Steps an item may span.

    Example:
        >>> # with client.writer(2) as w: w.append(step); w.create_item("t", 1, 1.0)
    """

    def __init__(self, client: Client, max_sequence_length: int) -> None:
        import tensorflow as tf  # type: ignore[import-untyped, unused-ignore]

        self._nest = tf.nest
        server = client.server
        self._buf = StepBuffer(max_sequence_length)
        self._items = ItemWriter(server.table, PUSH_EVERY)
        self._server = server
        server.register_writer(self._items)
        self._closed = False

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(self, data: Any) -> None:
        """Append one step (a nest of arrays)."""
        if self._closed:
            raise ClosedError("append on a closed Writer")
        self._buf.append([to_numpy(x) for x in self._nest.flatten(data)])

    def append_sequence(self, sequence: Any) -> None:
        """Append steps given with a leading time axis on every leaf."""
        leaves = [to_numpy(x) for x in self._nest.flatten(sequence)]
        lengths = {leaf.shape[0] if leaf.ndim else -1 for leaf in leaves}
        if len(lengths) != 1 or -1 in lengths:
            raise InvalidArgumentError(
                f"append_sequence needs one leading time axis on every leaf, got lengths {lengths}"
            )
        for t in range(lengths.pop()):
            self._buf.append([leaf[t] for leaf in leaves])

    def create_item(self, table: str, num_timesteps: int, priority: float) -> None:
        """Create an item in ``table`` over the last ``num_timesteps`` steps.

        Raises:
            InvalidArgumentError: If fewer steps were appended in this episode, or
                more than ``max_sequence_length`` are asked for.
        """
        if self._closed:
            raise ClosedError("create_item on a closed Writer")
        if not 1 <= num_timesteps <= min(self._buf.episode_steps, self._buf.keep):
            raise InvalidArgumentError(
                f"num_timesteps must be in [1, {min(self._buf.episode_steps, self._buf.keep)}] "
                f"(steps appended, at most max_sequence_length), got {num_timesteps}"
            )
        window = slice(-num_timesteps, None)
        item = tuple(
            (tuple(self._buf.select(c, window)), False) for c in range(len(self._buf.columns))
        )
        self._items.create(table, item, priority)

    def flush(self) -> None:
        """Insert staged items into their tables."""
        self._items.flush()

    def end_episode(self) -> None:
        """Insert staged items and start a new episode."""
        self.flush()
        self._buf.reset()

    def close(self, retry_on_unavailable: bool = True) -> None:
        """Insert staged items and close. Closing twice is a no-op."""
        if self._closed:
            return
        try:
            self._items.close()
        finally:
            self._closed = True
            self._server.unregister_writer(self._items)


class Client:
    """Talks to the :class:`~replaydb.reverb.Server` of this process at ``server_address``.

    Args:
        server_address: ``'localhost:<port>'`` (any host; the port names the server).

    Example:
        >>> # client = Client(f"localhost:{server.port}")
        >>> # client.server_info()["my_table"].current_size
    """

    def __init__(self, server_address: str) -> None:
        if not isinstance(server_address, str):
            raise InvalidArgumentError(
                f"server_address must be a 'host:port' str, got {server_address!r}"
            )
        self._address = server_address

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (Client, (self._address,))

    def __repr__(self) -> str:
        return f"Client(server_address={self._address!r})"

    @property
    def server_address(self) -> str:
        """The address this client resolves."""
        return self._address

    @property
    def server(self) -> Server:
        """The server this client talks to (raises if it stopped)."""
        return resolve(self._address)

    def push(self, table: str, items: list[Item], priorities: list[float]) -> None:
        """Insert items into a served table now, in order (no staging).

        Raises:
            InvalidArgumentError: For a bad priority or table name (nothing inserted).
        """
        self.server.table(table).insert_items(items, priorities)

    # --------------------------------------------------------------- writes
    def insert(self, data: Any, priorities: Mapping[str, float]) -> None:
        """Insert one step as a one-step item into each table of ``priorities``.

        Raises:
            InvalidArgumentError: If ``priorities`` is empty.
        """
        if not priorities:
            raise InvalidArgumentError("priorities must name at least one table: {table: priority}")
        with self.writer(1) as writer:
            writer.append(data)
            for table, priority in priorities.items():
                writer.create_item(table, 1, priority)

    def writer(
        self,
        max_sequence_length: int,
        delta_encoded: bool = False,
        chunk_length: int | None = None,
        max_in_flight_items: int | None = 25,
    ) -> Writer:
        """A legacy :class:`Writer` (prefer :meth:`trajectory_writer`)."""
        return Writer(self, max_sequence_length)

    def trajectory_writer(
        self,
        num_keep_alive_refs: int,
        get_signature_timeout_secs: float | None = None,
        validate_items: bool = True,
    ) -> TrajectoryWriter:
        """A :class:`~replaydb.reverb.TrajectoryWriter` keeping ``num_keep_alive_refs`` steps."""
        server = self.server
        return TrajectoryWriter(
            server.table,
            num_keep_alive_refs,
            register=server.register_writer,
            unregister=server.unregister_writer,
        )

    def mutate_priorities(
        self,
        table: str,
        updates: Mapping[int, float] | None = None,
        deletes: Iterable[int] | None = None,
    ) -> None:
        """Set priorities (``{key: priority}``) and delete items (keys) of ``table``."""
        t = self.server.table(table)
        if updates:
            t.update_priorities(list(updates.keys()), list(updates.values()))
        if deletes:
            t.delete(list(deletes))

    def reset(self, table: str) -> None:
        """Remove every item of ``table``."""
        self.server.push_writers()
        self.server.table(table).reset()

    # ---------------------------------------------------------------- reads
    def sample(
        self,
        table: str,
        num_samples: int = 1,
        *,
        emit_timesteps: bool = True,
        unpack_as_table_signature: bool = False,
    ) -> Generator[list[ReplaySample] | ReplaySample, None, None]:
        """Yield ``num_samples`` samples of ``table``, blocking as the rate limiter says.

        With ``emit_timesteps`` each sample is a list of per-step
        :class:`ReplaySample` (every column must have a time axis of one length);
        otherwise one :class:`ReplaySample` with the item's columns.
        """
        t = self.server.table(table)
        signature = t.signature if unpack_as_table_signature else None
        for _ in range(num_samples):
            info, items = t.sample(1)
            cols = stack_columns(items)
            data = [c[0] for c in cols]
            si = SampleInfo(
                key=int(info["key"][0]),
                probability=float(info["probability"][0]),
                table_size=int(info["table_size"][0]),
                priority=float(info["priority"][0]),
                times_sampled=int(info["times_sampled"][0]),
            )
            if not emit_timesteps:
                yield ReplaySample(si, _unflatten(signature, data))
                continue
            if all(squeeze for _, squeeze in items[0]):
                # One step inserted whole (TFClient.insert): a list of one sample.
                yield [ReplaySample(si, _unflatten(signature, data))]
                continue
            lengths = {len(steps) for steps, squeeze in items[0] if not squeeze}
            if len(lengths) != 1 or any(squeeze for _, squeeze in items[0]):
                raise InvalidArgumentError(
                    "emit_timesteps=True needs every column of the item to have one time "
                    "length; pass emit_timesteps=False"
                )
            yield [
                ReplaySample(si, _unflatten(signature, [np.asarray(c)[i] for c in data]))
                for i in range(lengths.pop())
            ]

    def server_info(self, timeout: int | None = None) -> dict[str, TableInfo]:
        """``name -> TableInfo`` for every table (writers' pending items pushed first)."""
        server = self.server
        server.push_writers()
        return {name: t.info for name, t in server.tables.items()}

    def checkpoint(self) -> str:
        """Checkpoint every table of the server; return the checkpoint's path."""
        return self.server.checkpoint()


def _unflatten(signature: Any, flat: list[Any]) -> Any:
    if signature is None:
        return flat
    import tensorflow as tf  # type: ignore[import-untyped, unused-ignore]

    return tf.nest.pack_sequence_as(signature, flat)
