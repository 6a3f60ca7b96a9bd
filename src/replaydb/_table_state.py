"""A :class:`~replaydb.table.Table`'s state out and back in: configs, tensors, live steps.

Three ways out, one per job, and their ways back:

* ``config`` + ``state_dict`` (``snapshot`` takes both under the lock, copied): the
  exact state, for a table of the same config (checkpoints); back through
  ``from_config`` + ``load_state_dict``.
* ``live_steps``: the live steps in write order with the priority of the item each
  completes and the limiter's counters, portable to a table of any capacity
  (resharding, moving a table); back through ``restore_steps``.
* ``Table.items`` (in :mod:`replaydb._sampling`): the items themselves, for reading.

State tensors are named ``storage.*``, ``items.*``, ``sampler.*`` and ``limiter.*``;
the item columns are copied out of the packed records densely.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from replaydb import _disk, _waiting
from replaydb._records import LiveSteps, TableInfo
from replaydb._validate import check_int
from replaydb.errors import CheckpointError, InvalidArgumentError
from replaydb.rate_limiters import RateLimiter, rate_limiter_from_config
from replaydb.samplers import sampler_from_config
from replaydb.spec import Spec

if TYPE_CHECKING:
    from replaydb.table import Table

#: State tensors that ``state_dict`` already copies (the rest may be live views).
_COPIED = ("items.key", "items.priority", "items.times_sampled", "items.scalars")


def config(table: Table) -> dict[str, Any]:
    return {
        "name": table.name,
        "capacity": table.capacity,
        "sequence_length": table.sequence_length,
        "max_times_sampled": table.max_times_sampled,
        "pad": table.pad,
        "stride": table.stride,
        "final_step": table.final_step,
        "frame_stack": {k: [n, pad] for k, (n, pad) in table.frame_stack.items()},
        "spec": table.spec.to_json(),
        "sampler": table.sampler.config(),
        "rate_limiter": table.rate_limiter.config(),
        "device": str(table.device),
    }


def info(table: Table) -> TableInfo:
    with table._cond:
        return TableInfo(
            name=table.name,
            capacity=table.capacity,
            size=table._size,
            num_steps=table.num_steps,
            sequence_length=table.sequence_length,
            total_steps_written=table.storage.total,
            inserts=table.rate_limiter.inserts,
            samples=table.rate_limiter.samples,
            sampler=table.sampler.config(),
            rate_limiter=table.rate_limiter.config(),
            max_times_sampled=table.max_times_sampled,
            device=str(table.device),
            nbytes=table.storage.nbytes,
            spec=table.spec.to_json(),
            stride=table.stride,
            final_step=table.final_step,
            frame_stack={k: [n, pad] for k, (n, pad) in table.frame_stack.items()},
        )


def table_args(config: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments of :meth:`Table.config` output, but the device.

    Configs written before ``stride``, ``final_step`` and ``frame_stack`` existed
    get their defaults.
    """
    return {
        "spec": Spec.from_json(config["spec"]),
        "capacity": int(config["capacity"]),
        "sampler": sampler_from_config(config["sampler"]),
        "rate_limiter": rate_limiter_from_config(config["rate_limiter"]),
        "sequence_length": int(config["sequence_length"]),
        "max_times_sampled": config.get("max_times_sampled"),
        "name": str(config.get("name", "table")),
        "pad": bool(config.get("pad", False)),
        "stride": config.get("stride", 1),
        "final_step": config.get("final_step", False),
        "frame_stack": config.get("frame_stack") or None,
    }


