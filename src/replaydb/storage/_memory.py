"""Storage: a ring of preallocated step rows on one device, with episode links.

Layout
------
Fields are packed by dtype: all float32 fields of a spec share one ``[capacity, W]``
tensor, each field a column slice of it viewed as ``[capacity, *shape]``. A sample
is then one ``index_select`` per dtype group (one in the common all-float case)
rather than one per field, which is the floor a gather can reach.

Beside the data, five ``int64`` columns describe every row:

========  ============================================================
``key``   global index of the step held in the row (``-1``: empty)
``prev``  key of the previous step of the same episode (``-1``: none)
``next``  key of the next step of the same episode (``-1``: none yet)
``stream`` which writer (environment of a vector env, or actor) wrote it
``end``   ``0`` mid-episode, ``1`` terminated, ``2`` truncated after this step
========  ============================================================

Keys grow by one per step written; the row of key ``k`` is ``k % capacity`` and
the key is *live* while ``key[k % capacity] == k``. The ring overwrites oldest
first, so when the first step of a window is live, every later step of it is too.
Windows of consecutive steps are gathered by following ``next`` links, so many
streams can write interleaved and no step is stored twice.

Device paths
------------
The hot methods (writes, link walks, windows, gathers) call the storage's
:attr:`Storage.engine`, one object per device kind picked at construction
(:mod:`replaydb.storage._rings`): torch ops on any device, or numpy views and
compiled loops on CPU.

Memory preflight and disk
-------------------------
A storage computes its size (:meth:`Storage.required_nbytes`: ``capacity * (step
bytes + 40)``) before allocating and checks it against the device's free memory
(:mod:`replaydb.storage._preflight`). With ``path=DIR`` each dtype block lives in a
memory-mapped file under ``DIR`` (:mod:`replaydb.storage._disk`): the same
tensors, so writes and samples run the same code, but the data is checked against
the free disk space instead of RAM, and only the five bookkeeping columns take RAM.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from replaydb import _links
from replaydb._devices import resolve_device
from replaydb._links import MAX_STREAMS
from replaydb.errors import InvalidArgumentError
from replaydb.spec import Spec, dtype_name
from replaydb.storage import _disk, _rings
from replaydb.storage._preflight import NO_DISK_STORAGE, check_disk, check_memory

__all__ = ["AppendResult", "Storage"]


@dataclass(frozen=True)
class AppendResult:
    """What :meth:`Storage.append` did.

    Attributes:
        keys: The keys given to the stored steps, in input order.
        positions: Each stored step's index within its episode (``None`` when the
            storage does not track links).
        evicted_rows: Rows that held a live step before this write overwrote them.
        first_key: Key of the first stored step.
    """

    keys: torch.Tensor
    positions: torch.Tensor | None
    evicted_rows: torch.Tensor
    first_key: int


class Storage:
    """A ring of ``capacity`` preallocated rows, one column slice per field.

    Args:
        spec: The fields to store.
        capacity: Number of rows (steps).
        device: Where the tensors live (default CPU).
        links: Whether to track episode links (needed for windows longer than one).
        path: A directory to keep the data in, as memory-mapped files (CPU only);
            ``None`` keeps it in memory.

    Before allocating, the storage computes its size (:meth:`required_nbytes`) and
    checks it against the device's free memory (:func:`check_memory`); with
    ``path``, the data is checked against the free disk space (:func:`check_disk`).

    Raises:
        InvalidArgumentError: If ``capacity`` is not a positive int.
        DeviceError: If ``device`` is not usable here.
        InsufficientMemoryError: If the storage would not fit in free memory (or disk).
        CheckpointError: If ``path`` holds data files of another size.

    Example:
        >>> s = Storage(Spec({"x": (2,)}), capacity=4)
        >>> s.append({"x": torch.ones(3, 2)}).keys.tolist()
        [0, 1, 2]
    """

    def __init__(
        self,
        spec: Spec,
        capacity: int,
        device: torch.device | str | None = None,
        *,
        links: bool = False,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int | np.integer):
            raise InvalidArgumentError(
                f"capacity must be a positive int, got {capacity!r} ({type(capacity).__name__})"
            )
        if capacity <= 0:
            raise InvalidArgumentError(f"capacity must be a positive int, got {capacity}")
        self.device = resolve_device(device)
        if self.required_nbytes(spec, int(capacity)) >= 2**63:
            raise InvalidArgumentError(
                f"capacity {int(capacity)} is too large: {int(capacity)} rows of "
                f"{spec.step_nbytes} bytes exceed what one tensor can address (2**63 bytes); "
                "use a smaller capacity"
            )
        if path is not None:
            _disk.check_device(self.device, path)
            check_disk(
                _disk.missing_nbytes(path, spec, int(capacity)),
                path,
                f"a disk-backed storage of {int(capacity)} rows of {spec.step_nbytes} bytes",
            )
        check_memory(
            self.required_nbytes(spec, int(capacity), on_disk=path is not None),
            self.device,
            f"a storage of {int(capacity)} rows of {spec.step_nbytes} bytes",
            f"use a smaller capacity or smaller fields; {NO_DISK_STORAGE}",
        )
        self.spec = spec
        self.capacity = int(capacity)
        self.links = links
        self.total = 0  # keys handed out so far
        cap = self.capacity

        # Group fields by dtype into packed tensors.
        widths: dict[torch.dtype, int] = {}
        self._where: dict[str, tuple[torch.dtype, int, int]] = {}
        for name, field in spec.items():
            start = widths.get(field.dtype, 0)
            widths[field.dtype] = start + field.numel
            self._where[name] = (field.dtype, start, start + field.numel)
        #: The memory-mapped files of a disk-backed storage (``None`` in memory).
        self.files = _disk.DataFiles(path, widths, cap) if path is not None else None
        self.groups: dict[torch.dtype, torch.Tensor] = (
            self.files.groups
            if self.files is not None
            else {
                dt: torch.zeros((cap, w), dtype=dt, device=self.device) for dt, w in widths.items()
            }
        )
        self.fields: dict[str, torch.Tensor] = {
            name: self.groups[dt][:, a:b].view(cap, *spec[name].shape)
            for name, (dt, a, b) in self._where.items()
        }
        # Per group: field names, widths and shapes, in column order.
        self._split: dict[torch.dtype, tuple[list[str], list[int], list[tuple[int, ...]]]] = {
            dt: ([], [], []) for dt in widths
        }
        for name, (dt, a, b) in self._where.items():
            names, ws, shapes = self._split[dt]
            names.append(name)
            ws.append(b - a)
            shapes.append(spec[name].shape)
        # Per group: (name, first column, end column, shape) of each field.
        self._columns: dict[torch.dtype, list[tuple[str, int, int, tuple[int, ...]]]] = {
            dt: [] for dt in widths
        }
        for name, (dt, a, b) in self._where.items():
            self._columns[dt].append((name, a, b, spec[name].shape))
        # Groups whose fields are all vectors: a 1-D gather's split parts are the fields.
        self._vector_groups = {
            dt for dt, (_, _, shapes) in self._split.items() if all(len(sh) == 1 for sh in shapes)
        }
        self.key = torch.full((cap,), -1, dtype=torch.int64, device=self.device)
        self.prev = torch.full((cap,), -1, dtype=torch.int64, device=self.device)
        self.next = torch.full((cap,), -1, dtype=torch.int64, device=self.device)
        self.stream = torch.zeros((cap,), dtype=torch.int64, device=self.device)
        self.end = torch.zeros((cap,), dtype=torch.int64, device=self.device)
        # Per-stream episode state, grown on demand.
        self._last_key = torch.full((8,), -1, dtype=torch.int64, device=self.device)
        self._ep_len = torch.zeros((8,), dtype=torch.int64, device=self.device)
        #: The device path (:mod:`replaydb.storage._rings`), chosen once here: the hot
        #: methods below call it without deciding again.
        self.engine: _rings.Ring = _rings.ring_for(self)
        host = self.engine if isinstance(self.engine, _rings.HostRing) else None
        # Views the table's own CPU paths read (``None`` on the torch path).
        self._np = host.fields if host is not None else None

    # ------------------------------------------------------------------ sizes
    @staticmethod
    def required_nbytes(spec: Spec, capacity: int, *, on_disk: bool = False) -> int:
        """Bytes a storage of ``capacity`` rows of ``spec`` allocates (its :attr:`nbytes`).

        With ``on_disk``, the bytes it allocates in RAM when its data is on disk
        (the five bookkeeping columns).

        Example:
            >>> Storage.required_nbytes(Spec({"x": ((84, 84), "uint8")}), 1000)
            7096000
        """
        return capacity * ((0 if on_disk else spec.step_nbytes) + 5 * 8)

    @property
    def num_rows(self) -> int:
        """Rows that hold a step (the ring fills rows ``0..num_rows-1`` first)."""
        return min(self.total, self.capacity)

    @property
    def nbytes(self) -> int:
        """Bytes held by the data and bookkeeping tensors."""
        data = sum(t.numel() * t.element_size() for t in self.groups.values())
        return data + 5 * self.capacity * 8

    def is_live(self, keys: torch.Tensor) -> torch.Tensor:
        """Return a bool mask: which keys still hold their step."""
        return (keys >= 0) & (self.key.index_select(0, keys.clamp(min=0) % self.capacity) == keys)

    # ----------------------------------------------------------------- writes
    def append(
        self,
        data: Mapping[str, torch.Tensor],
        streams: torch.Tensor | None = None,
        ends: torch.Tensor | None = None,
        *,
        keys: torch.Tensor | None = None,
    ) -> AppendResult:
        """Write a batch of steps at the ring's cursor.

        Args:
            data: ``name -> [N, *shape]`` tensors already checked against the spec.
            streams: ``[N]`` int64 stream ids (default all 0).
            ends: ``[N]`` int64 end codes (0, 1 terminated, 2 truncated; default 0).
            keys: ``[N]`` increasing keys ``>= total`` whose rows are distinct, to
                write into chosen free rows instead of at the cursor (keys skipped
                over are never used). Only for storages without links: a table
                that must not overwrite unconsumed items uses this.

        Returns:
            The keys written, episode positions and the rows evicted.

        If ``N > capacity`` only the newest ``capacity`` steps are kept (the older
        ones are counted as written and immediately overwritten).
        """
        first = next(iter(data.values()))
        n = int(first.shape[0])
        dev = self.device
        if streams is None:
            streams = torch.zeros(n, dtype=torch.int64, device=dev)
        if ends is None:
            ends = torch.zeros(n, dtype=torch.int64, device=dev)
        if n == 0:
            empty = torch.empty(0, dtype=torch.int64, device=dev)
            return AppendResult(empty, empty if self.links else None, empty, self.total)
        if self.links:
            # Check stream ids before anything is written, so a rejected append leaves no trace.
            lo, hi = torch.stack(torch.aminmax(streams)).tolist()
            if lo < 0:
                raise InvalidArgumentError(
                    f"stream ids must be in [0, {MAX_STREAMS}), got {lo}; "
                    "number your environments or actors from 0"
                )
            _links.grow_streams(self, hi)
        if keys is not None:
            return self._append_at(data, keys, streams, ends)
        if n > self.capacity:
            skip = n - self.capacity
            data = {k: v[skip:] for k, v in data.items()}
            if self.links:
                _links.advance_streams(self, streams[:skip], ends[:skip])
            streams, ends = streams[skip:], ends[skip:]
            self.total += skip
            n = self.capacity
        start = self.total
        if self.files is not None:
            self.files.will_write(start + n)
        row0 = start % self.capacity
        keys = torch.arange(start, start + n, dtype=torch.int64, device=dev)
        evicted = self._evicted(row0, n)
        self.engine.write(row0, n, data, keys, streams, ends)
        self.total += n
        positions = None
        if self.links:
            positions = _links.link(self, keys, streams, ends)
        return AppendResult(keys=keys, positions=positions, evicted_rows=evicted, first_key=start)

    def _append_at(
        self,
        data: Mapping[str, torch.Tensor],
        keys: torch.Tensor,
        streams: torch.Tensor,
        ends: torch.Tensor,
    ) -> AppendResult:
        n = int(keys.numel())
        if self.links:
            raise InvalidArgumentError(
                "append(keys=...) is only for storages without episode links; "
                "sequence storages must write at the cursor"
            )
        if n == 0:
            empty = torch.empty(0, dtype=torch.int64, device=self.device)
            return AppendResult(
                keys=empty, positions=None, evicted_rows=empty, first_key=self.total
            )
        k = keys.to(self.device, torch.int64)
        if (
            int(k[0]) < self.total
            or n > self.capacity
            or int(k[-1]) - int(k[0]) >= self.capacity
            or (n > 1 and bool((k[1:] <= k[:-1]).any()))
        ):
            raise InvalidArgumentError(
                f"keys must increase, start at or after total ({self.total}) and span less "
                f"than capacity ({self.capacity}), got {k.tolist()[:8]}..."
            )
        rows = k % self.capacity
        evicted = rows[self.key.index_select(0, rows) >= 0]
        if self.files is not None:
            self.files.will_write(int(k[-1]) + 1)
        for name, value in data.items():
            self.fields[name].index_copy_(0, rows, value)
        self.key.index_copy_(0, rows, k)
        self.stream.index_copy_(0, rows, streams)
        self.end.index_copy_(0, rows, ends)
        self.total = int(k[-1]) + 1
        return AppendResult(keys=k, positions=None, evicted_rows=evicted, first_key=int(k[0]))

    def append_numpy(self, values: Mapping[Any, Any], n: int, end: Any = 0, stream: int = 0) -> int:
        """Write ``n`` steps of one stream from numpy-like values (no links).

        The fast path under the Velora buffer: on CPU through numpy views (on the
        torch path each value is copied to the device, correct but not fast).
        ``values`` maps field names, or a dtype for a whole packed group row, to data
        that broadcasts to ``(n, *shape)`` (numpy rules); ``n <= capacity``. The
        caller checks shapes first, since a failed assignment part-way would leave a
        torn row.
        """
        assert not self.links
        if self.files is not None:
            self.files.will_write(self.total + n)
        row0 = self.engine.append_numpy(values, n, end, stream, self.total)
        self.total += n
        return row0

    def seek(self, total: int) -> None:
        """Set the key of the next step of an empty storage.

        Rows then fill from ``total % capacity``.
        """
        if self.total != 0:
            raise InvalidArgumentError("seek is only allowed on an empty storage")
        self.total = total

    def _evicted(self, row0: int, n: int) -> torch.Tensor:
        if self.total + n <= self.capacity:
            # Nothing was written to these rows yet.
            return torch.empty(0, dtype=torch.int64, device=self.device)
        rows = (torch.arange(n, device=self.device) + row0) % self.capacity
        return rows[self.key.index_select(0, rows) >= 0]

    def preview_positions(self, streams: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        """Episode positions the next :meth:`append` of these steps would give (no write).

        Exact unless that append overwrites a stream's previous step itself (then
        the append starts a new episode where the preview continues one).
        """
        n = streams.numel()
        if n == 0:
            return torch.empty(0, dtype=torch.int64, device=self.device)
        _links.grow_streams(self, int(streams.max()))
        keys = torch.arange(self.total, self.total + n, dtype=torch.int64, device=self.device)
        order, *_, pos = _links.positions(self, keys, streams, ends)
        out = torch.empty_like(pos)
        out[order] = pos
        return out

    def end_streams(self, streams: torch.Tensor) -> None:
        """Close the open episode of each stream (the next step starts a new one)."""
        if streams.numel() == 0:
            return
        _links.grow_streams(self, int(streams.max()))
        self._last_key[streams] = -1
        self._ep_len[streams] = 0

    def walk(self, keys: torch.Tensor, steps: int, column: str = "prev") -> torch.Tensor:
        """Follow ``prev`` or ``next`` links ``steps`` times; ``-1`` where a link is broken."""
        return self.engine.walk(keys, steps, column)

    # ------------------------------------------------------------------ reads
    def window_rows(self, start_keys: torch.Tensor, length: int) -> torch.Tensor:
        """Return ``[B, length]`` rows of the windows starting at ``start_keys``.

        Positions past the end of a window's episode (only possible for padded
        windows) repeat the last valid row; see :meth:`window_mask`.

        On CPU, windows whose steps lie at a constant key stride (one stream, or a
        vector env writing every stream each step) are found in one shot: guess
        ``start + j * stride`` and check every link at once; only windows that fail
        the check follow ``next`` links step by step.
        """
        if length == 1:
            return (start_keys % self.capacity).unsqueeze(1)
        return self.engine.window_rows(start_keys, length)

    def windows(self, start_keys: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the ``[B, length]`` rows of :meth:`window_rows` and their end codes.

        Example:
            >>> s = Storage(Spec({"x": ()}), 4, links=True)
            >>> _ = s.append({"x": torch.zeros(3)}, ends=torch.tensor([0, 0, 1]))
            >>> [t.tolist() for t in s.windows(torch.tensor([1]), 2)]
            [[[1, 2]], [[0, 1]]]
        """
        return self.engine.windows(start_keys, length)

    def _follow_links(self, start_keys: torch.Tensor, length: int) -> torch.Tensor:
        """Window rows by following ``next`` links (see ``_links.follow_links``)."""
        return _links.follow_links(self, start_keys, length)

    def window_mask(self, rows: torch.Tensor) -> torch.Tensor:
        """Return the ``[B, length]`` bool mask of :meth:`window_rows` output.

        ``False`` marks positions past the end of a window's episode (where
        :meth:`window_rows` repeats the last valid row).
        """
        fresh = torch.ones(rows.shape, dtype=torch.bool, device=rows.device)
        fresh[:, 1:] = rows[:, 1:] != rows[:, :-1]
        return torch.cummin(fresh.to(torch.uint8), dim=1).values.bool()

    def gather(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Gather ``rows`` (any shape) of every field: ``[*rows.shape, *field.shape]``.

        One gather per dtype group into a fresh packed block; each field is a view
        of its columns. On CPU the gather and the views are numpy's (each torch
        call costs microseconds of dispatch, more than the copy of a batch).
        """
        return self.engine.gather(rows)

    # ------------------------------------------------------------- lifecycle
    def reset(self) -> None:
        """Forget every step (the tensors stay allocated)."""
        if self.files is not None:
            self.files.will_reset()
        for g in self.groups.values():
            g.zero_()
        self._reset_rows()

    def _reset_rows(self) -> None:
        self.total = 0
        for col in (self.key, self.prev, self.next):
            col.fill_(-1)
        self.stream.zero_()
        self.end.zero_()
        self._last_key.fill_(-1)
        self._ep_len.zero_()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors of the stored rows (``0..num_rows-1``) and per-stream state, on CPU."""
        n = self.num_rows
        out = {f"group.{dtype_name(dt)}": g[:n].cpu() for dt, g in self.groups.items()}
        for name in ("key", "prev", "next", "stream", "end"):
            out[f"meta.{name}"] = getattr(self, name)[:n].cpu()
        out["streams.last_key"] = self._last_key.cpu()
        out["streams.ep_len"] = self._ep_len.cpu()
        out["total"] = torch.tensor([self.total], dtype=torch.int64)
        return out

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict` output (checked by the caller for shapes).

        Without the ``group.*`` tensors only the bookkeeping is restored and the
        data is left as it is (how a disk-backed storage reopens its files).
        """
        total = int(state["total"][0])
        n = min(total, self.capacity)
        with_data = any(k.startswith("group.") for k in state)
        if with_data:
            self.reset()
        else:
            self._reset_rows()
        for dt, g in self.groups.items():
            if with_data:
                g[:n].copy_(state[f"group.{dtype_name(dt)}"])
        for name in ("key", "prev", "next", "stream", "end"):
            getattr(self, name)[:n].copy_(state[f"meta.{name}"])
        self._last_key = state["streams.last_key"].to(self.device).clone()
        self._ep_len = state["streams.ep_len"].to(self.device).clone()
        self.total = total
