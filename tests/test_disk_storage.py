"""Disk-backed tables (issue 14 item 1): Table(..., path=DIR)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from replaydb import Spec, Table, storage
from replaydb._disk import JOURNAL, STATE, check_device
from replaydb.errors import (
    CheckpointError,
    DeviceError,
    InsufficientMemoryError,
    InvalidArgumentError,
    InvalidTypeError,
)
from replaydb.samplers import Prioritized, Uniform
from replaydb.storage import Storage

SPEC = Spec({"obs": ((3,), "float32"), "frame": ((6, 6), "uint8"), "done": ((), "bool")})


def _steps(start: int, n: int) -> dict[str, torch.Tensor]:
    keys = torch.arange(start, start + n)
    return {
        "obs": keys.float().unsqueeze(1).expand(n, 3).clone(),
        "frame": (keys % 251).to(torch.uint8).view(n, 1, 1).expand(n, 6, 6).clone(),
        "done": keys % 2 == 0,
    }


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------ round trip
@pytest.mark.parametrize("sequence_length", [1, 3])
def test_round_trip_same_state_and_samples(tmp_path: Path, sequence_length: int) -> None:
    t = Table(
        SPEC,
        16,
        sampler=Prioritized(alpha=0.7, seed=5),
        sequence_length=sequence_length,
        path=tmp_path,
    )
    assert t.path == str(tmp_path)
    t.extend(_steps(0, 20), ends=torch.tensor([0] * 9 + [1] + [0] * 10))
    first = t.sample(4)
    t.update_priorities(first.keys, torch.full((4,), 3.0))
    assert t.checkpoint() == 20
    state = t.state_dict()
    after = t.sample(8)
    del t
    back = Table.open(tmp_path)
    _same_state(state, back.state_dict())
    again = back.sample(8)
    assert torch.equal(after.keys, again.keys)
    for name in SPEC:
        assert torch.equal(after[name], again[name])


def test_reopen_through_the_constructor_continues_writing(tmp_path: Path) -> None:
    t = Table(SPEC, 8, sampler=Uniform(seed=1), path=tmp_path)
    t.extend(_steps(0, 5))
    t.checkpoint()
    del t
    t = Table(SPEC, 8, sampler=Uniform(seed=1), path=tmp_path)
    assert (len(t), t.total_steps_written) == (5, 5)
    t.extend(_steps(5, 6))  # wraps the ring
    t.checkpoint()
    del t
    t = Table.open(tmp_path)
    assert (len(t), t.total_steps_written) == (8, 11)
    s = t.sample(16)
    assert torch.equal(s["obs"][:, 0], s.keys.float())
    assert torch.equal(s["frame"][:, 0, 0], (s.keys % 251).to(torch.uint8))
    assert torch.equal(s["done"], s.keys % 2 == 0)


def test_a_new_directory_is_reopenable_before_any_checkpoint(tmp_path: Path) -> None:
    d = tmp_path / "new" / "table"
    Table(SPEC, 4, path=d)
    assert sorted(os.listdir(d)) == sorted(
        [JOURNAL, STATE, "data.float32.bin", "data.uint8.bin", "data.bool.bin"]
    )
    t = Table.open(d)
    assert len(t) == 0 and t.capacity == 4


@pytest.mark.parametrize(
    ("dtype", "shape"),
    [
        (torch.uint8, (84, 84)),
        (torch.bool, ()),
        (torch.bool, (2, 3)),
        (torch.float16, (5,)),
        (torch.bfloat16, (2, 2)),
        (torch.int64, ()),
        (torch.int8, (1, 2, 3)),
        (torch.float64, (4,)),
        (torch.int16, (2,)),
        (torch.int32, (3, 1)),
    ],
)
def test_any_dtype_and_shape(tmp_path: Path, dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    spec = Spec({"x": (shape, dtype), "r": ()})
    gen = torch.Generator().manual_seed(0)
    if dtype == torch.bool:
        x = torch.rand((6, *shape), generator=gen) > 0.5
    elif dtype.is_floating_point or dtype.is_complex:
        x = torch.randn((6, *shape), generator=gen).to(dtype)
    else:
        x = torch.randint(0, 100, (6, *shape), generator=gen).to(dtype)
    t = Table(spec, 4, path=tmp_path)
    t.extend({"x": x, "r": torch.arange(6.0)})
    t.checkpoint()
    del t
    back = Table.open(tmp_path)
    s = back.sample(8)
    assert s["x"].dtype == dtype and s["x"].shape == (8, *shape)
    assert torch.equal(s["x"], x[s.keys])
    assert torch.equal(s["r"], s.keys.float())


# --------------------------------------------------- bigger than memory
def test_bigger_than_memory_goes_to_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = Spec({"frame": ((84, 84), "uint8")})
    cap = 2_000  # 14 MB of frames, 0.2 MB of bookkeeping
    monkeypatch.setattr(storage._preflight, "available_memory", lambda device: 2 * 2**20)
    with pytest.raises(InsufficientMemoryError, match=r"path=DIR"):
        Table(spec, cap)
    t = Table(spec, cap, path=tmp_path)
    t.extend({"frame": torch.full((3, 84, 84), 7, dtype=torch.uint8)})
    assert int(t.sample(2)["frame"].max()) == 7
    size = (tmp_path / "data.uint8.bin").stat().st_size
    assert size == cap * 84 * 84


def test_disk_preflight_checks_free_disk_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Usage:
        free = 1_000_000

    monkeypatch.setattr(storage._preflight.shutil, "disk_usage", lambda path: Usage())
    spec = Spec({"frame": ((84, 84), "uint8")})
    with pytest.raises(InsufficientMemoryError, match=r"needs 6\.73 MiB more on the disk"):
        Table(spec, 1_000, path=tmp_path / "t")
    assert not (tmp_path / "t" / "data.uint8.bin").exists()
    Table(spec, 100, path=tmp_path / "t")  # 0.7 MB fits
    # Data files of another size (a table whose state file was removed) are not reused.
    (tmp_path / "t" / STATE).unlink()
    monkeypatch.setenv(storage.MEMORY_CHECK_ENV, "0")
    with pytest.raises(CheckpointError, match="another spec or capacity"):
        Table(spec, 1_000, path=tmp_path / "t")


# ------------------------------------------------------ reopen validation
def test_reopen_with_another_layout_is_a_clear_error(tmp_path: Path) -> None:
    Table(SPEC, 8, sampler=Uniform(seed=1), path=tmp_path).checkpoint()
    before = {p.name: p.stat().st_size for p in tmp_path.iterdir()}
    with pytest.raises(InvalidArgumentError, match=r"capacity=8, but capacity=9 was given"):
        Table(SPEC, 9, path=tmp_path)
    with pytest.raises(InvalidArgumentError, match=r"holds a table with spec="):
        Table(Spec({"obs": (3,)}), 8, path=tmp_path)
    with pytest.raises(InvalidArgumentError, match=r"sequence_length=1, but sequence_length=2"):
        Table(SPEC, 8, sequence_length=2, path=tmp_path)
    with pytest.raises(InvalidArgumentError, match=r"sampler=.*Table.open\(path\)"):
        Table(SPEC, 8, sampler=Uniform(seed=2), path=tmp_path)
    # Rejections leave the directory as it was.
    assert {p.name: p.stat().st_size for p in tmp_path.iterdir()} == before
    assert Table.open(tmp_path).capacity == 8


def test_corrupt_or_missing_state_raises_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="holds no disk-backed table"):
        Table.open(tmp_path)
    t = Table(SPEC, 8, path=tmp_path)
    t.extend(_steps(0, 3))
    t.checkpoint()
    del t
    state = tmp_path / STATE
    raw = bytearray(state.read_bytes())
    raw[-5] ^= 0xFF  # a byte of the bookkeeping tensors
    state.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        Table.open(tmp_path)
    state.write_bytes(b"not a table")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        Table.open(tmp_path)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        Table(SPEC, 8, path=tmp_path)


def test_a_plain_table_file_is_not_a_disk_table(tmp_path: Path) -> None:
    from replaydb.checkpoint import save_table

    save_table(Table(SPEC, 8), tmp_path / STATE)
    with pytest.raises(CheckpointError, match="not a disk-backed table's state"):
        Table.open(tmp_path)


def test_path_must_be_a_directory_on_the_cpu(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InvalidArgumentError, match="is not a directory"):
        Table(SPEC, 8, path=f)
    with pytest.raises(DeviceError, match=r"memory-mapped files on the CPU; use device='cpu'"):
        check_device(torch.device("cuda"), tmp_path)
    with pytest.raises(DeviceError):
        Table(SPEC, 8, device="meta", path=tmp_path)
    assert list(tmp_path.iterdir()) == [f]


def test_path_must_be_a_path(tmp_path: Path) -> None:
    for bad in (3, "", b"dir"):
        with pytest.raises(InvalidTypeError, match="path must be a directory name"):
            Table(SPEC, 8, path=bad)  # type: ignore[arg-type]


@pytest.mark.gpu
def test_a_gpu_device_with_a_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match=r"memory-mapped files on the CPU"):
        Table(SPEC, 8, device="cuda", path=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_needs_a_disk_backed_table() -> None:
    with pytest.raises(InvalidArgumentError, match="checkpoint\\(\\) is for disk-backed tables"):
        Table(SPEC, 8).checkpoint()
    assert Table(SPEC, 8).path is None


# ------------------------------------------------------- crash consistency
def test_rows_overwritten_after_the_commit_are_dropped_on_reopen(tmp_path: Path) -> None:
    t = Table(SPEC, 8, path=tmp_path)
    t.extend(_steps(0, 8))
    t.checkpoint()
    t.extend(_steps(8, 3))  # overwrites rows 0..2, never committed
    del t  # the process "dies" here
    with pytest.warns(RuntimeWarning, match=r"3 item\(s\) were dropped"):
        back = Table.open(tmp_path)
    assert back.total_steps_written == 8
    assert sorted(back.items(fields=()).keys.tolist()) == [3, 4, 5, 6, 7]
    s = back.sample(32)
    assert torch.equal(s["obs"][:, 0], s.keys.float())
    back.extend(_steps(8, 2))
    assert back.sample(64)["obs"][:, 0].max() == 9


def test_sequence_windows_touching_overwritten_rows_are_dropped(tmp_path: Path) -> None:
    t = Table(SPEC, 8, sequence_length=3, path=tmp_path)
    t.extend(_steps(0, 8))
    t.checkpoint()
    t.extend(_steps(8, 1))  # row 0: the window starting at key 0 loses its first step
    del t
    with pytest.warns(RuntimeWarning, match=r"1 item\(s\)"):
        back = Table.open(tmp_path)
    assert sorted(back.items(fields=()).keys.tolist()) == [1, 2, 3, 4, 5]


def test_a_reset_after_the_commit_drops_everything_on_reopen(tmp_path: Path) -> None:
    t = Table(SPEC, 8, path=tmp_path)
    t.extend(_steps(0, 4))
    t.checkpoint()
    t.reset()  # zeroes the data files
    del t
    with pytest.warns(RuntimeWarning, match=r"4 item\(s\)"):
        back = Table.open(tmp_path)
    assert len(back) == 0
    back.extend(_steps(4, 2))
    assert sorted(back.items(fields=()).keys.tolist()) == [4, 5]


def test_the_velora_fast_path_records_its_writes(tmp_path: Path) -> None:
    s = Storage(Spec({"x": (2,)}), 4, path=tmp_path)
    assert s.files is not None
    s.append_numpy({"x": [[1.0, 2.0]] * 3}, 3)
    assert s.files.intent == 3
    s.append({"x": torch.ones(2, 2)})
    assert s.files.intent == 5


@settings(max_examples=25, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("extend"), st.integers(1, 12)),
            st.tuples(st.just("checkpoint"), st.just(0)),
            st.tuples(st.just("sample"), st.integers(1, 4)),
        ),
        max_size=12,
    )
)
def test_reopen_gives_the_last_commit_minus_overwritten_rows(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int]]
) -> None:
    """Against a reference: the committed snapshot of an in-memory twin."""
    cap = 8
    d = tmp_path_factory.mktemp("ref")
    disk = Table(SPEC, cap, sampler=Uniform(seed=3), path=d)
    twin = Table(SPEC, cap, sampler=Uniform(seed=3))
    committed = twin.snapshot()[1]
    for op, n in ops:
        if op == "extend":
            start = twin.total_steps_written
            disk.extend(_steps(start, n))
            twin.extend(_steps(start, n))
        elif op == "checkpoint":
            disk.checkpoint()
            committed = twin.snapshot()[1]
        elif len(twin):
            assert torch.equal(disk.sample(n).keys, twin.sample(n).keys)
    final = twin.total_steps_written
    del disk  # killed: nothing after the last checkpoint is committed
    c = int(committed["storage.total"][0])
    dirty = {k % cap for k in range(c, final)}
    items = committed["items.key"]
    expected = sorted(k for k in items[items >= 0].tolist() if k % cap not in dirty)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        back = Table.open(d)
    assert back.total_steps_written == c
    assert sorted(back.items(fields=()).keys.tolist()) == expected
    if not dirty:
        _same_state(committed, back.state_dict())
    if expected:
        s = back.sample(16)
        assert torch.equal(s["obs"][:, 0], s.keys.float())


_CHILD = textwrap.dedent(
    """
    import os, random, sys, warnings
    import torch
    from replaydb import Spec, Table
    warnings.simplefilter("ignore")
    d, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(seed)
    spec = Spec({"k": ((), "int64"), "img": ((8, 8), "uint8"), "flag": ((), "bool")})
    if os.path.exists(os.path.join(d, "state.safetensors")):
        t = Table.open(d)
    else:
        t = Table(spec, 64, sequence_length=2, path=d)
    def write():
        n = rng.randint(1, 20)
        k = torch.arange(t.total_steps_written, t.total_steps_written + n)
        ends = (k % 13 == 12).long()
        t.extend({"k": k, "img": (k % 251).to(torch.uint8).view(n, 1, 1).expand(n, 8, 8),
                  "flag": k % 2 == 0}, ends=ends)
    # One committed write before the kill window opens, however slow the machine is
    # (first-use kernel compiles), so every attempt has something to keep.
    write(); t.checkpoint()
    print("ready", flush=True)
    while True:
        write()
        if rng.random() < 0.3:
            t.checkpoint()
    """
)


def _check_consistent(t: Table) -> None:
    state = t.state_dict()
    live = state["storage.meta.key"] >= 0
    keys = state["storage.meta.key"][live]
    assert torch.equal(state["storage.group.int64"][live, 0], keys)
    assert torch.equal(state["storage.group.uint8"][live].view(-1, 64)[:, 0], (keys % 251).byte())
    assert torch.equal(state["storage.group.bool"][live, 0], keys % 2 == 0)
    if len(t):
        s = t.sample(32)
        assert torch.equal(s["k"][:, 0], s.keys)
        assert torch.equal(s["k"][:, 1], s.keys + 1)


def test_sigkill_at_random_moments_leaves_a_consistent_table(tmp_path: Path) -> None:
    rng = random.Random(14)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    totals = []
    for attempt in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(tmp_path), str(attempt)],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert child.stdout is not None
        try:
            assert child.stdout.readline().strip() == b"ready"
            time.sleep(rng.uniform(0.05, 0.6))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
            child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # dropped items are expected
            t = Table.open(tmp_path)
        _check_consistent(t)
        totals.append(t.total_steps_written)
        del t
    assert totals == sorted(totals) and totals[-1] > 0


def test_open_keeps_stride_final_step_and_frame_stack(tmp_path: Path) -> None:
    spec = Spec({"obs": ((2,), "float32")})
    table = Table(
        spec,
        50,
        sequence_length=2,
        stride=2,
        final_step=True,
        frame_stack={"obs": 3},
        path=tmp_path / "t",
    )
    table.extend({"obs": torch.arange(20.0).reshape(10, 2)})
    table.checkpoint()
    again = Table.open(tmp_path / "t")
    assert (again.stride, again.final_step, again.frame_stack) == (
        table.stride,
        table.final_step,
        table.frame_stack,
    )
    assert len(again) == len(table)
