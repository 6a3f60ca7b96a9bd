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


# ------------------------------------------------------------------ final steps


def reference_final(
    rewards: list[float], ends: list[int], gamma: float
) -> tuple[float, float, int]:
    """(return, discount, bootstrap index) when end codes mark final-step rows."""
    n = len(rewards) - 1
    g = 0.0
    for k in range(n + 1):
        if ends[k] == 1:  # o_k is terminal: k rewards, no bootstrap
            return g, 0.0, k
        if ends[k] == 2:  # o_k is the last observation stored: bootstrap from it
            return g, gamma**k, k
        if k < n:
            g += gamma**k * rewards[k]
    return g, gamma**n, n


@settings(max_examples=30, deadline=None)
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
def test_final_step_matches_loop_reference(
    rows: list[list[tuple[float, int]]], gamma: float
) -> None:
    rewards = torch.tensor([[r for r, _ in row] for row in rows], dtype=torch.float64)
    ends = torch.tensor([[e for _, e in row] for row in rows])
    out = nstep_returns(rewards, ends, gamma, final_step=True)
    for b, row in enumerate(rows):
        g, d, i = reference_final([r for r, _ in row], [e for _, e in row], gamma)
        assert math.isclose(float(out.returns[b]), g, rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(float(out.discounts[b]), d, rel_tol=1e-9, abs_tol=1e-12)
        assert int(out.bootstrap_index[b]) == i
        assert int(out.steps[b]) == i


def write_steps_layout(table: Table, lengths: list[int], code: int) -> None:
    """Episodes in the collectors' steps layout: L transition rows then a final step.

    Transition row t of an episode holds obs t, action 1 and reward 1; the final
    step holds obs L, action 0, reward 0 and the end code. Episodes alternate
    between streams 0 and 1.
    """
    obs, action, reward, streams, ends = [], [], [], [], []
    for i, n in enumerate(lengths):
        for t in range(n + 1):
            obs.append(t)
            action.append(1 if t < n else 0)
            reward.append(1.0 if t < n else 0.0)
            ends.append(code if t == n else 0)
            streams.append(i % 2)
    order = list(range(len(obs)))
    table.extend(
        {
            "obs": torch.tensor([obs[j] for j in order]),
            "action": torch.tensor([action[j] for j in order]),
            "reward": torch.tensor([reward[j] for j in order]),
        },
        streams=torch.tensor([streams[j] for j in order]),
        ends=torch.tensor([ends[j] for j in order]),
    )


STEPS_SPEC = Spec({"obs": ((), "int64"), "action": ((), "int64"), "reward": ()})


@pytest.mark.parametrize("code", [1, 2])
def test_padded_windows_never_start_at_a_final_step(code: int) -> None:
    n = 3
    table = Table(STEPS_SPEC, 500, sequence_length=n + 1, pad=True, final_step=True)
    write_steps_layout(table, [5, 1, 2, 7, 3, 4], code)
    s = table.sample(2000)
    assert s.mask is not None
    assert s.ends is not None
    # Every window starts at a transition row: action 1, no end code.
    assert bool((s["action"][:, 0] == 1).all())
    assert bool((s.ends[:, 0] == 0).all())
    t = nstep_returns(s["reward"], s.ends, 0.5, mask=s.mask, final_step=True)
    assert bool((t.steps >= 1).all())
    # Against the hand-computed target: obs t of an episode of L transitions.
    start = s["obs"][:, 0]
    for b in range(2000):
        k = int(start[b])
        final = [j for j in range(n + 1) if int(s.ends[b, j]) != 0]
        # transitions until the final step (more than n if the window does not reach it)
        left = int(s["obs"][b, final[0]]) - k if final else n + 1
        if left > n:
            assert int(t.steps[b]) == n
            assert float(t.discounts[b]) == 0.5**n
        else:
            assert int(t.steps[b]) == left
            assert float(t.discounts[b]) == (0.0 if code == 1 else 0.5**left)
            assert int(t.gather(s["obs"])[b]) == k + left  # the final observation
        assert math.isclose(float(t.returns[b]), sum(0.5**j for j in range(int(t.steps[b]))))


def test_without_final_step_padded_windows_start_at_final_steps() -> None:
    # The default reads an end code as "the episode ended after this step's action",
    # so the padded window at the final-step row is served (and is a 0-step target
    # in final_step terms): the collectors' layout needs final_step=True.
    table = Table(STEPS_SPEC, 500, sequence_length=4, pad=True)
    write_steps_layout(table, [5, 1, 2, 7], 1)
    starts = table.sample(2000)["action"][:, 0]
    assert bool((starts == 0).any())
    strict = Table(STEPS_SPEC, 500, sequence_length=4, pad=True, final_step=True)
    write_steps_layout(strict, [5, 1, 2, 7], 1)
    assert len(strict) == len(table) - 4  # one final step per episode


def test_final_step_window_of_two() -> None:
    # T = 2 on the steps layout: the last window ends at the final step and the
    # terminated target does not bootstrap; the final step starts no window.
    table = Table(STEPS_SPEC, 50, sequence_length=2, pad=True, final_step=True)
    write_steps_layout(table, [3], 1)
    assert len(table) == 3
    s = table.sample(100)
    assert s.ends is not None
    t = nstep_returns(s["reward"], s.ends, 0.9, final_step=True)
    last = s["obs"][:, 0] == 2
    assert bool(last.any()) and bool((t.discounts[last] == 0).all())
    assert bool((t.discounts[~last] == torch.tensor(0.9)).all())


def test_final_step_must_be_a_bool() -> None:
    with pytest.raises(InvalidArgumentError, match="final_step must be a bool"):
        nstep_returns(torch.ones(2, 3), torch.zeros(2, 3), 0.5, final_step=1)  # type: ignore[arg-type]


def test_collector_final_steps_start_no_padded_window() -> None:
    pytest.importorskip("gymnasium")
    from replaydb.collect import STEP_LAST, step_spec, warm

    share = {}
    for final_step in (False, True):
        table = Table(
            step_spec("CartPole-v1"), 3000, sequence_length=4, pad=True, final_step=final_step
        )
        warm(table, "random", 3000, num_envs=4, env="CartPole-v1", seed=3, progress=False)
        s = table.sample(4000)
        first_is_final = s["step_type"][:, 0] == STEP_LAST
        share[final_step] = float(first_is_final.double().mean())
        if final_step:
            assert s.ends is not None
            assert s.mask is not None
            t = nstep_returns(s["reward"], s.ends, 0.99, mask=s.mask, final_step=True)
            assert bool((t.steps >= 1).all())
            # A window that reaches a terminated final step does not bootstrap.
            done = (s.ends == 1).any(dim=1)
            assert bool((t.discounts[done] == 0).all())
    assert share[True] == 0.0
    assert share[False] > 0.01  # what issue 14 measured (about 4%)
