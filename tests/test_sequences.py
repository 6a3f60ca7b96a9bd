"""Sequence tables: windows of one episode from interleaved streams, with wraparound."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from replaydb import Spec, Table, load_table, save_table
from replaydb.errors import InvalidArgumentError, WouldBlockForeverError
from replaydb.samplers import Prioritized

# Each step records who wrote it and where: the window checks need nothing else.
SPEC = Spec(
    {"key": ((), "int64"), "stream": ((), "int64"), "episode": ((), "int64"), "t": ((), "int64")}
)


def write_streams(
    table: Table, rng: random.Random, num_streams: int, steps: int, max_episode: int, batch: int
) -> dict[int, tuple[int, int, int, int]]:
    """Write ``steps`` interleaved steps; return key -> (stream, episode, t, end)."""
    written: dict[int, tuple[int, int, int, int]] = {}
    episode = [s * 10_000 for s in range(num_streams)]
    t = [0] * num_streams
    length = [rng.randint(1, max_episode) for _ in range(num_streams)]
    key = 0
    while key < steps:
        rows: dict[str, list[int]] = {"key": [], "stream": [], "episode": [], "t": []}
        streams, ends = [], []
        for _ in range(min(batch, steps - key)):
            s = rng.randrange(num_streams)
            end = 0
            if t[s] + 1 >= length[s]:
                end = rng.choice([1, 2])
            for name, v in (("key", key), ("stream", s), ("episode", episode[s]), ("t", t[s])):
                rows[name].append(v)
            written[key] = (s, episode[s], t[s], end)
            streams.append(s)
            ends.append(end)
            key += 1
            if end:
                episode[s] += 1
                t[s] = 0
                length[s] = rng.randint(1, max_episode)
            else:
                t[s] += 1
        st_t, end_t = torch.tensor(streams), torch.tensor(ends)
        n = len(streams)
        before = table.rate_limiter.inserts
        preview = table._items_completed(n, st_t, end_t)
        table.extend({k: torch.tensor(v) for k, v in rows.items()}, streams=st_t, ends=end_t)
        added = table.rate_limiter.inserts - before
        # What the limiter is asked to admit never undercounts; it overcounts only
        # windows whose first step the ring has already overwritten.
        assert preview >= added
    return written


def check_windows(table: Table, written: dict[int, tuple[int, int, int, int]], pad: bool) -> int:
    """Sample every item's window and check it; return how many items there were."""
    total = table.storage.total
    if len(table) == 0:
        return 0
    s = table.sample(4 * len(table) + 8)
    T = table.sequence_length
    # The one-shot stride path and plain link following agree on every window.
    fast = table.storage.window_rows(s.keys, T)
    assert torch.equal(fast, table.storage._follow_links(s.keys, T))
    keys, stream, ep, t = s["key"], s["stream"], s["episode"], s["t"]
    mask = s.mask if pad else torch.ones(keys.shape, dtype=torch.bool)
    assert mask is not None
    assert s.ends is not None
    for b in range(keys.shape[0]):
        valid = int(mask[b].sum())
        assert bool(mask[b, :valid].all())
        assert not bool(mask[b, valid:].any())
        assert valid == T or pad
        first = int(keys[b, 0])
        assert first == int(s.keys[b])  # the item key is the key of its first step
        for j in range(valid):
            k = int(keys[b, j])
            assert k >= total - table.capacity, "window holds an overwritten row"
            assert written[k][:3] == (int(stream[b, j]), int(ep[b, j]), int(t[b, j]))
            assert int(stream[b, j]) == int(stream[b, 0])
            assert int(ep[b, j]) == int(ep[b, 0])
            assert int(t[b, j]) == int(t[b, 0]) + j, "steps are not consecutive"
            assert int(s.ends[b, j]) == written[k][3]
            if j < valid - 1:
                assert written[k][3] == 0, "window crosses an episode end"
        if valid < T:
            assert written[int(keys[b, valid - 1])][3] != 0, "padding before the episode ended"
    return len(table)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    num_streams=st.integers(1, 4),
    T=st.integers(2, 5),
    capacity=st.integers(5, 40),
    steps=st.integers(1, 150),
    max_episode=st.integers(1, 12),
    batch=st.integers(1, 9),
    pad=st.booleans(),
)
def test_windows_are_valid(
    seed: int,
    num_streams: int,
    T: int,  # noqa: N803
    capacity: int,
    steps: int,
    max_episode: int,
    batch: int,
    pad: bool,
) -> None:
    capacity = max(capacity, T)
    table = Table(SPEC, capacity, sequence_length=T, pad=pad)
    rng = random.Random(seed)
    written = write_streams(table, rng, num_streams, steps, max_episode, batch)
    check_windows(table, written, pad)
    # Every live start with a complete (or, padded, ended) window is an item.
    total = table.storage.total
    live = [k for k in written if k >= total - capacity]
    expected = 0
    for k in live:
        s, e, _t0, _ = written[k]
        run = [kk for kk in live if kk >= k and written[kk][0] == s and written[kk][1] == e]
        if len(run) >= T or (pad and written[run[-1]][3] != 0):
            expected += 1
    assert len(table) == expected


