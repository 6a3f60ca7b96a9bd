"""Tests of ``replaydb.storage``: the ring of rows, dtype packing and episode links."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from replaydb.errors import InvalidArgumentError
from replaydb.spec import Spec
from replaydb.storage import END_NONE, END_TERMINATED, END_TRUNCATED, Storage
from strategies import MIXED_SPEC, Append, EndStreams, storage_ops

I64 = torch.int64


def keyed_rows(keys: Iterable[int]) -> dict[str, torch.Tensor]:
    """Rows of MIXED_SPEC whose values are a function of the step's key."""
    k = torch.tensor(list(keys), dtype=I64)
    kf = k.to(torch.float32)
    return {
        "obs": torch.stack([kf, kf + 0.25, -kf], dim=1),
        "reward": kf * 0.5,
        "action": k * 7,
        "mask": torch.stack([k % 2 == 0, k % 3 == 0], dim=1),
        "pixels": ((k[:, None] + torch.arange(4)) % 256).to(torch.uint8).reshape(-1, 2, 2),
    }


def t(values: Sequence[int]) -> torch.Tensor:
    return torch.tensor(list(values), dtype=I64)


def append(
    s: Storage,
    first: int,
    n: int,
    streams: Sequence[int] | None = None,
    ends: Sequence[int] | None = None,
) -> Any:
    """Append ``n`` keyed steps whose keys would be ``first..first+n-1``."""
    return s.append(
        keyed_rows(range(first, first + n)),
        None if streams is None else t(streams),
        None if ends is None else t(ends),
    )


def assert_rows_hold(s: Storage, keys: Sequence[int]) -> None:
    """Every key in ``keys`` is live and its row holds that key's values."""
    rows = t(keys) % s.capacity
    assert s.key[rows].tolist() == list(keys)
    got, want = s.gather(rows), keyed_rows(keys)
    for name in want:
        assert torch.equal(got[name], want[name]), name


# ---------------------------------------------------------------- construction
@pytest.mark.parametrize("capacity", [0, -3, 2.5, True, "4", None, np.float32(3)])
def test_capacity_must_be_a_positive_int(capacity: object) -> None:
    with pytest.raises(InvalidArgumentError, match="capacity must be a positive int") as info:
        Storage(MIXED_SPEC, capacity)  # type: ignore[arg-type]
    assert repr(capacity) in str(info.value) or str(capacity) in str(info.value)


def test_capacity_accepts_numpy_ints() -> None:
    s = Storage(MIXED_SPEC, np.int64(5))  # type: ignore[arg-type]
    assert s.capacity == 5
    assert type(s.capacity) is int


def test_fields_are_packed_by_dtype() -> None:
    spec = Spec(
        {
            "a": ((2,), torch.float32),
            "n": ((), torch.int64),
            "b": ((3, 2), torch.float32),
            "flag": ((), torch.bool),
            "px": ((2, 2), torch.uint8),
            "c": ((), torch.float32),
        }
    )
    s = Storage(spec, 4)
    assert {dt: tuple(g.shape) for dt, g in s.groups.items()} == {
        torch.float32: (4, 2 + 6 + 1),
        torch.int64: (4, 1),
        torch.bool: (4, 1),
        torch.uint8: (4, 4),
    }
    for name, field in spec.items():
        view = s.fields[name]
        assert view.shape == (4, *field.shape)
        assert view.dtype is field.dtype
        assert view.untyped_storage().data_ptr() == s.groups[field.dtype].data_ptr()
    # Writing through a field view lands in its columns of the packed tensor.
    s.fields["b"][1] = torch.arange(6.0).reshape(3, 2)
    assert s.groups[torch.float32][1, 2:8].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert s.nbytes == 4 * (9 * 4 + 8 + 1 + 4) + 5 * 4 * 8


