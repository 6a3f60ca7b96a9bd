"""``Table.update_priorities``'s compiled short path against the checked paths.

CPU int64 key tensors with float32/float64 priority tensors go straight into the
sampler's compiled update (float32 is not copied to float64 first); everything
else, and every rejected call, takes the checked path. Both must leave identical
tables: priorities, the sum tree bit for bit, the highest priority, the count.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from replaydb import Spec, Table, _items, _kernels
from replaydb._huge_pages import HUGE_FROM, zeros
from replaydb.errors import InvalidArgumentError, InvalidTypeError
from replaydb.samplers import Prioritized

SPEC = Spec({"x": ((2,), "float32")})
needs_numba = pytest.mark.skipif(_kernels.get() is None, reason="numba is not installed")


@pytest.fixture(autouse=True)
def _restore_kernels() -> Iterator[None]:
    yield
    _kernels.use(True)


def table(capacity: int, n: int, kernels: bool = True, alpha: float = 0.6) -> Table:
    _kernels.use(kernels)
    try:
        t = Table(SPEC, capacity, sampler=Prioritized(alpha=alpha, beta=0.4, seed=3))
    finally:
        _kernels.use(True)
    t.extend({"x": torch.arange(2 * n, dtype=torch.float32).view(n, 2)})
    return t


def state(t: Table) -> tuple[list[float], list[float], float, list[int]]:
    tree = t.sampler.tree.tree  # type: ignore[attr-defined]
    return t._priority.tolist(), tree.tolist(), t._max_priority, t._item_key.tolist()


@needs_numba
@settings(max_examples=30, deadline=None)
@given(
    capacity=st.integers(1, 40),
    extra=st.integers(0, 30),
    keys=st.lists(st.integers(-3, 80), min_size=1, max_size=50),
    seed=st.integers(0, 2**31 - 1),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    column=st.booleans(),
    alpha=st.sampled_from([0.6, 1.0, 0.0]),
)
def test_short_path_matches_the_checked_and_numpy_paths(
    capacity: int,
    extra: int,
    keys: list[int],
    seed: int,
    dtype: torch.dtype,
    column: bool,
    alpha: float,
) -> None:
    n = capacity + extra  # a ring that may have wrapped: some keys are stale
    fast, checked, slow = (table(capacity, n, k, alpha) for k in (True, True, False))
    g = torch.Generator().manual_seed(seed)
    pri = (torch.rand(len(keys), generator=g, dtype=torch.float64) * 5 + 1e-3).to(dtype)
    k = torch.tensor(keys, dtype=torch.int64)
    shaped = pri.view(-1, 1) if column else pri  # [B, 1] like a batch's fields
    assert fast._prio_items is not None and slow._prio_items is None
    assert _items._update_tensors(checked, checked._prio_items, k[:0], pri[:0]) == -1
    live = fast.update_priorities(k, shaped)
    assert live == checked.update_priorities(keys, pri.tolist())  # lists: the checked path
    assert live == slow.update_priorities(k, shaped)
    assert state(fast) == state(checked) == state(slow)
    # and the draws that follow
    a, b = fast.sample(7), slow.sample(7)
    assert torch.equal(a.keys, b.keys)
    assert torch.equal(a.probabilities, b.probabilities)


@needs_numba
def test_the_common_call_takes_the_short_path() -> None:
    t = table(8, 8)
    prio = t._prio_items
    keys = torch.tensor([0, 3, 9])
    assert _items._update_tensors(t, prio, keys, torch.tensor([1.5, 2.5, 3.5])) == 2
    assert t._priority[[0, 3]].tolist() == [1.5, 2.5]
    assert t._max_priority == 2.5
    declined = [
        (keys.to(torch.int32), torch.ones(3)),  # other key dtypes
        (keys, torch.ones(3, dtype=torch.float16)),  # other priority dtypes
        (keys, torch.ones(3, requires_grad=True)),  # autograd
        (keys, torch.ones(3, 2)[:, 0]),  # strided
        (keys, torch.ones(4)),  # sizes differ
        (keys, torch.tensor([1.0, float("nan"), 1.0])),  # a rejected priority
    ]
    for k, p in declined:
        assert _items._update_tensors(t, prio, k, p) == -1
    assert t._priority[[0, 3]].tolist() == [1.5, 2.5]  # nothing written by a decline


@needs_numba
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), 1e308])
def test_rejected_priorities_raise_and_write_nothing(dtype: torch.dtype, bad: float) -> None:
    t = table(16, 10, alpha=1.0)  # the bound: float64 max / 16, below 1e308
    before = state(t)
    pri = torch.tensor([2.0, bad, 3.0], dtype=torch.float64).to(dtype)  # float32: inf
    with pytest.raises(InvalidArgumentError, match="priorit"):
        t.update_priorities(torch.tensor([0, 1, 2]), pri)
    assert state(t) == before


@needs_numba
def test_other_calls_keep_their_checks() -> None:
    t = table(8, 8)
    with pytest.raises(InvalidArgumentError, match="same length"):
        t.update_priorities(torch.tensor([0, 1]), torch.ones(3))
    with pytest.raises(InvalidTypeError):
        t.update_priorities(torch.tensor([True, False]), torch.ones(2))
    assert t.update_priorities(torch.tensor([0, 1]), torch.ones(2, requires_grad=True)) == 2
    assert t.update_priorities(torch.tensor([], dtype=torch.int64), torch.ones(0)) == 0


def test_huge_page_zeros_are_zeros() -> None:
    for shape in [(3, 4), (HUGE_FROM // 8 + 5,)]:
        z = zeros(shape, torch.int64, torch.device("cpu"))
        assert z.shape == shape and z.dtype == torch.int64 and z.is_contiguous()
        assert not bool(z.any())
    assert np.array_equal(zeros((2,), torch.float32, torch.device("cpu")).numpy(), [0.0, 0.0])
