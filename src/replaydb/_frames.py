"""Gathering sampled rows of a :class:`~replaydb.table.Table`, with frame stacks.

A ``frame_stack`` field is served as the last ``k`` frames of each sampled step,
found by following the storage's ``prev`` links within the episode: a compiled
kernel walks them on CPU, batched gathers elsewhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from replaydb.table import Table


def gather(table: Table, rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every field at ``rows``; ``frame_stack`` fields as their last ``k`` frames.

    A stacked field comes back as ``[*rows.shape, k, *shape]``: for each row, the
    rows of its ``k - 1`` predecessors in the same episode (``prev`` links,
    walked by a compiled kernel on CPU and by ``k - 1`` batched gathers
    elsewhere), oldest first. A predecessor that does not exist (the episode
    started later) or is no longer live (overwritten) stops the walk: earlier
    frames repeat the oldest one reached (``"first"``) or are zeros (``"zeros"``).
    """
    if not table.frame_stack:
        return table.storage.gather(rows)
    st = table.storage
    k_max = table._stack_k
    lead = tuple(rows.shape)
    out: dict[str, torch.Tensor] = {}
    if st._np is not None and table._kernels is not None:
        # CPU: numpy views and one compiled walk (each torch call costs a microsecond).
        links = st._np_links
        assert links is not None
        flat_np = rows.numpy().reshape(-1)
        rows_np, valid_np = table._kernels.stack_rows(flat_np, k_max, links[0], links[1])
        for name, column in st._np.items():
            stack = table.frame_stack.get(name)
            shape = table.spec[name].shape
            if stack is None:
                out[name] = torch.from_numpy(column.take(flat_np, axis=0).reshape(*lead, *shape))
                continue
            k, pad = stack
            idx = rows_np if k == k_max else rows_np[:, k_max - k :]
            got = column.take(idx.reshape(-1), axis=0).reshape(*lead, k, *shape)
            if pad == "zeros":
                keep = valid_np if k == k_max else valid_np[:, k_max - k :]
                if not keep.all():
                    got[~keep.reshape(*lead, k)] = 0
            out[name] = torch.from_numpy(got)
        return out
    flat = rows.reshape(-1)
    stack_rows, valid = stack_rows_torch(flat, k_max, st.key, st.prev)
    for name, tensor in st.fields.items():
        stack = table.frame_stack.get(name)
        shape = table.spec[name].shape
        if stack is None:
            out[name] = tensor.index_select(0, flat).view(*lead, *shape)
            continue
        k, pad = stack
        picked = tensor.index_select(0, stack_rows[:, k_max - k :].reshape(-1))
        picked = picked.view(*lead, k, *shape)
        if pad == "zeros":
            keep = valid[:, k_max - k :].reshape(*lead, k, *([1] * len(shape)))
            picked = picked.masked_fill(~keep, 0)
        out[name] = picked
    return out


def stack_rows_torch(
    rows: torch.Tensor, k: int, key: torch.Tensor, prev: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel ``stack_rows`` in torch: ``[N, k]`` rows of each row's last ``k``
    frames (oldest first) and whether each is a real frame of the episode."""
    cap = key.numel()
    cols, valid = [rows], [torch.ones_like(rows, dtype=torch.bool)]
    cur, ok = rows, valid[0]
    for _ in range(k - 1):
        p = prev.index_select(0, cur)
        ok = ok & (p >= 0) & (key.index_select(0, p.clamp(min=0) % cap) == p)
        cur = torch.where(ok, p % cap, cur)
        cols.append(cur)
        valid.append(ok)
    return torch.stack(cols[::-1], dim=1), torch.stack(valid[::-1], dim=1)
