"""A process that ends with a live ``as_dataset`` iterator exits, cleanly and at once.

Without the exit hook in ``replaydb.reverb.trajectory_dataset``, about half of these
runs hung for ever at interpreter exit or aborted with "terminate called without an
active exception": TF-Agents' pipeline keeps up to 32 generator datasets busy, and
their threads called into a finalizing Python.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import replaydb.reverb
    replaydb.reverb.install()
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
    table = reverb.Table("t", max_size=5000, sampler=reverb.selectors.Uniform(),
                         remover=reverb.selectors.Fifo(),
                         rate_limiter=reverb.rate_limiters.MinSize(1))
    server = reverb.Server([table])
    replay = reverb_replay_buffer.ReverbReplayBuffer(spec, "t", sequence_length=2,
                                                     local_server=server)
    observer = reverb_utils.ReverbAddTrajectoryObserver(replay.py_client, "t", 2)
    step = trajectory.Trajectory(np.int32(1), np.zeros(4, np.float32), np.int64(0), (),
                                 np.int32(1), np.float32(1.0), np.float32(1.0))
    for _ in range(2000):
        observer(step)
    observer.flush()
    it = iter(replay.as_dataset(64, num_steps=2, num_parallel_calls=3).prefetch(3))
    for _ in range(30):
        next(it)
    if os.environ.get("STOP_SERVER") == "1":
        server.stop()
    print("done", flush=True)
    """
)


@pytest.mark.parametrize(("run", "stop_server"), [(1, "0"), (2, "1"), (3, "0")])
def test_process_with_a_live_dataset_iterator_exits(run: int, stop_server: str) -> None:
    # Three runs: one run hung in about half of the tries before the fix.
    env = dict(os.environ, STOP_SERVER=stop_server, RUN=str(run))
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("done")
    assert "terminate called" not in proc.stderr
