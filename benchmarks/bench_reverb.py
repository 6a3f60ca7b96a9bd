"""TF-Agents' Reverb pipeline on replaydb.reverb vs real dm-reverb, same code, one run.

Measures, per backend, in its own process (the two cannot share one):

* ``observer``: ``ReverbAddTrajectoryObserver`` steps/s (sequence_length=2, CartPole-shaped
  numpy ``Trajectory`` steps, episodes of 200 steps with a boundary step), flush included;
* ``dataset``: ``ReverbReplayBuffer.as_dataset(64, num_steps=2)`` items/s over a full
  table, after a warm-up;
* ``dataset ceiling`` (replaydb side only): the same TF-Agents pipeline with the
  Reverb dataset replaced by a source that costs nothing, i.e. the most any Reverb
  implementation can reach through TF-Agents' unchanged ``as_dataset``;
* ``observer ceiling`` (replaydb side only): the unchanged ``ReverbAddTrajectoryObserver``
  over the same steps, driving a writer that does the least any implementation must
  (``append`` stores nothing, ``history`` is a fixed nest whose leaves return
  themselves when sliced, ``create_item``/``flush``/``end_episode`` do nothing), i.e.
  the most any Reverb implementation can reach through TF-Agents' unchanged observer
  (the best of three passes).

    python benchmarks/bench_reverb.py                      # ours + real, ratios
    python benchmarks/bench_reverb.py --real-python /work/tfenv/bin/python

The ratio column is replaydb.reverb (or the ceiling) over dm-reverb, measured in the
same run. ``--compare-with OTHER/src`` also races this checkout's observer against
another checkout's in one process (the before/after figure of a change).

The default interpreter runs replaydb.reverb (it must not have dm-reverb, or pass
``--replace``); ``--real-python`` names one with dm-reverb (skipped when absent).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TABLE = "bench"


def measure(
    backend: str, steps: int, batches: int, replace: bool, compare_with: str | None = None
) -> dict[str, float]:
    """Run both measurements on ``backend`` ('ours' or 'real') in this process."""
    if backend == "ours":
        import replaydb.reverb

        replaydb.reverb.install(replace_existing=replace)
    import numpy as np
    import reverb
    import tensorflow as tf
    from tf_agents.replay_buffers import reverb_replay_buffer, reverb_utils
    from tf_agents.specs import tensor_spec
    from tf_agents.trajectories import trajectory

    spec = trajectory.Trajectory(
        step_type=tensor_spec.TensorSpec((), tf.int32),
        observation=tensor_spec.TensorSpec((4,), tf.float32),
        action=tensor_spec.TensorSpec((), tf.int64),
        policy_info=(),
        next_step_type=tensor_spec.TensorSpec((), tf.int32),
        reward=tensor_spec.TensorSpec((), tf.float32),
        discount=tensor_spec.TensorSpec((), tf.float32),
    )
    rng = np.random.default_rng(0)
    episode = 200
    data = []
    for i in range(steps):
        t = i % (episode + 1)
        if t == episode:  # the boundary step
            step_type, next_step_type = 2, 0
        else:
            step_type = 0 if t == 0 else 1
            next_step_type = 2 if t == episode - 1 else 1
        data.append(
            trajectory.Trajectory(
                step_type=np.int32(step_type),
                observation=rng.standard_normal(4).astype(np.float32),
                action=np.int64(rng.integers(2)),
                policy_info=(),
                next_step_type=np.int32(next_step_type),
                reward=np.float32(1.0),
                discount=np.float32(0.0 if next_step_type == 2 else 1.0),
            )
        )
    table = reverb.Table(
        TABLE,
        max_size=steps,
        sampler=reverb.selectors.Uniform(),
        remover=reverb.selectors.Fifo(),
        rate_limiter=reverb.rate_limiters.MinSize(1),
    )
    server = reverb.Server([table])
    replay = reverb_replay_buffer.ReverbReplayBuffer(
        spec, TABLE, sequence_length=2, local_server=server
    )
    observer = reverb_utils.ReverbAddTrajectoryObserver(replay.py_client, TABLE, 2)
    start = time.perf_counter()
    for step in data:
        observer(step)
    observer.flush()
    frames = replay.num_frames()  # waits for the writes to land
    observer_s = time.perf_counter() - start

    def items_per_s() -> float:
        it = iter(replay.as_dataset(64, num_steps=2))
        for _ in range(20):
            next(it)
        start = time.perf_counter()
        for _ in range(batches):
            next(it)
        return batches * 64 / (time.perf_counter() - start)

    out = {"observer_steps_per_s": steps / observer_s, "frames": float(frames)}
    if backend == "ours":
        out["observer_ceiling_steps_per_s"] = observer_ceiling(data)
        if compare_with:
            out.update(observer_ab(compare_with, data))
        # The ceiling of TF-Agents' own as_dataset pipeline (interleave of 32 sources,
        # per-item map, batch): the same pipeline over a source that costs nothing,
        # an in-graph dataset of ready ReplaySamples. No Reverb can beat it.
        ready = 4096

        def free_source(server_address: str, table: str, dtypes: Any, shapes: Any, **_: Any) -> Any:
            info = reverb.SampleInfo(
                *[
                    tf.zeros([ready], d)
                    for d in (tf.uint64, tf.float64, tf.int64, tf.float64, tf.int32)
                ]
            )
            data = tf.nest.map_structure(
                lambda d, s: tf.zeros([ready, *s.as_list()], d), dtypes, shapes
            )
            return tf.data.Dataset.from_tensor_slices(reverb.ReplaySample(info, data)).repeat()

        real_source = reverb_replay_buffer.reverb.TrajectoryDataset
        reverb_replay_buffer.reverb.TrajectoryDataset = free_source
        try:
            out["dataset_ceiling_items_per_s"] = items_per_s()
        finally:
            reverb_replay_buffer.reverb.TrajectoryDataset = real_source
    out["dataset_items_per_s"] = items_per_s()
    server.stop()
    return out


class _FreeColumn:
    """A history leaf that costs nothing to slice."""

    def __getitem__(self, _: Any) -> _FreeColumn:
        return self


class _FreeWriter:
    """The least a TrajectoryWriter must do for TF-Agents' observer: nothing is kept."""

    def __init__(self, history: Any) -> None:
        self.history = history

    def append(self, data: Any, *, partial_step: bool = False) -> None:
        pass

    def create_item(self, table: str, priority: float, trajectory: Any) -> None:
        pass

    def flush(self, *_: Any, **__: Any) -> None:
        pass

    def end_episode(self, *_: Any, **__: Any) -> None:
        pass

    def close(self) -> None:
        pass


