"""Turn a dm-reverb checkpoint into a replaydb checkpoint directory.

Private helper behind :func:`replaydb._reverb_checkpoint.import_reverb_checkpoint`
and ``replaydb import-reverb``. A Reverb item is a list of columns of ``T`` steps;
a replaydb item is a window of ``sequence_length`` consecutive steps of one
episode. The table gets ``sequence_length=T``; items that are consecutive windows
of one Reverb episode (starts one step apart, per the chunks' sequence ranges,
overlapping steps equal) become one run of ``r + T - 1`` steps, ended as truncated
(``end=2``), whose windows are exactly those ``r`` items; any other item is a run
of its own. Every item comes back with exactly its data, priority and times
sampled.

Everything is validated, for every table, before anything is written.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from replaydb._constants import END_TRUNCATED
from replaydb._reverb_checkpoint import (
    ReverbCheckpoint,
    ReverbImport,
    ReverbImportedTable,
    ReverbItem,
    ReverbTable,
    read_reverb_checkpoint,
    signature_fields,
)
from replaydb._validate import check_int
from replaydb.errors import CheckpointError, InvalidArgumentError, SpecMismatchError
from replaydb.spec import Field, Spec, dtype_from_name, dtype_name

__all__ = ["import_checkpoint"]

_NATIVE = {"float16", "float32", "float64", "uint8", "int8", "int16", "int32", "int64", "bool"}
_WIDEN = {"uint16": "int32", "uint32": "int64"}
_HUGE = 1.7976931348623157e308  # Reverb's "no bound" (DBL_MAX)


@dataclass(frozen=True)
class _Plan:
    source: ReverbTable
    segments: tuple[tuple[ReverbItem, ...], ...]  # runs of items one step apart
    spec: Spec
    sequence_length: int
    capacity: int
    notes: tuple[str, ...]

    @property
    def items(self) -> tuple[ReverbItem, ...]:
        """Items in replaydb key order."""
        return tuple(it for seg in self.segments for it in seg)

    @property
    def rows(self) -> int:
        return sum(len(seg) + self.sequence_length - 1 for seg in self.segments)


def _load_spec(spec: Any) -> Spec | None:
    if spec is None or isinstance(spec, Spec):
        return spec
    if isinstance(spec, str | os.PathLike):
        path = Path(spec)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidArgumentError(
                f"spec file {str(path)!r} is not readable JSON ({exc}); write it as "
                '{"name": {"shape": [...], "dtype": "float32"}, ...} (Spec.to_json())'
            ) from exc
        if not isinstance(data, Mapping) or not all(
            isinstance(v, Mapping) and "shape" in v and "dtype" in v for v in data.values()
        ):
            raise InvalidArgumentError(
                f"spec file {str(path)!r} must map each field name to "
                '{"shape": [...], "dtype": "..."} (the output of Spec.to_json())'
            )
        return Spec.from_json(data)
    if isinstance(spec, Mapping):
        return Spec(spec)
    raise InvalidArgumentError(
        f"spec must be a Spec, a mapping of fields or a JSON spec file, got {type(spec).__name__}"
    )


def _item_steps(item: ReverbItem, where: str) -> int:
    """``T`` of one item: all columns span the same steps (squeezed: one step)."""
    lengths = {
        1 if (item.squeeze and item.squeeze[c]) else int(col.shape[0])
        for c, col in enumerate(item.columns)
    }
    if len(lengths) != 1:
        raise SpecMismatchError(
            f"{where}: its columns span {sorted(lengths)} steps (squeeze={list(item.squeeze)}); "
            "a replaydb item has one length for every field"
        )
    return lengths.pop()


def _step_column(item: ReverbItem, c: int) -> np.ndarray[Any, Any]:
    col = item.columns[c]
    return col[None] if item.squeeze and item.squeeze[c] else col


def _plan(table: ReverbTable, spec: Spec | None, capacity: int | None) -> _Plan:
    name = table.name
    where = f"table {name!r}"
    notes: list[str] = []
    items = table.items
    if items and all(it.inserted_at is not None for it in items):
        items = tuple(sorted(items, key=lambda it: it.inserted_at or 0))
    lengths = {_item_steps(it, f"{where} item {it.key}") for it in items} or {1}
    if len(lengths) != 1:
        raise SpecMismatchError(
            f"{where} holds items of {sorted(lengths)} steps; a replaydb table's items all "
            "have one sequence_length. Import the other tables with table=NAME (--table NAME)"
        )
    steps = lengths.pop()
    ncols = {len(it.columns) for it in items}
    if len(ncols) > 1:
        raise SpecMismatchError(f"{where}: items have {sorted(ncols)} columns; one spec needs one")
    shapes: list[tuple[tuple[int, ...], np.dtype[Any]]] = []
    if items:
        first = items[0]
        shapes = [
            (tuple(_step_column(first, c).shape[1:]), _step_column(first, c).dtype)
            for c in range(len(first.columns))
        ]
        for it in items[1:]:
            for c, (shape, dtype) in enumerate(shapes):
                col = _step_column(it, c)
                if col.shape[1:] != shape or col.dtype != dtype:
                    raise SpecMismatchError(
                        f"{where} column {c}: item {it.key} holds {col.dtype} "
                        f"{list(col.shape[1:])}, item {first.key} {dtype} {list(shape)}; "
                        "a replaydb field has one shape and dtype"
                    )
    if spec is not None:
        names = list(spec)
        if shapes and len(names) != len(shapes):
            raise SpecMismatchError(
                f"{where}: the spec has {len(names)} fields {names} but the items have "
                f"{len(shapes)} columns; list the fields in tree.flatten order (dict keys "
                "sorted, named tuples in field order, empty leaves such as policy_info=() left out)"
            )
        fields = dict(spec.items())
        for (shape, dtype), n in zip(shapes, names[: len(shapes)], strict=True):
            want = fields[n]
            wname = dtype_name(want.dtype)
            target = np.dtype(wname) if wname != "bfloat16" else None
            if shape != want.shape or target is None or not np.can_cast(dtype, target, "safe"):
                raise SpecMismatchError(
                    f"{where} field {n!r}: the checkpoint holds {dtype} {list(shape)}, the spec "
                    f"says {dtype_name(want.dtype)} {list(want.shape)}; fix the spec (its "
                    "fields must follow the column order)"
                )
        out_spec = spec
    else:
        names = [f"column_{c}" for c in range(len(shapes))]
        if table.signature is not None:
            sig = signature_fields(table.signature)
            if not shapes or len(sig) == len(shapes):
                names = [n for n, _ in sig]
            else:
                notes.append(
                    f"the signature has {len(sig)} leaves but items have {len(shapes)} "
                    "columns; fields are named column_0.."
                )
        if not shapes:
            raise SpecMismatchError(f"{where} holds no items; pass its spec to import it empty")
        out_fields = {}
        for (shape, dtype), n in zip(shapes, names, strict=True):
            if dtype.name in _NATIVE:
                out_fields[n] = Field(shape, dtype_from_name(dtype.name))
            elif dtype.name in _WIDEN:
                out_fields[n] = Field(shape, dtype_from_name(_WIDEN[dtype.name]))
                notes.append(f"field {n!r}: {dtype.name} widened to {_WIDEN[dtype.name]}")
            else:
                kind = "strings" if dtype.kind == "O" else dtype.name
                raise SpecMismatchError(
                    f"{where} field {n!r} holds {kind}, which a replaydb table cannot store "
                    f"(it stores {sorted(_NATIVE | set(_WIDEN))}); import the other tables "
                    "with table=NAME (--table NAME)"
                )
        out_spec = Spec(out_fields)
    segments = _segments(items, steps)
    rows = sum(len(seg) + steps - 1 for seg in segments)
    n_items = len(items)
    cap = capacity if capacity is not None else max(table.max_size, rows, steps)
    if cap < max(rows, steps):
        raise InvalidArgumentError(
            f"capacity {cap} is too small for {where}: its {n_items} items of {steps} steps "
            f"need {max(rows, steps)} rows"
        )
    if steps > 1 and rows > n_items:
        notes.append(
            f"{rows} rows for {n_items} items of {steps} steps: a step that overlapping "
            "items share is stored once where they are consecutive windows of one "
            "episode, once per item otherwise"
        )
    bad = [it for it in items if not (math.isfinite(it.priority) and it.priority >= 0)]
    if bad:
        raise CheckpointError(
            f"{where} item {bad[0].key}: priority {bad[0].priority} is not finite and >= 0"
        )
    if any(it.priority == 0 for it in items):
        notes.append("items of priority 0 get the smallest positive priority (replaydb needs > 0)")
    if table.remover.kind != "fifo":
        notes.append(
            f"remover {table.remover.kind}"
            + (f" (min_heap={table.remover.min_heap})" if table.remover.kind == "heap" else "")
            + ": replaydb evicts the oldest item when full (Reverb's Fifo remover)"
        )
    lim = table.rate_limiter
    notes.append(
        f"rate limiter counters kept (inserts {lim.insert_count}, samples "
        f"{lim.sample_count}); delete_count {lim.delete_count}, num_deleted_episodes "
        f"{table.num_deleted_episodes} and num_unique_samples {table.num_unique_samples} "
        "are not held"
    )
    notes.append("Reverb item keys are not held as keys: extra.reverb_import lists them in order")
    _sampler(table)  # validate now
    _limiter(table)
    return _Plan(table, segments, out_spec, steps, cap, tuple(notes))


def _segments(items: Sequence[ReverbItem], steps: int) -> tuple[tuple[ReverbItem, ...], ...]:
    """Group items (in insertion order) into runs of windows one step apart.

    A run of ``r`` items of one episode whose starts follow each other and whose
    overlapping steps hold the same data is written as ``r + steps - 1`` steps; the
    table then serves exactly those ``r`` windows. Anything else stands alone.
    """
    runs: list[list[ReverbItem]] = []
    open_runs: dict[tuple[int, int], list[ReverbItem]] = {}
    for it in items:
        run = None
        if it.episode_id is not None and it.start is not None:
            run = open_runs.pop((it.episode_id, it.start), None)
            if run is not None and not _overlap_matches(run[-1], it, steps):
                run = None
        if run is None:
            run = []
            runs.append(run)
        run.append(it)
        if it.episode_id is not None and it.start is not None:
            open_runs[(it.episode_id, it.start + 1)] = run
    return tuple(tuple(r) for r in runs)


def _overlap_matches(a: ReverbItem, b: ReverbItem, steps: int) -> bool:
    return all(
        np.array_equal(_step_column(a, c)[1:], _step_column(b, c)[: steps - 1])
        for c in range(len(a.columns))
    )


def _sampler(table: ReverbTable) -> Any:
    from replaydb.samplers import Fifo, Lifo, MaxHeap, MinHeap, Prioritized, Uniform

    s = table.sampler
    if s.kind == "uniform":
        return Uniform()
    if s.kind == "fifo":
        return Fifo()
    if s.kind == "lifo":
        return Lifo()
    if s.kind == "heap":
        return MinHeap() if s.min_heap else MaxHeap()
    exponent = float(s.priority_exponent or 0.0)
    if not 0.0 <= exponent <= 1.0:
        raise InvalidArgumentError(
            f"table {table.name!r}: priority_exponent {exponent} is outside [0, 1], which "
            "replaydb's Prioritized sampler (alpha) takes"
        )
    return Prioritized(alpha=exponent, eps=0.0)


def _limiter(table: ReverbTable) -> Any:
    from replaydb.rate_limiters import MinSize, RateLimiter

    lim = table.rate_limiter
    lo = -math.inf if lim.min_diff <= -_HUGE else lim.min_diff
    hi = math.inf if lim.max_diff >= _HUGE else lim.max_diff
    try:
        unbounded = lo == -math.inf and hi == math.inf
        if lim.samples_per_insert == 1.0 and unbounded and lim.min_size_to_sample >= 1:
            return MinSize(lim.min_size_to_sample)
        return RateLimiter(lim.samples_per_insert, lim.min_size_to_sample, lo, hi)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"table {table.name!r}: rate limiter: {exc}") from exc


def _build(plan: _Plan) -> Any:
    from replaydb.rate_limiters import RateLimiter
    from replaydb.table import Table

    src, steps, spec = plan.source, plan.sequence_length, plan.spec
    mts = src.max_times_sampled or None
    items = plan.items
    n, rows = len(items), plan.rows
    # Row of each item's first step, and of each run's last step.
    starts = _starts(plan)
    first = torch.tensor(
        [row + j for row, seg in starts for j in range(len(seg))], dtype=torch.int64
    )
    ends_at = [row + len(seg) + steps - 2 for row, seg in starts]

    def make(limiter: Any) -> Table:
        return Table(
            spec,
            plan.capacity,
            sampler=_sampler(src),
            rate_limiter=limiter,
            sequence_length=steps,
            max_times_sampled=mts,
            name=src.name,
        )

    # Written through a limiter that never blocks, then moved into the real one.
    staging = make(RateLimiter(1.0, 0, -math.inf, math.inf))
    if n:
        data = {}
        for c, (field_name, f) in enumerate(spec.items()):
            cols = []
            for seg in plan.segments:  # each item's first step, then the last item's rest
                cols += [_step_column(it, c)[:1] for it in seg[:-1]]
                cols.append(_step_column(seg[-1], c))
            arr = np.concatenate(cols).astype(np.dtype(dtype_name(f.dtype)), copy=False)
            data[field_name] = torch.from_numpy(np.ascontiguousarray(arr))
        ends = np.zeros(rows, dtype=np.int64)
        ends[ends_at] = END_TRUNCATED
        pri = np.ones(rows, dtype=np.float64)
        tiny = np.nextafter(0.0, 1.0)
        pri[first.numpy() + steps - 1] = [max(it.priority, tiny) for it in items]
        staging.extend(data, ends=torch.from_numpy(ends), priorities=torch.from_numpy(pri))
        if len(staging) != n:  # pragma: no cover - a replaydb bug, not bad input
            raise CheckpointError(f"table {src.name!r}: imported {len(staging)} of {n} items")
    state = staging.state_dict()
    if n:
        times = state["items.times_sampled"]
        times[first] = torch.tensor([it.times_sampled for it in items], dtype=times.dtype)
    lim = src.rate_limiter
    state["limiter.counts"] = torch.tensor([lim.insert_count, lim.sample_count], dtype=torch.int64)
    table = make(_limiter(src))
    table.load_state_dict(state)
    return table


def _starts(plan: _Plan) -> list[tuple[int, tuple[ReverbItem, ...]]]:
    out, row = [], 0
    for seg in plan.segments:
        out.append((row, seg))
        row += len(seg) + plan.sequence_length - 1
    return out


def import_checkpoint(
    src: str | os.PathLike[str] | ReverbCheckpoint,
    out_dir: str | os.PathLike[str],
    spec: Any = None,
    table: str | Sequence[str] | None = None,
    *,
    capacity: int | None = None,
    force: bool = False,
) -> ReverbImport:
    """See :func:`replaydb._reverb_checkpoint.import_reverb_checkpoint`."""
    from replaydb.checkpoint import write_checkpoint
    from replaydb.manager import MANAGER_FORMAT
    from replaydb.nest import Nest

    ckpt = src if isinstance(src, ReverbCheckpoint) else read_reverb_checkpoint(src)
    if table is None:
        names = [t.name for t in ckpt.tables]
    else:
        names = [table] if isinstance(table, str) else list(table)
        for n in names:
            ckpt.table(n)  # raises, naming the tables there are
        if len(set(names)) != len(names):
            raise InvalidArgumentError(f"table names repeat: {names}")
    if not names:
        raise CheckpointError(f"{str(ckpt.path)!r} holds no tables; nothing to import")
    the_spec = _load_spec(spec)
    if the_spec is not None and len(names) > 1:
        raise InvalidArgumentError(
            f"a spec describes one table but {len(names)} are selected ({names}); "
            "pass table=NAME with the spec"
        )
    if capacity is not None:
        capacity = check_int("capacity", capacity, 1)
    plans = [_plan(ckpt.table(n), the_spec, capacity) for n in names]
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not force)):
        raise CheckpointError(
            f"{str(out)!r} exists and is not an empty directory; pick a new --out "
            "(or pass force=True / --force to add a checkpoint there)"
        )
    tables = {p.source.name: _build(p) for p in plans}
    meta = {
        p.source.name: {
            "reverb_keys": [str(it.key) for it in p.items],
            "keys": [row + j for row, seg in _starts(p) for j in range(len(seg))],
            "inserted_at": [it.inserted_at for it in p.items],
            "max_size": p.source.max_size,
            "sampler": p.source.sampler.kind,
            "remover": p.source.remover.kind,
            "notes": list(p.notes),
        }
        for p in plans
    }
    extra: dict[str, Any] = {"reverb_import": {"source": str(ckpt.path), "tables": meta}}
    if len(plans) == 1:
        extra["manager"] = {
            "format": MANAGER_FORMAT,
            "format_version": 1,
            "data_spec": Nest(plans[0].spec).to_json(),
            "sequence_length": plans[0].sequence_length,
        }
    path = write_checkpoint(out, tables, extra=extra)
    return ReverbImport(
        path=path,
        source=ckpt.path,
        tables=tuple(
            ReverbImportedTable(
                name=p.source.name,
                items=len(p.items),
                capacity=p.capacity,
                sequence_length=p.sequence_length,
                fields=tuple(p.spec),
                notes=p.notes,
            )
            for p in plans
        ),
    )
