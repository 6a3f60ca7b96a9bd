"""Table: writes, samples, items over windows, keys, blocking, state; against a reference model."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from replaydb import Table, load_table, save_table
from replaydb.errors import (
    InvalidArgumentError,
    RateLimiterTimeout,
    SpecMismatchError,
    WouldBlockForeverError,
)
from replaydb.rate_limiters import MinSize
from replaydb.samplers import Uniform
from replaydb.spec import Spec

SPEC = Spec({"obs": ((2,), "float32"), "step": ((), "int64")})


def steps(values: list[int]) -> dict[str, torch.Tensor]:
    v = torch.tensor(values, dtype=torch.int64)
    return {"obs": torch.stack([v.float(), -v.float()], dim=1), "step": v}


def state_equal(a: Table, b: Table) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------- basics
def test_extend_insert_sample_single_steps() -> None:
    table = Table(SPEC, 8, sampler=Uniform(seed=0))
    table.extend(steps([0, 1, 2]))
    table.insert({"obs": [3.0, -3.0], "step": 3})
    assert len(table) == 4 and table.num_steps == 4
    s = table.sample(16)
    assert s["obs"].shape == (16, 2) and s["step"].dtype == torch.int64
    assert len(s) == 16
    assert set(s["step"].tolist()) <= {0, 1, 2, 3}
    assert torch.equal(s.keys, s["step"])  # keys are global step indices here
    assert torch.allclose(s.probabilities, torch.full((16,), 0.25, dtype=torch.float64))
    assert torch.equal(s.weights, torch.ones(16))
    assert s.table_size == 4 and s.mask is None
    assert bool((s.times_sampled >= 1).all())


def test_wraparound_evicts_oldest_items() -> None:
    table = Table(SPEC, 4, sampler=Uniform(seed=1))
    table.extend(steps(list(range(10))))
    assert len(table) == 4
    seen = set(table.sample(200)["step"].tolist())
    assert seen == {6, 7, 8, 9}


def test_rejected_writes_change_nothing() -> None:
    table = Table(SPEC, 6, sampler=Uniform(seed=0))
    table.extend(steps([1, 2, 3]))
    before = table.state_dict()
    with pytest.raises(SpecMismatchError, match="'obs'"):
        table.extend({"obs": torch.zeros(2, 3), "step": torch.zeros(2, dtype=torch.int64)})
    with pytest.raises(SpecMismatchError, match="missing"):
        table.extend({"obs": torch.zeros(2, 2)})
    with pytest.raises(SpecMismatchError, match="floats are not cast to integers"):
        table.extend({"obs": torch.zeros(2, 2), "step": torch.zeros(2)})
    with pytest.raises(InvalidArgumentError, match="streams must be >= 0"):
        table.extend(steps([4, 5]), streams=torch.tensor([0, -1]))
    with pytest.raises(InvalidArgumentError, match="streams must be integers"):
        table.extend(steps([4, 5]), streams=torch.tensor([0.5, 1.0]))
    with pytest.raises(InvalidArgumentError, match=r"ends must be a scalar or have shape \(2,\)"):
        table.extend(steps([4, 5]), ends=torch.tensor([0, 1, 0]))
    with pytest.raises(InvalidArgumentError, match="codes 0"):
        table.extend(steps([4, 5]), ends=torch.tensor([0, 3]))
    with pytest.raises(InvalidArgumentError, match="priorities must be finite and > 0"):
        table.extend(steps([4, 5]), priorities=torch.tensor([1.0, float("nan")]))
    with pytest.raises(InvalidArgumentError, match="priorities must be a scalar or have shape"):
        table.extend(steps([4, 5]), priorities=torch.ones(3))
    with pytest.raises(SpecMismatchError, match="one step of shape"):
        table.insert({"obs": [1.0], "step": 1})
    after = table.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"capacity": 0}, "capacity must be a positive int"),
        ({"capacity": 2.5}, "capacity must be a positive int"),
        ({"sequence_length": 0}, "sequence_length must be an int >= 1"),
        ({"capacity": 3, "sequence_length": 4}, "at least sequence_length"),
        ({"max_times_sampled": 0}, "max_times_sampled"),
    ],
)
def test_constructor_errors(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"capacity": 10, **kwargs}
    with pytest.raises(InvalidArgumentError, match=match):
        Table(SPEC, **args)  # type: ignore[arg-type]


def test_batch_size_validation() -> None:
    table = Table(SPEC, 4)
    table.extend(steps([1]))
    for bad in (0, -1, 1.0, True):
        with pytest.raises(InvalidArgumentError, match="batch_size must be an int >= 1"):
            table.sample(bad)  # type: ignore[arg-type]


def test_update_priorities_ignores_stale_keys() -> None:
    table = Table(SPEC, 3, sampler=Uniform(seed=0))
    table.extend(steps([0, 1, 2]))
    keys = table.sample(3).keys
    table.extend(steps([3, 4]))  # overwrites keys 0 and 1
    live = table.update_priorities(torch.tensor([0, 1, 2, 3, 99]), torch.tensor([5.0, 5, 5, 5, 5]))
    assert live == 2  # keys 2 and 3 only
    assert table.update_priorities(keys, torch.ones(3)) == int((keys >= 2).sum())
    with pytest.raises(InvalidArgumentError, match="same length"):
        table.update_priorities(torch.tensor([2]), torch.tensor([1.0, 2.0]))
    with pytest.raises(InvalidArgumentError, match="finite and > 0"):
        table.update_priorities(torch.tensor([2]), torch.tensor([0.0]))


def test_info_reset_and_config_round_trip() -> None:
    table = Table(
        SPEC, 10, sequence_length=2, max_times_sampled=3, rate_limiter=MinSize(2), name="t"
    )
    table.extend(steps([0, 1, 2, 3]))
    table.sample(2)
    info = table.info()
    assert (info.name, info.size, info.num_steps, info.inserts, info.samples) == ("t", 3, 4, 3, 2)
    assert info.sampler["type"] == "Uniform" and info.rate_limiter == {
        "type": "MinSize",
        "min_size": 2,
    }
    assert info.spec == SPEC.to_json() and info.max_times_sampled == 3
    clone = Table.from_config(table.config())
    assert clone.config() == table.config() and len(clone) == 0
    table.reset()
    assert len(table) == 0 and table.num_steps == 0 and table.info().inserts == 0
    table.extend(steps([7, 8, 9]))
    assert table.sample(1)["step"].tolist() in ([[7, 8]], [[8, 9]])


def test_max_times_sampled_removes_items() -> None:
    table = Table(SPEC, 10, max_times_sampled=2, sampler=Uniform(seed=3))
    table.extend(steps([0, 1, 2]))
    total = 0
    while len(table) > 0:
        total += table.sample(1).keys.numel()
    assert total == 6


# --------------------------------------------------------- sequences
def test_windows_follow_streams_and_stop_at_episode_ends() -> None:
    table = Table(SPEC, 64, sequence_length=3, sampler=Uniform(seed=0))
    # Two interleaved streams; stream 0 ends an episode after step 104.
    for i in range(8):
        table.extend(
            steps([100 + i, 200 + i]),
            streams=torch.tensor([0, 1]),
            ends=torch.tensor([1 if i == 4 else 0, 0]),
        )
    s = table.sample(400)
    assert s["step"].shape == (400, 3) and s["obs"].shape == (400, 3, 2)
    windows = {tuple(w) for w in s["step"].tolist()}
    expected = {(100 + i, 101 + i, 102 + i) for i in range(3)}
    expected |= {(105, 106, 107)}
    expected |= {(200 + i, 201 + i, 202 + i) for i in range(6)}
    assert windows == expected
    assert len(table) == len(expected)


def test_sampling_a_table_with_steps_but_no_item_explains_why() -> None:
    table = Table(SPEC, 10, sequence_length=4)
    table.extend(steps([0, 1]))
    with pytest.raises(WouldBlockForeverError, match="no complete item yet"):
        table.sample(1)


# ---------------------------------------------------------- blocking
def test_single_thread_sampling_empty_table_raises_at_once() -> None:
    table = Table(SPEC, 10, rate_limiter=MinSize(3))
    table.extend(steps([0, 1]))
    start = time.monotonic()
    with pytest.raises(WouldBlockForeverError, match=r"holds 2 item\(s\).*needs 3"):
        table.sample(1)
    assert time.monotonic() - start < 1.0
    with pytest.raises(RateLimiterTimeout, match=r"timed out after 0\.05s"):
        table.sample(1, timeout=0.05)


def test_sample_blocks_until_another_thread_inserts() -> None:
    table = Table(SPEC, 10, rate_limiter=MinSize(2))
    table.shared = True  # writers arrive later, as with a server
    got: list[int] = []

    def learner() -> None:
        got.append(table.sample(1, timeout=10).keys.numel())

    t = threading.Thread(target=learner)
    t.start()
    time.sleep(0.1)
    assert not got
    table.extend(steps([0, 1]))
    t.join(5)
    assert got == [1]


def test_concurrent_writers_and_samplers_lose_nothing() -> None:
    table = Table(SPEC, 100_000, sampler=Uniform(seed=0))
    n_writers, per_writer = 4, 200

    def writer(w: int) -> None:
        for i in range(per_writer):
            v = w * 10_000 + i
            table.extend(steps([v]), streams=w)

    stop = threading.Event()
    errors: list[BaseException] = []

    def sampler() -> None:
        try:
            while not stop.is_set():
                if len(table):
                    s = table.sample(8)
                    # A torn row would break obs == (step, -step).
                    assert torch.equal(s["obs"][:, 0], s["step"].float())
                    assert torch.equal(s["obs"][:, 1], -s["step"].float())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(n_writers)]
    samplers = [threading.Thread(target=sampler) for _ in range(2)]
    for t in samplers + threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    for t in samplers:
        t.join()
    assert not errors
    stored = sorted(table.storage.fields["step"][: table.num_steps].tolist())
    assert stored == sorted(w * 10_000 + i for w in range(n_writers) for i in range(per_writer))


# -------------------------------------------------------------- state
def test_state_dict_round_trip_continues_identically() -> None:
    a = Table(SPEC, 16, sequence_length=2, sampler=Uniform(seed=7))
    a.extend(steps(list(range(20))), streams=torch.arange(20) % 3)
    a.sample(5)
    b = Table.from_config(a.config())
    b.load_state_dict(a.state_dict())
    assert state_equal(a, b)
    for _ in range(3):
        assert torch.equal(a.sample(9)["step"], b.sample(9)["step"])
    a.extend(steps([50, 51]), streams=torch.tensor([0, 1]))
    b.extend(steps([50, 51]), streams=torch.tensor([0, 1]))
    assert state_equal(a, b)


# --------------------------------------------------- reference model
class TableMachine(RuleBasedStateMachine):
    """Random interleaved streams and episode ends, checked against a list of steps."""

    @initialize(capacity=st.integers(2, 12), seq=st.integers(1, 3))
    def setup(self, capacity: int, seq: int) -> None:
        self.table = Table(SPEC, max(capacity, seq), sequence_length=seq, sampler=Uniform(seed=0))
        self.log: list[tuple[int, int, int]] = []  # (value, stream, end) per step, key = index
        self.next_value = 0

    @rule(streams=st.lists(st.integers(0, 2), min_size=1, max_size=6), data=st.data())
    def extend(self, streams: list[int], data: st.DataObject) -> None:
        ends = data.draw(
            st.lists(st.sampled_from([0, 0, 0, 1, 2]), min_size=len(streams), max_size=len(streams))
        )
        values = list(range(self.next_value, self.next_value + len(streams)))
        self.next_value += len(streams)
        self.table.extend(steps(values), streams=torch.tensor(streams), ends=torch.tensor(ends))
        self.log.extend(zip(values, streams, ends, strict=True))

    def expected_windows(self) -> set[tuple[int, ...]]:
        cap, seq = self.table.capacity, self.table.sequence_length
        live_from = max(0, len(self.log) - cap)
        episodes: dict[int, list[int]] = {}
        out: set[tuple[int, ...]] = set()
        for key, (_, stream, end) in enumerate(self.log):
            ep = episodes.setdefault(stream, [])
            ep.append(key)
            if len(ep) >= seq:
                window = ep[-seq:]
                if window[0] >= live_from:
                    out.add(tuple(self.log[k][0] for k in window))
            if end:
                episodes[stream] = []
        return out

    @rule()
    def save_and_load(self) -> None:
        path = Path(tempfile.mkdtemp()) / "t.safetensors"
        save_table(self.table, path)
        restored = load_table(path)
        assert state_equal(self.table, restored)
        self.table = restored

    @invariant()
    def items_match_reference(self) -> None:
        if not hasattr(self, "table"):
            return
        expected = self.expected_windows()
        assert len(self.table) == len(expected)
        if expected:
            s = self.table.sample(64)
            got = s["step"].view(64, -1).tolist()
            assert {tuple(w) for w in got} <= expected


TestTableMachine = TableMachine.TestCase
TestTableMachine.settings = settings(max_examples=40, stateful_step_count=20, deadline=None)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), cap=st.integers(1, 10))
def test_len_is_min_of_written_and_capacity(n: int, cap: int) -> None:
    table = Table(SPEC, cap)
    table.extend(steps(list(range(n))))
    assert len(table) == min(n, cap) == table.num_steps


def test_single_insert_records_stream_and_end_on_every_path() -> None:
    from replaydb.samplers import Prioritized

    for sampler in (Uniform(seed=0), Prioritized(seed=0)):
        table = Table(SPEC, 3, sampler=sampler)
        table.insert({"obs": [1.0, -1.0], "step": 1}, stream=3, end=2)
        table.insert({"obs": [2.0, -2.0], "step": 2}, stream=1, end=True)
        table.insert({"obs": [3.0, -3.0], "step": 3}, stream=0, priority=2.0)
        table.insert({"obs": [4.0, -4.0], "step": 4}, stream=5)  # overwrites row 0
        assert table.storage.stream.tolist() == [5, 1, 0]
        assert table.storage.end.tolist() == [0, 1, 0]
        assert len(table) == 3
        assert set(table.sample(64)["step"].tolist()) == {2, 3, 4}
