"""Drawing items without gathering their data: what a process sharing a table needs.

:meth:`Table.sample_rows` makes the same draw as :meth:`Table.sample` (the same
sampler call, rate-limiter accounting, ``times_sampled`` counts and
``max_times_sampled`` removals, under the table's lock) but returns the *rows*
that hold each item's steps instead of copying them out. Another process that
maps the same storage (a disk-backed or shared-memory table, see
:mod:`replaydb.shared`) gathers the bytes itself, so many processes gather in
parallel while one owner keeps the table's bookkeeping.

The rows stay valid until the ring overwrites them. ``oldest`` (per item, the
smallest step key its rows hold) and ``generation`` let a gatherer check, after
copying, that no write reached them meanwhile: a disk-backed storage records in
its journal, *before* writing, the cursor after the write (``intent``), so an
item whose ``oldest >= intent - capacity`` (journal read after the copy, same
generation) was not touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from replaydb import _sampling

if TYPE_CHECKING:
    from replaydb.table import Table


@dataclass(frozen=True)
class RowSample:
    """A draw of items as the rows that hold them, from :meth:`Table.sample_rows`.

    Attributes:
        rows: int64 rows to gather: ``[B]`` for single-step tables, ``[B, T]`` for
            sequences, with a trailing ``k`` dimension (the frames of each step,
            oldest first, ``k`` the table's largest stack) when the table has a
            ``frame_stack``.
        valid: bool like ``rows`` where the table has a ``frame_stack`` (``False``
            where the stack's padding fills in), else ``None``.
        keys: ``[B]`` int64 item keys.
        probabilities: ``[B]`` float64 probability each item was drawn with.
        weights: ``[B]`` float32 importance weights.
        priorities: ``[B]`` float64 priorities when drawn.
        times_sampled: ``[B]`` int64 draws of each item, this one included.
        table_size: Items the table held when drawn.
        mask: ``[B, T]`` bool as :attr:`Sample.mask`, or ``None``.
        ends: ``[B, T]`` int64 as :attr:`Sample.ends`, or ``None``.
        oldest: ``[B]`` int64 smallest step key among each item's rows.
        generation: The disk-backed storage's reset count when drawn (``-1`` in memory).

    Example:
        >>> t = Table(Spec({"x": ()}), 4); t.extend({"x": torch.arange(6.0)})
        >>> r = t.sample_rows(2); r.rows.shape, bool((r.oldest >= 2).all())
        (torch.Size([2]), True)
    """

    rows: torch.Tensor
    valid: torch.Tensor | None
    keys: torch.Tensor
    probabilities: torch.Tensor
    weights: torch.Tensor
    priorities: torch.Tensor
    times_sampled: torch.Tensor
    table_size: int
    mask: torch.Tensor | None
    ends: torch.Tensor | None
    oldest: torch.Tensor
    generation: int

    def __len__(self) -> int:
        """Number of items drawn."""
        return int(self.keys.shape[0])


def sample_rows(
    table: Table, batch_size: int, beta: float | None, timeout: float | None
) -> RowSample:
    """:meth:`Table.sample` without the gather (same checks, draws and effects)."""
    d, (rows, valid, oldest, generation) = _sampling.draw(
        table, batch_size, beta, timeout, _locate, 0
    )
    return RowSample(
        rows=rows,
        valid=valid,
        keys=d.keys,
        probabilities=d.probabilities,
        weights=d.weights,
        priorities=d.priorities,
        times_sampled=d.times_sampled,
        table_size=d.table_size,
        mask=d.mask,
        ends=d.ends,
        oldest=oldest,
        generation=generation,
    )


def _locate(
    table: Table, rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, int]:
    """Under the lock: the rows to copy (frame stacks walked), and what checks the copy."""
    st = table.storage
    if table.sequence_length == 1:
        rows = rows.clone()  # the draw's own slots: keep them out of the caller's hands
    valid = None
    if table.frame_stack:
        k = max(k for k, _ in table.frame_stack.values())
        lead = tuple(rows.shape)
        flat, ok = st.engine.stack_rows(rows.reshape(-1), k)
        rows, valid = flat.view(*lead, k), ok.view(*lead, k)
    if st.key.device.type == "cpu":  # numpy: a fraction of torch's cost per call
        k = st.key.numpy()[rows.reshape(-1).numpy()]
        oldest = torch.from_numpy(k.reshape(len(rows), -1).min(axis=1))
    else:
        oldest = st.key.index_select(0, rows.reshape(-1)).view(len(rows), -1).amin(dim=1)
    generation = st.files.generation if st.files is not None else -1
    return rows, valid, oldest, generation
