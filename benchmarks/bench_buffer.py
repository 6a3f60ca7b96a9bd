"""Velora-shaped transition buffer: replaydb vs a raw-tensor floor and installable peers.

Measures, in one run and one torch thread, on the transition of the issue (state 11,
action 3, hidden 8, capacity 1,000,000):

* single ``add`` calls/s,
* ``add_multi`` of 256 rows (rows/s),
* ``sample(256)`` batches/s,
* the prioritized step, ``sample(256)`` + ``update_priorities`` of those 256 (steps/s),
  against cpprb's and Tianshou's prioritized buffers, and as a multiple of the
  uniform ``sample(256)`` time (issue 12's target: at most 3x),

for replaydb's ``ReplayBuffer``, stable-baselines3's ``ReplayBuffer``, cpprb's
``ReplayBuffer`` and TorchRL's ``ReplayBuffer(LazyTensorStorage)`` where installed
(``pip install 'replaydb[bench]'``), and prints ratios. Each library gets the input
type its users pass (torch tensors for replaydb and TorchRL, numpy for SB3 and cpprb).

The throughput tables time each library in turn (best of 5 windows). Issue 12's
ratios are then taken from races (``bench_sampling.race``: blocks of ten calls of
every contender interleaved, median CPU time), so that load from other processes
falls on both sides of a ratio alike: add vs SB3's add, add_multi(256) vs SB3's add
with n_envs=256, and the uniform sample(256) vs the prioritized steps.

Run: python benchmarks/bench_buffer.py [--quick] [--breakdown] [--race N] [--compare-with SRC]

``--compare-with /path/to/other/src`` measures only replaydb's four numbers, in
child processes that alternate between that source tree and this one (``--rounds``,
default 5; each number the median CPU time of blocks of ten calls, as the race
takes it, then the median over the rounds), for before/after figures taken in the
same sitting.

``--breakdown`` also prints where the time of ``add`` and ``add_multi(256)`` goes,
against a raw numpy copy of the same bytes into a packed array and SB3's add, from
two races of ``--race`` calls (docs/benchmarks.md reads it).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from bench_sampling import race  # one timing rule for every benchmark (same folder)

from replaydb import ReplayBuffer

S, A, H, CAP, B = 11, 3, 8, 1_000_000, 256


def rate(fn: Callable[[], object], seconds: float, per_call: int = 1) -> float:
    """Calls (times ``per_call``) per second of ``fn``: the best of 5 windows of ``seconds / 5``.

    The best window rather than the mean, so that other processes sharing the
    cores slow a measurement down as little as possible and ratios stay honest.
    """
    for _ in range(20):
        fn()
    best = 0.0
    for _ in range(5):
        n, start = 0, time.perf_counter()
        while True:
            for _ in range(10):
                fn()
            n += 10
            elapsed = time.perf_counter() - start
            if elapsed >= seconds / 5:
                break
        best = max(best, n * per_call / elapsed)
    return best


def fill_rows(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "s": rng.standard_normal((n, S), dtype=np.float32),
        "a": rng.standard_normal((n, A), dtype=np.float32),
        "r": rng.standard_normal((n, 1), dtype=np.float32),
        "s2": rng.standard_normal((n, S), dtype=np.float32),
        "d": (rng.random((n, 1)) < 0.01).astype(np.float32),
        "h": rng.standard_normal((n, H), dtype=np.float32),
    }


def make_replaydb(rows: dict[str, np.ndarray]) -> dict[str, Callable[[], object]]:
    """replaydb's add, add_multi(B) and, on a full buffer, sample(B)."""
    buf = ReplayBuffer(CAP, S, A, H)
    full = ReplayBuffer(CAP, S, A, H)
    t = {k: torch.from_numpy(v) for k, v in rows.items()}
    one = (t["s"][0], t["a"][0], float(t["r"][0, 0]), t["s2"][0], False, t["h"][0])
    batch = tuple(t[k][:B] for k in ("s", "a", "r", "s2", "d", "h"))
    for _ in range(CAP // B + 1):
        full.add_multi(*batch)
    return {
        "add": lambda: buf.add(*one),
        "add_multi": lambda: buf.add_multi(*batch),
        "sample": lambda: full.sample(B),
    }


def bench_replaydb(sec: float, rows: dict[str, np.ndarray]) -> dict[str, float]:
    fns = make_replaydb(rows)
    return {
        "add": rate(fns["add"], sec),
        "add_multi": rate(fns["add_multi"], sec, B),
        "sample": rate(fns["sample"], sec),
    }


def bench_floor(sec: float) -> dict[str, float]:
    """Raw tensors: numpy row writes, one slice copy, one index_select of random rows."""
    width = 2 * S + A + H + 2
    packed = torch.zeros(CAP, width)
    view = packed.numpy()
    row = np.zeros(width, dtype=np.float32)
    block = torch.zeros(B, width)
    pos = [0]

    def add() -> None:
        view[pos[0]] = row
        pos[0] = (pos[0] + 1) % CAP

    def add_multi() -> None:
        p = pos[0]
        packed[p : p + B].copy_(block)
        pos[0] = (p + B) % (CAP - B)

    gen = torch.Generator().manual_seed(0)
    idx = [torch.randint(0, CAP, (B,), generator=gen) for _ in range(4096)]
    k = [0]

    def gather() -> None:
        k[0] = (k[0] + 1) & 4095
        packed.index_select(0, idx[k[0]])

    def sample() -> None:
        packed.index_select(0, torch.randint(0, CAP, (B,), generator=gen))

    return {
        "add": rate(add, sec),
        "add_multi": rate(add_multi, sec, B),
        "gather": rate(gather, sec),
        "sample": rate(sample, sec),
    }


def make_sb3(rows: dict[str, np.ndarray]) -> dict[str, Callable[[], object]]:
    """SB3's add (n_envs=1), add with n_envs=B (B rows a call) and sample(B)."""
    import gymnasium as gym
    from stable_baselines3.common.buffers import ReplayBuffer as SB3Buffer

    obs_space = gym.spaces.Box(-np.inf, np.inf, (S,), np.float32)
    act_space = gym.spaces.Box(-1, 1, (A,), np.float32)
    one = SB3Buffer(CAP, obs_space, act_space, device="cpu", n_envs=1)
    o, a, r, o2 = rows["s"][:1], rows["a"][:1], rows["r"][:1, 0], rows["s2"][:1]
    d, info = np.zeros(1, dtype=np.float32), [{}]
    many = SB3Buffer(CAP // B, obs_space, act_space, device="cpu", n_envs=B)
    ob, ab, rb, ob2 = rows["s"][:B], rows["a"][:B], rows["r"][:B, 0], rows["s2"][:B]
    db, infos = rows["d"][:B, 0], [{}] * B
    full = SB3Buffer(CAP, obs_space, act_space, device="cpu", n_envs=1)
    full.full = True  # sample over every row, as a filled buffer would
    return {
        "add": lambda: one.add(o, o2, a, r, d, info),
        "add_multi": lambda: many.add(ob, ob2, ab, rb, db, infos),
        "sample": lambda: full.sample(B),
    }


def bench_sb3(sec: float, rows: dict[str, np.ndarray]) -> dict[str, float]:
    fns = make_sb3(rows)
    return {
        "add": rate(fns["add"], sec),
        "add_multi": rate(fns["add_multi"], sec, B),
        "sample": rate(fns["sample"], sec),
    }


def bench_cpprb(sec: float, rows: dict[str, np.ndarray]) -> dict[str, float]:
    from cpprb import ReplayBuffer as CppBuffer

    env_dict = {
        "obs": {"shape": S},
        "act": {"shape": A},
        "rew": {},
        "next_obs": {"shape": S},
        "done": {},
        "hidden": {"shape": H},
    }
    buf = CppBuffer(CAP, env_dict)
    one = {
        "obs": rows["s"][0],
        "act": rows["a"][0],
        "rew": 1.0,
        "next_obs": rows["s2"][0],
        "done": 0.0,
        "hidden": rows["h"][0],
    }
    many = {
        "obs": rows["s"][:B],
        "act": rows["a"][:B],
        "rew": rows["r"][:B],
        "next_obs": rows["s2"][:B],
        "done": rows["d"][:B],
        "hidden": rows["h"][:B],
    }
    out = {"add": rate(lambda: buf.add(**one), sec)}
    out["add_multi"] = rate(lambda: buf.add(**many), sec, B)
    for _ in range(CAP // B + 1):
        buf.add(**many)
    out["sample"] = rate(lambda: buf.sample(B), sec)
    return out


def bench_torchrl(sec: float, rows: dict[str, np.ndarray]) -> dict[str, float]:
    from tensordict import TensorDict
    from torchrl.data import LazyTensorStorage
    from torchrl.data import ReplayBuffer as TRLBuffer

    buf = TRLBuffer(storage=LazyTensorStorage(CAP), batch_size=B)
    t = {k: torch.from_numpy(v) for k, v in rows.items()}
    one = TensorDict({k: v[0] for k, v in t.items()}, batch_size=[])
    many = TensorDict({k: v[:B] for k, v in t.items()}, batch_size=[B])
    out = {"add": rate(lambda: buf.add(one), sec)}
    out["add_multi"] = rate(lambda: buf.extend(many), sec, B)
    for _ in range(CAP // B + 1):
        buf.extend(many)
    out["sample"] = rate(lambda: buf.sample(), sec)
    return out


def make_prio_replaydb(rows: dict[str, np.ndarray]) -> Callable[[], object]:
    buf = ReplayBuffer.prioritized(CAP, S, A, H, alpha=0.6, beta=0.4, seed=0)
    t = {k: torch.from_numpy(v) for k, v in rows.items()}
    batch = tuple(t[k][:B] for k in ("s", "a", "r", "s2", "d", "h"))
    for _ in range(CAP // B + 1):
        buf.add_multi(*batch)
    td = torch.rand(4096, B, generator=torch.Generator().manual_seed(0)) + 0.01
    k = [0]

    def step() -> None:
        k[0] = (k[0] + 1) & 4095
        b = buf.sample(B)
        buf.update_priorities(b.keys, td[k[0]])

    return step


def make_prio_cpprb(rows: dict[str, np.ndarray]) -> Callable[[], object]:
    from cpprb import PrioritizedReplayBuffer

    env_dict = {"obs": {"shape": S}, "act": {"shape": A}, "rew": {}, "next_obs": {"shape": S},
                "done": {}, "hidden": {"shape": H}}  # fmt: skip
    buf = PrioritizedReplayBuffer(CAP, env_dict, alpha=0.6)
    many = {"obs": rows["s"][:B], "act": rows["a"][:B], "rew": rows["r"][:B],
            "next_obs": rows["s2"][:B], "done": rows["d"][:B], "hidden": rows["h"][:B]}  # fmt: skip
    for _ in range(CAP // B + 1):
        buf.add(**many)
    td = np.random.default_rng(0).random((4096, B)) + 0.01
    k = [0]

    def step() -> None:
        k[0] = (k[0] + 1) & 4095
        s = buf.sample(B, beta=0.4)
        buf.update_priorities(s["indexes"], td[k[0]])

    return step


def make_prio_tianshou(rows: dict[str, np.ndarray]) -> Callable[[], object]:
    from tianshou.data import Batch, PrioritizedReplayBuffer

    buf = PrioritizedReplayBuffer(CAP, alpha=0.6, beta=0.4)
    reps = CAP // B + 1
    col = {k: np.tile(v, (reps, 1))[:CAP] for k, v in rows.items()}
    # Filled the way Tianshou's own ReplayBuffer.from_data fills a buffer (one add
    # per transition would take minutes), then every leaf given the max priority.
    buf.set_batch(
        Batch(
            obs=col["s"],
            act=col["a"],
            rew=col["r"][:, 0],
            terminated=col["d"][:, 0] > 0,
            truncated=np.zeros(CAP, bool),
            done=col["d"][:, 0] > 0,
            obs_next=col["s2"],
        )
    )
    buf._size = CAP
    buf.init_weight(np.arange(CAP))
    td = np.random.default_rng(0).random((4096, B)) + 0.01
    k = [0]

    def step() -> None:
        k[0] = (k[0] + 1) & 4095
        _, idx = buf.sample(B)
        buf.update_weight(idx, td[k[0]])

    return step


PRIO_PEERS: dict[str, tuple[str, Callable[[dict[str, np.ndarray]], Callable[[], object]]]] = {
    "cpprb": ("cpprb", make_prio_cpprb),
    "Tianshou": ("tianshou", make_prio_tianshou),
}


def prio_replaydb(sec: float, rows: dict[str, np.ndarray]) -> float:
    return rate(make_prio_replaydb(rows), sec)


def issue_race(reps: int, rows: dict[str, np.ndarray]) -> dict[str, float]:
    """Issue 12's ratios from races: median CPU seconds per call, blocks interleaved.

    Three races, each of calls that touch alike amounts of memory (a sampler that
    walks 200 MB between two adds would make the adds' first calls cold): replaydb's
    add against SB3's add (n_envs=1); add_multi(B) against SB3's add with n_envs=B;
    the uniform sample(B) against the prioritized steps of replaydb and its peers.
    Ten calls of each in turn, so that load from other processes falls on all alike.
    """
    ours = make_replaydb(rows)
    groups: list[dict[str, Callable[[], object]]] = [{"add": ours["add"]}]
    groups.append({"add_multi": ours["add_multi"]})
    if importlib.util.find_spec("stable_baselines3") is not None:
        sb3 = make_sb3(rows)
        groups[0]["SB3 add"] = sb3["add"]
        groups[1]["SB3 add_multi"] = sb3["add_multi"]
    sampling: dict[str, Callable[[], object]] = {
        "sample": ours["sample"],
        "prio": make_prio_replaydb(rows),
    }
    for name, (module, make) in PRIO_PEERS.items():
        if importlib.util.find_spec(module) is not None:
            sampling[f"{name} prio"] = make(rows)
    groups.append(sampling)
    out: dict[str, float] = {}
    for contenders in groups:
        out.update(race(contenders, reps))
    return out


def print_issue_race(t: dict[str, float]) -> None:
    print("\nissue 12 targets: three races, blocks of 10 calls interleaved, median CPU time")
    for name, sec in t.items():
        print(f"  {name:<16} {sec * 1e6:9.2f} us/call")
    if "SB3 add" in t:
        print(f"  add vs SB3 ReplayBuffer.add:              {t['SB3 add'] / t['add']:.2f}x (>= 1)")
        print(
            f"  add_multi({B}) vs SB3 n_envs={B} add:       "
            f"{t['SB3 add_multi'] / t['add_multi']:.2f}x (>= 2)"
        )
    print(f"  prioritized step / uniform sample({B}):    {t['prio'] / t['sample']:.2f}x (<= 3)")
    for name in ("Tianshou", "cpprb"):
        if f"{name} prio" in t:
            print(
                f"  prioritized step vs {name + ':':<21} "
                f"{t[f'{name} prio'] / t['prio']:.2f}x faster (> 1)"
            )


PEERS: dict[str, tuple[str, Callable[[float, dict[str, np.ndarray]], dict[str, float]]]] = {
    "SB3": ("stable_baselines3", bench_sb3),
    "cpprb": ("cpprb", bench_cpprb),
    "TorchRL": ("torchrl", bench_torchrl),
}


def breakdown(reps: int, rows: dict[str, np.ndarray]) -> None:
    """Microseconds per call of each stage of add / add_multi, and a raw copy of the bytes.

    Two races (``reps`` calls of each, blocks of ten interleaved, median CPU time),
    the stages of ``add`` with SB3's add, those of ``add_multi`` with SB3's add of
    ``B`` envs, so that every figure of one race saw the same machine load.
    """
    buf = ReplayBuffer(CAP, S, A, H)
    width = 2 * S + A + H + 2
    t = {k: torch.from_numpy(v) for k, v in rows.items()}
    s, a, s2, h = t["s"][0], t["a"][0], t["s2"][0], t["h"][0]
    packed = np.ones((CAP, width), np.float32)  # ones: every page touched before timing
    row = np.zeros(width, np.float32)
    head = torch.from_numpy(row[:-2])
    block = torch.empty(B, width)
    blk = block.numpy()
    cols = tuple(t[k][:B] for k in ("s", "a", "s2", "h", "r", "d"))
    batch = tuple(t[k][:B] for k in ("s", "a", "r", "s2", "d", "h"))

    per_field = [np.ones((CAP, c.shape[1]), np.float32) for c in cols]
    np_cols = [c.numpy() for c in cols]
    pos = [0]

    def advance(n: int) -> int:
        p = pos[0]
        pos[0] = (p + n) % (CAP - B)  # walk the ring: rows are cold, as in a buffer
        return p

    def raw_row() -> None:
        packed[advance(1)] = row

    def raw_block() -> None:
        p = advance(B)
        packed[p : p + B] = blk

    def raw_columns() -> None:
        p = advance(B)
        for dst, src in zip(per_field, np_cols, strict=True):
            dst[p : p + B] = src

    def cat_into_ring() -> None:
        p = advance(1)
        torch.cat((s, a, s2, h), out=torch.from_numpy(packed[p, :-2]))

    writer = buf.table.row_writer(scalars=2)
    assert writer is not None
    parts, tail = (s, a, s2, h), (1.0, False)
    packed_part = (torch.cat(parts),)  # the 4 vectors as one tensor, as a caller could pass
    packed_block = (torch.cat(cols, 1),)  # the 6 columns as one [B, W] block
    kernels = buf.table._kernels
    key, stream, end = (x.numpy() for x in (buf.table.storage.key, buf.table.storage.stream,
                                             buf.table.storage.end))  # fmt: skip
    item_key, priority, times = (x.numpy() for x in (buf.table._item_key, buf.table._priority,
                                                      buf.table._times))  # fmt: skip

    def records_kernel() -> None:
        p = advance(B)
        kernels.record_rows(key, stream, end, item_key, priority, times, p, B, p, 1.0)

    def cat_block_into_ring() -> None:
        p = advance(B)
        torch.cat(cols, 1, out=ring[p : p + B])

    from replaydb import _row_kernels

    step_writer = buf.table.row_writer(scalars=2)  # declared shapes: add_step's checks
    assert step_writer is not None
    step_writer.expect_step((S, A, S, H))
    put = step_writer._put  # the compiled copy of a block with its records, alone
    direct = step_writer._sources(cols, B)
    if put is not None and type(direct) is tuple:
        step_writer._ctx[_row_kernels.CTX_WIDTHS : _row_kernels.CTX_WIDTHS + 6] = direct[0]

    def put_block() -> None:
        p = advance(B)
        assert put is not None
        assert type(direct) is tuple
        put(step_writer._ctx, B, p, 1.0, 6, *direct[1])

    ring = torch.from_numpy(packed)
    stages = {
        "add: raw numpy copy of one packed row (140 B)": (raw_row, 1),
        "add: torch.cat of the 4 vectors straight into a ring row": (cat_into_ring, 1),
        "add: torch.cat of the 4 vectors into a staging row": (
            lambda: torch.cat((s, a, s2, h), out=head),
            1,
        ),
        "add: Table.extend_unchecked(one packed row): the records alone": (
            lambda: buf.table.extend_unchecked({torch.float32: row}, 1),
            1,
        ),
        "add: RowWriter.add (lock, cat, row, records)": (lambda: writer.add(parts, tail), 1),
        "add: RowWriter.add of the 4 vectors as one packed part": (
            lambda: writer.add(packed_part, tail),
            1,
        ),
        "add: RowWriter.add_step (checks, one compiled copy with the records)": (
            lambda: step_writer.add_step(s, a, s2, h, 1.0, False),
            1,
        ),
        "add: ReplayBuffer.add (all of it)": (lambda: buf.add(s, a, 1.0, s2, False, h), 1),
        f"add_multi: raw numpy copy of {B} packed rows (36 KB)": (raw_block, 1),
        f"add_multi: raw copy of the 6 columns into 6 per-field rings ({B} rows)": (
            raw_columns,
            1,
        ),
        "add_multi: torch.cat of the 6 columns into a staging block": (
            lambda: torch.cat(cols, 1, out=block),
            1,
        ),
        f"add_multi: torch.cat of the 6 columns straight into ring rows ({B})": (
            cat_block_into_ring,
            1,
        ),
        f"add_multi: the records of {B} rows, one compiled pass (numba)": (
            records_kernel if kernels is not None else raw_block,
            1,
        ),
        f"add_multi: the 6 columns copied with the records, one compiled call ({B})": (
            put_block if put is not None else raw_block,
            1,
        ),
        f"add_multi: RowWriter.extend({B} rows: checks, copy, records)": (
            lambda: writer.extend(cols, B),
            1,
        ),
        f"add_multi: RowWriter.extend of one packed [{B}, W] block": (
            lambda: writer.extend(packed_block, B),
            1,
        ),
        f"add_multi: ReplayBuffer.add_multi({B}) (all of it)": (
            lambda: buf.add_multi(*batch),
            1,
        ),
    }
    groups: list[dict[str, Callable[[], object]]] = [{}, {}]
    for name, (fn, _) in stages.items():
        groups[0 if name.startswith("add:") else 1][name] = fn
    if importlib.util.find_spec("stable_baselines3") is not None:
        sb3 = make_sb3(rows)
        groups[0]["SB3 ReplayBuffer.add (n_envs=1)"] = sb3["add"]
        groups[1][f"SB3 ReplayBuffer.add (n_envs={B}), per call"] = sb3["add_multi"]
    print("\nbreakdown (median CPU microseconds per call, one thread, two races)")
    for group in groups:
        for name, sec in race(group, reps).items():
            print(f"  {name:<66} {sec * 1e6:8.2f}")


def ours_only(reps: int) -> dict[str, float]:
    """replaydb's add, add_multi, sample and prioritized step: median CPU seconds a call.

    Timed as the issue race times them (add, add_multi, then sample with the
    prioritized step), with whichever replaydb is on the path.
    """
    rows = fill_rows(B)
    ours = make_replaydb(rows)
    out = race({"add": ours["add"]}, reps)
    out.update(race({"add_multi": ours["add_multi"]}, reps))
    out.update(race({"sample": ours["sample"], "prio": make_prio_replaydb(rows)}, reps))
    return out


def compare_with(other_src: str, reps: int, rounds: int) -> None:
    import json
    import os
    import statistics
    import subprocess
    import sys

    here = str(Path(__file__).resolve().parents[1] / "src")
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for _ in range(rounds):
        for side, src in (("before", other_src), ("after", here)):
            env = {**os.environ, "PYTHONPATH": src}
            cmd = [sys.executable, __file__, "--ours-only", "--race", str(reps)]
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            runs[side].append(json.loads(out.stdout.splitlines()[-1]))
    med = {
        side: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for side, rs in runs.items()
    }
    print(
        f"\nbefore = {other_src}\nafter  = {here}\n(median CPU time per call over {rounds} "
        f"alternating runs, each the median of blocks of 10 calls; rows of add_multi: {B})"
    )
    print(f"{'':<14} {'before us':>12} {'after us':>12} {'after/before':>13} {'each run':>30}")
    for k in ("add", "add_multi", "sample", "prio"):
        b, a = med["before"][k], med["after"][k]
        each = " ".join(
            f"{ra[k] / rb[k]:.2f}" for rb, ra in zip(runs["before"], runs["after"], strict=True)
        )
        print(f"{k:<14} {b * 1e6:>12.2f} {a * 1e6:>12.2f} {a / b:>13.2f} {each:>30}")
    for side in ("before", "after"):
        r = med[side]
        print(f"{side}: prioritized step = {r['prio'] / r['sample']:.2f}x a uniform sample({B})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="0.3 s per measurement")
    parser.add_argument("--breakdown", action="store_true", help="where add's time goes")
    parser.add_argument("--compare-with", metavar="SRC", help="before/after against SRC")
    parser.add_argument(
        "--race", type=int, default=1000, metavar="N", help="calls of each in the issue 12 race"
    )
    parser.add_argument("--ours-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=5, help="alternating runs of --compare-with")
    args = parser.parse_args()
    sec = args.seconds or (0.3 if args.quick else 1.5)
    torch.set_num_threads(1)
    if args.ours_only:
        import json

        print(json.dumps(ours_only(args.race)))
        return
    if args.compare_with:
        compare_with(args.compare_with, args.race, args.rounds)
        return
    rows = fill_rows(B)
    results = {"replaydb": bench_replaydb(sec, rows), "floor": bench_floor(sec)}
    for name, (module, fn) in PEERS.items():
        if importlib.util.find_spec(module) is None:
            print(f"(skipping {name}: pip install 'replaydb[bench]')")
            continue
        results[name] = fn(sec, rows)
    ours = results["replaydb"]
    print(f"\nVelora transition (state {S}, action {A}, hidden {H}), capacity {CAP:,}, 1 thread\n")
    print(f"{'library':<10} {'add calls/s':>14} {'add_multi rows/s':>18} {'sample(256) /s':>16}")
    for name, r in results.items():
        print(f"{name:<10} {r['add']:>14,.0f} {r['add_multi']:>18,.0f} {r['sample']:>16,.0f}")
    print("\nratios (replaydb / other; > 1 means replaydb is faster)")
    print(f"{'vs':<10} {'add':>8} {'add_multi':>10} {'sample':>8}")
    for name, r in results.items():
        if name == "replaydb":
            continue
        print(
            f"{name:<10} {ours['add'] / r['add']:>8.2f} {ours['add_multi'] / r['add_multi']:>10.2f}"
            f" {ours['sample'] / r['sample']:>8.2f}"
        )
    prio = {"replaydb": prio_replaydb(sec, rows)}
    for name, (module, pfn) in PRIO_PEERS.items():
        if importlib.util.find_spec(module) is not None:
            prio[name] = rate(pfn(rows), sec)
    print(f"\nprioritized step: sample({B}) + update_priorities({B}), capacity {CAP:,}")
    for name, r in prio.items():
        print(f"{name:<10} {r:>12,.0f} steps/s   replaydb / {name}: {prio['replaydb'] / r:.2f}")
    print_issue_race(issue_race(args.race, rows))
    floor = results["floor"]
    if args.breakdown:
        breakdown(args.race, rows)
    print(
        f"\nsample(256) vs floor: {floor['sample'] / ours['sample']:.2f}x the time of "
        f"randint + index_select, {floor['gather'] / ours['sample']:.2f}x the time of "
        "index_select alone (same number of random rows, one packed array)"
    )


if __name__ == "__main__":
    main()
