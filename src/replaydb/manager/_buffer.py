"""The replay buffer and client a :class:`ReplayBufferManager` hands out.

Both are thin: every read first flushes the manager's observers (without waiting on
a blocking rate limiter), writes and checkpoints flush and wait, and a reset drops
what the observers staged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from replaydb.dataset import Dataset
from replaydb.errors import InvalidArgumentError
from replaydb.server import TableClient
from replaydb.table import Sample, TableInfo

if TYPE_CHECKING:
    from replaydb.manager._manager import ReplayBufferManager

__all__ = ["ManagedReplayBuffer"]

#: The name of the manager's table.
TABLE_NAME = "replay_buffer"


class _ManagedClient:
    """A client whose reads and checkpoints first flush the manager's observers."""

    def __init__(self, manager: ReplayBufferManager, client: TableClient) -> None:
        self._manager = manager
        self._client = client

    def __repr__(self) -> str:
        return f"py_client({self._client!r})"

    def insert(self, step: Mapping[str, Any], **kwargs: Any) -> None:
        self._manager._flush_observers(wait=True)
        self._client.insert(step, **kwargs)

    def extend(self, steps: Mapping[str, Any], **kwargs: Any) -> None:
        self._manager._flush_observers(wait=True)
        self._client.extend(steps, **kwargs)

    def sample(self, batch_size: int, **kwargs: Any) -> Sample:
        self._manager._flush_observers(wait=False)
        return self._client.sample(batch_size, **kwargs)

    def update_priorities(self, keys: Any, priorities: Any = None, **kwargs: Any) -> int:
        """Re-prioritize items: ``(keys, priorities)``, or Reverb's ``(table, {key: priority})``.

        Returns:
            How many keys named a live item.

        Raises:
            InvalidArgumentError: For an unknown table name, or a Reverb-style call
                whose second argument is not a ``{key: priority}`` mapping.

        Example:
            >>> replay_buffer, observer = manager.create_replay_buffer()
            >>> for t in range(5):
            ...     observer({"obs": np.zeros(3, np.float32), "done": False})
            >>> observer.flush()
            >>> replay_buffer.py_client.update_priorities("replay_buffer", {3: 0.5})
            1
        """
        if isinstance(keys, str):
            if keys not in self._client.tables():
                raise InvalidArgumentError(
                    f"update_priorities: no table {keys!r}; this buffer's table is {TABLE_NAME!r}"
                )
            if not isinstance(priorities, Mapping):
                raise InvalidArgumentError(
                    "update_priorities(table, updates) takes Reverb's {key: priority} mapping "
                    f"as updates, got {type(priorities).__name__}; or call "
                    "update_priorities(keys, priorities)"
                )
            kwargs["table"] = keys
            keys, priorities = list(priorities.keys()), list(priorities.values())
        elif isinstance(keys, Mapping) and priorities is None:
            keys, priorities = list(keys.keys()), list(keys.values())
        elif priorities is None:
            raise InvalidArgumentError(
                "update_priorities needs priorities: (keys, priorities), ({key: priority}) "
                "or Reverb's (table, {key: priority})"
            )
        return int(self._client.update_priorities(keys, priorities, **kwargs))

    def info(self, **kwargs: Any) -> TableInfo:
        self._manager._flush_observers(wait=False)
        return self._client.info(**kwargs)

    def reset(self, **kwargs: Any) -> None:
        self._manager._discard_observers()
        self._client.reset(**kwargs)

    def checkpoint(self) -> str:
        """Flush the observers, then write a checkpoint; return its path."""
        return self._manager.checkpoint()

    def tables(self) -> list[str]:
        return list(self._client.tables())


# ====================================================================== buffer
class ManagedReplayBuffer:
    """The replay buffer a :class:`ReplayBufferManager` returns (TF-Agents' shape).

    Attributes:
        py_client: The client of the table; ``py_client.checkpoint()`` writes a
            checkpoint and returns its path.
        data_spec: The spec of one step (the nest given to the manager).
        capacity: Steps the table holds.
        sequence_length: Steps per item.
    """

    def __init__(self, manager: ReplayBufferManager) -> None:
        self._manager = manager
        self.py_client = _ManagedClient(manager, manager._require_client())
        self.data_spec: Any = manager.data_spec
        self.capacity = manager.capacity
        self.sequence_length = manager.sequence_length

    def __repr__(self) -> str:
        return (
            f"ManagedReplayBuffer(capacity={self.capacity}, sequence_length={self.sequence_length})"
        )

    def as_dataset(
        self,
        sample_batch_size: int,
        num_steps: int | None = None,
        num_parallel_calls: int | None = None,
        *,
        timeout: float | None = None,
    ) -> Dataset:
        """Endless ``(batch, info)`` pairs; chain ``.prefetch(n)`` to sample ahead.

        Args:
            sample_batch_size: Rows per batch.
            num_steps: Steps per row; must divide ``sequence_length`` (default all).
            num_parallel_calls: Sampling threads (default 1).
            timeout: Seconds a batch may wait for the rate limiter (``None``: for ever).

        Returns:
            A :class:`~replaydb.dataset.Dataset` whose batches have the data spec's
            structure with leaves ``[B, num_steps, ...]``.

        Raises:
            InvalidArgumentError: (a ``ValueError``) for bad sizes, or ``num_steps``
                not dividing ``sequence_length``.
            ClosedError: If the manager is closed.

        Example:
            >>> replay_buffer, observer = manager.create_replay_buffer()
            >>> for t in range(10):
            ...     observer({"obs": np.zeros(3, np.float32), "done": t == 9})
            >>> ds = replay_buffer.as_dataset(64, num_steps=2, num_parallel_calls=3).prefetch(3)
            >>> batch, info = next(iter(ds)); batch["obs"].shape
            torch.Size([64, 2, 3])
        """
        return self._manager._dataset(
            sample_batch_size,
            num_steps,
            1 if num_parallel_calls is None else num_parallel_calls,
            timeout,
        )

    def num_frames(self) -> int:
        """Sampleable items (windows), as Reverb counts them; see the manager."""
        return self._manager.num_frames()

    def clear(self) -> None:
        """Empty the table; see :meth:`ReplayBufferManager.clear`."""
        self._manager.clear()
