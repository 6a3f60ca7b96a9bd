"""The Velora drop-in contract without Velora: config, attributes, state_dict, warm,
devices, Table semantics, thread safety, crash-safe saves and hostile metadata."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from replaydb import ReplayBuffer, Table
from replaydb.buffer import BufferConfig
from replaydb.errors import (
    CheckpointError,
    InvalidArgumentError,
    ReplayError,
    WouldBlockForeverError,
)
from replaydb.samplers import Uniform

KEYS = ("states", "actions", "rewards", "next_states", "dones", "hiddens")
SRC = Path(__file__).resolve().parents[1] / "src"


def fill(buffer: ReplayBuffer, n: int, start: int = 0) -> None:
    """n transitions whose every field holds the transition's number."""
    ids = torch.arange(start, start + n, dtype=torch.float32).unsqueeze(1)
    buffer.add_multi(
        ids.expand(n, buffer.state_dim),
        ids.expand(n, buffer.action_dim),
        ids,
        ids.expand(n, buffer.state_dim),
        ids.remainder(2),
        ids.expand(n, buffer.hidden_dim),
    )


# ------------------------------------------------------------------ config
def test_config_is_velora_buffer_config() -> None:
    cfg = ReplayBuffer(100, 4, 2, 8).config()
    assert isinstance(cfg, BufferConfig)
    expected = {"type": "ReplayBuffer", "capacity": 100, "state_dim": 4, "action_dim": 2}
    assert cfg == {**expected, "hidden_dim": 8}
    assert cfg != {**expected, "hidden_dim": 9}
    assert cfg == SimpleNamespace(**expected, hidden_dim=8)  # what pydantic models look like
    assert cfg != SimpleNamespace(**expected, hidden_dim=7)
    assert cfg != 5
    assert dict(cfg) == cfg.model_dump() == {**expected, "hidden_dim": 8}
    assert list(cfg) == ["type", "capacity", "state_dim", "action_dim", "hidden_dim"]
    assert cfg["capacity"] == 100
    with pytest.raises(KeyError):
        cfg["device"]
    assert hash(cfg) == hash(ReplayBuffer(100, 4, 2, 8).config())
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.capacity = 5  # type: ignore[misc]


# -------------------------------------------------------- storage attributes
def test_six_storage_attributes_are_live_views() -> None:
    buffer = ReplayBuffer(10, 3, 2, 4)
    shapes = {k: tuple(getattr(buffer, k).shape) for k in KEYS}
    assert shapes == {
        "states": (10, 3),
        "actions": (10, 2),
        "rewards": (10, 1),
        "next_states": (10, 3),
        "dones": (10, 1),
        "hiddens": (10, 4),
    }
    fill(buffer, 12)  # wraps: rows 0, 1 hold transitions 10, 11
    assert buffer.states[0].tolist() == [10.0] * 3
    assert buffer.rewards[1].tolist() == [11.0]
    assert buffer.dones[:2, 0].tolist() == [0.0, 1.0]
    assert buffer.hiddens[5].tolist() == [5.0] * 4
    assert (buffer.position, buffer.size, len(buffer)) == (2, 10, 10)
    assert buffer.capacity == 10
    assert (buffer.state_dim, buffer.action_dim, buffer.hidden_dim) == (3, 2, 4)


