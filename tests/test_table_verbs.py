"""Table verbs that front ends (the Ray service) use instead of Table's private state."""

from __future__ import annotations

import threading

import pytest
import torch

from replaydb.errors import InvalidArgumentError, SpecMismatchError
from replaydb.rate_limiters import MinSize, SampleToInsertRatio
from replaydb.samplers import Fifo, Prioritized, Uniform
from replaydb.spec import Spec
from replaydb.table import LiveSteps, Table

SPEC = Spec({"obs": (2,), "id": ((), torch.int64)})


def _steps(ids: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"obs": torch.stack([ids.float(), -ids.float()], 1), "id": ids}


def test_priority_total_counts_items_for_uniform_and_selectors() -> None:
    for sampler in (Uniform(seed=0), Fifo()):
        t = Table(SPEC, 8, sampler=sampler)
        assert t.priority_total() == 0.0
        t.extend(_steps(torch.arange(5)))
        assert t.priority_total() == 5.0
        t.extend(_steps(torch.arange(5)))  # the ring holds 8
        assert t.priority_total() == 8.0


def test_priority_total_is_the_tree_total_with_eps_and_alpha() -> None:
    alpha, eps = 0.6, 0.01
    t = Table(SPEC, 10, sampler=Prioritized(alpha=alpha, eps=eps, seed=0))
    pri = torch.full((10,), 1e-3, dtype=torch.float64)
    t.extend(_steps(torch.arange(10)), priorities=pri)
    expected = float(((pri + eps) ** alpha).sum())
    assert t.priority_total() == pytest.approx(expected, rel=1e-12)
    assert t.priority_total() == pytest.approx(0.668, abs=1e-3)  # the figure
    assert float((pri**alpha).sum()) == pytest.approx(0.158, abs=1e-3)  # the old, wrong one
    batch = t.sample(4)
    t.update_priorities(batch.keys[:1], torch.tensor([2.0], dtype=torch.float64))
    live = pri.clone()
    live[int(batch.keys[0])] = 2.0
    assert t.priority_total() == pytest.approx(float(((live + eps) ** alpha).sum()), rel=1e-9)
    # The probability a sample reports is the item's weight over this total.
    s = t.sample(50)
    w = (live[s.keys] + eps) ** alpha
    assert torch.allclose(s.probabilities, w / t.priority_total(), rtol=1e-9)
    t.reset()
    assert t.priority_total() == 0.0


def test_live_steps_round_trip_keeps_items_priorities_and_counters() -> None:
    src = Table(SPEC, 50, sequence_length=3, sampler=Prioritized(alpha=1.0, eps=0.0, seed=1))
    ids = torch.arange(40)
    src.extend(
        _steps(ids),
        streams=ids % 2,
        ends=(ids % 10 >= 8),
        priorities=1.0 + ids.double(),
    )
    src.sample(3)
    steps = src.live_steps()
    assert isinstance(steps, LiveSteps)
    assert torch.equal(steps.data["id"], ids)  # write order
    assert torch.equal(steps.streams, ids % 2)
    assert steps.inserts == src.info().inserts
    assert steps.samples == 3
    dst = Table(SPEC, 60, sequence_length=3, sampler=Prioritized(alpha=1.0, eps=0.0, seed=1))
    assert dst.restore_steps(steps) == len(src)
    assert dst.info().inserts == src.info().inserts
    assert dst.info().samples == 3
    assert dst.priority_total() == pytest.approx(src.priority_total())
    batch = dst.sample(20)
    # a window's priority is the one given with its last step
    assert torch.equal(batch.priorities, 1.0 + batch["id"][:, -1].double())


def test_restore_steps_of_live_steps_bypasses_the_limiter_and_rejects_bad_input_untouched() -> None:
    src = Table(SPEC, 20)
    src.extend(_steps(torch.arange(10)))
    steps = src.live_steps()
    tight = Table(SPEC, 20, rate_limiter=SampleToInsertRatio(1.0, 1, 2.0))
    assert tight.restore_steps(steps) == 10  # a plain extend of 10 would block
    bad = LiveSteps(
        data={"obs": torch.zeros(2, 2)},
        streams=torch.zeros(2, dtype=torch.int64),
        ends=torch.zeros(2, dtype=torch.int64),
        priorities=torch.ones(2, dtype=torch.float64),
        inserts=0,
        samples=0,
    )
    other = Table(SPEC, 20, rate_limiter=MinSize(1))
    with pytest.raises(SpecMismatchError):
        other.restore_steps(bad)
    assert other.info().num_steps == 0
    assert other.rate_limiter.inserts == 0
    with pytest.raises(InvalidArgumentError, match=r"steps.samples must be an int >= 0, got -1"):
        other.restore_steps(
            LiveSteps(steps.data, steps.streams, steps.ends, steps.priorities, 1, -1)
        )
    assert other.info().num_steps == 0


def test_locked_holds_every_verb() -> None:
    t = Table(SPEC, 10)
    done = threading.Event()

    def write() -> None:
        t.extend(_steps(torch.arange(3)))
        done.set()

    with t.locked():
        th = threading.Thread(target=write)
        th.start()
        assert not done.wait(0.2)
        assert len(t) == 0
        with t.locked():  # reentrant
            assert t.num_steps == 0
    th.join(5)
    assert done.is_set() and len(t) == 3


def test_validators_match_extend() -> None:
    assert Table.validate_ends(None, 2).tolist() == [0, 0]
    assert Table.validate_ends([0, 2], 2).tolist() == [0, 2]
    with pytest.raises(InvalidArgumentError, match="ends must be a scalar or have shape"):
        Table.validate_ends([0, 1, 1], 2)
    with pytest.raises(InvalidArgumentError, match="ends must be bools or codes"):
        Table.validate_ends([0, 7], 2)
    assert Table.validate_priorities(torch.tensor([1.0, 2.0]), 2).dtype == torch.float64
    with pytest.raises(InvalidArgumentError, match=r"priorities must be finite and > 0, got 0.0"):
        Table.validate_priorities([1.0, 0.0], 2)
    with pytest.raises(InvalidArgumentError, match=r"priorities must be finite and > 0, got nan"):
        Table.validate_priorities(float("nan"), 3)
    with pytest.raises(InvalidArgumentError, match=r"have shape \(3,\), got \(2,\)"):
        Table.validate_priorities([1.0, 2.0], 3)
