"""DataLoader batches through reused shared-memory slots (replaydb.shared._batches).

In a DataLoader worker a shared table's sample is gathered into a slot that the
worker reuses once the main process let go of the batch. Most tests here run the
worker's side in this process (``get_worker_info`` patched) and the main
process's side by unpickling what ``ForkingPickler`` (the DataLoader's queue)
makes of a batch, so every path runs without a fork; the last ones run a real
DataLoader. Every child process is joined with a timeout.
"""

from __future__ import annotations

import gc
import math
import multiprocessing as mp
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from multiprocessing.reduction import ForkingPickler
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

import replaydb.shared._handle as handle_module
from replaydb import Dataset, Spec, Table
from replaydb.errors import RateLimiterTimeout, ReplayError
from replaydb.rate_limiters import RateLimiter
from replaydb.samplers import Prioritized, Uniform
from replaydb.shared import SharedTable, _batches, _owner, _wire, memory_table

JOIN_S = 60


def _remote(handle: SharedTable) -> SharedTable:
    copy: SharedTable = pickle.loads(pickle.dumps(handle))
    copy.owner_pid = os.getppid()  # alive, and not us: every call goes through the socket
    return copy


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process plays a DataLoader worker (its own slot pool, removed after)."""
    monkeypatch.setattr(_batches, "_POOL", None)
    monkeypatch.setattr(handle_module, "get_worker_info", lambda: object())
    yield
    pool = _batches._POOL
    if pool is not None:
        pool.close()
        assert not os.path.exists(pool.dir)


@pytest.fixture
def xs() -> Iterator[tuple[Table, SharedTable]]:
    """A table whose ``x`` is each step's key, and a remote handle."""
    table = memory_table(Spec({"x": (), "obs": ((6, 6), "uint8")}), 256, sampler=Uniform(seed=2))
    _fill(table, 0, 200)
    handle = table.share()
    yield table, _remote(handle)
    handle.close()


def _fill(table: Table, start: int, n: int) -> None:
    keys = torch.arange(start, start + n)
    table.extend(
        {"x": keys.float(), "obs": (keys % 251).to(torch.uint8).view(-1, 1, 1).expand(-1, 6, 6)}
    )


def _send(remote: SharedTable, n: int = 16) -> bytes:
    """What a worker puts on the DataLoader's queue for one sample."""
    s = remote.sample(n)
    return bytes(ForkingPickler.dumps(remote.worker_batch(s.data, s.keys)))


def _consistent(batch: list[Any]) -> bool:
    data, keys = batch
    obs = (keys % 251).to(torch.uint8).view(-1, 1, 1).expand(-1, 6, 6)
    return torch.equal(data["x"], keys.float()) and torch.equal(data["obs"], obs)


def _slots() -> list[Any]:
    assert _batches._POOL is not None
    return list(_batches._POOL.slots)


# ------------------------------------------------------------------ exactness
@pytest.mark.parametrize(
    "kwargs",
    [
        {"sampler": Prioritized(alpha=0.7, seed=3)},
        {"sampler": Uniform(seed=3), "frame_stack": {"obs": 3}},
        {"sampler": Uniform(seed=3), "frame_stack": {"obs": (3, "zeros")}},
        {"sampler": Uniform(seed=3), "sequence_length": 2, "frame_stack": {"obs": 2}},
    ],
    ids=["prioritized", "stack", "stack-zeros", "seq-stack"],
)
def test_a_pooled_sample_equals_the_tables_own(worker: None, kwargs: dict[str, Any]) -> None:
    # Gathered into slots, with the next batches drawn ahead in one request: the
    # same items, in the same order, with the same info as Table.sample's.
    spec = Spec({"obs": ((2, 3), "uint8"), "x": (), "h": ((2,), "bfloat16")})

    def make() -> Table:
        s = kwargs["sampler"]
        fresh = Prioritized(alpha=0.7, seed=3) if isinstance(s, Prioritized) else Uniform(seed=3)
        return memory_table(spec, 32, **{**kwargs, "sampler": fresh})

    mine, theirs = make(), make()
    steps = {
        "obs": torch.arange(40 * 6, dtype=torch.uint8).view(40, 2, 3),
        "x": torch.arange(40.0),
        "h": torch.arange(80.0).view(40, 2).to(torch.bfloat16),
    }
    ends = torch.zeros(40, dtype=torch.bool)
    ends[[6, 17, 30]] = True
    for t in (mine, theirs):
        t.extend(steps, ends=ends, streams=torch.arange(40) % 2)
    handle = theirs.share()
    remote = _remote(handle)
    # A uniform table draws a worker's next batches in one draw, cut into batches.
    per = 1 if isinstance(kwargs["sampler"], Prioritized) else 1 + handle_module.AHEAD
    for _ in range(2):
        a = mine.sample(7 * per)
        times = _wire.times_in_turn(a.keys.numpy(), a.times_sampled.numpy(), per)
        for i in range(per):
            b, cut = remote.sample(7), slice(7 * i, 7 * i + 7)
            for f in ("keys", "probabilities", "weights", "priorities"):
                assert torch.equal(getattr(a, f)[cut], getattr(b, f)), f
            assert b.times_sampled.tolist() == times[cut].tolist()
            assert b.table_size == a.table_size
            for name in a.data:
                assert torch.equal(a[name][cut], b[name]), name
    assert _slots()  # the pooled path ran
    handle.close()