def test_state_dict_is_dense_copies_that_safetensors_saves(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    buffer = ReplayBuffer(10, 3, 2, 4)
    fill(buffer, 7)
    sd = buffer.state_dict()
    assert list(sd) == list(KEYS)
    assert all(t.is_contiguous() for t in sd.values())
    save_file(sd, str(tmp_path / "b.safetensors"))  # what Velora's save_model calls
    back = load_file(str(tmp_path / "b.safetensors"))
    for k in KEYS:
        assert torch.equal(back[k], getattr(buffer, k))
    sd["states"].fill_(-1.0)  # a copy: the buffer is untouched
    assert buffer.states[0].tolist() == [0.0] * 3


# ------------------------------------------------------------------- warm
@pytest.mark.parametrize("num_envs", [1, 0, -3, True, 2.0])
def test_warm_keeps_velora_num_envs_contract(num_envs: object) -> None:
    buffer = ReplayBuffer(10, 4, 1, 0)
    with pytest.raises(ValueError, match=r"num_envs=.*cannot be smaller than 2"):
        buffer.warm("random", 5, num_envs)  # type: ignore[arg-type]
    assert len(buffer) == 0


# ----------------------------------------------------------------- devices
def test_device_by_position_and_keyword() -> None:
    assert ReplayBuffer(100, 4, 2, 8, "cpu").device == torch.device("cpu")
    assert ReplayBuffer(100, 4, 2, 8, torch.device("cpu")).device == torch.device("cpu")
    assert ReplayBuffer(100, 4, 2, 8, device=None).device == torch.device("cpu")


@pytest.mark.parametrize(
    ("device", "named"),
    [
        ("garbage", "garbage"),
        ("meta", "meta"),
        ("mps", "mps"),
        ("cuda", "cuda"),
        ("cuda:7", "cuda:7"),
        (3.5, "3.5"),
    ],
)
def test_unusable_device_is_one_clear_error(device: object, named: str) -> None:
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(InvalidArgumentError, match=re.escape(named)):
        ReplayBuffer(10, 2, 1, 0, device=device)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=re.escape(named)):
        ReplayBuffer.prioritized(10, 2, 1, 0, device=device)  # type: ignore[arg-type]


# --------------------------------------------------------- Table semantics
def twin_tables(seed: int, **kw: object) -> tuple[Table, Table]:
    spec = ReplayBuffer.transition_spec(2, 1, 0)
    return tuple(  # type: ignore[return-value]
        Table(spec, 8, sampler=Uniform(seed=seed), **kw)  # type: ignore[arg-type]
        for _ in range(2)
    )


def outcome(fn: object) -> object:
    try:
        return [t.tolist() for t in fn().values()]  # type: ignore[operator]
    except ReplayError as exc:
        return type(exc)


def test_consuming_table_is_consumed_as_table_sample_would() -> None:
    """Issue 10: five sample(4) on 4 items with max_times_sampled=1 consumed nothing."""
    a, b = twin_tables(3, max_times_sampled=1)
    buffer = ReplayBuffer(8, 2, 1, 0, table=a)
    fill(buffer, 4)
    fill(ReplayBuffer(8, 2, 1, 0, table=b), 4)
    outcomes = []
    for _ in range(5):
        got = outcome(lambda: {k: getattr(buffer.sample(4), k) for k in KEYS})
        want = outcome(lambda: {k: b.sample(4).data[k] for k in KEYS})
        assert got == want
        assert len(a) == len(b)
        outcomes.append(got)
    assert outcomes[-1] is WouldBlockForeverError  # nothing left to draw
    assert len(a) == 0  # every item was consumed


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    n=st.integers(1, 20),
    batches=st.lists(st.integers(1, 6), min_size=1, max_size=6),
    limit=st.one_of(st.none(), st.integers(1, 3)),
)
def test_buffer_sample_equals_table_sample(
    seed: int, n: int, batches: list[int], limit: int | None
) -> None:
    a, b = twin_tables(seed, max_times_sampled=limit)
    buffer = ReplayBuffer(8, 2, 1, 0, table=a)
    fill(buffer, n)
    fill(ReplayBuffer(8, 2, 1, 0, table=b), n)
    for size in batches:
        if size > buffer.size:
            continue
        got = outcome(lambda s=size: {k: getattr(buffer.sample(s), k) for k in KEYS})
        want = outcome(lambda s=size: {k: b.sample(s).data[k] for k in KEYS})
        assert got == want
        assert len(a) == len(b)
    if limit is not None:  # sample_data counts times only where they decide removals
        assert torch.equal(
            a.state_dict()["items.times_sampled"], b.state_dict()["items.times_sampled"]
        )


