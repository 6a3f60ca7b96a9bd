"""The records a :class:`~replaydb.table.Table` returns: samples, counters, live steps.

Plain frozen dataclasses, defined here so that the modules beside ``table.py`` that
build them (``_sampling``, ``_table_state``) need not import the table. Their public
home is :mod:`replaydb.table`, which re-exports them; ``__module__`` says so, for
pickles, docs and ``repr``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["LiveSteps", "Sample", "TableInfo"]


@dataclass(frozen=True)
class Sample:
    """A batch of items and everything a learner needs to weigh and re-prioritize them.

    ``sample["obs"]`` reads a field. Fields are ``[B, *shape]`` when the table's
    ``sequence_length`` is 1, else ``[B, T, *shape]``; a field in the table's
    ``frame_stack`` has a ``k`` dimension after those (``[B, k, *shape]`` or
    ``[B, T, k, *shape]``).

    Attributes:
        data: ``name -> tensor`` for every field of the spec.
        keys: ``[B]`` int64 item keys, for :meth:`Table.update_priorities`.
        probabilities: ``[B]`` float64 probability each item was drawn with.
        weights: ``[B]`` float32 importance weights (ones for uniform sampling).
        priorities: ``[B]`` float64 priorities of the items when drawn.
        times_sampled: ``[B]`` int64 times each item has been sampled, this one included.
        table_size: Items the table held when the sample was drawn.
        mask: ``[B, T]`` bool, ``False`` at padding past an episode end, or ``None``.
        ends: ``[B, T]`` int64 end codes of the window's steps (``0`` none, ``1``
            terminated, ``2`` truncated after the step), for sequence tables; else ``None``.

    Example:
        >>> table = Table(Spec({"x": ()}), 10); table.extend({"x": torch.arange(4.0)})
        >>> s = table.sample(3); s["x"].shape, s.keys.shape, s.weights.shape
        (torch.Size([3]), torch.Size([3]), torch.Size([3]))
    """

    data: dict[str, torch.Tensor]
    keys: torch.Tensor
    probabilities: torch.Tensor
    weights: torch.Tensor
    priorities: torch.Tensor
    times_sampled: torch.Tensor
    table_size: int
    mask: torch.Tensor | None = None
    ends: torch.Tensor | None = None

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.data[name]

    def __len__(self) -> int:
        """Number of items in the batch."""
        return int(self.keys.shape[0])


@dataclass(frozen=True)
class TableInfo:
    """A snapshot of a table's counters, for logs and dashboards.

    Example:
        >>> Table(Spec({"x": (1,)}), 10).info().size
        0
    """

    name: str
    capacity: int
    size: int
    num_steps: int
    sequence_length: int
    total_steps_written: int
    inserts: int
    samples: int
    sampler: dict[str, Any]
    rate_limiter: dict[str, Any]
    max_times_sampled: int | None
    device: str
    nbytes: int
    spec: dict[str, Any] = field(default_factory=dict)
    #: Windows start only at episode steps ``0, stride, 2 * stride, ...``.
    stride: int = 1
    #: Padded windows never start at the row carrying an episode's end code.
    final_step: bool = False
    #: ``name -> [k, pad]`` of the fields sampled as their last ``k`` frames.
    frame_stack: dict[str, list[Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class LiveSteps:
    """The live steps of a table in write order, from :meth:`Table.live_steps`.

    Attributes:
        data: ``name -> [N, *shape]`` values of every field.
        streams: ``[N]`` int64 stream of each step.
        ends: ``[N]`` int64 end code of each step.
        priorities: ``[N]`` float64 priority of the item each step completes.
        inserts: The rate limiter's insert counter.
        samples: The rate limiter's sample counter.
    """

    data: dict[str, torch.Tensor]
    streams: torch.Tensor
    ends: torch.Tensor
    priorities: torch.Tensor
    inserts: int
    samples: int


for _record in (Sample, TableInfo, LiveSteps):
    _record.__module__ = "replaydb.table"