def test_items_overwritten_while_copied_into_a_slot_are_drawn_again(
    worker: None, xs: tuple[Table, SharedTable]
) -> None:
    table, remote = xs
    real = remote._copy
    calls = [0]

    def copy_after_a_write(rows: dict[str, Any], pooled: bool) -> Any:
        calls[0] += 1
        if calls[0] == 1:  # between the owner's draw and the copy: the ring turns over
            _fill(table, 200, 256)
        return real(rows, pooled)

    remote._copy = copy_after_a_write  # type: ignore[method-assign]
    s = remote.sample(32)
    assert calls[0] >= 2
    assert torch.equal(s["x"], s.keys.float()) and bool((s.keys >= 200).all())


# ------------------------------------------------------------------ slot lifetime
def test_a_held_batch_is_never_overwritten_and_freed_slots_are_reused(
    worker: None, xs: tuple[Table, SharedTable]
) -> None:
    _, remote = xs
    held = pickle.loads(_send(remote))  # the main process keeps this one
    assert type(held) is list and _consistent(held)
    for _ in range(30):  # received and dropped at once
        got = pickle.loads(_send(remote))
        assert _consistent(got)
        del got
    assert _consistent(held)
    assert len(_slots()) == 2  # the held batch's slot and one that turns over
    del held
    gc.collect()
    for _ in range(10):
        pickle.loads(_send(remote))
    assert len(_slots()) == 2


def test_a_batch_unpickled_twice_is_an_error(worker: None, xs: tuple[Table, SharedTable]) -> None:
    _, remote = xs
    data = _send(remote)
    first = pickle.loads(data)
    with pytest.raises(ReplayError, match=r"unpickled a second time"):
        pickle.loads(data)
    del first
    gc.collect()
    with pytest.raises(ReplayError, match=r"slot moved on"):  # released: never stale data
        pickle.loads(data)


def test_a_batch_pickled_twice_travels_by_value_the_second_time(
    worker: None, xs: tuple[Table, SharedTable]
) -> None:
    _, remote = xs
    s = remote.sample(8)
    wb = remote.worker_batch(s.data, s.keys)
    a = pickle.loads(ForkingPickler.dumps(wb))
    b = pickle.loads(ForkingPickler.dumps(wb))  # not a second claim on the slot
    assert _consistent(a) and _consistent(b)
    del a
    gc.collect()
    pickle.loads(_send(remote))  # may reuse a's slot
    assert _consistent(b)


def test_forking_while_holding_a_batch_retires_its_slot(
    worker: None, xs: tuple[Table, SharedTable]
) -> None:
    # A forked child shares the held batch's pages: the slot is never reused.
    _, remote = xs
    held = pickle.loads(_send(remote))
    slot = next(s for s in _slots() if int(s.header[0]) == 2)  # claimed
    serial = slot.serial
    p = mp.get_context("fork").Process(target=os._exit, args=(0,))
    p.start()
    p.join(JOIN_S)
    assert p.exitcode == 0
    assert int(slot.header[0]) == 3
    del held
    gc.collect()
    assert int(slot.header[0]) == 3  # not freed by the release either
    for _ in range(5):
        assert _consistent(pickle.loads(_send(remote)))
    assert slot.serial == serial  # never leased again


