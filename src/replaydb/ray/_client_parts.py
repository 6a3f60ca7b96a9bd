"""Pieces of :class:`~replaydb.ray.client.RayClient`: its writers' shard sink, merged samples."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from replaydb._constants import NUMPY_DTYPES, end_code
from replaydb.errors import InvalidArgumentError
from replaydb.ray._common import _BETA_KEYS, _exponent, _TableMeta, _wire
from replaydb.spec import Spec
from replaydb.table import Sample, Table

if TYPE_CHECKING:
    from replaydb.ray.client import RayClient


class _ShardSink:
    """A :class:`~replaydb.writer.Writer`'s destination: one shard of a table.

    ``extend`` sends the batch to the shard actor without waiting for it to be
    applied, after the shard's previous batch was (so one shard's writes keep their
    order); Ray copies the arguments when the call is made, so the writer may reuse
    its stage at once.
    """

    def __init__(self, client: RayClient, key: tuple[str, int]) -> None:
        self._client = client
        self._key = key

    def extend(
        self,
        steps: Mapping[str, Any],
        *,
        streams: Any = None,
        ends: Any = None,
        priorities: Any = None,
        timeout: float | None = None,
        table: str | None = None,
    ) -> None:
        """Send one batch to the shard (see :meth:`replaydb.table.Table.extend`)."""
        client, key = self._client, self._key
        client._wait_inflight(key)
        shard = client._meta.tables[key[0]].shards[key[1]]
        client._inflight[key] = shard.extend.remote(
            {f: _to_wire(v) for f, v in steps.items()},
            _to_wire(streams),
            _to_wire(ends),
            None if priorities is None else _to_wire(priorities),
            timeout,
        )


def _to_wire(v: Any) -> Any:
    return _wire(v) if isinstance(v, torch.Tensor) else v


def _numpy_fields(spec: Spec) -> dict[str, tuple[tuple[int, ...], Any]] | None:
    """``name -> (shape, numpy dtype)``, or ``None`` if a dtype has no numpy twin."""
    out = {}
    for name, f in spec.items():
        d = NUMPY_DTYPES.get(f.dtype)
        if d is None:
            return None
        out[name] = (f.shape, np.dtype(d))
    return out


def _end_code(end: Any) -> int:
    code = end_code(end)
    if code is not None:
        return code
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
