"""``TrajectoryWriter``: steps of one stream in, items over their columns out.

A writer turns appended steps (nests of arrays) into *columns*, one per leaf of
the nest, and keeps each column's recent history. ``writer.history`` mirrors the
step's nest with one :class:`ColumnHistory` per leaf (opaque to ``tf.nest``);
slicing one gives a :class:`TrajectoryColumn`, and :meth:`TrajectoryWriter.create_item`
turns a nest of those into an item of a table. Items reference the step arrays,
they do not copy them, so overlapping items share their steps.

Items go to their tables through replaydb's one :class:`~replaydb.writer.Writer`
(an :class:`~replaydb.reverb.item_writer.ItemWriter`: one Writer per table, whose
rows are the items' refs), so the batching and flush policy is the Writer's: a
write when ``64`` items of a table are staged, on :meth:`~TrajectoryWriter.flush`,
:meth:`~TrajectoryWriter.end_episode` and :meth:`~TrajectoryWriter.close`, and a
non-blocking ``try_flush`` whenever a reader of a table would otherwise wait or
report a size (the server asks every open writer). A write the rate limiter
refuses leaves its items staged. Reverb's own writer is asynchronous too; this
keeps items visible wherever Reverb's would be.

:class:`StepBuffer` holds the step-to-column logic without TensorFlow, so the
legacy ``Writer`` and other front ends can share it.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from replaydb._validate import check_int
from replaydb.errors import ClosedError, InvalidArgumentError
from replaydb.reverb.item_writer import PUSH_EVERY, ItemWriter
from replaydb.reverb.tables import Column, Item, Table

__all__ = ["ColumnHistory", "StepBuffer", "TrajectoryColumn", "TrajectoryWriter"]


def to_numpy(value: Any) -> np.ndarray[Any, Any]:
    """A numpy copy of one leaf: numpy, Python scalars, eager TF tensors, torch CPU tensors.

    Raises:
        InvalidArgumentError: For a leaf numpy cannot hold (e.g. a torch meta tensor).
    """
    kind = type(value)
    if kind is np.ndarray:
        out: np.ndarray[Any, Any] = value.copy()
        return out
    if isinstance(value, np.generic):
        return value  # type: ignore[return-value]  # immutable: np.stack takes it as is
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, int | float | bool):
        return np.asarray(value)
    numpy = getattr(value, "numpy", None)
    if callable(numpy):
        try:
            return np.asarray(numpy())
        except Exception as exc:
            raise InvalidArgumentError(
                f"could not read a step value of type {type(value).__name__} as numpy ({exc}); "
                "pass numpy arrays, Python numbers or eager (CPU) tensors"
            ) from exc
    try:
        return np.array(value)
    except Exception as exc:
        raise InvalidArgumentError(
            f"could not convert a step value of type {type(value).__name__} to numpy ({exc})"
        ) from exc


class TrajectoryColumn:
    """A run of steps of one column (``squeeze``: a single step without a time axis).

    Example:
        >>> col = TrajectoryColumn((np.zeros(2), np.ones(2)), squeeze=False)
        >>> col.numpy().shape
        (2, 2)
    """

    __slots__ = ("_column",)

    def __init__(self, steps: tuple[np.ndarray[Any, Any], ...], *, squeeze: bool = False) -> None:
        if squeeze and len(steps) != 1:
            raise InvalidArgumentError(
                f"a squeezed column holds exactly one step, got {len(steps)}"
            )
        self._column: Column = (steps, squeeze)

    @property
    def steps(self) -> tuple[np.ndarray[Any, Any], ...]:
        """The column's step arrays, oldest first."""
        return self._column[0]

    @property
    def squeeze(self) -> bool:
        """Whether the column is one step without a time axis."""
        return self._column[1]

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, val: int | slice) -> TrajectoryColumn:
        if isinstance(val, int):
            return TrajectoryColumn((self.steps[val],), squeeze=True)
        return TrajectoryColumn(tuple(self.steps[val]))

    @property
    def shape(self) -> tuple[int | None, ...]:
        """The column's shape (time axis first unless squeezed)."""
        inner = tuple(self.steps[0].shape) if self.steps else ()
        return inner if self.squeeze else (len(self.steps), *inner)

    @property
    def dtype(self) -> np.dtype[Any]:
        """The steps' dtype."""
        out: np.dtype[Any] = np.dtype(self.steps[0].dtype)
        return out

    def numpy(self) -> np.ndarray[Any, Any]:
        """The column's data as one array."""
        return self.steps[0] if self.squeeze else np.stack(self.steps)

    def as_column(self) -> Column:
        """The ``(steps, squeeze)`` pair an item stores."""
        return self._column

    def __repr__(self) -> str:
        return f"TrajectoryColumn(shape={self.shape}, squeeze={self.squeeze})"


