"""The Velora buffer's opt-in observation shape, ``state_dtype`` and ``frame_stack``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from replaydb import ReplayBuffer
from replaydb.buffer import StreamReplayBuffer
from replaydb.errors import (
    CheckpointError,
    InvalidArgumentError,
    NotEnoughDataError,
    SpecMismatchError,
)
from replaydb.table import Table

SHAPE = (6, 5)


def frame(value: int, shape: tuple[int, ...] = SHAPE) -> torch.Tensor:
    return torch.full(shape, value, dtype=torch.uint8)


def pixel_buffer(capacity: int = 50, **kwargs: object) -> ReplayBuffer:
    return ReplayBuffer(capacity, SHAPE, 2, 3, state_dtype=torch.uint8, **kwargs)  # type: ignore[arg-type]


def test_default_buffer_keeps_velora_layout() -> None:
    buf = ReplayBuffer(10, 4, 1, 0)
    assert buf.velora_layout and buf.state_dim == 4 and buf.state_shape == (4,)
    assert "state_dtype" not in buf.metadata()
    assert "state_dtype" not in repr(buf)
    assert list(buf.metadata()) == [
        "capacity",
        "state_dim",
        "action_dim",
        "hidden_dim",
        "position",
        "size",
        "device",
    ]


def test_uint8_shaped_add_and_sample_keep_dtype_and_shape() -> None:
    buf = pixel_buffer(seed_free := 20)
    assert seed_free == buf.capacity
    for i in range(5):
        buf.add(frame(i), [0.5, 1.5], float(i), frame(i + 1), i == 4, hidden=torch.ones(3))
    assert buf.states.dtype == torch.uint8 and tuple(buf.states.shape) == (20, *SHAPE)
    assert buf.states[:5, 0, 0].tolist() == [0, 1, 2, 3, 4]
    assert buf.next_states[:5, 0, 0].tolist() == [1, 2, 3, 4, 5]
    assert buf.rewards[:5, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert buf.dones[:5, 0].tolist() == [0.0, 0.0, 0.0, 0.0, 1.0]
    batch = buf.sample(5)
    assert batch.states.dtype == torch.uint8 and batch.states.shape == (5, *SHAPE)
    assert batch.next_states.shape == (5, *SHAPE)
    assert batch.actions.dtype == torch.float32 and batch.actions.shape == (5, 2)
    # each sampled transition is a stored one: next frame = frame + 1, reward = frame
    s = batch.states[:, 0, 0].long()
    assert torch.equal(batch.next_states[:, 0, 0].long(), s + 1)
    assert torch.equal(batch.rewards[:, 0], s.float())
    assert batch.hiddens.tolist() == [[1.0] * 3] * 5


def test_add_accepts_leading_one_numpy_and_int_lists() -> None:
    buf = pixel_buffer()
    buf.add(frame(3).unsqueeze(0), 1, 0.0, np.full(SHAPE, 4, np.uint8), False)
    buf.add([[7] * 5] * 6, 1, 0.0, frame(8), False)  # int64 list: checked cast fits uint8
    assert buf.states[:2, 0, 0].tolist() == [3, 7]
    assert buf.next_states[:2, 0, 0].tolist() == [4, 8]
    assert buf.actions[0].tolist() == [1.0, 1.0]


def test_add_multi_shaped() -> None:
    buf = pixel_buffer()
    states = torch.arange(4, dtype=torch.uint8).view(4, 1, 1).expand(4, *SHAPE)
    buf.add_multi(states, torch.zeros(4, 2), torch.ones(4), states + 1, torch.zeros(4))
    assert len(buf) == 4 and buf.states[:4, 2, 3].tolist() == [0, 1, 2, 3]
    buf.add_multi(states[:0], torch.zeros(0, 2), torch.ones(0), states[:0], torch.zeros(0))
    assert len(buf) == 4


@pytest.mark.parametrize(
    ("state", "match"),
    [
        (torch.full(SHAPE, 0.5), "floats are not cast to integers"),
        (torch.full(SHAPE, 300), "does not fit dtype uint8"),
        (torch.zeros(5, 6, dtype=torch.uint8), r"expected shape \(6, 5\)"),
        (torch.zeros(30, dtype=torch.uint8), r"expected shape \(6, 5\)"),
        (None, "got None"),
        (object(), "expected a tensor or array"),
    ],
)
def test_add_rejects_bad_states_and_leaves_buffer_unchanged(state: object, match: str) -> None:
    buf = pixel_buffer()
    buf.add(frame(1), 0, 0.0, frame(2), False)
    before = buf.state_dict()
    with pytest.raises((InvalidArgumentError, SpecMismatchError), match=match):
        buf.add(state, 0, 0.0, frame(2), False)
    with pytest.raises((InvalidArgumentError, SpecMismatchError), match=match):
        buf.add(frame(1), 0, 0.0, state, False)
    assert len(buf) == 1
    after = buf.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_add_rejects_bad_other_fields() -> None:
    buf = pixel_buffer()
    with pytest.raises(InvalidArgumentError, match="action"):
        buf.add(frame(1), [1.0, 2.0, 3.0], 0.0, frame(2), False)
    with pytest.raises(InvalidArgumentError, match="reward"):
        buf.add(frame(1), 0, None, frame(2), False)
    with pytest.raises(InvalidArgumentError, match="hidden"):
        buf.add(frame(1), 0, 0.0, frame(2), False, hidden=torch.zeros(7))
    assert len(buf) == 0


def test_add_multi_rejects_and_writes_nothing() -> None:
    buf = pixel_buffer()
    s = torch.zeros(3, *SHAPE, dtype=torch.uint8)
    with pytest.raises(InvalidArgumentError, match=r"next_states: expected shape \(N, 6, 5\)"):
        buf.add_multi(s, torch.zeros(3, 2), torch.ones(3), s[:, :5], torch.zeros(3))
    with pytest.raises(InvalidArgumentError, match="every argument of add_multi"):
        buf.add_multi(s, torch.zeros(2, 2), torch.ones(3), s, torch.zeros(3))
    with pytest.raises(SpecMismatchError, match="floats are not cast"):
        buf.add_multi(s.float() + 0.5, torch.zeros(3, 2), torch.ones(3), s, torch.zeros(3))
    assert len(buf) == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"state_dim": ()}, "state_dim must be an int >= 1 or a non-empty tuple"),
        ({"state_dim": (84, 0)}, "state_dim must be"),
        ({"state_dim": (84, True)}, "state_dim must be"),
        ({"state_dim": 0}, "state_dim must be an int >= 1"),
        ({"state_dim": "84"}, "state_dim must be"),
        ({"state_dtype": torch.bool}, "state_dtype must be one of"),
        ({"state_dtype": "uint8"}, "state_dtype must be one of"),
        ({"state_dtype": torch.complex64}, "state_dtype must be one of"),
        ({"frame_stack": 0}, "frame_stack must be an int >= 1"),
        ({"frame_stack": 2.0}, "frame_stack must be an int >= 1"),
    ],
)
def test_constructor_rejects(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"state_dim": SHAPE, "action_dim": 1, "hidden_dim": 0}
    args.update(kwargs)
    with pytest.raises(InvalidArgumentError, match=match):
        ReplayBuffer(10, **args)  # type: ignore[arg-type]


def test_table_argument_must_match_dtype_and_frame_stack() -> None:
    spec = ReplayBuffer.transition_spec(SHAPE, 1, 0, state_dtype=torch.uint8)
    table = Table(spec, 10, frame_stack={"states": 3, "next_states": 3})
    buf = ReplayBuffer(10, SHAPE, 1, 0, state_dtype=torch.uint8, frame_stack=3, table=table)
    assert buf.table is table
    with pytest.raises(InvalidArgumentError, match="frame_stack"):
        ReplayBuffer(10, SHAPE, 1, 0, state_dtype=torch.uint8, table=table)
    with pytest.raises(InvalidArgumentError, match=r"state_dtype=torch\.float32"):
        ReplayBuffer(10, SHAPE, 1, 0, frame_stack=3, table=table)


def test_frame_stack_follows_episodes() -> None:
    buf = ReplayBuffer(100, SHAPE, 1, 0, state_dtype=torch.uint8, frame_stack=3)
    # episode A: frames 10..14 (done at the last); episode B: 20..22
    for ep, n in ((10, 5), (20, 3)):
        for i in range(n):
            buf.add(frame(ep + i), 0, float(ep + i), frame(ep + i + 1), i == n - 1)
    batch = buf.sample(8)
    assert batch.states.shape == (8, 3, *SHAPE) and batch.states.dtype == torch.uint8
    assert batch.next_states.shape == (8, 3, *SHAPE)
    top = batch.states[:, :, 0, 0].long()
    for row, reward in zip(top.tolist(), batch.rewards[:, 0].long().tolist(), strict=True):
        ep = 10 if reward < 20 else 20
        i = reward - ep
        assert row == [ep + max(i - 2, 0), ep + max(i - 1, 0), ep + i]
    nxt = batch.next_states[:, :, 0, 0].long()
    assert torch.equal(nxt[:, -1], top[:, -1] + 1)


@settings(max_examples=20, deadline=None)
@given(
    k=st.integers(1, 4),
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    capacity=st.integers(4, 16),
)
def test_frame_stack_matches_reference(k: int, lengths: list[int], capacity: int) -> None:
    buf = ReplayBuffer(capacity, (2,), 1, 0, state_dtype=torch.int32, frame_stack=k)
    written: list[tuple[int, int]] = []  # (value, episode)
    value = 0
    for ep, n in enumerate(lengths):
        for i in range(n):
            buf.add(
                torch.tensor([value, ep], dtype=torch.int32), 0, value, [value + 1, ep], i == n - 1
            )
            written.append((value, ep))
            value += 1
    kept = written[-capacity:]
    batch = buf.sample(len(buf))
    for stack, reward in zip(batch.states.tolist(), batch.rewards[:, 0].tolist(), strict=True):
        v = int(reward)
        pos = [w[0] for w in kept].index(v)
        ep = kept[pos][1]
        episode = [w[0] for w in kept[: pos + 1] if w[1] == ep]
        expect = [episode[max(len(episode) - k + j, 0)] for j in range(k)]
        assert [s[0] for s in stack] == expect


def test_prioritized_with_pixels_and_stack() -> None:
    buf = ReplayBuffer.prioritized(20, SHAPE, 1, 0, seed=0, state_dtype=torch.uint8, frame_stack=2)
    for i in range(4):
        buf.add(frame(i), 0, float(i), frame(i + 1), False)
    batch = buf.sample(4)
    assert batch.states.shape == (4, 2, *SHAPE) and batch.weights is not None
    assert batch.keys is not None
    assert buf.update_priorities(batch.keys, torch.ones(4)) == 4


def test_save_load_roundtrip_uint8(tmp_path: Path) -> None:
    buf = pixel_buffer(8)
    for i in range(11):  # wraps around
        buf.add(frame(i), [i, -i], float(i), frame(i + 1), i % 4 == 3)
    buf.save(tmp_path)
    meta = json.loads((tmp_path / "buffer_metadata.json").read_text())
    assert meta["state_dim"] == list(SHAPE) and meta["state_dtype"] == "uint8"
    assert meta["frame_stack"] is None
    back = ReplayBuffer.load(tmp_path / "buffer_state.safetensors", meta)
    assert back.state_dtype == torch.uint8 and back.state_shape == SHAPE
    assert back.state_dim == SHAPE and len(back) == 8 and back.position == buf.position
    want, got = buf.state_dict(), back.state_dict()
    assert all(torch.equal(want[k], got[k]) and want[k].dtype == got[k].dtype for k in want)


def test_save_load_prioritized_uint8_int_state_dim(tmp_path: Path) -> None:
    buf = ReplayBuffer.prioritized(8, 4, 1, 0, seed=1, state_dtype=torch.uint8)
    buf.add_multi(
        torch.arange(12, dtype=torch.uint8).view(3, 4),
        torch.zeros(3),
        torch.ones(3),
        torch.ones(3, 4, dtype=torch.uint8),
        torch.zeros(3),
    )
    buf.save(tmp_path)
    meta = json.loads((tmp_path / "buffer_metadata.json").read_text())
    assert meta["state_dim"] == [4] and meta["table"] is not None
    back = ReplayBuffer.load(tmp_path / "buffer_state.safetensors", meta)
    assert back.state_dtype == torch.uint8 and back.state_dim == (4,)
    assert torch.equal(back.states, buf.states)


def test_velora_refuses_a_pixel_file(tmp_path: Path) -> None:
    pytest.importorskip("velora.models")  # velora.buffer alone is a circular import
    velora_buffer = pytest.importorskip("velora.buffer")
    buf = pixel_buffer(8)
    buf.add(frame(1), 0, 0.0, frame(2), False)
    buf.save(tmp_path)
    meta = json.loads((tmp_path / "buffer_metadata.json").read_text())
    with pytest.raises(TypeError):
        velora_buffer.ReplayBuffer.load(tmp_path / "buffer_state.safetensors", meta)


def test_load_rejects_bad_pixel_metadata(tmp_path: Path) -> None:
    buf = pixel_buffer(8)
    buf.save(tmp_path)
    path = tmp_path / "buffer_state.safetensors"
    meta = json.loads((tmp_path / "buffer_metadata.json").read_text())
    for key, value, match in (
        ("state_dtype", "float32", r"tensor 'states' is \(8, 6, 5\) torch.uint8"),
        ("state_dtype", "bool", "state_dtype"),
        ("state_dim", [6, 0], "state_dim"),
        ("state_dim", [], "state_dim"),
        ("state_dim", [5, 6], "tensor 'states'"),
        ("state_dim", 30, "tensor 'states'"),
        ("frame_stack", 4, "frame_stack"),
    ):
        bad = dict(meta, **{key: value})
        bad.pop("state_sha256")
        with pytest.raises(CheckpointError, match=match):
            ReplayBuffer.load(path, bad)


def test_float_shaped_buffer_casts_ints_exactly() -> None:
    buf = ReplayBuffer(10, (2, 2), 1, 0)  # float32 but shaped: not Velora's layout
    assert not buf.velora_layout
    buf.add(torch.ones(2, 2, dtype=torch.int64), 0, 0.0, np.zeros((2, 2)), False)
    assert buf.states.dtype == torch.float32 and buf.states[0].tolist() == [[1.0, 1.0]] * 2
    assert buf.config()["state_dim"] == (2, 2)


# ------------------------------------------------------------ StreamReplayBuffer
def test_stream_buffer_next_states_come_from_the_next_step() -> None:
    buf = StreamReplayBuffer(64, SHAPE, 1, 0, state_dtype=torch.uint8)
    for i in range(10):
        buf.add(frame(i), i, float(i), frame(i + 1), i == 9)
    assert len(buf) == 10 and buf.table.num_steps == 11  # 10 steps + the final observation
    batch = buf.sample(10)
    assert batch.states.shape == (10, *SHAPE) and batch.states.dtype == torch.uint8
    s = batch.states[:, 0, 0].long()
    assert torch.equal(batch.next_states[:, 0, 0].long(), s + 1)
    assert torch.equal(batch.rewards[:, 0], s.float())
    assert torch.equal(batch.actions[:, 0], s.float())
    assert torch.equal(batch.dones[:, 0], (s == 9).float())


def test_stream_buffer_streams_and_truncation() -> None:
    buf = StreamReplayBuffer(64, (1,), 1, 2, state_dtype=torch.int32)
    # two interleaved streams; stream 1 is cut after 2 steps (no done) and restarts at 100
    for i in range(3):
        buf.add([i], 0, i, [i + 1], False, stream=0)
        if i < 2:
            buf.add([50 + i], 0, 50 + i, [51 + i], False, stream=1, hidden=[1.0, 2.0])
    buf.add([100], 0, 100, [101], True, stream=1)
    # stream 0: its last transition waits for the next add (2); stream 1: 2 + 1
    assert len(buf) == 2 + 2 + 1
    batch = buf.sample(5)
    for s, n, r, d in zip(
        batch.states[:, 0].tolist(),
        batch.next_states[:, 0].tolist(),
        batch.rewards[:, 0].tolist(),
        batch.dones[:, 0].tolist(),
        strict=True,
    ):
        assert n == s + 1 and r == s and d == (1.0 if s == 100 else 0.0)


def test_stream_buffer_ring_wraps() -> None:
    buf = StreamReplayBuffer(8, (1,), 1, 0, state_dtype=torch.int64)
    for i in range(30):
        buf.add([i], 0, i, [i + 1], i % 7 == 6)
    batch = buf.sample(len(buf))
    assert torch.equal(batch.next_states, batch.states + 1)
    assert batch.states.min() >= 22


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((frame(0).float() + 0.5, 0, 0.0, frame(1), False), SpecMismatchError, "floats"),
        ((frame(0), 0, 0.0, torch.full(SHAPE, 300), False), SpecMismatchError, "uint8"),
        ((frame(0), 0, 0.0, frame(1)[:5], False), InvalidArgumentError, "next_state"),
        ((frame(0), 0, None, frame(1), False), InvalidArgumentError, "reward"),
        ((None, 0, 0.0, frame(1), False), InvalidArgumentError, "state"),
    ],
)
def test_stream_buffer_rejects_and_writes_nothing(
    args: tuple[object, ...], error: type[Exception], match: str
) -> None:
    buf = StreamReplayBuffer(16, SHAPE, 1, 0, state_dtype=torch.uint8)
    buf.add(frame(7), 0, 0.0, frame(8), False)
    with pytest.raises(error, match=match):
        buf.add(*args)
    assert buf.table.num_steps == 1
    buf.add(frame(8), 0, 0.0, frame(9), True)  # the open episode continues untouched
    assert len(buf) == 2 and buf.table.num_steps == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"capacity": 1}, "capacity must be an int >= 2"),
        ({"state_dim": (0,)}, "state_dim"),
        ({"state_dtype": torch.bool}, "state_dtype"),
        ({"hidden_dim": -1}, "hidden_dim"),
    ],
)
def test_stream_buffer_constructor_rejects(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"capacity": 8, "state_dim": 4, "action_dim": 1, "hidden_dim": 0}
    args.update(kwargs)
    with pytest.raises(InvalidArgumentError, match=match):
        StreamReplayBuffer(**args)  # type: ignore[arg-type]


def test_stream_buffer_sample_and_stream_errors() -> None:
    buf = StreamReplayBuffer(8, 2, 1, 0)
    with pytest.raises(InvalidArgumentError, match="stream must be an int >= 0"):
        buf.add(torch.zeros(2), 0, 0.0, torch.ones(2), False, stream=-1)
    buf.add(torch.zeros(2), 0, 0.0, torch.ones(2), False)
    assert len(buf) == 0  # the transition's next_state is stored with the next add
    with pytest.raises(NotEnoughDataError, match="Available: 0, Requested: 1"):
        buf.sample(1)
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        buf.sample(0)


def test_stream_buffer_halves_pixel_memory() -> None:
    plain = ReplayBuffer(1000, (84, 84), 1, 0, state_dtype=torch.uint8)
    stream = StreamReplayBuffer(1000, (84, 84), 1, 0, state_dtype=torch.uint8)
    frames = 1000 * 84 * 84
    assert plain.table.storage.nbytes >= 2 * frames
    assert frames <= stream.table.storage.nbytes < 1.1 * frames


def test_stream_buffer_threads_keep_streams_consistent() -> None:
    import threading

    buf = StreamReplayBuffer(4096, (1,), 1, 0, state_dtype=torch.int64)

    def run(env: int) -> None:
        base = 1000 * env
        for i in range(200):
            buf.add([base + i], 0, base + i, [base + i + 1], i % 50 == 49, stream=env)

    threads = [threading.Thread(target=run, args=(e,)) for e in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(buf) == 4 * 200 and buf.table.num_steps == 4 * (200 + 4)
    batch = buf.sample(len(buf))
    assert torch.equal(batch.next_states, batch.states + 1)
