"""ReplayBufferManager: the Reverb-style workflow end to end, observers, checkpoints, errors."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import textwrap
import threading
import time
import types
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import replaydb.checkpoint as checkpoint_module
from replaydb.checkpoint import latest_checkpoint, list_checkpoints, write_checkpoint
from replaydb.errors import (
    CheckpointError,
    ClosedError,
    InvalidArgumentError,
    MissingDependencyError,
    SpecMismatchError,
)
from replaydb.manager import ReplayBufferManager, StepObserver
from replaydb.nest import Nest
from replaydb.rate_limiters import MinSize, SampleToInsertRatio
from replaydb.server import Client, Server
from replaydb.spec import Spec
from replaydb.table import Table

FIRST, MID, LAST = 0, 1, 2
Trajectory = collections.namedtuple(
    "Trajectory",
    ["step_type", "observation", "action", "policy_info", "next_step_type", "reward", "discount"],
)
CARTPOLE_SPEC = Trajectory(
    step_type=((), "int32"),
    observation=((4,), "float32"),
    action=((), "int64"),
    policy_info=(),
    next_step_type=((), "int32"),
    reward=((), "float32"),
    discount=((), "float32"),
)


# ---------------------------------------------------------------- helpers
def baseline_policy(obs: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Push the cart toward where the pole leans: a fixed rule, no learning."""
    return (obs[..., 2] + 0.5 * obs[..., 3] > 0).astype(np.int64)


class Collector:
    """Steps ``num_envs`` CartPole envs with the baseline policy into TF-Agents trajectories."""

    def __init__(self, num_envs: int, seed: int = 0) -> None:
        self.envs = [gym.make("CartPole-v1", max_episode_steps=60) for _ in range(num_envs)]
        self.obs = np.stack(
            [env.reset(seed=seed + i)[0] for i, env in enumerate(self.envs)]
        ).astype(np.float32)
        self.first = np.ones(num_envs, dtype=bool)
        self.items = 0  # windows of 2 completed so far
        self.steps = 0

    def step(self) -> Trajectory:
        action = baseline_policy(self.obs)
        n = len(self.envs)
        next_obs = np.empty_like(self.obs)
        reward = np.ones(n, dtype=np.float32)
        last = np.zeros(n, dtype=bool)
        terminated = np.zeros(n, dtype=bool)
        for i, env in enumerate(self.envs):
            o, _r, term, trunc, _ = env.step(int(action[i]))
            last[i], terminated[i] = term or trunc, term
            next_obs[i] = env.reset()[0] if last[i] else o
        traj = Trajectory(
            step_type=np.where(self.first, FIRST, MID).astype(np.int32),
            observation=self.obs.copy(),
            action=action,
            policy_info=(),
            next_step_type=np.where(last, LAST, MID).astype(np.int32),
            reward=reward,
            discount=np.where(terminated, 0.0, 1.0).astype(np.float32),
        )
        self.items += int((~self.first).sum())
        self.steps += n
        self.first = last
        self.obs = next_obs
        return traj


def unbatch(traj: Trajectory, i: int) -> Trajectory:
    return Trajectory(*(v if name == "policy_info" else v[i] for name, v in traj._asdict().items()))


def episode_steps(episode: int, length: int, obs_dim: int = 2) -> list[Trajectory]:
    """One episode whose observations encode (episode, t); ends with next_step_type LAST."""
    return [
        Trajectory(
            step_type=np.int32(FIRST if t == 0 else MID),
            observation=np.array([episode, t] + [0] * (obs_dim - 2), dtype=np.float32),
            action=np.int64(t),
            policy_info=(),
            next_step_type=np.int32(LAST if t == length - 1 else MID),
            reward=np.float32(1.0),
            discount=np.float32(0.0 if t == length - 1 else 1.0),
        )
        for t in range(length)
    ]


SMALL_SPEC = Trajectory(
    step_type=((), "int32"),
    observation=((2,), "float32"),
    action=((), "int64"),
    policy_info=(),
    next_step_type=((), "int32"),
    reward=((), "float32"),
    discount=((), "float32"),
)


def new_manager(tmp_path: Path, **kwargs: Any) -> ReplayBufferManager:
    kwargs.setdefault("capacity", 1000)
    return ReplayBufferManager(SMALL_SPEC, checkpoint_dir=tmp_path / "ckpt", **kwargs)


