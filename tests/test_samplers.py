"""Prioritized sampling and Reverb's selectors, through the Table."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import pytest
import torch

from replaydb import Spec, Table, load_table, save_table
from replaydb.errors import InvalidArgumentError, WouldBlockForeverError
from replaydb.rate_limiters import Queue
from replaydb.samplers import (
    Fifo,
    Lifo,
    MaxHeap,
    MinHeap,
    Prioritized,
    Uniform,
    sampler_from_config,
)

SPEC = Spec({"x": ()})


def chi2_critical(dof: int, z: float = 4.75) -> float:
    """Wilson-Hilferty upper quantile of chi-square (z = 4.75: p ~ 1e-6)."""
    a = 2.0 / (9.0 * dof)
    return dof * (1.0 - a + z * math.sqrt(a)) ** 3


def prioritized_table(
    n: int, priorities: torch.Tensor, alpha: float = 0.6, capacity: int | None = None, **kw: object
) -> Table:
    table = Table(SPEC, capacity or n, sampler=Prioritized(alpha=alpha, eps=0.0, seed=0), **kw)  # type: ignore[arg-type]
    table.extend({"x": torch.arange(float(n))}, priorities=priorities)
    return table


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
def test_frequencies_match_priority_power_alpha(alpha: float) -> None:
    n = 12
    pri = torch.linspace(0.5, 6.0, n, dtype=torch.float64)
    table = prioritized_table(n, pri, alpha)
    draws = 24_000
    counts = torch.zeros(n, dtype=torch.float64)
    for _ in range(12):
        s = table.sample(draws // 12)
        counts += torch.bincount(s["x"].long(), minlength=n).double()
    expected_p = pri**alpha / (pri**alpha).sum()
    stat = float((((counts - draws * expected_p) ** 2) / (draws * expected_p)).sum())
    assert stat < chi2_critical(n - 1), f"chi-square {stat:.1f} for alpha={alpha}"


def test_probabilities_and_weights() -> None:
    pri = torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=torch.float64)
    table = prioritized_table(4, pri, alpha=0.5)
    s = table.sample(64, beta=0.7)
    leaf = pri.sqrt()
    p = leaf / leaf.sum()
    idx = s["x"].long()
    assert torch.allclose(s.probabilities, p[idx])
    w = (4 * p[idx]) ** -0.7
    assert torch.allclose(s.weights, (w / w.max()).float())
    assert float(s.weights.max()) == 1.0
    assert torch.equal(s.priorities, pri[idx])
    # The default beta is the sampler's own; beta=0 gives unit weights.
    s0 = table.sample(8, beta=0.0)
    assert torch.equal(s0.weights, torch.ones(8))
    with pytest.raises(InvalidArgumentError, match=r"beta must be a number in \[0, 1\]"):
        table.sample(4, beta=1.5)


def test_new_items_get_max_priority_and_updates_apply() -> None:
    table = Table(SPEC, 8, sampler=Prioritized(alpha=1.0, eps=0.0, seed=1))
    table.extend({"x": torch.arange(2.0)}, priorities=torch.tensor([1.0, 5.0]))
    table.insert({"x": 2.0})
    s = table.sample(200)
    assert float(s.priorities[s["x"] == 2.0][0]) == 5.0
    # Make item 0 dominant.
    assert table.update_priorities(torch.tensor([0]), torch.tensor([1000.0])) == 1
    s = table.sample(400)
    assert float((s["x"] == 0.0).double().mean()) > 0.9


def test_stale_priority_updates_are_ignored() -> None:
    table = Table(SPEC, 4, sampler=Prioritized(alpha=1.0, eps=0.0, seed=2))
    table.extend({"x": torch.arange(4.0)})
    old = table.sample(16).keys
    table.extend({"x": torch.arange(10.0, 14.0)})  # overwrites every item
    before = table.sampler.tree.leaves.clone()  # type: ignore[attr-defined]
    assert table.update_priorities(old, torch.full(old.shape, 50.0)) == 0
    assert torch.equal(table.sampler.tree.leaves, before)  # type: ignore[attr-defined]
    new = table.sample(4).keys
    assert table.update_priorities(new[:1], torch.tensor([3.0])) == 1
    # A negative key never names an item, not even an empty slot's ``-1``.
    sparse = Table(SPEC, 8, sampler=Prioritized(seed=0))
    sparse.insert({"x": 1.0})
    assert sparse.update_priorities(torch.tensor([-1, 0]), torch.tensor([2.0, 3.0])) == 1
    assert sparse.update_priorities([], []) == 0


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_bad_priorities_are_rejected_and_change_nothing(bad: float) -> None:
    table = prioritized_table(3, torch.ones(3, dtype=torch.float64))
    keys = table.sample(2).keys
    state = {k: v.clone() for k, v in table.state_dict().items()}
    with pytest.raises(InvalidArgumentError, match="finite and > 0"):
        table.update_priorities(keys, torch.tensor([1.0, bad]))
    with pytest.raises(InvalidArgumentError, match="finite and > 0"):
        table.extend({"x": torch.zeros(1)}, priorities=torch.tensor([bad]))
    after = table.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 1.5}, r"alpha must be in \[0, 1\], got 1.5"),
        ({"beta": -0.1}, r"beta must be in \[0, 1\]"),
        ({"eps": -1.0}, "eps must be a finite number >= 0"),
        ({"alpha": "a"}, "alpha must be a number"),
    ],
)
def test_prioritized_rejects_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        Prioritized(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "sampler",
    [Uniform(seed=1), Prioritized(0.5, 0.3, 1e-3, seed=1), Fifo(), Lifo(), MinHeap(), MaxHeap()],
)
def test_configs_rebuild(sampler: object) -> None:
    config = sampler.config()  # type: ignore[attr-defined]
    assert sampler_from_config(config).config() == config


def test_save_load_next_sample_identical(tmp_path: Path) -> None:
    table = Table(SPEC, 50, sampler=Prioritized(seed=3))
    table.extend({"x": torch.arange(70.0)})
    s = table.sample(16)
    table.update_priorities(s.keys, torch.rand(16, dtype=torch.float64) + 0.1)
    path = save_table(table, tmp_path / "t")
    restored = load_table(path)
    a, b = table.sample(32), restored.sample(32)
    assert torch.equal(a.keys, b.keys)
    assert torch.equal(a.weights, b.weights)
    assert torch.equal(a.probabilities, b.probabilities)
    table.update_priorities(a.keys, torch.arange(1.0, 33.0))
    restored.update_priorities(b.keys, torch.arange(1.0, 33.0))
    assert torch.equal(table.sample(8).keys, restored.sample(8).keys)


# ------------------------------------------------------------------- selectors
def test_fifo_queue_returns_oldest_items_once() -> None:
    q = Table.queue(SPEC, 10)
    q.extend({"x": torch.arange(6.0)})
    assert q.sample(4)["x"].tolist() == [0.0, 1.0, 2.0, 3.0]
    q.extend({"x": torch.arange(6.0, 9.0)})
    s = q.sample(5)
    assert s["x"].tolist() == [4.0, 5.0, 6.0, 7.0, 8.0]
    assert s.times_sampled.tolist() == [1] * 5
    assert torch.equal(s.probabilities, torch.ones(5, dtype=torch.float64))
    assert len(q) == 0


def test_stack_returns_newest_first_and_never_overwrites() -> None:
    st = Table.stack(SPEC, 4)
    st.extend({"x": torch.arange(4.0)})
    assert st.sample(2)["x"].tolist() == [3.0, 2.0]
    st.extend({"x": torch.tensor([10.0, 11.0])})  # rows of 2 and 3 are free; 0 and 1 are not
    assert st.sample(4)["x"].tolist() == [11.0, 10.0, 1.0, 0.0]


def test_full_queue_insert_waits_for_consumer() -> None:
    q = Table.queue(SPEC, 3)
    q.extend({"x": torch.arange(3.0)})
    with pytest.raises(WouldBlockForeverError, match="would block forever"):
        q.insert({"x": 3.0})
    got: list[float] = []

    def consumer() -> None:
        time.sleep(0.1)
        got.extend(q.sample(2, timeout=5)["x"].tolist())

    t = threading.Thread(target=consumer)
    t.start()
    q.extend({"x": torch.tensor([3.0, 4.0])}, timeout=5)
    t.join()
    assert got == [0.0, 1.0]
    assert q.sample(3)["x"].tolist() == [2.0, 3.0, 4.0]


def test_max_times_sampled_repeats_in_order() -> None:
    table = Table(SPEC, 8, sampler=Fifo(), max_times_sampled=2)
    table.extend({"x": torch.arange(3.0)})
    s = table.sample(5)
    assert s["x"].tolist() == [0.0, 0.0, 1.0, 1.0, 2.0]
    assert len(table) == 1
    with pytest.raises(WouldBlockForeverError, match="fewer than 2 more times"):
        table.sample(2)


def test_fifo_without_max_times_sampled_returns_oldest() -> None:
    table = Table(SPEC, 4, sampler=Fifo())
    table.extend({"x": torch.arange(6.0)})  # ring keeps 2..5
    assert table.sample(3)["x"].tolist() == [2.0, 2.0, 2.0]
    lifo = Table(SPEC, 4, sampler=Lifo())
    lifo.extend({"x": torch.arange(6.0)})
    assert lifo.sample(2)["x"].tolist() == [5.0, 5.0]


def test_heaps_order_by_priority_then_age() -> None:
    pri = torch.tensor([3.0, 1.0, 2.0, 1.0, 3.0])
    lo = Table(SPEC, 8, sampler=MinHeap(), max_times_sampled=1)
    lo.extend({"x": torch.arange(5.0)}, priorities=pri)
    assert lo.sample(5)["x"].tolist() == [1.0, 3.0, 2.0, 0.0, 4.0]
    hi = Table(SPEC, 8, sampler=MaxHeap(), max_times_sampled=1)
    hi.extend({"x": torch.arange(5.0)}, priorities=pri)
    hi.update_priorities(torch.tensor([1]), torch.tensor([10.0]))
    assert hi.sample(5)["x"].tolist() == [1.0, 0.0, 4.0, 2.0, 3.0]


def test_selector_state_round_trip(tmp_path: Path) -> None:
    st = Table.stack(SPEC, 6)
    st.extend({"x": torch.arange(6.0)})
    st.sample(3)
    st.extend({"x": torch.tensor([7.0, 8.0])})
    restored = load_table(save_table(st, tmp_path / "s"))
    assert (
        restored.sample(5)["x"].tolist() == st.sample(5)["x"].tolist() == [8.0, 7.0, 2.0, 1.0, 0.0]
    )


def test_queue_sample_larger_than_capacity_fails_at_once() -> None:
    q = Table.queue(SPEC, 2)
    with pytest.raises(WouldBlockForeverError, match="can never go"):
        q.sample(3, timeout=10)
    with pytest.raises(InvalidArgumentError, match="write at most 2 per call"):
        q.extend({"x": torch.arange(3.0)}, timeout=10)
    wide = Table(SPEC, 10, sampler=Fifo(), rate_limiter=Queue(2), max_times_sampled=1)
    with pytest.raises(WouldBlockForeverError, match="admits at most 2 unsampled"):
        wide.extend({"x": torch.arange(3.0)}, timeout=10)
    assert wide.num_steps == 0


@pytest.mark.gpu
def test_prioritized_on_cuda() -> None:
    table = Table(SPEC, 1000, sampler=Prioritized(seed=0), device="cuda")
    table.extend({"x": torch.arange(1000.0, device="cuda")}, priorities=torch.rand(1000) + 0.1)
    s = table.sample(256)
    assert s.keys.device.type == "cuda"
    assert s.weights.device.type == "cuda"
    assert float(s.weights.max()) == 1.0
    assert table.update_priorities(s.keys, torch.rand(256, device="cuda") + 0.1) == 256


def test_concurrent_writers_and_learner_keep_tree_consistent() -> None:
    table = Table(SPEC, 500, sampler=Prioritized(alpha=0.7, seed=4))
    table.extend({"x": torch.zeros(64)})
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        try:
            while not stop.is_set():
                table.extend({"x": torch.rand(16, generator=g)}, priorities=torch.rand(16) + 0.1)
        except BaseException as exc:  # pragma: no cover - the failure is the report
            errors.append(exc)

    def learner() -> None:
        try:
            while not stop.is_set():
                s = table.sample(32, timeout=5)
                table.update_priorities(s.keys, torch.rand(32, dtype=torch.float64) + 0.1)
        except BaseException as exc:  # pragma: no cover - the failure is the report
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    threads.append(threading.Thread(target=learner))
    for t in threads:
        t.start()
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(5)
    assert not errors
    live = table._item_key >= 0
    leaves = table.sampler.tree.leaves  # type: ignore[attr-defined]
    assert bool((leaves[~live] == 0).all())
    want = (table._priority[live] + 1e-6) ** 0.7
    assert torch.allclose(leaves[live], want, rtol=1e-12)
    assert math.isclose(table.sampler.tree.total, float(want.sum()), rel_tol=1e-9)  # type: ignore[attr-defined]
    assert len(table) == int(live.sum()) >= 64