def test_an_exhausted_pool_falls_back_to_plain_memory(
    worker: None, xs: tuple[Table, SharedTable], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_batches, "MAX_SLOTS", 2)
    _, remote = xs
    held = [pickle.loads(_send(remote)) for _ in range(5)]
    assert len(_slots()) == 2
    assert all(_consistent(b) for b in held)


def test_a_full_shared_memory_falls_back_to_plain_memory(
    worker: None, xs: tuple[Table, SharedTable], monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, offset: int, size: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    _, remote = xs
    assert _consistent(pickle.loads(_send(remote)))
    assert _slots() == [] and os.listdir(_batches._POOL.dir) == [_wire.OWN_MARK]  # type: ignore[union-attr]


def test_tensors_outside_slots_travel_by_value_or_by_torch(worker: None) -> None:
    big = torch.arange(100_000, dtype=torch.float32)  # over SMALL: torch's shared memory
    small = {
        "h": torch.arange(3.0).to(torch.bfloat16),
        "scalar": torch.tensor(7, dtype=torch.int64),
        "empty": torch.zeros(0, 3),
        "flags": torch.tensor([True, False]),
        "strided": torch.arange(12.0).view(3, 4)[:, 1],
    }
    got = pickle.loads(ForkingPickler.dumps(SharedTable.worker_batch({"big": big}, small)))
    assert torch.equal(got[0]["big"], big)
    for name, t in small.items():
        assert got[1][name].dtype == t.dtype and torch.equal(got[1][name], t), name


def test_a_uniform_table_draws_a_workers_next_batches_in_one_request(worker: None) -> None:
    table = memory_table(Spec({"x": ()}), 64, sampler=Uniform(seed=0))
    table.extend({"x": torch.arange(20.0)})
    handle = table.share()
    remote = _remote(handle)
    remote.sample(8)
    assert table.info().samples == 8 * (1 + handle_module.AHEAD)
    for _ in range(handle_module.AHEAD):
        remote.sample(8)  # drawn already
    assert table.info().samples == 8 * (1 + handle_module.AHEAD)
    remote.sample(8)
    assert table.info().samples == 16 * (1 + handle_module.AHEAD)
    handle.close()


def test_a_cpu_that_may_reorder_memory_gets_samples_gathered_by_the_owner(
    worker: None, xs: tuple[Table, SharedTable], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without x86's store and load order the overwrite check could miss a write.
    _table, remote = xs
    monkeypatch.setattr(_owner, "IN_ORDER", False)

    def copy(rows: dict[str, Any], pooled: bool) -> Any:
        raise AssertionError("the rows were copied outside the owner")

    monkeypatch.setattr(remote, "_copy", copy)
    s = remote.sample(16)
    assert _consistent([s.data, s.keys])


def test_draws_ahead_in_one_draw_report_times_sampled_as_consecutive_draws(worker: None) -> None:
    # 3 items, so every batch repeats items of the batches before it.
    table = memory_table(Spec({"x": ()}), 8, sampler=Uniform(seed=1))
    table.extend({"x": torch.arange(3.0)})
    handle = table.share()
    remote = _remote(handle)
    counts = [0, 0, 0]
    for _ in range(2 * (1 + handle_module.AHEAD)):
        s = remote.sample(5)
        for k in s.keys.tolist():
            counts[k] += 1
        # Every copy of an item reports its count after this batch, as Table.sample does.
        assert s.times_sampled.tolist() == [counts[k] for k in s.keys.tolist()]
    handle.close()


@settings(max_examples=40, deadline=None)
@given(
    parts=st.integers(1, 5),
    per=st.integers(1, 6),
    data=st.data(),
)
def test_times_in_turn_equals_counting_batch_by_batch(parts: int, per: int, data: Any) -> None:
    keys = data.draw(st.lists(st.integers(0, 4), min_size=parts * per, max_size=parts * per))
    before = data.draw(st.lists(st.integers(0, 3), min_size=5, max_size=5))
    counts, expected = list(before), []
    for i in range(parts):
        batch = keys[i * per : (i + 1) * per]
        for k in batch:
            counts[k] += 1
        expected += [counts[k] for k in batch]
    final = np.array([counts[k] for k in keys], dtype=np.int64)
    got = _wire.times_in_turn(np.array(keys, dtype=np.int64), final, parts)
    assert got.tolist() == expected


def test_a_table_with_max_times_sampled_draws_ahead_draw_by_draw(worker: None) -> None:
    # One draw for several batches could hand out an item past its last allowed draw.
    table = memory_table(Spec({"x": ()}), 64, sampler=Uniform(seed=2), max_times_sampled=2)
    table.extend({"x": torch.arange(10.0)})  # 20 draws in all; 16 taken below
    handle = table.share()
    remote = _remote(handle)
    seen: dict[int, int] = {}
    for _ in range(1 + handle_module.AHEAD):
        keys = remote.sample(2, timeout=JOIN_S).keys.tolist()
        # An item drawn twice in earlier batches was removed: never drawn again.
        assert all(seen.get(k, 0) < 2 for k in keys), (seen, keys)
        for k in keys:
            seen[k] = seen.get(k, 0) + 1
    assert table.info().samples == 2 * (1 + handle_module.AHEAD)
    handle.close()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sampler": Prioritized(alpha=0.6, seed=0)},  # priorities may change meanwhile
        {"rate_limiter": RateLimiter(1.0, 1, 0.0, math.inf)},  # permits another worker needs
    ],
    ids=["prioritized", "sample-side-limit"],
)
def test_no_draws_ahead_where_they_could_change_what_a_worker_sees(
    worker: None, kwargs: dict[str, Any]
) -> None:
    table = memory_table(Spec({"x": ()}), 64, **kwargs)
    table.extend({"x": torch.arange(20.0)})
    handle = table.share()
    remote = _remote(handle)
    remote.sample(8)
    assert table.info().samples == 8
    remote.sample(8)
    assert table.info().samples == 16
    if "rate_limiter" in kwargs:
        with pytest.raises(RateLimiterTimeout):
            remote.sample(8, timeout=0.2)
    handle.close()