# --------------------------------------------------------------------- append
def test_append_returns_consecutive_keys(device: torch.device) -> None:
    s = Storage(MIXED_SPEC, 10, device)
    r1 = s.append({k: v.to(device) for k, v in keyed_rows(range(3)).items()})
    r2 = s.append({k: v.to(device) for k, v in keyed_rows(range(3, 7)).items()})
    assert r1.keys.tolist() == [0, 1, 2]
    assert r2.keys.tolist() == [3, 4, 5, 6]
    assert (r1.first_key, r2.first_key) == (0, 3)
    assert r1.positions is None
    assert r1.evicted_rows.numel() == r2.evicted_rows.numel() == 0
    assert s.total == 7
    assert s.num_rows == 7
    assert r2.keys.device.type == device.type
    assert s.key.cpu().tolist() == [0, 1, 2, 3, 4, 5, 6, -1, -1, -1]


def test_append_of_nothing_changes_nothing() -> None:
    for links in (False, True):
        s = Storage(MIXED_SPEC, 4, links=links)
        append(s, 0, 3)
        res = s.append(keyed_rows([]), t([]), t([]))
        assert res.keys.numel() == 0
        assert res.first_key == 3
        assert res.evicted_rows.numel() == 0
        assert s.total == 3
        assert_rows_hold(s, [0, 1, 2])


def test_wraparound_overwrites_oldest_and_reports_evicted_rows() -> None:
    s = Storage(MIXED_SPEC, 4)
    append(s, 0, 3)
    res = append(s, 3, 3)
    assert res.keys.tolist() == [3, 4, 5]
    assert sorted(res.evicted_rows.tolist()) == [0, 1]
    assert s.key.tolist() == [4, 5, 2, 3]
    assert s.num_rows == 4
    assert_rows_hold(s, [2, 3, 4, 5])
    res = append(s, 6, 1)
    assert res.evicted_rows.tolist() == [2]
    assert_rows_hold(s, [3, 4, 5, 6])


def test_batch_larger_than_capacity_keeps_the_newest_rows() -> None:
    s = Storage(MIXED_SPEC, 4)
    res = append(s, 0, 10)
    assert res.keys.tolist() == [6, 7, 8, 9]
    assert res.first_key == 6
    assert res.evicted_rows.numel() == 0  # the ring was empty
    assert s.total == 10
    assert_rows_hold(s, [6, 7, 8, 9])
    res = append(s, 10, 9)
    assert res.keys.tolist() == [15, 16, 17, 18]
    assert sorted(res.evicted_rows.tolist()) == [0, 1, 2, 3]
    assert_rows_hold(s, [15, 16, 17, 18])


def test_batch_of_exactly_capacity_on_a_partly_full_ring() -> None:
    s = Storage(MIXED_SPEC, 4)
    append(s, 0, 1)
    res = append(s, 1, 4)
    assert res.keys.tolist() == [1, 2, 3, 4]
    assert res.evicted_rows.tolist() == [0]
    assert_rows_hold(s, [1, 2, 3, 4])


def test_append_writes_streams_and_end_codes() -> None:
    s = Storage(MIXED_SPEC, 5)
    append(s, 0, 4, streams=[3, 1, 3, 0], ends=[0, 2, 1, 0])
    assert s.stream.tolist()[:4] == [3, 1, 3, 0]
    assert s.end.tolist()[:4] == [END_NONE, END_TRUNCATED, END_TERMINATED, END_NONE]


def test_is_live() -> None:
    s = Storage(MIXED_SPEC, 4)
    append(s, 0, 6)
    keys = t([-5, -1, 0, 1, 2, 3, 4, 5, 6, 7, 100])
    assert s.is_live(keys).tolist() == [False] * 4 + [True] * 4 + [False] * 3
    assert s.is_live(t([])).numel() == 0


def test_is_live_after_wraparound() -> None:
    s = Storage(MIXED_SPEC, 3)
    append(s, 0, 2)
    append(s, 2, 2)  # key 3 evicts key 0
    assert s.is_live(t([0, 1, 2, 3, 4])).tolist() == [False, True, True, True, False]


