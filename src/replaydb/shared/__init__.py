"""Tables shared between processes on one machine, without Ray.

One process *owns* a table: its sampler, rate limiter and item bookkeeping stay
there, so every process sees the same semantics (prioritized probabilities,
``max_times_sampled``, rate limits). The steps live in memory that every
process maps: the files of a disk-backed table (``Table(spec, capacity,
path=DIR)``) or of a :func:`memory_table` (``/dev/shm``). :meth:`Table.share
<replaydb.table.Table.share>` starts a small request server in the owner (a
daemon thread on an ``AF_UNIX`` socket in a private directory, with a random
key) and returns a :class:`SharedTable`: a handle that pickles by address and
reconnects in the process that unpickles it (a DataLoader worker, forked or
spawned, or a ``multiprocessing`` actor).

Sampling from another process is two steps: the owner draws
(:meth:`Table.sample_rows <replaydb.table.Table.sample_rows>`, a few hundred
bytes of rows, keys and probabilities back), then the caller copies the rows
out of the shared storage itself, so N processes gather in parallel. A write
records its intent in the storage's journal before touching any row; after the
copy the caller reads the journal and draws again any item whose rows the
ring reached meanwhile (a seqlock per item). Writes go through the owner (one
writer). A consuming table (a queue or stack) is sampled whole in the owner,
since a consumed item's row may be reused at once.

In a ``DataLoader`` worker the caller gathers into a reused shared-memory
*slot* and the batch travels to the main process by reference (``_batches``);
a worker's request also brings the draws of its next few batches where that
changes nothing it could see (a uniform table without a sample-side rate limit).

Layout: ``_owner`` (server, :func:`memory_table`), ``_handle``
(:class:`SharedTable`), ``_wire`` (the messages), ``_batches`` (the slots).
"""

from __future__ import annotations

from replaydb._shared_rows import RowSample
from replaydb.shared._handle import SharedTable
from replaydb.shared._owner import memory_table

__all__ = ["RowSample", "SharedTable", "memory_table"]