# ------------------------------------------------------------------ a real DataLoader
def test_dataloader_batches_held_by_the_consumer_stay_intact() -> None:
    table = memory_table(Spec({"x": (), "obs": ((6, 6), "uint8")}), 4096, sampler=Uniform(seed=4))
    _fill(table, 0, 3000)
    handle = table.share()
    ds = Dataset(handle, batch_size=64)
    loader = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True, timeout=JOIN_S)
    it = iter(loader)
    pids = [w.pid for w in it._workers]  # type: ignore[attr-defined]
    held = []
    for i in range(40):
        batch, info = next(it)
        if i % 8 == 0:
            held.append((batch, info))
    del batch, info
    _fill(table, 3000, 1000)  # the ring moves on under the held batches' rows

    def intact(batch: Any, info: Any) -> bool:
        k = info.key[:, 0]
        obs = (k % 251).to(torch.uint8).view(-1, 1, 1).expand(-1, 6, 6)
        return torch.equal(batch["x"][:, 0], k.float()) and torch.equal(batch["obs"][:, 0], obs)

    for _ in range(40):
        next(it)
    assert all(intact(*b) for b in held)
    del it, loader
    gc.collect()
    # The workers exited and removed their slot files; the held batches stay readable.
    assert all(intact(*b) for b in held)
    left = [
        n for n in os.listdir("/dev/shm") for p in pids if n.startswith(f"replaydb-batches-{p}-")
    ]
    assert left == []
    ds.close()
    handle.close()


def test_an_owner_that_exits_with_its_dataloader_open_leaves_no_slots() -> None:
    # Python ends a daemonic worker with SIGTERM at the main process's exit (no
    # clean-up in the worker): the main process removes the slot directories.
    code = (
        "import torch; from torch.utils.data import DataLoader\n"
        "from replaydb import Dataset, Spec; from replaydb.shared import memory_table\n"
        "t = memory_table(Spec({'x': ()}), 64); t.extend({'x': torch.arange(50.0)})\n"
        "it = iter(DataLoader(Dataset(t.share(), 8), batch_size=None, num_workers=1))\n"
        "next(it); next(it); print(it._workers[0].pid)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=JOIN_S, env=env
    )
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.split()[-1])
    assert [n for n in os.listdir("/dev/shm") if n.startswith(f"replaydb-batches-{pid}-")] == []