# --------------------------------------------------------------------- gather
def test_gather_one_dimensional_rows(device: torch.device) -> None:
    s = Storage(MIXED_SPEC, 8, device)
    s.append({k: v.to(device) for k, v in keyed_rows(range(8)).items()})
    rows = torch.tensor([5, 0, 5, 7], device=device)
    got = s.gather(rows)
    want = keyed_rows([5, 0, 5, 7])
    assert list(got) == list(MIXED_SPEC)
    for name, field in MIXED_SPEC.items():
        assert got[name].shape == (4, *field.shape)
        assert got[name].dtype is field.dtype
        assert got[name].device.type == device.type
        assert torch.equal(got[name].cpu(), want[name])


def test_gather_two_dimensional_rows(device: torch.device) -> None:
    s = Storage(MIXED_SPEC, 8, device)
    s.append({k: v.to(device) for k, v in keyed_rows(range(8)).items()})
    rows = torch.tensor([[0, 1, 2], [6, 7, 0]], device=device)
    got = s.gather(rows)
    for name, field in MIXED_SPEC.items():
        assert got[name].shape == (2, 3, *field.shape)
        assert got[name].dtype is field.dtype
        for b in range(2):
            want = keyed_rows(rows[b].tolist())[name]
            assert torch.equal(got[name][b].cpu(), want)


def test_gather_of_no_rows() -> None:
    s = Storage(MIXED_SPEC, 4)
    append(s, 0, 2)
    got = s.gather(t([]))
    assert got["pixels"].shape == (0, 2, 2)
    assert got["reward"].shape == (0,)


def test_gather_returns_copies_not_views_of_storage() -> None:
    s = Storage(MIXED_SPEC, 4)
    append(s, 0, 4)
    got = s.gather(t([1]))
    got["obs"].zero_()
    got["action"].fill_(-1)
    assert_rows_hold(s, [0, 1, 2, 3])


def test_gather_bfloat16_and_zero_width_fields() -> None:
    spec = Spec({"h": ((2,), torch.bfloat16), "empty": ((0,), torch.float32), "x": ()})
    s = Storage(spec, 3)
    s.append(
        {
            "h": torch.tensor([[1.5, 2.0], [3.0, 4.0]], dtype=torch.bfloat16),
            "empty": torch.zeros(2, 0),
            "x": torch.tensor([7.0, 8.0]),
        }
    )
    got = s.gather(t([1, 0]))
    assert got["h"].dtype is torch.bfloat16
    assert got["h"].float().tolist() == [[3.0, 4.0], [1.5, 2.0]]
    assert got["empty"].shape == (2, 0)
    assert got["x"].tolist() == [8.0, 7.0]


# ---------------------------------------------------------------------- links
def test_links_of_interleaved_streams(device: torch.device) -> None:
    s = Storage(MIXED_SPEC, 16, device, links=True)
    res = s.append(
        {k: v.to(device) for k, v in keyed_rows(range(5)).items()},
        torch.tensor([0, 1, 0, 1, 0], device=device),
    )
    assert res.positions is not None
    assert res.positions.tolist() == [0, 0, 1, 1, 2]
    assert s.prev.cpu().tolist()[:5] == [-1, -1, 0, 1, 2]
    assert s.next.cpu().tolist()[:5] == [2, 3, 4, -1, -1]
    # The next batch continues both episodes where they left off.
    res = s.append(
        {k: v.to(device) for k, v in keyed_rows(range(5, 8)).items()},
        torch.tensor([1, 0, 2], device=device),
    )
    assert res.positions is not None
    assert res.positions.tolist() == [2, 3, 0]
    assert s.prev.cpu().tolist()[5:8] == [3, 4, -1]
    assert s.next.cpu().tolist()[:8] == [2, 3, 4, 5, 6, -1, -1, -1]


