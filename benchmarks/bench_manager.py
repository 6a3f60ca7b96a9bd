"""Benchmark the Reverb-style manager: observer writes and ``as_dataset`` reads.

Measures, in one run:

* observer: one 140-byte TF-Agents-shaped ``Trajectory`` step per call, steps/s;
* dataset: ``as_dataset(256, num_steps=2)`` on a full table, items/s;
* a floor for each: raw ``Table.extend`` of the same steps in one batch, and raw
  ``Table.sample(256)``, so the manager's own overhead is visible as a ratio.

The TF-Agents + Reverb figures are constants measured elsewhere (Reverb 0.14 has no
wheel for every platform, so CI cannot re-measure them); ratios against them are
printed beside our numbers.

Run::

    PYTHONPATH=src python benchmarks/bench_manager.py          # about 30 s
    PYTHONPATH=src python benchmarks/bench_manager.py --quick  # a few seconds
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from typing import Any

import numpy as np
import torch

from replaydb.manager import ReplayBufferManager
from replaydb.table import Table

# Measured elsewhere, with TF-Agents' ReverbAddTrajectoryObserver and
# ReverbReplayBuffer.as_dataset on a 140-byte step (see issue 5); not re-measured here.
REVERB_OBSERVER_STEPS_PER_S = 5_300.0
REVERB_DATASET_ITEMS_PER_S = 25_000.0
TARGET_OBSERVER_RATIO = 20.0
TARGET_DATASET_RATIO = 10.0

Trajectory = collections.namedtuple(
    "Trajectory",
    ["step_type", "observation", "action", "policy_info", "next_step_type", "reward", "discount"],
)
# 4 + 29*4 + 4 + 4 + 4 + 4 + 4 = 140 bytes per step.
SPEC = Trajectory(
    step_type=((), "int32"),
    observation=((29,), "float32"),
    action=((1,), "float32"),
    policy_info=(),
    next_step_type=((), "int32"),
    reward=((), "float32"),
    discount=((), "float32"),
)
EPISODE = 96


def make_steps(n: int) -> list[Any]:
    """``n`` steps of episodes of ``EPISODE`` steps, built before timing starts."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        t = i % EPISODE
        last = t == EPISODE - 1
        out.append(
            Trajectory(
                step_type=np.int32(0 if t == 0 else 1),
                observation=rng.standard_normal(29).astype(np.float32),
                action=rng.standard_normal(1).astype(np.float32),
                policy_info=(),
                next_step_type=np.int32(2 if last else 1),
                reward=np.float32(rng.standard_normal()),
                discount=np.float32(0.0 if last else 1.0),
            )
        )
    return out


def best_of(repeats: int, fn: Any) -> float:
    """Smallest wall time of ``repeats`` calls of ``fn`` (noise on a shared box)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_observer(n: int, repeats: int, root: str) -> tuple[float, float]:
    steps = make_steps(n)

    def run_observer() -> None:
        with ReplayBufferManager(SPEC, n, f"{root}/obs", sequence_length=2) as manager:
            _, observer = manager.create_replay_buffer()
            for step in steps:
                observer(step)
            observer.flush()
            assert manager.num_frames() == n - -(-n // EPISODE)

    ours = n / best_of(repeats, run_observer)

    manager = ReplayBufferManager(SPEC, n, f"{root}/floor", sequence_length=2)
    spec = manager._require_nest().spec if manager._nest is not None else None
    assert spec is not None
    cols = {name: np.stack([np.asarray(getattr(s, name)) for s in steps]) for name in spec}
    ends = np.where(cols["next_step_type"] == 2, 1, 0).astype(np.int64)

    def run_floor() -> None:
        table = Table(spec, n, sequence_length=2)
        table.extend(cols, ends=ends)

    floor = n / best_of(repeats, run_floor)
    return ours, floor


def bench_nested_observer(n: int, repeats: int, root: str) -> float:
    """The same step with the observation split into a dict of two fields."""
    spec = SPEC._replace(observation={"a": ((15,), "float32"), "b": ((14,), "float32")})
    steps = [
        s._replace(observation={"a": s.observation[:15].copy(), "b": s.observation[15:].copy()})
        for s in make_steps(n)
    ]

    def run() -> None:
        with ReplayBufferManager(spec, n, f"{root}/nested", sequence_length=2) as manager:
            _, observer = manager.create_replay_buffer()
            for step in steps:
                observer(step)
            observer.flush()

    return n / best_of(repeats, run)


def bench_dataset(n_batches: int, repeats: int, root: str) -> tuple[float, float]:
    capacity = 50_000
    with ReplayBufferManager(SPEC, capacity, f"{root}/ds", sequence_length=2) as manager:
        replay_buffer, observer = manager.create_replay_buffer()
        # Fill through the vector-env path: 8 envs per call.
        steps = make_steps(capacity)
        for i in range(0, capacity, 8):
            chunk = steps[i : i + 8]
            observer(
                Trajectory(
                    *(
                        np.stack([getattr(s, f) for s in chunk]) if f != "policy_info" else ()
                        for f in Trajectory._fields
                    )
                )
            )
        observer.flush()
        dataset = replay_buffer.as_dataset(256, num_steps=2, num_parallel_calls=2).prefetch(4)
        it = iter(dataset)
        next(it)

        def run_dataset() -> None:
            for _ in range(n_batches):
                batch, _info = next(it)
                assert batch.observation.shape == (256, 2, 29)

        ours = n_batches * 256 / best_of(repeats, run_dataset)
        dataset.close()
        table = manager._server.table() if manager._server is not None else None
        assert table is not None

        def run_floor() -> None:
            for _ in range(n_batches):
                table.sample(256)

        floor = n_batches * 256 / best_of(repeats, run_floor)
    return ours, floor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n_steps, n_batches, repeats = (20_000, 100, 3) if args.quick else (100_000, 400, 5)
    with tempfile.TemporaryDirectory() as root:
        obs, obs_floor = bench_observer(n_steps, repeats, root)
        nested = bench_nested_observer(n_steps, repeats, root)
        ds, ds_floor = bench_dataset(n_batches, repeats, root)
    print(f"replaydb manager benchmark ({'quick' if args.quick else 'full'}), 140-byte step")
    print(
        f"observer, 1 step/call : {obs:>12,.0f} steps/s | Reverb (measured elsewhere) "
        f"{REVERB_OBSERVER_STEPS_PER_S:,.0f} -> {obs / REVERB_OBSERVER_STEPS_PER_S:5.1f}x "
        f"(target {TARGET_OBSERVER_RATIO:.0f}x) | raw Table.extend floor {obs_floor:,.0f} "
        f"-> ours/floor {obs / obs_floor:.2f}"
    )
    print(
        f"observer, nested obs  : {nested:>12,.0f} steps/s | Reverb (measured elsewhere) "
        f"{REVERB_OBSERVER_STEPS_PER_S:,.0f} -> {nested / REVERB_OBSERVER_STEPS_PER_S:5.1f}x "
        "(observation as a dict of two fields)"
    )
    print(
        f"as_dataset(256, 2)    : {ds:>12,.0f} items/s | Reverb (measured elsewhere) "
        f"{REVERB_DATASET_ITEMS_PER_S:,.0f} -> {ds / REVERB_DATASET_ITEMS_PER_S:5.1f}x "
        f"(target {TARGET_DATASET_RATIO:.0f}x) | raw Table.sample floor {ds_floor:,.0f} "
        f"-> ours/floor {ds / ds_floor:.2f}"
    )


if __name__ == "__main__":
    main()
