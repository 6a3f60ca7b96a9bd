"""replaydb.reverb's writers stage items in replaydb's one Writer: visibility, order, limits, GC."""

from __future__ import annotations

import collections
import gc
import threading
import weakref

import numpy as np
import pytest
import reverb
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from replaydb.errors import ClosedError, InvalidArgumentError, RateLimiterTimeout
from replaydb.reverb.item_writer import PUSH_EVERY, ItemWriter

pytestmark = pytest.mark.tf

Step = collections.namedtuple("Step", ["obs", "action"])


def fifo_table(name: str = "t", max_size: int = 1000) -> reverb.Table:
    """Oldest item first, each sampled once (the order items went in)."""
    return reverb.Table(
        name,
        sampler=reverb.selectors.Fifo(),
        remover=reverb.selectors.Fifo(),
        max_size=max_size,
        rate_limiter=reverb.rate_limiters.MinSize(1),
        max_times_sampled=1,
    )


def item_of(value: int) -> tuple[tuple[tuple[np.ndarray, ...], bool], ...]:
    """A one-column item holding ``value`` (for tables driven without TF-Agents)."""
    return (((np.array([value], np.int64),), True),)


def value_of(item: tuple) -> int:  # type: ignore[type-arg]
    """The value in an item's first column (its first step)."""
    return int(np.asarray(item[0][0][0]).reshape(-1)[0])


def live_values(table: reverb.Table) -> list[int]:
    """The values of the table's live items, oldest first (reads the store of each)."""
    snap, store = table.live_items()
    return [value_of(store[r]) for r in snap["ref"].tolist()]


def create(writer: reverb.TrajectoryWriter, table: str, value: int) -> None:
    writer.append(Step(np.float32(value), np.int64(value)))
    writer.create_item(table, 1.0, tf.nest.map_structure(lambda h: h[-1], writer.history))


def drain(client: reverb.Client, table: str, n: int) -> list[int]:
    return [int(s.data[1]) for s in client.sample(table, n, emit_timesteps=False)]


def test_items_are_staged_until_a_flush_or_a_full_batch() -> None:
    table = fifo_table()
    server = reverb.Server([table])
    try:
        writer = server.localhost_client().trajectory_writer(num_keep_alive_refs=1)
        for i in range(10):
            create(writer, "t", i)
        assert len(table) == 0  # staged in the Writer
        writer.flush()
        assert len(table) == 10
        for i in range(10, 10 + PUSH_EVERY):
            create(writer, "t", i)
        assert len(table) == 10 + PUSH_EVERY  # a full batch goes in by itself
        create(writer, "t", 99)
        writer.end_episode()
        assert len(table) == 11 + PUSH_EVERY
        writer.close()
    finally:
        server.stop()


def test_readers_flush_staged_items_without_waiting() -> None:
    table = fifo_table()
    server = reverb.Server([table])
    try:
        client = server.localhost_client()
        writer = client.trajectory_writer(num_keep_alive_refs=1)
        for i in range(3):
            create(writer, "t", i)
        assert len(table) == 0
        assert client.server_info()["t"].current_size == 3  # the server's try_flush
        create(writer, "t", 3)
        assert table.can_sample(4)
        create(writer, "t", 4)
        assert drain(client, "t", 5) == [0, 1, 2, 3, 4]  # a sample flushes too; order kept
        writer.close()
    finally:
        server.stop()


def test_one_writer_per_table_keeps_each_tables_order() -> None:
    a, b = fifo_table("a"), fifo_table("b")
    server = reverb.Server([a, b])
    try:
        client = server.localhost_client()
        with client.trajectory_writer(num_keep_alive_refs=1) as writer:
            for i in range(150):
                create(writer, "a" if i % 3 else "b", i)
        assert live_values(a) == [i for i in range(150) if i % 3]
        assert live_values(b) == [i for i in range(150) if not i % 3]
    finally:
        server.stop()


def test_a_refused_write_stays_staged_and_a_later_flush_inserts_it() -> None:
    table = reverb.Table.queue("q", 3)
    server = reverb.Server([table])
    try:
        client = server.localhost_client()
        writer = client.trajectory_writer(num_keep_alive_refs=1)
        for i in range(5):
            create(writer, "q", i)
        with pytest.raises(reverb.errors.DeadlineExceededError):
            writer.flush(timeout_ms=20)
        assert len(table) == 3  # the queue's room went in, in order
        assert client.server_info()["q"].current_size == 3  # try_flush: refused, no wait
        assert drain(client, "q", 2) == [0, 1]
        writer.flush(timeout_ms=20)  # the two refused items, once each
        assert drain(client, "q", 3) == [2, 3, 4]
        assert len(table) == 0
        writer.close()
    finally:
        server.stop()