@pytest.mark.parametrize("code", [END_TERMINATED, END_TRUNCATED])
def test_an_end_code_starts_a_new_episode_in_that_stream_only(code: int) -> None:
    s = Storage(MIXED_SPEC, 16, links=True)
    res = append(s, 0, 4, streams=[0, 1, 0, 0], ends=[0, 0, code, 0])
    assert res.positions.tolist() == [0, 0, 1, 0]
    assert s.prev.tolist()[:4] == [-1, -1, 0, -1]
    assert s.next.tolist()[:4] == [2, -1, -1, -1]
    assert s.end.tolist()[:4] == [0, 0, code, 0]
    # An end on the last step of a batch carries over to the next batch.
    append(s, 4, 1, streams=[1], ends=[code])
    res = append(s, 5, 3, streams=[1, 0, 1], ends=[0, 0, 0])
    assert res.positions.tolist() == [0, 1, 1]
    assert s.prev.tolist()[5:8] == [-1, 3, 5]
    assert s.next.tolist()[4] == -1


def test_end_streams_closes_open_episodes() -> None:
    s = Storage(MIXED_SPEC, 16, links=True)
    append(s, 0, 2, streams=[0, 1])
    s.end_streams(t([0]))
    s.end_streams(t([]))
    res = append(s, 2, 2, streams=[0, 1])
    assert res.positions.tolist() == [0, 1]
    assert s.prev.tolist()[2:4] == [-1, 1]
    assert s.next.tolist()[0] == -1


def test_end_streams_grows_stream_state() -> None:
    s = Storage(MIXED_SPEC, 16, links=True)
    s.end_streams(t([40]))
    res = append(s, 0, 2, streams=[40, 40])
    assert res.positions.tolist() == [0, 1]


def test_links_to_evicted_steps_are_broken() -> None:
    s = Storage(MIXED_SPEC, 4, links=True)
    append(s, 0, 1, streams=[1])  # key 0, stream 1
    res = append(s, 1, 4, streams=[0, 0, 0, 0])  # keys 1..4; key 4 evicts key 0
    assert res.positions.tolist() == [0, 1, 2, 3]
    res = append(s, 5, 1, streams=[1])  # its predecessor, key 0, is gone
    assert res.positions.tolist() == [0]
    assert s.prev[5 % 4].item() == -1
    # Key 2's stored prev (key 1) was evicted by key 5: walking back finds nothing.
    assert s.prev[2].item() == 1
    assert s.walk(t([2, 3, 4]), 1).tolist() == [-1, 2, 3]
    assert s.walk(t([4]), 2).tolist() == [2]
    assert s.walk(t([4]), 3).tolist() == [-1]


def test_batch_larger_than_capacity_breaks_the_link_to_dropped_steps() -> None:
    s = Storage(MIXED_SPEC, 4, links=True)
    append(s, 0, 2, streams=[0, 1])
    res = append(s, 2, 7, streams=[0, 1, 0, 1, 0, 1, 2])
    assert res.keys.tolist() == [5, 6, 7, 8]
    # Keys 5..8 continue episodes whose earlier steps were dropped or evicted.
    assert res.positions.tolist() == [0, 0, 1, 0]
    assert s.prev.tolist() == [-1, -1, -1, 5]  # rows of keys 8, 5, 6, 7
    assert s.next.tolist() == [-1, 7, -1, -1]
    assert s.walk(t([7]), 1).tolist() == [5]


def test_walk_forward_and_back() -> None:
    s = Storage(MIXED_SPEC, 16, links=True)
    append(s, 0, 6, streams=[0, 1, 0, 1, 0, 0], ends=[0, 0, 0, 1, 0, 0])
    keys = t([0, 1, 2, 3, 4, 5, -1, 99])
    assert s.walk(keys, 0).tolist() == [0, 1, 2, 3, 4, 5, -1, -1]
    assert s.walk(keys, 1).tolist() == [-1, -1, 0, 1, 2, 4, -1, -1]
    assert s.walk(keys, 2).tolist() == [-1, -1, -1, -1, 0, 2, -1, -1]
    assert s.walk(keys, 1, "next").tolist() == [2, 3, 4, -1, 5, -1, -1, -1]
    assert s.walk(keys, 3, "next").tolist() == [5, -1, -1, -1, -1, -1, -1, -1]


