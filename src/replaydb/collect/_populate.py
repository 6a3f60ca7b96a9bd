""":func:`populate`: pre-fill a starter buffer and checkpoint it after every run.

Also :func:`check_output` (where it would write, checked before anything is
written) and :class:`PopulateResult`. The checkpoint layout is described in
:mod:`replaydb.collect`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replaydb._validate import check_int
from replaydb.collect._collector import Collector, CollectStats
from replaydb.collect._env import _progress_bar
from replaydb.collect._policies import load_policy
from replaydb.collect._spec import LAYOUT, TABLE_NAME, _make_single, _spec_from_spaces
from replaydb.errors import InvalidArgumentError, require


@dataclass(frozen=True)
class PopulateResult:
    """What :func:`populate` wrote.

    Attributes:
        path: The buffer's checkpoint root (``out/buffer_name``).
        checkpoint: The newest checkpoint directory under it.
        runs: Runs completed (one checkpoint each).
        frames: Rows stored.
        episodes: Episodes finished while collecting.
        episode_returns: Return of each finished episode.
        nbytes: Bytes of the newest checkpoint on disk.
        seconds: Wall time of the whole job.
    """

    path: Path
    checkpoint: Path
    runs: int
    frames: int
    episodes: int
    episode_returns: list[float]
    nbytes: int
    seconds: float


def check_output(out: str | os.PathLike[str], buffer_name: str, *, force: bool) -> Path:
    """Check where :func:`populate` would write, before anything is written.

    Returns:
        The buffer root ``out/buffer_name``.

    Raises:
        InvalidArgumentError: If ``out`` or the root is a file, the name is not a plain
            name, or a buffer is already there and ``force`` is false.
    """
    if (
        not isinstance(buffer_name, str)
        or not buffer_name
        or buffer_name in (".", "..")
        or ("/" in buffer_name or os.sep in buffer_name)
    ):
        raise InvalidArgumentError(
            f"--buffer-name must be a plain directory name, got {buffer_name!r}"
        )
    out_p = Path(out)
    if out_p.exists() and not out_p.is_dir():
        raise InvalidArgumentError(
            f"--out {str(out_p)!r} is a file, not a directory; pass a directory path"
        )
    root = out_p / buffer_name
    if root.exists() and not root.is_dir():
        raise InvalidArgumentError(
            f"{str(root)!r} is a file, not a buffer directory; remove it or pick another "
            "--buffer-name"
        )
    if root.is_dir() and any(root.iterdir()) and not force:
        from replaydb.checkpoint import latest_checkpoint

        what = "a buffer" if latest_checkpoint(root) is not None else "files"
        raise InvalidArgumentError(
            f"{str(root)!r} already holds {what}; refusing to overwrite it. Pass --force to "
            "replace it (the old checkpoint stays until the first new one is complete), or "
            "pick another --buffer-name / --out"
        )
    return root


def populate(
    env: str,
    policy: Any = "random",
    *,
    out: str | os.PathLike[str],
    buffer_name: str = "replay_buffer",
    capacity: int = 50_000,
    steps_per_run: int = 100,
    num_runs: int = 5,
    sequence_length: int = 2,
    num_envs: int = 8,
    seed: int | None = None,
    force: bool = False,
    progress: Any = None,
    on_run: Callable[[int, CollectStats, Path], None] | None = None,
) -> PopulateResult:
    """Pre-fill a starter buffer and checkpoint it after every run.

    Writes ``out/buffer_name`` as a checkpoint root (see
    :func:`replaydb.checkpoint.write_checkpoint`) holding one table named
    ``"replay_buffer"`` in the *steps* layout of this module, with the env id, policy,
    seed, run count and episode returns in the manifest's ``extra``. Only the newest
    checkpoint is kept, so a killed job leaves every completed run loadable.

    Args:
        env: A registered Gymnasium env id.
        policy: ``"random"``, ``"package.module:factory"`` (see :func:`load_policy`), a
            callable, or an agent.
        out: Directory to write into (created if missing).
        buffer_name: Name of the buffer's directory under ``out``.
        capacity: Rows the table holds.
        steps_per_run: Rows written per run (one checkpoint per run).
        num_runs: Runs.
        sequence_length: Steps per sampled item (2: transitions).
        num_envs: Environments stepped together.
        seed: Makes the buffer identical run to run.
        force: Replace an existing buffer.
        progress: Progress bar on/off (default: on when stderr is a terminal).
        on_run: Called after each checkpoint with ``(run, stats, checkpoint_dir)``.

    Returns:
        A :class:`PopulateResult`.

    Raises:
        InvalidArgumentError: For bad numbers, an unknown env, a policy that does not
            load or acts wrongly, an output path that is a file, or an existing buffer
            without ``force``. Nothing is written in these cases.
        OSError: If the disk is full or read-only (completed checkpoints are kept).

    Example:
        >>> r = populate("CartPole-v1", out="/tmp/bufs", steps_per_run=50, num_runs=2, force=True)
        >>> r.frames
        100
    """
    from replaydb.checkpoint import write_checkpoint
    from replaydb.samplers import Uniform
    from replaydb.table import Table

    gym: Any = require("gymnasium", "gym")
    capacity = check_int("capacity", capacity, 1)
    steps_per_run = check_int("steps_per_run", steps_per_run, 1)
    num_runs = check_int("num_runs", num_runs, 1)
    sequence_length = check_int("sequence_length", sequence_length, 1)
    num_envs = check_int("num_envs", num_envs, 1)
    if steps_per_run * num_runs > capacity:
        raise InvalidArgumentError(
            f"steps_per_run x num_runs = {steps_per_run * num_runs} rows exceeds capacity "
            f"({capacity}); the buffer would overwrite its own oldest rows. Raise capacity or "
            "lower steps_per_run / num_runs"
        )
    if sequence_length > capacity:
        raise InvalidArgumentError(
            f"sequence_length ({sequence_length}) must not exceed capacity ({capacity})"
        )
    if not isinstance(env, str):
        raise InvalidArgumentError(f"env must be a Gymnasium env id string, got {env!r}")
    root = check_output(out, buffer_name, force=force)
    probe = _make_single(gym, env)
    try:
        obs_space, act_space = probe.observation_space, probe.action_space
    finally:
        probe.close()
    policy_name = (
        policy
        if isinstance(policy, str)
        else getattr(policy, "__qualname__", type(policy).__qualname__)
    )
    if isinstance(policy, str):
        policy = load_policy(policy, obs_space, act_space)
    table = Table(
        _spec_from_spaces(obs_space, act_space),
        capacity,
        sampler=Uniform(seed=seed),
        sequence_length=sequence_length,
        name=TABLE_NAME,
    )
    # Fail fast on a read-only or unwritable --out, before any env is stepped.
    root.mkdir(parents=True, exist_ok=True)
    probe_file = root / f".replaydb-write-test-{os.getpid()}"
    probe_file.write_bytes(b"")
    probe_file.unlink()
    start = time.perf_counter()
    bar, own = _progress_bar(progress, steps_per_run * num_runs)
    ckpt = root
    try:
        with Collector(table, policy, num_envs=num_envs, env=env, seed=seed) as collector:
            stats = collector.stats
            for run in range(1, num_runs + 1):
                collector.collect(steps_per_run, progress=bar if bar is not None else False)
                ckpt = write_checkpoint(
                    root,
                    {TABLE_NAME: table},
                    keep=1,
                    extra={
                        "layout": LAYOUT,
                        "env": env,
                        "policy": policy_name,
                        "seed": seed,
                        "num_envs": num_envs,
                        "steps_per_run": steps_per_run,
                        "runs": run,
                        "num_runs": num_runs,
                        "frames": stats.rows,
                        "episodes": stats.episodes,
                        "episode_returns": stats.episode_returns,
                    },
                )
                if on_run is not None:
                    on_run(run, stats, ckpt)
    finally:
        if bar is not None and own:
            bar.close()
    nbytes = sum(p.stat().st_size for p in ckpt.iterdir() if p.is_file())
    return PopulateResult(
        path=root,
        checkpoint=ckpt,
        runs=num_runs,
        frames=stats.rows,
        episodes=stats.episodes,
        episode_returns=list(stats.episode_returns),
        nbytes=nbytes,
        seconds=time.perf_counter() - start,
    )