def test_deadline_exceeded_is_a_rate_limiter_timeout() -> None:
    assert issubclass(reverb.errors.DeadlineExceededError, RateLimiterTimeout)
    assert issubclass(reverb.errors.DeadlineExceededError, TimeoutError)


def test_a_blocked_flush_goes_in_when_a_reader_makes_room() -> None:
    table = reverb.Table.queue("q", 2)
    server = reverb.Server([table])
    try:
        client = server.localhost_client()
        writer = client.trajectory_writer(num_keep_alive_refs=1)
        for i in range(4):
            create(writer, "q", i)
        got: list[int] = []
        reader = threading.Thread(target=lambda: got.extend(drain(client, "q", 4)))
        reader.start()
        writer.flush(timeout_ms=10_000)  # waits on the queue while the reader drains it
        reader.join(timeout=10)
        assert got == [0, 1, 2, 3]
        writer.close()
    finally:
        server.stop()


@pytest.mark.parametrize("priority", [-1.0, float("nan"), float("inf"), True, "1"])
def test_a_bad_priority_is_refused_before_anything_is_staged(priority: object) -> None:
    table = fifo_table()
    server = reverb.Server([table])
    try:
        writer = server.localhost_client().trajectory_writer(num_keep_alive_refs=1)
        writer.append(Step(np.float32(0), np.int64(0)))
        with pytest.raises(InvalidArgumentError, match="priority"):
            writer.create_item("t", priority, writer.history.obs[-1])  # type: ignore[arg-type]
        writer.create_item("t", 0, writer.history.obs[-1])  # Reverb allows 0
        writer.close()
        assert len(table) == 1
    finally:
        server.stop()


def test_unknown_table_and_closed_writer_are_named() -> None:
    server = reverb.Server([fifo_table()])
    try:
        writer = server.localhost_client().trajectory_writer(num_keep_alive_refs=1)
        writer.append(Step(np.float32(0), np.int64(0)))
        with pytest.raises(InvalidArgumentError, match="no table 'nope'"):
            writer.create_item("nope", 1.0, writer.history.obs[-1])
        with pytest.raises(InvalidArgumentError, match="table name"):
            writer.create_item(["t"], 1.0, writer.history.obs[-1])  # type: ignore[arg-type]
        writer.close()
        with pytest.raises(ClosedError):
            writer.create_item("t", 1.0, writer.history.obs[-1])
    finally:
        server.stop()


def test_legacy_writer_stages_items_on_the_same_path() -> None:
    table = fifo_table()
    server = reverb.Server([table])
    try:
        client = server.localhost_client()
        writer = client.writer(2)
        for i in range(3):
            writer.append({"x": np.int64(i)})
            writer.create_item("t", 1, 1.0)
        assert len(table) == 0
        assert table.info.current_size == 3  # readers flush it as well
        with pytest.raises(InvalidArgumentError, match="priority"):
            writer.create_item("t", 1, -1.0)
        writer.append({"x": np.int64(3)})
        writer.create_item("t", 2, 1.0)
        writer.close()
        assert len(table) == 4
        client.insert({"x": np.int64(7)}, {"t": 1.0})
        assert len(table) == 5
    finally:
        server.stop()


def test_a_writer_dropped_without_close_takes_its_staged_items_along() -> None:
    table = fifo_table()
    server = reverb.Server([table])
    try:
        writer = ItemWriter(server.table)
        data = np.arange(3)
        ref = weakref.ref(data)
        writer.create("t", (((data,), True),), 1.0)
        del writer, data
        gc.collect()
        assert ref() is None  # nothing of it is kept by the table
        assert len(table) == 0
    finally:
        server.stop()


def test_item_writer_rejects_bad_max_items() -> None:
    with pytest.raises(InvalidArgumentError, match="max_items"):
        ItemWriter(lambda name: fifo_table(name), max_items=0)