# ---------------------------------------------------------------- end to end
def test_end_to_end_trainer_workflow(tmp_path: Path) -> None:
    ckpt = tmp_path / "buffers"
    manager = ReplayBufferManager(CARTPOLE_SPEC, capacity=5000, checkpoint_dir=ckpt)
    replay_buffer, observer = manager.create_replay_buffer()
    collector = Collector(num_envs=4)
    for _ in range(150):  # populate with the baseline policy, a vector env of 4
        observer(collector.step())
    frames = manager.num_frames()
    assert frames == collector.items > 400
    path = replay_buffer.py_client.checkpoint()
    assert Path(path).parent == ckpt
    assert latest_checkpoint(ckpt) == Path(path)
    manager.close()

    # A new trainer process: a new manager loads the starter buffer.
    trainer = ReplayBufferManager(CARTPOLE_SPEC, capacity=5000, checkpoint_dir=ckpt)
    replay_buffer, observer = trainer.load_replay_buffer()
    assert trainer.num_frames() == frames
    dataset = replay_buffer.as_dataset(
        sample_batch_size=64, num_steps=2, num_parallel_calls=3
    ).prefetch(3)
    batch, info = next(iter(dataset))
    assert isinstance(batch, Trajectory)
    assert batch.observation.shape == (64, 2, 4)
    assert batch.action.shape == (64, 2)
    assert batch.policy_info == ()
    assert info.key.shape == info.probability.shape == info.priority.shape == (64, 2)
    assert (batch.step_type[:, 1] != FIRST).all()  # no window crosses an episode start
    assert (batch.next_step_type[:, 0] != LAST).all()

    # Training-style sampling while an actor thread keeps collecting.
    actor_errors: list[BaseException] = []
    actor = Collector(num_envs=1, seed=100)

    def collect() -> None:
        try:
            for _ in range(300):
                observer(unbatch(actor.step(), 0))
        except BaseException as exc:  # pragma: no cover - reported below
            actor_errors.append(exc)

    thread = threading.Thread(target=collect)
    thread.start()
    weights = torch.zeros(4, requires_grad=True)
    it = iter(dataset)
    for _ in range(20):
        batch, info = next(it)
        obs, next_obs = batch.observation[:, 0], batch.observation[:, 1]
        target = batch.reward[:, 0] + 0.99 * batch.discount[:, 0] * (next_obs @ weights).detach()
        loss = ((obs @ weights - target) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            weights -= 0.01 * weights.grad
            weights.grad = None
    thread.join(timeout=30)
    assert not actor_errors
    assert trainer.num_frames() == frames + actor.items
    assert int(info.table_size.min()) >= frames  # sampled from the restored table or more

    trainer.clear()
    assert trainer.num_frames() == 0
    assert latest_checkpoint(ckpt) == Path(path)  # clear() leaves the disk alone
    trainer.close()
    assert dataset.closed
    with pytest.raises(ClosedError):
        trainer.num_frames()


def test_get_dataset_shapes_and_errors(tmp_path: Path) -> None:
    with new_manager(tmp_path, sequence_length=4) as manager:
        _, observer = manager.create_replay_buffer()
        for step in episode_steps(0, 10):
            observer(step)
        batch, info = next(iter(manager.get_dataset(batch_size=8, num_steps=2)))
        assert batch.observation.shape == (8, 2, 2)
        assert info.key.shape == (8, 2)
        batch, _ = next(iter(manager.get_dataset(batch_size=8, prefetch=0)))
        assert batch.observation.shape == (8, 4, 2)
        with pytest.raises(ValueError, match=r"num_steps \(3\) must divide"):
            manager.get_dataset(batch_size=8, num_steps=3)


# ---------------------------------------------------------------- episodes
def test_windows_never_cross_episode_boundaries(tmp_path: Path) -> None:
    spec = SMALL_SPEC._replace(observation={"ep": ((), "float32"), "t": ((), "float32")})
    with ReplayBufferManager(spec, 1000, tmp_path / "c", sequence_length=3) as manager:
        replay_buffer, observer = manager.create_replay_buffer()
        lengths = [5, 1, 2, 3, 7]
        for ep, length in enumerate(lengths):
            for step in episode_steps(ep, length):
                d = step._asdict()
                d["observation"] = {"ep": step.observation[0], "t": step.observation[1]}
                observer(d if ep % 2 else Trajectory(**d))  # dict, or the compiled path
            # A TF-Agents boundary step (LAST -> FIRST) between episodes.
            observer(
                Trajectory(
                    np.int32(LAST),
                    {"ep": np.float32(-1), "t": np.float32(-1)},
                    np.int64(0),
                    (),
                    np.int32(FIRST),
                    np.float32(0),
                    np.float32(1),
                )
            )
        # Each episode of n steps plus its boundary step gives n + 1 - 2 windows of 3
        # (the terminal transition's window ends at the boundary, as in TF-Agents).
        assert manager.num_frames() == sum(max(0, n - 1) for n in lengths)
        batch, _ = next(iter(replay_buffer.as_dataset(200)))
        ep, t = batch.observation["ep"], batch.observation["t"]
        real = ep >= 0
        # Only the last step of a window may be a boundary step; the others share an episode.
        assert real[:, :2].all()
        assert (ep[:, :2] == ep[:, :1]).all()
        assert torch.equal(t[:, :2], t[:, :1] + torch.arange(2))
        assert ((ep[:, 2] == ep[:, 0]) & (t[:, 2] == t[:, 0] + 2) | ~real[:, 2]).all()
        assert (~real[:, 2]).any()


@pytest.mark.parametrize("write_batch", [1000, 1])
def test_first_step_cuts_an_open_episode(tmp_path: Path, write_batch: int) -> None:
    with new_manager(tmp_path, write_batch=write_batch) as manager:
        _, observer = manager.create_replay_buffer()
        interrupted = episode_steps(0, 4)[:3]  # never reaches LAST
        for step in interrupted + episode_steps(1, 4):
            observer(step)
        assert manager.num_frames() == 2 + 3
        batch, _ = next(iter(manager.get_dataset(100, prefetch=0)))
        obs = batch.observation
        assert (obs[:, 0, 0] == obs[:, 1, 0]).all()
        assert (obs[:, 1, 1] == obs[:, 0, 1] + 1).all()


def test_done_flags_end_gym_style_episodes(tmp_path: Path) -> None:
    spec = {
        "observation": ((1,), "float32"),
        "action": ((), "int64"),
        "reward": ((), "float32"),
        "terminated": ((), "bool"),
        "truncated": ((), "bool"),
    }
    with ReplayBufferManager(spec, 100, tmp_path / "c") as manager:
        _, observer = manager.create_replay_buffer()
        for t in range(9):  # episodes of 3: ends by termination, truncation, termination
            observer(
                {
                    "observation": [float(t)],
                    "action": t,
                    "reward": 1.0,
                    "terminated": t in (2, 8),
                    "truncated": t == 5,
                }
            )
        assert manager.num_frames() == 6
        batch, _ = next(iter(manager.get_dataset(50, prefetch=0)))
        assert isinstance(batch, dict)
        first = batch["observation"][:, 0, 0]
        assert not bool(torch.isin(first, torch.tensor([2.0, 5.0, 8.0])).any())


def test_explicit_done_argument(tmp_path: Path) -> None:
    with ReplayBufferManager({"x": ((), "float32")}, 100, tmp_path / "c") as manager:
        _, observer = manager.create_replay_buffer()
        for t in range(6):
            observer({"x": float(t)}, done=t == 2)
        observer({"x": np.array([10.0, 20.0])}, done=[True, 2])
        assert manager.num_frames() == 2 + 2 + 1
        for bad, match in ((["x"], "done must be a bool"), ([1, 1, 1], r"shape \(1,\)")):
            with pytest.raises(InvalidArgumentError, match=match):
                observer({"x": 1.0}, done=bad)
        with pytest.raises(InvalidArgumentError, match="end codes"):
            observer({"x": 1.0}, done=3)


def test_vector_env_batches_write_one_stream_per_env(tmp_path: Path) -> None:
    with new_manager(tmp_path, sequence_length=3, write_batch=16) as manager:
        _, observer = manager.create_replay_buffer()
        for t in range(20):
            observer(
                Trajectory(
                    step_type=np.full(3, FIRST if t == 0 else MID, np.int32),
                    observation=np.stack([np.array([env, t], np.float32) for env in range(3)]),
                    action=np.zeros(3, np.int64),
                    policy_info=(),
                    next_step_type=np.full(3, MID, np.int32),
                    reward=np.ones(3, np.float32),
                    discount=np.ones(3, np.float32),
                )
            )
        big = Trajectory(  # larger than the stage: written directly
            step_type=np.full(40, MID, np.int32),
            observation=np.stack([np.array([env, 20], np.float32) for env in range(40)]),
            action=np.zeros(40, np.int64),
            policy_info=(),
            next_step_type=np.full(40, LAST, np.int32),
            reward=np.ones(40, np.float32),
            discount=np.ones(40, np.float32),
        )
        observer(big)
        assert manager.num_frames() == 3 * 18 + 3  # envs 0-2 extend their episodes by one
        batch, _ = next(iter(manager.get_dataset(300, prefetch=0)))
        obs = batch.observation
        assert (obs[:, :, 0] == obs[:, :1, 0]).all()


def test_bfloat16_fields_are_written_without_staging(tmp_path: Path) -> None:
    with ReplayBufferManager({"x": ((2,), torch.bfloat16)}, 50, tmp_path / "c") as manager:
        _, observer = manager.create_replay_buffer()
        for t in range(5):
            observer({"x": torch.full((2,), float(t), dtype=torch.bfloat16)})
        assert observer.staged == 0
        assert manager.num_frames() == 4
        batch, _ = next(iter(manager.get_dataset(4, prefetch=0)))
        assert batch["x"].dtype == torch.bfloat16


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda d: d.pop("reward"), SpecMismatchError, "'reward' missing"),
        (
            lambda d: d.update(observation=np.zeros(3, np.float32)),
            SpecMismatchError,
            r"field 'observation': expected shape \(2,\)",
        ),
        (lambda d: d.update(action=1.5), SpecMismatchError, "field 'action': expected dtype int64"),
        (lambda d: d.update(action=np.array(1.5)), SpecMismatchError, "'action'"),
        (lambda d: d.update(bogus=1), SpecMismatchError, r"\['bogus'\] at the top level"),
        (lambda d: d.update(reward="high"), SpecMismatchError, "field 'reward'"),
        (
            lambda d: d.update(reward=[1.0, 2.0]),
            SpecMismatchError,
            "field 'reward' is a batch of 2 but field 'step_type' is one step",
        ),
        (lambda d: d.update(action=2**70), SpecMismatchError, "field 'action'"),
        (
            lambda d: d.update(observation=np.zeros((2, 2, 2), np.float32)),
            SpecMismatchError,
            "field 'observation'",
        ),
    ],
)
def test_bad_steps_are_rejected_with_the_field_named_and_nothing_written(
    tmp_path: Path, change: Any, error: type[Exception], match: str
) -> None:
    with new_manager(tmp_path) as manager:
        _, observer = manager.create_replay_buffer()
        steps = episode_steps(0, 3)
        observer(steps[0])
        observer(steps[1])
        bad = steps[2]._asdict()
        change(bad)
        with pytest.raises(error, match=match):
            observer(bad)
        assert observer.staged == 2
        assert manager.num_frames() == 1
        observer(steps[2])
        assert manager.num_frames() == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"capacity": 0}, "capacity must be an int >= 1"),
        ({"capacity": 1}, r"capacity \(1\) must be at least sequence_length \(2\)"),
        ({"sequence_length": 0}, "sequence_length must be an int >= 1"),
        ({"keep": 0}, "keep must be an int >= 1"),
        ({"write_batch": 0}, "write_batch must be an int >= 1"),
        ({"backend": "grpc"}, "backend must be 'local' or 'ray'"),
        ({"checkpoint_dir": 3}, "checkpoint_dir must be a path"),
        ({"data_spec": "obs"}, "data_spec must be a Spec or a nest"),
    ],
)
def test_bad_constructor_arguments(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {
        "data_spec": SMALL_SPEC,
        "capacity": 100,
        "checkpoint_dir": tmp_path / "c",
    }
    args.update(kwargs)
    with pytest.raises(InvalidArgumentError, match=match):
        ReplayBufferManager(**args)


def test_checkpoint_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(InvalidArgumentError, match="is a file"):
        ReplayBufferManager(SMALL_SPEC, 100, tmp_path / "f")


def test_calls_before_a_buffer_exists_and_twice(tmp_path: Path) -> None:
    manager = new_manager(tmp_path)
    for call in (manager.num_frames, manager.checkpoint, manager.clear, manager.observer):
        with pytest.raises(InvalidArgumentError, match="create_replay_buffer"):
            call()
    with pytest.raises(InvalidArgumentError, match="create_replay_buffer"):
        manager.get_dataset(4)
    manager.create_replay_buffer()
    with pytest.raises(InvalidArgumentError, match="already has a replay buffer"):
        manager.create_replay_buffer()
    with pytest.raises(InvalidArgumentError, match="already has a replay buffer"):
        manager.load_replay_buffer()
    with pytest.raises(InvalidArgumentError, match="write_batch must be an int >= 1"):
        manager.observer(write_batch=0)
    manager.close()
    with pytest.raises(InvalidArgumentError, match="needs a data_spec"):
        ReplayBufferManager(None, 100, tmp_path / "x").create_replay_buffer()


def test_everything_raises_after_close(tmp_path: Path) -> None:
    with new_manager(tmp_path) as manager:
        replay_buffer, observer = manager.create_replay_buffer()
        observer(episode_steps(0, 1)[0])
        dataset = replay_buffer.as_dataset(2)
    assert observer.staged == 0  # close() flushed it
    assert dataset.closed
    for call in (
        manager.num_frames,
        manager.checkpoint,
        manager.clear,
        manager.create_replay_buffer,
        manager.load_replay_buffer,
        manager.observer,
        lambda: manager.get_dataset(2),
        lambda: observer(episode_steps(0, 1)[0]),
        observer.flush,
        replay_buffer.num_frames,
        lambda: replay_buffer.as_dataset(2),
        lambda: next(dataset),
    ):
        with pytest.raises(ClosedError, match="closed"):
            call()
    manager.close()  # idempotent


# ---------------------------------------------------------------- checkpoints
def fill(manager: ReplayBufferManager, episodes: int = 3, length: int = 5) -> None:
    _, observer = manager.create_replay_buffer()
    for ep in range(episodes):
        for step in episode_steps(ep, length):
            observer(step)


def test_create_refuses_an_existing_checkpoint_unless_overwrite(tmp_path: Path) -> None:
    with new_manager(tmp_path) as manager:
        fill(manager)
        old = Path(manager.checkpoint())
    with pytest.raises(CheckpointError, match=r"already holds the checkpoint.*overwrite=True"):
        new_manager(tmp_path).create_replay_buffer()
    with new_manager(tmp_path) as manager:
        manager.create_replay_buffer(overwrite=True)
        assert not old.exists()
        assert len(list_checkpoints(tmp_path / "ckpt")) == 1
    with new_manager(tmp_path) as manager:
        manager.load_replay_buffer()
        assert manager.num_frames() == 0


def test_load_without_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"no complete replaydb checkpoint.*missing_ok=True"):
        new_manager(tmp_path).load_replay_buffer()
    with new_manager(tmp_path) as manager:
        _, observer = manager.load_replay_buffer(missing_ok=True)
        assert manager.num_frames() == 0
        assert isinstance(observer, StepObserver)
    with pytest.raises(InvalidArgumentError, match="needs a data_spec"):
        ReplayBufferManager(None, 100, tmp_path / "empty").load_replay_buffer(missing_ok=True)


