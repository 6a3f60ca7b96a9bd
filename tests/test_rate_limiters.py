"""Rate limiters with real threads: blocking, timeouts and immediate errors."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import pytest
import torch

from replaydb import Spec, Table, load_table, save_table
from replaydb.errors import InvalidArgumentError, RateLimiterTimeout, WouldBlockForeverError
from replaydb.rate_limiters import (
    MinSize,
    Queue,
    RateLimiter,
    SampleToInsertRatio,
    Stack,
    rate_limiter_from_config,
)

SPEC = Spec({"x": ()})


def test_stack_and_queue_share_numbers_not_a_class() -> None:
    assert not issubclass(Stack, Queue)
    assert issubclass(Stack, RateLimiter)
    q, s = Queue(3), Stack(3)
    assert (q.min_diff, q.max_diff, q.min_size_to_sample) == (s.min_diff, s.max_diff, 1)
    assert s.config() == {"type": "Stack", "size": 3}
    with pytest.raises(InvalidArgumentError, match="size must be an int >= 1, got 0"):
        Stack(0)


@pytest.mark.parametrize(
    "limiter",
    [
        MinSize(3),
        SampleToInsertRatio(2.0, 5, 6.0),
        SampleToInsertRatio(1.0, 2, (0.0, 4.0)),
        Queue(4),
        Stack(2),
        RateLimiter(1.0, 1, -math.inf, math.inf),
    ],
)
def test_configs_round_trip(limiter: RateLimiter) -> None:
    again = rate_limiter_from_config(limiter.config())
    assert again.config() == limiter.config()
    assert (again.min_diff, again.max_diff) == (limiter.min_diff, limiter.max_diff)


def test_never_checks() -> None:
    assert Queue(2).never_samples(3)
    assert not Queue(2).never_samples(2)
    assert Queue(2).never_inserts(3)
    assert not Queue(2).never_inserts(2)
    assert not MinSize(5).never_samples(10**6)
    assert not MinSize(5).never_inserts(10**6)
    lim = SampleToInsertRatio(4.0, 10, 40.0)  # diff in [0, 80]
    assert lim.never_samples(81)
    assert not lim.never_samples(80)
    assert lim.never_inserts(30)
    assert not lim.never_inserts(10)


def test_single_thread_sample_below_min_size_raises_at_once() -> None:
    table = Table(SPEC, 10, rate_limiter=MinSize(3))
    table.extend({"x": torch.zeros(2)})
    t0 = time.monotonic()
    with pytest.raises(WouldBlockForeverError, match=r"holds 2 item.*needs 3"):
        table.sample(1)
    assert time.monotonic() - t0 < 0.5
    empty = Table(SPEC, 10)
    with pytest.raises(WouldBlockForeverError, match="Insert more items first"):
        empty.sample(1)


def test_timeout_raises_timeout_error() -> None:
    table = Table(SPEC, 10, rate_limiter=MinSize(3))
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"timed out after 0\.2s"):
        table.sample(1, timeout=0.2)
    assert 0.15 < time.monotonic() - t0 < 2.0
    with pytest.raises(RateLimiterTimeout):
        table.sample(1, timeout=0)
    with pytest.raises(InvalidArgumentError, match="timeout must be None or a number >= 0"):
        table.sample(1, timeout=-1)


def test_sample_blocks_until_another_thread_inserts() -> None:
    table = Table(SPEC, 10, rate_limiter=MinSize(2))
    table.shared = True  # a writer will arrive later
    out: list[torch.Tensor] = []
    start = threading.Event()

    def learner() -> None:
        start.set()
        out.append(table.sample(4, timeout=5)["x"])

    t = threading.Thread(target=learner)
    t.start()
    start.wait()
    time.sleep(0.1)
    assert not out  # still blocked
    table.insert({"x": 1.0})
    time.sleep(0.05)
    assert not out
    table.insert({"x": 2.0})
    t.join(5)
    assert out
    assert set(out[0].tolist()) <= {1.0, 2.0}


def test_sample_to_insert_ratio_blocks_inserts_until_samples() -> None:
    lim = SampleToInsertRatio(1.0, 2, 2.0)  # diff in [0, 4]
    table = Table(SPEC, 100, rate_limiter=lim)
    table.extend({"x": torch.zeros(4)})
    with pytest.raises(WouldBlockForeverError, match="allows no more inserts"):
        table.insert({"x": 1.0})
    with pytest.raises(RateLimiterTimeout):
        table.insert({"x": 1.0}, timeout=0.05)
    done = threading.Event()

    def actor() -> None:
        table.insert({"x": 1.0}, timeout=5)
        done.set()

    t = threading.Thread(target=actor)
    t.start()
    time.sleep(0.1)
    assert not done.is_set()
    table.sample(1)
    t.join(5)
    assert done.is_set()
    assert (table.rate_limiter.inserts, table.rate_limiter.samples) == (5, 1)


def test_waiter_gives_up_when_the_other_thread_exits() -> None:
    table = Table(SPEC, 10, rate_limiter=MinSize(5))
    helper = threading.Thread(target=lambda: table.insert({"x": 0.0}))
    helper.start()
    helper.join()
    blocker = threading.Event()

    def short_lived() -> None:
        table.insert({"x": 1.0})
        blocker.wait(0.3)

    t = threading.Thread(target=short_lived)
    t.start()
    t0 = time.monotonic()
    with pytest.raises(WouldBlockForeverError):
        table.sample(1)  # blocks while `t` lives, then raises
    assert time.monotonic() - t0 < 3.0
    t.join()


def test_restored_table_can_sample_and_keeps_counters(tmp_path: Path) -> None:
    table = Table(SPEC, 100, rate_limiter=SampleToInsertRatio(2.0, 4, 8.0))
    table.extend({"x": torch.arange(6.0)})
    table.sample(3)
    restored = load_table(save_table(table, tmp_path / "t"))
    assert (restored.rate_limiter.inserts, restored.rate_limiter.samples) == (6, 3)
    assert torch.equal(restored.sample(2).keys, table.sample(2).keys)


def test_queue_limiter_blocks_sample_until_insert_from_thread() -> None:
    q = Table.queue(SPEC, 4)
    got: list[float] = []

    def consumer() -> None:
        got.extend(q.sample(2, timeout=5)["x"].tolist())

    t = threading.Thread(target=consumer)
    t.start()
    time.sleep(0.1)
    assert not got
    q.extend({"x": torch.tensor([1.0, 2.0])})
    t.join(5)
    assert got == [1.0, 2.0]
