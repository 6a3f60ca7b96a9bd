"""StepObserver: writes environment steps into a table, a few thousand at a time.

The observer is the collect-loop half of :class:`~replaydb.manager.ReplayBufferManager`
(TF-Agents calls these observers). Each call checks one step (or a vector env's
batch of steps) against the data spec, then *stages* it: array fields are copied into
preallocated ``[write_batch, *shape]`` numpy buffers, scalar fields are kept as one
tuple of immutable scalars per step, and every ``write_batch`` steps one
``client.extend`` writes them all. One ``extend`` per step would cost a lock, a spec
check and a dozen small tensor ops per step; staging makes that once per batch.

Episode boundaries
------------------
For trajectory-shaped steps (a scalar ``next_step_type`` field) the rule is
TF-Agents' ``ReverbAddTrajectoryObserver``'s: an episode ends after its *boundary*
step (``step_type`` LAST), so the transition into the last time step
(``next_step_type`` LAST) and the boundary step after it form the terminal window.
For FIRST, MID, MID(next_step_type=LAST), boundary, windows of two are (0, 1),
(1, 2) and (2, 3). The end code is terminated when that last transition had
``discount == 0``, else truncated. A step whose ``step_type`` is FIRST (0) starts a
new episode even when the previous one never ended; without a ``step_type``
field, the episode ends after the ``next_step_type`` LAST step. Otherwise
``terminated`` / ``truncated`` / ``done`` fields end episodes, or
``observer(step, done=True)``. Each environment writes its own *stream*; a stream
whose episode was cut after its steps left the stage continues on a fresh stream id.
"""

from __future__ import annotations

import operator
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from replaydb.errors import (
    ClosedError,
    InvalidArgumentError,
    RateLimiterTimeout,
    SpecMismatchError,
)
from replaydb.nest import Nest
from replaydb.spec import dtype_name

__all__ = ["FIRST", "LAST", "MID", "StepObserver", "StepSink"]


class StepSink(Protocol):
    """Where an observer writes: a client's ``extend`` (local or Ray)."""

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
        """Write a batch of steps (see :meth:`replaydb.table.Table.extend`)."""


FIRST, MID, LAST = 0, 1, 2
_END_TERMINATED, _END_TRUNCATED = 1, 2
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

    Args:
        client: Where the steps go: a :class:`~replaydb.server.Client` (or a Ray
            client) whose table has the nest's spec.
        nest: The structure and fields of one step.
        new_stream: Returns a stream id no other writer uses (called once per
            environment, and again when an episode must be cut after leaving the stage).
        write_batch: Steps staged before one ``extend``.
        table: The client's table to write (``None``: its only table).

    Raises:
        InvalidArgumentError: If ``write_batch`` is not an int >= 1.

    Example:
        >>> replay_buffer, observer = manager.create_replay_buffer()
        >>> observer({"obs": np.zeros(3, np.float32), "done": False})
        >>> observer.flush()
    """

    def __init__(
        self,
        client: StepSink,
        nest: Nest,
        *,
        new_stream: Callable[[], int],
        write_batch: int = 4096,
        table: str | None = None,
    ) -> None:
        if isinstance(write_batch, bool) or not isinstance(write_batch, int) or write_batch < 1:
            raise InvalidArgumentError(f"write_batch must be an int >= 1, got {write_batch!r}")
        self._client = client
        self._nest = nest
        self._new_stream = new_stream
        self._table = table
        spec = self._nest.spec
        # Leaves in the nest's traversal order (the order the extractors produce).
        self._names = nest.leaves
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
        # Per environment: the end code of a transition into LAST whose boundary step
        # has not come yet (0: none).
        self._pending_end: list[int] = []
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
                if v.device.type == "meta":
                    raise InvalidArgumentError(
                        f"field {name!r}: got a tensor on the meta device, which holds no "
                        "data; pass a real (CPU or GPU) tensor or a numpy array"
                    )
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
            self._phys.append(self._new_stream())
            self._open.append(False)
            self._last_row.append(-1)
            self._pending_end.append(0)

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
            boundary = False
            if self._i_step_type >= 0:
                st = values[self._i_step_type]
                if st == FIRST and self._open[0]:
                    self._cut(0)
                elif st == LAST:
                    boundary = True
                    end = self._pending_end[0] or _END_TRUNCATED
                    self._pending_end[0] = 0
            if values[self._i_next] == LAST and not boundary:
                code = _END_TERMINATED
                if self._i_discount >= 0 and values[self._i_discount] != 0:
                    code = _END_TRUNCATED
                if self._i_step_type >= 0:
                    self._pending_end[0] = code  # the boundary step ends the episode
                else:
                    end = code
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
            self._ends[row] = self._pending_end[env] or _END_TRUNCATED
        else:
            self._phys[env] = self._new_stream()
        self._open[env] = False
        self._pending_end[env] = 0

    def _ends_many(self, values: list[Any], n: int, done_codes: Any) -> np.ndarray[Any, Any]:
        ends = np.zeros(n, dtype=np.int64)
        if self._trajectory:
            last = np.asarray(values[self._i_next]).astype(np.int64) == LAST
            code = np.full(n, _END_TERMINATED, dtype=np.int64)
            if self._i_discount >= 0:
                code[np.asarray(values[self._i_discount]) != 0] = _END_TRUNCATED
            if self._i_step_type >= 0:
                st = np.asarray(values[self._i_step_type]).astype(np.int64)
                for env in np.nonzero(st == FIRST)[0].tolist():
                    if self._open[env]:
                        self._cut(env)
                boundary = st == LAST
                for env in np.nonzero(boundary)[0].tolist():
                    ends[env] = self._pending_end[env] or _END_TRUNCATED
                    self._pending_end[env] = 0
                for env in np.nonzero(last & ~boundary)[0].tolist():
                    self._pending_end[env] = int(code[env])
            else:
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
            table=self._table,
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
            table=self._table,
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

    def try_flush(self, wait_lock: bool = False, older_than: float = 0.0) -> None:
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

    def discard(self) -> None:
        """Drop the staged steps and end every open episode (the table was emptied)."""
        with self._lock:
            self._clear_stage()
            self._open = [False] * len(self._open)
            self._pending_end = [0] * len(self._pending_end)

    def close(self) -> None:
        """Refuse further steps (staged steps are not written: flush first). Idempotent."""
        self._closed = True

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def staged(self) -> int:
        """Steps written to this observer but not yet to the table."""
        return self._staged