class ColumnHistory:
    """The steps of one column in the current episode (indexable like a list).

    Positive indices count from the episode's first step, negative ones from the
    last; a step older than the writer's ``num_keep_alive_refs`` is no longer held.
    """

    __slots__ = ("_buf", "_path")

    def __init__(self, buf: StepBuffer, path: int) -> None:
        self._buf = buf
        self._path = path

    def __len__(self) -> int:
        return self._buf.episode_steps

    def _steps(self, val: int | slice) -> list[Any]:
        return self._buf.select(self._path, val)

    def __getitem__(self, val: int | slice) -> TrajectoryColumn:
        buf = self._buf
        if (
            type(val) is slice
            and val.step is None
            and val.stop is None
            and type(val.start) is int
            and buf.fast_from <= val.start < 0
        ):
            # The hot path: the last k held steps (observers slice h[-k:] every step);
            # fast_from is 0 (no fast path) once a step missed a column.
            col = _new_column(TrajectoryColumn)  # __init__'s checks hold: not squeezed
            col._column = (tuple(buf.columns[self._path][val.start :]), False)  # type: ignore[arg-type]
            return col
        steps = self._steps(val)
        if any(s is None for s in steps):
            raise InvalidArgumentError(
                f"column {self._path} has no value at some of the selected steps "
                "(it was missing from those appends); select steps where it was written"
            )
        if isinstance(val, int):
            return TrajectoryColumn(tuple(steps), squeeze=True)
        if not steps:
            raise InvalidArgumentError(f"the slice {val} selects no step of column {self._path}")
        return TrajectoryColumn(tuple(steps))

    def __repr__(self) -> str:
        return f"ColumnHistory(column={self._path}, steps={len(self)})"


class StepBuffer:
    """Per-column step arrays of one episode, trimmed to the last ``keep`` steps (TF-free).

    Example:
        >>> buf = StepBuffer(keep=2); buf.append([np.zeros(1)]); buf.append([np.ones(1)])
        >>> [a.tolist() for a in buf.select(0, slice(-2, None))]
        [[0.0], [1.0]]
    """

    def __init__(self, keep: int) -> None:
        self.keep = check_int("num_keep_alive_refs", keep, 1)
        self.columns: list[list[np.ndarray[Any, Any] | None]] = []
        self.offset = 0  # episode index of columns[*][0]
        self.episode_steps = 0
        self.sparse = False  # whether some step missed a column (None)
        #: The lowest negative start ``h[start:]`` may take on the fast path (0: none).
        self.fast_from = 0

    def append(self, leaves: Sequence[np.ndarray[Any, Any] | None]) -> None:
        """Add one step: one array (or None where missing) per column."""
        if not self.columns:
            self.columns = [[] for _ in leaves]
        elif len(leaves) != len(self.columns):
            raise InvalidArgumentError(
                f"a step has {len(leaves)} columns but this episode's steps have "
                f"{len(self.columns)}; append steps of one structure"
            )
        for col, leaf in zip(self.columns, leaves, strict=True):
            col.append(leaf)
        if not self.sparse and any(map(_IS_NONE, leaves)):
            self.sparse = True
            self.fast_from = 0
        self.episode_steps += 1
        held = self.episode_steps - self.offset
        if held > 2 * self.keep + 16:
            drop = held - self.keep
            for col in self.columns:
                del col[:drop]
            self.offset += drop
        if not self.sparse:
            self.fast_from = -min(self.keep, self.episode_steps - self.offset)

    def select(self, column: int, val: int | slice) -> list[Any]:
        """The steps ``val`` (episode indices) of one column."""
        n = self.episode_steps
        if isinstance(val, int):
            i = val + n if val < 0 else val
            if not 0 <= i < n:
                raise IndexError(f"step {val} is out of range for an episode of {n} steps")
            idx: range = range(i, i + 1)
        elif isinstance(val, slice):
            idx = range(*val.indices(n))
        else:
            raise InvalidArgumentError(f"history index must be an int or a slice, got {val!r}")
        if len(idx) and min(idx[0], idx[-1]) < max(self.offset, n - self.keep):
            raise InvalidArgumentError(
                f"step {min(idx[0], idx[-1])} of this episode is no longer held: the writer "
                f"keeps the last {self.keep} steps (num_keep_alive_refs); raise it"
            )
        col = self.columns[column]
        if isinstance(val, int) or idx.step == 1:
            return col[idx.start - self.offset : idx.stop - self.offset if idx.stop >= 0 else None]
        return [col[i - self.offset] for i in idx]

    def reset(self) -> None:
        """Start a new episode."""
        self.columns = []
        self.offset = 0
        self.episode_steps = 0
        self.sparse = False
        self.fast_from = 0


