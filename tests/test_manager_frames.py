"""ReplayBufferManager with frame stacking: stacked samples, checkpoints, load checks."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest

from replaydb.errors import InvalidArgumentError
from replaydb.manager import ReplayBufferManager

Step = collections.namedtuple(
    "Step", ["step_type", "observation", "action", "next_step_type", "reward", "discount"]
)
SPEC = Step(
    step_type=((), "int32"),
    observation=((3, 3), "uint8"),
    action=((), "int64"),
    next_step_type=((), "int32"),
    reward=((), "float32"),
    discount=((), "float32"),
)
FIRST, MID, LAST = 0, 1, 2


def episode(ep: int, length: int) -> list[Step]:
    """Frames whose pixels all equal ``10 * ep + t``, so a stack names its frames."""
    return [
        Step(
            step_type=np.int32(FIRST if t == 0 else MID),
            observation=np.full((3, 3), 10 * ep + t, np.uint8),
            action=np.int64(t),
            next_step_type=np.int32(LAST if t == length - 1 else MID),
            reward=np.float32(1.0),
            discount=np.float32(0.0 if t == length - 1 else 1.0),
        )
        for t in range(length)
    ]


def fill(manager: ReplayBufferManager) -> None:
    observer = manager.observer()
    for ep in range(3):
        for step in episode(ep, 6):
            observer(step)
    observer.flush()


def check_stacks(obs: np.ndarray) -> None:
    # obs: [B, T, k, 3, 3]; frames of one stack are consecutive steps of one episode,
    # first-frame padded at the episode's start.
    frames = obs[..., 0, 0].astype(np.int64)  # [B, T, k]
    ep = frames // 10
    assert (ep == ep[..., :1]).all(), "a stack crossed an episode"
    steps = np.diff(frames, axis=-1)
    assert np.isin(steps, (0, 1)).all()
    # A stack repeats a frame only at the episode's start (first-frame padding).
    padded = (steps == 0).any(axis=-1)
    assert (frames[..., 0][padded] % 10 == 0).all()


def test_samples_are_stacked_and_survive_a_checkpoint(tmp_path: Path) -> None:
    manager = ReplayBufferManager(SPEC, 100, tmp_path, 2, frame_stack={"observation": 4})
    manager.create_replay_buffer()
    fill(manager)
    batch, _info = next(iter(manager.get_dataset(16)))
    obs = batch.observation.numpy()
    assert obs.shape == (16, 2, 4, 3, 3)
    assert tuple(batch.reward.shape) == (16, 2)
    check_stacks(obs)
    manager.checkpoint()
    manager.close()

    again = ReplayBufferManager(SPEC, 100, tmp_path, 2, frame_stack={"observation": 4})
    again.load_replay_buffer()
    batch, _ = next(iter(again.get_dataset(8)))
    assert tuple(batch.observation.shape) == (8, 2, 4, 3, 3)
    check_stacks(batch.observation.numpy())
    again.close()

    taken = ReplayBufferManager(SPEC, 100, tmp_path, 2)  # frame_stack=None: the checkpoint's
    taken.load_replay_buffer()
    batch, _ = next(iter(taken.get_dataset(4)))
    assert tuple(batch.observation.shape) == (4, 2, 4, 3, 3)
    taken.close()


def test_loading_with_another_frame_stack_names_both(tmp_path: Path) -> None:
    manager = ReplayBufferManager(SPEC, 100, tmp_path, 2, frame_stack={"observation": 4})
    manager.create_replay_buffer()
    fill(manager)
    manager.checkpoint()
    manager.close()
    other = ReplayBufferManager(SPEC, 100, tmp_path, 2, frame_stack={"observation": (2, "zeros")})
    with pytest.raises(InvalidArgumentError, match=r"frame_stack .*differs from the checkpoint"):
        other.load_replay_buffer()
    other.close()


def test_bad_frame_stack_arguments(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="frame_stack must be a mapping"):
        ReplayBufferManager(SPEC, 100, tmp_path, 2, frame_stack=4)  # type: ignore[arg-type]
    manager = ReplayBufferManager(SPEC, 100, tmp_path, 2, frame_stack={"pixels": 4})
    with pytest.raises(InvalidArgumentError, match="pixels"):
        manager.create_replay_buffer()
    manager.close()
