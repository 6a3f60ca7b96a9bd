"""The Velora buffer's short paths (Table.row_writer, Table.sample_transitions) against
the general ones: the same table state after every write, the same draws, nothing
written by a refused call, and the fallbacks."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from replaydb import ReplayBuffer, Spec, Table
from replaydb.errors import InvalidArgumentError
from replaydb.rate_limiters import SampleToInsertRatio
from replaydb.samplers import Fifo, Prioritized, Uniform

SPEC = Spec({"obs": (3,), "act": (2,), "reward": (1,), "done": (1,)})
KEYS = ("states", "actions", "rewards", "next_states", "dones", "hiddens")


def same_state(a: Table, b: Table) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert a.total_steps_written == b.total_steps_written
    assert len(a) == len(b)


def rows(start: int, n: int) -> torch.Tensor:
    """``[n, 7]`` rows whose values name the step (so a misplaced row shows)."""
    base = torch.arange(start, start + n, dtype=torch.float32).unsqueeze(1)
    return base + torch.arange(7, dtype=torch.float32) / 10


def as_steps(block: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "obs": block[:, :3],
        "act": block[:, 3:5],
        "reward": block[:, 5:6],
        "done": block[:, 6:],
    }


def make_sampler(kind: str) -> Uniform | Prioritized:
    return Uniform(seed=1) if kind == "uniform" else Prioritized(seed=1)


# --------------------------------------------------------------- row writer
@pytest.mark.parametrize("kind", ["uniform", "prioritized"])
@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 9), min_size=1, max_size=12),
    capacity=st.integers(1, 8),
    removals=st.lists(st.integers(0, 20), max_size=3),
)
def test_writer_leaves_the_state_extend_leaves(
    kind: str, sizes: list[int], capacity: int, removals: list[int]
) -> None:
    """Rows (n = 0 as single adds) and blocks, wrapping and removals between them."""
    ours = Table(SPEC, capacity, sampler=make_sampler(kind))
    ref = Table(SPEC, capacity, sampler=make_sampler(kind))
    writer = ours.row_writer(scalars=2)
    assert writer is not None
    start = 0
    for i, n in enumerate(sizes):
        if n == 0:
            block = rows(start, 1)
            parts = (block[0, :3], block[0, 3:5])
            assert writer.add(parts, (float(block[0, 5]), float(block[0, 6])))
            n = 1
        elif n > capacity:  # more than the ring: refused, nothing written
            block = rows(start, n)
            assert not writer.extend((block[:, :5], block[:, 5:]), n)
            same_state(ours, ref)
            continue
        else:
            block = rows(start, n)
            assert writer.extend((block[:, :5], block[:, 5:]), n)
        ref.extend(as_steps(block))
        start += n
        if i < len(removals):  # a removal frees a slot: the next write refills it
            ours.remove([removals[i]])
            ref.remove([removals[i]])
        same_state(ours, ref)


def test_writer_is_only_for_single_dtype_cpu_single_step_tables(tmp_path: object) -> None:
    assert Table(SPEC, 4).row_writer() is not None
    two_dtypes = Spec({"obs": (3,), "count": ((), "int64")})
    assert Table(two_dtypes, 4).row_writer() is None
    assert Table(SPEC, 4, sequence_length=2).row_writer() is None
    assert Table(SPEC, 4, frame_stack={"obs": 2}).row_writer() is None
    assert Table.queue(SPEC, 4).row_writer() is None  # consumes its items
    assert Table(SPEC, 4, path=str(tmp_path)).row_writer() is None


@pytest.mark.parametrize("bad", [-1, 8, 1.0, True, None])
def test_row_writer_rejects_bad_scalars(bad: object) -> None:
    with pytest.raises(InvalidArgumentError, match="scalars must be an int in \\[0, 7\\]"):
        Table(SPEC, 4).row_writer(scalars=bad)  # type: ignore[arg-type]


def test_refused_parts_write_nothing() -> None:
    table = Table(SPEC, 4)
    writer = table.row_writer(scalars=2)
    assert writer is not None
    before = table.state_dict()
    grad = torch.zeros(3, requires_grad=True)
    assert not writer.add((grad, torch.zeros(2)), (1.0, 0.0))  # cat refuses autograd
    assert not writer.add((torch.zeros(3), torch.zeros(2)), ("x", 0.0))  # not a number
    assert not writer.add((torch.zeros(3), torch.zeros(2)), (1.0,))  # a number short
    block = torch.zeros(2, 7, requires_grad=True)
    assert not writer.extend((block,), 2)
    assert not writer.extend((torch.zeros(2, 7),), 0)
    assert not writer.extend((torch.zeros(5, 7),), 5)  # more than the capacity
    after = table.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert table.total_steps_written == 0


def test_writer_does_not_wait_on_the_limiter() -> None:
    """A write the limiter would hold back is left to extend (which waits or raises)."""
    limiter = SampleToInsertRatio(1.0, min_size_to_sample=1, error_buffer=1.5)
    table = Table(SPEC, 8, rate_limiter=limiter)
    writer = table.row_writer(scalars=2)
    assert writer is not None
    part = (torch.zeros(3), torch.zeros(2))
    written = 0
    while writer.add(part, (0.0, 0.0)):
        written += 1
        assert written < 8
    assert not writer.extend((torch.zeros(1, 7),), 1)
    assert limiter.inserts == written == len(table)
    table.sample(1)
    assert writer.add(part, (0.0, 0.0))  # the sample made room


def test_writer_survives_reset_and_load() -> None:
    table = Table(SPEC, 4, sampler=Uniform(seed=0))
    writer = table.row_writer(scalars=2)
    assert writer is not None
    assert writer.extend((rows(0, 3),), 3)
    saved = {k: v.clone() for k, v in table.state_dict().items()}
    table.reset()
    assert writer.add((torch.ones(3), torch.ones(2)), (1.0, 1.0))
    assert len(table) == 1 and table.total_steps_written == 1
    table.reset()
    table.load_state_dict(saved)
    assert writer.extend((rows(3, 2),), 2)
    ref = Table(SPEC, 4, sampler=Uniform(seed=0))
    ref.extend(as_steps(rows(0, 3)))
    ref.extend(as_steps(rows(3, 2)))
    same_state(table, ref)


# ----------------------------------------------------------- Velora buffer
def seeded(capacity: int, state_dim: int, action_dim: int, hidden_dim: int) -> ReplayBuffer:
    spec = ReplayBuffer.transition_spec(state_dim, action_dim, hidden_dim)
    table = Table(spec, capacity, sampler=Uniform(seed=0))
    return ReplayBuffer(capacity, state_dim, action_dim, hidden_dim, table=table)


def transition(i: int, hidden_dim: int = 4) -> tuple[torch.Tensor, ...]:
    v = float(i)
    return (
        torch.full((3,), v),
        torch.full((2,), v + 0.25),
        torch.tensor(v + 0.5),
        torch.full((3,), v + 0.75),
        torch.tensor(float(i % 2)),
        torch.full((hidden_dim,), -v),
    )


FORMS = {
    "numbers": lambda t: (t[0], t[1], float(t[2]), t[3], bool(t[4]), t[5]),
    "2-d parts": lambda t: (
        t[0][None],
        t[1][None],
        float(t[2]),
        t[3][None],
        bool(t[4]),
        t[5][None],
    ),
    "mixed": lambda t: (t[0], t[1][None], t[2], t[3], t[4], t[5][None]),
    "numpy numbers": lambda t: (t[0], t[1], np.float32(t[2]), t[3], np.bool_(t[4]), t[5]),
    "float64": lambda t: tuple(x.double() for x in t),
    "grad": lambda t: (t[0].requires_grad_(), t[1], t[2], t[3], t[4], t[5]),
    "lists": lambda t: tuple(x.tolist() for x in t),
}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("prioritized", [False, True])
def test_every_form_of_add_stores_what_the_checked_path_stores(
    form: str, prioritized: bool
) -> None:
    def make() -> ReplayBuffer:
        if prioritized:
            return ReplayBuffer.prioritized(5, 3, 2, 4, seed=0)
        return seeded(5, 3, 2, 4)

    ours, ref = make(), make()
    for i in range(7):  # wraps the ring
        ours.add(*FORMS[form](transition(i)))
        t = transition(i)
        ref.table.extend(
            {
                "states": t[0][None],
                "actions": t[1][None],
                "next_states": t[3][None],
                "hiddens": t[5][None],
                "rewards": t[2].reshape(1, 1),
                "dones": t[4].reshape(1, 1),
            }
        )
    same_state(ours.table, ref.table)


def test_add_without_hidden_and_with_one_action_value() -> None:
    buf = ReplayBuffer(4, 3, 2, 4)
    buf.add(torch.ones(3), torch.tensor(2.0), 1.0, torch.ones(3), True)
    assert buf.actions[0].tolist() == [2.0, 2.0]
    assert buf.hiddens[0].tolist() == [0.0] * 4
    assert buf.dones[0].tolist() == [1.0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((torch.zeros(4), torch.zeros(2), 1.0, torch.zeros(3), False, torch.zeros(4)), "state"),
        ((torch.zeros(3), torch.zeros(3), 1.0, torch.zeros(3), False, torch.zeros(4)), "action"),
        ((torch.zeros(3), torch.zeros(2), 1.0, torch.zeros(3), False, torch.zeros(5)), "hidden"),
        ((torch.zeros(3), torch.zeros(2), None, torch.zeros(3), False, torch.zeros(4)), "reward"),
        ((torch.zeros(3), torch.zeros(2), 1.0, torch.zeros(3), "no", torch.zeros(4)), "done"),
        ((torch.zeros(3), torch.zeros(2), 1.0, torch.zeros(1, 3, 1), False, None), "next_state"),
    ],
)
def test_a_refused_add_names_the_argument_and_changes_nothing(
    args: tuple[object, ...], message: str
) -> None:
    buf = ReplayBuffer(4, 3, 2, 4)
    buf.add(*transition(0))
    before = buf.table.state_dict()
    with pytest.raises(InvalidArgumentError, match=message):
        buf.add(*args)
    after = buf.table.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("prioritized", [False, True])
@settings(max_examples=20, deadline=None)
@given(sizes=st.lists(st.integers(1, 7), min_size=1, max_size=6), one_d=st.booleans())
def test_add_multi_stores_what_extend_stores(
    prioritized: bool, sizes: list[int], one_d: bool
) -> None:
    def make() -> ReplayBuffer:
        if prioritized:
            return ReplayBuffer.prioritized(6, 3, 1, 2, seed=0)
        return seeded(6, 3, 1, 2)

    ours, ref = make(), make()
    start = 0
    for n in sizes:
        ids = torch.arange(start, start + n, dtype=torch.float32).unsqueeze(1)
        cols = {
            "states": ids.expand(n, 3),
            "actions": ids + 0.5,
            "rewards": ids * 2,
            "next_states": ids.expand(n, 3) + 1,
            "dones": ids.remainder(2),
            "hiddens": -ids.expand(n, 2),
        }
        given_cols = dict(cols)
        if one_d:
            for k in ("actions", "rewards"):
                given_cols[k] = cols[k][:, 0]
            given_cols["dones"] = cols["dones"][:, 0].bool()
        ours.add_multi(*(given_cols[k] for k in KEYS))
        ref.table.extend(cols)
        start += n
        same_state(ours.table, ref.table)


def test_add_multi_reads_rows_of_its_own_storage() -> None:
    """Inputs that are views of the buffer's rows (an agent re-adding a batch)."""
    buf = ReplayBuffer(8, 3, 2, 4)
    for i in range(4):
        buf.add(*transition(i))
    expected = [getattr(buf, k)[:4].clone() for k in KEYS]
    views = [getattr(buf, k)[:4] for k in KEYS]
    buf.add_multi(*views)
    for k, want in zip(KEYS, expected, strict=True):
        assert torch.equal(getattr(buf, k)[4:8], want), k