def test_limiter_sees_exact_item_counts() -> None:
    table = Table(Spec({"x": ()}), 100, sequence_length=3, pad=True)
    streams = torch.tensor([0, 1, 0, 1, 0, 0, 1])
    ends = torch.tensor([0, 0, 0, 2, 0, 1, 0])
    # stream 0: 4 steps, ended: 2 full + 2 padded; stream 1: 2 steps ended at 1
    # (0 full + 2 padded), then 1 open step.
    assert table._items_completed(7, streams, ends) == 6
    table.extend({"x": torch.arange(7.0)}, streams=streams, ends=ends)
    assert table.rate_limiter.inserts == len(table) == 6


def test_no_step_is_stored_twice() -> None:
    table = Table(SPEC, 100, sequence_length=8)
    write_streams(table, random.Random(0), 3, 90, 30, 5)
    assert table.num_steps == 90
    assert table.storage.nbytes < 100 * 8 * 4 + 5 * 100 * 8 + 1


def test_short_episode_needs_padding() -> None:
    table = Table(Spec({"x": ()}), 10, sequence_length=4)
    table.extend({"x": torch.arange(3.0)}, ends=torch.tensor([0, 0, 2]))
    assert len(table) == 0
    with pytest.raises(WouldBlockForeverError, match="no complete item yet"):
        table.sample(1)
    padded = Table(Spec({"x": ()}), 10, sequence_length=4, pad=True)
    padded.extend({"x": torch.arange(3.0)}, ends=torch.tensor([0, 0, 2]))
    assert len(padded) == 3
    s = padded.sample(30)
    assert s.mask is not None
    first = s["x"][:, 0].long()
    assert torch.equal(s.mask.sum(1), 3 - first)


def test_prioritized_windows_follow_priorities() -> None:
    table = Table(
        Spec({"x": ()}), 50, sequence_length=3, sampler=Prioritized(alpha=1.0, eps=0.0, seed=0)
    )
    # Window starting at step i completes with step i + 2: its priority is that step's.
    pri = torch.tensor([1.0, 1.0, 1.0, 1.0, 97.0, 1.0])
    table.extend({"x": torch.arange(6.0)}, priorities=pri)
    s = table.sample(500)
    assert s["x"].shape == (500, 3)
    share = float((s["x"][:, 0] == 2.0).double().mean())
    assert share > 0.9
    assert table.update_priorities(s.keys[:1], torch.tensor([1.0])) == 1


def test_sequence_queue_waits_for_oldest_item(tmp_path: Path) -> None:
    q = Table.queue(Spec({"x": ()}), 3, sequence_length=2)  # 4 rows
    q.extend({"x": torch.arange(4.0)})  # items start at 0, 1, 2
    with pytest.raises(WouldBlockForeverError, match="never overwrites"):
        q.insert({"x": 4.0})
    s = q.sample(1)
    assert s["x"].tolist() == [[0.0, 1.0]]
    q.insert({"x": 4.0})  # overwrites step 0, which no live window needs
    restored = load_table(save_table(q, tmp_path / "q"))
    assert restored.sample(3)["x"].tolist() == [[1.0, 2.0], [2.0, 3.0], [3.0, 4.0]]


def test_pad_needs_sequences() -> None:
    with pytest.raises(InvalidArgumentError, match="pad=True needs sequence_length > 1"):
        Table(Spec({"x": ()}), 10, pad=True)
    with pytest.raises(InvalidArgumentError, match="pad must be a bool"):
        Table(Spec({"x": ()}), 10, sequence_length=2, pad=1)  # type: ignore[arg-type]
    t = Table(Spec({"x": ()}), 10, sequence_length=2, pad=True)
    assert Table.from_config(t.config()).pad is True