def test_buffer_reaches_table_through_public_verbs_only() -> None:
    source = "".join(p.read_text() for p in sorted((SRC / "replaydb" / "buffer").glob("*.py")))
    assert not re.findall(r"\b(?:table|storage|sampler)\._\w+", source)


# ----------------------------------------------------------------- input checks
def test_none_reward_or_done_and_odd_tensors_are_rejected_by_name() -> None:
    buffer = ReplayBuffer(10, 2, 1, 0)
    s = torch.zeros(2)
    with pytest.raises(InvalidArgumentError, match="reward must be a number, got None"):
        buffer.add(s, 0.0, None, s, False)
    with pytest.raises(InvalidArgumentError, match="done must be a number, got None"):
        buffer.add(s, 0.0, 1.0, s, None)
    with pytest.raises(InvalidArgumentError, match="state: sparse tensors"):
        buffer.add(s.to_sparse(), 0.0, 1.0, s, False)
    with pytest.raises(InvalidArgumentError, match="next_state: a tensor on the 'meta'"):
        buffer.add(s, 0.0, 1.0, torch.zeros(2, device="meta"), False)
    with pytest.raises(InvalidArgumentError, match="hidden: sparse"):
        ReplayBuffer(10, 2, 1, 2).add(s, 0.0, 1.0, s, False, torch.zeros(2).to_sparse())
    z = torch.zeros(3)
    with pytest.raises(InvalidArgumentError, match="rewards: a tensor on the 'meta'"):
        buffer.add_multi(torch.zeros(3, 2), z, z.to("meta"), torch.zeros(3, 2), z)
    with pytest.raises(InvalidArgumentError, match="states: sparse"):
        buffer.add_multi(torch.zeros(3, 2).to_sparse(), z, z, torch.zeros(3, 2), z)
    with pytest.raises(InvalidArgumentError, match="dones: expected a tensor or array"):
        buffer.add_multi(torch.zeros(3, 2), z, z, torch.zeros(3, 2), None)
    assert len(buffer) == 0
    assert buffer.table.total_steps_written == 0


def test_table_argument_must_fit() -> None:
    spec = ReplayBuffer.transition_spec(2, 1, 0)
    with pytest.raises(InvalidArgumentError, match="capacity 8"):
        ReplayBuffer(8, 2, 1, 0, table=Table(spec, 9))
    with pytest.raises(InvalidArgumentError, match="transition_spec"):
        ReplayBuffer(8, 3, 1, 0, table=Table(spec, 8))
    with pytest.raises(InvalidArgumentError, match="must be a replaydb Table"):
        ReplayBuffer(8, 2, 1, 0, table=object())  # type: ignore[arg-type]


# ----------------------------------------------------------------- threads
@pytest.mark.parametrize("verb", ["add", "add_multi"])
def test_eight_threads_never_tear_duplicate_or_lose(verb: str) -> None:
    """Issue 11: 8 threads tore single adds and duplicated or lost add_multi rows."""
    per_thread, threads = 2000, 8  # enough for the old code to tear (68 rows) and lose rows
    buffer = ReplayBuffer(per_thread * threads, 3, 2, 4)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can

    def writer(t: int) -> None:
        base = t * per_thread
        if verb == "add":
            for i in range(base, base + per_thread):
                v = float(i)
                buffer.add(
                    torch.full((3,), v),
                    torch.full((2,), v),
                    v,
                    torch.full((3,), v),
                    float(i % 2),
                    torch.full((4,), v),
                )
        else:
            for i in range(base, base + per_thread, 25):
                fill(buffer, 25, start=i)

    try:
        pool = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
        for th in pool:
            th.start()
        for th in pool:
            th.join()
    finally:
        sys.setswitchinterval(old)
    rows = torch.cat([getattr(buffer, k) for k in KEYS if k != "dones"], dim=1)
    ids = rows[:, 0]
    assert bool((rows == ids.unsqueeze(1)).all()), "a transition was torn"
    assert torch.equal(buffer.dones[:, 0], ids.remainder(2))
    assert sorted(ids.long().tolist()) == list(range(per_thread * threads))


