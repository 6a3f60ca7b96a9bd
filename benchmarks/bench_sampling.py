"""Prioritized and sequence sampling: replaydb against installed peers, ratios in one run.

Run:
    PYTHONPATH=src python benchmarks/bench_sampling.py            # capacity 1,000,000
    PYTHONPATH=src python benchmarks/bench_sampling.py --quick    # capacity 200,000, fewer reps

Measures, with one torch thread, the median time of:

* a prioritized step (sample 256 + update 256 priorities) on a full table, against
  cpprb's and Tianshou's ``PrioritizedReplayBuffer`` and TorchRL's ``PrioritizedSampler``
  (each skipped with a note when not installed), and against a uniform
  ``sample(256)`` of the same table;
* sequence sampling of B = 64 windows of T = 2 and T = 40 steps from 8 interleaved
  streams, against a uniform sample of the same number of single steps (64 * T) from
  a single-step table of the same spec.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from replaydb import Spec, Table, _kernels
from replaydb.samplers import Prioritized

OBS = 8
BATCH = 256


def race(contenders: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median CPU seconds per call of each contender.

    Blocks of ten calls of every contender are interleaved, so load from other
    processes falls on all of them alike; CPU time (``time.process_time``) leaves
    out the time this process spent waiting for a core.
    """
    for fn in contenders.values():
        for _ in range(20):
            fn()
    blocks: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(max(1, reps // 10)):
        for name, fn in contenders.items():
            t0 = time.process_time()
            for _ in range(10):
                fn()
            blocks[name].append((time.process_time() - t0) / 10)
    return {name: statistics.median(b) for name, b in blocks.items()}


def transition_spec() -> Spec:
    return Spec({"obs": (OBS,), "action": (), "reward": (), "next_obs": (OBS,), "done": ()})


def fill(table: Table, n: int) -> None:
    g = torch.Generator().manual_seed(0)
    chunk = 100_000
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        table.extend(
            {
                "obs": torch.randn(m, OBS, generator=g),
                "action": torch.zeros(m),
                "reward": torch.randn(m, generator=g),
                "next_obs": torch.randn(m, OBS, generator=g),
                "done": torch.zeros(m),
            }
        )


def bench_prioritized(capacity: int, reps: int) -> list[tuple[str, float]]:
    contenders: dict[str, Callable[[], object]] = {}
    g = torch.Generator().manual_seed(1)
    new_p = [torch.rand(BATCH, dtype=torch.float64, generator=g) + 0.01 for _ in range(16)]
    new_np = [p.numpy() for p in new_p]

    table = Table(transition_spec(), capacity, sampler=Prioritized(seed=0))
    fill(table, capacity)
    uniform = Table(transition_spec(), capacity)
    fill(uniform, capacity)
    i = [0]

    def ours() -> None:
        s = table.sample(BATCH)
        i[0] = (i[0] + 1) % 16
        table.update_priorities(s.keys, new_p[i[0]])

    contenders["replaydb prioritized step"] = ours
    contenders["replaydb prioritized sample only"] = lambda: table.sample(BATCH)
    contenders["replaydb uniform sample(256), same spec"] = lambda: uniform.sample(BATCH)

    if importlib.util.find_spec("cpprb") is None:
        print("note: cpprb is not installed; skipping its PrioritizedReplayBuffer")
    else:
        from cpprb import PrioritizedReplayBuffer as CpprbPER

        rb = CpprbPER(
            capacity,
            {"obs": {"shape": OBS}, "act": {}, "rew": {}, "next_obs": {"shape": OBS}, "done": {}},
            alpha=0.6,
        )
        rng = np.random.default_rng(0)
        rb.add(
            obs=rng.standard_normal((capacity, OBS)),
            act=np.zeros(capacity),
            rew=rng.standard_normal(capacity),
            next_obs=rng.standard_normal((capacity, OBS)),
            done=np.zeros(capacity),
        )

        def cpprb_step() -> None:
            s = rb.sample(BATCH, beta=0.4)
            i[0] = (i[0] + 1) % 16
            rb.update_priorities(s["indexes"], new_np[i[0]])

        contenders["cpprb PrioritizedReplayBuffer step"] = cpprb_step

    if importlib.util.find_spec("tianshou") is None:
        print("note: tianshou is not installed; skipping its PrioritizedReplayBuffer")
    else:
        from tianshou.data import Batch
        from tianshou.data import PrioritizedReplayBuffer as TianshouPER

        buf = TianshouPER(capacity, alpha=0.6, beta=0.4)
        rng = np.random.default_rng(0)
        buf.set_batch(
            Batch(
                obs=rng.standard_normal((capacity, OBS)).astype(np.float32),
                act=np.zeros(capacity, dtype=np.float32),
                rew=rng.standard_normal(capacity).astype(np.float32),
                terminated=np.zeros(capacity, dtype=bool),
                truncated=np.zeros(capacity, dtype=bool),
                done=np.zeros(capacity, dtype=bool),
                obs_next=rng.standard_normal((capacity, OBS)).astype(np.float32),
            )
        )
        buf._size, buf._index = capacity, 0
        buf.init_weight(np.arange(capacity))

        def tianshou_step() -> None:
            _, idx = buf.sample(BATCH)
            i[0] = (i[0] + 1) % 16
            buf.update_weight(idx, new_np[i[0]])

        contenders["tianshou PrioritizedReplayBuffer step"] = tianshou_step

    if importlib.util.find_spec("torchrl") is None:
        print("note: torchrl is not installed; skipping its PrioritizedSampler")
    else:
        from torchrl.data import PrioritizedSampler

        try:
            sampler = PrioritizedSampler(capacity, alpha=0.6, beta=0.4)
        except RuntimeError as exc:  # its C++ sum tree did not build for this torch
            print(f"note: torchrl's PrioritizedSampler is unavailable here ({exc}); skipping it")
            sampler = None
        if sampler is not None:
            contenders["torchrl PrioritizedSampler step"] = _torchrl_step(capacity, sampler, new_p)
    return list(race(contenders, reps).items())


def _torchrl_step(capacity: int, sampler: Any, new_p: list[torch.Tensor]) -> Callable[[], None]:
    from tensordict import TensorDict
    from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

    trb = TensorDictReplayBuffer(
        storage=LazyTensorStorage(capacity), sampler=sampler, batch_size=BATCH
    )
    gen = torch.Generator().manual_seed(0)
    chunk = 100_000
    for start in range(0, capacity, chunk):
        m = min(chunk, capacity - start)
        trb.extend(
            TensorDict(
                {
                    "obs": torch.randn(m, OBS, generator=gen),
                    "action": torch.zeros(m),
                    "reward": torch.randn(m, generator=gen),
                    "next_obs": torch.randn(m, OBS, generator=gen),
                    "done": torch.zeros(m),
                },
                batch_size=[m],
            )
        )
    i = [0]

    def step() -> None:
        s = trb.sample()
        i[0] = (i[0] + 1) % 16
        trb.update_priority(s["index"], new_p[i[0]])

    return step


def bench_sequences(capacity: int, reps: int) -> list[tuple[int, float, float]]:
    """(T, seconds per sequence sample, seconds per uniform sample of as many steps)."""
    spec = Spec({"obs": (OBS,), "action": (), "reward": ()})
    streams = 8
    seq_tables = {}
    for length in (2, 40):
        table = Table(spec, capacity, sequence_length=length)
        g = torch.Generator().manual_seed(2)
        steps_per_write = streams * 1000
        for start in range(0, capacity, steps_per_write):
            m = min(steps_per_write, capacity - start)
            stream = torch.arange(m) % streams
            t_in_ep = (start + torch.arange(m)) // streams
            ends = ((t_in_ep % 500) == 499).long() * (stream % 2 + 1)  # episodes of 500
            table.extend(
                {
                    "obs": torch.randn(m, OBS, generator=g),
                    "action": torch.zeros(m),
                    "reward": torch.ones(m),
                },
                streams=stream,
                ends=ends,
            )
        seq_tables[length] = table
    flat = Table(spec, capacity)
    fill_steps = {
        "obs": torch.randn(capacity, OBS),
        "action": torch.zeros(capacity),
        "reward": torch.ones(capacity),
    }
    flat.extend(fill_steps)
    contenders: dict[str, Callable[[], object]] = {}
    for t, table in seq_tables.items():
        contenders[f"seq{t}"] = lambda tb=table: tb.sample(64)
        contenders[f"flat{t}"] = lambda n=64 * t: flat.sample(n)
    res = race(contenders, reps)
    return [(t, res[f"seq{t}"], res[f"flat{t}"]) for t in seq_tables]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="capacity 200,000 and fewer repetitions"
    )
    parser.add_argument("--capacity", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    capacity = args.capacity or (200_000 if args.quick else 1_000_000)
    reps = 200 if args.quick else 1000
    kernels = "numba kernels" if _kernels.get() is not None else "numpy paths (no numba)"
    print(f"capacity {capacity:,}, batch {BATCH}, torch {torch.__version__}, 1 thread, {kernels}\n")

    rows = bench_prioritized(capacity, reps)
    ours = rows[0][1]
    print(f"{'prioritized (sample 256 + update 256)':44s} {'us':>9s} {'vs ours':>9s}")
    for name, sec in rows:
        print(f"{name:44s} {sec * 1e6:9.1f} {sec / ours:8.2f}x")
    peers = [sec for name, sec in rows if not name.startswith("replaydb")]
    uniform = rows[2][1]
    if peers:
        print(f"\nspeed-up over the fastest peer: {min(peers) / ours:.2f}x (target >= 3)")
    print(f"prioritized step / uniform sample(256):  {ours / uniform:.2f}x (target <= 3)")

    head = f"{'sequences, B=64':22s} {'seq us':>9s} {'uniform us':>11s} {'ratio':>7s}"
    print(f"\n{head} {'ns/step':>8s}")
    for length, seq, uni in bench_sequences(capacity, reps):
        per_step = seq / (64 * length) * 1e9
        print(
            f"T={length:<20d} {seq * 1e6:9.1f} {uni * 1e6:11.1f} {seq / uni:6.2f}x {per_step:8.1f}"
        )
    print("(uniform: sample(64 * T) of a single-step table, same spec; target ratio <= 2)")


if __name__ == "__main__":
    main()
