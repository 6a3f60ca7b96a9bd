"""``replaydb populate``: fill a starter buffer and print a summary table.

The command runs :func:`replaydb.collect.populate` (a progress bar on a terminal,
one line per run otherwise) and prints frames, runs, episodes, episode returns,
bytes on disk and time; the small text-formatting helpers it uses live here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from replaydb.cli._inspect import _stats


def run(args: argparse.Namespace) -> int:
    from replaydb.collect import CollectStats, populate

    quiet = bool(args.quiet)
    show_bar = not quiet and sys.stderr.isatty()

    def on_run(run: int, stats: CollectStats, ckpt: Path) -> None:
        if not quiet and not show_bar:
            print(
                f"run {run}/{args.num_runs}: {stats.rows} rows, {stats.episodes} episodes, "
                f"checkpoint {ckpt.name}",
                flush=True,
            )

    result = populate(
        args.env,
        args.policy,
        out=args.out,
        buffer_name=args.buffer_name,
        capacity=args.capacity,
        steps_per_run=args.steps_per_run,
        num_runs=args.num_runs,
        sequence_length=args.sequence_length,
        num_envs=args.num_envs,
        seed=args.seed,
        force=args.force,
        progress=show_bar,
        on_run=on_run,
    )
    rets = result.episode_returns
    rows = [
        ("path", str(result.path)),
        ("frames", f"{result.frames:,}"),
        ("runs", str(result.runs)),
        ("episodes", f"{result.episodes:,}"),
        ("episode return", _stats_line(rets) if rets else "no episode finished"),
        ("bytes on disk", _human_bytes(result.nbytes)),
        (
            "time",
            f"{result.seconds:.2f} s ({result.frames / max(result.seconds, 1e-9):,.0f} rows/s)",
        ),
    ]
    print(_kv_table(f"populated {args.env} with policy {args.policy}", rows))
    return 0


def _stats_line(values: Any) -> str:
    s = _stats(torch.as_tensor(values, dtype=torch.float64))
    return f"mean {s['mean']:.2f}  min {s['min']:.2f}  max {s['max']:.2f}  (n={s['count']})"


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{n} B"


def _kv_table(title: str, rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    lines = [title, "-" * len(title)]
    lines += [f"{k.ljust(width)}  {v}" for k, v in rows]
    return "\n".join(lines)
