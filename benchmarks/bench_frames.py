"""Atari-shaped frame stacking at sample time: replaydb against a raw numpy gather,
cpprb and Stable-Baselines3, ratios and memory in one run.

Run:
    PYTHONPATH=src python benchmarks/bench_frames.py            # 100,000 frames in memory
    PYTHONPATH=src python benchmarks/bench_frames.py --quick    # 20,000 frames, fewer reps
    PYTHONPATH=src python benchmarks/bench_frames.py --frames 1000000 --disk DIR
        # a disk-backed table of a million frames under DIR (about 7 GB of files;
        # DIR is created and removed afterwards), replaydb and numpy only

A table of 84x84 uint8 frames (each stored once) with ``frame_stack={"obs": 4}``
serves, for each of 32 sampled steps, its last four frames of the same episode
(``[32, 4, 84, 84]``), following the episode links. Contenders, each with fresh
random rows on every call:

* ``numpy frames[idx]``: the floor for those bytes, a ready-made ``[32, 4]`` index
  of the stack rows of 32 random steps (the frames a sample of them returns,
  found by following the episode links beforehand) into the table's own frame
  array: the same bytes from the same memory, what a buffer that already knew the
  stack rows would pay. Ratios are to this floor;
* ``numpy frames[random idx]``: the floor of earlier runs, 128 unrelated random
  frames (a stack's frames are a few rows apart, so they share pages: gathering
  them costs less than gathering random ones);
* replaydb ``sample(32)`` and its gather alone (no sampler, no item records);
* transitions (a stacked observation and the next one): replaydb with
  ``sequence_length=2`` (``[32, 2, 4, 84, 84]``), cpprb's ``ReplayBuffer`` with
  ``stack_compress="obs"`` and ``next_of="obs"``, and SB3's ``ReplayBuffer`` with
  ``optimize_memory_usage=True`` (each skipped with a note when not installed).
  The replaydb tables above get 8 interleaved environments (a stack's frames 8
  rows apart); the peers get one stream in order (a transition's frames
  adjacent), so ``replaydb T=2, peers' 1 stream`` is also fed exactly the peers'
  input (the same frames, one stream, no episode ends, the same capacity): the
  like-for-like comparison.

Printed: the median time per call, the stacked observation bytes returned per
second (a transition counts both stacks), their ratio to the numpy gather, and the
memory each buffer took to hold the frames, measured as the growth of the process's
resident anonymous memory (Linux ``RssAnon``) while it was built and filled, per
stored transition. The last lines
check that figure against ``Storage.required_nbytes`` (what the memory preflight
computes) and scale it to 1,000,000 transitions (issue 14: at most 7.5 GB).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_sampling import race  # one timing rule for every benchmark (same folder)

from replaydb import Spec, Table, _kernels
from replaydb.samplers import Uniform
from replaydb.storage import Storage

BATCH, STACK, SIDE = 32, 4, 84
FRAME = SIDE * SIDE
FIELDS: dict[str, Any] = {"obs": ((SIDE, SIDE), "uint8"), "action": ((), "int64"), "reward": ()}
SPEC = Spec(FIELDS)
MILLION = 1_000_000


def rss() -> int:
    """Resident anonymous bytes of this process (mapped file pages not counted)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


