"""The compiled CPU kernels against the numpy paths they replace: same samples, same state.

Each test builds two tables with the same seed, one with the kernels and one without
(``replaydb._kernels.use``), drives both through the same random writes, samples and
priority updates, and requires identical results. Importance weights may differ in the
last bits (numba's ``pow`` and numpy's are different routines), so they are compared
with a tight tolerance; everything else is compared exactly.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from replaydb import Spec, Table, _kernels
from replaydb.errors import InvalidArgumentError
from replaydb.samplers import Prioritized, Uniform
from replaydb.sum_tree import SumTree

pytestmark = pytest.mark.skipif(_kernels.get() is None, reason="numba is not installed")

SPEC = Spec({"obs": ((3,), "float32"), "reward": ((), "float32"), "step": ((), "int64")})


@pytest.fixture(autouse=True)
def _restore_kernels() -> Iterator[None]:
    yield
    _kernels.use(True)


def pair(
    prioritized: bool, capacity: int, sequence_length: int, pad: bool, seed: int
) -> tuple[Table, Table]:
    """The same table twice: with the compiled kernels, and with the numpy paths."""
    tables = []
    for enabled in (True, False):
        _kernels.use(enabled)
        sampler = Prioritized(alpha=0.7, beta=0.5, seed=seed) if prioritized else Uniform(seed)
        tables.append(
            Table(
                SPEC,
                capacity,
                sampler=sampler,
                sequence_length=sequence_length,
                pad=pad,
                max_times_sampled=None,
            )
        )
    _kernels.use(True)
    fast, slow = tables
    assert fast._kernels is not None and slow._kernels is None
    return fast, slow


def assert_same_sample(a: object, b: object) -> None:
    for name in ("keys", "probabilities", "priorities", "times_sampled", "ends", "mask"):
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is None and y is None, name
            continue
        assert x.dtype == y.dtype, name
        assert torch.equal(x, y), name
    # Weights are (P / min P) ** -beta: numba's pow and numpy's may differ in the last bit.
    torch.testing.assert_close(a.weights, b.weights, rtol=1e-6, atol=0)  # type: ignore[attr-defined]
    for field, value in a.data.items():  # type: ignore[attr-defined]
        assert torch.equal(value, b.data[field]), field  # type: ignore[attr-defined]


@settings(max_examples=25, deadline=None)
@given(
    prioritized=st.booleans(),
    capacity=st.integers(4, 60),
    sequence_length=st.integers(1, 4),
    pad=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_tables_sample_and_update_alike(
    prioritized: bool, capacity: int, sequence_length: int, pad: bool, seed: int
) -> None:
    pad = pad and sequence_length > 1
    capacity = max(capacity, sequence_length)
    fast, slow = pair(prioritized, capacity, sequence_length, pad, seed)
    rng = random.Random(seed)
    key = 0
    for _ in range(12):
        n = rng.randint(1, 2 * capacity)
        steps = {
            "obs": torch.randn(n, 3, generator=torch.Generator().manual_seed(key)),
            "reward": torch.arange(key, key + n, dtype=torch.float32),
            "step": torch.arange(key, key + n),
        }
        streams = torch.tensor([rng.randrange(3) for _ in range(n)])
        ends = torch.tensor([rng.choice([0, 0, 0, 1, 2]) for _ in range(n)])
        key += n
        for table in (fast, slow):
            table.extend(steps, streams=streams, ends=ends)
        assert len(fast) == len(slow)
        if len(fast) == 0:
            continue
        b = rng.randint(1, 40)
        a, c = fast.sample(b), slow.sample(b)
        assert_same_sample(a, c)
        # Stale, duplicate and live keys, new priorities.
        keys = torch.cat([a.keys, a.keys[:2], torch.tensor([-1, key + 100])])
        pri = torch.rand(keys.numel(), dtype=torch.float64) + 0.05
        assert fast.update_priorities(keys, pri) == slow.update_priorities(keys, pri)
    for name, value in fast.state_dict().items():
        assert torch.equal(value, slow.state_dict()[name]), name


def test_bad_priority_rejected_before_any_write() -> None:
    fast, slow = pair(True, 16, 1, False, 0)
    for table in (fast, slow):
        table.extend({"obs": torch.zeros(8, 3), "reward": torch.zeros(8), "step": torch.arange(8)})
    keys = fast.sample(4).keys
    slow.sample(4)
    before = fast.state_dict()
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        pri = torch.tensor([1.0, 2.0, bad, 3.0], dtype=torch.float64)
        for table in (fast, slow):
            with pytest.raises(InvalidArgumentError, match="priorities must be finite and > 0"):
                table.update_priorities(keys, pri)
    after = fast.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@settings(max_examples=30, deadline=None)
@given(
    capacity=st.integers(1, 3000),
    values=st.lists(st.floats(0.0, 50.0), min_size=1, max_size=64),
    fractions=st.lists(st.floats(0.0, 1.0, exclude_max=True), min_size=1, max_size=64),
    offset=st.sampled_from([0.0, 1e-6, 0.5]),
    power=st.sampled_from([1.0, 0.6, 0.0]),
)
def test_sum_tree_kernels_match_numpy(
    capacity: int, values: list[float], fractions: list[float], offset: float, power: float
) -> None:
    trees = []
    for enabled in (True, False):
        _kernels.use(enabled)
        trees.append(SumTree(capacity))
    _kernels.use(True)
    fast, slow = trees
    assert fast.engine.name == "numba" and slow.engine.name == "numpy"
    rng = np.random.default_rng(capacity)
    idx = rng.integers(0, capacity, len(values))
    val = np.asarray(values)
    for tree in trees:
        tree.update_numpy(idx, val, offset=offset, power=power)
    assert torch.equal(fast.tree, slow.tree)  # bit-identical sums
    if fast.total > 0:
        u = np.asarray(fractions)
        for got, want in zip(fast.sample_numpy(u), slow.sample_numpy(u), strict=True):
            np.testing.assert_array_equal(got, want)


def test_top_level_search_is_searchsorted() -> None:
    """The branch-free top-level search returns numpy's searchsorted, ties included."""
    tree = SumTree(1 << 12)
    _kernels.use(False)
    numpy_tree = SumTree(1 << 12)
    _kernels.use(True)
    assert tree.engine.name == "numba" and numpy_tree.engine.name == "numpy"
    leaves = torch.tensor([0.0, 1.0, 0.0, 2.0] * (1 << 10), dtype=torch.float64)
    tree.update(torch.arange(1 << 12), leaves)
    numpy_tree.update(torch.arange(1 << 12), leaves)
    total = tree.total
    # Exact prefix-sum boundaries and values just below them are the hard cases.
    cs = torch.cumsum(leaves, 0)
    v = torch.cat([cs[:-1], torch.nextafter(cs, torch.zeros(1, dtype=torch.float64))])
    v = v[(v >= 0) & (v < total)]
    got = tree.find(v)
    want = numpy_tree.find(v)
    assert torch.equal(got, want)
    assert bool((leaves[got] > 0).all())


