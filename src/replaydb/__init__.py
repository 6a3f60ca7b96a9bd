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

from replaydb.buffer import BatchExperience, ReplayBuffer
from replaydb.checkpoint import load_table, save_table
from replaydb.collect import Collector, populate, warm
from replaydb.dataset import Dataset, SampleInfo
from replaydb.errors import (
    CheckpointError,
    ClosedError,
    InvalidArgumentError,
    MissingDependencyError,
    NotEnoughDataError,
    RateLimiterTimeout,
    ReplayError,
    SpecMismatchError,
    WouldBlockForeverError,
)
from replaydb.manager import ReplayBufferManager
from replaydb.nstep import NStepTargets, nstep_returns
from replaydb.observer import StepObserver
from replaydb.rate_limiters import MinSize, Queue, RateLimiter, SampleToInsertRatio, Stack
from replaydb.samplers import Fifo, Lifo, MaxHeap, MinHeap, Prioritized, Sampler, Uniform
from replaydb.server import Client, Server
from replaydb.spec import Field, Spec
from replaydb.storage import Storage
from replaydb.sum_tree import SumTree
from replaydb.table import Sample, Table, TableInfo

__version__ = "0.1.0"

__all__ = [
    "BatchExperience",
    "CheckpointError",
    "Client",
    "ClosedError",
    "Collector",
    "Dataset",
    "Field",
    "Fifo",
    "InvalidArgumentError",
    "Lifo",
    "MaxHeap",
    "MinHeap",
    "MinSize",
    "MissingDependencyError",
    "NStepTargets",
    "NotEnoughDataError",
    "Prioritized",
    "Queue",
    "RateLimiter",
    "RateLimiterTimeout",
    "ReplayBuffer",
    "ReplayBufferManager",
    "ReplayError",
    "Sample",
    "SampleInfo",
    "SampleToInsertRatio",
    "Sampler",
    "Server",
    "Spec",
    "SpecMismatchError",
    "Stack",
    "StepObserver",
    "Storage",
    "SumTree",
    "Table",
    "TableInfo",
    "Uniform",
    "WouldBlockForeverError",
    "__version__",
    "load_table",
    "nstep_returns",
    "populate",
    "save_table",
    "warm",
]