class _FreeClient:
    """A py_client whose trajectory writers are :class:`_FreeWriter`."""

    def __init__(self, history: Any) -> None:
        self._history = history

    def trajectory_writer(self, num_keep_alive_refs: int, **_: Any) -> _FreeWriter:
        return _FreeWriter(self._history)


def observer_ceiling(data: list[Any], passes: int = 3) -> float:
    """Steps/s of TF-Agents' unchanged observer over a writer that does nothing (best pass)."""
    import tensorflow as tf
    from tf_agents.replay_buffers import reverb_utils

    history = tf.nest.map_structure(lambda _: _FreeColumn(), data[0])
    best = 0.0
    for _ in range(passes):
        observer = reverb_utils.ReverbAddTrajectoryObserver(_FreeClient(history), TABLE, 2)
        start = time.perf_counter()
        for step in data:
            observer(step)
        observer.flush()
        best = max(best, len(data) / (time.perf_counter() - start))
    return best


def observer_ab(base_src: str, data: list[Any], block: int = 2010) -> dict[str, float]:
    """The observer on another checkout's replaydb.reverb vs this one, in one process.

    Both packages are loaded side by side (the other renamed, as in ``bench_ab.py``)
    and fed the same steps in interleaved blocks, so machine load falls on both
    alike; the rates come from the median per-block thread CPU time.
    """
    import importlib
    import statistics
    import tempfile

    from bench_ab import copy_as
    from tf_agents.replay_buffers import reverb_utils

    import replaydb.reverb as new

    tmp = tempfile.mkdtemp(prefix="bench_reverb_ab_")
    copy_as(Path(base_src), Path(tmp), "replaydb_base")
    sys.path.insert(0, tmp)
    base = importlib.import_module("replaydb_base.reverb")
    sides = {}
    for name, pkg in (("base", base), ("new", new)):
        table = pkg.Table(
            TABLE,
            max_size=len(data),
            sampler=pkg.selectors.Uniform(),
            remover=pkg.selectors.Fifo(),
            rate_limiter=pkg.rate_limiters.MinSize(1),
        )
        server = pkg.Server([table])
        observer = reverb_utils.ReverbAddTrajectoryObserver(server.localhost_client(), TABLE, 2)
        sides[name] = (server, observer, [])
    for i, start in enumerate(range(0, len(data), block)):
        chunk = data[start : start + block]
        order = list(sides.values())
        for _, observer, times in order[:: 1 if i % 2 else -1]:  # who goes first alternates
            t = time.thread_time()
            for step in chunk:
                observer(step)
            times.append((time.thread_time() - t) / len(chunk))
    out = {}
    for name, (server, observer, times) in sides.items():
        observer.close()
        server.stop()
        out[f"observer_ab_{name}_steps_per_s"] = 1 / statistics.median(times)
    return out