def test_add_multi_refusals_change_nothing() -> None:
    buf = ReplayBuffer(8, 3, 2, 4)
    buf.add(*transition(0))
    before = buf.table.state_dict()
    z = torch.zeros
    bad = [
        ((z(2, 3), z(2, 2), z(2), z(3, 3), z(2), z(2, 4)), "rows"),
        ((z(2, 3), z(2, 3), z(2), z(2, 3), z(2), z(2, 4)), "actions"),
        ((z(2, 3), z(2, 2), z(2, 2), z(2, 3), z(2), z(2, 4)), "rewards"),
        ((z(2, 3), z(2, 2), z(2), z(2, 3), z(2), z(2, 5)), "hiddens"),
        ((z(2, 3), z(2, 2), z(2), z(2, 3), [None, None], z(2, 4)), "dones"),
    ]
    for args, message in bad:
        with pytest.raises((InvalidArgumentError, TypeError), match=message):
            buf.add_multi(*args)
    after = buf.table.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_threads_adding_to_a_prioritized_buffer_lose_nothing() -> None:
    buf = ReplayBuffer.prioritized(4000, 3, 2, 4, seed=0)

    def run(t: int) -> None:
        for i in range(t * 500, t * 500 + 500):
            if i % 2:
                buf.add(*transition(i))
            else:
                buf.add_multi(*(x.unsqueeze(0) for x in transition(i)))

    pool = [threading.Thread(target=run, args=(t,)) for t in range(8)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert len(buf) == 4000
    assert sorted(buf.states[:, 0].long().tolist()) == list(range(4000))
    assert torch.equal(buf.hiddens[:, 0], -buf.states[:, 0])
    assert buf.table.priority_total() == pytest.approx(4000 * (1.0 + 1e-6) ** 0.6)


# ------------------------------------------------------ sample_transitions
@pytest.mark.parametrize("max_times", [None, 2])
@pytest.mark.parametrize("beta", [None, 0.0, 0.7])
def test_sample_transitions_draws_what_sample_draws(
    max_times: int | None, beta: float | None
) -> None:
    def make() -> Table:
        spec = ReplayBuffer.transition_spec(3, 2, 4)
        t = Table(spec, 50, sampler=Prioritized(seed=3), max_times_sampled=max_times)
        t.extend({k: torch.rand(40, *f.shape, generator=torch.Generator().manual_seed(0))
                  for k, f in spec.items()})  # fmt: skip
        t.update_priorities(torch.arange(40), torch.linspace(0.1, 4.0, 40))
        return t

    ours, ref = make(), make()
    for _ in range(6):
        data, keys, weights = ours.sample_transitions(8, beta=beta)
        s = ref.sample(8, beta=beta)
        assert keys is not None and weights is not None
        assert torch.equal(keys, s.keys)
        assert weights.shape == (8, 1) and torch.equal(weights[:, 0], s.weights)
        assert data.keys() == s.data.keys()
        assert all(torch.equal(data[k], s.data[k]) for k in data)
        same_state(ours, ref)


def test_sample_transitions_of_other_samplers() -> None:
    spec = Spec({"x": (2,)})
    uniform, ref = (
        Table(spec, 10, sampler=Uniform(seed=0)),
        Table(spec, 10, sampler=Uniform(seed=0)),
    )
    for t in (uniform, ref):
        t.extend({"x": torch.arange(12.0).reshape(6, 2)})
    data, keys, weights = uniform.sample_transitions(4)
    assert keys is None and weights is None
    assert torch.equal(data["x"], ref.sample_data(4)["x"])
    fifo = Table(spec, 10, sampler=Fifo())
    fifo.extend({"x": torch.arange(12.0).reshape(6, 2)})
    data, keys, weights = fifo.sample_transitions(2)
    assert keys is None and data["x"].shape == (2, 2)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_sample_transitions_rejects_bad_batch_sizes(bad: object) -> None:
    t = Table(Spec({"x": ()}), 4, sampler=Prioritized(seed=0))
    t.extend({"x": torch.zeros(4)})
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        t.sample_transitions(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="beta"):
        t.sample_transitions(2, beta=1.5)


@pytest.mark.parametrize(
    "spec",
    [Spec({"x": (), "y": (2, 2)}), Spec({"x": (2,), "n": ((1,), "int64")})],
    ids=["not vectors", "two dtypes"],
)
def test_sample_transitions_of_other_layouts(spec: Spec) -> None:
    """Tables the one-block gather does not take: Storage.gather's shapes."""

    def make() -> Table:
        t = Table(spec, 10, sampler=Prioritized(seed=2))
        t.extend({k: torch.ones(6, *f.shape, dtype=f.dtype) for k, f in spec.items()})
        return t

    ours, ref = make(), make()
    data, keys, _ = ours.sample_transitions(4)
    s = ref.sample(4)
    assert keys is not None and torch.equal(keys, s.keys)
    assert all(data[k].shape == s.data[k].shape and torch.equal(data[k], s.data[k]) for k in spec)


def test_writers_and_samplers_at_once_never_tear() -> None:
    """add, add_multi (wrapping the ring) and sample in eight threads on one buffer."""
    buf = ReplayBuffer(3000, 3, 2, 4)
    for _ in range(16):  # a sample of 16 from fewer raises (NotEnoughDataError)
        buf.add(*transition(0))
    torn: list[str] = []

    def write(t: int) -> None:
        for i in range(t * 1000 + 1, t * 1000 + 1000, 8):
            if t % 2:
                for j in range(i, i + 8):
                    buf.add(*transition(j))
            else:
                batch = [transition(j) for j in range(i, i + 8)]
                buf.add_multi(*(torch.stack([b[k] for b in batch]) for k in range(6)))

    def sample() -> None:
        for _ in range(300):
            b = buf.sample(16)
            v = b.states[:, :1]
            if not (
                torch.equal(b.states, v.expand(16, 3))
                and torch.equal(b.actions, v.expand(16, 2) + 0.25)
                and torch.equal(b.hiddens, -v.expand(16, 4))
                and torch.equal(b.rewards, v + 0.5)
            ):
                torn.append("a sampled transition was torn")

    pool = [threading.Thread(target=write, args=(t,)) for t in range(6)]
    pool += [threading.Thread(target=sample) for _ in range(2)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert not torn
    assert len(buf) == 3000
    ids = buf.states[:, 0]
    assert torch.equal(buf.next_states[:, 0], ids + 0.75)
    assert torch.equal(buf.dones[:, 0], ids.remainder(2))