def test_load_with_a_different_spec_names_the_fields(tmp_path: Path) -> None:
    with new_manager(tmp_path) as manager:
        fill(manager)
        manager.checkpoint()
    other = SMALL_SPEC._replace(observation=((3,), "float32"), reward=((), "float64"))
    with pytest.raises(SpecMismatchError, match=r"field 'observation'.*field 'reward'"):
        ReplayBufferManager(other, 1000, tmp_path / "ckpt").load_replay_buffer()
    with pytest.raises(InvalidArgumentError, match=r"pass capacity=1000"):
        ReplayBufferManager(SMALL_SPEC, 999, tmp_path / "ckpt").load_replay_buffer()
    with pytest.raises(InvalidArgumentError, match=r"pass sequence_length=2"):
        ReplayBufferManager(SMALL_SPEC, 1000, tmp_path / "ckpt", 3).load_replay_buffer()


def test_load_with_no_data_spec_rebuilds_the_nest(tmp_path: Path) -> None:
    with new_manager(tmp_path) as manager:
        fill(manager)
        manager.checkpoint()
    with ReplayBufferManager(None, 1000, tmp_path / "ckpt") as manager:
        replay_buffer, _ = manager.load_replay_buffer()
        assert isinstance(replay_buffer.data_spec, Nest)
        batch, _ = next(iter(replay_buffer.as_dataset(4)))
        stored_spec = replay_buffer.data_spec
        assert type(batch).__name__ == "Trajectory"
        assert batch.policy_info == ()
        assert batch.observation.shape == (4, 2, 2)
    with ReplayBufferManager(stored_spec, 1000, tmp_path / "ckpt") as manager:
        manager.load_replay_buffer()  # a stored Nest is a valid data_spec
        assert manager.num_frames() == 12


