"""The device path is chosen once, and every path gives the same results.

A storage, a sum tree and each sampler pick their implementation when they are
built (``engine``): the generic torch path (what a GPU runs), numpy views on CPU,
and compiled numba loops where numba is installed. ``_devices.use_generic`` forces
the torch path on CPU, so these tests drive one table per path through the same
random writes, samples and priority updates and require the same samples and the
same state, bit for bit (weights up to the last bit of ``pow``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from replaydb import Spec, Table, _devices, _kernels
from replaydb.errors import InvalidArgumentError
from replaydb.samplers import (
    FastPaths,
    FastSampler,
    Fifo,
    Prioritized,
    Sampler,
    Uniform,
    fast_paths,
)
from replaydb.storage import Storage
from replaydb.sum_tree import SumTree

SPEC = Spec({"obs": ((3,), "float32"), "reward": ((), "float32"), "step": ((), "int64")})
PATHS = ["numba", "numpy", "torch"]


@pytest.fixture(autouse=True)
def _restore_paths() -> Iterator[None]:
    yield
    _kernels.use(True)
    _devices.use_generic(False)


def build(path: str, make: Any) -> Any:
    """``make()`` with the kernels and the generic path set for ``path``."""
    _kernels.use(path != "numpy")
    _devices.use_generic(path == "torch")
    try:
        return make()
    finally:
        _kernels.use(True)
        _devices.use_generic(False)


def tables(
    prioritized: bool, capacity: int, sequence_length: int, pad: bool, seed: int
) -> list[Table]:
    def make() -> Table:
        sampler = Prioritized(alpha=0.7, beta=0.5, seed=seed) if prioritized else Uniform(seed)
        return Table(
            SPEC,
            capacity,
            sampler=sampler,
            sequence_length=sequence_length,
            pad=pad,
            max_times_sampled=None,
        )

    out = [build(path, make) for path in PATHS]
    names = [t.storage.engine.name for t in out]
    # The item records take the table's path too (the torch one is a GPU table's).
    records = [t._records.name for t in out]
    assert records == (["numba"] if _kernels.get() else ["numpy"]) + ["numpy", "torch"]
    if _kernels.get() is None:
        assert names == ["numpy", "numpy", "torch"]
    else:
        assert names == (
            ["numba", "numpy", "torch"] if sequence_length > 1 else ["numpy"] * 2 + ["torch"]
        )
    return out


def assert_same_sample(a: Any, b: Any) -> None:
    for name in ("keys", "priorities", "times_sampled", "ends", "mask"):
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is None and y is None, name
            continue
        assert x.dtype == y.dtype, name
        assert torch.equal(x, y), name
    # Leaves are (p + eps) ** alpha and weights (P / min P) ** -beta: torch's pow and
    # numpy's (or numba's) may differ in the last bit.
    torch.testing.assert_close(a.probabilities, b.probabilities, rtol=1e-12, atol=0)
    torch.testing.assert_close(a.weights, b.weights, rtol=1e-6, atol=0)
    assert a.data.keys() == b.data.keys()
    for field, value in a.data.items():
        assert torch.equal(value, b.data[field]), field


@settings(max_examples=25, deadline=None)
@given(
    prioritized=st.booleans(),
    capacity=st.integers(4, 60),
    sequence_length=st.integers(1, 4),
    pad=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_every_path_samples_and_updates_alike(
    prioritized: bool, capacity: int, sequence_length: int, pad: bool, seed: int
) -> None:
    pad = pad and sequence_length > 1
    capacity = max(capacity, sequence_length)
    ts = tables(prioritized, capacity, sequence_length, pad, seed)
    rng = random.Random(seed)
    key = 0
    for _ in range(10):
        n = rng.randint(1, 2 * capacity)
        steps = {
            "obs": torch.randn(n, 3, generator=torch.Generator().manual_seed(key)),
            "reward": torch.arange(key, key + n, dtype=torch.float32),
            "step": torch.arange(key, key + n),
        }
        streams = torch.tensor([rng.randrange(3) for _ in range(n)])
        ends = torch.tensor([rng.choice([0, 0, 0, 1, 2]) for _ in range(n)])
        key += n
        for table in ts:
            table.extend(steps, streams=streams, ends=ends)
        assert len({len(t) for t in ts}) == 1
        if len(ts[0]) == 0:
            continue
        b = rng.randint(1, 40)
        first, *others = (t.sample(b) for t in ts)
        for other in others:
            assert_same_sample(first, other)
        # Stale, duplicate and live keys, new priorities.
        keys = torch.cat([first.keys, first.keys[:2], torch.tensor([-1, key + 100])])
        pri = torch.rand(keys.numel(), dtype=torch.float64) + 0.05
        assert len({t.update_priorities(keys, pri) for t in ts}) == 1
        totals = [t.priority_total() for t in ts]
        assert totals[1] == totals[0] and totals[2] == pytest.approx(totals[0], rel=1e-12)
    want = ts[0].state_dict()
    for i, table in enumerate(ts[1:], start=1):
        got = table.state_dict()
        assert got.keys() == want.keys()
        for name, value in want.items():
            if name == "sampler.tree" and i == 2:  # torch's pow (see assert_same_sample)
                torch.testing.assert_close(got[name], value, rtol=1e-12, atol=0)
            else:
                assert torch.equal(value, got[name]), name


@settings(max_examples=20, deadline=None)
@given(
    capacity=st.integers(2, 40),
    length=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_storage_paths_walk_window_and_gather_alike(capacity: int, length: int, seed: int) -> None:
    spec = Spec({"x": ((2,), "float32"), "i": ((), "int32"), "img": ((2, 2), "uint8")})
    stores = [build(p, lambda: Storage(spec, capacity, links=True)) for p in PATHS]
    assert stores[2].engine.name == "torch" and stores[1].engine.name == "numpy"
    rng = random.Random(seed)
    for _ in range(6):
        n = rng.randint(1, capacity + 3)
        g = torch.Generator().manual_seed(rng.randrange(2**30))
        data = {
            "x": torch.randn(n, 2, generator=g),
            "i": torch.randint(-5, 5, (n,), generator=g, dtype=torch.int32),
            "img": torch.randint(0, 255, (n, 2, 2), generator=g, dtype=torch.uint8),
        }
        streams = torch.tensor([rng.randrange(2) for _ in range(n)])
        ends = torch.tensor([rng.choice([0, 0, 1, 2]) for _ in range(n)])
        results = [s.append(data, streams, ends) for s in stores]
        for r in results[1:]:
            assert torch.equal(r.keys, results[0].keys)
            assert torch.equal(r.evicted_rows, results[0].evicted_rows)
            assert r.positions is not None and results[0].positions is not None
            assert torch.equal(r.positions, results[0].positions)
    total = stores[0].total
    starts = torch.tensor([rng.randrange(max(0, total - capacity), total) for _ in range(9)])
    live = starts[stores[0].is_live(starts)]
    rows = torch.tensor([rng.randrange(min(total, capacity)) for _ in range(7)])
    for s in stores[1:]:
        for column in ("prev", "next"):
            assert torch.equal(
                s.walk(starts, length, column), stores[0].walk(starts, length, column)
            )
        for got, want in zip(s.windows(live, length), stores[0].windows(live, length), strict=True):
            assert torch.equal(got, want)
        assert torch.equal(s.window_rows(live, length), stores[0].window_rows(live, length))
        for one, other in (
            (s.gather(rows), stores[0].gather(rows)),
            (s.gather(rows.view(7, 1)), stores[0].gather(rows.view(7, 1))),
        ):
            for name in spec:
                assert torch.equal(one[name], other[name]), name
    for a, b in zip(stores[2].state_dict().values(), stores[0].state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_append_numpy_writes_alike_on_every_path() -> None:
    spec = Spec({"x": ((2,), "float32"), "r": ((), "float32")})
    stores = [build(p, lambda: Storage(spec, 5)) for p in ("numpy", "torch")]
    for s in stores:
        assert s.append_numpy({"x": np.ones(2), "r": 3.0}, 1) == 0
        # A wrapping batch, a per-row end column and a whole packed group row.
        assert (
            s.append_numpy({torch.float32: np.arange(3.0)}, 6, end=np.array([0, 1, 0, 0, 2, 0]))
            == 1
        )
    host, generic = stores
    assert host.total == generic.total == 7
    for a, b in zip(host.state_dict().values(), generic.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_sum_tree_paths_are_chosen_once() -> None:
    trees = [build(p, lambda: SumTree(100)) for p in PATHS]
    assert [t.engine.name for t in trees][1:] == ["numpy", "torch"]
    assert trees[1].numpy_path and not trees[2].numpy_path
    with pytest.raises(InvalidArgumentError, match=r"sample_numpy needs a CPU tree .* torch path"):
        trees[2].sample_numpy(np.zeros(2))
    with pytest.raises(InvalidArgumentError, match=r"update_numpy needs .* use update"):
        trees[2].update_numpy(np.zeros(1, np.int64), np.ones(1))
    with pytest.raises(InvalidArgumentError, match="kernel_layout needs a CPU tree"):
        trees[2].kernel_layout()
    for t in trees[:2]:  # the torch path does not sync to check (SumTree.find)
        with pytest.raises(InvalidArgumentError, match="cannot search an empty SumTree"):
            t.sample(3, torch.Generator().manual_seed(0))


def test_samplers_declare_their_fast_paths_for_the_bound_path() -> None:
    def bound(make: Any, path: str) -> Any:
        def go() -> Any:
            s = make()
            s.bind(16, torch.device("cpu"))
            return s

        return build(path, go)

    host, generic = bound(lambda: Uniform(seed=0), "numpy"), bound(lambda: Uniform(seed=0), "torch")
    assert isinstance(host, FastSampler) and host.engine.name == "numpy"
    assert generic.engine.name == "torch"
    for s in (host, generic):
        fp = fast_paths(s)
        assert fp.insert_contiguous is not None and fp.draw is not None
        assert not fp.takes_beta and fp.priority_total is None and fp.items is None
    prio_host = bound(lambda: Prioritized(seed=0), "numpy")
    prio_generic = bound(lambda: Prioritized(seed=0), "torch")
    assert fast_paths(prio_host).update_numpy is not None and fast_paths(prio_host).items is None
    assert fast_paths(prio_generic).update_numpy is None and fast_paths(prio_generic).items is None
    assert fast_paths(prio_generic).takes_beta and fast_paths(prio_generic).priority_bound > 1e300
    if _kernels.get() is not None:
        assert fast_paths(bound(lambda: Prioritized(seed=0), "numba")).items is not None
    assert fast_paths(bound(Fifo, "numpy")) == FastPaths()


class _Plain:
    """A third-party sampler with only the Sampler verbs (no fast paths)."""

    deterministic = False

    def __init__(self) -> None:
        self.inner = Uniform(seed=1)

    def bind(self, capacity: int, device: torch.device) -> None:
        self.inner.bind(capacity, device)

    def on_insert(self, slots: torch.Tensor, priorities: torch.Tensor) -> None:
        self.inner.on_insert(slots, priorities)

    def on_remove(self, slots: torch.Tensor) -> None:
        self.inner.on_remove(slots)

    def update(self, slots: torch.Tensor, priorities: torch.Tensor) -> None:
        return None

    def sample(self, n: int) -> Any:
        return self.inner.sample(n)

    def reset(self) -> None:
        self.inner.reset()

    def config(self) -> dict[str, Any]:
        return {"type": "_Plain"}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.inner.state_dict()

    def load_state_dict(self, state: Any) -> None:
        self.inner.load_state_dict(state)


def test_a_sampler_without_fast_paths_gets_the_plain_verbs() -> None:
    plain = _Plain()
    assert isinstance(plain, Sampler) and not isinstance(plain, FastSampler)
    t = Table(SPEC, 8, sampler=plain)
    t.extend({"obs": torch.zeros(5, 3), "reward": torch.arange(5.0), "step": torch.arange(5)})
    t.extend_unchecked({"obs": np.zeros(3), "reward": 1.0, "step": 9}, 1)
    assert len(t) == 6
    s = t.sample(4)
    assert s.keys.shape == (4,) and bool((s.weights == 1).all())
    assert t.update_priorities(s.keys, torch.ones(4)) == 4
    assert t.priority_total() == 6.0
