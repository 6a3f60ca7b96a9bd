"""ReplayBufferManager: a table in a server, observers, datasets, a checkpoint dir.

See :mod:`replaydb.manager` for the workflow, items, episode boundaries and the
checkpoint layout.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from replaydb._validate import check_int
from replaydb.checkpoint import latest_checkpoint, list_checkpoints, read_checkpoint
from replaydb.dataset import Dataset
from replaydb.errors import (
    CheckpointError,
    ClosedError,
    InvalidArgumentError,
    SpecMismatchError,
)
from replaydb.manager._buffer import TABLE_NAME, ManagedReplayBuffer
from replaydb.manager._observer import StepObserver
from replaydb.manager._steps import _trajectory_from_steps
from replaydb.nest import Nest
from replaydb.rate_limiters import RateLimiter
from replaydb.samplers import Sampler
from replaydb.server import Server, TableClient
from replaydb.spec import Spec
from replaydb.table import Table, TableInfo

__all__ = ["ReplayBufferManager"]

MANAGER_FORMAT = "replaydb.manager"
#: A dataset sample flushes observers whose oldest staged step waited this long (s).
STALE_S = 0.05


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
        frame_stack: ``field -> k`` (or ``(k, "first" | "zeros")``): sample these
            fields as their last ``k`` frames, gathered from the episode at sample
            time, each frame stored once (see :class:`~replaydb.table.Table`).
            Names are the spec's flattened names (``"observation.pixels"``).
            ``None`` on load: take the checkpoint's.
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
        frame_stack: Mapping[str, int | tuple[int, str]] | None = None,
        **backend_options: Any,
    ) -> None:
        self.sequence_length = check_int("sequence_length", sequence_length, 1)
        self.capacity = check_int("capacity", capacity, 1)
        if self.capacity < self.sequence_length:
            raise InvalidArgumentError(
                f"capacity ({capacity}) must be at least sequence_length ({sequence_length})"
            )
        self.keep = check_int("keep", keep, 1)
        self.write_batch = check_int("write_batch", write_batch, 1)
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
        if frame_stack is not None and not isinstance(frame_stack, Mapping):
            raise InvalidArgumentError(
                "frame_stack must be a mapping field -> k (or (k, 'first' | 'zeros')), got "
                f"{type(frame_stack).__name__}; for example frame_stack={{'observation': 4}}"
            )
        self._frame_stack = dict(frame_stack) if frame_stack is not None else None
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
            frame_stack=self._frame_stack or None,
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
        if self._frame_stack is not None:
            stored_stack = {k: (n, pad) for k, (n, pad) in table.frame_stack.items()}
            given = {
                k: (v, "first") if isinstance(v, int) else tuple(v)
                for k, v in self._frame_stack.items()
            }
            if given != stored_stack:
                raise InvalidArgumentError(
                    f"frame_stack ({given}) differs from the checkpoint's ({stored_stack}); "
                    "pass the frame_stack the buffer was written with, or frame_stack=None "
                    "to take the checkpoint's"
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
        w = self.write_batch if write_batch is None else check_int("write_batch", write_batch, 1)
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
