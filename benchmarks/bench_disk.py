"""Disk-backed against in-memory tables: sample(32) of 84x84 uint8 frames, ratio in one run.

Run:
    PYTHONPATH=src python benchmarks/bench_disk.py               # 100,000 frames (0.7 GB)
    PYTHONPATH=src python benchmarks/bench_disk.py --quick       # 20,000 frames

Builds two tables of the same spec (one ``frame`` field of 84x84 uint8 plus a
float32 reward) and capacity, fills them with the same frames, then measures,
with one torch thread, the median CPU time of ``sample(32)`` from each. The disk
table's data file is read once first, so the figure is the one for a table whose
pages are in the page cache (what a training run sees once the working set is
warm; a first touch of a page not in the cache costs a disk read instead). It
also times ``checkpoint()`` on the full disk table and ``Table.open`` of its
directory, and the first samples after the data file is evicted from the page
cache (``posix_fadvise``), which is what sampling a table much larger than RAM costs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
from bench_sampling import race  # one timing rule for every benchmark (same folder)

from replaydb import Spec, Table
from replaydb.samplers import Uniform

BATCH = 32
COLD_SAMPLES = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 frames, fewer reps")
    parser.add_argument("--dir", default=None, help="directory for the disk table (a temp dir)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    capacity = 20_000 if args.quick else 100_000
    reps = 300 if args.quick else 2_000
    with tempfile.TemporaryDirectory(prefix="replaydb-bench-disk-") as tmp:
        run(args.dir or tmp, capacity, reps)
        # Pages a process has mapped stay in the page cache: measure cold after run's
        # tables are gone.
        report_cold(args.dir or tmp)


def run(root: str, capacity: int, reps: int) -> None:
    """Fill both tables, time them, print the figures."""
    spec = Spec({"frame": ((84, 84), "uint8"), "reward": ()})
    mem = Table(spec, capacity, sampler=Uniform(seed=0))
    disk = Table(spec, capacity, sampler=Uniform(seed=0), path=root)
    gen = torch.Generator().manual_seed(0)
    chunk = 5_000
    for start in range(0, capacity, chunk):
        frames = torch.randint(0, 256, (chunk, 84, 84), dtype=torch.uint8, generator=gen)
        batch = {"frame": frames, "reward": torch.arange(start, start + chunk).float()}
        mem.extend(batch)
        disk.extend(batch)
    t0 = time.perf_counter()
    disk.checkpoint()
    commit_s = time.perf_counter() - t0
    disk.storage.groups[torch.uint8].sum(dtype=torch.int64)  # touch every page once
    times = race({"memory": lambda: mem.sample(BATCH), "disk": lambda: disk.sample(BATCH)}, reps)
    assert torch.equal(mem.sample(BATCH)["frame"], disk.sample(BATCH)["frame"])
    t0 = time.perf_counter()
    Table.open(root)  # read-only use of a second table on the directory
    open_s = time.perf_counter() - t0
    disk.checkpoint()
    gb = capacity * 84 * 84 / 1e9
    print(f"capacity {capacity:,} frames ({gb:.2f} GB), sample({BATCH}), one torch thread")
    for name, sec in times.items():
        print(f"  {name:7s} {sec * 1e6:8.1f} us/sample")
    print(f"  disk / memory time ratio: {times['disk'] / times['memory']:.2f} (pages cached)")
    print(f"  checkpoint() of the full table: {commit_s * 1e3:.1f} ms")
    print(f"  Table.open of its directory: {open_s * 1e3:.1f} ms")


def report_cold(root: str) -> None:
    """Print the cold figure (after :func:`run` returned and unmapped its tables)."""
    cold = cold_sample_seconds(root)
    if cold is not None:
        print(
            f"  first {COLD_SAMPLES} samples after evicting the data file from the page cache: "
            f"{cold * 1e6:.0f} us/sample (wall clock)"
        )


def cold_sample_seconds(root: str) -> float | None:
    """Wall seconds per sample(32) of the table in ``root`` after its data leaves the cache.

    ``posix_fadvise(DONTNEED)`` on the (clean, checkpointed, unmapped) data file
    drops its pages from the page cache, so each sampled frame is a disk read: what
    the first samples of a table much larger than RAM cost. ``None`` where the
    call is missing.
    """
    if not hasattr(os, "posix_fadvise"):
        return None
    fd = os.open(os.path.join(root, "data.uint8.bin"), os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    table = Table.open(root)
    t0 = time.perf_counter()
    for _ in range(COLD_SAMPLES):
        table.sample(BATCH)
    return (time.perf_counter() - t0) / COLD_SAMPLES


if __name__ == "__main__":
    main()
