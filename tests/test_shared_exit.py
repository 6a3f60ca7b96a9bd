"""A spawned DataLoader worker exits cleanly while its queue still sends batches.

A worker returns batches through a ``multiprocessing`` queue whose daemon
feeder thread pickles them; large tensors outside a slot go torch's way, in
torch calls that give up the GIL. A spawned worker that finalized Python while
that thread was in such a call aborted ("terminate called without an active
exception"). Here every batch is large and outside a slot (the owner gathers:
``IN_ORDER`` off), and the loader is dropped with many batches in flight.
"""

from __future__ import annotations

import threading
import time
import weakref
from multiprocessing import get_context

import pytest
import torch
from torch.utils.data import DataLoader

from replaydb import Dataset, Spec, dataset
from replaydb.samplers import Uniform
from replaydb.shared import _owner, memory_table

JOIN_S = 60


@pytest.mark.slow
def test_spawned_workers_exit_cleanly_with_batches_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_owner, "IN_ORDER", False)  # batches by value: torch's hand-over
    table = memory_table(Spec({"obs": ((256, 256), "float32")}), 64, sampler=Uniform(seed=0))
    table.extend({"obs": torch.ones(64, 256, 256)})
    handle = table.share()
    ds = Dataset(handle, batch_size=32)  # 8 MB a batch
    try:
        for _ in range(2):
            loader = DataLoader(
                ds,
                batch_size=None,
                num_workers=2,
                multiprocessing_context="spawn",
                persistent_workers=True,
                prefetch_factor=16,
                timeout=JOIN_S,
            )
            it = iter(loader)
            workers = list(it._workers)  # type: ignore[attr-defined]
            batch, _ = next(it)
            assert batch["obs"].shape == (32, 1, 256, 256)
            del batch, it, loader
            for w in workers:
                w.join(timeout=JOIN_S)
            assert [w.exitcode for w in workers] == [0, 0]
    finally:
        handle.close()
        ds.close()


def test_a_workers_exit_waits_for_its_closed_queue_to_send(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    q = get_context("spawn").Queue()
    slow = threading.Event()
    sent: list[int] = []

    class Slow:
        def __reduce__(self) -> tuple[object, ...]:
            slow.wait(timeout=JOIN_S)
            sent.append(1)
            return (int, (0,))

    before = set(threading.enumerate())
    q.put(Slow())
    q.close()  # as a worker's queue when the DataLoader ends it
    feeders = [t for t in threading.enumerate() if t not in before]
    assert [t.name for t in feeders] == ["QueueFeederThread"]
    threading.Timer(0.2, slow.set).start()
    monkeypatch.setattr(dataset, "get_worker_info", lambda: object())
    monkeypatch.setattr(dataset, "_RUNNING", weakref.WeakSet())  # this process's datasets run on
    t0 = time.monotonic()
    dataset._stop_at_exit()
    assert sent == [1] and time.monotonic() - t0 < JOIN_S
    assert not any(t.is_alive() for t in feeders)
    q.join_thread()
