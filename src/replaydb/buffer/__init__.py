"""A Velora-compatible ``ReplayBuffer`` over a :class:`~replaydb.Table`.

Code written for Velora's buffer runs unchanged after changing the import::

    from replaydb import ReplayBuffer   # was: from velora.buffer import ReplayBuffer

and Velora's own agents (``NeuroFlow``, ``NeuroFlowCT``) run on it when it is swapped
in for ``velora.buffer.ReplayBuffer``: ``config()`` returns a :class:`BufferConfig`
that Velora's pydantic models accept, the six storage tensors are attributes,
``state_dict()`` is what ``safetensors.torch.save_file`` takes, and ``warm`` keeps
Velora's contract.

The buffer is a single-step table whose spec is Velora's transition, every field
float32 and packed, in this order, into one
``[capacity, 2*state_dim + action_dim + hidden_dim + 2]`` tensor, so a sample is
one gather and a single ``add`` one ``torch.cat`` into a staging row:

===============  ==================
``states``       ``(state_dim,)``
``actions``      ``(action_dim,)``
``next_states``  ``(state_dim,)``
``hiddens``      ``(hidden_dim,)``
``rewards``      ``(1,)``
``dones``        ``(1,)``
===============  ==================

``buffer.states`` and the other five attributes are live ``[capacity, dim]``
column views of that tensor (not contiguous; ``state_dict()`` returns dense copies).

Opt-in, for pixels: ``state_dim`` as a shape, ``state_dtype`` (e.g. ``torch.uint8``)
and ``frame_stack=k``. Such a buffer (``velora_layout`` false) stores ``states`` and
``next_states`` in that shape and dtype (the storage holds one group per dtype),
writes through :meth:`Table.extend` (checked casts; ``done`` ends the episode, which
frame stacks follow), and samples ``[B, *shape]`` or ``[B, k, *shape]``. Its files
keep Velora's keys with the stored dtype and shape; the metadata writes
``state_dim`` as a list and adds ``state_dtype`` and ``frame_stack``, so Velora
fails on it instead of misreading it.

Files are Velora's: ``<prefix>metadata.json`` and ``<prefix>state.safetensors`` (the
six tensors at full capacity). replaydb adds a format version, a SHA-256 of the
state file and the previous save's metadata to the JSON; Velora ignores extra keys,
and files move both ways. A buffer whose table is not the plain uniform one (a
:meth:`ReplayBuffer.prioritized` buffer, a table with ``max_times_sampled``...)
also writes ``<prefix>table-<sha>.safetensors`` with the table's item, sampler and
rate-limiter state, named in the JSON, so priorities, ``alpha``, ``beta`` and the
generator come back on load.

Crash safety of :meth:`ReplayBuffer.save`: every file is written under a temporary
name and fsynced; then the metadata is renamed into place, then the state file.
The new metadata carries the previous save's metadata under ``"previous"``, so a
kill between the two renames leaves a new metadata file beside the old state file,
which :meth:`ReplayBuffer.load` recognises by its SHA-256 and loads as the old
buffer. Temporary files of killed saves are removed by the next save or load.

:class:`StreamReplayBuffer` (``_sequential``) is the same ``add``/``sample`` for
consecutive transitions of env streams, each observation stored once in a ``T = 2``
sequence table (``next_states`` is the window's second step); it is not Velora's
layout and writes no Velora files.

The package's modules: ``_buffer`` (the :class:`ReplayBuffer` class), ``_records``
(:class:`BatchExperience`, :class:`BufferConfig`), ``_inputs`` (argument checks and
the conversion and per-thread staging of ``add``/``add_multi`` inputs), ``_persist``
(the ``metadata``/``config``/``state_dict``/``save``/``load`` methods, a mixin
``ReplayBuffer`` inherits) and ``_files`` (the Velora files: save, load, metadata
checks, the commit protocol).
"""

from replaydb.buffer._buffer import ReplayBuffer
from replaydb.buffer._files import FORMAT_VERSION as FORMAT_VERSION
from replaydb.buffer._files import VELORA_FORMAT as VELORA_FORMAT
from replaydb.buffer._inputs import check_device as check_device
from replaydb.buffer._records import BatchExperience, BufferConfig
from replaydb.buffer._sequential import StreamReplayBuffer

__all__ = ["BatchExperience", "BufferConfig", "ReplayBuffer", "StreamReplayBuffer"]
