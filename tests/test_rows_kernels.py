"""The compiled passes of the Velora buffer's short paths against the numpy ones.

``RowWriter.extend`` writes a block's records in one kernel call (``record_rows``)
where numba is installed and through numpy slices without it;
``Table.sample_transitions`` of a prioritized table draws, counts, gathers and weighs
in one call (``Prioritized.draw_rows``, kernel ``prio_take``). Each must leave the
state, and return the draws, of the path it replaces.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from replaydb import ReplayBuffer, Spec, Table, _kernels
from replaydb.errors import InvalidArgumentError
from replaydb.samplers import Prioritized, Uniform
from replaydb.sum_tree import SumTree

pytestmark = pytest.mark.skipif(_kernels.get() is None, reason="numba is not installed")

SPEC = Spec({"obs": (3,), "act": (2,), "reward": (1,), "done": (1,)})


@pytest.fixture(autouse=True)
def _restore_kernels() -> Iterator[None]:
    yield
    _kernels.use(True)


def same_state(a: Table, b: Table) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert a.total_steps_written == b.total_steps_written
    assert len(a) == len(b)


def table(kind: str, capacity: int, kernels: bool) -> Table:
    _kernels.use(kernels)
    sampler = Uniform(seed=1) if kind == "uniform" else Prioritized(seed=1)
    t = Table(SPEC, capacity, sampler=sampler)
    _kernels.use(True)
    return t


@pytest.mark.parametrize("kind", ["uniform", "prioritized"])
@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 9), min_size=1, max_size=12),
    capacity=st.integers(1, 8),
    removals=st.lists(st.integers(0, 20), max_size=3),
)
def test_block_records_alike_with_and_without_kernels(
    kind: str, sizes: list[int], capacity: int, removals: list[int]
) -> None:
    fast, slow = table(kind, capacity, True), table(kind, capacity, False)
    writers = [t.row_writer() for t in (fast, slow)]
    assert writers[0] is not None and writers[1] is not None
    assert writers[0]._record_rows is not None and writers[1]._record_rows is None
    start = 0
    for i, n in enumerate(sizes):
        block = torch.arange(start * 7, (start + n) * 7, dtype=torch.float32).view(n, 7)
        wrote = {w.extend((block[:, :4], block[:, 4:]), n) for w in writers}
        assert wrote == {n <= capacity}
        start += n
        if i < len(removals):
            for t in (fast, slow):
                t.remove([removals[i]])
        same_state(fast, slow)


def test_block_records_count_fresh_slots_as_the_sampler_does() -> None:
    """A removal frees a slot inside a later block: size and sampler agree."""
    t = table("uniform", 8, True)
    w = t.row_writer()
    assert w is not None
    assert w.extend((torch.zeros(8, 7),), 8)
    assert t.remove([2, 5]) == 2 and len(t) == 6
    assert w.extend((torch.ones(4, 7),), 4)  # rows 0..3: slot 2 was free
    assert len(t) == 7 and t.sampler.engine.count == 7


def prio_table(capacity: int, kernels: bool, seed: int) -> Table:
    _kernels.use(kernels)
    spec = ReplayBuffer.transition_spec(3, 2, 4)
    t = Table(spec, capacity, sampler=Prioritized(alpha=0.7, beta=0.5, seed=seed))
    _kernels.use(True)
    g = torch.Generator().manual_seed(seed)
    n = capacity + capacity // 2
    t.extend({k: torch.rand(n, *f.shape, generator=g) for k, f in spec.items()})
    keys = torch.arange(n - capacity, n)
    t.update_priorities(keys, torch.rand(capacity, generator=g, dtype=torch.float64) * 4 + 0.1)
    return t


@settings(max_examples=20, deadline=None)
@given(
    capacity=st.integers(1, 300),
    batches=st.lists(st.integers(1, 64), min_size=1, max_size=4),
    beta=st.sampled_from([None, 0.0, 0.4, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_fused_transitions_match_the_numpy_path(
    capacity: int, batches: list[int], beta: float | None, seed: int
) -> None:
    fast, slow = prio_table(capacity, True, seed), prio_table(capacity, False, seed)
    assert fast._prio_items is not None and slow._prio_items is None
    for b in batches:
        (data, keys, w), (ref, rkeys, rw) = (
            t.sample_transitions(b, beta=beta) for t in (fast, slow)
        )
        assert keys is not None and rkeys is not None and w is not None and rw is not None
        assert torch.equal(keys, rkeys)
        assert w.shape == (b, 1) and w.dtype == torch.float32
        torch.testing.assert_close(w, rw, rtol=1e-6, atol=0)
        assert all(torch.equal(data[k], ref[k]) for k in ref)
        pri = torch.rand(b, generator=torch.Generator().manual_seed(b), dtype=torch.float64)
        assert fast.update_priorities(keys, pri + 0.1) == slow.update_priorities(rkeys, pri + 0.1)
    same_state(fast, slow)


def test_draw_rows_draws_what_draw_items_draws() -> None:
    samplers = []
    for _ in range(2):
        s = Prioritized(alpha=0.6, beta=0.3, seed=7)
        s.bind(40, torch.device("cpu"))
        s.on_insert(torch.arange(30), torch.linspace(0.5, 9.0, 30, dtype=torch.float64))
        samplers.append(s)
    item_key = np.where(np.arange(40) < 30, np.arange(40) + 100, -1)
    rows = np.arange(40 * 5, dtype=np.float32).reshape(40, 5)
    times_a, times_b = np.zeros(40, np.int64), np.zeros(40, np.int64)
    for beta in (None, 0.0, 0.9):
        sel, keys, _, _ = samplers[0].draw_items(17, beta, item_key, times_a, np.ones(40))
        out, keys_b, w = samplers[1].draw_rows(17, beta, item_key, times_b, rows)
        np.testing.assert_array_equal(keys_b, keys.numpy())
        np.testing.assert_array_equal(out, rows[sel.slots.numpy()])
        assert sel.weights is not None
        np.testing.assert_array_equal(w, sel.weights.numpy())
        np.testing.assert_array_equal(times_a, times_b)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.5", True])
def test_draw_rows_rejects_a_bad_beta_before_counting(bad: object) -> None:
    s = Prioritized(seed=0)
    s.bind(4, torch.device("cpu"))
    s.on_insert(torch.tensor([0, 1]), torch.tensor([1.0, 3.0], dtype=torch.float64))
    times = np.zeros(4, np.int64)
    with pytest.raises(InvalidArgumentError, match="beta must"):
        s.draw_rows(2, bad, np.arange(4), times, np.zeros((4, 2), np.float32))  # type: ignore[arg-type]
    assert not times.any()


def test_draw_rows_on_an_empty_tree_counts_nothing() -> None:
    s = Prioritized(seed=0)
    s.bind(4, torch.device("cpu"))
    times = np.zeros(4, np.int64)
    with pytest.raises(InvalidArgumentError, match="empty SumTree"):
        s.draw_rows(3, None, np.full(4, -1), times, np.zeros((4, 2), np.float32))
    assert not times.any()


def test_large_tree_search_matches_numpy() -> None:
    """Levels of 2**15 values and more are touched before the search: same draws."""
    trees = []
    for enabled in (True, False):
        _kernels.use(enabled)
        trees.append(SumTree(300_000))
    _kernels.use(True)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 300_000, 5000)
    val = rng.random(5000) * 3
    for tree in trees:
        tree.update_numpy(idx, val, offset=0.0, power=0.6)
    u = rng.random(512)
    for got, want in zip(trees[0].sample_numpy(u), trees[1].sample_numpy(u), strict=True):
        np.testing.assert_array_equal(got, want)
