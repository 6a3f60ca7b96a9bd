"""Tables shared between processes (replaydb.shared): handles, workers, races, errors.

Every child process here is joined with a timeout and every queue read has one, so a
regression fails instead of hanging. The "remote" handle of the in-process tests is
the handle as another process sees it (it names a live process other than this one
as its owner), so the socket, the gather from shared memory and the overwrite checks
all run without a fork.
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing as mp
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from replaydb import Dataset, Spec, Table
from replaydb.errors import (
    ClosedError,
    DeviceError,
    InvalidArgumentError,
    RateLimiterTimeout,
)
from replaydb.samplers import Fifo, Prioritized, Uniform
from replaydb.shared import SharedTable, memory_table
from replaydb.shared._handle import AHEAD

JOIN_S = 60


def _remote(handle: SharedTable) -> SharedTable:
    """The handle as a process other than the owner sees it (same socket and files)."""
    copy: SharedTable = pickle.loads(pickle.dumps(handle))
    copy.owner_pid = os.getppid()  # alive, and not us: every call goes through the socket
    return copy


@pytest.fixture
def shared() -> Iterator[tuple[Table, SharedTable]]:
    table = memory_table(Spec({"x": ()}), 64, sampler=Uniform(seed=1))
    handle = table.share()
    yield table, handle
    handle.close()


def _fill(target: Any, start: int, n: int, **kwargs: Any) -> None:
    target.extend({"x": torch.arange(start, start + n, dtype=torch.float32)}, **kwargs)


# ------------------------------------------------------------------ the handle
def test_handle_pickles_by_address_not_data(shared: tuple[Table, SharedTable]) -> None:
    table, handle = shared
    big = memory_table(Spec({"obs": ((84, 84), "uint8")}), 2000)
    h = big.share()
    h.extend({"obs": torch.ones(2000, 84, 84, dtype=torch.uint8)})
    assert len(pickle.dumps(h)) < 4096
    copy = pickle.loads(pickle.dumps(h))
    assert copy.path == big.path and copy.address == h.address
    assert table.share() is handle  # sharing again gives the same handle
    h.close()


def test_remote_verbs_reach_the_owner(shared: tuple[Table, SharedTable]) -> None:
    table, handle = shared
    remote = _remote(handle)
    _fill(remote, 0, 5)
    remote.insert({"x": 5.0}, end=True)
    assert len(table) == 6 and len(remote) == 6
    assert remote.info().size == 6 and remote.info(table="table").capacity == 64
    s = remote.sample(16)
    assert torch.equal(s["x"], s.keys.float())  # x was written as its key
    assert table.info().samples == 16
    assert remote.update_priorities([0, 999], [2.0, 3.0]) == 1
    with pytest.raises(InvalidArgumentError, match="table='other'"):
        remote.sample(1, table="other")
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        remote.sample(0)
    with pytest.raises(Exception, match="x"):
        remote.extend({"y": torch.zeros(2)})  # the owner's SpecMismatchError, raised here
    assert len(table) == 6
    remote.close()
    assert len(remote) == 6  # reconnects


def test_an_interrupted_call_leaves_no_answer_behind(shared: tuple[Table, SharedTable]) -> None:
    _, handle = shared
    remote = _remote(handle)
    _fill(remote, 0, 3)
    conn = remote._conn()

    def interrupted(timeout: float) -> bool:
        raise KeyboardInterrupt

    conn.poll = interrupted  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        len(remote)  # sent, its answer never read
    assert remote.info().size == 3  # a fresh connection: this answer, not the last one's


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sampler": Uniform(seed=3)},
        {"sampler": Prioritized(alpha=0.7, seed=3)},
        {"sampler": Uniform(seed=3), "sequence_length": 3, "pad": True},
        {"sampler": Uniform(seed=3), "frame_stack": {"obs": 3}},
        {"sampler": Uniform(seed=3), "frame_stack": {"obs": (4, "zeros"), "x": 2}},
        {"sampler": Uniform(seed=3), "sequence_length": 2, "frame_stack": {"obs": 3}},
    ],
    ids=["uniform", "prioritized", "padded-sequences", "stack", "stack-zeros", "seq-stack"],
)
def test_a_remote_sample_equals_the_tables_own(kwargs: dict[str, Any]) -> None:
    # Two tables with the same seed draw the same items: the one sampled through a
    # handle (owner draws, caller gathers from shared memory) returns what the
    # other returns from Table.sample.
    spec = Spec({"obs": ((2, 3), "uint8"), "x": ()})
    mine, theirs = (
        memory_table(spec, 32, **{**kwargs, "sampler": type(kwargs["sampler"])(**_seed(kwargs))})
        for _ in range(2)
    )
    steps = {
        "obs": torch.arange(40 * 6, dtype=torch.uint8).view(40, 2, 3),
        "x": torch.arange(40.0),
    }
    ends = torch.zeros(40, dtype=torch.bool)
    ends[[6, 17, 30]] = True
    for t in (mine, theirs):
        t.extend(steps, ends=ends, streams=torch.arange(40) % 2)
    handle = theirs.share()
    remote = _remote(handle)
    for _ in range(3):
        a, b = mine.sample(7), remote.sample(7)
        for f in ("keys", "probabilities", "weights", "priorities", "times_sampled"):
            assert torch.equal(getattr(a, f), getattr(b, f)), f
        assert a.table_size == b.table_size
        for name in a.data:
            assert torch.equal(a[name], b[name]), name
        for f in ("mask", "ends"):
            x, y = getattr(a, f), getattr(b, f)
            assert (x is None and y is None) or torch.equal(x, y)
    handle.close()


def _seed(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {"alpha": 0.7, "seed": 3} if isinstance(kwargs["sampler"], Prioritized) else {"seed": 3}


def test_fields_numpy_lacks_travel_and_gather_exactly() -> None:
    # bfloat16 has no numpy dtype (the storage gathers with torch, the wire sends bits).
    spec = Spec({"h": ((3,), "bfloat16"), "d": ((), "bool"), "x": ()})
    mine, theirs = (memory_table(spec, 16, sampler=Uniform(seed=9)) for _ in range(2))
    steps = {
        "h": torch.arange(30.0).view(10, 3).to(torch.bfloat16),
        "d": torch.arange(10) % 3 == 0,
        "x": torch.arange(10.0),
    }
    mine.extend(steps)
    handle = theirs.share()
    remote = _remote(handle)
    remote.extend(steps)  # bfloat16 over the wire
    assert torch.equal(theirs.storage.fields["h"][:10], steps["h"])
    a, b = mine.sample(6), remote.sample(6)
    assert torch.equal(a.keys, b.keys)
    for name in spec:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name
    handle.close()


def test_a_consuming_table_hands_out_each_item_once() -> None:
    table = memory_table(Spec({"x": ()}), 8, sampler=Fifo(), max_times_sampled=1)
    handle = table.share()
    remote = _remote(handle)
    _fill(remote, 0, 6)
    got = remote.sample(4)["x"].tolist() + remote.sample(2)["x"].tolist()
    assert got == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert len(table) == 0
    with pytest.raises(RateLimiterTimeout, match=r"timed out after 0\.2s"):
        remote.sample(1, timeout=0.2)
    handle.close()


# ------------------------------------------------------------------ the overwrite race
def test_items_overwritten_while_copied_are_drawn_again(shared: tuple[Table, SharedTable]) -> None:
    table, handle = shared
    _fill(table, 0, 64)
    remote = _remote(handle)
    remote.sample(1)  # maps the storage
    real = remote._copy
    calls = [0]

    def copy_after_a_write(rows: dict[str, Any], pooled: bool) -> Any:
        calls[0] += 1
        if calls[0] == 1:  # between the owner's draw and the copy: the ring turns over
            _fill(table, 64, 64)
        return real(rows, pooled)

    remote._copy = copy_after_a_write  # type: ignore[method-assign]
    s = remote.sample(32)
    assert calls[0] >= 2  # the whole first draw went stale and was drawn again
    assert torch.equal(s["x"], s.keys.float())
    assert bool((s.keys >= 64).all())


def test_a_reset_while_copying_is_detected(shared: tuple[Table, SharedTable]) -> None:
    table, handle = shared
    _fill(table, 0, 10)
    remote = _remote(handle)
    remote.sample(1)
    real = remote._copy
    calls = [0]

    def copy_after_reset(rows: dict[str, Any], pooled: bool) -> Any:
        calls[0] += 1
        if calls[0] == 1:
            table.reset()
            _fill(table, 0, 10)  # same keys again, other generation
            table.extend({"x": torch.full((10,), -1.0)})  # rows 10..19 with keys 10..19
        return real(rows, pooled)

    remote._copy = copy_after_reset  # type: ignore[method-assign]
    s = remote.sample(8)
    assert calls[0] >= 2
    assert bool(((s["x"] == s.keys.float()) | (s["x"] == -1.0)).all())


@settings(max_examples=20, deadline=None)
@given(
    writes=st.lists(st.one_of(st.integers(1, 40), st.just(0)), min_size=1, max_size=4),
    sequence_length=st.sampled_from([1, 3]),
)
def test_whatever_the_owner_writes_during_a_copy_a_sample_is_consistent(
    writes: list[int], sequence_length: int
) -> None:
    # 0 is a reset; n > 0 writes n more steps. However the ring moves between the
    # owner's draw and the caller's copy, every returned step is the step its key
    # names (x was written as its key), and windows stay consecutive.
    table = memory_table(Spec({"x": ()}), 16, sequence_length=sequence_length)
    handle = table.share()
    try:
        _fill(table, 0, 16)
        remote = _remote(handle)
        remote.sample(1)
        real = remote._copy
        pending = list(writes)

        def copy_during_writes(rows: dict[str, Any], pooled: bool) -> Any:
            if pending:
                n = pending.pop(0)
                if n == 0:
                    table.reset()
                    _fill(table, 0, 8)
                else:
                    _fill(table, table.total_steps_written, n)
            return real(rows, pooled)

        remote._copy = copy_during_writes  # type: ignore[method-assign]
        s = remote.sample(6)
        x = s["x"] if sequence_length == 1 else s["x"][:, 0]
        assert torch.equal(x, s.keys.float())
        if sequence_length > 1:
            assert torch.equal(s["x"], s["x"][:, :1] + torch.arange(3.0))
    finally:
        handle.close()


def test_a_disk_backed_table_is_shared_and_reopened(tmp_path: Any) -> None:
    table = Table(Spec({"x": ()}), 16, path=tmp_path / "t")
    handle = table.share()
    remote = _remote(handle)
    _fill(remote, 0, 10)
    s = remote.sample(4)
    assert torch.equal(s["x"], s.keys.float())
    table.checkpoint()
    handle.close()
    del table, handle, remote
    gc.collect()
    again = Table.open(tmp_path / "t")
    handle = again.share()
    s = _remote(handle).sample(8)
    assert torch.equal(s["x"], s.keys.float()) and len(again) == 10
    handle.close()
    assert (tmp_path / "t").is_dir()  # a user's directory is never removed


def _hammer(handle: SharedTable, n: int, out: Any) -> None:
    bad = 0
    for _ in range(n):
        s = handle.sample(16)
        bad += int((s["x"] != s.keys.float()).sum())
    out.put(bad)


def test_a_forked_sampler_never_sees_torn_rows_while_the_owner_writes() -> None:
    table = memory_table(Spec({"x": ()}), 32)
    handle = table.share()
    _fill(table, 0, 32)
    stop = threading.Event()

    def write() -> None:
        k = 32
        while not stop.is_set():
            _fill(table, k, 5)
            k += 5

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_hammer, args=(handle, 200, q))
    p.start()
    try:
        assert q.get(timeout=JOIN_S) == 0
    finally:
        stop.set()
        writer.join(5)
        p.join(JOIN_S)
        handle.close()
    assert p.exitcode == 0


# ------------------------------------------------------------------ processes
def _child(handle: SharedTable, q: Any, go: Any) -> None:
    before = len(handle)
    go.wait(JOIN_S)  # the parent writes more once we run
    s = handle.sample(64, timeout=JOIN_S)
    handle.extend({"x": torch.tensor([1000.0, 1001.0])})
    q.put((before, int(s.keys.max()), len(handle)))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_child_process_sees_new_data_and_writes(method: str) -> None:
    table = memory_table(Spec({"x": ()}), 256, sampler=Uniform(seed=0))
    handle = table.share()
    _fill(table, 0, 10)
    ctx = mp.get_context(method)
    q, go = ctx.Queue(), ctx.Event()
    p = ctx.Process(target=_child, args=(handle, q, go))
    p.start()
    try:
        _fill(table, 10, 100)  # written after the child started
        go.set()
        before, newest, after = q.get(timeout=JOIN_S)
    finally:
        p.join(JOIN_S)
        handle.close()
    assert p.exitcode == 0
    assert before in (10, 110) and newest >= 10 and after == 112
    assert table.storage.fields["x"][110:112].tolist() == [1000.0, 1001.0]


def _owner_exits(q: Any) -> None:
    table = memory_table(Spec({"x": ()}), 8)
    handle = table.share()
    _fill(table, 0, 4)
    q.put(pickle.dumps(handle))
    q.put(table.path)


def test_a_gone_owner_is_a_clear_error_not_a_hang() -> None:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_owner_exits, args=(q,))
    p.start()
    handle = pickle.loads(q.get(timeout=JOIN_S))
    path = q.get(timeout=JOIN_S)
    p.join(JOIN_S)
    assert p.exitcode == 0
    assert not os.path.exists(path)  # the owner removed its shared memory on exit
    assert not os.path.exists(os.path.dirname(handle.address))
    with pytest.raises(ClosedError, match=r"pid \d+.*exited or closed"):
        handle.sample(1)
    with pytest.raises(ClosedError):
        handle.extend({"x": torch.zeros(1)})


def test_a_closed_share_is_a_clear_error_in_other_processes(
    shared: tuple[Table, SharedTable],
) -> None:
    table, handle = shared
    remote = _remote(handle)
    _fill(remote, 0, 3)
    handle.close()
    with pytest.raises(ClosedError, match="closed the share"):
        len(remote)
    assert len(table) == 3  # the table itself stays usable in the owner
    again = table.share()
    assert again is not handle and len(_remote(again)) == 3
    again.close()


def test_closing_ends_a_wait_in_another_process_promptly(
    shared: tuple[Table, SharedTable],
) -> None:
    _, handle = shared
    remote = _remote(handle)
    errors: list[BaseException] = []

    def wait_for_data() -> None:
        try:
            remote.sample(1)  # the table is empty: waits, in slices, for ever
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=wait_for_data, daemon=True)
    t.start()
    t.join(0.7)
    assert t.is_alive()
    start = time.monotonic()
    handle.close()
    t.join(JOIN_S)
    assert not t.is_alive() and time.monotonic() - start < 10
    assert len(errors) == 1 and isinstance(errors[0], ClosedError)


def test_a_wrong_key_is_refused(shared: tuple[Table, SharedTable]) -> None:
    _, handle = shared
    forged = SharedTable(handle.address, b"0" * 32, handle.path, handle.config, os.getppid())
    with pytest.raises(InvalidArgumentError, match="rejected this handle's key"):
        len(forged)
    assert len(_remote(handle)) == 0  # the server still answers the right key


# ------------------------------------------------------------------ what cannot be shared
def test_an_in_memory_table_cannot_be_shared() -> None:
    with pytest.raises(InvalidArgumentError, match=r"memory_table.*path=DIR"):
        Table(Spec({"x": ()}), 4).share()


def test_a_gpu_table_cannot_be_shared() -> None:
    with pytest.raises(DeviceError, match="GPU memory cannot be mapped"):
        memory_table(Spec({"x": ()}), 4, device="cuda")
    with pytest.raises(InvalidArgumentError, match="path="):
        memory_table(Spec({"x": ()}), 4, path="/tmp/x")


@pytest.mark.gpu
def test_a_cuda_table_share_names_the_fix() -> None:
    with pytest.raises(DeviceError, match="other processes cannot map"):
        Table(Spec({"x": ()}), 4, device="cuda").share()


def test_a_forked_copy_cannot_serve_the_table() -> None:
    table = memory_table(Spec({"x": ()}), 4)
    handle = table.share()
    ctx = mp.get_context("fork")
    q = ctx.Queue()

    def child() -> None:
        try:
            table.share()
        except InvalidArgumentError as exc:
            q.put(str(exc))
        else:
            q.put("served")

    p = ctx.Process(target=child)
    p.start()
    try:
        assert "copy made by fork" in q.get(timeout=JOIN_S)
    finally:
        p.join(JOIN_S)
        handle.close()


# ------------------------------------------------------------------ clean-up
def test_shared_memory_and_sockets_are_removed() -> None:
    table = memory_table(Spec({"x": ()}), 4)
    handle = table.share()
    path, sock_dir = table.path, os.path.dirname(handle.address)
    assert path is not None and os.path.isdir(path) and os.path.isdir(sock_dir)
    assert oct(os.stat(sock_dir).st_mode & 0o777) == "0o700"
    handle.close()
    assert not os.path.exists(sock_dir) and os.path.isdir(path)
    del table, handle
    gc.collect()
    assert not os.path.exists(path)


def test_a_process_that_exits_removes_everything() -> None:
    code = (
        "import torch; from replaydb import Spec; from replaydb.shared import memory_table\n"
        "t = memory_table(Spec({'x': ()}), 4); h = t.share(); h.extend({'x': torch.ones(2)})\n"
        "import os; print(t.path); print(os.path.dirname(h.address))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=JOIN_S, env=env
    )
    assert out.returncode == 0, out.stderr
    for line in out.stdout.split():
        assert not os.path.exists(line), line


# ------------------------------------------------------------------ DataLoader workers
def _loader_table(n: int = 2000) -> tuple[Table, SharedTable]:
    table = memory_table(Spec({"x": ()}), 4096, sampler=Uniform(seed=5))
    _fill(table, 0, n)
    return table, table.share()


def _worker_batches(loader: DataLoader[Any], n: int) -> list[tuple[int, torch.Tensor]]:
    out = []
    for i, (batch, info) in enumerate(loader):
        assert torch.equal(batch["x"], info.key.float())
        out.append((i, info.key))
        if i + 1 == n:
            break
    return out


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_dataloader_workers_draw_independent_batches(workers: int) -> None:
    table, handle = _loader_table()
    ds = Dataset(handle, batch_size=64)
    loader = DataLoader(ds, batch_size=None, num_workers=workers, timeout=JOIN_S if workers else 0)
    batches = _worker_batches(loader, 8)
    del loader
    keys = torch.stack([k[:, 0] for _, k in batches])
    # No two batches repeat each other (with 2000 items, two equal 64-draws are
    # impossible unless a worker replays another's draws).
    assert len({tuple(k.tolist()) for k in keys}) == len(batches)
    # Consecutive batches come from different workers: as many shared keys as
    # independent draws give (64 * 64 / 2000 ~ 2 expected), never systematic.
    overlap = [len(set(a.tolist()) & set(b.tolist())) for a, b in itertools.pairwise(keys)]
    assert max(overlap) < 16, overlap
    assert table.info().samples >= 8 * 64
    handle.close()
    ds.close()


def test_worker_batches_keep_every_field_and_info_column_exact() -> None:
    # In a worker, everything but the largest field travels in one block of views.
    spec = Spec({"obs": ((8, 8), "uint8"), "a": ((), "int64"), "x": (), "d": ((), "bool")})
    table = memory_table(spec, 512, sampler=Prioritized(alpha=1.0, seed=0))
    keys = torch.arange(300)
    table.extend(
        {
            "obs": (keys % 256).to(torch.uint8).view(-1, 1, 1).expand(-1, 8, 8),
            "a": keys,
            "x": keys.float(),
            "d": keys % 2 == 0,
        },
        priorities=keys.double() + 1.0,
    )
    handle = table.share()
    ds = Dataset(handle, batch_size=32)
    loader = DataLoader(ds, batch_size=None, num_workers=1, timeout=JOIN_S)
    for i, (batch, info) in enumerate(loader):
        k = info.key[:, 0]
        assert torch.equal(batch["a"][:, 0], k) and torch.equal(batch["x"][:, 0], k.float())
        assert torch.equal(batch["d"][:, 0], k % 2 == 0)
        assert bool((batch["obs"][:, 0] == (k % 256).to(torch.uint8).view(-1, 1, 1)).all())
        assert torch.equal(info.priority[:, 0], k.double() + 1.0)
        assert torch.allclose(info.probability[:, 0], (k.double() + 1.0) / (300 * 301 / 2))
        assert bool((info.table_size == 300).all()) and info.times_sampled.dtype == torch.int64
        if i == 3:
            break
    del loader
    ds.close()
    handle.close()


def test_dataloader_workers_see_data_written_after_they_start() -> None:
    table, handle = _loader_table(100)
    ds = Dataset(handle, batch_size=32)
    loader = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True, timeout=JOIN_S)
    it = iter(loader)
    first = next(it)[1].key
    assert int(first.max()) < 100
    _fill(table, 100, 3900)  # the newest 3900 of 4000 keys
    seen_new = False
    # Each worker may hold the draws of its next AHEAD batches, drawn before the write.
    for _ in range(2 * (1 + AHEAD) + 4):
        if int(next(it)[1].key.max()) >= 100:
            seen_new = True
            break
    assert seen_new
    # A second epoch of the persistent workers keeps sampling the live table.
    assert next(iter(loader))[0]["x"].shape == (32, 1)
    del it, loader
    handle.close()
    ds.close()


def test_dataloader_after_iterating_in_process_does_not_hang() -> None:
    _table, handle = _loader_table()
    ds = Dataset(handle, batch_size=16).prefetch(2)  # threads and a queue ...
    next(ds)  # ... started here, before the workers fork
    loader = DataLoader(ds, batch_size=None, num_workers=2, timeout=JOIN_S)
    batches = _worker_batches(loader, 4)
    assert len(batches) == 4
    del loader
    ds.close()
    handle.close()


def test_spawned_dataloader_workers() -> None:
    _table, handle = _loader_table()
    ds = Dataset(handle, batch_size=32)
    loader = DataLoader(
        ds,
        batch_size=None,
        num_workers=2,
        multiprocessing_context="spawn",
        persistent_workers=True,
        timeout=JOIN_S,
    )
    batches = _worker_batches(loader, 4)
    keys = [tuple(k[:, 0].tolist()) for _, k in batches]
    assert len(set(keys)) == 4
    del loader
    handle.close()
    ds.close()


def test_a_dataset_over_an_in_process_client_refuses_to_pickle() -> None:
    from replaydb import Server

    table = Table(Spec({"x": ()}), 8)
    table.extend({"x": torch.zeros(2)})
    ds = Dataset(Server(table).client(), batch_size=2)
    with pytest.raises(InvalidArgumentError, match=r"Client of this process.*share\(\)"):
        pickle.dumps(ds)
    ds.close()


def test_a_dataset_pickles_without_its_threads() -> None:
    _table, handle = _loader_table(50)
    ds = Dataset(handle, batch_size=4).prefetch(2)
    next(ds)
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._queue is None and copy._threads == []
    copy.client.owner_pid = os.getppid()  # as a spawned worker would see it
    batch, info = next(copy)
    assert torch.equal(batch["x"], info.key.float())
    copy.close()
    ds.close()
    handle.close()
