"""Loading a ``populate`` starter buffer (the *steps* layout) with a ``Trajectory`` spec."""

from __future__ import annotations

import torch

from replaydb._constants import END_NONE, STEP_FIRST, STEP_LAST, STEP_MID
from replaydb.rate_limiters import rate_limiter_from_config
from replaydb.samplers import sampler_from_config
from replaydb.spec import Spec
from replaydb.table import Table

__all__: list[str] = []


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
    boundary = step_type == STEP_LAST
    next_step_type = torch.where(
        boundary,
        torch.full_like(step_type, STEP_FIRST),
        torch.where(
            flags, torch.full_like(step_type, STEP_LAST), torch.full_like(step_type, STEP_MID)
        ),
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
        frame_stack=dict(table.frame_stack) or None,
    )
    if n:
        streams = storage.stream[:n].index_select(0, order)
        ends = storage.end[:n].index_select(0, order)
        out.extend(data, streams=streams, ends=torch.where(ends < 0, END_NONE, ends))
    return out