@settings(max_examples=30, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["a", "b", "flush_a", "flush_b", "sample"]), st.integers(1, 9)),
        max_size=40,
    ),
    max_size=st.integers(1, 5),
)
def test_garbage_collection_never_drops_a_staged_item(
    ops: list[tuple[str, int]], max_size: int
) -> None:
    """Two writers, one small table: items staged however long are inserted intact.

    Reference model: the table holds the last ``max_size`` items in insert order;
    every flush inserts that writer's staged items in creation order.
    """
    table = reverb.Table(
        "t",
        sampler=reverb.selectors.Uniform(),
        remover=reverb.selectors.Fifo(),
        max_size=max_size,
        rate_limiter=reverb.rate_limiters.MinSize(1),
    )
    server = reverb.Server([table])
    try:
        lookup = server.table
        writers = {"a": ItemWriter(lookup, max_items=8), "b": ItemWriter(lookup, max_items=8)}
        staged: dict[str, list[int]] = {"a": [], "b": []}
        inserted: list[int] = []
        value = 0
        for op, count in ops:
            if op in writers:
                for _ in range(count):
                    writers[op].create("t", item_of(value), 1.0)
                    staged[op].append(value)
                    value += 1
                    if len(staged[op]) == 8:  # a full batch went in
                        inserted += staged[op]
                        staged[op] = []
            elif op == "sample":
                if inserted:
                    _, items = table.sample(count)
                    assert {value_of(it) for it in items} <= set(inserted[-max_size:])
            else:
                name = op[-1]
                writers[name].flush()
                inserted += staged[name]
                staged[name] = []
            assert live_values(table) == inserted[-max_size:]
        for name in "ab":
            writers[name].close()
            inserted += staged[name]
        assert live_values(table) == inserted[-max_size:]
    finally:
        server.stop()


@pytest.mark.slow
def test_stress_many_staged_items_under_heavy_churn() -> None:
    """A writer keeps 50 items staged while another pushes 5,000 through a 4-item table."""
    table = reverb.Table(
        "t",
        sampler=reverb.selectors.Uniform(),
        remover=reverb.selectors.Fifo(),
        max_size=4,
        rate_limiter=reverb.rate_limiters.MinSize(1),
    )
    server = reverb.Server([table])
    try:
        slow, fast = ItemWriter(server.table), ItemWriter(server.table)
        for v in range(50):
            slow.create("t", item_of(-1 - v), 1.0)
        for v in range(5000):
            fast.create("t", item_of(v), 1.0)
        fast.close()
        slow.close()
        assert live_values(table) == [-47, -48, -49, -50]
    finally:
        server.stop()


@settings(max_examples=30, deadline=None)
@given(
    steps=st.lists(st.booleans(), min_size=1, max_size=30),
    keep=st.integers(1, 4),
    k=st.integers(1, 5),
)
def test_history_slices_match_a_plain_list(steps: list[bool], keep: int, k: int) -> None:
    """``history[-k:]`` (the observers' fast path) and ``history[a:b]`` agree with a list.

    Each step is ``{"x": i, "y": i or None}``: a ``False`` leaves ``y`` out, after which
    ``y``'s slices over that step must refuse and ``x``'s still work; slices clamp as
    Python's do, and steps older than ``num_keep_alive_refs`` are refused.
    """
    server = reverb.Server([fifo_table()])
    try:
        writer = server.localhost_client().trajectory_writer(num_keep_alive_refs=keep)
        xs: list[int] = []
        ys: list[int | None] = []
        for i, has_y in enumerate(steps):
            writer.append({"x": np.int64(i), "y": np.int64(i) if has_y else None})
            xs.append(i)
            ys.append(i if has_y else None)
        n = len(xs)
        for column, values in (("x", xs), ("y", ys)):
            hist = writer.history[column]
            for sl in (slice(-k, None), slice(max(0, n - k), n), slice(0, n)):
                idx = range(*sl.indices(n))  # Python's slicing, clamped
                want = [values[i] for i in idx]
                if not idx or idx[0] < n - keep:  # empty, or a step no longer held
                    with pytest.raises(InvalidArgumentError):
                        hist[sl]
                elif None in want:
                    with pytest.raises(InvalidArgumentError, match="no value"):
                        hist[sl]
                else:
                    got = hist[sl]
                    assert [int(v) for v in got.numpy()] == want
                    assert got.squeeze is False
                    assert got.shape == (len(idx),)
        writer.close()
    finally:
        server.stop()


def test_create_item_takes_whole_histories_and_any_nest() -> None:
    table = fifo_table()
    server = reverb.Server([table])
    try:
        client = server.localhost_client()
        with client.trajectory_writer(num_keep_alive_refs=2) as writer:
            writer.append({"a": np.zeros(2, np.float32), "b": 1.5})
            writer.append({"a": np.ones(2, np.float32), "b": 2.5})
            hist = writer.history
            writer.create_item("t", 1.0, {"whole": hist["b"], "last": hist["a"][-1]})
        sample = next(client.sample("t", 1, emit_timesteps=False))
        last, whole = sample.data  # tf.nest order: sorted keys
        assert last.tolist() == [1.0, 1.0]
        assert whole.tolist() == [1.5, 2.5]
    finally:
        server.stop()