# ------------------------------------------------------- stride and final steps


def write_linked(
    table: Table, rng: random.Random, num_streams: int, steps: int, max_episode: int, batch: int
) -> tuple[dict[int, tuple[int, int, int, int]], dict[int, int], dict[int, int]]:
    """Write interleaved episodes; also model the ring's episode links.

    Returns ``written`` (key -> (stream, episode, t, end)), ``pos`` (key -> the
    step's position in its episode as the ring sees it: a step whose predecessor
    was overwritten by the time it is written starts a new episode) and ``succ``
    (key -> the next step of its episode).
    """
    cap = table.capacity
    written: dict[int, tuple[int, int, int, int]] = {}
    pos: dict[int, int] = {}
    succ: dict[int, int] = {}
    last: dict[int, int] = {}  # stream -> key of its open episode's last step
    episode = [s * 10_000 for s in range(num_streams)]
    t = [0] * num_streams
    length = [rng.randint(1, max_episode) for _ in range(num_streams)]
    key = 0
    while key < steps:
        n = min(rng.randint(1, batch), steps - key, cap)
        rows: dict[str, list[int]] = {"key": [], "stream": [], "episode": [], "t": []}
        streams, ends = [], []
        after = key + n  # links are made once the whole batch is written
        for _ in range(n):
            s = rng.randrange(num_streams)
            end = rng.choice([1, 2]) if t[s] + 1 >= length[s] else 0
            for name, v in (("key", key), ("stream", s), ("episode", episode[s]), ("t", t[s])):
                rows[name].append(v)
            if "frame" in table.spec:  # a frame per step: its key + 1, and negated
                rows.setdefault("frame", []).append([key + 1, -(key + 1)])  # type: ignore[arg-type]
            written[key] = (s, episode[s], t[s], end)
            p = last.pop(s, -1)
            if p >= 0 and p >= after - cap:
                pos[key], succ[p] = pos[p] + 1, key
            else:
                pos[key] = 0
            if end:
                episode[s] += 1
                t[s] = 0
                length[s] = rng.randint(1, max_episode)
            else:
                last[s] = key
                t[s] += 1
            streams.append(s)
            ends.append(end)
            key += 1
        st_t, end_t = torch.tensor(streams), torch.tensor(ends)
        before = table.rate_limiter.inserts
        preview = table._items_completed(n, st_t, end_t)
        table.extend({k: torch.tensor(v) for k, v in rows.items()}, streams=st_t, ends=end_t)
        assert preview >= table.rate_limiter.inserts - before
    return written, pos, succ


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    num_streams=st.integers(1, 3),
    T=st.integers(2, 5),
    stride=st.integers(1, 4),
    capacity=st.integers(5, 40),
    steps=st.integers(1, 120),
    max_episode=st.integers(1, 14),
    batch=st.integers(1, 9),
    pad=st.booleans(),
    final_step=st.booleans(),
)
def test_stride_and_final_step_against_a_reference(
    seed: int,
    num_streams: int,
    T: int,  # noqa: N803
    stride: int,
    capacity: int,
    steps: int,
    max_episode: int,
    batch: int,
    pad: bool,
    final_step: bool,
) -> None:
    capacity = max(capacity, T)
    table = Table(SPEC, capacity, sequence_length=T, pad=pad, stride=stride, final_step=final_step)
    written, pos, succ = write_linked(
        table, random.Random(seed), num_streams, steps, max_episode, batch
    )
    total = table.storage.total
    expected = []
    for k in written:
        if k < total - capacity or pos[k] % stride:
            continue
        run = [k]
        while len(run) < T and run[-1] in succ:
            run.append(succ[run[-1]])
        ended = written[run[-1]][3] != 0
        starts_at_final = final_step and written[k][3] != 0
        if len(run) == T or (pad and ended and not starts_at_final):
            expected.append(k)
    assert sorted(table.items(fields=()).keys.tolist()) == sorted(expected)
    assert check_windows(table, written, pad) == len(expected)
    if expected:
        s = table.sample(50)
        assert all(pos[int(k)] % stride == 0 for k in s.keys)


