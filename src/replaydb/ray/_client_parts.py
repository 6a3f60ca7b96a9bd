"""The pieces of :class:`~replaydb.ray.client.RayClient`: write buffers, merged samples."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from replaydb.errors import InvalidArgumentError
from replaydb.ray._common import _BETA_KEYS, _exponent, _TableMeta
from replaydb.spec import Spec
from replaydb.table import Sample, Table


@dataclass
class _Pending:
    """Steps buffered for one shard, in order: whole chunks, then single rows."""

    chunks: list[tuple[dict[str, Any], Any, Any, Any]] = field(default_factory=list)
    rows: dict[str, list[Any]] = field(default_factory=dict)
    row_meta: list[tuple[int, int, float]] = field(default_factory=list)
    with_priority: bool | None = None
    timeout: float | None = None
    count: int = 0
    since: float = 0.0

    def seal_rows(self) -> None:
        """Turn the buffered single rows into one chunk (one ``np.stack`` per field)."""
        if not self.row_meta:
            return
        meta = np.asarray(self.row_meta, dtype=np.float64)
        self.chunks.append(
            (
                {k: np.stack(v) for k, v in self.rows.items()},
                meta[:, 0].astype(np.int64),
                meta[:, 1].astype(np.int64),
                meta[:, 2].copy() if self.with_priority else None,
            )
        )
        self.rows = {}
        self.row_meta = []

    def take(self) -> tuple[dict[str, Any], Any, Any, Any]:
        self.seal_rows()
        if len(self.chunks) == 1:
            return self.chunks[0]
        first = self.chunks[0][0]
        return (
            {k: _cat([c[0][k] for c in self.chunks]) for k in first},
            np.concatenate([c[1] for c in self.chunks]),
            np.concatenate([c[2] for c in self.chunks]),
            np.concatenate([c[3] for c in self.chunks]) if self.with_priority else None,
        )


def _cat(parts: list[Any]) -> Any:
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return torch.cat(parts)


def _numpy_fields(spec: Spec) -> dict[str, tuple[tuple[int, ...], Any]] | None:
    """``name -> (shape, numpy dtype)``, or ``None`` if a dtype has no numpy twin."""
    out = {}
    for name, f in spec.items():
        if f.dtype == torch.bfloat16:
            return None
        out[name] = (f.shape, torch.empty((), dtype=f.dtype).numpy().dtype)
    return out


def _end_code(end: Any) -> int:
    if end is None or end is False:
        return 0
    if end is True:
        return 1
    if isinstance(end, int | np.integer) and 0 <= int(end) <= 2:
        return int(end)
    raise InvalidArgumentError(
        f"end must be a bool or a code 0 (not done), 1 (terminated), 2 (truncated), got {end!r}"
    )


def _in_daemon_thread(fn: Callable[..., Sample], *args: Any) -> Future[Sample]:
    """Run ``fn(*args)`` on a daemon thread; its result or error lands in the future.

    Daemon threads rather than a ThreadPoolExecutor: the interpreter joins an
    executor's workers at exit, and a prefetch still in flight when the driver shuts
    Ray down would then hang the process in Ray's automatic reconnect.
    """
    fut: Future[Sample] = Future()

    def run() -> None:
        if not fut.set_running_or_notify_cancel():
            return
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:
            fut.set_exception(exc)

    threading.Thread(target=run, name="replaydb-prefetch", daemon=True).start()
    return fut


def _priority_column(priorities: Any, n: int) -> torch.Tensor | None:
    return None if priorities is None else Table.validate_priorities(priorities, n)


def _encode_keys(s: Sample, shard: int, k: int) -> Sample:
    if k == 1:
        return s
    keys = torch.where(s.keys >= 0, s.keys * k + shard, s.keys)
    return replace(s, keys=keys)


def _merge(
    parts: list[tuple[Sample, float]], size: int, t: _TableMeta, beta: float | None
) -> Sample:
    samples = [s for s, _ in parts]
    probs = torch.cat([s.probabilities * frac for s, frac in parts])
    if t.prioritized:
        b = beta if beta is not None else _exponent(t.config["sampler"], _BETA_KEYS)
        if b is None:
            weights = torch.cat([s.weights for s in samples])
        else:
            w = (size * probs) ** (-b)
            weights = (w / w.max()).to(torch.float32)
    else:
        weights = torch.cat([s.weights for s in samples])
    masks = [s.mask for s in samples]
    return Sample(
        data={f: torch.cat([s.data[f] for s in samples]) for f in samples[0].data},
        keys=torch.cat([s.keys for s in samples]),
        probabilities=probs,
        weights=weights,
        priorities=torch.cat([s.priorities for s in samples]),
        times_sampled=torch.cat([s.times_sampled for s in samples]),
        table_size=size,
        mask=None
        if all(m is None for m in masks)
        else torch.cat(
            [
                m if m is not None else torch.ones_like(s.keys, dtype=torch.bool)
                for m, s in zip(masks, samples, strict=True)
            ]
        ),
    )