# ----------------------------------------------------------------- metadata
def saved(tmp_path: Path, buffer: ReplayBuffer | None = None) -> dict[str, object]:
    if buffer is None:
        buffer = ReplayBuffer(8, 2, 1, 0)
        fill(buffer, 5)
    buffer.save(tmp_path)
    meta: dict[str, object] = json.loads((tmp_path / "buffer_metadata.json").read_text())
    return meta


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"device": "garbage"}, "device"),
        ({"device": 5}, "device"),
        ({"device": ["cpu"]}, "device"),
        ({"capacity": "8"}, "capacity"),
        ({"size": None}, "size"),
        ({"previous": 5}, "previous"),
        ({"table": "x"}, "table"),
        ({"table": {"file": "../x.safetensors", "sha256": "0", "config": {}}}, "table"),
        ({"table": {"file": "t.safetensors", "sha256": "0", "config": {}}}, "missing"),
        ({"state_sha256": 7}, "state_sha256"),
    ],
)
def test_malformed_metadata_is_a_checkpoint_error(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    meta = {**saved(tmp_path), **change}
    with pytest.raises(CheckpointError, match=message):
        ReplayBuffer.load(tmp_path / "buffer_state.safetensors", meta)
    with pytest.raises(CheckpointError, match="dict read from"):
        ReplayBuffer.load(tmp_path / "buffer_state.safetensors", [meta])  # type: ignore[arg-type]


def test_device_override_loads_a_file_from_an_absent_device(tmp_path: Path) -> None:
    meta = {**saved(tmp_path), "device": "cuda:9"}
    with pytest.raises(CheckpointError, match=r"device='cpu'"):
        ReplayBuffer.load(tmp_path / "buffer_state.safetensors", meta)
    loaded = ReplayBuffer.load(tmp_path / "buffer_state.safetensors", meta, device="cpu")
    assert len(loaded) == 5


# ---------------------------------------------------------- crash safety
def test_new_metadata_beside_old_state_loads_the_old_buffer(tmp_path: Path) -> None:
    """What a kill between the two renames of a save leaves behind."""
    old = ReplayBuffer(8, 2, 1, 0)
    fill(old, 3)
    saved(tmp_path, old)
    old_state = (tmp_path / "buffer_state.safetensors").read_bytes()
    new = ReplayBuffer(8, 2, 1, 0)
    fill(new, 6, start=100)
    meta = saved(tmp_path, new)
    assert isinstance(meta["previous"], dict)
    assert meta["previous"]["size"] == 3
    (tmp_path / "buffer_state.safetensors").write_bytes(old_state)
    back = ReplayBuffer.load(tmp_path / "buffer_state.safetensors", meta)
    assert (back.size, back.position) == (3, 3)
    assert torch.equal(back.states, old.states)
    # Anything else still fails the checksum.
    (tmp_path / "buffer_state.safetensors").write_bytes(old_state[:-1] + b"x")
    with pytest.raises(CheckpointError, match="SHA-256"):
        ReplayBuffer.load(tmp_path / "buffer_state.safetensors", meta)


_KILLER = """
import os, sys, torch
from replaydb import ReplayBuffer
kind, verb, nth, directory = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
make = ReplayBuffer.prioritized if kind == "prioritized" else ReplayBuffer
buf = make(16, 2, 1, 1, seed=1) if kind == "prioritized" else make(16, 2, 1, 1)
ids = torch.arange(100, 110, dtype=torch.float32).unsqueeze(1)
buf.add_multi(ids.expand(10, 2), ids, ids, ids.expand(10, 2), ids.remainder(2), ids)
real = getattr(os, verb)
calls = [0]
def dying(*args, **kwargs):
    calls[0] += 1
    if calls[0] == nth:
        os._exit(9)  # no cleanup, no finally: like SIGKILL
    return real(*args, **kwargs)
setattr(os, verb, dying)
buf.save(directory)
os._exit(0)
"""


@pytest.mark.parametrize("kind", ["plain", "prioritized"])
@pytest.mark.parametrize(
    ("verb", "nth"), [("replace", 1), ("replace", 2), ("replace", 3), ("unlink", 1)]
)
def test_kill_at_any_step_of_save_leaves_old_or_new(
    tmp_path: Path, kind: str, verb: str, nth: int
) -> None:
    """Issue 11: a kill between the two renames left an unloadable buffer."""
    old = ReplayBuffer.prioritized(16, 2, 1, 1, seed=1) if kind == "prioritized" else None
    old = old if old is not None else ReplayBuffer(16, 2, 1, 1)
    fill(old, 4)
    old.save(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), *sys.path])}
    proc = subprocess.run(
        [sys.executable, "-c", _KILLER, kind, verb, str(nth), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode in (0, 9), proc.stderr
    meta = json.loads((tmp_path / "buffer_metadata.json").read_text())
    back = ReplayBuffer.load(tmp_path / "buffer_state.safetensors", meta)
    first = float(back.states[0, 0])
    if first == 0.0:  # the old buffer
        assert (back.size, back.position) == (4, 4)
        assert torch.equal(back.states, old.states)
    else:  # the new one
        assert first == 100.0
        assert (back.size, back.position) == (10, 10)
    if kind == "prioritized":
        b = back.sample(4)
        assert b.weights is not None
        assert b.keys is not None
    # The next save removes the dead process's temporaries and unused table files.
    back.save(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[:2] == ["buffer_metadata.json", "buffer_state.safetensors"]
    assert len(names) == (3 if kind == "prioritized" else 2)


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)
    stale = tmp_path / f".buffer_state.safetensors.tmp-{pid}-123"
    mine = tmp_path / f".buffer_metadata.json.tmp-{os.getpid()}-456"
    other = tmp_path / f".other_state.safetensors.tmp-{pid}-789"
    for p in (stale, mine, other):
        p.write_bytes(b"x" * 100)
    saved(tmp_path)
    assert not stale.exists()
    assert mine.exists()  # a live process (this one) may still be writing it
    assert other.exists()  # another prefix's files are not ours to touch
    stale.write_bytes(b"x")
    meta = json.loads((tmp_path / "buffer_metadata.json").read_text())
    ReplayBuffer.load(tmp_path / "buffer_state.safetensors", meta)
    assert not stale.exists()


def test_velora_agent_call_shapes_store_the_same_row() -> None:
    """Velora's agents pass (1, dim) actions and hiddens and 0-d tensor rewards and dones."""
    a, b = ReplayBuffer(4, 3, 2, 5), ReplayBuffer(4, 3, 2, 5)
    s, s2 = torch.arange(3.0), torch.arange(3.0) + 10
    act, hid = torch.tensor([[0.5, -0.5]]), torch.arange(5.0).unsqueeze(0)
    a.add(s.unsqueeze(0), act, torch.tensor(2.5, dtype=torch.float64), s2.unsqueeze(0),
          torch.tensor(True), hid)  # fmt: skip
    b.add(s, act[0], 2.5, s2, True, hid[0])
    for k in KEYS:
        assert torch.equal(getattr(a, k), getattr(b, k)), k
    assert a.rewards[0].tolist() == [2.5]
    assert a.dones[0].tolist() == [1.0]
    with pytest.raises(InvalidArgumentError, match="reward"):
        a.add(s, act, torch.ones(1, 1, 1), s2, False, hid)
    with pytest.raises(InvalidArgumentError, match="hidden"):
        a.add(s, act, 1.0, s2, False, torch.zeros(2, 5))
    assert len(a) == 1
