"""Frame stacking at sample time: the last k frames of each sampled step, from episode links.

A table built with ``frame_stack={"frame": k}`` returns, for every sampled step, the
frames of that step and its ``k - 1`` predecessors in the same episode, oldest
first. The hypothesis test checks every stacked frame against a pure-Python model of
the ring (interleaved streams, episodes ending at random, wraparound), with the
compiled kernel and with the torch path.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from replaydb import Spec, Table, _kernels, load_table, save_table
from replaydb.errors import InvalidArgumentError, InvalidTypeError
from replaydb.samplers import Fifo
from test_sequences import SPEC, write_linked

FRAME_SPEC = Spec({**{k: (f.shape, f.dtype) for k, f in SPEC.items()}, "frame": ((2,), "int64")})


@pytest.fixture(autouse=True)
def _restore_kernels() -> Iterator[None]:
    yield
    _kernels.use(True)


def expected_stack(key: int, k: int, pad: str, pred: dict[int, int], oldest_live: int) -> list[int]:
    """Frame values (key + 1) of the last ``k`` frames of step ``key``, oldest first."""
    chain = [key]
    while len(chain) < k:
        p = pred.get(chain[0])
        if p is None or p < oldest_live:  # episode start, or overwritten
            break
        chain.insert(0, p)
    fill = chain[0] + 1 if pad == "first" else 0
    return [fill] * (k - len(chain)) + [c + 1 for c in chain]


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    num_streams=st.integers(1, 3),
    T=st.integers(1, 3),
    k=st.integers(1, 5),
    pad=st.sampled_from(["first", "zeros"]),
    capacity=st.integers(5, 30),
    steps=st.integers(1, 100),
    max_episode=st.integers(1, 10),
    batch=st.integers(1, 7),
    compiled=st.booleans(),
)
def test_stacks_match_a_reference(
    seed: int,
    num_streams: int,
    T: int,  # noqa: N803
    k: int,
    pad: str,
    capacity: int,
    steps: int,
    max_episode: int,
    batch: int,
    compiled: bool,
) -> None:
    if compiled and _kernels.get() is None:
        compiled = False
    _kernels.use(compiled)
    capacity = max(capacity, T)
    table = Table(
        FRAME_SPEC,
        capacity,
        sequence_length=T,
        pad=T > 1,
        frame_stack={"frame": (k, pad)},
    )
    _, _, succ = write_linked(table, random.Random(seed), num_streams, steps, max_episode, batch)
    if len(table) == 0:
        return
    pred = {v: u for u, v in succ.items()}
    oldest_live = table.storage.total - capacity
    s = table.sample(64)
    frames = s["frame"]
    keys = s["key"]
    assert frames.shape == ((64, k, 2) if T == 1 else (64, T, k, 2))
    assert keys.shape == ((64,) if T == 1 else (64, T))
    frames = frames.reshape(-1, k, 2)
    for b, key in enumerate(keys.reshape(-1).tolist()):
        want = expected_stack(key, k, pad, pred, oldest_live)
        assert frames[b, :, 0].tolist() == want
        assert frames[b, :, 1].tolist() == [-v for v in want]


def test_never_crosses_an_episode_and_pads_at_its_start() -> None:
    spec = Spec({"frame": ((), "int64")})
    for pad, fill in (("first", [10, 10, 10, 10]), ("zeros", [0, 0, 0, 10])):
        table = Table(spec, 20, frame_stack={"frame": (4, pad)})
        # stream 0: 1 2 3 (ends) 10 11 ... ; stream 1 interleaved: 100 101 102
        table.extend(
            {"frame": torch.tensor([1, 100, 2, 101, 3, 102, 10, 11])},
            streams=torch.tensor([0, 1, 0, 1, 0, 1, 0, 0]),
            ends=torch.tensor([0, 0, 0, 0, 1, 0, 0, 0]),
        )
        by_frame = {int(s[-1]): s.tolist() for s in table.sample(200)["frame"]}
        assert by_frame[10] == fill
        assert by_frame[11] == ([10, 10, 10, 11] if pad == "first" else [0, 0, 10, 11])
        assert by_frame[102][-3:] == [100, 101, 102]
        assert by_frame[3] == ([1, 1, 2, 3] if pad == "first" else [0, 1, 2, 3])


def test_overwritten_frames_pad_like_an_episode_start() -> None:
    # One long episode through a ring of 6 rows: the oldest live step's earlier
    # frames were overwritten, so its stack is padded as if the episode began there.
    table = Table(Spec({"frame": ((), "int64")}), 6, frame_stack={"frame": 3})
    table.extend({"frame": torch.arange(1, 11)})  # keys 0..9, rows hold keys 4..9
    stacks = {int(s[-1]): s.tolist() for s in table.sample(300)["frame"]}
    assert sorted(stacks) == [5, 6, 7, 8, 9, 10]
    assert stacks[5] == [5, 5, 5]  # frames 3 and 4 (keys 2, 3) are gone
    assert stacks[6] == [5, 5, 6]
    assert stacks[7] == [5, 6, 7]
    zeros = Table(Spec({"frame": ((), "int64")}), 6, frame_stack={"frame": (3, "zeros")})
    zeros.extend({"frame": torch.arange(1, 11)})
    stacks = {int(s[-1]): s.tolist() for s in zeros.sample(300)["frame"]}
    assert stacks[5] == [0, 0, 5] and stacks[6] == [0, 5, 6]


def test_every_write_path_keeps_links() -> None:
    spec = Spec({"frame": ((), "int64"), "r": ()})
    a = Table(spec, 50, frame_stack={"frame": 3})
    a.extend({"frame": torch.arange(1, 8), "r": torch.zeros(7)})
    b = Table(spec, 50, frame_stack={"frame": 3})
    for i in range(1, 8):
        b.insert({"frame": i, "r": 0.0})
    c = Table(spec, 50, frame_stack={"frame": 3})
    c.extend_unchecked({"frame": torch.arange(1, 8).numpy(), "r": 0.0}, 7)
    want = {int(s[-1]): s.tolist() for s in a.sample(200)["frame"]}
    assert len(want) == 7
    for t in (b, c):
        assert {int(s[-1]): s.tolist() for s in t.sample(200)["frame"]} == want
    # sample_data (the Velora buffer's verb) stacks too.
    assert a.sample_data(4)["frame"].shape == (4, 3)


def test_only_named_fields_are_stacked_and_each_frame_stored_once() -> None:
    spec = Spec({"obs": ((84, 84), "uint8"), "action": ((), "int64"), "reward": ()})
    table = Table(spec, 1000, sequence_length=2, frame_stack={"obs": 4})
    assert table.storage.nbytes == Table(spec, 1000, sequence_length=2).storage.nbytes
    table.extend(
        {
            "obs": torch.randint(0, 255, (100, 84, 84), dtype=torch.uint8),
            "action": torch.zeros(100, dtype=torch.int64),
            "reward": torch.zeros(100),
        }
    )
    s = table.sample(8)
    assert s["obs"].shape == (8, 2, 4, 84, 84)
    assert s["action"].shape == (8, 2) and s["reward"].shape == (8, 2)
    # the newest frame of each stack is the step itself
    plain = table.storage.gather(table.storage.window_rows(s.keys, 2))
    assert torch.equal(s["obs"][:, :, -1], plain["obs"])


def test_config_round_trip_and_checkpoint(tmp_path: Path) -> None:
    spec = Spec({"frame": ((), "int64")})
    table = Table(spec, 10, frame_stack={"frame": (3, "zeros")})
    assert table.config()["frame_stack"] == {"frame": [3, "zeros"]}
    assert Table.from_config(table.config()).frame_stack == {"frame": (3, "zeros")}
    table.extend({"frame": torch.arange(1, 13)}, ends=torch.tensor([0] * 5 + [1] + [0] * 6))
    loaded = load_table(save_table(table, tmp_path / "stacked"))
    assert loaded.frame_stack == table.frame_stack
    got = {int(s[-1]): s.tolist() for s in loaded.sample(300)["frame"]}
    want = {int(s[-1]): s.tolist() for s in table.sample(300)["frame"]}
    assert got == want


def test_bad_frame_stacks_are_rejected() -> None:
    spec = Spec({"obs": (2,)})
    with pytest.raises(InvalidTypeError, match="frame_stack must be a mapping"):
        Table(spec, 10, frame_stack=4)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="names field 'img'"):
        Table(spec, 10, frame_stack={"img": 4})
    for bad in (0, -2, 1.5, True, "4"):
        with pytest.raises(InvalidArgumentError, match="k must be an int >= 1"):
            Table(spec, 10, frame_stack={"obs": bad})
    with pytest.raises(InvalidArgumentError, match="pad must be one of"):
        Table(spec, 10, frame_stack={"obs": (4, "last")})
    with pytest.raises(InvalidArgumentError, match=r"must be k or \(k, pad\)"):
        Table(spec, 10, frame_stack={"obs": (4, "first", 1)})
    with pytest.raises(InvalidArgumentError, match="overwrites oldest first"):
        Table(spec, 10, sampler=Fifo(), max_times_sampled=1, frame_stack={"obs": 4})
