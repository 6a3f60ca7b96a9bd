"""DataLoader workers sampling one shared table: items/s with N workers against one.

Run:
    PYTHONPATH=src python benchmarks/bench_dataloader.py             # 1 and 2 workers
    PYTHONPATH=src python benchmarks/bench_dataloader.py --workers 1,2,4 --seconds 5

A :func:`replaydb.shared.memory_table` of 84x84 uint8 frames (Atari-shaped: an
``obs`` field sampled as a stack of the last 4 frames, plus ``action`` and
``reward``) is filled once and shared; ``DataLoader(Dataset(handle, 256),
batch_size=None, num_workers=N, persistent_workers=True)`` then yields batches of
256 stacked observations (7.2 MB each: the gather is real work). In each worker
the owner (this process) draws the rows and the worker copies them out of shared
memory into a reused shared-memory slot that the batch travels to this process
in, so gathers run in parallel. Configurations alternate for ``--rounds`` rounds
(same load for each) and the best round of each counts. Printed: items/s per
worker count with the CPU per batch of this process and of the workers (over
the timed batches; the workers' from ``/proc``), each count's ratio to one
worker (issue 14: at least 1.6x for two workers on a 2-core machine, 3x for four
workers on four free cores), the bound the CPU costs put on each count, and the
floor: one process gathering the same bytes with numpy from a ready-made index
(what a worker's copy costs without any replay bookkeeping).
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import time
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from replaydb import Dataset, Spec
from replaydb.samplers import Uniform
from replaydb.shared import SharedTable, memory_table

SIDE, STACK, BATCH = 84, 4, 256


def build(frames: int) -> Any:
    spec = Spec({"obs": ((SIDE, SIDE), "uint8"), "action": ((), "int64"), "reward": ()})
    table = memory_table(spec, frames, sampler=Uniform(seed=0), frame_stack={"obs": STACK})
    rng = np.random.default_rng(0)
    chunk = 1000
    for start in range(0, frames, chunk):
        n = min(chunk, frames - start)
        ends = np.zeros(n, dtype=bool)
        ends[rng.integers(0, n, 2)] = True  # episodes of a few hundred steps
        table.extend(
            {
                "obs": torch.from_numpy(rng.integers(0, 255, (n, SIDE, SIDE), dtype=np.uint8)),
                "action": torch.zeros(n, dtype=torch.int64),
                "reward": torch.zeros(n),
            },
            ends=torch.from_numpy(ends),
        )
    return table


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cpu_of(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes ``pids`` used so far (Linux /proc)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


def items_per_s(
    handle: SharedTable, workers: int, seconds: float, prefetch: int = 2
) -> tuple[float, float, float]:
    """Items/s, and CPU ms per batch in this process (owner + consumer) and in the workers.

    CPU is counted over the timed batches only (not the workers' start and exit).
    """
    ds = Dataset(handle, batch_size=BATCH)
    loader = DataLoader(
        ds,
        batch_size=None,
        num_workers=workers,
        persistent_workers=workers > 0,
        timeout=120 if workers else 0,
        prefetch_factor=prefetch if workers else None,
    )
    it = iter(loader)
    pids = [w.pid for w in getattr(it, "_workers", [])]
    warm = 4 * max(workers, 1)
    for _ in range(warm):  # workers started, storages mapped, slots made
        next(it)
    n = 0
    main0, kids0, t0 = _cpu_self(), _cpu_of(pids), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        batch, _ = next(it)
        assert batch["obs"].shape == (BATCH, 1, STACK, SIDE, SIDE)  # [B, num_steps, k, ...]
        n += 1
    elapsed = time.perf_counter() - t0
    main, kids = (_cpu_self() - main0) / n * 1e3, (_cpu_of(pids) - kids0) / n * 1e3
    rate = n * BATCH / elapsed
    del it, loader
    gc.collect()
    ds.close()
    return rate, main, kids


def raw_floor(frames: int, seconds: float) -> float:
    """Items/s of ``frames[idx]`` into a fresh array, with a ready-made ``[256, 4]`` index."""
    arr = np.random.default_rng(1).integers(0, 255, (frames, SIDE, SIDE), dtype=np.uint8)
    rng = np.random.default_rng(2)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        start = rng.integers(STACK, frames, BATCH)
        idx = start[:, None] - np.arange(STACK - 1, -1, -1)
        arr.take(idx.reshape(-1), axis=0)
        n += 1
    return n * BATCH / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20_000, help="table capacity (frames)")
    parser.add_argument("--workers", default="1,2", help="worker counts, e.g. 1,2,4")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    parser.add_argument(
        "--prefetch", type=int, default=2, help="DataLoader prefetch_factor (batches per worker)"
    )
    parser.add_argument(
        "--sharing",
        choices=torch.multiprocessing.get_all_sharing_strategies(),
        default=torch.multiprocessing.get_sharing_strategy(),
        help="how DataLoader workers hand batches to the main process (torch's setting)",
    )
    args = parser.parse_args()
    torch.multiprocessing.set_sharing_strategy(args.sharing)
    counts = [int(w) for w in args.workers.split(",")]
    table = build(args.frames)
    handle = table.share()
    best: dict[int, float] = {}
    cpu: dict[int, tuple[float, float]] = {}
    try:
        for r in range(args.rounds):
            for w in counts:
                rate, main_ms, worker_ms = items_per_s(handle, w, args.seconds, args.prefetch)
                if rate > best.get(w, 0.0):
                    best[w], cpu[w] = rate, (main_ms, worker_ms)
                print(
                    f"round {r}: {w} worker(s): {rate:,.0f} items/s; CPU per batch: "
                    f"{main_ms:.2f} ms owner+consumer, {worker_ms:.2f} ms workers"
                )
    finally:
        handle.close()
    floor = raw_floor(args.frames, args.seconds)
    mb = BATCH * STACK * SIDE * SIDE / 1e6
    print(
        f"\nbatch of {BATCH} x {STACK} x {SIDE}x{SIDE} uint8 = {mb:.1f} MB; best of "
        f"{args.rounds}; sharing strategy {args.sharing!r}; prefetch_factor {args.prefetch}"
    )
    base = best.get(1)
    for w in counts:
        ratio = f"  {best[w] / base:.2f}x one worker" if base else ""
        print(f"{w} worker(s): {best[w]:>10,.0f} items/s{ratio}")
    # On free cores each worker is one core's worth of copying and the owner one
    # core's worth of drawing and receiving: the CPU costs bound the speed-up.
    bounds = {w: min(w * 1e3 / cpu[w][1], 1e3 / cpu[w][0]) * BATCH for w in counts if cpu[w][1] > 0}
    for w, bound in bounds.items():
        one = bounds.get(1, bound)
        print(
            f"{w} worker(s) on {w + 1} free cores, from the CPU per batch: at most "
            f"{bound:,.0f} items/s ({bound / one:.2f}x one worker's bound)"
        )
    print(f"raw numpy gather, one process: {floor:,.0f} items/s (the floor per worker)")


if __name__ == "__main__":
    main()