def test_stride_spaces_windows_per_stream() -> None:
    # Two streams interleaved, episodes of 7 steps: windows of 3 start at 0, 2, 4.
    table = Table(Spec({"t": ((), "int64")}), 100, sequence_length=3, stride=2)
    t = torch.arange(7).repeat_interleave(2)
    ends = torch.where(t == 6, 1, 0)
    table.extend({"t": t}, streams=torch.tensor([0, 1] * 7), ends=ends)
    assert len(table) == 6
    assert sorted(set(table.sample(100)["t"][:, 0].tolist())) == [0, 2, 4]


def test_stride_validation_and_config_round_trip(tmp_path: Path) -> None:
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(InvalidArgumentError, match="stride must be an int >= 1"):
            Table(Spec({"x": ()}), 10, sequence_length=2, stride=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="stride=2 needs sequence_length > 1"):
        Table(Spec({"x": ()}), 10, stride=2)
    with pytest.raises(InvalidArgumentError, match="final_step must be a bool"):
        Table(Spec({"x": ()}), 10, sequence_length=2, final_step=1)  # type: ignore[arg-type]
    numpy_stride = Table(Spec({"x": ()}), 10, sequence_length=3, stride=np.int64(2))
    assert type(numpy_stride.config()["stride"]) is int  # JSON-serializable
    t = Table(Spec({"x": ()}), 10, sequence_length=3, stride=2, pad=True, final_step=True)
    config = t.config()
    assert (config["stride"], config["final_step"]) == (2, True)
    again = Table.from_config(config)
    assert (again.stride, again.final_step) == (2, True)
    # Configs written before the keys existed load as stride 1, no final steps.
    old = {k: v for k, v in config.items() if k not in ("stride", "final_step", "frame_stack")}
    legacy = Table.from_config(old)
    assert (legacy.stride, legacy.final_step, legacy.frame_stack) == (1, False, {})
    # Through a checkpoint file, with items.
    t.extend({"x": torch.arange(9.0)}, ends=torch.tensor([0] * 8 + [1]))
    loaded = load_table(save_table(t, tmp_path / "strided"))
    assert loaded.stride == 2 and loaded.final_step
    assert sorted(loaded.items(fields=()).keys.tolist()) == sorted(t.items(fields=()).keys.tolist())


def test_limiter_counts_strided_and_final_step_items_exactly() -> None:
    table = Table(Spec({"x": ()}), 100, sequence_length=3, pad=True, stride=2, final_step=True)
    streams = torch.tensor([0, 1, 0, 1, 0, 0, 1, 0])
    ends = torch.tensor([0, 0, 0, 2, 0, 0, 0, 1])
    # stream 0: 5 steps, the last a final step: full windows at 0, 2 (not 1); the
    # padded start 3 is off the stride and the final step 4 starts none. stream 1:
    # 2 steps ended (padded window at 0; 1 is the final step), then 1 open step.
    assert table._items_completed(8, streams, ends) == 3
    table.extend({"x": torch.arange(8.0)}, streams=streams, ends=ends)
    assert table.rate_limiter.inserts == len(table) == 3
    assert sorted(table.items(fields=()).keys.tolist()) == [0, 1, 4]


def test_recurrent_state_at_the_window_start_for_burn_in() -> None:
    # R2D2: each step stores the actor's recurrent state; a window's first step holds
    # the state to start its unroll from. The state is a function of (stream, t) here.
    H, T, burn_in, envs = 3, 6, 2, 4
    table = Table(
        Spec({"t": ((), "int64"), "hidden": (H,)}), 200, sequence_length=T, stride=T - burn_in
    )
    for t in range(30):
        streams = torch.arange(envs)
        hidden = torch.stack([streams * 100.0 + t, -streams * 1.0, torch.full((envs,), t)], 1)
        table.extend({"t": torch.full((envs,), t), "hidden": hidden}, streams=streams)
    s = table.sample(200)
    start_t = s["t"][:, 0]
    assert bool((start_t % (T - burn_in) == 0).all())
    h0 = s["hidden"][:, 0]
    assert torch.equal(h0[:, 2], start_t.float())
    stream = -h0[:, 1]
    assert torch.equal(h0[:, 0], stream * 100 + start_t)
    # every step of the window carries its own state (burn-in refreshes from h0)
    assert torch.equal(s["hidden"][:, :, 2], s["t"].float())
