"""Atari-shaped frame stacking at sample time against a raw numpy gather of the same bytes.

Run:
    PYTHONPATH=src python benchmarks/bench_frames.py            # 100,000 frames
    PYTHONPATH=src python benchmarks/bench_frames.py --quick    # 20,000 frames

A table of 84x84 uint8 frames (each stored once) with ``frame_stack={"obs": 4}``
serves, for each of 32 sampled steps, its last four frames of the same episode
(``[32, 4, 84, 84]``), following the episode links. The contender is the floor for
those bytes: ``frames[idx]`` with a ready-made ``[32, 4]`` index into the same array
(what a buffer that already knew the stack rows would pay). Printed: the median time
per call of each, the stacked observation bytes per second, and their ratio (issue
14's target: at least 0.9x the raw gather).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from bench_sampling import race  # one timing rule for every benchmark (same folder)

from replaydb import Spec, Table, _kernels
from replaydb.samplers import Uniform

BATCH, STACK, SIDE = 32, 4, 84


def build(frames: int, envs: int) -> Table:
    """A full table: ``envs`` interleaved streams, episodes of 200-2,000 steps."""
    spec = Spec({"obs": ((SIDE, SIDE), "uint8"), "action": ((), "int64"), "reward": ()})
    table = Table(spec, frames, sampler=Uniform(seed=0), frame_stack={"obs": STACK})
    rng = np.random.default_rng(0)
    left = rng.integers(200, 2000, envs)
    chunk = 1000 // envs * envs
    for _ in range(frames // chunk):
        obs = torch.from_numpy(rng.integers(0, 255, (chunk, SIDE, SIDE), dtype=np.uint8))
        streams = np.tile(np.arange(envs), chunk // envs)
        ends = np.zeros(chunk, dtype=np.int64)
        for i in range(chunk // envs):  # a tick: every env writes one step
            left -= 1
            done = left <= 0
            ends[i * envs : (i + 1) * envs] = done
            left[done] = rng.integers(200, 2000, int(done.sum()))
        table.extend(
            {
                "obs": obs,
                "action": torch.zeros(chunk, dtype=torch.int64),
                "reward": torch.zeros(chunk),
            },
            streams=torch.from_numpy(streams),
            ends=torch.from_numpy(ends),
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 frames, fewer reps")
    args = parser.parse_args()
    torch.set_num_threads(1)
    frames = 20_000 if args.quick else 100_000
    reps = 300 if args.quick else 1000
    table = build(frames, envs=8)
    raw = table.storage.fields["obs"].numpy()  # the same frames, the same memory
    rng = np.random.default_rng(1)
    # Fresh random rows on every call, as a sampler draws them: a small pool of
    # index sets would be served from the CPU caches after a few rounds.
    idx_pool = rng.integers(0, frames, (4096, BATCH, STACK))
    it = iter(range(10**12))

    def raw_gather() -> object:
        return raw[idx_pool[next(it) % 4096]]

    rows_pool = torch.from_numpy(rng.integers(0, frames, (4096, BATCH)))

    def stack_gather() -> object:
        # The table's gather alone (link walk + every field), without the sampler
        # and item bookkeeping: where the rest of sample()'s time goes.
        return table._gather(rows_pool[next(it) % 4096])

    out = table.sample(BATCH)["obs"]
    assert out.shape == (BATCH, STACK, SIDE, SIDE)
    t = race(
        {
            "replaydb sample(32), stack 4": lambda: table.sample(BATCH),
            "  of which: stacked gather": stack_gather,
            "numpy frames[idx], idx [32, 4]": raw_gather,
        },
        reps,
    )
    nbytes = BATCH * STACK * SIDE * SIDE
    base = t["numpy frames[idx], idx [32, 4]"]
    kernels = "numba kernels" if _kernels.get() is not None else "no numba"
    print(f"{frames:,} frames of {SIDE}x{SIDE} uint8, batch {BATCH}, stack {STACK} ({kernels})")
    print(f"{'contender':34s} {'us':>8s} {'MB/s':>9s} {'vs raw':>7s}")
    for name, sec in t.items():
        print(f"{name:34s} {sec * 1e6:8.1f} {nbytes / sec / 1e6:9.0f} {base / sec:6.2f}x")


if __name__ == "__main__":
    main()