def test_window_rows_follow_next_links_across_the_ring() -> None:
    s = Storage(MIXED_SPEC, 5, links=True)
    append(s, 0, 3, streams=[0, 1, 1])
    append(s, 3, 4, streams=[0, 1, 0, 0], ends=[0, 0, 0, 1])
    # Stream 0: keys 0(evicted), 3, 5, 6 (ends); stream 1: 1(evicted), 2, 4.
    assert s.window_rows(t([3, 2]), 3).tolist() == [[3, 0, 1], [2, 4, 4]]
    got = s.gather(s.window_rows(t([3]), 3))
    assert got["action"].tolist() == [[21, 35, 42]]
    assert s.window_rows(t([5]), 1).tolist() == [[0]]


# ---------------------------------------------------------------- append_row
def test_append_numpy_writes_rows_with_wraparound() -> None:
    spec = Spec({"x": (2,), "a": ((), "int64")})
    s = Storage(spec, 3)
    assert s.append_numpy({"x": np.array([1.0, 2.0]), "a": 5}, 1, end=1) == 0
    assert s.append_numpy({"x": [3.0, 4.0], "a": np.int64(6)}, 1) == 1
    # A batch of two wraps around: rows 2 and 0.
    assert s.append_numpy({"x": np.array([[5.0, 6.0], [7.0, 8.0]]), "a": [7, 8]}, 2, end=2) == 2
    assert s.total == 4
    assert s.key.tolist() == [3, 1, 2]
    assert s.stream.tolist() == [0, 0, 0]
    assert s.end.tolist() == [2, 0, 2]
    got = s.gather(t([1, 2, 0]))
    assert got["x"].tolist() == [[3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]
    assert got["a"].tolist() == [6, 7, 8]


def test_append_numpy_accepts_packed_group_rows() -> None:
    spec = Spec({"x": (2,), "y": (1,)})
    s = Storage(spec, 4)
    s.append_numpy({torch.float32: np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])}, 2)
    assert s.fields["x"][:2].tolist() == [[1.0, 2.0], [4.0, 5.0]]
    assert s.fields["y"][:2].tolist() == [[3.0], [6.0]]


def test_append_numpy_matches_append() -> None:
    a, b = Storage(MIXED_SPEC, 3), Storage(MIXED_SPEC, 3)
    rows = keyed_rows(range(5))
    ends = [0, 1, 0, 2, 0]
    a.append(rows, t([0] * 5), t(ends))
    b.append_numpy({k: v[:2].numpy() for k, v in rows.items()}, 2, np.array(ends[:2]))
    for i in range(2, 5):
        b.append_numpy({k: v[i].numpy() for k, v in rows.items()}, 1, ends[i])
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, b.state_dict()[name]), name


# ------------------------------------------------------------------- streams
def test_stream_ids_must_be_below_the_limit() -> None:
    s = Storage(MIXED_SPEC, 4, links=True)
    append(s, 0, 2, streams=[0, 0])
    before = {k: v.clone() for k, v in s.state_dict().items()}
    with pytest.raises(InvalidArgumentError, match=r"stream ids must be in \[0, 1048576\)") as info:
        append(s, 2, 2, streams=[0, 1 << 20])
    assert "got 1048576" in str(info.value)
    # The rejected append wrote nothing.
    for name, tensor in s.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    res = append(s, 2, 1, streams=[(1 << 20) - 1])
    assert res.keys.tolist() == [2]