def test_env_var_turns_the_kernels_off() -> None:
    """REPLAYDB_NUMBA=0 selects the numpy paths, and numba is not even imported."""
    code = (
        "import sys, torch; from replaydb import Table, _kernels; "
        "t = Table({'x': ((), 'float32')}, 8); "
        "print(_kernels.get() is None, t._kernels is None, 'numba' in sys.modules)"
    )
    env = dict(os.environ, REPLAYDB_NUMBA="0")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["True", "True", "False"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_sum_tree_of_any_float_dtype_samples(dtype: torch.dtype) -> None:
    """float16 trees take the numpy path (numba has no float16); the others compile."""
    tree = SumTree(100, dtype=dtype)
    assert tree.engine.name == ("numpy" if dtype == torch.float16 else "numba")
    tree.update(torch.arange(100), torch.ones(100, dtype=torch.float64))
    idx, values, total = tree.sample(8, torch.Generator().manual_seed(0))
    assert idx.shape == (8,) and values.dtype == dtype and float(total) == 100.0
    tree.update_numpy(idx.numpy(), np.full(8, 3.0), offset=1.0, power=0.5)
    assert torch.equal(tree.get(idx), torch.full((8,), 2.0, dtype=dtype))


def _three_tables(seed: int, capacity: int, max_times: int | None) -> list[Table]:
    """Prioritized single-step tables: the short path, the general path with the
    kernels, and the numpy path (``REPLAYDB_NUMBA=0``'s)."""
    tables = []
    for enabled in (True, True, False):
        _kernels.use(enabled)
        tables.append(
            Table(
                SPEC,
                capacity,
                sampler=Prioritized(alpha=0.6, beta=0.4, eps=0.01, seed=seed),
                max_times_sampled=max_times,
            )
        )
    _kernels.use(True)
    short, general, numpy_path = tables
    general._prio_items = None  # the general path (Sampler.sample + take_items)
    assert short._prio_items is not None and numpy_path._prio_items is None
    return tables


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    capacity=st.integers(1, 80),
    max_times=st.sampled_from([None, 1, 3]),
)
def test_prioritized_short_path_matches_general_and_numpy_paths(
    seed: int, capacity: int, max_times: int | None
) -> None:
    tables = _three_tables(seed, capacity, max_times)
    rng = random.Random(seed)
    key = 0
    for _ in range(10):
        n = rng.randint(1, 2 * capacity)
        steps = {
            "obs": torch.randn(n, 3, generator=torch.Generator().manual_seed(key)),
            "reward": torch.arange(key, key + n, dtype=torch.float32),
            "step": torch.arange(key, key + n),
        }
        key += n
        for table in tables:
            table.extend(steps)
        assert len({len(t) for t in tables}) == 1
        if len(tables[0]) == 0:
            continue
        b = rng.randint(1, 40)
        beta = rng.choice([None, 0.0, 0.3, 1.0])
        short, general, numpy_path = (t.sample(b, beta=beta) for t in tables)
        assert_same_sample(short, numpy_path)
        assert_same_sample(short, general)
        # Same kernels and the same numpy power: the weights are bit-identical.
        assert torch.equal(short.weights, general.weights)
        assert short.weights.dtype == torch.float32 and short.weights.shape == (b,)
        assert short.table_size == general.table_size == numpy_path.table_size
        # Stale, duplicate, negative and live keys.
        keys = torch.cat([short.keys, short.keys[:2], torch.tensor([-1, key + 100])])
        pri = torch.rand(keys.numel(), dtype=torch.float64) * 3 + 0.05
        assert len({t.update_priorities(keys, pri) for t in tables}) == 1
        assert len({t._max_priority for t in tables}) == 1
    ref = tables[0].state_dict()
    for table in tables[1:]:
        for name, value in table.state_dict().items():
            assert torch.equal(value, ref[name]), name