def test_loads_the_populate_command_layout(tmp_path: Path) -> None:
    """A flat table named replay_buffer written by write_checkpoint, as `replaydb populate` does."""
    spec = Spec(
        {
            "observation": ((4,), "float32"),
            "action": ((), "int64"),
            "reward": ((), "float32"),
            "terminated": ((), "bool"),
            "truncated": ((), "bool"),
        }
    )
    table = Table(spec, 500, sequence_length=2, name="replay_buffer")
    n = 40
    ends = torch.zeros(n, dtype=torch.int64)
    ends[9::10] = 1
    table.extend(
        {
            "observation": torch.randn(n, 4),
            "action": torch.zeros(n, dtype=torch.int64),
            "reward": torch.ones(n),
            "terminated": ends.bool(),
            "truncated": torch.zeros(n, dtype=torch.bool),
        },
        streams=torch.arange(n) % 2,
        ends=ends,
    )
    write_checkpoint(tmp_path / "starter", {"replay_buffer": table}, keep=1, extra={"env": "x"})
    with ReplayBufferManager(None, 500, tmp_path / "starter", sequence_length=2) as manager:
        replay_buffer, observer = manager.load_replay_buffer()
        assert manager.num_frames() == len(table)
        batch, _ = next(iter(replay_buffer.as_dataset(8, num_steps=2)))
        assert set(batch) == set(spec)
        assert batch["observation"].shape == (8, 2, 4)
        # New steps go to fresh streams: they never extend the stored episodes.
        before = manager.num_frames()
        observer(
            {
                "observation": np.zeros(4, np.float32),
                "action": 0,
                "reward": 0.0,
                "terminated": False,
                "truncated": False,
            }
        )
        assert manager.num_frames() == before