_COLUMN_OF = operator.attrgetter("_column")
_new_column = object.__new__
_IS_COLUMN = functools.partial(operator.is_, TrajectoryColumn)
_IS_NONE = functools.partial(operator.is_, None)


def _columns_of(leaves: list[Any]) -> Item:
    """The item of a trajectory's leaves: columns, or whole histories (all their steps)."""
    cols = []
    for leaf in leaves:
        if isinstance(leaf, ColumnHistory):
            leaf = leaf[:]
        if not isinstance(leaf, TrajectoryColumn):
            raise InvalidArgumentError(
                f"trajectory leaves must be columns of writer.history (e.g. "
                f"history['obs'][-2:]), got {type(leaf).__name__}"
            )
        cols.append(leaf.as_column())
    return tuple(cols)


def _leaf(value: Any) -> np.ndarray[Any, Any] | None:
    """:func:`to_numpy` of one appended leaf, or None for a missing one."""
    if type(value) is np.ndarray:  # the usual leaves first, without a second call
        out: np.ndarray[Any, Any] = value.copy()
        return out
    if isinstance(value, np.generic):
        return value  # type: ignore[return-value]  # immutable: np.stack takes it as is
    return None if value is None else to_numpy(value)


def _core_flatten(tf: Any) -> Callable[[Any], list[Any]]:
    """``tf.nest.flatten`` (composites not expanded), without its Python wrappers.

    TensorFlow's ``tf.nest.flatten`` is three Python calls around one C function;
    a writer flattens twice a step, so it calls that function directly where it
    exists (TF 2.15, which TF-Agents 0.19 needs), else ``tf.nest.flatten``.
    """
    try:
        from tensorflow.python.util import _pywrap_utils  # type: ignore[import-untyped, unused-ignore]

        core: Callable[[Any, bool], list[Any]] = _pywrap_utils.Flatten
        if core({"b": (1,), "a": [2, None]}, False) != tf.nest.flatten({"b": (1,), "a": [2, None]}):
            raise ImportError("a different Flatten")
    except (ImportError, AttributeError, TypeError):
        return tf.nest.flatten  # type: ignore[no-any-return]

    def flatten(structure: Any) -> list[Any]:
        return [None] if structure is None else core(structure, False)

    return flatten


