"""replaydb: experience replay for reinforcement learning.

Preallocated tables of tensors on CPU or GPU with uniform, prioritized, queue and
sequence sampling and Reverb-style rate limiters; a Velora-compatible
:class:`ReplayBuffer`; crash-safe checkpoints in safetensors + JSON.

Example:
    >>> import torch, replaydb
    >>> buffer = replaydb.ReplayBuffer(1000, state_dim=4, action_dim=1, hidden_dim=0)
    >>> s = torch.zeros(8, 4)
    >>> buffer.add_multi(s, torch.zeros(8), torch.ones(8), s, torch.zeros(8))
    >>> buffer.sample(4).rewards.shape
    torch.Size([4, 1])
"""

import importlib
import warnings
from typing import Any

from replaydb import errors, rate_limiters, samplers
from replaydb.buffer import BatchExperience, ReplayBuffer
from replaydb.checkpoint import load_table, save_table
from replaydb.collect import Collector, populate, warm
from replaydb.dataset import Dataset, SampleInfo
from replaydb.manager import ReplayBufferManager, StepObserver
from replaydb.nstep import NStepTargets, nstep_returns
from replaydb.server import Client, Server
from replaydb.spec import Field, Spec
from replaydb.table import Sample, Table, TableInfo

__version__ = "0.1.0"

__all__ = [
    "BatchExperience",
    "Client",
    "Collector",
    "Dataset",
    "Field",
    "NStepTargets",
    "ReplayBuffer",
    "ReplayBufferManager",
    "Sample",
    "SampleInfo",
    "Server",
    "Spec",
    "StepObserver",
    "Table",
    "TableInfo",
    "__version__",
    "errors",
    "load_table",
    "nstep_returns",
    "populate",
    "rate_limiters",
    "samplers",
    "save_table",
    "warm",
]

# Names that were top-level in 0.1 and now live in their family's module, as in
# Reverb (``reverb.selectors``, ``reverb.rate_limiters``). They still resolve, with a
# DeprecationWarning, until the next release.
_MOVED = {
    **dict.fromkeys(
        (
            "CheckpointError",
            "ClosedError",
            "InvalidArgumentError",
            "MissingDependencyError",
            "NotEnoughDataError",
            "RateLimiterTimeout",
            "ReplayError",
            "SpecMismatchError",
            "WouldBlockForeverError",
        ),
        "errors",
    ),
    **dict.fromkeys(
        ("MinSize", "Queue", "RateLimiter", "SampleToInsertRatio", "Stack"), "rate_limiters"
    ),
    **dict.fromkeys(
        ("Fifo", "Lifo", "MaxHeap", "MinHeap", "Prioritized", "Sampler", "Uniform"), "samplers"
    ),
    "Storage": "storage",
    "SumTree": "sum_tree",
}


def __getattr__(name: str) -> Any:
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module 'replaydb' has no attribute {name!r}")
    warnings.warn(
        f"replaydb.{name} moved to replaydb.{module}.{name}; the old name goes away in the "
        f"next release (write `from replaydb.{module} import {name}`)",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(f"replaydb.{module}"), name)
