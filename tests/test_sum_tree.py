"""SumTree against a plain-Python reference: updates, totals and prefix searches."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from replaydb import _devices, _kernels
from replaydb.errors import InvalidArgumentError
from replaydb.sum_tree import SumTree


def ref_find(leaves: list[float], v: float) -> int:
    """First leaf whose running sum exceeds v; the last non-zero leaf past the end."""
    acc = 0.0
    last = -1
    for i, x in enumerate(leaves):
        if x > 0:
            last = i
        acc += x
        if acc > v and x > 0:
            return i
    return last


PATHS = ["numba", "numpy", "torch"]


def make(capacity: int, path: str, device: str = "cpu") -> SumTree:
    # The path is chosen at construction: numpy as without numba, torch as on a GPU.
    _kernels.use(path != "numpy")
    _devices.use_generic(path == "torch")
    try:
        tree = SumTree(capacity, device=device)
    finally:
        _kernels.use(True)
        _devices.use_generic(False)
    if tree.engine.name != path:
        assert path == "numba" and _kernels.get() is None
        pytest.skip("numba is not installed")
    return tree


ops = st.lists(
    st.tuples(
        st.lists(st.integers(0, 10**6), min_size=1, max_size=12),
        st.lists(
            st.one_of(st.just(0.0), st.floats(0.0, 100.0, allow_nan=False)),
            min_size=12,
            max_size=12,
        ),
    ),
    min_size=1,
    max_size=6,
)


@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=40, deadline=None)
@given(capacity=st.integers(1, 70), ops=ops, fractions=st.lists(st.floats(0, 1), max_size=16))
def test_matches_python_reference(
    path: str, capacity: int, ops: list[tuple[list[int], list[float]]], fractions: list[float]
) -> None:
    tree = make(capacity, path)
    ref = [0.0] * capacity
    for raw_idx, vals in ops:
        idx = [i % capacity for i in raw_idx]
        for i, v in zip(idx, vals, strict=False):
            ref[i] = v  # last write wins
        tree.update(torch.tensor(idx), torch.tensor(vals[: len(idx)], dtype=torch.float64))
        assert tree.leaves.tolist() == ref
        assert math.isclose(tree.total, sum(ref), rel_tol=1e-12, abs_tol=1e-12)
    total = sum(ref)
    if total == 0:
        return
    vs = [f * total for f in fractions]
    got = tree.find(torch.tensor(vs, dtype=torch.float64)).tolist()
    for v, g in zip(vs, got, strict=True):
        assert ref[g] > 0, "a zero-priority leaf was found"
        want = ref_find(ref, v)
        # Values within rounding of a boundary may land on either neighbour.
        lo = sum(ref[:g])
        assert (
            g == want
            or math.isclose(v, lo, rel_tol=1e-9)
            or math.isclose(v, lo + ref[g], rel_tol=1e-9)
        )


@pytest.mark.parametrize("path", PATHS)
def test_deep_tree_matches_searchsorted(path: str) -> None:
    # 40,000 leaves: the top level plus four binary levels below it.
    g = torch.Generator().manual_seed(0)
    n = 40_000
    vals = torch.rand(n, dtype=torch.float64, generator=g)
    vals[::3] = 0.0
    tree = make(n, path)
    tree.update(torch.arange(n), vals)
    idx = torch.randint(0, n, (500,), generator=g)
    new = torch.rand(500, dtype=torch.float64, generator=g)
    tree.update(idx, new)
    vals[idx] = new  # CPU index_put with duplicates: last write wins too
    assert torch.equal(tree.leaves, vals)
    assert math.isclose(tree.total, float(vals.sum()), rel_tol=1e-12)
    v = torch.rand(2000, dtype=torch.float64, generator=g) * float(vals.sum())
    want = torch.searchsorted(torch.cumsum(vals, 0), v, right=True)
    got = tree.find(v)
    assert torch.equal(got, want)
    assert bool((vals[got] > 0).all())


@pytest.mark.parametrize("other", ["numba", "torch"])
def test_paths_agree_bit_for_bit(other: str) -> None:
    g = torch.Generator().manual_seed(1)
    a, b = make(9000, "numpy"), make(9000, other)
    for _ in range(5):
        idx = torch.randint(0, 9000, (300,), generator=g)
        val = torch.rand(300, dtype=torch.float64, generator=g)
        val[::7] = 0.0
        a.update(idx, val)
        b.update(idx, val)
    assert torch.equal(a.tree, b.tree)
    v = torch.rand(1000, dtype=torch.float64, generator=g) * a.total
    assert torch.equal(a.find(v), b.find(v))
    ga, gb = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for x, y in zip(a.sample(500, ga), b.sample(500, gb), strict=True):
        assert torch.equal(x, y)


def test_rounding_past_total_returns_last_nonzero_leaf() -> None:
    for path in PATHS[1:]:
        t = make(10_000, path)
        t.update(torch.tensor([5, 7000]), torch.tensor([1.0, 2.0], dtype=torch.float64))
        got = t.find(torch.tensor([3.0, 1e9, 2.999999999], dtype=torch.float64)).tolist()
        assert got == [7000, 7000, 7000]


@pytest.mark.parametrize("path", PATHS)
def test_search_never_enters_a_zero_child_when_sums_overshoot(path: str) -> None:
    # Rounding can leave a value past every non-zero child of a node. Simulate it:
    # shrink leaf 5 behind its parents' backs, so every sum above it is too large.
    tree = make(10_000, path)
    tree.update(torch.tensor([5, 7000]), torch.tensor([1.0, 2.0], dtype=torch.float64))
    tree.leaves[5] = 0.5
    # 0.9 < the stale sum 1.0 above leaf 5, but past the leaf itself: leaf 5, never 6.
    assert tree.find(torch.tensor([0.9, 0.4], dtype=torch.float64)).tolist() == [5, 5]


def test_sample_is_proportional_and_skips_zeros() -> None:
    tree = SumTree(6)
    tree.update(torch.arange(6), torch.tensor([0.0, 1.0, 0.0, 3.0, 0.0, 0.0], dtype=torch.float64))
    idx, vals, total = tree.sample(4000, torch.Generator().manual_seed(0))
    assert set(idx.tolist()) == {1, 3}
    assert float(total) == 4.0
    assert torch.equal(vals, torch.where(idx == 1, 1.0, 3.0).double())
    share = float((idx == 3).double().mean())
    assert abs(share - 0.75) < 0.03


def test_state_round_trip_is_exact() -> None:
    a = SumTree(5000)
    a.update(torch.arange(5000), torch.rand(5000, dtype=torch.float64))
    b = SumTree(5000)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.tree, b.tree)
    with pytest.raises(InvalidArgumentError, match="another capacity"):
        SumTree(10).load_state_dict(a.state_dict())
    a.reset()
    assert a.total == 0.0


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_rejects_bad_capacity(bad: object) -> None:
    with pytest.raises(InvalidArgumentError, match="capacity must be an int >= 1"):
        SumTree(bad)  # type: ignore[arg-type]


def test_rejects_bad_updates_and_leaves_tree_unchanged() -> None:
    tree = SumTree(4)
    tree.update(torch.tensor([0]), torch.tensor([1.0]))
    before = tree.tree.clone()
    with pytest.raises(InvalidArgumentError, match="finite and >= 0"):
        tree.update(torch.tensor([1]), torch.tensor([-1.0]))
    with pytest.raises(InvalidArgumentError, match="finite and >= 0"):
        tree.update(torch.tensor([1]), torch.tensor([math.nan]))
    with pytest.raises(InvalidArgumentError, match="finite and >= 0"):
        tree.update(torch.tensor([1]), torch.tensor([math.inf]))
    with pytest.raises(InvalidArgumentError, match=r"indices must be in \[0, 4\), got 4"):
        tree.update(torch.tensor([4]), torch.tensor([1.0]))
    with pytest.raises(InvalidArgumentError, match="same length"):
        tree.update(torch.tensor([1, 2]), torch.tensor([1.0]))
    with pytest.raises(InvalidArgumentError, match="floating dtype"):
        SumTree(4, dtype=torch.int64)
    assert torch.equal(tree.tree, before)
    with pytest.raises(InvalidArgumentError, match="empty SumTree"):
        SumTree(3).find(torch.tensor([0.0]))


def test_single_leaf_tree() -> None:
    tree = SumTree(1)
    tree.update(torch.tensor([0]), torch.tensor([2.0]))
    assert tree.find(torch.tensor([0.0, 1.9, 5.0])).tolist() == [0, 0, 0]
    assert repr(tree).startswith("SumTree(capacity=1")


@pytest.mark.gpu
def test_on_cuda_matches_cpu() -> None:
    g = torch.Generator().manual_seed(2)
    n = 50_000
    vals = torch.rand(n, dtype=torch.float64, generator=g)
    cpu, gpu = SumTree(n), SumTree(n, device="cuda")
    cpu.update(torch.arange(n), vals)
    gpu.update(torch.arange(n, device="cuda"), vals.cuda())
    assert torch.equal(cpu.tree, gpu.tree.cpu())
    v = torch.rand(4096, dtype=torch.float64, generator=g) * cpu.total
    assert torch.equal(cpu.find(v), gpu.find(v.cuda()).cpu())
    idx, vals_s, total = gpu.sample(256, torch.Generator(device="cuda").manual_seed(0))
    assert idx.device.type == "cuda"
    assert vals_s.device.type == "cuda"
    assert total.device.type == "cuda"


def _pair_sums_hold(tree: SumTree) -> bool:
    """Every stored node equals the pairwise sum of its 8 children (nothing drifted)."""
    fresh = SumTree(tree.capacity, dtype=tree.dtype)
    fresh.leaves.copy_(tree.leaves.cpu())
    fresh._rebuild()
    return torch.equal(fresh.tree, tree.tree.cpu())


@pytest.mark.parametrize("capacity", [1, 2, 7, 8, 9, 63, 64, 65, 511, 512, 513, 4097, 70_001])
@pytest.mark.parametrize("path", PATHS)
def test_eight_way_layout_against_searchsorted(capacity: int, path: str) -> None:
    g = torch.Generator().manual_seed(capacity)
    tree = make(capacity, path)
    vals = torch.zeros(capacity, dtype=torch.float64)
    for _ in range(4):
        m = 3 * capacity // 2 + 1  # more updates than leaves: many duplicates per batch
        idx = torch.randint(0, capacity, (m,), generator=g)
        new = torch.rand(m, dtype=torch.float64, generator=g)
        new[torch.rand(m, generator=g) < 0.3] = 0.0
        tree.update(idx, new)
        order = torch.arange(m)
        last = torch.zeros(capacity, dtype=torch.int64).scatter_reduce(
            0, idx, order, reduce="amax", include_self=False
        )
        touched = torch.zeros(capacity, dtype=torch.bool)
        touched[idx] = True
        vals[touched] = new[last[touched]]  # last write of each index wins
        assert torch.equal(tree.leaves, vals)
        assert _pair_sums_hold(tree)
        assert math.isclose(tree.total, float(vals.sum()), rel_tol=1e-12, abs_tol=1e-300)
    if float(vals.sum()) == 0:
        vals[capacity - 1] = 1.0
        tree.update(torch.tensor([capacity - 1]), torch.tensor([1.0], dtype=torch.float64))
    cs = torch.cumsum(vals, 0)
    v = torch.rand(3000, dtype=torch.float64, generator=g) * float(cs[-1])
    v = torch.cat([v, cs[vals > 0][:20] - vals[vals > 0][:20], torch.tensor([0.0, 1e300])])
    got = tree.find(v)
    assert bool((vals[got] > 0).all())  # never a zero leaf, padding included
    want = torch.searchsorted(cs, v, right=True).clamp(max=int(torch.nonzero(vals).max()))
    # Boundaries (exact running sums) may land on either neighbour through rounding.
    lo = cs[got] - vals[got]
    near = torch.isclose(v, lo, rtol=1e-9) | torch.isclose(v, cs[got], rtol=1e-9)
    assert bool(((got == want) | near).all())


def test_float32_paths_agree_bit_for_bit() -> None:
    g = torch.Generator().manual_seed(3)
    trees = []
    for enabled in (True, False):
        _kernels.use(enabled)
        trees.append(SumTree(3000, dtype=torch.float32))
    _kernels.use(True)
    idx = torch.randint(0, 3000, (5000,), generator=g)
    val = torch.rand(5000, generator=g)
    for t in trees:
        t.update(idx, val)
    assert torch.equal(trees[0].tree, trees[1].tree)
    u = torch.rand(777, dtype=torch.float64, generator=g).numpy()
    for a, b in zip(trees[0].sample_numpy(u), trees[1].sample_numpy(u), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("capacity", [1, 5, 256, 300, 3000])
def test_state_dict_keeps_the_binary_layout_of_0x(capacity: int) -> None:
    g = torch.Generator().manual_seed(4)
    tree = SumTree(capacity)
    tree.update(torch.arange(capacity), torch.rand(capacity, dtype=torch.float64, generator=g))
    saved = tree.state_dict()["tree"]
    depth = max(0, (capacity - 1).bit_length())
    p, top = 1 << depth, min(depth, 8)
    want = [0.0] * (2 * p)
    want[p : p + capacity] = tree.leaves.tolist()
    for i in range(p - 1, (1 << top) - 1, -1):  # levels of >= 256 nodes, as 0.x kept
        want[i] = want[2 * i] + want[2 * i + 1]
    assert saved.tolist() == want
    again = SumTree(capacity)
    again.load_state_dict({"tree": saved})
    assert torch.equal(again.tree, tree.tree)


def test_checkpoint_written_by_0x_loads_and_samples_the_same() -> None:
    # Written by replaydb main before the 8-way layout (binary sum tree in the file):
    # a Prioritized table of capacity 300 holding 250 items with updated priorities,
    # then loaded there and sampled 32 items.
    from replaydb.checkpoint import load_table, read_table_file

    data = Path(__file__).parent / "data"
    want = json.loads((data / "prioritized_table_0x.json").read_text())
    _, tensors = read_table_file(data / "prioritized_table_0x.safetensors")
    table = load_table(data / "prioritized_table_0x.safetensors")
    tree = table.sampler.tree
    depth = (300 - 1).bit_length()
    assert torch.equal(tree.leaves, tensors["sampler.tree"][1 << depth :][:300])
    assert _pair_sums_hold(tree)
    assert torch.equal(table.state_dict()["sampler.tree"], tensors["sampler.tree"])
    assert math.isclose(tree.total, want["total"], rel_tol=1e-12)
    s = table.sample(32)
    assert s.keys.tolist() == want["keys"]
    np.testing.assert_allclose(s.probabilities.numpy(), want["probabilities"], rtol=1e-12)


@pytest.mark.parametrize("path", PATHS)
def test_find_accepts_strided_values(path: str) -> None:
    tree = make(20, path)
    tree.update(torch.arange(20), torch.ones(20, dtype=torch.float64))
    v = torch.arange(40, dtype=torch.float64)[::2] * 0.5 + 0.25  # every other element
    assert tree.find(v).tolist() == list(range(20))