class TrajectoryWriter:
    """Appends steps and creates items over their history (Reverb's ``TrajectoryWriter``).

    Made by :meth:`replaydb.reverb.Client.trajectory_writer`.

    Args:
        lookup: ``name -> Table``: the served table items of that name go to.
        num_keep_alive_refs: Steps of history items may reference.
        register: Called with this writer's :class:`~replaydb.reverb.item_writer.ItemWriter`,
            so the server can ask it to flush before a read.
        unregister: Called with the same object when this writer closes.

    Example:
        >>> # writer = client.trajectory_writer(num_keep_alive_refs=2)
        >>> # writer.append({"obs": obs})
        >>> # writer.create_item("t", 1.0, {"obs": writer.history["obs"][-1:]})
    """

    def __init__(
        self,
        lookup: Callable[[str], Table],
        num_keep_alive_refs: int,
        register: Callable[[ItemWriter], None] | None = None,
        unregister: Callable[[ItemWriter], None] | None = None,
    ) -> None:
        import tensorflow as tf  # type: ignore[import-untyped, unused-ignore]

        self._nest = tf.nest
        self._flatten = _core_flatten(tf)
        self._buf = StepBuffer(num_keep_alive_refs)
        self._items = ItemWriter(lookup, PUSH_EVERY)
        self._structure: Any = None
        self._history: Any = None
        self._num_columns = 0
        self._closed = False
        self._unregister = unregister
        if register is not None:
            register(self._items)

    def __enter__(self) -> TrajectoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def history(self) -> Any:
        """The step nest with one :class:`ColumnHistory` per leaf."""
        if self._history is None:
            raise InvalidArgumentError("history is empty: append a step first")
        return self._history

    @property
    def episode_steps(self) -> int:
        """Steps appended since the episode began."""
        return self._buf.episode_steps

    def append(self, data: Any, *, partial_step: bool = False) -> None:
        """Append one step: a nest of arrays, numbers or eager tensors (None: missing).

        Args:
            data: The step. Every step of an episode has the same structure.
            partial_step: Not supported (Reverb's multi-call steps); must be False.

        Raises:
            InvalidArgumentError: If the structure changes or a leaf is not array-like.
            ClosedError: If the writer was closed.
        """
        if self._closed:
            raise ClosedError("append on a closed TrajectoryWriter; make a new one")
        if partial_step:
            raise InvalidArgumentError(
                "partial_step=True is not supported by replaydb.reverb; append whole steps"
            )
        nest = self._nest
        leaves = self._flatten(data)
        if self._structure is None:
            self._structure = data
            self._num_columns = len(leaves)
            self._history = nest.pack_sequence_as(
                data, [ColumnHistory(self._buf, i) for i in range(len(leaves))]
            )
        elif len(leaves) != self._num_columns:
            raise InvalidArgumentError(
                f"a step has {len(leaves)} leaves but the writer's first step had "
                f"{self._num_columns}; append steps of one structure (None for a missing value)"
            )
        # numpy scalars are immutable and kept as they are; arrays are copied.
        values: list[Any] = [
            v if isinstance(v, np.generic) else v.copy() if type(v) is np.ndarray else _leaf(v)
            for v in leaves
        ]
        self._buf.append(values)

    def create_item(self, table: str, priority: float, trajectory: Any) -> None:
        """Create an item in ``table`` over columns of the history.

        The item is staged and inserted by the writer's flush policy (see the
        module doc); readers of the table see it no later than Reverb's would.

        Args:
            table: The table's name.
            priority: The item's priority (a finite number >= 0).
            trajectory: A nest of :class:`TrajectoryColumn` (slices of :attr:`history`).

        Raises:
            InvalidArgumentError: If a leaf is not a column, or the priority or table is bad.
            DeadlineExceededError: If inserting a full batch timed out (it stays staged).
            ClosedError: If the writer was closed.
        """
        if self._closed:
            raise ClosedError("create_item on a closed TrajectoryWriter; make a new one")
        leaves = self._flatten(trajectory)
        if not leaves:
            raise InvalidArgumentError("trajectory has no columns; slice writer.history")
        # The hot path (every leaf a column, as TF-Agents' observers pass): one C loop.
        if all(map(_IS_COLUMN, map(type, leaves))):
            item = tuple(map(_COLUMN_OF, leaves))
        else:
            item = _columns_of(leaves)
        self._items.create(table, item, priority)

    def flush(self, block_until_num_items: int = 0, timeout_ms: int | None = None) -> None:
        """Insert every staged item into its table (waits on the tables' rate limiters).

        Raises:
            DeadlineExceededError: If ``timeout_ms`` passed first (the items stay staged).
        """
        self._items.flush(None if timeout_ms is None else timeout_ms / 1000)

    def end_episode(self, clear_buffers: bool = True, timeout_ms: int | None = None) -> None:
        """Insert staged items and start a new episode (the history is cleared)."""
        self.flush(timeout_ms=timeout_ms)
        self._buf.reset()

    def close(self) -> None:
        """Insert staged items and close; later calls raise. Closing twice is a no-op."""
        if self._closed:
            return
        try:
            self._items.close()
        finally:
            self._closed = True
            if self._unregister is not None:
                self._unregister(self._items)
