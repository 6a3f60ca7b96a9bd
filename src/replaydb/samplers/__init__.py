"""Samplers: which items a sample returns, and with what probability.

A sampler sees items only as *slots* (the row of the item's first step, in
``[0, capacity)``); the :class:`~replaydb.table.Table` tells it when items appear
(:meth:`Sampler.on_insert`), disappear (:meth:`Sampler.on_remove`) or change
priority (:meth:`Sampler.update`), and asks it for slots (:meth:`Sampler.sample`).
Every sampler owns a seedable ``torch.Generator`` on the table's device, and its
whole state is tensors so it round-trips through a checkpoint exactly.

Samplers:

* :class:`Uniform` - every item equally likely.
* :class:`Prioritized` - probability proportional to ``(priority + eps) ** alpha``
  over a :class:`~replaydb.sum_tree.SumTree`, with importance weights
  ``(N * P) ** -beta`` normalised by the batch maximum (Schaul et al. 2015,
  arXiv 1511.05952).
* Reverb's deterministic selectors (arXiv 2102.04736): :class:`Fifo` (oldest
  first), :class:`Lifo` (newest first), :class:`MinHeap` (lowest priority first) and
  :class:`MaxHeap` (highest priority first); heap ties go to the oldest item.

Zero priority: the table rejects priorities that are not finite and > 0, so a
sampler never sees one; ``eps`` keeps tiny priorities reachable.

Optional fast paths are declared, not discovered: a sampler that has cheaper entry
points for a CPU table implements :class:`FastSampler` (one method,
``fast_paths()``, returning a :class:`FastPaths` record), which the table reads once
when it is built. :class:`Uniform` declares a contiguous insert and a slots-only
draw; :class:`Prioritized` numpy priority updates, its priority bound and, with
numba, one compiled pass for a draw plus the table's item bookkeeping.

Modules: ``_base`` (the protocols, :class:`Selection`, the registry), ``_uniform``,
``_prioritized`` and ``_selectors``.

Example:
    >>> import torch
    >>> from replaydb import Table
    >>> from replaydb.samplers import Prioritized
    >>> table = Table({"x": ((), "float32")}, 100, sampler=Prioritized(alpha=0.6, seed=0))
    >>> table.extend({"x": torch.zeros(8)}); table.sample(4).weights.shape
    torch.Size([4])
"""

from __future__ import annotations

from replaydb.samplers._base import FastPaths as FastPaths
from replaydb.samplers._base import FastSampler as FastSampler
from replaydb.samplers._base import ItemCounter as ItemCounter
from replaydb.samplers._base import Sampler as Sampler
from replaydb.samplers._base import Selection as Selection
from replaydb.samplers._base import check_seed as check_seed
from replaydb.samplers._base import fast_paths as fast_paths
from replaydb.samplers._base import make_generator as make_generator
from replaydb.samplers._base import register_sampler as register_sampler
from replaydb.samplers._base import sampler_from_config as sampler_from_config
from replaydb.samplers._prioritized import Prioritized as Prioritized
from replaydb.samplers._selectors import Fifo as Fifo
from replaydb.samplers._selectors import Lifo as Lifo
from replaydb.samplers._selectors import MaxHeap as MaxHeap
from replaydb.samplers._selectors import MinHeap as MinHeap
from replaydb.samplers._uniform import Uniform as Uniform

__all__ = [
    "FastPaths",
    "FastSampler",
    "Fifo",
    "ItemCounter",
    "Lifo",
    "MaxHeap",
    "MinHeap",
    "Prioritized",
    "Sampler",
    "Selection",
    "Uniform",
    "fast_paths",
    "register_sampler",
    "sampler_from_config",
]
