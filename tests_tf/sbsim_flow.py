"""The call sequence of sbsim's Reverb replay-buffer manager, as a script printing JSON.

sbsim (github s2t2/sbsim, smart_control/reinforcement_learning/replay_buffer/
replay_buffer.py) drives Reverb through TF-Agents: a uniform table with a
``DefaultCheckpointer``, ``ReverbReplayBuffer``, ``ReverbAddTrajectoryObserver``,
``as_dataset(...).prefetch(3)``, ``num_frames()``, ``py_client.checkpoint()``, a new
manager that loads the checkpoint, ``clear()`` (stop the server and create again)
and ``close()``. This script makes the same calls (written here, not copied) so the
test can run it on replaydb.reverb and, where dm-reverb is installed, on the real one.

    python tests_tf/sbsim_flow.py CKPT_DIR [--real-reverb]
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if "--real-reverb" not in sys.argv:
    import replaydb.reverb

    replaydb.reverb.install()

import reverb
from tf_agents.drivers import py_driver
from tf_agents.environments import suite_gym
from tf_agents.policies import random_py_policy
from tf_agents.replay_buffers import reverb_replay_buffer, reverb_utils
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import policy_step, trajectory

TABLE = "uniform_table"


class Manager:
    """Create / load / dataset / num_frames / clear / close over one Reverb table."""

    def __init__(self, data_spec: object, capacity: int, checkpoint_dir: str) -> None:
        self.data_spec, self.capacity, self.checkpoint_dir = data_spec, capacity, checkpoint_dir
        self.server = self.replay_buffer = self.observer = None

    def _build(self) -> tuple[object, object]:
        table = reverb.Table(
            TABLE,
            max_size=self.capacity,
            sampler=reverb.selectors.Uniform(),
            remover=reverb.selectors.Fifo(),
            rate_limiter=reverb.rate_limiters.MinSize(1),
        )
        checkpointer = reverb.platform.checkpointers_lib.DefaultCheckpointer(
            path=self.checkpoint_dir
        )
        self.server = reverb.Server([table], port=None, checkpointer=checkpointer)
        self.replay_buffer = reverb_replay_buffer.ReverbReplayBuffer(
            self.data_spec, sequence_length=2, table_name=TABLE, local_server=self.server
        )
        self.observer = reverb_utils.ReverbAddTrajectoryObserver(
            self.replay_buffer.py_client, TABLE, sequence_length=2, stride_length=1
        )
        return self.replay_buffer, self.observer

    create_replay_buffer = _build
    load_replay_buffer = _build

    def num_frames(self) -> int:
        return int(self.replay_buffer.num_frames())

    def clear(self) -> None:
        self.server.stop()
        self._build()

    def close(self) -> None:
        self.server.stop()


def main(checkpoint_dir: str) -> dict[str, object]:
    env = suite_gym.load("CartPole-v0")
    env.seed(0)
    data_spec = trajectory.from_transition(
        tensor_spec.from_spec(env.time_step_spec()),
        tensor_spec.from_spec(policy_step.PolicyStep(action=env.action_spec(), state=(), info=())),
        tensor_spec.from_spec(env.time_step_spec()),
    )
    out: dict[str, object] = {}
    manager = Manager(data_spec, 1000, checkpoint_dir)
    replay_buffer, observer = manager.create_replay_buffer()
    out["empty"] = manager.num_frames()
    policy = random_py_policy.RandomPyPolicy(env.time_step_spec(), env.action_spec())
    py_driver.PyDriver(env, policy, [observer], max_steps=120).run(env.reset())
    observer.flush()
    out["frames"] = manager.num_frames()
    dataset = replay_buffer.as_dataset(sample_batch_size=16, num_steps=2, num_parallel_calls=3)
    experience, info = next(iter(dataset.prefetch(3)))
    out["batch_shape"] = list(experience.observation.shape)
    out["info_shape"] = list(info.key.shape)
    replay_buffer.py_client.checkpoint()
    manager.close()

    loaded = Manager(data_spec, 1000, checkpoint_dir)
    replay_buffer, observer = loaded.load_replay_buffer()
    out["loaded"] = loaded.num_frames()
    experience, _ = next(iter(replay_buffer.as_dataset(8, num_steps=2)))
    out["loaded_batch_shape"] = list(experience.observation.shape)
    py_driver.PyDriver(env, policy, [observer], max_steps=10).run(env.reset())
    observer.flush()
    out["after_more"] = loaded.num_frames()
    loaded.clear()
    out["after_clear"] = loaded.num_frames()
    loaded.close()
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