def build(
    frames: int, envs: int, sequence_length: int = 1, path: str | None = None, pkg: Any = None
) -> Table:
    """A full table: ``envs`` interleaved streams, episodes of 200-2,000 steps.

    ``pkg``: build it with another copy of replaydb (``--compare-with``).
    """
    make, uniform = (Table, Uniform) if pkg is None else (pkg.Table, pkg.samplers.Uniform)
    table = make(
        SPEC if pkg is None else pkg.Spec(FIELDS),
        frames,
        sampler=uniform(seed=0),
        sequence_length=sequence_length,
        frame_stack={"obs": STACK},
        path=path,
    )
    rng = np.random.default_rng(0)
    left = rng.integers(200, 2000, envs)
    chunk = 1000 // envs * envs
    pool = torch.from_numpy(rng.integers(0, 255, (8 * chunk, SIDE, SIDE), dtype=np.uint8))
    streams = torch.from_numpy(np.tile(np.arange(envs), chunk // envs))
    for c in range(frames // chunk):
        ends = np.zeros(chunk, dtype=np.int64)
        for i in range(chunk // envs):  # a tick: every env writes one step
            left -= 1
            done = left <= 0
            ends[i * envs : (i + 1) * envs] = done
            left[done] = rng.integers(200, 2000, int(done.sum()))
        table.extend(
            {
                "obs": pool[(c % 8) * chunk : (c % 8 + 1) * chunk],
                "action": torch.zeros(chunk, dtype=torch.int64),
                "reward": torch.zeros(chunk),
            },
            streams=streams,
            ends=torch.from_numpy(ends),
        )
    return table


def build_stream(frames: np.ndarray[Any, Any], sequence_length: int, pkg: Any = None) -> Table:
    """A full table of ``len(frames)`` steps fed one stream in order, no episode
    ends: the input the peers get (:func:`source`), same capacity, same frames."""
    n = len(frames)
    make, uniform = (Table, Uniform) if pkg is None else (pkg.Table, pkg.samplers.Uniform)
    table = make(
        SPEC if pkg is None else pkg.Spec(FIELDS),
        n,
        sampler=uniform(seed=0),
        sequence_length=sequence_length,
        frame_stack={"obs": STACK},
    )
    for s in range(0, n, 1000):
        m = min(1000, n - s)
        table.extend(
            {
                "obs": torch.from_numpy(frames[s : s + m]),
                "action": torch.zeros(m, dtype=torch.int64),
                "reward": torch.zeros(m),
            }
        )
    return table


FLOOR = "numpy frames[idx], idx [32, 4]"
ORDERED = "replaydb T=2, peers' 1 stream"


def stack_rows(table: Table, rows: torch.Tensor) -> np.ndarray[Any, Any]:
    """``[..., STACK]`` rows of the frames a sample of ``rows`` returns, oldest first:
    the index of the raw gather of the same bytes."""
    lead = tuple(rows.shape)
    flat, _ = table.storage.engine.stack_rows(rows.reshape(-1), STACK)
    return flat.reshape(*lead, STACK).numpy()


def source(n: int) -> np.ndarray[Any, Any]:
    """``n + STACK`` frames of one stream, for the peers' stacked observations."""
    return np.random.default_rng(2).integers(0, 255, (n + STACK, SIDE, SIDE), dtype=np.uint8)


def cpprb_sampler(n: int) -> tuple[Callable[[], object], int] | str:
    """cpprb's compressed stack buffer, full; its sample and its bytes."""
    if importlib.util.find_spec("cpprb") is None:
        return "cpprb not installed"
    from cpprb import ReplayBuffer

    frames = source(n)
    before = rss()
    rb = ReplayBuffer(
        n,
        {"obs": {"shape": (SIDE, SIDE, STACK), "dtype": np.uint8}, "act": {}, "rew": {}},
        next_of="obs",
        stack_compress="obs",
    )
    # cpprb stacks on the last axis; consecutive steps share STACK - 1 frames.
    stacks = np.lib.stride_tricks.sliding_window_view(frames, STACK, axis=0)
    for s in range(0, n, 1000):
        m = min(1000, n - s)
        zeros = np.zeros(m)
        rb.add(obs=stacks[s : s + m], next_obs=stacks[s + 1 : s + 1 + m], act=zeros, rew=zeros)
    used = rss() - before
    assert rb.get_stored_size() == n
    return (lambda: rb.sample(BATCH)), used


def sb3_sampler(n: int) -> tuple[Callable[[], object], int] | str:
    """SB3's replay buffer with ``optimize_memory_usage``, full; its sample and bytes."""
    if importlib.util.find_spec("stable_baselines3") is None:
        return "stable_baselines3 not installed"
    from gymnasium import spaces
    from stable_baselines3.common.buffers import ReplayBuffer

    frames = source(n)
    before = rss()
    rb = ReplayBuffer(
        n,
        spaces.Box(0, 255, (STACK, SIDE, SIDE), np.uint8),
        spaces.Discrete(6),
        device="cpu",
        optimize_memory_usage=True,
        handle_timeout_termination=False,
    )
    zero = np.zeros(1)
    for s in range(n):
        rb.add(
            frames[None, s : s + STACK], frames[None, s + 1 : s + 1 + STACK], zero, zero, zero, [{}]
        )
    used = rss() - before
    assert rb.full or rb.pos == n
    return (lambda: rb.sample(BATCH)), used


def in_memory(frames: int, reps: int, peers: bool) -> None:
    """Every contender at ``frames`` transitions in RAM."""
    build(1000, envs=8).sample(BATCH)  # imports and compiles before measuring memory
    before = rss()
    table = build(frames, envs=8)
    table.sample(BATCH)
    used = rss() - before
    raw = table.storage.fields["obs"].numpy()  # the same frames, the same memory
    rng = np.random.default_rng(1)
    # Fresh random rows on every call, as a sampler draws them: a small pool of
    # index sets would be served from the CPU caches after a few rounds.
    rows_pool = torch.from_numpy(rng.integers(0, frames, (4096, BATCH)))
    idx_pool = stack_rows(table, rows_pool)
    rand_pool = rng.integers(0, frames, (4096, BATCH, STACK))
    it = iter(range(10**12))
    stacked = BATCH * STACK * FRAME
    contenders: dict[str, Callable[[], object]] = {
        FLOOR: lambda: raw[idx_pool[next(it) % 4096]],
        "numpy frames[random idx]": lambda: raw[rand_pool[next(it) % 4096]],
        "replaydb sample(32), stack 4": lambda: table.sample(BATCH),
        # The table's gather alone (link walk + every field): no sampler, no records.
        "  of which: stacked gather": lambda: table._gather(rows_pool[next(it) % 4096]),
    }
    nbytes = dict.fromkeys(contenders, stacked)
    memory = {"replaydb sample(32), stack 4": used}
    notes = []
    if peers:
        del_rss = rss()
        pairs = build(frames, envs=8, sequence_length=2)
        memory["replaydb T=2 sample(32)"] = rss() - del_rss
        contenders["replaydb T=2 sample(32)"] = lambda: pairs.sample(BATCH)
        # The peers' input: one stream in order (a transition's frames adjacent).
        one = source(frames)[:frames]
        del_rss = rss()
        ordered = build_stream(one, sequence_length=2)
        memory[ORDERED] = rss() - del_rss
        del one
        contenders[ORDERED] = lambda: ordered.sample(BATCH)
        for name, make in (
            ("cpprb stack_compress sample(32)", cpprb_sampler),
            ("SB3 optimize_memory sample(32)", sb3_sampler),
        ):
            got = make(frames)
            if isinstance(got, str):
                notes.append(f"{name}: skipped ({got})")
                continue
            contenders[name], memory[name] = got
        for name in contenders:
            if "T=2" in name or "cpprb" in name or "SB3" in name:
                nbytes[name] = 2 * stacked  # a transition: the stack and the next one
    assert table.sample(BATCH)["obs"].shape == (BATCH, STACK, SIDE, SIDE)
    t = race(contenders, reps)
    base = t[FLOOR]
    base_rate = stacked / base
    kernels = "numba kernels" if _kernels.get() is not None else "no numba"
    print(f"{frames:,} frames of {SIDE}x{SIDE} uint8 in memory, batch {BATCH}, stack {STACK}")
    print(f"({kernels}; a transition counts both stacks)")
    print(f"{'contender':34s} {'us':>8s} {'MB/s':>7s} {'vs raw':>7s} {'bytes/transition':>17s}")
    for name, sec in t.items():
        mem = f"{memory[name] / frames:17,.0f}" if name in memory else ""
        rate = nbytes[name] / sec
        print(f"{name:34s} {sec * 1e6:8.1f} {rate / 1e6:7.0f} {rate / base_rate:6.2f}x {mem}")
    for note in notes:
        print(note)
    preflight = Storage.required_nbytes(SPEC, frames)
    per_row = used / frames
    print(
        f"replaydb memory: {used / 1e6:,.0f} MB resident for {frames:,} frames "
        f"({per_row:,.0f} bytes/frame; the storage alone, Storage.required_nbytes: "
        f"{preflight / frames:,.0f} bytes/frame, {FRAME} of them the frame)"
    )
    print(
        f"1,000,000 transitions with a {STACK}-frame stack: {per_row * MILLION / 1e9:.2f} GB "
        f"at the measured rate (target: at most 7.5 GB)"
    )


def on_disk(frames: int, reps: int, directory: str) -> None:
    """replaydb and numpy at ``frames`` on a disk-backed table, pages cached."""
    root = Path(tempfile.mkdtemp(prefix="bench-frames-", dir=directory))
    try:
        before = rss()
        table = build(frames, envs=8, path=str(root / "table"))
        table.sample(BATCH)
        ram = rss() - before
        files = sum(f.stat().st_size for f in (root / "table").iterdir() if f.is_file())
        raw = table.storage.fields["obs"].numpy()
        # Touch every page once, so the timing below is of cached pages.
        checksum = int(raw[:, 0, 0].sum()) + int(raw[:, -1, -1].sum())
        rng = np.random.default_rng(1)
        idx_pool = stack_rows(table, torch.from_numpy(rng.integers(0, frames, (4096, BATCH))))
        rand_pool = rng.integers(0, frames, (4096, BATCH, STACK))
        it = iter(range(10**12))
        t = race(
            {
                FLOOR: lambda: raw[idx_pool[next(it) % 4096]],
                "numpy frames[random idx]": lambda: raw[rand_pool[next(it) % 4096]],
                "replaydb sample(32), stack 4": lambda: table.sample(BATCH),
            },
            reps,
        )
        base = t[FLOOR]
        print(
            f"{frames:,} frames of {SIDE}x{SIDE} uint8 on disk (pages cached), checksum {checksum}"
        )
        print(f"{'contender':34s} {'us':>8s} {'MB/s':>7s} {'vs raw':>7s}")
        for name, sec in t.items():
            rate = BATCH * STACK * FRAME / sec
            print(f"{name:34s} {sec * 1e6:8.1f} {rate / 1e6:7.0f} {base / sec:6.2f}x")
        print(
            f"disk-backed memory: files {files / 1e9:.3f} GB ({files / frames:,.0f} bytes/frame), "
            f"resident bookkeeping {ram / 1e6:,.0f} MB ({ram / frames:,.0f} bytes/frame, "
            "the file pages in the page cache not counted)"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def compare(frames: int, reps: int, base_src: str) -> None:
    """This checkout's ``sample(32)`` against another checkout's, in one process
    (T=1 and T=2 with 8 environments, T=2 fed the peers' single stream)."""
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    from bench_ab import copy_as  # same folder

    with tempfile.TemporaryDirectory(prefix="bench-frames-ab-") as tmp:
        copy_as(Path(base_src), Path(tmp), "replaydb_base")
        sys.path.insert(0, tmp)
        base = importlib.import_module("replaydb_base")
        importlib.import_module("replaydb_base.samplers")
        tables = {}
        one = source(frames)[:frames]
        for name, pkg in (("new", None), ("base", base)):
            for length in (1, 2):
                tables[name, length] = build(frames, envs=8, sequence_length=length, pkg=pkg)
            tables[name, 0] = build_stream(one, 2, pkg=pkg)  # the peers' single stream
        del one
        first = tables["new", 1]
        raw = first.storage.fields["obs"].numpy()
        rng = np.random.default_rng(1)
        idx_pool = stack_rows(first, torch.from_numpy(rng.integers(0, frames, (4096, BATCH))))
        it = iter(range(10**12))
        contenders: dict[str, Callable[[], object]] = {
            FLOOR: lambda: raw[idx_pool[next(it) % 4096]]
        }
        for (name, length), table in tables.items():
            label = f"{name} sample(32)" + {1: "", 2: ", T=2", 0: ", T=2 1 stream"}[length]
            contenders[label] = lambda table=table: table.sample(BATCH)
        t = race(contenders, reps)
    print(f"{frames:,} frames in memory; base = {base_src}")
    print(f"{'contender':34s} {'us':>8s} {'vs raw':>7s} {'new/base':>9s}")
    for label, sec in t.items():
        other = label.replace("new ", "base ") if label.startswith("new ") else None
        ratio = f"{sec / t[other]:9.3f}" if other else ""
        nbytes = 2 if "T=2" in label else 1
        print(f"{label:34s} {sec * 1e6:8.1f} {nbytes * t[FLOOR] / sec:6.2f}x {ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 frames, fewer reps")
    parser.add_argument("--frames", type=int, default=None, help="table capacity (frames)")
    parser.add_argument("--disk", default=None, help="a directory: time a disk-backed table")
    parser.add_argument("--no-peers", action="store_true", help="skip T=2, cpprb and SB3")
    parser.add_argument(
        "--compare-with",
        default=None,
        metavar="SRC",
        help="another checkout's src directory: race its sample(32) against this one's",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    frames = args.frames or (20_000 if args.quick else 100_000)
    reps = 300 if args.quick else 1000
    if args.compare_with is not None:
        compare(frames, reps, args.compare_with)
    elif args.disk is not None:
        on_disk(frames, reps, args.disk)
    else:
        in_memory(frames, reps, peers=not args.no_peers)


if __name__ == "__main__":
    main()