def test_restores_priorities_sampler_and_limiter_counts(tmp_path: Path) -> None:
    with new_manager(tmp_path, rate_limiter=MinSize(5)) as manager:
        replay_buffer, observer = manager.create_replay_buffer()
        for ep in range(4):
            for step in episode_steps(ep, 6):
                observer(step)
        client = replay_buffer.py_client
        sample = client.sample(10)
        keys = torch.unique(sample.keys)
        new = torch.arange(2, 2 + keys.numel(), dtype=torch.float64)
        assert client.update_priorities(keys, new) == keys.numel()
        info = client.info()
        manager.checkpoint()
    expected = dict(zip(keys.tolist(), new.tolist(), strict=True))
    draws = []
    for _ in range(2):
        with new_manager(tmp_path) as manager:
            replay_buffer, _ = manager.load_replay_buffer()
            restored = replay_buffer.py_client.info()
            assert (restored.inserts, restored.samples, restored.size) == (
                info.inserts,
                info.samples,
                info.size,
            )
            assert restored.rate_limiter == {"type": "MinSize", "min_size": 5}
            s = replay_buffer.py_client.sample(50, timeout=1)  # sampleable at once
            draws.append(s.keys)
            for key, pri in zip(s.keys.tolist(), s.priorities.tolist(), strict=True):
                assert pri == expected.get(key, 1.0)
    assert torch.equal(draws[0], draws[1])  # the sampler's RNG state was restored


def test_crash_while_writing_leaves_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with new_manager(tmp_path) as manager:
        fill(manager, episodes=2)
        good = Path(manager.checkpoint())
        frames = manager.num_frames()
        observer = manager.observer()
        for step in episode_steps(9, 5):
            observer(step)

        real = checkpoint_module.save_table

        def crash(table: Any, path: Any, extra: Any = None) -> Any:
            real(table, path, extra)
            raise OSError("disk full (simulated)")

        monkeypatch.setattr(checkpoint_module, "save_table", crash)
        with pytest.raises(OSError, match="simulated"):
            manager.checkpoint()
        monkeypatch.undo()
    assert latest_checkpoint(tmp_path / "ckpt") == good
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == [good.name]
    with new_manager(tmp_path) as manager:
        manager.load_replay_buffer()
        assert manager.num_frames() == frames