def test_prioritized_short_path_only_where_it_applies() -> None:
    def table(**kw: object) -> Table:
        return Table(SPEC, 8, **kw)  # type: ignore[arg-type]

    assert table(sampler=Prioritized(seed=0))._prio_items is not None
    assert table(sampler=Prioritized(seed=0), sequence_length=2)._prio_items is None
    assert table(sampler=Uniform(0))._prio_items is None
    _kernels.use(False)
    assert table(sampler=Prioritized(seed=0))._prio_items is None


def test_prioritized_short_path_arguments_fall_back_or_raise() -> None:
    short, general, _ = _three_tables(3, 32, None)
    for t in (short, general):
        t.extend({"obs": torch.zeros(20, 3), "reward": torch.zeros(20), "step": torch.arange(20)})
    # numpy sizes and betas, timeouts: the general path, the same draws.
    for kwargs in ({"beta": np.float64(0.5)}, {"timeout": 1.0}, {"beta": 1}):
        a = short.sample(np.int64(6), **kwargs)  # type: ignore[arg-type]
        assert_same_sample(a, general.sample(np.int64(6), **kwargs))  # type: ignore[arg-type]
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(InvalidArgumentError, match="beta must be a number in"):
            short.sample(4, beta=bad)
    with pytest.raises(InvalidArgumentError, match="batch_size must be an int"):
        short.sample(0)
    assert_same_sample(short.sample(5), general.sample(5))


def test_prioritized_short_path_rejects_bad_priorities_before_any_write() -> None:
    short, _, _ = _three_tables(0, 16, None)
    short.extend({"obs": torch.zeros(8, 3), "reward": torch.zeros(8), "step": torch.arange(8)})
    keys = short.sample(4).keys
    before, top = short.state_dict(), short._max_priority
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        pri = torch.tensor([9.0, 2.0, bad, 3.0], dtype=torch.float64)
        with pytest.raises(InvalidArgumentError, match="priorities must"):
            short.update_priorities(keys, pri)
    after = short.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert short._max_priority == top


def test_draw_items_on_an_empty_tree_counts_nothing() -> None:
    s = Prioritized(seed=0)
    s.bind(4, torch.device("cpu"))
    assert s.counts_items
    times = np.zeros(4, np.int64)
    with pytest.raises(InvalidArgumentError, match="empty SumTree"):
        s.draw_items(3, None, np.full(4, -1), times, np.ones(4))
    assert not times.any()


def test_prioritized_short_path_rejects_priorities_over_the_bound() -> None:
    t = Table(SPEC, 16, sampler=Prioritized(alpha=1.0, seed=0))
    assert t._prio_items is not None
    t.extend({"obs": torch.zeros(8, 3), "reward": torch.zeros(8), "step": torch.arange(8)})
    keys = t.sample(2).keys
    before = t.state_dict()
    with pytest.raises(InvalidArgumentError, match="priorities must"):
        t.update_priorities(keys, torch.tensor([1.0, 1e308], dtype=torch.float64))
    after = t.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
