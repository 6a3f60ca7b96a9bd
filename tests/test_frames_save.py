"""Saving and loading a frame-stacked Velora buffer (``ReplayBuffer(..., frame_stack=k)``).

Velora's two files keep no episode boundaries, so the save also writes the table
file, whose storage state holds the episode links; the loaded buffer samples the
same stacks as the saved one, for every stored step.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from replaydb import ReplayBuffer
from replaydb.errors import CheckpointError

SHAPE = (6, 5)


def frame(value: int) -> torch.Tensor:
    return torch.full(SHAPE, value, dtype=torch.uint8)


def filled(capacity: int, steps: int, k: int = 3, **kwargs: object) -> ReplayBuffer:
    make = ReplayBuffer.prioritized if kwargs.pop("prioritized", False) else ReplayBuffer
    buf = make(capacity, SHAPE, 2, 1, state_dtype=torch.uint8, frame_stack=k, **kwargs)  # type: ignore[arg-type]
    for i in range(steps):  # episodes of 4 steps; wraps when steps > capacity
        buf.add(frame(i), [i, -i], float(i), frame(i + 1), i % 4 == 3, [float(i)])
    return buf


def every_stack(buf: ReplayBuffer) -> dict[float, tuple[list[int], list[int]]]:
    """reward -> (first pixel of each stacked state, of each stacked next state)."""
    out: dict[float, tuple[list[int], list[int]]] = {}
    for _ in range(40):  # uniform draws with replacement: cover every stored step
        b = buf.sample(len(buf))
        for s, n, r in zip(b.states, b.next_states, b.rewards[:, 0].tolist(), strict=True):
            out[r] = (s[:, 0, 0].tolist(), n[:, 0, 0].tolist())
    return out


def load(d: Path) -> ReplayBuffer:
    meta = json.loads((d / "buffer_metadata.json").read_text())
    return ReplayBuffer.load(d / "buffer_state.safetensors", meta)


@pytest.mark.parametrize("steps", [0, 5, 11, 30])
def test_frame_stacked_buffer_round_trips(tmp_path: Path, steps: int) -> None:
    buf = filled(8, steps)
    buf.save(tmp_path)
    meta = json.loads((tmp_path / "buffer_metadata.json").read_text())
    assert meta["frame_stack"] == 3 and meta["table"] is not None
    back = load(tmp_path)
    assert back.frame_stack == 3 and len(back) == len(buf) and back.position == buf.position
    want, got = buf.state_dict(), back.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)
    if steps:
        stacks = every_stack(buf)
        assert len(stacks) == len(buf)
        assert every_stack(back) == stacks
        # The stacks follow episodes (4 steps each): step 4 starts one.
        if 5 <= steps <= 8:
            assert stacks[2.0] == ([0, 1, 2], [1, 2, 3])
            assert stacks[4.0] == ([4, 4, 4], [5, 5, 5])


def test_prioritized_frame_stacked_buffer_round_trips(tmp_path: Path) -> None:
    buf = filled(8, 13, k=2, prioritized=True, seed=3)
    s = buf.sample(4)
    assert s.keys is not None
    buf.update_priorities(s.keys, torch.arange(1.0, 5.0))
    buf.save(tmp_path)
    back = load(tmp_path)
    a, b = buf.sample(6), back.sample(6)  # same generator state, priorities and links
    assert torch.equal(a.states, b.states) and torch.equal(a.next_states, b.next_states)
    assert torch.equal(a.weights, b.weights)  # type: ignore[arg-type]


def test_frame_stack_metadata_is_checked(tmp_path: Path) -> None:
    buf = filled(8, 6)
    buf.save(tmp_path)
    path = tmp_path / "buffer_state.safetensors"
    meta = json.loads((tmp_path / "buffer_metadata.json").read_text())
    for key, value, match in (
        ("frame_stack", 0, r"frame_stack'\] must be an int >= 1"),
        ("frame_stack", True, r"frame_stack'\] must be an int >= 1"),
        ("frame_stack", "3", r"frame_stack'\] must be an int >= 1"),
        ("table", None, "names no table file"),
    ):
        bad = dict(meta, **{key: value})
        with pytest.raises(CheckpointError, match=match):
            ReplayBuffer.load(path, bad)
    # A frame stack the table file was not saved with does not fit it.
    for k in (2, None):
        with pytest.raises(CheckpointError, match="the metadata does not belong to this save"):
            ReplayBuffer.load(path, dict(meta, frame_stack=k))
