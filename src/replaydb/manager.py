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
For trajectory-shaped steps (a ``next_step_type`` field), an episode ends after a
step whose ``next_step_type`` or ``step_type`` is LAST (2), and a step whose
``step_type`` is FIRST (0) always starts a new episode. Otherwise the episode ends
after a step whose ``terminated``/``truncated``/``done`` field is true, or when the
observer is called with ``done=True``.

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

import operator
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch

from replaydb.checkpoint import latest_checkpoint, list_checkpoints, read_checkpoint
from replaydb.dataset import Dataset
from replaydb.errors import (
    CheckpointError,
    ClosedError,
    InvalidArgumentError,
    RateLimiterTimeout,
    SpecMismatchError,
)
from replaydb.rate_limiters import RateLimiter
from replaydb.samplers import Sampler
from replaydb.server import Server
from replaydb.spec import Nest, Spec, dtype_name
from replaydb.table import Sample, Table, TableInfo

__all__ = ["ManagedReplayBuffer", "ReplayBufferManager", "StepObserver"]

TABLE_NAME = "replay_buffer"
MANAGER_FORMAT = "replaydb.manager"
FIRST, MID, LAST = 0, 1, 2
_END_TERMINATED, _END_TRUNCATED = 1, 2
#: A dataset sample flushes observers whose oldest staged step waited this long (s).
STALE_S = 0.05
_NUMPY_DTYPES: dict[torch.dtype, Any] = {
    torch.float16: np.float16,
    torch.float32: np.float32,
    torch.float64: np.float64,
    torch.uint8: np.uint8,
    torch.int8: np.int8,
    torch.int16: np.int16,
    torch.int32: np.int32,
    torch.int64: np.int64,
    torch.bool: np.bool_,
}


_INT_SCALARS = frozenset(
    {int, bool, np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32}
)
_FLOAT_SCALARS = _INT_SCALARS | {float, np.float16, np.float32, np.float64}


