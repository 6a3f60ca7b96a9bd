"""ReplayBufferManager: the Reverb-style replay workflow of TF-Agents projects.

TF-Agents trainers wrap DeepMind Reverb (Cassirer et al. 2021, arXiv 2102.04736) in
a small manager: a table of ``sequence_length``-step windows in a server, an
observer that writes environment steps, datasets of ``[B, num_steps, ...]``
batches, and a checkpoint directory. :class:`ReplayBufferManager` gives the same
calls on a replaydb :class:`~replaydb.table.Table` hosted by a
:class:`~replaydb.server.Server` (in-process, or on Ray with ``backend="ray"``)::

    manager = ReplayBufferManager(data_spec, capacity, checkpoint_dir, sequence_length=2)
    replay_buffer, observer = manager.create_replay_buffer()   # or load_replay_buffer()
    observer(step)                                             # in the collect loop
    dataset = replay_buffer.as_dataset(64, num_steps=2, num_parallel_calls=3).prefetch(3)
    replay_buffer.py_client.checkpoint()

Items and frames
----------------
The table stores *steps*; an *item* is a window of ``sequence_length`` consecutive
steps of one episode (stride 1), so an episode of ``L`` steps gives
``L - sequence_length + 1`` items. :meth:`ReplayBufferManager.num_frames` counts
items, as Reverb does.

Episode boundaries
------------------
For trajectory-shaped steps (a ``next_step_type`` field), the rule is TF-Agents'
``ReverbAddTrajectoryObserver``'s: an episode ends after its boundary step
(``step_type`` LAST), so the terminal transition is stored too (for FIRST, MID,
MID(next_step_type=LAST), boundary: windows (0, 1), (1, 2), (2, 3)); a step whose
``step_type`` is FIRST (0) always starts a new episode. Otherwise the episode ends
after a step whose ``terminated``/``truncated``/``done`` field is true, or when the
observer is called with ``done=True``.

Starter buffers of ``replaydb populate`` (the *steps* layout of
:mod:`replaydb.collect`) load with a TF-Agents ``Trajectory`` spec too: the missing
``next_step_type`` and ``discount`` are derived from ``step_type``, ``terminated``
and ``truncated`` (see :meth:`ReplayBufferManager.load_replay_buffer`).

Checkpoints
-----------
``<checkpoint_dir>/ckpt-<20-digit timestamp>/`` as written by
:func:`replaydb.checkpoint.write_checkpoint`: the table ``replay_buffer`` in
safetensors, a ``manifest.json`` (format version, checksums, and under
``extra.manager`` the data-spec nest as JSON), and a ``COMPLETE`` marker written
last. Loading takes the newest complete one; the newest ``keep`` are kept and only
directories replaydb wrote are ever deleted.
"""

from replaydb.manager._buffer import TABLE_NAME as TABLE_NAME
from replaydb.manager._buffer import ManagedReplayBuffer
from replaydb.manager._manager import MANAGER_FORMAT as MANAGER_FORMAT
from replaydb.manager._manager import STALE_S as STALE_S
from replaydb.manager._manager import ReplayBufferManager
from replaydb.manager._observer import FIRST as FIRST
from replaydb.manager._observer import LAST as LAST
from replaydb.manager._observer import MID as MID
from replaydb.manager._observer import StepObserver

__all__ = ["ManagedReplayBuffer", "ReplayBufferManager", "StepObserver"]