def test_negative_stream_ids_are_rejected_with_links() -> None:
    s = Storage(MIXED_SPEC, 4, links=True)
    append(s, 0, 1, streams=[0])
    with pytest.raises(InvalidArgumentError, match="stream ids must be in"):
        append(s, 1, 1, streams=[-1])
    assert s.total == 1


def test_stream_ids_are_not_limited_without_links() -> None:
    s = Storage(MIXED_SPEC, 4)
    append(s, 0, 1, streams=[1 << 40])
    assert s.stream.tolist()[0] == 1 << 40


# ----------------------------------------------------------------- lifecycle
def test_reset_forgets_every_step() -> None:
    s = Storage(MIXED_SPEC, 4, links=True)
    append(s, 0, 6, streams=[0, 1, 0, 1, 0, 1])
    s.reset()
    assert s.total == 0
    assert s.num_rows == 0
    assert s.key.tolist() == [-1] * 4
    assert s.prev.tolist() == s.next.tolist() == [-1] * 4
    assert all(int(g.count_nonzero()) == 0 for g in s.groups.values())
    assert not s.is_live(t([4, 5])).any()
    res = append(s, 0, 2, streams=[0, 1])
    assert res.keys.tolist() == [0, 1]
    assert res.positions.tolist() == [0, 0]  # episodes do not continue across a reset


def test_seek_sets_the_next_key_of_an_empty_storage() -> None:
    s = Storage(MIXED_SPEC, 4)
    s.seek(10)
    res = append(s, 10, 2)
    assert res.keys.tolist() == [10, 11]
    assert s.key.tolist() == [-1, -1, 10, 11]
    with pytest.raises(InvalidArgumentError, match="only allowed on an empty storage"):
        s.seek(0)


@pytest.mark.parametrize("links", [False, True])
def test_state_dict_round_trip(links: bool) -> None:
    s = Storage(MIXED_SPEC, 5, links=links)
    append(s, 0, 3, streams=[0, 1, 9])
    append(s, 3, 4, streams=[1, 0, 0, 1], ends=[0, 1, 0, 2])
    state = s.state_dict()
    assert state["total"].tolist() == [7]
    assert state["group.float32"].shape == (5, 4)
    assert state["meta.key"].tolist() == [5, 6, 2, 3, 4]

    fresh = Storage(MIXED_SPEC, 5, links=links)
    fresh.load_state_dict(state)
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    # Both continue identically, links and positions included.
    r1 = append(s, 7, 3, streams=[0, 1, 9])
    r2 = append(fresh, 7, 3, streams=[0, 1, 9])
    assert r1.keys.tolist() == r2.keys.tolist()
    if links:
        assert r1.positions.tolist() == r2.positions.tolist() == [1, 0, 0]
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(tensor, s.state_dict()[name]), name


def test_state_dict_holds_only_stored_rows() -> None:
    s = Storage(MIXED_SPEC, 100)
    append(s, 0, 3)
    state = s.state_dict()
    assert state["group.uint8"].shape == (3, 4)
    assert state["meta.end"].shape == (3,)
    fresh = Storage(MIXED_SPEC, 100)
    fresh.load_state_dict(state)
    assert fresh.num_rows == 3
    assert_rows_hold(fresh, [0, 1, 2])
    assert fresh.key.tolist()[3:] == [-1] * 97


def test_load_state_dict_replaces_previous_content() -> None:
    s = Storage(MIXED_SPEC, 4)
    append(s, 0, 2)
    other = Storage(MIXED_SPEC, 4)
    append(other, 0, 4)
    other.load_state_dict(s.state_dict())
    assert other.total == 2
    assert other.key.tolist() == [0, 1, -1, -1]
    assert int(other.groups[torch.float32][2:].count_nonzero()) == 0


