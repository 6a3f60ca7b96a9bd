"""Directories left by shared-table processes killed with SIGKILL are removed later.

A process that owns a shared-memory table, or serves one, or is a DataLoader
worker with slots, removes its directories when it exits; killed with SIGKILL
it cannot. The next ``memory_table`` or ``share()`` on the machine removes the
directories of processes that no longer exist.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest
import torch

from replaydb import Spec
from replaydb.shared import _batches, _owner, _wire, memory_table

JOIN_S = 60

_KILLED_OWNER = """
import os, signal, sys
import pytest
import torch
from replaydb import Spec
from replaydb.shared import memory_table
table = memory_table(Spec({"x": ()}), 8)
table.extend({"x": torch.zeros(2)})
handle = table.share()
print(table.path)
print(os.path.dirname(handle.address))
sys.stdout.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed_owner_dirs() -> list[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_OWNER],
        capture_output=True,
        text=True,
        timeout=JOIN_S,
        env=env,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    paths = done.stdout.split()
    assert len(paths) == 2 and all(os.path.isdir(p) for p in paths)
    return paths


def test_a_new_memory_table_removes_what_a_killed_owner_left() -> None:
    left = _killed_owner_dirs()
    root = _owner._shm_root()
    # A DataLoader worker killed with its owner left its slots too.
    dead_pid = int(os.path.basename(left[0]).split("-")[1])
    slots = tempfile.mkdtemp(prefix=f"replaydb-batches-{dead_pid}-", dir=root)
    _wire.mark_own(slots)
    # Directories of live processes, and other names, stay.
    mine = tempfile.mkdtemp(prefix=f"replaydb-{os.getpid()}-", dir=root)
    _wire.mark_own(mine)
    other = tempfile.mkdtemp(prefix="replaydb-notapid-", dir=root)
    try:
        table = memory_table(Spec({"x": ()}), 8)
        assert not any(os.path.exists(p) for p in [*left, slots])
        assert os.path.isdir(mine) and os.path.isdir(other) and os.path.isdir(str(table.path))
    finally:
        for d in (mine, other):
            shutil.rmtree(d)


def test_sharing_a_table_removes_what_a_killed_owner_left() -> None:
    table = memory_table(Spec({"x": ()}), 8)
    left = _killed_owner_dirs()
    handle = table.share()
    try:
        assert not any(os.path.exists(p) for p in left)
        assert os.path.isdir(os.path.dirname(handle.address))
        handle.extend({"x": torch.zeros(1)})
        assert len(table) == 1
    finally:
        handle.close()


def test_remove_left_behind_names_what_it_removed() -> None:
    pid = _dead_pid()
    d = tempfile.mkdtemp(prefix=f"replaydb-{pid}-", dir=_owner._shm_root())
    _wire.mark_own(d)
    assert d in _owner.remove_left_behind()
    assert not os.path.exists(d)
    assert d not in _owner.remove_left_behind()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait(timeout=JOIN_S)
    return p.pid


def test_directories_of_the_user_that_only_look_like_ours_stay() -> None:
    # A user's own directory named like a process's (replaydb-<number>-<name>,
    # e.g. a date or a seed, of no live process) is not replaydb's to remove.
    pid = _dead_pid()
    kept = []
    for root in (_owner._shm_root(), tempfile.gettempdir()):
        for prefix in (f"replaydb-{pid}-", f"replaydb-share-{pid}-", f"replaydb-batches-{pid}-"):
            d = tempfile.mkdtemp(prefix=prefix, suffix="run", dir=root)
            with open(os.path.join(d, "results.safetensors"), "wb") as f:
                f.write(b"precious")
            kept.append(d)
    try:
        memory_table(Spec({"x": ()}), 8).share().close()
        assert all(os.path.isfile(os.path.join(d, "results.safetensors")) for d in kept)
        assert not any(d in _owner.remove_left_behind() for d in kept)
    finally:
        for d in kept:
            shutil.rmtree(d, ignore_errors=True)


def test_a_workers_slot_directory_is_marked_as_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_batches, "_POOL", None)
    pool = _batches._pool()
    try:
        assert os.path.isfile(os.path.join(pool.dir, _wire.OWN_MARK))
    finally:
        pool.close()
    assert not os.path.exists(pool.dir)


def test_a_directory_named_with_a_number_no_pid_can_be_does_not_break_sharing() -> None:
    # replaydb-<timestamp>-*: os.kill(20241203120000, 0) raises OverflowError.
    kept = [
        tempfile.mkdtemp(prefix="replaydb-20241203120000-", dir=root)
        for root in dict.fromkeys((_owner._shm_root(), tempfile.gettempdir()))
    ]
    _wire.mark_own(kept[0])  # even one marked as ours: no process has that pid
    try:
        table = memory_table(Spec({"x": ()}), 8)
        table.share().close()
        assert not os.path.exists(kept[0])
        assert all(os.path.isdir(d) for d in kept[1:])
        assert not _wire.alive(1 << 80)
    finally:
        for d in kept:
            shutil.rmtree(d, ignore_errors=True)


def test_a_mark_that_cannot_be_written_costs_only_the_later_sweep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No inode left for the mark (a full tmpfs): the table and its share still work.
    monkeypatch.setattr(_wire, "OWN_MARK", os.path.join("no-such-dir", ".replaydb-own"))
    monkeypatch.setattr(_batches, "_POOL", None)
    table = memory_table(Spec({"x": ()}), 8)
    handle = table.share()
    try:
        handle.extend({"x": torch.zeros(2)})
        assert len(table) == 2
        _batches._pool().close()
    finally:
        handle.close()