def open_args(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The constructor arguments of the disk-backed table in ``path``."""
    stored = _disk.stored_config(path)
    try:
        args = table_args(stored)
    except Exception as exc:  # a constructor rejected a value of the config
        raise CheckpointError(f"{str(path)!r}: the table config is invalid ({exc})") from exc
    return {**args, "path": path}


def state_dict(table: Table) -> dict[str, torch.Tensor]:
    with table._cond:
        n = table.storage.num_rows
        out = {f"storage.{k}": v for k, v in table.storage.state_dict().items()}
        # Columns of the packed records: copied out densely.
        dense = torch.contiguous_format
        out["items.key"] = table._item_key[:n].cpu().clone(memory_format=dense)
        out["items.priority"] = table._priority[:n].cpu().clone(memory_format=dense)
        out["items.times_sampled"] = table._times[:n].cpu().clone(memory_format=dense)
        out["items.scalars"] = torch.tensor(
            [float(table._size), table._max_priority], dtype=torch.float64
        )
        out.update({f"sampler.{k}": v for k, v in table.sampler.state_dict().items()})
        out.update({f"limiter.{k}": v for k, v in table.rate_limiter.state_dict().items()})
        return out


def _part(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def load_state_dict(table: Table, state: Mapping[str, torch.Tensor]) -> None:
    with table._cond:
        table.storage.load_state_dict(_part(state, "storage."))
        n = table.storage.num_rows
        table._item_key.fill_(-1)
        table._priority.zero_()
        table._times.zero_()
        table._item_key[:n].copy_(state["items.key"])
        table._priority[:n].copy_(state["items.priority"])
        table._times[:n].copy_(state["items.times_sampled"])
        size, max_p = state["items.scalars"].tolist()
        table._size, table._max_priority = int(size), float(max_p)
        table.sampler.load_state_dict(_part(state, "sampler."))
        table.rate_limiter.load_state_dict(_part(state, "limiter."))
        _waiting.notify(table)


def snapshot(table: Table) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    with table._cond:
        state = state_dict(table)
        return config(table), {k: v if k in _COPIED else v.clone() for k, v in state.items()}


def live_steps(table: Table) -> LiveSteps:
    with table._cond:
        st = table.storage
        n = st.num_rows
        keys = st.key[:n]
        live_rows = torch.nonzero(keys >= 0).squeeze(1)
        rows = live_rows.index_select(0, torch.argsort(keys.index_select(0, live_rows)))
        item_slots = torch.nonzero(table._item_key[:n] >= 0).squeeze(1)
        pri = torch.full(
            (rows.numel(),), table._max_priority, dtype=torch.float64, device=table.device
        )
        if item_slots.numel():
            if table.sequence_length == 1:
                last = item_slots
            else:
                starts = table._item_key.index_select(0, item_slots)
                last = st.window_rows(starts, table.sequence_length)[:, -1]
            where = torch.full((table.capacity,), -1, dtype=torch.int64, device=table.device)
            where[rows] = torch.arange(rows.numel(), device=table.device)
            idx = where.index_select(0, last)
            ok = idx >= 0
            pri[idx[ok]] = table._priority.index_select(0, item_slots)[ok]
        return LiveSteps(
            data={k: v.cpu().clone() for k, v in st.gather(rows).items()},
            streams=st.stream.index_select(0, rows).cpu(),
            ends=st.end.index_select(0, rows).cpu(),
            priorities=pri.cpu(),
            inserts=int(table.rate_limiter.inserts),
            samples=int(table.rate_limiter.samples),
        )


def restore_steps(
    table: Table, steps: LiveSteps | Mapping[str, Any], total_steps_written: Any
) -> int:
    """:meth:`Table.restore_steps`: check everything, then write past the limiter."""
    live = isinstance(steps, LiveSteps)
    if live:
        for name in ("inserts", "samples"):
            value = getattr(steps, name)
            check_int(f"steps.{name}", value, 0)
    data = steps.data if isinstance(steps, LiveSteps) else steps
    total = total_steps_written
    if total is not None:
        if table.sequence_length != 1:
            raise InvalidArgumentError(
                f"total_steps_written is for single-step tables; table {table.name!r} has "
                f"sequence_length={table.sequence_length} (use load_state_dict)"
            )
        data, n = table.spec.coerce_batch(data, table.device)
        check_int("total_steps_written", total, n, hint=f" (the {n} steps given)")
        if n > table.capacity:
            raise InvalidArgumentError(
                f"restore_steps got {n} steps for a table of capacity {table.capacity}; "
                "pass the newest capacity steps at most"
            )
    with table._cond:
        if total is not None:
            if table.storage.total != 0:
                raise InvalidArgumentError(
                    f"restore_steps with total_steps_written needs an empty table; table "
                    f"{table.name!r} has written {table.storage.total} steps (call reset() first)"
                )
            table.storage.seek(int(total) - n)
        limiter = table.rate_limiter
        table.rate_limiter = bypass = RateLimiter(1.0, 0, -math.inf, math.inf)
        try:
            if isinstance(steps, LiveSteps):
                if steps.streams.numel():
                    table.extend(
                        data, streams=steps.streams, ends=steps.ends, priorities=steps.priorities
                    )
            else:
                table.extend(data)
        except BaseException:
            if total is not None and table.storage.total == int(total) - n:
                table.storage.total = 0  # undo the seek: nothing was written
            raise
        finally:
            table.rate_limiter = limiter
        if isinstance(steps, LiveSteps):
            limiter.inserts, limiter.samples = steps.inserts, steps.samples
        else:
            limiter.on_insert(bypass.inserts)
        table._cond.notify_all()
        return table._size