# ----------------------------------------------------- property: the ring
class RefRing:
    """A list-based model of the ring: which key each row holds, and its links."""

    def __init__(self, capacity: int, links: bool) -> None:
        self.cap, self.links = capacity, links
        self.total = 0
        self.rows = [-1] * capacity
        self.stream: dict[int, int] = {}
        self.end: dict[int, int] = {}
        self.prev: dict[int, int] = {}
        self.pos: dict[int, int] = {}
        self.open: dict[int, int] = {}  # stream -> last key of its open episode

    def live(self, key: int) -> bool:
        return key >= 0 and self.total - self.cap <= key < self.total

    def append(self, op: Append) -> tuple[list[int], list[int], list[int]]:
        start, n = self.total, op.n
        new_total = start + n
        kept = list(range(max(start, new_total - self.cap), new_total))
        evicted = sorted({k % self.cap for k in kept if self.rows[k % self.cap] >= 0})
        positions = []
        for i, (s, e) in enumerate(zip(op.streams, op.ends, strict=True)):
            key = start + i
            pred = self.open.get(s, -1)
            if pred >= max(0, new_total - self.cap):
                self.prev[key], self.pos[key] = pred, self.pos[pred] + 1
            else:
                self.prev[key], self.pos[key] = -1, 0
            self.stream[key], self.end[key] = s, e
            if e == END_NONE:
                self.open[s] = key
            else:
                self.open.pop(s, None)
            if key in kept:
                positions.append(self.pos[key])
        for k in kept:
            self.rows[k % self.cap] = k
        self.total = new_total
        return kept, positions, evicted

    def end_streams(self, op: EndStreams) -> None:
        for s in op.streams:
            self.open.pop(s, None)

    def next_of(self, key: int) -> int:
        after = [k for k, p in self.prev.items() if p == key and self.live(k)]
        return after[0] if after else -1


def check_against(s: Storage, ref: RefRing) -> None:
    assert s.total == ref.total
    assert s.num_rows == min(ref.total, ref.cap)
    assert s.key.tolist() == ref.rows
    live = [k for k in ref.rows if k >= 0]
    probe = t(range(-2, ref.total + 2))
    assert s.is_live(probe).tolist() == [ref.live(k) for k in probe.tolist()]
    if not live:
        return
    assert_rows_hold(s, live)
    rows = t(live) % ref.cap
    assert s.stream[rows].tolist() == [ref.stream[k] for k in live]
    assert s.end[rows].tolist() == [ref.end[k] for k in live]
    if ref.links:
        assert s.prev[rows].tolist() == [ref.prev[k] for k in live]
        assert s.next[rows].tolist() == [ref.next_of(k) for k in live]
        back = [ref.prev[k] if ref.live(ref.prev[k]) else -1 for k in live]
        assert s.walk(t(live), 1).tolist() == back
        assert s.walk(t(live), 1, "next").tolist() == [ref.next_of(k) for k in live]


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_ring_matches_a_list_model(data: st.DataObject) -> None:
    capacity = data.draw(st.integers(1, 6), label="capacity")
    links = data.draw(st.booleans(), label="links")
    ops = data.draw(storage_ops(capacity), label="ops")
    s, ref = Storage(MIXED_SPEC, capacity, links=links), RefRing(capacity, links)
    for op in ops:
        if isinstance(op, EndStreams):
            if links:
                s.end_streams(t(op.streams))
            ref.end_streams(op)
            continue
        start = s.total
        res = s.append(keyed_rows(range(start, start + op.n)), t(op.streams), t(op.ends))
        kept, positions, evicted = ref.append(op)
        assert res.keys.tolist() == kept
        assert res.first_key == (kept[0] if kept else start)
        assert sorted(res.evicted_rows.tolist()) == evicted
        if links:
            assert res.positions is not None
            assert res.positions.tolist() == positions
        else:
            assert res.positions is None
        check_against(s, ref)
    # A state_dict round trip carries everything, including open episodes.
    again = Storage(MIXED_SPEC, capacity, links=links)
    again.load_state_dict(s.state_dict())
    check_against(again, ref)