def _int_arg(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InvalidArgumentError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


# ====================================================================== observer
@dataclass(frozen=True)
class _Plan:
    """How to check a step whose values have one particular tuple of types.

    ``arrays``: ``(index, shape, dtype)`` of ndarray values, checked exactly;
    ``ints``: ``(index, min, max)`` of Python ints bound for integer fields;
    ``zero_d``: ``(position among scalars, index)`` of 0-d arrays for scalar fields,
    staged as numpy scalars so a later in-place change of the array cannot leak in.
    """

    arrays: list[tuple[int, tuple[int, ...], Any]]
    ints: list[tuple[int, int, int]]
    zero_d: list[tuple[int, int]]


_UNSEEN: Any = object()


def _tuple_getter(indices: list[int]) -> Any:
    """``values -> tuple(values[i] for i in indices)``, in C where possible."""
    if not indices:
        return lambda values: ()
    if len(indices) == 1:
        only = indices[0]
        return lambda values: (values[only],)
    return operator.itemgetter(*indices)


class _NotThisShapeError(Exception):
    """A step's container does not have the kind or size the nest expects."""


def _compile_extractor(node: Any) -> Any:
    """A function ``(step, out)`` appending the leaves of ``step`` in traversal order.

    It reads dicts by key and named tuples, tuples and lists by position, and raises
    when a container has another kind or size; the caller then falls back to
    :meth:`Nest.unpack`, which also reads attributes and names the problem.
    """
    kind = node.kind
    if kind == "leaf":
        return lambda value, out: out.append(value)
    if kind == "empty":
        return None
    pairs = [
        (key if kind == "dict" else i, fn)
        for i, (key, child) in enumerate(zip(node.keys, node.children, strict=True))
        if (fn := _compile_extractor(child)) is not None
    ]
    size = len(node.keys)
    if kind == "dict":

        def from_dict(value: Any, out: list[Any]) -> None:
            if type(value) is not dict or len(value) != size:
                raise _NotThisShapeError
            for key, fn in pairs:
                fn(value[key], out)

        return from_dict
    if kind == "namedtuple":
        fields = node.keys

        def from_namedtuple(value: Any, out: list[Any]) -> None:
            if getattr(value, "_fields", None) != fields:
                raise _NotThisShapeError
            for i, fn in pairs:
                fn(value[i], out)

        return from_namedtuple
    container = tuple if kind == "tuple" else list

    def from_sequence(value: Any, out: list[Any]) -> None:
        if type(value) is not container or len(value) != size:
            raise _NotThisShapeError
        for i, fn in pairs:
            fn(value[i], out)

    return from_sequence


class StepObserver:
    """Writes environment steps into the manager's table; use it as a TF-Agents observer.

    ``observer(step)`` takes one step shaped like the data spec (a ``Trajectory``, a
    dict, ...), or a batch of steps from a vector env whose leaves carry a leading
    ``[num_envs]`` dimension: environment ``i`` writes its own stream, so windows
    never mix environments. Steps are checked against the spec, then staged in a
    small client-side buffer and written with one ``extend`` per ``write_batch``
    steps; :meth:`flush` writes what is staged. The manager flushes before
    ``num_frames``, checkpoints, and (without waiting) before each dataset sample.
    One observer serves one actor thread; ask the manager for more with
    :meth:`ReplayBufferManager.observer`.

    Example:
        >>> replay_buffer, observer = manager.create_replay_buffer()
        >>> observer({"obs": np.zeros(3, np.float32), "done": False})
        >>> observer.flush()
    """

    def __init__(self, manager: ReplayBufferManager, write_batch: int) -> None:
        self._manager = manager
        self._client = manager._require_client()
        self._nest = manager._require_nest()
        spec = self._nest.spec
        # Leaves in the nest's traversal order (the order the extractors produce).
        self._names = list(self._nest._paths)
        self._fields = [spec[n] for n in self._names]
        self._shapes = [f.shape for f in self._fields]
        self._ndims = [len(s) for s in self._shapes]
        self._int_field = [not f.dtype.is_floating_point for f in self._fields]
        self._lock = threading.Lock()
        self._closed = False
        self._staged = 0
        self._since = 0.0  # when the oldest staged step arrived
        self._w = write_batch
        np_dtypes = [_NUMPY_DTYPES.get(f.dtype) for f in self._fields]
        self._staging = all(d is not None for d in np_dtypes)
        w = write_batch if self._staging else 0
        # The stage: array fields in preallocated ``[write_batch, *shape]`` buffers;
        # scalar fields as one tuple per step in ``_rows`` (numpy and Python scalars
        # are immutable, so keeping them costs no copy), turned into arrays at flush.
        self._array_idx = [i for i, f in enumerate(self._fields) if f.shape]
        self._scalar_idx = [i for i, f in enumerate(self._fields) if not f.shape]
        self._bufs: list[Any] = [
            np.zeros((w, *f.shape), dtype=d) if f.shape else None
            for f, d in zip(self._fields, np_dtypes, strict=True)
        ]
        self._rows: list[tuple[Any, ...]] = []
        self._streams: list[int] = []
        self._ends: list[int] = []
        # Per environment: its stream id, whether its episode is open, its staged row.
        self._phys: list[int] = []
        self._open: list[bool] = []
        self._last_row: list[int] = []
        idx = {n: i for i, n in enumerate(self._names) if not spec[n].shape}
        self._i_step_type = idx.get("step_type", -1)
        self._i_next = idx.get("next_step_type", -1)
        self._i_discount = idx.get("discount", -1)
        self._i_done = [idx[n] for n in ("terminated", "truncated", "done") if n in idx]
        self._done_codes = [
            _END_TRUNCATED if n == "truncated" else _END_TERMINATED
            for n in ("terminated", "truncated", "done")
            if n in idx
        ]
        self._trajectory = self._i_next >= 0
        root = self._nest.root
        self._top_keys = root.keys if root.kind in ("dict", "namedtuple") else ()
        self._flat_top = root.kind in ("dict", "namedtuple") and all(
            c.kind in ("leaf", "empty") for c in root.children
        )
        self._leaf_pos = [i for i, c in enumerate(root.children) if c.kind == "leaf"]
        self._leaf_keys = [root.keys[i] for i in self._leaf_pos]
        self._nt_type: Any = None
        self._extract = None if self._flat_top else _compile_extractor(root)
        if len(self._leaf_pos) == 1:
            pos0, key0 = self._leaf_pos[0], self._leaf_keys[0]
            self._get_nt: Any = lambda step: (step[pos0],)
            self._get_dict: Any = lambda step: (step[key0],)
        elif self._flat_top:
            self._get_nt = operator.itemgetter(*self._leaf_pos)
            self._get_dict = operator.itemgetter(*self._leaf_keys)
        # Fast path of __call__: per field, the exact array dtype and the scalar types
        # that need no conversion check.
        # Only read when staging, which needs every field to have a numpy dtype.
        self._np_dtypes: list[Any] = [np.dtype(d) if d is not None else None for d in np_dtypes]
        self._plans: dict[tuple[type, ...], _Plan | None] = {}
        self._get_scalars = _tuple_getter(self._scalar_idx)

    def __repr__(self) -> str:
        return f"StepObserver(staged={self._staged}, write_batch={self._w}, envs={len(self._phys)})"

    # ---------------------------------------------------------------- input
    def _values(self, step: Any) -> Any:
        if self._flat_top:
            kind = type(step)
            if kind is self._nt_type:
                return self._get_nt(step)
            if isinstance(step, tuple) and getattr(step, "_fields", None) == self._top_keys:
                self._nt_type = kind
                return self._get_nt(step)
            if kind is dict and len(step) == len(self._top_keys):
                try:
                    return self._get_dict(step)
                except KeyError:
                    pass
        elif self._extract is not None:
            out: list[Any] = []
            try:
                self._extract(step, out)
                return out
            except (KeyError, IndexError, TypeError, _NotThisShapeError):
                pass  # unpack below names the problem, or reads attributes/keys instead
        flat = self._nest.unpack(step)
        return [flat[n] for n in self._names]

    def _check(self, values: Any) -> tuple[list[Any], int]:
        """Return numpy-assignable values and N (0: one step) or raise naming the field."""
        out: list[Any] = []
        n = -1
        for i, v in enumerate(values):
            name = self._names[i]
            if isinstance(v, torch.Tensor):
                v = v.detach().cpu()
                if v.dtype == torch.bfloat16:
                    v = v.float()
                v = v.numpy()
            if isinstance(v, np.ndarray):
                shape = v.shape
                is_float = v.dtype.kind in "fc"
                if v.dtype.kind not in "biufc":
                    raise SpecMismatchError(
                        f"field {name!r}: expected numbers of dtype "
                        f"{dtype_name(self._fields[i].dtype)}, got an array of dtype {v.dtype}"
                    )
            elif isinstance(v, bool | int | float | np.generic):
                shape = ()
                is_float = isinstance(v, float | np.floating)
            else:
                try:
                    v = np.asarray(v)
                except (TypeError, ValueError) as exc:
                    raise SpecMismatchError(
                        f"field {name!r}: cannot convert {type(v).__name__} to an array ({exc})"
                    ) from exc
                if v.dtype.kind not in "biufc":
                    raise SpecMismatchError(
                        f"field {name!r}: expected numbers of dtype "
                        f"{dtype_name(self._fields[i].dtype)}, got {values[i]!r}"
                    )
                shape = v.shape
                is_float = v.dtype.kind in "fc"
            if is_float and self._int_field[i]:
                raise SpecMismatchError(
                    f"field {name!r}: expected dtype {dtype_name(self._fields[i].dtype)}, got a "
                    "float value; floats are not cast to integers implicitly, convert it first"
                )
            want = self._shapes[i]
            extra = len(shape) - self._ndims[i]
            if extra == 0 and tuple(shape) == want:
                rows = 0
            elif extra == 1 and tuple(shape[1:]) == want:
                rows = int(shape[0])
            else:
                raise SpecMismatchError(
                    f"field {name!r}: expected shape {want} for one step or (num_envs, "
                    f"{', '.join(map(str, want))}) for a batch, got {tuple(shape)}"
                )
            if n < 0:
                n = rows
            elif rows != n:
                first = self._names[0]
                raise SpecMismatchError(
                    f"field {name!r} is "
                    + (f"a batch of {rows}" if rows else "one step")
                    + f" but field {first!r} is "
                    + (f"a batch of {n}" if n else "one step")
                    + "; every field of a step must have the same leading dimension"
                )
            out.append(v)
        return out, n

    def _done_arg(self, done: Any, n: int) -> np.ndarray[Any, Any] | None:
        if done is None:
            return None
        d = np.asarray(done)
        if d.dtype.kind not in "biu" and not (d.dtype.kind == "f" and np.isin(d, (0, 1)).all()):
            raise InvalidArgumentError(
                f"done must be a bool (or a 0/1/2 end code), or one per env, got {done!r}"
            )
        d = d.astype(np.int64)
        want = max(n, 1)
        if d.ndim == 0:
            d = np.full(want, int(d), dtype=np.int64)
        if d.shape != (want,):
            raise InvalidArgumentError(
                f"done must be a scalar or have shape ({want},) (one per env), got {d.shape}"
            )
        if ((d < 0) | (d > 2)).any():
            raise InvalidArgumentError(
                "done must be bools or end codes 0 (running), 1 (terminated), 2 (truncated)"
            )
        return d

    # ---------------------------------------------------------------- write
    def __call__(self, step: Any, *, done: Any = None) -> None:
        """Write one step (or a batch of steps from a vector env).

        Args:
            step: A step shaped like the data spec, or a batch whose leaves are
                ``[num_envs, *shape]``.
            done: Optionally, whether the episode ends after this step: a bool or an
                end code (1 terminated, 2 truncated), or one per env for a batch.

        Raises:
            SpecMismatchError: Naming the missing, unknown or mis-shaped field; nothing
                is written.
            InvalidArgumentError: For a bad ``done``.
            ClosedError: If the manager is closed.
        """
        if self._closed:
            raise ClosedError("this observer's manager is closed; create a new manager")
        raw = self._values(step)
        if done is None and self._staging:
            # Fast path: a step whose value types were seen before (one dict lookup),
            # checked and staged without conversions.
            sig = tuple(map(type, raw))
            plan = self._plans.get(sig, _UNSEEN)
            if plan is _UNSEEN:
                plan = self._plans[sig] = self._plan(sig)
            if plan is not None and self._fits(plan, raw):
                with self._lock:
                    if self._closed:
                        raise ClosedError("this observer's manager is closed; create a new manager")
                    if self._staged >= self._w:
                        self._flush_locked(None)
                    pos = self._staged
                    bufs = self._bufs
                    for i in self._array_idx:
                        bufs[i][pos] = raw[i]
                    scalars = self._get_scalars(raw)
                    for j, i in plan.zero_d:
                        scalars = (*scalars[:j], raw[i][()], *scalars[j + 1 :])
                    self._rows.append(scalars)
                    self._commit_one(raw, pos, None)
                return
        values, n = self._check(raw)
        done_codes = self._done_arg(done, n)
        with self._lock:
            if self._closed:
                raise ClosedError("this observer's manager is closed; create a new manager")
            if not self._staging:
                self._write_direct(values, n, done_codes)
            elif n == 0:
                self._stage_one(values, done_codes)
            else:
                self._stage_many(values, n, done_codes)

    def _plan(self, sig: tuple[type, ...]) -> _Plan | None:
        """How to check steps whose values have types ``sig`` (``None``: never fast)."""
        arrays: list[tuple[int, tuple[int, ...], Any]] = []
        ints: list[tuple[int, int, int]] = []
        zero_d: list[tuple[int, int]] = []
        for i, (kind, field) in enumerate(zip(sig, self._fields, strict=True)):
            npd = self._np_dtypes[i]
            is_float = field.dtype.is_floating_point
            if kind is np.ndarray:
                arrays.append((i, field.shape, npd))
                if not field.shape:
                    zero_d.append((self._scalar_idx.index(i), i))
            elif field.shape:
                return None
            elif kind is int and not is_float and field.dtype != torch.bool:
                info = np.iinfo(npd)
                ints.append((i, int(info.min), int(info.max)))
            elif kind not in (_FLOAT_SCALARS if is_float else _INT_SCALARS):
                return None
        return _Plan(arrays, ints, zero_d)

    @staticmethod
    def _fits(plan: _Plan, raw: Any) -> bool:
        for i, shape, npd in plan.arrays:
            v = raw[i]
            if v.shape != shape or (v.dtype is not npd and v.dtype != npd):
                return False
        return not plan.ints or all(lo <= raw[i] <= hi for i, lo, hi in plan.ints)

    def _env_state(self, n: int) -> None:
        while len(self._phys) < n:
            self._phys.append(self._manager._new_stream())
            self._open.append(False)
            self._last_row.append(-1)

    def _stage_one(self, values: list[Any], done_codes: Any) -> None:
        if self._staged >= self._w:
            self._flush_locked(None)
        pos = self._staged
        scalars = []
        for i in self._scalar_idx:
            npd = self._np_dtypes[i]
            try:
                scalars.append(npd.type(values[i]))
            except (TypeError, ValueError, OverflowError) as exc:
                raise SpecMismatchError(
                    f"field {self._names[i]!r}: value {values[i]!r} does not fit dtype {npd} "
                    f"({exc})"
                ) from exc
        for i in self._array_idx:
            try:
                self._bufs[i][pos] = values[i]
            except (TypeError, ValueError, OverflowError) as exc:
                raise SpecMismatchError(
                    f"field {self._names[i]!r}: value does not fit dtype {self._np_dtypes[i]} "
                    f"({exc})"
                ) from exc
        self._rows.append(tuple(scalars))
        self._commit_one(values, pos, done_codes)

    def _commit_one(self, values: Any, pos: int, done_codes: Any) -> None:
        """Finish staging the step written at row ``pos``: its stream and end code."""
        if not self._phys:
            self._env_state(1)
        if pos == 0:
            self._since = time.monotonic()
        end = 0
        if self._trajectory:
            if self._i_step_type >= 0:
                st = values[self._i_step_type]
                if st == FIRST and self._open[0]:
                    self._cut(0)
                elif st == LAST:
                    end = _END_TRUNCATED
            if values[self._i_next] == LAST:
                end = _END_TERMINATED
                if self._i_discount >= 0 and values[self._i_discount] != 0:
                    end = _END_TRUNCATED
        else:
            for i, code in zip(self._i_done, self._done_codes, strict=True):
                if values[i] and not end:
                    end = code
        if done_codes is not None and int(done_codes[0]):
            end = int(done_codes[0])
        self._streams.append(self._phys[0])
        self._ends.append(end)
        self._open[0] = end == 0
        self._last_row[0] = pos
        self._staged = pos + 1
        if self._staged >= self._w:
            self._flush_locked(None)

    def _cut(self, env: int) -> None:
        """End env's open episode before a FIRST step."""
        row = self._last_row[env]
        if row >= 0:
            self._ends[row] = _END_TRUNCATED
        else:
            self._phys[env] = self._manager._new_stream()
        self._open[env] = False

    def _ends_many(self, values: list[Any], n: int, done_codes: Any) -> np.ndarray[Any, Any]:
        ends = np.zeros(n, dtype=np.int64)
        if self._trajectory:
            if self._i_step_type >= 0:
                st = np.asarray(values[self._i_step_type]).astype(np.int64)
                for env in np.nonzero(st == FIRST)[0].tolist():
                    if self._open[env]:
                        self._cut(env)
                ends[st == LAST] = _END_TRUNCATED
            last = np.asarray(values[self._i_next]).astype(np.int64) == LAST
            code = np.full(n, _END_TERMINATED, dtype=np.int64)
            if self._i_discount >= 0:
                code[np.asarray(values[self._i_discount]) != 0] = _END_TRUNCATED
            ends = np.where(last, code, ends)
        else:
            for i, c in zip(self._i_done, self._done_codes, strict=True):
                hit = np.asarray(values[i]).astype(bool) & (ends == 0)
                ends[hit] = c
        if done_codes is not None:
            ends = np.where(done_codes != 0, done_codes, ends)
        return ends

    def _stage_many(self, values: list[Any], n: int, done_codes: Any) -> None:
        self._env_state(n)
        if self._staged + n > self._w:
            self._flush_locked(None)
        if n > self._w:
            self._write_direct(values, n, done_codes)
            return
        pos = self._staged
        columns = []
        for i in self._scalar_idx:
            try:
                columns.append(np.asarray(values[i]).astype(self._np_dtypes[i]).tolist())
            except (TypeError, ValueError, OverflowError) as exc:
                raise SpecMismatchError(
                    f"field {self._names[i]!r}: values do not fit dtype {self._np_dtypes[i]} "
                    f"({exc})"
                ) from exc
        for i in self._array_idx:
            try:
                self._bufs[i][pos : pos + n] = values[i]
            except (TypeError, ValueError, OverflowError) as exc:
                raise SpecMismatchError(
                    f"field {self._names[i]!r}: values do not fit dtype {self._np_dtypes[i]} "
                    f"({exc})"
                ) from exc
        ends = self._ends_many(values, n, done_codes)
        self._rows.extend(zip(*columns, strict=True) if columns else [()] * n)
        self._streams.extend(self._phys[:n])
        self._ends.extend(ends.tolist())
        self._open[:n] = (ends == 0).tolist()
        self._last_row[:n] = range(pos, pos + n)
        if pos == 0:
            self._since = time.monotonic()
        self._staged = pos + n

    def _write_direct(self, values: list[Any], n: int, done_codes: Any) -> None:
        """Write without staging (bfloat16 fields, or a batch larger than the stage)."""
        self._flush_locked(None)
        rows = max(n, 1)
        self._env_state(rows)
        vals = [
            np.asarray(v).reshape(rows, *shape)
            for v, shape in zip(values, self._shapes, strict=True)
        ]
        ends = self._ends_many(vals, rows, done_codes)
        self._client.extend(
            dict(zip(self._names, vals, strict=True)),
            streams=np.asarray(self._phys[:rows], dtype=np.int64),
            ends=ends,
            table=TABLE_NAME,
        )
        self._open[:rows] = (ends == 0).tolist()
        self._last_row[:rows] = [-1] * rows

    def _flush_locked(self, timeout: float | None) -> None:
        k = self._staged
        if k == 0:
            return
        data: dict[str, Any] = {}
        if self._scalar_idx:
            columns = list(zip(*self._rows, strict=True))
            for j, i in enumerate(self._scalar_idx):
                data[self._names[i]] = np.asarray(columns[j], dtype=self._np_dtypes[i])
        for i in self._array_idx:
            data[self._names[i]] = self._bufs[i][:k]
        self._client.extend(
            data,
            streams=np.asarray(self._streams, dtype=np.int64),
            ends=np.asarray(self._ends, dtype=np.int64),
            timeout=timeout,
            table=TABLE_NAME,
        )
        self._clear_stage()

    def _clear_stage(self) -> None:
        self._rows.clear()
        self._streams.clear()
        self._ends.clear()
        self._staged = 0
        self._last_row = [-1] * len(self._last_row)

    def flush(self, timeout: float | None = None) -> None:
        """Write every staged step to the table.

        Args:
            timeout: Seconds to wait for the rate limiter (``None``: as long as it takes).

        Raises:
            RateLimiterTimeout: If the limiter refused the write in time (the steps
                stay staged).
            ClosedError: If the manager is closed.
        """
        if self._closed:
            raise ClosedError("this observer's manager is closed; create a new manager")
        with self._lock:
            self._flush_locked(timeout)

    def _try_flush(self, wait_lock: bool = False, older_than: float = 0.0) -> None:
        """Flush without waiting for a blocking rate limiter (nor a busy observer).

        With ``older_than``, flush only when the oldest staged step has waited that long.
        """
        if self._closed or self._staged == 0:
            return
        if older_than and time.monotonic() - self._since < older_than:
            return
        if not self._lock.acquire(blocking=wait_lock):
            return
        try:
            self._flush_locked(0.0)
        except RateLimiterTimeout:
            pass
        finally:
            self._lock.release()

    def _discard(self) -> None:
        with self._lock:
            self._clear_stage()
            self._open = [False] * len(self._open)

    @property
    def staged(self) -> int:
        """Steps written to this observer but not yet to the table."""
        return self._staged


# ====================================================================== client
class _ManagedClient:
    """A client whose reads and checkpoints first flush the manager's observers."""

    def __init__(self, manager: ReplayBufferManager, client: Any) -> None:
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
        return self._client.sample(batch_size, **kwargs)  # type: ignore[no-any-return]

    def update_priorities(self, keys: Any, priorities: Any, **kwargs: Any) -> int:
        return int(self._client.update_priorities(keys, priorities, **kwargs))

    def info(self, **kwargs: Any) -> TableInfo:
        self._manager._flush_observers(wait=False)
        return self._client.info(**kwargs)  # type: ignore[no-any-return]

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
            >>> ds = replay_buffer.as_dataset(64, num_steps=2, num_parallel_calls=3).prefetch(3)
            >>> batch, info = next(iter(ds))
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
        self._client: Any = None
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

    def _require_client(self) -> Any:
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
                obs._try_flush(older_than=older_than)

    def _discard_observers(self) -> None:
        for obs in self._observers:
            obs._discard()

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
            >>> replay_buffer, observer = manager.load_replay_buffer()
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
        obs = StepObserver(self, w)
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
            >>> batch, info = next(iter(manager.get_dataset(batch_size=64, num_steps=2)))
        """
        ds = self._dataset(batch_size, num_steps, num_parallel_calls, timeout)
        return ds.prefetch(prefetch) if prefetch else ds

    def num_frames(self) -> int:
        """Sampleable items: windows of ``sequence_length`` steps, as Reverb counts them.

        Observers are flushed first (without waiting on a busy one). An episode of
        ``L`` steps contributes ``L - sequence_length + 1`` items.

        Example:
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
        return client.info(table=TABLE_NAME)  # type: ignore[no-any-return]

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
                obs._try_flush(wait_lock=True)
        finally:
            self._closed = True
            for obs in self._observers:
                obs._closed = True
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
