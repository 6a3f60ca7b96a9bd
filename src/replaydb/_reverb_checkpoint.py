"""Read dm-reverb 0.14 checkpoints without TensorFlow, and import them as replaydb tables.

Reverb (Cassirer et al. 2021, arXiv 2102.04736) checkpoints a server into
``<root>/<RFC 3339 timestamp>/`` holding ``tables.tfrecord`` (one
``PriorityTableCheckpoint`` per table: settings, rate-limiter counters, signature),
``items.tfrecord`` (one ``PrioritizedItem`` per item: key, priority, times sampled,
and per column the chunk slices it spans), ``chunks.tfrecord`` (one ``ChunkData``
per chunk: compressed tensors, shared by items and tables) and, written last, an
empty ``DONE``. :mod:`replaydb._tfrecord` reads the files' records,
:mod:`replaydb._reverb_format` decodes them, this module turns them into plain
Python objects, and :mod:`replaydb._reverb_import` writes them as replaydb tables.

Stable interface (used by ``replaydb.reverb``'s ``DefaultCheckpointer`` and by
``replaydb import-reverb``):

* :func:`read_reverb_checkpoint` ``(path, *, verify_checksums=True) ->
  ReverbCheckpoint``: ``path`` is a checkpoint directory or a checkpointer root
  (then the newest complete checkpoint, by Reverb's rule: the name-sorted last
  subdirectory holding ``DONE``).
* :func:`latest_reverb_checkpoint` ``(root) -> Path | None``: that rule alone.
* :class:`ReverbCheckpoint` ``(path, tables)`` with ``.table(name)``;
  :class:`ReverbTable` ``(name,
  max_size, max_times_sampled, sampler, remover, rate_limiter, signature,
  signature_bytes, num_deleted_episodes, num_unique_samples, items)``;
  :class:`KeyDistribution` ``(kind, priority_exponent, min_heap, is_deterministic)``
  with ``kind`` in ``{"fifo", "lifo", "uniform", "prioritized", "heap"}``;
  :class:`RateLimiterState` (Reverb's four numbers and three counters);
  :class:`ReverbItem` ``(key, priority, times_sampled, inserted_at, columns)``:
  ``key`` the u64 key, ``inserted_at`` nanoseconds since the epoch or ``None``,
  ``columns`` numpy arrays in the table's column order, each the concatenation of
  its chunk slices along time (``[T, ...]``; a squeezed column has no time axis;
  strings are object arrays of ``bytes``), ``squeeze`` (one flag per column), and
  ``episode_id`` / ``start`` (the episode and the index of the item's first step in
  it, ``None`` when the chunks do not say). Items keep the checkpoint's order.
* The signature is decoded to dicts, lists, tuples and named tuples of
  :class:`ReverbTensorSpec` (or :class:`ReverbTypeSpec` for a ``tf.TypeSpec`` this
  reader does not interpret); :func:`signature_fields` flattens it to
  ``(dotted name, spec)`` pairs in ``tree.flatten`` order, the order of the columns.
* :func:`import_reverb_checkpoint` ``(src, out_dir, spec=None, table=None, *,
  capacity=None, force=False) -> ReverbImport(path, source, tables)`` writes a
  replaydb checkpoint directory (one :class:`ReverbImportedTable` per table, with
  ``notes`` on what replaydb does not hold); see its docstring and
  ``docs/reverb-checkpoints.md``.

Every malformed input raises :class:`~replaydb.errors.CheckpointError` naming the
file, record and field. Needs ``protobuf`` and ``cramjam``
(``pip install 'replaydb[reverb-import]'``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from replaydb._reverb_format import (
    ReverbTensorSpec,
    ReverbTypeSpec,
    decode_chunk_tensor,
    decode_structure,
    parse,
    signature_fields,
)
from replaydb._tfrecord import read_records
from replaydb.errors import CheckpointError, InvalidArgumentError

__all__ = [
    "KeyDistribution",
    "RateLimiterState",
    "ReverbCheckpoint",
    "ReverbImport",
    "ReverbImportedTable",
    "ReverbItem",
    "ReverbTable",
    "ReverbTensorSpec",
    "ReverbTypeSpec",
    "import_reverb_checkpoint",
    "latest_reverb_checkpoint",
    "read_reverb_checkpoint",
    "signature_fields",
]

_FILES = ("tables.tfrecord", "items.tfrecord", "chunks.tfrecord")
_DONE = "DONE"


# ---------------------------------------------------------------- data
@dataclass(frozen=True)
class KeyDistribution:
    """A Reverb selector (sampler or remover) as stored in a checkpoint.

    Attributes:
        kind: ``"fifo"``, ``"lifo"``, ``"uniform"``, ``"prioritized"`` or ``"heap"``.
        priority_exponent: The exponent of a ``"prioritized"`` selector, else ``None``.
        min_heap: ``True`` for ``MinHeap``, ``False`` for ``MaxHeap``, else ``None``.
        is_deterministic: Whether the selector's order is deterministic.
    """

    kind: str
    priority_exponent: float | None = None
    min_heap: bool | None = None
    is_deterministic: bool = False


@dataclass(frozen=True)
class RateLimiterState:
    """A Reverb rate limiter: its four numbers and its counters at checkpoint time."""

    samples_per_insert: float
    min_diff: float
    max_diff: float
    min_size_to_sample: int
    sample_count: int
    insert_count: int
    delete_count: int


@dataclass(frozen=True, eq=False)
class ReverbItem:
    """One item: its key, priority, times sampled, insertion time and columns.

    ``squeeze[c]`` tells whether column ``c`` was squeezed (stored without its time
    axis); it has one entry per column. ``episode_id`` and ``start`` place the item
    in its episode (the index of its first step), from the chunks' sequence
    ranges, when every column spans the same steps; else both are ``None``.
    """

    key: int
    priority: float
    times_sampled: int
    inserted_at: int | None
    columns: tuple[np.ndarray[Any, Any], ...]
    squeeze: tuple[bool, ...] = ()
    episode_id: int | None = None
    start: int | None = None


@dataclass(frozen=True, eq=False)
class ReverbTable:
    """One table of a checkpoint: settings, counters, signature and items."""

    name: str
    max_size: int
    max_times_sampled: int
    sampler: KeyDistribution
    remover: KeyDistribution
    rate_limiter: RateLimiterState
    signature: Any
    signature_bytes: bytes | None
    num_deleted_episodes: int
    num_unique_samples: int
    items: tuple[ReverbItem, ...]


@dataclass(frozen=True, eq=False)
class ReverbCheckpoint:
    """A whole checkpoint directory, read.

    Example:
        >>> ckpt = read_reverb_checkpoint("tests/data/reverb/checkpoint")
        >>> sorted(t.name for t in ckpt.tables)
        ['legacy', 'prioritized', 'trajectories']
    """

    path: Path
    tables: tuple[ReverbTable, ...]

    def table(self, name: str) -> ReverbTable:
        """The table called ``name``.

        Raises:
            InvalidArgumentError: If there is none, naming the tables there are.
        """
        for t in self.tables:
            if t.name == name:
                return t
        raise InvalidArgumentError(
            f"table {name!r} is not in {str(self.path)!r}; it holds {[t.name for t in self.tables]}"
        )


@dataclass(frozen=True)
class ReverbImportedTable:
    """How one Reverb table was imported.

    Attributes:
        name: The table's name (the same in both checkpoints).
        items: Items imported.
        capacity: Rows of the replaydb table (``items`` x ``sequence_length`` at least).
        sequence_length: Steps per item.
        fields: The replaydb field names, in column order.
        notes: What the replaydb checkpoint does not hold or holds differently.
    """

    name: str
    items: int
    capacity: int
    sequence_length: int
    fields: tuple[str, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class ReverbImport:
    """What :func:`import_reverb_checkpoint` wrote.

    Attributes:
        path: The new replaydb checkpoint directory (``<out>/ckpt-<timestamp>``).
        source: The Reverb checkpoint directory that was read.
        tables: One entry per imported table.
    """

    path: Path
    source: Path
    tables: tuple[ReverbImportedTable, ...]


# ---------------------------------------------------------------- reading
def latest_reverb_checkpoint(root: str | os.PathLike[str]) -> Path | None:
    """The checkpoint Reverb's ``DefaultCheckpointer`` would load from ``root``.

    Reverb's rule: the name-sorted last subdirectory that holds a ``DONE`` file
    (names are timestamps; checkpoints written under different UTC offsets do not
    sort by time, and Reverb does not correct that either).

    Returns:
        The directory, or ``None`` when ``root`` holds no complete checkpoint.

    Example:
        >>> latest_reverb_checkpoint("/no/such/dir") is None
        True
    """
    r = Path(root)
    if not r.is_dir():
        return None
    done = sorted(d.name for d in r.iterdir() if d.is_dir() and (d / _DONE).is_file())
    return r / done[-1] if done else None


def read_reverb_checkpoint(
    path: str | os.PathLike[str], *, verify_checksums: bool = True
) -> ReverbCheckpoint:
    """Read a dm-reverb checkpoint: every table's settings, signature and items.

    Args:
        path: A checkpoint directory (``tables.tfrecord``, ``items.tfrecord``,
            ``chunks.tfrecord``, ``DONE``) or a checkpointer root holding them.
        verify_checksums: Check every record's CRC32C.

    Returns:
        The checkpoint, tables in file order, items in checkpoint order.

    Raises:
        CheckpointError: If there is no complete checkpoint at ``path`` or a file is
            truncated, corrupt or uses a format this reader does not know.
        MissingDependencyError: If ``protobuf`` or ``cramjam`` is missing.

    Example:
        >>> ckpt = read_reverb_checkpoint("tests/data/reverb/checkpoint")
        >>> ckpt.table("trajectories").items[0].columns[1].shape
        (2, 8, 8, 3)
    """
    p = Path(path)
    if not p.is_dir():
        raise CheckpointError(f"no directory at {str(p)!r}; pass a Reverb checkpoint directory")
    if not (p / _FILES[0]).exists():
        latest = latest_reverb_checkpoint(p)
        if latest is None:
            raise CheckpointError(
                f"{str(p)!r} is neither a Reverb checkpoint (no {_FILES[0]}) nor a "
                "checkpointer root holding one with a DONE marker; pass the directory "
                "that Client.checkpoint() returned, or its parent"
            )
        p = latest
    if not (p / _DONE).is_file():
        raise CheckpointError(
            f"{str(p)!r} has no DONE marker: Reverb did not finish writing this checkpoint; "
            "use an older complete one"
        )
    raw = {}
    for name in _FILES:
        f = p / name
        if not f.is_file():
            raise CheckpointError(f"{str(f)!r} is missing; the checkpoint is incomplete")
        raw[name] = f.read_bytes()
    return _decode(p, raw, verify_checksums)


def _decode(p: Path, raw: Mapping[str, bytes], verify: bool) -> ReverbCheckpoint:
    tables: dict[str, dict[str, Any]] = {}
    for i, payload in read_records(raw[_FILES[0]], _FILES[0], verify=verify):
        tables_where = f"{_FILES[0]} record {i}"
        msg = parse("PriorityTableCheckpoint", payload, tables_where)
        tables_entry = _table_fields(msg, tables_where)
        if tables_entry["name"] in tables:
            raise CheckpointError(f"{tables_where}: table {tables_entry['name']!r} appears twice")
        tables[tables_entry["name"]] = tables_entry
    chunks: dict[int, Any] = {}
    for i, payload in read_records(raw[_FILES[2]], _FILES[2], verify=verify):
        msg = parse("ChunkData", payload, f"{_FILES[2]} record {i}")
        if msg.chunk_key in chunks:
            # Reverb may write a chunk once per table worker that holds it: the same
            # bytes. Different bytes under one key would make items ambiguous.
            first, other = chunks[msg.chunk_key]
            if other != msg:
                raise CheckpointError(
                    f"{_FILES[2]} record {i}: chunk_key {msg.chunk_key} appears again with "
                    f"different data (first in record {first})"
                )
            continue
        chunks[msg.chunk_key] = (i, msg)
    decoded: dict[int, list[np.ndarray[Any, Any]]] = {}
    for i, payload in read_records(raw[_FILES[1]], _FILES[1], verify=verify):
        where = f"{_FILES[1]} record {i}"
        msg = parse("PrioritizedItem", payload, where)
        if msg.table not in tables:
            raise CheckpointError(
                f"{where}: item {msg.key} names table {msg.table!r}, which tables.tfrecord "
                f"does not hold (it holds {sorted(tables)})"
            )
        if len(msg.deprecated_chunk_keys):
            raise CheckpointError(
                f"{where}: the item uses deprecated_chunk_keys (a checkpoint from Reverb "
                "before 0.2); load and re-save it with a newer Reverb first"
            )
        columns = tuple(
            _column(col, c, chunks, decoded, f"{where} (item {msg.key}) column {c}")
            for c, col in enumerate(msg.flat_trajectory.columns)
        )
        if not columns:
            raise CheckpointError(f"{where}: flat_trajectory has no columns")
        if msg.times_sampled < 0:
            raise CheckpointError(f"{where}: times_sampled {msg.times_sampled} is negative")
        inserted_at = None
        if msg.HasField("inserted_at"):
            ts = msg.inserted_at
            if not 0 <= ts.nanos < 1_000_000_000:
                raise CheckpointError(f"{where}: inserted_at.nanos {ts.nanos} is out of range")
            inserted_at = ts.seconds * 1_000_000_000 + ts.nanos
        tables[msg.table]["items"].append(
            ReverbItem(
                key=int(msg.key),
                priority=float(msg.priority),
                times_sampled=int(msg.times_sampled),
                inserted_at=inserted_at,
                columns=columns,
                squeeze=tuple(bool(col.squeeze) for col in msg.flat_trajectory.columns),
                **_episode_range(msg.flat_trajectory.columns, chunks, decoded),
            )
        )
    out = tuple(
        ReverbTable(**{**fields, "items": tuple(fields["items"])}) for fields in tables.values()
    )
    return ReverbCheckpoint(path=p, tables=out)


def _key_distribution(msg: Any, where: str) -> KeyDistribution:
    kind = msg.WhichOneof("distribution")
    if kind is None:
        raise CheckpointError(f"{where}: no selector is set (fifo, uniform, prioritized, ...)")
    exponent = float(msg.prioritized.priority_exponent) if kind == "prioritized" else None
    min_heap = bool(msg.heap.min_heap) if kind == "heap" else None
    return KeyDistribution(str(kind), exponent, min_heap, bool(msg.is_deterministic))


def _table_fields(msg: Any, where: str) -> dict[str, Any]:
    if msg.deprecated_items:
        raise CheckpointError(
            f"{where}: items are stored inside the table (deprecated_items, a checkpoint "
            "from Reverb before 0.2); load and re-save it with a newer Reverb first"
        )
    if not msg.table_name:
        raise CheckpointError(f"{where}: table_name is empty")
    if msg.max_size <= 0 or msg.max_times_sampled < 0:
        raise CheckpointError(
            f"{where}: max_size {msg.max_size} / max_times_sampled {msg.max_times_sampled} "
            "out of range"
        )
    lim = msg.rate_limiter
    signature = None
    signature_bytes = None
    if msg.HasField("signature"):
        signature_bytes = msg.signature.SerializeToString()
        signature = decode_structure(msg.signature, f"{where} signature")
    return {
        "name": str(msg.table_name),
        "max_size": int(msg.max_size),
        "max_times_sampled": int(msg.max_times_sampled),
        "sampler": _key_distribution(msg.sampler, f"{where} sampler"),
        "remover": _key_distribution(msg.remover, f"{where} remover"),
        "rate_limiter": RateLimiterState(
            samples_per_insert=float(lim.samples_per_insert),
            min_diff=float(lim.min_diff),
            max_diff=float(lim.max_diff),
            min_size_to_sample=int(lim.min_size_to_sample),
            sample_count=int(lim.sample_count),
            insert_count=int(lim.insert_count),
            delete_count=int(lim.delete_count),
        ),
        "signature": signature,
        "signature_bytes": signature_bytes,
        "num_deleted_episodes": int(msg.num_deleted_episodes),
        "num_unique_samples": int(msg.num_unique_samples),
        "items": [],
    }


def _chunk_tensors(
    key: int, chunks: Mapping[int, Any], decoded: dict[int, list[np.ndarray[Any, Any]]], where: str
) -> list[np.ndarray[Any, Any]]:
    if key in decoded:
        return decoded[key]
    if key not in chunks:
        raise CheckpointError(f"{where}: chunk_key {key} is not in chunks.tfrecord")
    index, chunk = chunks[key]
    cwhere = f"{_FILES[2]} record {index} (chunk {key})"
    if not chunk.HasField("data") and len(chunk.deprecated_data):
        raise CheckpointError(
            f"{cwhere}: the chunk uses deprecated_data (uncompressed tensors of a Reverb "
            "before 0.2); load and re-save it with a newer Reverb first"
        )
    protos = chunk.data.tensors
    if chunk.data_tensors_len != len(protos):
        raise CheckpointError(
            f"{cwhere}: data_tensors_len is {chunk.data_tensors_len} but the chunk holds "
            f"{len(protos)} tensors"
        )
    decoded[key] = [
        decode_chunk_tensor(t, bool(chunk.delta_encoded), f"{cwhere} tensor {j}")
        for j, t in enumerate(protos)
    ]
    return decoded[key]


def _column(
    col: Any,
    c: int,
    chunks: Mapping[int, Any],
    decoded: dict[int, list[np.ndarray[Any, Any]]],
    where: str,
) -> np.ndarray[Any, Any]:
    parts: list[np.ndarray[Any, Any]] = []
    if not col.chunk_slices:
        raise CheckpointError(f"{where}: the column has no chunk slices")
    for s, sl in enumerate(col.chunk_slices):
        swhere = f"{where} slice {s}"
        tensors = _chunk_tensors(sl.chunk_key, chunks, decoded, swhere)
        if not 0 <= sl.index < len(tensors):
            raise CheckpointError(
                f"{swhere}: index {sl.index} but chunk {sl.chunk_key} holds {len(tensors)} tensors"
            )
        t = tensors[sl.index]
        if t.ndim == 0 or sl.offset < 0 or sl.length < 1 or sl.offset + sl.length > t.shape[0]:
            raise CheckpointError(
                f"{swhere}: offset {sl.offset} length {sl.length} is outside chunk "
                f"{sl.chunk_key}'s tensor of shape {list(t.shape)}"
            )
        if parts and (t.dtype != parts[0].dtype or t.shape[1:] != parts[0].shape[1:]):
            raise CheckpointError(
                f"{swhere}: {t.dtype} {list(t.shape[1:])} does not match the column's first "
                f"slice ({parts[0].dtype} {list(parts[0].shape[1:])})"
            )
        parts.append(t[sl.offset : sl.offset + sl.length])
    out = parts[0].copy() if len(parts) == 1 else np.concatenate(parts)
    if col.squeeze:
        if out.shape[0] != 1:
            raise CheckpointError(
                f"{where}: squeeze is set but the column spans {out.shape[0]} steps"
            )
        out = out.reshape(out.shape[1:])
    return out


def _episode_range(
    columns: Any, chunks: Mapping[int, Any], decoded: Mapping[int, list[np.ndarray[Any, Any]]]
) -> dict[str, int | None]:
    """``episode_id`` and ``start`` of an item whose columns all span the same steps.

    From the chunks' ``sequence_range`` (step indices within the episode); ``None``
    for both when a chunk lacks one, is sparse, disagrees with its tensor's length,
    or the columns span different steps.
    """
    unknown: dict[str, int | None] = {"episode_id": None, "start": None}
    found: tuple[int, int] | None = None
    for col in columns:
        ep = first = end = None
        for sl in col.chunk_slices:
            chunk = chunks[sl.chunk_key][1]
            sr = chunk.sequence_range
            span = decoded[sl.chunk_key][sl.index].shape[0]
            if not chunk.HasField("sequence_range") or sr.sparse or sr.end - sr.start + 1 != span:
                return unknown
            begin = sr.start + sl.offset
            if ep is None:
                ep, first = sr.episode_id, begin
            elif sr.episode_id != ep or begin != end:
                return unknown
            end = begin + sl.length
        assert ep is not None
        assert first is not None
        if found is not None and found != (ep, first):
            return unknown
        found = (ep, first)
    return {"episode_id": found[0], "start": found[1]} if found else unknown


# ---------------------------------------------------------------- import
def import_reverb_checkpoint(
    src: str | os.PathLike[str] | ReverbCheckpoint,
    out_dir: str | os.PathLike[str],
    spec: Any = None,
    table: str | Sequence[str] | None = None,
    *,
    capacity: int | None = None,
    force: bool = False,
) -> ReverbImport:
    """Write a Reverb checkpoint's tables as a replaydb checkpoint directory.

    Each Reverb item becomes one replaydb item with the same data, priority and
    times sampled; the table gets ``sequence_length`` = the items' length ``T``.
    Items that are consecutive windows of one episode (what TF-Agents' observers
    write) become one run of steps, each step stored once, so the table serves
    exactly those windows; other items become runs of their own ``T`` steps. Runs
    are written in insertion order (``inserted_at``) of their first item, and the
    table holds ``max(max_size, rows needed)`` rows. The sampler and rate limiter
    (with its counters) are mapped to
    replaydb's; ``max_times_sampled`` is kept. What cannot be held (Reverb keys,
    non-Fifo removers, ...) is listed in the result's ``notes`` and in the manifest
    under ``extra.reverb_import``. With one table, the manifest also holds the data
    spec for :class:`~replaydb.ReplayBufferManager`, which then loads the directory
    directly (``ReplayBufferManager(data_spec, capacity, out_dir, sequence_length)
    .load_replay_buffer()``); every table loads with
    :func:`replaydb.checkpoint.read_checkpoint`.

    Args:
        src: A Reverb checkpoint directory or checkpointer root, or a checkpoint read
            with :func:`read_reverb_checkpoint`.
        out_dir: The replaydb checkpoint root to create (must be new or empty).
        spec: The fields of one step (a :class:`~replaydb.Spec`, a mapping, or a JSON
            file in :meth:`Spec.to_json` form), in column order: ``tree.flatten``
            order of the data spec (dict keys sorted, named tuples in field order,
            empty leaves such as ``policy_info=()`` absent). Default: names from the
            table's signature, else ``column_0`` ... ``column_{n-1}``.
        table: The table (or tables) to import; default all. A spec needs one table.
        capacity: Rows of the replaydb table (default ``max(max_size, rows needed)``).
        force: Write into a non-empty ``out_dir`` (replaydb checkpoints already
            there are replaced, as :func:`~replaydb.checkpoint.write_checkpoint` does
            with ``keep=1``; other files are left alone).

    Returns:
        Where the checkpoint went and, per table, what was imported.

    Raises:
        CheckpointError: If the Reverb checkpoint is unreadable or ``out_dir`` is not
            new.
        SpecMismatchError: If the items do not fit one replaydb spec (columns of
            strings or uint64, items of different lengths) or the spec.
        InvalidArgumentError: For an unknown table or settings replaydb cannot hold.

    Example:
        >>> out = import_reverb_checkpoint("starter", "native")  # doctest: +SKIP
        >>> out.tables[0].sequence_length  # doctest: +SKIP
        2
    """
    from replaydb._reverb_import import import_checkpoint

    return import_checkpoint(src, out_dir, spec, table, capacity=capacity, force=force)
