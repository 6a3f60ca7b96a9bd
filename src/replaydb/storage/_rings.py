"""The device paths of a storage: one implementation object per kind, picked once.

A :class:`~replaydb.storage.Storage` asks :func:`ring_for` which path fits its
device and dtypes when it is built, keeps the object (``storage.engine``) and
calls it from its hot methods (writes, link walks, windows, gathers) without
deciding again:

==================  ==============================================================
:class:`TorchRing`  the generic path: torch ops on the storage's tensors, on any
                    device (CUDA, other accelerators, CPU with bfloat16 fields or
                    after :func:`replaydb._devices.use_generic`); no host sync
                    beyond what the table asks for
:class:`HostRing`   CPU: the same algorithms through zero-copy numpy views of the
                    tensors (a numpy call costs a fraction of a torch call's
                    dispatch, which dominates at batch sizes of a few hundred)
:class:`NumbaRing`  CPU with numba and episode links: :class:`HostRing` whose
                    link walks and window gathers are compiled loops
                    (:mod:`replaydb._kernels`)
==================  ==============================================================

Every path gives the same rows, keys and values (the tests run the torch path on
CPU against the host paths on the same data).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from replaydb import _devices, _frames, _kernels, _links

if TYPE_CHECKING:
    from replaydb.storage._memory import Storage

__all__ = ["HostRing", "NumbaRing", "Ring", "TorchRing", "ring_copy", "ring_for"]


def ring_copy(dst: Any, row0: int, n: int, src: Any) -> None:
    """``dst[row0 : row0 + n] = src`` on a ring of ``len(dst)`` rows (wrapping once).

    ``dst`` and ``src`` are both numpy arrays or both tensors; ``src`` may be a scalar.
    """
    head = min(n, dst.shape[0] - row0)
    scalar = np.ndim(src) == 0
    dst[row0 : row0 + head] = src if scalar else src[:head]
    if head < n:
        dst[: n - head] = src if scalar else src[head:]


class Ring(Protocol):
    """What a storage's device path does: the hot methods that differ per device.

    Each method has the contract of the :class:`~replaydb.storage.Storage` method
    of the same name; the storage checks arguments and keeps its cursor.
    """

    #: ``"torch"``, ``"numpy"`` or ``"numba"``.
    name: str

    def write(
        self,
        row0: int,
        n: int,
        data: Mapping[str, torch.Tensor],
        keys: torch.Tensor,
        streams: torch.Tensor,
        ends: torch.Tensor,
    ) -> None:
        """Copy ``n`` steps into rows ``row0..`` (wrapping) with their row columns."""

    def append_numpy(
        self, values: Mapping[Any, Any], n: int, end: Any, stream: int, total: int
    ) -> int:
        """Write ``n`` steps from numpy-like values at key ``total``; return the first row."""

    def walk(self, keys: torch.Tensor, steps: int, column: str) -> torch.Tensor:
        """Follow ``prev`` or ``next`` links ``steps`` times; ``-1`` where broken."""

    def window_rows(self, start_keys: torch.Tensor, length: int) -> torch.Tensor:
        """``[B, length]`` rows of the windows starting at ``start_keys``."""

    def windows(self, start_keys: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Window rows and their end codes."""

    def gather(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every field at ``rows``: ``[*rows.shape, *field.shape]``."""

    def link(self, keys: torch.Tensor, streams: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        """Link new steps to their predecessors (streams already grown); return positions."""

    def stack_rows(self, rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``[N, k]`` rows of each row's last ``k`` frames (oldest first) and their validity."""


def _walk_torch(st: Storage, keys: torch.Tensor, steps: int, column: str) -> torch.Tensor:
    links = st.prev if column == "prev" else st.next
    cur = keys
    for _ in range(steps):
        ok = st.is_live(cur)
        nxt = links.index_select(0, cur.clamp(min=0) % st.capacity)
        cur = torch.where(ok, nxt, torch.full_like(cur, -1))
    return torch.where(st.is_live(cur), cur, torch.full_like(cur, -1))


class TorchRing:
    """The generic path: torch ops on the storage's tensors, on any device."""

    name = "torch"

    def __init__(self, storage: Storage) -> None:
        self.st = storage

    def write(
        self,
        row0: int,
        n: int,
        data: Mapping[str, torch.Tensor],
        keys: torch.Tensor,
        streams: torch.Tensor,
        ends: torch.Tensor,
    ) -> None:
        st = self.st
        for name, value in data.items():
            ring_copy(st.fields[name], row0, n, value)
        for dst, src in ((st.key, keys), (st.stream, streams), (st.end, ends)):
            ring_copy(dst, row0, n, src)
        if st.links:
            ring_copy(st.next, row0, n, -1)

    def append_numpy(
        self, values: Mapping[Any, Any], n: int, end: Any, stream: int, total: int
    ) -> int:
        # Correct everywhere, fast nowhere: each value becomes a tensor on the device.
        st = self.st
        row0 = total % st.capacity
        dev = st.device
        for name, value in values.items():
            dst = st.groups[name] if isinstance(name, torch.dtype) else st.fields[name]
            src = np.broadcast_to(np.asarray(value), (n, *dst.shape[1:]))
            ring_copy(dst, row0, n, torch.as_tensor(src.copy(), device=dev).to(dst.dtype))
        keys = torch.arange(total, total + n, dtype=torch.int64, device=dev)
        ends = torch.as_tensor(np.broadcast_to(np.asarray(end), (n,)).copy(), device=dev)
        ring_copy(st.key, row0, n, keys)
        ring_copy(st.stream, row0, n, stream)
        ring_copy(st.end, row0, n, ends.to(torch.int64))
        return row0

    def walk(self, keys: torch.Tensor, steps: int, column: str) -> torch.Tensor:
        return _walk_torch(self.st, keys, steps, column)

    def window_rows(self, start_keys: torch.Tensor, length: int) -> torch.Tensor:
        return _links.follow_links(self.st, start_keys, length)

    def windows(self, start_keys: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.window_rows(start_keys, length)
        return rows, self.st.end.index_select(0, rows.reshape(-1)).view(rows.shape)

    def gather(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        st = self.st
        one_d = rows.dim() == 1
        lead = tuple(rows.shape)
        flat = rows if one_d else rows.reshape(-1)
        out: dict[str, torch.Tensor] = {}
        for dt, g in st.groups.items():
            names, widths, shapes = st._split[dt]
            parts = g.index_select(0, flat).split_with_sizes(widths, 1)
            if one_d and dt in st._vector_groups:
                out.update(zip(names, parts, strict=True))
                continue
            for name, part, shape in zip(names, parts, shapes, strict=True):
                out[name] = part if one_d and len(shape) == 1 else part.reshape(*lead, *shape)
        return out

    def link(self, keys: torch.Tensor, streams: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        return _links.link_torch(self.st, keys, streams, ends)

    def stack_rows(self, rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _frames.stack_rows_torch(rows, k, self.st.key, self.st.prev)


class HostRing:
    """CPU: the storage's algorithms through zero-copy numpy views of its tensors."""

    name = "numpy"

    def __init__(self, storage: Storage) -> None:
        st = storage
        self.st = st
        #: Numpy views: per field, per dtype group, and the row columns.
        self.fields: dict[str, np.ndarray[Any, Any]] = {n: t.numpy() for n, t in st.fields.items()}
        self.groups: dict[torch.dtype, np.ndarray[Any, Any]] = {
            dt: g.numpy() for dt, g in st.groups.items()
        }
        self.targets: dict[Any, np.ndarray[Any, Any]] = {**self.fields, **self.groups}
        self.key = st.key.numpy()
        self.prev = st.prev.numpy()
        self.next = st.next.numpy()
        self.stream = st.stream.numpy()
        self.end = st.end.numpy()

    def write(
        self,
        row0: int,
        n: int,
        data: Mapping[str, torch.Tensor],
        keys: torch.Tensor,
        streams: torch.Tensor,
        ends: torch.Tensor,
    ) -> None:
        # A numpy slice copy costs a fraction of torch's.
        for name, value in data.items():
            ring_copy(self.fields[name], row0, n, value.numpy())
        ring_copy(self.key, row0, n, keys.numpy())
        ring_copy(self.stream, row0, n, streams.numpy())
        ring_copy(self.end, row0, n, ends.numpy())
        if self.st.links:
            ring_copy(self.next, row0, n, -1)

    def append_numpy(
        self, values: Mapping[Any, Any], n: int, end: Any, stream: int, total: int
    ) -> int:
        targets = self.targets
        cap = self.st.capacity
        row0 = total % cap
        if n == 1:
            for name, value in values.items():
                targets[name][row0] = value
            self.key[row0] = total
            self.stream[row0] = stream
            self.end[row0] = end
            return row0
        head = min(n, cap - row0)
        if head == n:
            stop = row0 + n
            for name, value in values.items():
                targets[name][row0:stop] = value
            self.key[row0:stop] = np.arange(total, total + n)
            self.stream[row0:stop] = stream
            self.end[row0:stop] = end
            return row0
        # The batch wraps around the end of the ring.
        for name, value in values.items():
            v = np.asarray(value)
            if v.ndim and v.shape[0] == n:
                targets[name][row0:] = v[:head]
                targets[name][: n - head] = v[head:]
            else:
                targets[name][row0:] = v
                targets[name][: n - head] = v
        keys = np.arange(total, total + n)
        self.key[row0:] = keys[:head]
        self.key[: n - head] = keys[head:]
        self.stream[row0:] = stream
        self.stream[: n - head] = stream
        e = np.broadcast_to(np.asarray(end), (n,))
        self.end[row0:] = e[:head]
        self.end[: n - head] = e[head:]
        return row0

    def walk(self, keys: torch.Tensor, steps: int, column: str) -> torch.Tensor:
        return _walk_torch(self.st, keys, steps, column)

    def window_rows(self, start_keys: torch.Tensor, length: int) -> torch.Tensor:
        # Windows whose steps lie at a constant key stride (one stream, or a vector
        # env writing every stream each step) are found in one shot: guess
        # ``start + j * stride`` and check every link at once; only windows that
        # fail the check follow ``next`` links step by step.
        key, prev, nxt = self.key, self.prev, self.next
        cap = self.st.capacity
        s = start_keys.numpy()
        stride = nxt.take(s % cap) - s
        np.maximum(stride, 1, out=stride)
        keys = s[:, None] + stride[:, None] * np.arange(length, dtype=np.int64)
        rows = keys % cap
        tail = rows[:, 1:]
        ok = ((prev.take(tail) == keys[:, :-1]) & (key.take(tail) == keys[:, 1:])).all(axis=1)
        out = torch.from_numpy(rows)
        if not ok.all():
            bad = torch.from_numpy(np.flatnonzero(~ok))
            out[bad] = _links.follow_links(self.st, start_keys.index_select(0, bad), length)
        return out

    def windows(self, start_keys: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.window_rows(start_keys, length)
        return rows, torch.from_numpy(self.end.take(rows.numpy()))

    def gather(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        # One numpy take per dtype group into a fresh packed block; each field is a
        # view of its columns (each torch call costs microseconds of dispatch, more
        # than the copy of a batch).
        st = self.st
        one_d = rows.dim() == 1
        lead = tuple(rows.shape)
        out: dict[str, torch.Tensor] = {}
        idx = rows.numpy().reshape(-1)
        for dt, np_group in self.groups.items():
            packed = np_group.take(idx, axis=0, mode="clip")
            if one_d and dt in st._vector_groups:
                # No field needs a reshape: one wrap and one split beat a wrap per field.
                names, widths, _ = st._split[dt]
                parts = torch.from_numpy(packed).split_with_sizes(widths, 1)
                out.update(zip(names, parts, strict=True))
                continue
            for name, a, b, shape in st._columns[dt]:
                view = packed[:, a] if shape == () else packed[:, a:b]
                if not one_d or len(shape) > 1:
                    view = view.reshape(*lead, *shape)
                out[name] = torch.from_numpy(view)
        return out

    def link(self, keys: torch.Tensor, streams: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        return _links.link_torch(self.st, keys, streams, ends)

    def stack_rows(self, rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _frames.stack_rows_torch(rows, k, self.st.key, self.st.prev)


class NumbaRing(HostRing):
    """:class:`HostRing` whose link walks and window gathers are compiled loops."""

    name = "numba"

    def __init__(self, storage: Storage, kernels: SimpleNamespace) -> None:
        super().__init__(storage)
        self.kernels = kernels

    def walk(self, keys: torch.Tensor, steps: int, column: str) -> torch.Tensor:
        links = self.prev if column == "prev" else self.next
        return torch.from_numpy(self.kernels.walk(keys.numpy(), steps, self.key, links))

    def windows(self, start_keys: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows, ends = self.kernels.windows(start_keys.numpy(), self.key, self.next, self.end, length)
        return torch.from_numpy(rows), torch.from_numpy(ends)

    def link(self, keys: torch.Tensor, streams: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        st = self.st
        pos = self.kernels.link_steps(
            keys.numpy(),
            streams.numpy(),
            ends.numpy(),
            self.key,
            self.prev,
            self.next,
            st._last_key.numpy(),
            st._ep_len.numpy(),
        )
        return torch.from_numpy(pos)

    def stack_rows(self, rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        flat, ok = self.kernels.stack_rows(rows.numpy(), k, self.key, self.prev)
        return torch.from_numpy(flat), torch.from_numpy(ok)


def ring_for(storage: Storage) -> Ring:
    """The device path of ``storage``, decided once from its device and dtypes.

    Example:
        >>> from replaydb.spec import Spec
        >>> from replaydb.storage import Storage
        >>> Storage(Spec({"x": ()}), 4).engine.name in ("numpy", "numba")
        True
    """
    if not _devices.host_path(storage.device, *storage.groups):
        return TorchRing(storage)
    kernels = _kernels.get() if storage.links else None
    return NumbaRing(storage, kernels) if kernels is not None else HostRing(storage)