def run_child(python: str, backend: str, args: argparse.Namespace) -> dict[str, float] | None:
    cmd = [
        python,
        __file__,
        "--child",
        backend,
        "--steps",
        str(args.steps),
        "--batches",
        str(args.batches),
    ]
    if args.replace:
        cmd.append("--replace")
    if args.compare_with and backend == "ours":
        cmd += ["--compare-with", args.compare_with]
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        print(f"{backend} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    out: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=50_000, help="observer steps")
    p.add_argument("--batches", type=int, default=300, help="dataset batches of 64")
    p.add_argument("--real-python", default=os.environ.get("REPLAYDB_REAL_REVERB_PYTHON"))
    p.add_argument("--replace", action="store_true", help="shadow a dm-reverb in this env")
    p.add_argument(
        "--compare-with",
        metavar="SRC",
        help="also race the observer against the replaydb.reverb of another checkout's "
        "src/ (e.g. a baseline), in one process",
    )
    p.add_argument("--child", choices=["ours", "real"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        out = measure(args.child, args.steps, args.batches, args.replace, args.compare_with)
        print(json.dumps(out))
        return
    real_python = args.real_python or (
        "/work/tfenv/bin/python" if Path("/work/tfenv/bin/python").exists() else None
    )
    results: dict[str, Any] = {"ours": run_child(sys.executable, "ours", args)}
    results["real"] = run_child(real_python, "real", args) if real_python else None
    print(f"{'metric':<24}{'replaydb.reverb':>18}{'dm-reverb':>14}{'ratio':>8}")
    for key in ("observer_steps_per_s", "dataset_items_per_s"):
        ours = results["ours"][key] if results["ours"] else float("nan")
        real = results["real"][key] if results["real"] else float("nan")
        print(f"{key:<24}{ours:>18,.0f}{real:>14,.0f}{ours / real:>7.1f}x")
    if results["ours"] and "dataset_ceiling_items_per_s" in results["ours"]:
        ceiling = results["ours"]["dataset_ceiling_items_per_s"]
        real = results["real"]["dataset_items_per_s"] if results["real"] else float("nan")
        print(
            f"{'dataset ceiling':<24}{ceiling:>18,.0f}{'':>14}{ceiling / real:>7.1f}x"
            "   (TF-Agents' pipeline over a source that costs nothing)"
        )
    if results["ours"] and "observer_ceiling_steps_per_s" in results["ours"]:
        ceiling = results["ours"]["observer_ceiling_steps_per_s"]
        real = results["real"]["observer_steps_per_s"] if results["real"] else float("nan")
        share = results["ours"]["observer_steps_per_s"] / ceiling
        print(
            f"{'observer ceiling':<24}{ceiling:>18,.0f}{'':>14}{ceiling / real:>7.1f}x"
            f"   (TF-Agents' observer over a writer that does nothing; ours: {share:.0%} of it)"
        )
    if results["ours"] and "observer_ab_base_steps_per_s" in results["ours"]:
        base = results["ours"]["observer_ab_base_steps_per_s"]
        new = results["ours"]["observer_ab_new_steps_per_s"]
        print(
            f"{'observer, this vs base':<24}{new:>18,.0f}{base:>14,.0f}{new / base:>7.2f}x"
            f"   (--compare-with {args.compare_with}: one process, CPU time, base column)"
        )


if __name__ == "__main__":
    main()