@pytest.mark.slow
def test_killed_process_mid_checkpoint_leaves_a_loadable_one(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import collections, sys, numpy as np
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_manager import SMALL_SPEC, episode_steps
        from replaydb.manager import ReplayBufferManager
        m = ReplayBufferManager(SMALL_SPEC, 200_000, {str(tmp_path / "ckpt")!r}, keep=2)
        rb, obs = m.create_replay_buffer()
        for ep in range(100):
            for s in episode_steps(ep, 100):
                obs(s)
        m.checkpoint()
        print("ready", flush=True)
        while True:
            obs(episode_steps(0, 2)[0])
            m.checkpoint()
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    with ReplayBufferManager(SMALL_SPEC, 200_000, tmp_path / "ckpt") as manager:
        manager.load_replay_buffer()
        assert manager.num_frames() >= 100 * 99


def test_pruning_deletes_only_replaydb_checkpoints(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    root.mkdir()
    (root / "notes.txt").write_text("mine")
    (root / "my-data").mkdir()
    (root / "ckpt-123").mkdir()  # not a name replaydb writes
    incomplete = root / f"ckpt-{1:020d}"
    incomplete.mkdir()  # no COMPLETE marker: never deleted, never loaded
    with new_manager(tmp_path, keep=2) as manager:
        fill(manager)
        paths = [Path(manager.checkpoint()) for _ in range(4)]
    names = sorted(p.name for p in root.iterdir())
    assert names == sorted(
        ["notes.txt", "my-data", "ckpt-123", incomplete.name, paths[2].name, paths[3].name]
    )
    assert (root / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------- clients and threads
def test_py_client_flushes_observers_first(tmp_path: Path) -> None:
    with new_manager(tmp_path) as manager:
        replay_buffer, observer = manager.create_replay_buffer()
        client = replay_buffer.py_client
        for step in episode_steps(0, 4):
            observer(step)
        assert observer.staged == 4
        assert client.info().size == 3
        assert observer.staged == 0
        assert client.tables() == ["replay_buffer"]
        observer(episode_steps(1, 2)[0])
        client.extend(
            {
                "step_type": [0, 1],
                "observation": np.zeros((2, 2), np.float32),
                "action": [0, 1],
                "next_step_type": [1, 2],
                "reward": [0.0, 0.0],
                "discount": [1.0, 0.0],
            },
            streams=99,
        )
        assert observer.staged == 0
        client.insert(
            {
                "step_type": 0,
                "observation": [0.0, 0.0],
                "action": 0,
                "next_step_type": 1,
                "reward": 0.0,
                "discount": 1.0,
            },
            stream=98,
        )
        assert client.sample(2).keys.shape == (2,)
        assert client.update_priorities(torch.tensor([0]), torch.tensor([2.0])) == 1
        observer(episode_steps(1, 2)[1])
        client.reset()
        assert observer.staged == 0
        assert manager.num_frames() == 0
        assert "py_client" in repr(client)


def test_many_observer_threads_and_samplers_lose_nothing(tmp_path: Path) -> None:
    """8 actor threads (one observer each), 2 dataset threads: every step exactly once."""
    writers, per_writer = 8, 250
    spec = {
        "writer": ((), "int64"),
        "seq": ((), "int64"),
        "payload": ((4,), "float32"),
        "checksum": ((), "float64"),
    }

    def payload(w: Any, s: Any) -> Any:
        return np.asarray(w * 1000.0 + s, dtype=np.float32)[..., None] + np.arange(
            4, dtype=np.float32
        )

    with ReplayBufferManager(spec, writers * per_writer, tmp_path / "c", write_batch=7) as manager:
        replay_buffer, _ = manager.create_replay_buffer()
        observers = [manager.observer(write_batch=1 + 5 * w) for w in range(writers)]
        errors: list[BaseException] = []
        stop = threading.Event()
        batches = [0]

        def write(w: int) -> None:
            try:
                for s in range(per_writer):
                    p = payload(w, s)
                    observers[w]({"writer": w, "seq": s, "payload": p, "checksum": float(p.sum())})
                observers[w].flush()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        def sample(ds: Any) -> None:
            try:
                for batch, _ in ds:
                    if stop.is_set():
                        return
                    w, s, p = batch["writer"], batch["seq"], batch["payload"]
                    assert (w[:, 0] == w[:, 1]).all()
                    assert (s[:, 1] == s[:, 0] + 1).all()
                    assert np.allclose(p.numpy(), payload(w.numpy(), s.numpy()))
                    assert torch.allclose(p.double().sum(-1), batch["checksum"])
                    batches[0] += 1
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        datasets = [replay_buffer.as_dataset(16, timeout=20).prefetch(2) for _ in range(2)]
        threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
        samplers = [threading.Thread(target=sample, args=(ds,)) for ds in datasets]
        for t in threads + samplers:
            t.start()
        for t in threads:
            t.join(timeout=60)
        stop.set()
        for t in samplers:
            t.join(timeout=60)
        assert not errors, errors
        assert batches[0] > 0
        assert manager.num_frames() == writers * (per_writer - 1)
        table = manager._server.table() if manager._server is not None else None
        assert table is not None
        data = table.storage.gather(torch.arange(table.num_steps))
        pairs = sorted(zip(data["writer"].tolist(), data["seq"].tolist(), strict=True))
        assert pairs == [(w, s) for w in range(writers) for s in range(per_writer)]
        assert torch.allclose(data["payload"].double().sum(-1), data["checksum"])


# ---------------------------------------------------------------- ray backend
def test_ray_backend_passes_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    class FakeRayServer:
        def __init__(self, tables: Any, **kwargs: Any) -> None:
            seen.update(kwargs)
            self.local = Server(tables, checkpoint_dir=kwargs["checkpoint_dir"])

        def client(self) -> Client:
            return self.local.client()

        def tables(self) -> list[str]:
            return self.local.tables()

        def checkpoint(self) -> str:
            return self.local.checkpoint()

        def close(self) -> None:
            self.local.close()

    module = types.ModuleType("replaydb.ray")
    module.RayServer = FakeRayServer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ray", types.ModuleType("ray"))
    monkeypatch.setitem(sys.modules, "replaydb.ray", module)
    with new_manager(tmp_path, backend="ray", num_shards=2) as manager:
        _, observer = manager.create_replay_buffer()
        for step in episode_steps(0, 3):
            observer(step)
        assert manager.num_frames() == 2
    assert seen["num_shards"] == 2
    assert seen["keep"] == 1


def test_ray_backend_without_ray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    manager = new_manager(tmp_path, backend="ray")
    with pytest.raises(MissingDependencyError, match=r"replaydb\[ray\]"):
        manager.create_replay_buffer()


# ---------------------------------------------------------------- property test
_EPISODE = st.tuples(
    st.integers(1, 6),  # length
    st.sampled_from(["last", "interrupted", "last+boundary"]),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    episodes=st.lists(st.lists(_EPISODE, min_size=1, max_size=4), min_size=1, max_size=3),
    sequence_length=st.integers(1, 3),
    write_batches=st.lists(st.integers(1, 6), min_size=3, max_size=3),
    order_seed=st.integers(0, 2**16),
    flush_every=st.integers(0, 7),
)
def test_observer_windows_match_a_reference_model(
    tmp_path_factory: pytest.TempPathFactory,
    episodes: list[list[tuple[int, str]]],
    sequence_length: int,
    write_batches: list[int],
    order_seed: int,
    flush_every: int,
) -> None:
    """Interleaved observers write exactly the windows a plain-Python model predicts."""
    spec = SMALL_SPEC._replace(observation=((3,), "float32"))
    # Per env: the steps to write, and the reference windows as tuples of (env, ep, t).
    plans: list[list[Trajectory]] = []
    expected: list[tuple[tuple[float, ...], ...]] = []
    for env, eps in enumerate(episodes):
        steps: list[Trajectory] = []
        for ep, (length, ending) in enumerate(eps):
            ids = [(float(env), float(ep), float(t)) for t in range(length)]
            for t in range(length):
                last = t == length - 1 and ending != "interrupted"
                steps.append(
                    Trajectory(
                        np.int32(FIRST if t == 0 else MID),
                        np.array(ids[t], np.float32),
                        np.int64(0),
                        (),
                        np.int32(LAST if last else MID),
                        np.float32(0),
                        np.float32(0 if last else 1),
                    )
                )
            if ending == "last+boundary":
                # The boundary step belongs to its episode (ReverbAddTrajectoryObserver's
                # rule): the terminal transition's window ends at it.
                bid = (float(env), float(ep) + 0.5, 0.0)
                ids.append(bid)
                steps.append(
                    Trajectory(
                        np.int32(LAST),
                        np.array(bid, np.float32),
                        np.int64(0),
                        (),
                        np.int32(FIRST),
                        np.float32(0),
                        np.float32(1),
                    )
                )
            expected += [
                tuple(ids[i : i + sequence_length]) for i in range(len(ids) - sequence_length + 1)
            ]
        plans.append(steps)
    root = tmp_path_factory.mktemp("prop")
    with ReplayBufferManager(spec, 500, root / "c", sequence_length=sequence_length) as manager:
        manager.create_replay_buffer()
        observers = [manager.observer(write_batch=write_batches[i]) for i in range(len(plans))]
        rng = np.random.default_rng(order_seed)
        cursors = [0] * len(plans)
        calls = 0
        while any(c < len(p) for c, p in zip(cursors, plans, strict=True)):
            env = int(rng.choice([i for i, p in enumerate(plans) if cursors[i] < len(p)]))
            observers[env](plans[env][cursors[env]])
            cursors[env] += 1
            calls += 1
            if flush_every and calls % flush_every == 0:
                observers[int(rng.integers(len(observers)))].flush()
        assert manager.num_frames() == len(expected)
        table = manager._server.table() if manager._server is not None else None
        assert table is not None
        obs = table.items()["observation"].reshape(-1, sequence_length, 3)
        got = sorted(tuple(tuple(float(x) for x in step) for step in w) for w in obs.tolist())
        assert got == sorted(expected)


def test_restored_sample_to_insert_ratio_keeps_its_balance(tmp_path: Path) -> None:
    limiter = SampleToInsertRatio(samples_per_insert=2.0, min_size_to_sample=10, error_buffer=100.0)
    with new_manager(tmp_path, rate_limiter=limiter) as manager:
        replay_buffer, observer = manager.create_replay_buffer()
        for ep in range(5):
            for step in episode_steps(ep, 11):
                observer(step)
        replay_buffer.py_client.sample(30, timeout=1)
        before = replay_buffer.py_client.info()
        manager.checkpoint()
    with new_manager(tmp_path) as manager:
        replay_buffer, _ = manager.load_replay_buffer()
        after = replay_buffer.py_client.info()
        assert (after.inserts, after.samples) == (before.inserts, before.samples)
        assert after.rate_limiter == limiter.config()
        # As sampleable as before the checkpoint: no reset counters that block for ever.
        batch, _ = next(iter(replay_buffer.as_dataset(16, timeout=1)))
        assert batch.observation.shape == (16, 2, 2)


def test_nested_steps_errors_name_the_dotted_field(tmp_path: Path) -> None:
    spec = SMALL_SPEC._replace(observation={"ep": ((), "float32"), "t": ((2,), "float32")})
    with ReplayBufferManager(spec, 100, tmp_path / "c") as manager:
        _, observer = manager.create_replay_buffer()
        good = Trajectory(
            np.int32(0), {"ep": 1.0, "t": np.zeros(2, np.float32)}, 0, (), np.int32(1), 0.0, 1.0
        )
        observer(good)
        with pytest.raises(SpecMismatchError, match=r"'observation\.t' missing"):
            observer(good._replace(observation={"ep": 1.0}))
        with pytest.raises(SpecMismatchError, match=r"field 'observation\.t': expected shape"):
            observer(good._replace(observation={"ep": 1.0, "t": np.zeros(3, np.float32)}))
        with pytest.raises(SpecMismatchError, match=r"\['x'\] under 'observation'"):
            observer(good._replace(observation={"ep": 1.0, "t": np.zeros(2), "x": 1}))
        assert observer.staged == 1


def test_staged_values_are_copies_and_zero_d_arrays_work(tmp_path: Path) -> None:
    """TF-Agents py envs hand out 0-d arrays; envs may reuse their arrays in place."""
    with new_manager(tmp_path) as manager:
        _, observer = manager.create_replay_buffer()
        obs = np.zeros(2, np.float32)
        step_type = np.asarray(FIRST, dtype=np.int32)
        for t in range(4):
            obs[:] = t  # the same arrays, changed in place every step
            step_type[()] = FIRST if t == 0 else MID
            observer(
                Trajectory(step_type, obs, t, (), np.asarray(MID, np.int32), 1.0, np.float32(1))
            )
        assert manager.num_frames() == 3
        table = manager._server.table() if manager._server is not None else None
        assert table is not None
        data = table.storage.gather(torch.arange(4))
        assert data["observation"][:, 0].tolist() == [0.0, 1.0, 2.0, 3.0]
        assert data["step_type"].tolist() == [FIRST, MID, MID, MID]
        assert data["action"].tolist() == [0, 1, 2, 3]
        with pytest.raises(SpecMismatchError, match="field 'action'"):
            observer(Trajectory(np.int32(1), obs, 2**70, (), 1, 1.0, 1.0))
        with pytest.raises(SpecMismatchError, match="field 'next_step_type'"):
            observer(Trajectory(np.int32(1), obs, 1, (), 2**40, 1.0, 1.0))
        assert observer.staged == 0
        assert manager.num_frames() == 3


def test_step_observer_on_a_plain_server_client() -> None:
    import itertools

    nest = Nest({"x": ((2,), "float32"), "done": ((), "bool")})
    table = Table(nest.spec, 100, sequence_length=2, name="t")
    client = Server(table).client()
    observer = StepObserver(
        client, nest, new_stream=itertools.count().__next__, write_batch=3, table="t"
    )
    for t in range(7):
        observer({"x": np.full(2, t, np.float32), "done": t == 3})
    assert observer.staged == 1  # two full stages of 3 went out
    observer.flush()
    assert table.info().size == 3 + 2
    assert "StepObserver" in repr(observer)
    with pytest.raises(InvalidArgumentError, match="write_batch must be an int >= 1"):
        StepObserver(client, nest, new_stream=lambda: 0, write_batch=0)


# ------------------------------------------------ terminal transitions (issue 13)
def _boundary(obs: float) -> Trajectory:
    return Trajectory(
        np.int32(LAST),
        np.array([obs, obs], np.float32),
        np.int64(0),
        (),
        np.int32(FIRST),
        np.float32(0),
        np.float32(1),
    )


@pytest.mark.parametrize("discount", [0.0, 1.0])
def test_terminal_transition_window_is_stored(tmp_path: Path, discount: float) -> None:
    # FIRST, MID, MID(next_step_type=LAST), boundary: ReverbAddTrajectoryObserver
    # stores (0, 1), (1, 2) and (2, 3); the episode's end code follows the discount.
    steps = episode_steps(0, 3)
    steps[-1] = steps[-1]._replace(discount=np.float32(discount))
    with new_manager(tmp_path, sequence_length=2) as manager:
        _, observer = manager.create_replay_buffer()
        for step in [*steps, _boundary(9.0)]:
            observer(step)
        assert manager.num_frames() == 3
        table = manager._server.table() if manager._server is not None else None
        assert table is not None
        items = table.items()
        t = items["observation"][:, :, 1]
        assert t.tolist() == [[0.0, 1.0], [1.0, 2.0], [2.0, 9.0]]
        assert items["next_step_type"][2].tolist() == [LAST, FIRST]
        assert items.ends is not None
        assert items.ends[2].tolist() == [0, 1 if discount == 0 else 2]


def test_terminal_transition_window_from_a_vector_env(tmp_path: Path) -> None:
    def batch(steps: list[Trajectory]) -> Trajectory:
        return Trajectory(
            *[np.stack([np.asarray(v) for v in vals]) for vals in zip(*steps, strict=True)]
        )

    with new_manager(tmp_path, sequence_length=2) as manager:
        _, observer = manager.create_replay_buffer()
        a, b = episode_steps(0, 3), episode_steps(1, 3)
        for sa, sb in zip([*a, _boundary(9.0)], [*b, _boundary(8.0)], strict=True):
            policy_info = ()
            fields = batch([sa._replace(policy_info=0), sb._replace(policy_info=0)])
            observer(fields._replace(policy_info=policy_info))
        assert manager.num_frames() == 6


def test_first_step_after_last_ends_the_episode_without_boundary(tmp_path: Path) -> None:
    with new_manager(tmp_path, sequence_length=2) as manager:
        _, observer = manager.create_replay_buffer()
        for step in episode_steps(0, 3) + episode_steps(1, 3):
            observer(step)
        assert manager.num_frames() == 4  # no window crosses the FIRST step


def test_populate_output_loads_with_a_trajectory_spec(tmp_path: Path) -> None:
    from replaydb.collect import populate

    populate(
        "CartPole-v1",
        out=tmp_path,
        buffer_name="starter",
        capacity=300,
        steps_per_run=60,
        num_runs=1,
        num_envs=2,
        seed=0,
    )
    manager = ReplayBufferManager(CARTPOLE_SPEC, 300, tmp_path / "starter", sequence_length=2)
    with manager:
        replay_buffer, _ = manager.load_replay_buffer()
        assert manager.num_frames() > 0
        batch, _ = next(iter(replay_buffer.as_dataset(256, num_steps=2)))
        last = batch.next_step_type[:, 0] == LAST
        assert last.any()
        # A transition into LAST is followed by the boundary step (step_type LAST).
        assert (batch.step_type[:, 1][last] == LAST).all()
        assert (batch.next_step_type[:, 1][last] == FIRST).all()
        # Discount is 0 only on terminated transitions (CartPole never truncates in 60 steps).
        assert ((batch.discount[:, 0] == 0) == last).all()
        assert (batch.discount[:, 1][last] == 1).all()


def test_update_priorities_takes_reverbs_signature(tmp_path: Path) -> None:
    with new_manager(tmp_path) as manager:
        replay_buffer, observer = manager.create_replay_buffer()
        for step in [*episode_steps(0, 4), _boundary(9.0)]:
            observer(step)
        observer.flush()
        client = replay_buffer.py_client
        key = int(client.sample(1).keys[0])
        assert client.update_priorities("replay_buffer", {key: 2.5}) == 1
        assert client.update_priorities({key: 3.0}) == 1
        assert client.update_priorities([key], [4.0]) == 1
        with pytest.raises(InvalidArgumentError, match="no table 'other'"):
            client.update_priorities("other", {key: 1.0})
        with pytest.raises(InvalidArgumentError, match="key: priority"):
            client.update_priorities("replay_buffer", [1.0])
        with pytest.raises(InvalidArgumentError, match="needs priorities"):
            client.update_priorities([key])


def test_meta_device_tensors_raise_a_replaydb_error(tmp_path: Path) -> None:
    with new_manager(tmp_path) as manager:
        _, observer = manager.create_replay_buffer()
        step = episode_steps(0, 1)[0]._replace(observation=torch.zeros(2, device="meta"))
        with pytest.raises(InvalidArgumentError, match="meta device"):
            observer(step)
        assert observer.staged == 0


def test_observer_public_lifecycle(tmp_path: Path) -> None:
    with new_manager(tmp_path) as manager:
        _, observer = manager.create_replay_buffer()
        observer(episode_steps(0, 2)[0])
        observer.try_flush()
        assert observer.staged == 0
        observer(episode_steps(0, 2)[1])
        observer.discard()
        assert observer.staged == 0
        observer.close()
        assert observer.closed
        with pytest.raises(ClosedError):
            observer(episode_steps(0, 2)[0])
