"""N-step returns: vectorized helper against a loop reference, and on sampled windows."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from replaydb import Spec, Table
from replaydb.errors import InvalidArgumentError
from replaydb.nstep import nstep_returns


def reference(rewards: list[float], ends: list[int], gamma: float) -> tuple[float, float, int]:
    """(return, discount, bootstrap index) by the module docstring's rules."""
    n = len(rewards) - 1
    g = 0.0
    for k in range(n):
        if ends[k] == 2:  # truncated after k: stop before its reward, bootstrap o_k
            return g, gamma**k, k
        g += gamma**k * rewards[k]
        if ends[k] == 1:
            return g, 0.0, k + 1
    return g, gamma**n, n


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.lists(
            st.tuples(st.floats(-5, 5), st.sampled_from([0, 0, 0, 1, 2])), min_size=4, max_size=4
        ),
        min_size=1,
        max_size=8,
    ),
    gamma=st.floats(0.0, 1.0),
)
def test_matches_loop_reference(rows: list[list[tuple[float, int]]], gamma: float) -> None:
    rewards = torch.tensor([[r for r, _ in row] for row in rows], dtype=torch.float64)
    ends = torch.tensor([[e for _, e in row] for row in rows])
    out = nstep_returns(rewards, ends, gamma)
    for b, row in enumerate(rows):
        g, d, i = reference([r for r, _ in row], [e for _, e in row], gamma)
        assert math.isclose(float(out.returns[b]), g, rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(float(out.discounts[b]), d, rel_tol=1e-9, abs_tol=1e-12)
        assert int(out.bootstrap_index[b]) == i


def test_on_padded_windows_from_a_table() -> None:
    table = Table(Spec({"obs": ((), "int64"), "reward": ()}), 50, sequence_length=4, pad=True)
    # One episode of 5 steps, terminated; rewards 1 each.
    table.extend(
        {"obs": torch.arange(5), "reward": torch.ones(5)}, ends=torch.tensor([0, 0, 0, 0, 1])
    )
    s = table.sample(200)
    assert s.ends is not None
    assert s.mask is not None
    t = nstep_returns(s["reward"], s.ends, 0.5, mask=s.mask)
    start = s["obs"][:, 0]
    for b in range(200):
        k = int(start[b])
        left = 5 - k  # steps until the terminal one, inclusive
        if left > 3:
            assert float(t.discounts[b]) == 0.125
            assert int(t.bootstrap_index[b]) == 3
            assert float(t.returns[b]) == 1.75
        else:
            assert float(t.discounts[b]) == 0.0
            assert float(t.returns[b]) == sum(0.5**j for j in range(left))
    boot = t.gather(s["obs"])
    assert boot.shape == (200,)
    assert torch.equal(t.targets(torch.zeros(200, dtype=torch.float32)), t.returns)


def test_truncation_bootstraps_from_last_observation() -> None:
    r = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    e = torch.tensor([[0, 2, 0, 0]])
    t = nstep_returns(r, e, 0.9)
    assert t.returns.tolist() == [1.0]
    assert int(t.bootstrap_index[0]) == 1
    assert math.isclose(float(t.discounts[0]), 0.9, rel_tol=1e-6)


def test_mask_without_end_code_is_truncation() -> None:
    r = torch.ones(1, 4)
    e = torch.zeros(1, 4, dtype=torch.int64)
    m = torch.tensor([[True, True, False, False]])
    t = nstep_returns(r, e, 0.5, mask=m)
    assert t.returns.tolist() == [1.0]
    assert t.bootstrap_index.tolist() == [1]


def test_rejects_bad_input() -> None:
    with pytest.raises(InvalidArgumentError, match="rewards must be"):
        nstep_returns(torch.ones(3), torch.zeros(3), 0.9)
    with pytest.raises(InvalidArgumentError, match="ends must have the shape"):
        nstep_returns(torch.ones(2, 3), torch.zeros(2, 2), 0.9)
    with pytest.raises(InvalidArgumentError, match=r"gamma must be a number in \[0, 1\]"):
        nstep_returns(torch.ones(2, 3), torch.zeros(2, 3), 1.5)
    with pytest.raises(InvalidArgumentError, match="mask must have the shape"):
        nstep_returns(
            torch.ones(2, 3), torch.zeros(2, 3), 0.5, mask=torch.ones(2, 2, dtype=torch.bool)
        )
