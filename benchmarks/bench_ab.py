"""Before/after in one process: this checkout's replaydb raced against another's.

Timings on a shared machine drift by tens of percent between runs, so comparing two
runs of a benchmark says little about a 5% change. This script copies both source
trees into a temporary directory under renamed packages (``replaydb_base`` and
``replaydb_new``, imports rewritten), builds the same tables in both, and times
them in interleaved blocks of calls in one process, so machine load falls on both
alike. It prints the median CPU time per call and ``new/base``.

    python benchmarks/bench_ab.py --base ../old-checkout/src
    python benchmarks/bench_ab.py --base ../old-checkout/src --blocks 100

Operations (each skipped where the base lacks the verb): the prioritized step
(``sample(256)`` + ``update_priorities(256)``), prioritized and uniform ``sample(256)``,
``sample_data(256)``, sequence windows (T = 2 and 40, ``sample(64)``),
``extend_unchecked`` of 1 and 256 rows, ``Storage.gather(256)`` (capacity 200,000),
and the Velora buffer's ``add``, ``add_multi(256)`` and ``sample(256)``.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parents[1] / "src"


def copy_as(src: Path, dst: Path, name: str) -> None:
    """Copy the package ``src/replaydb`` to ``dst/name``, its imports renamed."""
    shutil.copytree(src / "replaydb", dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    pattern = re.compile(r"\breplaydb\b")
    for path in (dst / name).rglob("*.py"):
        path.write_text(pattern.sub(name, path.read_text()))


def build(pkg: str) -> dict[str, Callable[[], Any]]:
    """The timed operations on fresh tables of package ``pkg``."""
    m = importlib.import_module(pkg)
    samplers = importlib.import_module(pkg + ".samplers")
    spec = m.Spec({"obs": (8,), "action": (), "reward": (), "next_obs": (8,), "done": ()})
    cap = 200_000
    full = {k: torch.zeros(cap, *spec[k].shape) for k in spec}
    uniform = m.Table(spec, cap, sampler=samplers.Uniform(seed=0))
    uniform.extend(full)
    prio = m.Table(spec, cap, sampler=samplers.Prioritized(seed=0))
    prio.extend(full)
    seq = {}
    for t in (2, 40):
        seq[t] = m.Table(spec, cap, sampler=samplers.Uniform(seed=0), sequence_length=t)
        seq[t].extend(full, streams=torch.arange(cap) % 8)
    small = m.Table(spec, 1000, sampler=samplers.Uniform(seed=0))
    row = {k: np.zeros(spec[k].shape, np.float32) for k in spec}
    batch = {k: np.zeros((256, *spec[k].shape), np.float32) for k in spec}
    new_priorities = torch.rand(256, dtype=torch.float64) + 0.1
    rows = torch.randint(0, cap, (256,))

    def prio_step() -> None:
        s = prio.sample(256)
        prio.update_priorities(s.keys, new_priorities)

    ops: dict[str, Callable[[], Any]] = {
        "prioritized step (sample + update 256)": prio_step,
        "prioritized sample(256)": lambda: prio.sample(256),
        "uniform sample(256)": lambda: uniform.sample(256),
        "sequence T=2 sample(64)": lambda: seq[2].sample(64),
        "sequence T=40 sample(64)": lambda: seq[40].sample(64),
        "extend_unchecked 1 row": lambda: small.extend_unchecked(row, 1),
        "extend_unchecked 256 rows": lambda: small.extend_unchecked(batch, 256),
        "Storage.gather(256)": lambda: uniform.storage.gather(rows),
    }
    if hasattr(uniform, "sample_data"):
        ops["uniform sample_data(256)"] = lambda: uniform.sample_data(256)
    buf = m.ReplayBuffer(100_000, 8, 2, 16, device="cpu")
    s1, a1, h1 = torch.zeros(8), torch.zeros(2), torch.zeros(16)
    s256, a256, h256 = torch.zeros(256, 8), torch.zeros(256, 2), torch.zeros(256, 16)
    r256, d256 = torch.zeros(256), torch.zeros(256)
    buf.add_multi(s256, a256, r256, s256, d256, h256)
    ops["Velora add (1 transition)"] = lambda: buf.add(s1, a1, 0.0, s1, False, h1)
    ops["Velora add_multi(256)"] = lambda: buf.add_multi(s256, a256, r256, s256, d256, h256)
    ops["Velora sample(256)"] = lambda: buf.sample(256)
    return ops


def race(fns: dict[str, Callable[[], Any]], blocks: int, calls: int) -> dict[str, float]:
    """Median CPU µs per call of each of ``fns``, timed in interleaved blocks."""
    for f in fns.values():
        for _ in range(100):
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(blocks):
        for k, f in fns.items():
            t0 = time.process_time()
            for _ in range(calls):
                f()
            times[k].append((time.process_time() - t0) / calls * 1e6)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="the other checkout's src directory")
    p.add_argument("--new", default=str(HERE), help="this checkout's src (default)")
    p.add_argument("--blocks", type=int, default=60, help="interleaved blocks per operation")
    p.add_argument("--calls", type=int, default=20, help="calls per block")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="replaydb-ab-") as tmp:
        copy_as(Path(args.base), Path(tmp), "replaydb_base")
        copy_as(Path(args.new), Path(tmp), "replaydb_new")
        sys.path.insert(0, tmp)
        base, new = build("replaydb_base"), build("replaydb_new")
        print(f"base = {args.base}\nnew  = {args.new}")
        print(f"median CPU us per call, {args.blocks} interleaved blocks of {args.calls} calls")
        for name in new:
            if name not in base:
                print(f"{name:42s} (not in base)")
                continue
            t = race({"base": base[name], "new": new[name]}, args.blocks, args.calls)
            ratio = t["new"] / t["base"]
            print(f"{name:42s} base {t['base']:8.2f}  new {t['new']:8.2f}  new/base {ratio:.3f}")


if __name__ == "__main__":
    main()
