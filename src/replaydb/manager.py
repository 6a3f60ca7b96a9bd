"""ReplayBufferManager: the Reverb-style replay workflow of TF-Agents projects.

TF-Agents trainers wrap DeepMind Reverb (Cassirer et al. 2021, arXiv 2102.04736) in
a small manager: a table of ``sequence_length``-step windows in a server, an
observer that writes environment steps, datasets of ``[B, num_steps, ...]``
batches, and a checkpoint directory. :class:`ReplayBufferManager` gives the same
calls on a replaydb :class:`~replaydb.table.Table` hosted by a
:class:`~replaydb.server.Server` (in-process, or on Ray with ``backend="ray"``)::

    manager = ReplayBufferManager(data_spec, capacity, checkpoint_dir, sequence_length=2)
    replay_buffer, observer = manager.create_replay_buffer()   # or load_replay_buffer()
    observer(step)                                             # in the collect loop
    dataset = replay_buffer.as_dataset(64, num_steps=2, num_parallel_calls=3).prefetch(3)
    replay_buffer.py_client.checkpoint()

Items and frames
----------------
The table stores *steps*; an *item* is a window of ``sequence_length`` consecutive
steps of one episode (stride 1), so an episode of ``L`` steps gives
``L - sequence_length + 1`` items. :meth:`ReplayBufferManager.num_frames` counts
items, as Reverb does.

Episode boundaries
------------------
For trajectory-shaped steps (a ``next_step_type`` field), the rule is TF-Agents'
``ReverbAddTrajectoryObserver``'s: an episode ends after its boundary step
(``step_type`` LAST), so the terminal transition is stored too (for FIRST, MID,
MID(next_step_type=LAST), boundary: windows (0, 1), (1, 2), (2, 3)); a step whose
``step_type`` is FIRST (0) always starts a new episode. Otherwise the episode ends
after a step whose ``terminated``/``truncated``/``done`` field is true, or when the
observer is called with ``done=True``.

Starter buffers of ``replaydb populate`` (the *steps* layout of
:mod:`replaydb.collect`) load with a TF-Agents ``Trajectory`` spec too: the missing
``next_step_type`` and ``discount`` are derived from ``step_type``, ``terminated``
and ``truncated`` (see :meth:`ReplayBufferManager.load_replay_buffer`).

Checkpoints
-----------
``<checkpoint_dir>/ckpt-<20-digit timestamp>/`` as written by
:func:`replaydb.checkpoint.write_checkpoint`: the table ``replay_buffer`` in
safetensors, a ``manifest.json`` (format version, checksums, and under
``extra.manager`` the data-spec nest as JSON), and a ``COMPLETE`` marker written
last. Loading takes the newest complete one; the newest ``keep`` are kept and only
directories replaydb wrote are ever deleted.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np
import torch

from replaydb.checkpoint import latest_checkpoint, list_checkpoints, read_checkpoint
from replaydb.dataset import Dataset
from replaydb.errors import (
    CheckpointError,
    ClosedError,
    InvalidArgumentError,
    SpecMismatchError,
)
from replaydb.nest import Nest
from replaydb.observer import StepObserver
from replaydb.rate_limiters import RateLimiter, rate_limiter_from_config
from replaydb.samplers import Sampler, sampler_from_config
from replaydb.server import Server
from replaydb.spec import Spec
from replaydb.storage import END_NONE
from replaydb.table import Sample, Table, TableInfo

__all__ = ["ManagedReplayBuffer", "ReplayBufferManager", "StepObserver"]

TABLE_NAME = "replay_buffer"
MANAGER_FORMAT = "replaydb.manager"
#: A dataset sample flushes observers whose oldest staged step waited this long (s).
STALE_S = 0.05


def _int_arg(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InvalidArgumentError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


# ====================================================================== client
class TableClient(Protocol):
    """The client verbs the manager uses (a local :class:`~replaydb.server.Client` or Ray's)."""

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

    def sample(
        self,
        batch_size: int,
        *,
        beta: float | None = None,
        timeout: float | None = None,
        table: str | None = None,
    ) -> Sample:
        """Draw a batch of items."""

    def update_priorities(self, keys: Any, priorities: Any, *, table: str | None = None) -> int:
        """Re-prioritize items."""

    def info(self, *, table: str | None = None) -> TableInfo:
        """A snapshot of a table."""

    def reset(self, *, table: str | None = None) -> None:
        """Empty a table."""

    def checkpoint(self) -> str:
        """Write a checkpoint."""

    def tables(self) -> list[str]:
        """Names of the tables."""


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


# ====================================================================== manager
class ReplayBufferManager:
    """A replay table in a server, an observer, datasets and a checkpoint directory.

    Args:
        data_spec: The spec of one step: a :class:`~replaydb.spec.Spec`, a mapping
            ``name -> (shape, dtype)``, Gymnasium spaces, or a nest of named tuples /
            dicts (e.g. a TF-Agents ``Trajectory``) whose leaves are ``Field`` s,
            ``(shape, dtype)`` pairs or spaces. ``None``: take the spec stored in the
            checkpoint (:meth:`load_replay_buffer` only).
        capacity: Steps the table holds.
        checkpoint_dir: The checkpoint directory (created on the first checkpoint).
        sequence_length: Steps per item (window), stride 1, never across episodes.
        sampler: Item sampler for a new table (default uniform).
        rate_limiter: Rate limiter for a new table (default ``MinSize(1)``).
        keep: Complete checkpoints to keep (older replaydb checkpoints are deleted).
        device: Where the table's tensors live (default CPU).
        write_batch: Steps an observer stages before one ``extend`` (default 4096).
        backend: ``"local"`` or ``"ray"``; ``**backend_options`` go to the Ray server.

    Raises:
        InvalidArgumentError: For a bad capacity, sequence length, keep, write batch,
            checkpoint directory or data spec.

    Example:
        >>> manager = ReplayBufferManager({"obs": ((3,), "float32")}, 1000, "ckpts")
        >>> replay_buffer, observer = manager.create_replay_buffer()
        >>> manager.close()
    """

    def __init__(
        self,
        data_spec: Any,
        capacity: int,
        checkpoint_dir: str | os.PathLike[str],
        sequence_length: int = 2,
        *,
        sampler: Sampler | None = None,
        rate_limiter: RateLimiter | None = None,
        keep: int = 1,
        device: torch.device | str | None = None,
        write_batch: int = 4096,
        backend: str = "local",
        **backend_options: Any,
    ) -> None:
        self.sequence_length = _int_arg("sequence_length", sequence_length, 1)
        self.capacity = _int_arg("capacity", capacity, 1)
        if self.capacity < self.sequence_length:
            raise InvalidArgumentError(
                f"capacity ({capacity}) must be at least sequence_length ({sequence_length})"
            )
        self.keep = _int_arg("keep", keep, 1)
        self.write_batch = _int_arg("write_batch", write_batch, 1)
        if not isinstance(checkpoint_dir, str | os.PathLike):
            raise InvalidArgumentError(
                f"checkpoint_dir must be a path, got {type(checkpoint_dir).__name__}"
            )
        self.checkpoint_dir = Path(checkpoint_dir)
        if self.checkpoint_dir.exists() and not self.checkpoint_dir.is_dir():
            raise InvalidArgumentError(
                f"checkpoint_dir {str(self.checkpoint_dir)!r} is a file; give a directory path"
            )
        if backend not in ("local", "ray"):
            raise InvalidArgumentError(f"backend must be 'local' or 'ray', got {backend!r}")
        self.data_spec = data_spec
        self._nest: Nest | None = (
            None
            if data_spec is None
            else data_spec
            if isinstance(data_spec, Nest)
            else Nest(data_spec)
        )
        self._sampler = sampler
        self._rate_limiter = rate_limiter
        self._device = device
        self._backend = backend
        self._backend_options = backend_options
        self._server: Server | None = None
        self._client: TableClient | None = None
        self._buffer: ManagedReplayBuffer | None = None
        self._observers: list[StepObserver] = []
        self._datasets: list[Dataset] = []
        self._next_stream = 0
        self._stream_lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open" if self._server else "no buffer yet")
        return (
            f"ReplayBufferManager(capacity={self.capacity}, sequence_length="
            f"{self.sequence_length}, checkpoint_dir={str(self.checkpoint_dir)!r}, {state})"
        )

    # ------------------------------------------------------------- helpers
    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("this ReplayBufferManager is closed; create a new one")

    def _require_client(self) -> TableClient:
        self._check_open()
        if self._client is None:
            raise InvalidArgumentError(
                "there is no replay buffer yet; call create_replay_buffer() or "
                "load_replay_buffer() first"
            )
        return self._client

    def _require_nest(self) -> Nest:
        assert self._nest is not None
        return self._nest

    def _new_stream(self) -> int:
        with self._stream_lock:
            s = self._next_stream
            self._next_stream += 1
            return s

    def _flush_observers(self, wait: bool, older_than: float = 0.0) -> None:
        for obs in list(self._observers):
            if wait:
                obs.flush()
            else:
                obs.try_flush(older_than=older_than)

    def _discard_observers(self) -> None:
        for obs in self._observers:
            obs.discard()

    def _extra(self) -> dict[str, Any]:
        assert self._nest is not None
        return {
            "manager": {
                "format": MANAGER_FORMAT,
                "format_version": 1,
                "data_spec": self._nest.to_json(),
                "sequence_length": self.sequence_length,
            }
        }

    def _serve(self, table: Table) -> tuple[ManagedReplayBuffer, StepObserver]:
        self._server = Server(
            {TABLE_NAME: table},
            checkpoint_dir=self.checkpoint_dir,
            keep=self.keep,
            backend=self._backend,
            **self._backend_options,
        )
        self._server.checkpoint_extra = self._extra()
        self._client = self._server.client()
        self._buffer = ManagedReplayBuffer(self)
        return self._buffer, self.observer()

    def _check_no_buffer(self, verb: str) -> None:
        self._check_open()
        if self._server is not None:
            raise InvalidArgumentError(
                f"{verb}: this manager already has a replay buffer; use it, or close() the "
                "manager and create a new one"
            )

    # ------------------------------------------------------------- creating
    def create_replay_buffer(
        self, overwrite: bool = False
    ) -> tuple[ManagedReplayBuffer, StepObserver]:
        """A new, empty replay buffer and an observer that writes to it.

        Args:
            overwrite: Replace the checkpoints already in ``checkpoint_dir``: an empty
                checkpoint is written at once and the older replaydb checkpoints are
                deleted after it is complete.

        Returns:
            ``(replay_buffer, observer)``.

        Raises:
            CheckpointError: If ``checkpoint_dir`` holds a checkpoint and ``overwrite``
                is false.
            InvalidArgumentError: If the manager has no data_spec or already a buffer.

        Example:
            >>> replay_buffer, observer = manager.create_replay_buffer()
        """
        self._check_no_buffer("create_replay_buffer")
        if self._nest is None:
            raise InvalidArgumentError(
                "create_replay_buffer needs a data_spec; pass one to ReplayBufferManager "
                "(data_spec=None only works with load_replay_buffer)"
            )
        existing = latest_checkpoint(self.checkpoint_dir)
        if existing is not None and not overwrite:
            raise CheckpointError(
                f"checkpoint_dir {str(self.checkpoint_dir)!r} already holds the checkpoint "
                f"{existing.name!r}; load it with load_replay_buffer(), or pass "
                "overwrite=True to replace it"
            )
        table = Table(
            self._nest.spec,
            self.capacity,
            sampler=self._sampler,
            rate_limiter=self._rate_limiter,
            sequence_length=self.sequence_length,
            device=self._device,
            name=TABLE_NAME,
        )
        out = self._serve(table)
        if existing is not None:
            path = Path(self.checkpoint())
            for old in list_checkpoints(self.checkpoint_dir):
                if old.name != path.name:
                    import shutil

                    shutil.rmtree(old, ignore_errors=True)
        return out

    def load_replay_buffer(
        self, missing_ok: bool = False
    ) -> tuple[ManagedReplayBuffer, StepObserver]:
        """The replay buffer of the newest complete checkpoint, and an observer.

        Items, priorities, the sampler's state and the rate limiter's counts are
        restored; the table can be sampled at once when it holds items.

        Args:
            missing_ok: With no checkpoint in ``checkpoint_dir``, create an empty
                buffer instead of raising.

        Returns:
            ``(replay_buffer, observer)``.

        Raises:
            CheckpointError: If there is no complete checkpoint (and not
                ``missing_ok``), or a file is damaged.
            SpecMismatchError: If the stored spec differs from ``data_spec``, naming
                the fields.
            InvalidArgumentError: If capacity or sequence_length differ from the
                checkpoint's.

        Example:
            >>> first = ReplayBufferManager(manager.data_spec, 100, "saved", sequence_length=2)
            >>> buffer, _ = first.create_replay_buffer(); _ = buffer.py_client.checkpoint()
            >>> first.close()
            >>> again = ReplayBufferManager(manager.data_spec, 100, "saved", sequence_length=2)
            >>> replay_buffer, observer = again.load_replay_buffer(); again.close()
        """
        self._check_no_buffer("load_replay_buffer")
        latest = latest_checkpoint(self.checkpoint_dir)
        if latest is None:
            if missing_ok:
                return self.create_replay_buffer()
            raise CheckpointError(
                f"no complete replaydb checkpoint in {str(self.checkpoint_dir)!r}; create a "
                "buffer with create_replay_buffer(), or pass missing_ok=True to start empty"
            )
        tables, manifest = read_checkpoint(latest, device=self._device)
        if TABLE_NAME in tables:
            table = tables[TABLE_NAME]
        elif len(tables) == 1:
            table = next(iter(tables.values()))
            table.name = TABLE_NAME
        else:
            raise CheckpointError(
                f"{str(latest)!r} holds tables {sorted(tables)} and none is named "
                f"{TABLE_NAME!r}; the manager needs exactly one table"
            )
        if self._nest is not None and self._nest.spec.diff(table.spec):
            converted = _trajectory_from_steps(table, self._nest.spec)
            if converted is not None:
                table, manifest = converted, {}
        stored = self._stored_nest(manifest, table.spec, latest)
        if self._nest is not None:
            lines = self._nest.spec.diff(table.spec)
            if lines:
                raise SpecMismatchError(
                    f"the table in {str(latest)!r} does not match data_spec (here = data_spec, "
                    f"there = checkpoint): {'; '.join(lines)}. Pass the data_spec the buffer "
                    "was written with, or data_spec=None to use the stored one"
                )
        else:
            self._nest = stored
            self.data_spec = stored
        if table.capacity != self.capacity:
            raise InvalidArgumentError(
                f"capacity ({self.capacity}) differs from the checkpoint's ({table.capacity}); "
                f"pass capacity={table.capacity} to load it"
            )
        if table.sequence_length != self.sequence_length:
            raise InvalidArgumentError(
                f"sequence_length ({self.sequence_length}) differs from the checkpoint's "
                f"({table.sequence_length}); pass sequence_length={table.sequence_length}"
            )
        rows = table.num_steps
        if rows:
            self._next_stream = int(table.storage.stream[:rows].max()) + 1
        return self._serve(table)

    @staticmethod
    def _stored_nest(manifest: Mapping[str, Any], spec: Spec, where: Path) -> Nest:
        meta = manifest.get("extra", {}).get("manager")
        if isinstance(meta, Mapping) and "data_spec" in meta:
            nest = Nest.from_json(meta["data_spec"])
            if nest.spec.diff(spec):
                raise CheckpointError(
                    f"{str(where)!r}: the stored data spec does not match the stored table "
                    f"({'; '.join(nest.spec.diff(spec))}); the manifest is inconsistent"
                )
            return nest
        return Nest(spec)

    def observer(self, write_batch: int | None = None) -> StepObserver:
        """Another observer for the buffer (one per actor thread), on fresh streams.

        Args:
            write_batch: Steps staged before one write (default: the manager's).

        Raises:
            InvalidArgumentError: If there is no buffer yet or ``write_batch`` < 1.
            ClosedError: If the manager is closed.
        """
        self._require_client()
        w = self.write_batch if write_batch is None else _int_arg("write_batch", write_batch, 1)
        obs = StepObserver(
            self._require_client(),
            self._require_nest(),
            new_stream=self._new_stream,
            write_batch=w,
            table=TABLE_NAME,
        )
        self._observers.append(obs)
        return obs

    # ------------------------------------------------------------- reading
    def _dataset(
        self, batch_size: int, num_steps: int | None, num_parallel_calls: int, timeout: float | None
    ) -> Dataset:
        client = self._require_client()
        ds = Dataset(
            client,
            batch_size,
            num_steps,
            table=TABLE_NAME,
            num_parallel_calls=num_parallel_calls,
            timeout=timeout,
        )
        ds.structure = self._nest
        ds.before_sample = lambda: self._flush_observers(wait=False, older_than=STALE_S)
        self._datasets.append(ds)
        return ds

    def get_dataset(
        self,
        batch_size: int,
        num_steps: int | None = None,
        *,
        num_parallel_calls: int = 1,
        prefetch: int = 2,
        timeout: float | None = None,
    ) -> Dataset:
        """An endless dataset of ``(batch, info)``, leaves ``[batch_size, num_steps, ...]``.

        Args:
            batch_size: Rows per batch.
            num_steps: Steps per row; must divide ``sequence_length`` (default all).
            num_parallel_calls: Sampling threads.
            prefetch: Batches kept ready (0: sample on demand in the caller's thread).
            timeout: Seconds a batch may wait for the rate limiter (``None``: for ever).

        Raises:
            InvalidArgumentError: (a ``ValueError``) for bad sizes, or ``num_steps``
                not dividing ``sequence_length``.

        Example:
            >>> replay_buffer, observer = manager.create_replay_buffer()
            >>> observer({"obs": np.zeros(3, np.float32), "done": False})
            >>> observer({"obs": np.ones(3, np.float32), "done": True})
            >>> batch, info = next(iter(manager.get_dataset(batch_size=64, num_steps=2)))
            >>> batch["obs"][:, 1].sum().item()
            192.0
        """
        ds = self._dataset(batch_size, num_steps, num_parallel_calls, timeout)
        return ds.prefetch(prefetch) if prefetch else ds

    def num_frames(self) -> int:
        """Sampleable items: windows of ``sequence_length`` steps, as Reverb counts them.

        Observers are flushed first (without waiting on a busy one). An episode of
        ``L`` steps contributes ``L - sequence_length + 1`` items.

        Example:
            >>> replay_buffer, observer = manager.create_replay_buffer()
            >>> manager.num_frames()
            0
        """
        client = self._require_client()
        self._flush_observers(wait=False)
        return int(client.info(table=TABLE_NAME).size)

    def info(self) -> TableInfo:
        """A snapshot of the table's counters (after flushing the observers)."""
        client = self._require_client()
        self._flush_observers(wait=False)
        return client.info(table=TABLE_NAME)

    # ------------------------------------------------------------- lifecycle
    def checkpoint(self) -> str:
        """Flush the observers and write a checkpoint; return its directory.

        Raises:
            OSError: If the disk refuses the write (the previous checkpoint stays).
        """
        client = self._require_client()
        self._flush_observers(wait=True)
        return str(client.checkpoint())

    def clear(self) -> None:
        """Empty the table and drop steps staged in observers (no reload from disk).

        Checkpoints on disk are untouched.
        """
        client = self._require_client()
        self._discard_observers()
        client.reset(table=TABLE_NAME)

    def close(self) -> None:
        """Flush the observers, stop the datasets' threads and the server. Idempotent.

        Steps a blocking rate limiter refuses at this point are dropped.
        """
        if self._closed:
            return
        try:
            for obs in self._observers:
                obs.try_flush(wait_lock=True)
        finally:
            self._closed = True
            for obs in self._observers:
                obs.close()
            for ds in self._datasets:
                ds.close()
            if self._server is not None:
                self._server.close()
            self._observers, self._datasets = [], []
            self._server, self._client, self._buffer = None, None, None

    def __enter__(self) -> ReplayBufferManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _trajectory_from_steps(table: Table, spec: Spec) -> Table | None:
    """A copy of a ``populate`` (*steps* layout) table in a TF-Agents ``Trajectory`` spec.

    Row ``t`` of the steps layout holds ``o_t, a_t, r_t`` and the ``terminated``/
    ``truncated`` flags of ``env.step(a_t)``; an episode's extra final row has
    ``step_type`` LAST. As a ``Trajectory``: ``next_step_type`` is FIRST on that
    final (boundary) row, LAST on the row whose flags are set, MID elsewhere;
    ``discount`` is 0 on a terminated transition, else 1. Every other field of
    ``spec`` is copied by name (dtypes cast). Rows are rewritten in key order with
    their streams and end codes, so the windows are the same; priorities and
    counters start afresh.

    Returns:
        The new table, or None when the table is not in the steps layout or ``spec``
        asks for a field that is neither stored nor derivable.
    """
    src = table.spec
    if not {"terminated", "truncated", "step_type"} <= set(src) or not {
        "next_step_type",
        "discount",
    } <= set(spec):
        return None
    missing = [n for n in spec if n not in src and n not in ("next_step_type", "discount")]
    if missing:
        return None
    storage = table.storage
    n = storage.num_rows
    order = torch.argsort(storage.key[:n])
    cols = {name: t[:n].index_select(0, order) for name, t in storage.fields.items()}
    step_type = cols["step_type"].to(torch.int64)
    flags = cols["terminated"].to(torch.bool) | cols["truncated"].to(torch.bool)
    boundary = step_type == 2
    next_step_type = torch.where(
        boundary,
        torch.zeros_like(step_type),
        torch.where(flags, torch.full_like(step_type, 2), torch.ones_like(step_type)),
    )
    discount = (~(cols["terminated"].to(torch.bool) & ~boundary)).to(torch.float32)
    data: dict[str, torch.Tensor] = {}
    for name, field in spec.items():
        if name == "next_step_type":
            value = next_step_type
        elif name == "discount":
            value = discount
        else:
            value = cols[name]
            if tuple(value.shape[1:]) != field.shape:
                return None
        data[name] = value.to(field.dtype)
    out = Table(
        spec,
        table.capacity,
        sampler=sampler_from_config(table.sampler.config()),
        rate_limiter=rate_limiter_from_config(table.rate_limiter.config()),
        sequence_length=table.sequence_length,
        max_times_sampled=table.max_times_sampled,
        device=table.device,
        name=table.name,
    )
    if n:
        streams = storage.stream[:n].index_select(0, order)
        ends = storage.end[:n].index_select(0, order)
        out.extend(data, streams=streams, ends=torch.where(ends < 0, END_NONE, ends))
    return out
