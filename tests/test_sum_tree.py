"""SumTree against a plain-Python reference: updates, totals and prefix searches."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

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
    tree = SumTree(capacity, device=device)
    if path == "numba" and tree._kernels is None:
        pytest.skip("numba is not installed")
    if path == "numpy":
        tree._kernels = None  # the numpy path, as without numba
    if path == "torch":
        tree._np = None  # exercise the device path on CPU
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
    # Force the guarded descent: a value past a subtree's sum below the top level.
    tree = make(10_000, "numpy")
    tree.update(torch.tensor([5, 7000]), torch.tensor([1.0, 2.0], dtype=torch.float64))
    start = (1 << tree.top) + (5 >> (tree.depth - tree.top))  # the top node above leaf 5
    node = tree._descend_guarded(
        torch.tensor([start]).numpy(), torch.tensor([1e9], dtype=torch.float64).numpy()
    )
    assert node.tolist() == [5]


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
