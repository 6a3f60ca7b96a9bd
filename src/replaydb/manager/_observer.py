"""StepObserver: writes environment steps into a table, a few thousand at a time.

The observer is the collect-loop half of :class:`~replaydb.manager.ReplayBufferManager`
(TF-Agents calls these observers). Each call checks one step (or a vector env's
batch of steps) against the data spec, works out where its episode ends, and hands
it to a :class:`~replaydb.writer.Writer` of ``write_batch`` steps, which stages it and
writes every batch with one ``client.extend`` (the stage and its flush policy are
described there). Each environment of a vector env is one stream of that writer.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from replaydb._constants import END_TERMINATED, END_TRUNCATED, STEP_FIRST, STEP_LAST, STEP_MID
from replaydb._validate import check_int
from replaydb.errors import (
    ClosedError,
    InvalidArgumentError,
    SpecMismatchError,
)
from replaydb.nest import Nest
from replaydb.server import TableClient
from replaydb.spec import Spec, dtype_name
from replaydb.writer import Writer, numpy_dtype

__all__ = ["FIRST", "LAST", "MID", "StepObserver"]


FIRST, MID, LAST = STEP_FIRST, STEP_MID, STEP_LAST
_INT_SCALARS = frozenset(
    {int, bool, np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32}
)
_FLOAT_SCALARS = _INT_SCALARS | {float, np.float16, np.float32, np.float64}


@dataclass(frozen=True)
class _Plan:
    """How to check a step whose values have one particular tuple of types.

    ``arrays``: ``(index, shape, dtype)`` of ndarray values, checked exactly;
    ``ints``: ``(index, min, max)`` of Python ints bound for integer fields;
    ``zero_d``: indices of 0-d arrays for scalar fields, staged as numpy scalars so a
    later in-place change of the array cannot leak in.
    """

    arrays: list[tuple[int, tuple[int, ...], Any]]
    ints: list[tuple[int, int, int]]
    zero_d: list[int]


_UNSEEN: Any = object()


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
        client: TableClient,
        nest: Nest,
        *,
        new_stream: Callable[[], int],
        write_batch: int = 4096,
        table: str | None = None,
    ) -> None:
        write_batch = check_int("write_batch", write_batch, 1)
        self._nest = nest
        spec = self._nest.spec
        # Leaves in the nest's traversal order (the order the extractors produce).
        self._names = nest.leaves
        self._fields = [spec[n] for n in self._names]
        self._shapes = [f.shape for f in self._fields]
        self._ndims = [len(s) for s in self._shapes]
        self._int_field = [not f.dtype.is_floating_point for f in self._fields]
        self._closed = False
        np_dtypes = [numpy_dtype(f.dtype) for f in self._fields]
        # The stage, the streams (one per environment) and the flush policy.
        self._writer = Writer(
            client,
            Spec({n: spec[n] for n in self._names}),
            table=table,
            # A torch-only dtype (bfloat16) cannot take the per-step numpy path; its
            # steps are written one call at a time, as they come.
            max_steps=write_batch if all(d is not None for d in np_dtypes) else 1,
            new_stream=new_stream,
        )
        self._staging = self._writer.staging
        self._array_idx = [i for i, f in enumerate(self._fields) if f.shape]
        self._scalar_idx = [i for i, f in enumerate(self._fields) if not f.shape]
        # Per environment: the end code of a transition into LAST whose boundary step
        # has not come yet (0: none).
        self._pending_end: list[int] = [0]
        idx = {n: i for i, n in enumerate(self._names) if not spec[n].shape}
        self._i_step_type = idx.get("step_type", -1)
        self._i_next = idx.get("next_step_type", -1)
        self._i_discount = idx.get("discount", -1)
        self._i_done = [idx[n] for n in ("terminated", "truncated", "done") if n in idx]
        self._done_codes = [
            END_TRUNCATED if n == "truncated" else END_TERMINATED
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
        self._np_dtypes: list[Any] = np_dtypes
        self._plans: dict[tuple[type, ...], _Plan | None] = {}

    def __repr__(self) -> str:
        w = self._writer
        envs = len(self._pending_end)
        return f"StepObserver(staged={w.staged}, write_batch={w.max_steps}, envs={envs})"

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
                if plan.zero_d:
                    raw = list(raw)
                    for i in plan.zero_d:
                        raw[i] = raw[i][()]
                self._writer.append(raw, end=self._end_one(raw, None))
                return
        values, n = self._check(raw)
        done_codes = self._done_arg(done, n)
        if n == 0:
            self._stage_one(values, done_codes)
        else:
            self._stage_many(values, n, done_codes)

    def _plan(self, sig: tuple[type, ...]) -> _Plan | None:
        """How to check steps whose values have types ``sig`` (``None``: never fast)."""
        arrays: list[tuple[int, tuple[int, ...], Any]] = []
        ints: list[tuple[int, int, int]] = []
        zero_d: list[int] = []
        for i, (kind, field) in enumerate(zip(sig, self._fields, strict=True)):
            npd = self._np_dtypes[i]
            is_float = field.dtype.is_floating_point
            if kind is np.ndarray:
                arrays.append((i, field.shape, npd))
                if not field.shape:
                    zero_d.append(i)
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
        while len(self._pending_end) < n:
            self._pending_end.append(0)

    def _stage_one(self, values: list[Any], done_codes: Any) -> None:
        for i in self._scalar_idx:
            npd = self._np_dtypes[i]
            if npd is None:
                continue  # no numpy twin (bfloat16): the writer writes it through
            try:
                values[i] = npd.type(values[i])
            except (TypeError, ValueError, OverflowError) as exc:
                raise SpecMismatchError(
                    f"field {self._names[i]!r}: value {values[i]!r} does not fit dtype {npd} "
                    f"({exc})"
                ) from exc
        self._writer.append(values, end=self._end_one(values, done_codes))

    def _end_one(self, values: Any, done_codes: Any) -> int:
        """The end code of one step of env 0 (ending its open episode on a FIRST step)."""
        end = 0
        if self._trajectory:
            boundary = False
            if self._i_step_type >= 0:
                st = values[self._i_step_type]
                if st == FIRST and self._writer.is_open(0):
                    self._cut(0)
                elif st == LAST:
                    boundary = True
                    end = self._pending_end[0] or END_TRUNCATED
                    self._pending_end[0] = 0
            if values[self._i_next] == LAST and not boundary:
                code = END_TERMINATED
                if self._i_discount >= 0 and values[self._i_discount] != 0:
                    code = END_TRUNCATED
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
        return end

    def _cut(self, env: int) -> None:
        """End env's open episode before a FIRST step."""
        self._writer.end_episode(env, self._pending_end[env] or END_TRUNCATED)
        self._pending_end[env] = 0

    def _ends_many(self, values: list[Any], n: int, done_codes: Any) -> np.ndarray[Any, Any]:
        ends = np.zeros(n, dtype=np.int64)
        if self._trajectory:
            last = np.asarray(values[self._i_next]).astype(np.int64) == LAST
            code = np.full(n, END_TERMINATED, dtype=np.int64)
            if self._i_discount >= 0:
                code[np.asarray(values[self._i_discount]) != 0] = END_TRUNCATED
            if self._i_step_type >= 0:
                st = np.asarray(values[self._i_step_type]).astype(np.int64)
                for env in np.nonzero(st == FIRST)[0].tolist():
                    if self._writer.is_open(env):
                        self._cut(env)
                boundary = st == LAST
                for env in np.nonzero(boundary)[0].tolist():
                    ends[env] = self._pending_end[env] or END_TRUNCATED
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
        columns = {}
        for i, name in enumerate(self._names):
            npd = self._np_dtypes[i]
            if npd is None or self._fields[i].shape:
                columns[name] = values[i]  # the writer copies (or writes through)
                continue
            try:
                columns[name] = np.asarray(values[i]).astype(npd)
            except (TypeError, ValueError, OverflowError) as exc:
                raise SpecMismatchError(
                    f"field {name!r}: values do not fit dtype {npd} ({exc})"
                ) from exc
        ends = self._ends_many(values, n, done_codes)
        self._writer.extend(columns, streams=np.arange(n, dtype=np.int64), ends=ends)

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
        self._writer.flush(timeout)

    def try_flush(self, wait_lock: bool = False, older_than: float = 0.0) -> None:
        """Flush without waiting for a blocking rate limiter (nor a busy observer).

        With ``older_than``, flush only when the oldest staged step has waited that long.
        """
        if not self._closed:
            self._writer.try_flush(older_than=older_than, wait_lock=wait_lock)

    def discard(self) -> None:
        """Drop the staged steps and end every open episode (the table was emptied)."""
        self._writer.discard()
        self._pending_end = [0] * len(self._pending_end)

    def close(self) -> None:
        """Refuse further steps (staged steps are not written: flush first). Idempotent."""
        self._closed = True
        self._writer.close(flush=False)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def staged(self) -> int:
        """Steps written to this observer but not yet to the table."""
        return self._writer.staged
