"""Tests of ``replaydb.checkpoint``: table files, atomic writes, checkpoint directories."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

import replaydb
from replaydb import checkpoint as ckpt
from replaydb.checkpoint import (
    CHECKPOINT_FORMAT,
    TABLE_FORMAT,
    atomic_write_files,
    latest_checkpoint,
    list_checkpoints,
    load_table,
    read_checkpoint,
    read_table_file,
    save_table,
    tensor_checksum,
    write_checkpoint,
)
from replaydb.errors import CheckpointError
from replaydb.samplers import Uniform
from replaydb.spec import Spec
from replaydb.table import Table
from strategies import MIXED_SPEC, make_batch


# ------------------------------------------------------------------ helpers
def make_table(capacity: int = 8, sequence_length: int = 1, steps: int = 13) -> Table:
    """A table that wrapped around, with NaNs in a float field and some samples drawn."""
    table = Table(
        MIXED_SPEC,
        capacity,
        sampler=Uniform(seed=7),
        sequence_length=sequence_length,
        name="replay",
    )
    batch = make_batch(MIXED_SPEC, steps, seed=3)
    batch["obs"][::4, 1] = float("nan")
    table.extend(
        batch,
        streams=torch.arange(steps) % 2,
        ends=(torch.arange(steps) % 5 == 4).long(),
    )
    table.sample(5)
    return table


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bytes (NaNs included)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.numel() == 0:
        return True
    flat_a, flat_b = a.contiguous().reshape(-1), b.contiguous().reshape(-1)
    return torch.equal(flat_a.view(torch.uint8), flat_b.view(torch.uint8))


def assert_same_state(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert same_bits(a[name], b[name]), name


def assert_same_sample(a: Any, b: Any) -> None:
    assert torch.equal(a.keys, b.keys)
    assert torch.equal(a.times_sampled, b.times_sampled)
    assert_same_state(a.data, b.data)


def write_table_file(
    path: Path,
    tensors: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    **overrides: Any,
) -> Path:
    """Write a table file by hand, with a valid checksum unless overridden."""
    meta: dict[str, Any] = {
        "format": TABLE_FORMAT,
        "format_version": 1,
        "config": dict(config),
        "extra": {},
    }
    meta.update(overrides)
    meta.setdefault("checksum", tensor_checksum(tensors, meta["config"]))
    save_file(
        {k: v.clone().contiguous() for k, v in tensors.items()},
        str(path),
        {"replaydb": json.dumps(meta)},
    )
    return path


def tmp_leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if ".tmp-" in p.name)


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def data_start(path: Path) -> int:
    """Offset of the tensor bytes in a safetensors file (after the JSON header)."""
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


# ------------------------------------------------------- save/load a table
@pytest.mark.parametrize("sequence_length", [1, 3])
def test_round_trip_is_bit_exact(tmp_path: Path, sequence_length: int) -> None:
    table = make_table(sequence_length=sequence_length)
    path = save_table(table, tmp_path / "t.safetensors")
    assert path == tmp_path / "t.safetensors"
    loaded = load_table(path)
    assert loaded.config() == table.config()
    assert len(loaded) == len(table)
    assert loaded.num_steps == table.num_steps
    assert_same_state(loaded.state_dict(), table.state_dict())
    # Sampling continues exactly as it would have without the save.
    for _ in range(3):
        assert_same_sample(loaded.sample(6), table.sample(6))
    # And so does writing.
    more = make_batch(MIXED_SPEC, 5, seed=11)
    table.extend(more, streams=1)
    loaded.extend(more, streams=1)
    assert_same_state(loaded.state_dict(), table.state_dict())
    assert_same_sample(loaded.sample(6), table.sample(6))


def test_save_does_not_change_the_table(tmp_path: Path) -> None:
    a, b = make_table(), make_table()
    save_table(a, tmp_path / "a")
    assert_same_state(a.state_dict(), b.state_dict())
    assert_same_sample(a.sample(4), b.sample(4))


def test_round_trip_of_an_empty_table(tmp_path: Path) -> None:
    table = Table(MIXED_SPEC, 4, sampler=Uniform(seed=1))
    loaded = load_table(save_table(table, tmp_path / "empty"))
    assert len(loaded) == 0
    assert_same_state(loaded.state_dict(), table.state_dict())


def test_only_stored_rows_are_written(tmp_path: Path) -> None:
    table = Table(MIXED_SPEC, 100_000, sampler=Uniform(seed=1))
    table.extend(make_batch(MIXED_SPEC, 3, seed=0))
    path = save_table(table, tmp_path / "small")
    _, tensors = read_table_file(path)
    assert tensors["storage.group.float32"].shape == (3, 4)
    # The sampler's per-slot state is written whole; the steps are not.
    assert path.stat().st_size < 100_000 * MIXED_SPEC.step_nbytes // 4


@pytest.mark.parametrize(
    ("given", "written"),
    [("t", "t.safetensors"), ("t.safetensors", "t.safetensors"), ("t.bin", "t.bin.safetensors")],
)
def test_safetensors_suffix_is_optional(tmp_path: Path, given: str, written: str) -> None:
    table = make_table()
    assert save_table(table, tmp_path / given) == tmp_path / written
    assert sorted(p.name for p in tmp_path.iterdir()) == [written]
    stem = written.removesuffix(".safetensors")
    for name in (stem, written):
        assert_same_state(load_table(tmp_path / name).state_dict(), table.state_dict())
    assert_same_state(load_table(str(tmp_path / stem)).state_dict(), table.state_dict())


def test_extra_metadata_is_stored(tmp_path: Path) -> None:
    path = save_table(make_table(), tmp_path / "t", extra={"step": 12, "run": "a"})
    meta, _ = read_table_file(path)
    assert meta["extra"] == {"step": 12, "run": "a"}
    assert meta["format"] == TABLE_FORMAT
    assert meta["config"]["name"] == "replay"


def test_save_overwrites_an_existing_file(tmp_path: Path) -> None:
    save_table(make_table(steps=3), tmp_path / "t")
    table = make_table(steps=20)
    save_table(table, tmp_path / "t")
    assert_same_state(load_table(tmp_path / "t").state_dict(), table.state_dict())
    assert tmp_leftovers(tmp_path) == []


def test_save_to_a_directory_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "d.safetensors").mkdir()
    with pytest.raises(CheckpointError, match="is a directory"):
        save_table(make_table(), tmp_path / "d")


def test_load_device_override(tmp_path: Path) -> None:
    path = save_table(make_table(), tmp_path / "t")
    assert load_table(path, device="cpu").device == torch.device("cpu")
    assert load_table(path, device=torch.device("cpu")).device == torch.device("cpu")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no table file at"):
        load_table(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="no table file at"):
        read_table_file(tmp_path)


@pytest.mark.parametrize("keep", [0, 4, 7, 100, -1])
def test_truncated_file(tmp_path: Path, keep: int) -> None:
    path = save_table(make_table(), tmp_path / "t")
    data = path.read_bytes()
    path.write_bytes(data[: keep if keep >= 0 else len(data) - 1])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_table(path)


def test_truncated_in_the_tensor_data(tmp_path: Path) -> None:
    path = save_table(make_table(), tmp_path / "t")
    data = path.read_bytes()
    path.write_bytes(data[: (data_start(path) + len(data)) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_table(path)


@pytest.mark.parametrize("where", [0.0, 0.3, 0.7, 1.0])
def test_flipped_byte_in_the_tensor_data(tmp_path: Path, where: float) -> None:
    path = save_table(make_table(), tmp_path / "t")
    start, end = data_start(path), path.stat().st_size - 1
    flip_byte(path, start + int(where * (end - start)))
    with pytest.raises(CheckpointError, match="checksum mismatch") as info:
        load_table(path)
    assert "corrupt" in str(info.value)


def test_garbage_header_length(tmp_path: Path) -> None:
    path = save_table(make_table(), tmp_path / "t")
    data = path.read_bytes()
    path.write_bytes((2**40).to_bytes(8, "little") + data[8:])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_table(path)


def test_a_file_that_is_not_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    path.write_text(json.dumps({"hello": "world"}) * 10)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_table(path)


def test_a_safetensors_file_that_is_not_ours(tmp_path: Path) -> None:
    path = tmp_path / "weights.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path))
    with pytest.raises(CheckpointError, match="not a replaydb table") as info:
        load_table(path)
    assert "no 'replaydb' metadata" in str(info.value)
    save_file({"weight": torch.zeros(3)}, str(path), {"framework": "pt"})
    with pytest.raises(CheckpointError, match="not a replaydb table"):
        load_table(path)


def test_a_velora_buffer_file_is_not_a_table(tmp_path: Path) -> None:
    buffer = replaydb.ReplayBuffer(4, 2, 1, 0)
    buffer.save(tmp_path)
    with pytest.raises(CheckpointError, match=r"ReplayBuffer\.load"):
        load_table(tmp_path / "buffer_state.safetensors")


def test_metadata_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), {"replaydb": "{not json"})
    with pytest.raises(CheckpointError, match="the metadata is not valid JSON"):
        load_table(path)


@pytest.mark.parametrize(
    ("override", "shown"),
    [
        ({"format_version": 2}, "version 2"),
        ({"format_version": "1"}, "version '1'"),
        ({"format": "replaydb.velora"}, "format 'replaydb.velora'"),
        ({"format": None}, "format None"),
    ],
)
def test_wrong_format_or_version(tmp_path: Path, override: dict[str, Any], shown: str) -> None:
    table = make_table()
    path = write_table_file(tmp_path / "t.safetensors", table.state_dict(), table.config())
    assert_same_state(load_table(path).state_dict(), table.state_dict())  # the control
    write_table_file(path, table.state_dict(), table.config(), **override)
    with pytest.raises(CheckpointError, match="upgrade replaydb") as info:
        load_table(path)
    assert shown in str(info.value)
    assert "'replaydb.table' version 1" in str(info.value)


def test_missing_checksum(tmp_path: Path) -> None:
    table = make_table()
    path = write_table_file(tmp_path / "t.safetensors", table.state_dict(), table.config())
    meta = {"format": TABLE_FORMAT, "format_version": 1, "config": table.config()}
    save_file(
        {k: v.clone() for k, v in table.state_dict().items()},
        str(path),
        {"replaydb": json.dumps(meta)},
    )
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_table(path)


def _resize(t: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.zeros((rows, *t.shape[1:]), dtype=t.dtype)


# name -> (change to the state dict, part of the expected message)
STATE_EDITS: dict[str, tuple[Callable[[dict[str, torch.Tensor]], None], str]] = {
    "group width": (
        lambda s: s.__setitem__("storage.group.float32", torch.zeros(8, 5)),
        r"'storage.group.float32' has shape (8, 5), expected (8, 4)",
    ),
    "group rows": (
        lambda s: s.__setitem__("storage.group.uint8", _resize(s["storage.group.uint8"], 7)),
        r"'storage.group.uint8' has shape (7, 4), expected (8, 4)",
    ),
    "key column": (
        lambda s: s.__setitem__("storage.meta.key", torch.zeros(9, dtype=torch.int64)),
        r"'storage.meta.key' has shape (9,), expected (8,)",
    ),
    "item priorities": (
        lambda s: s.__setitem__("items.priority", torch.ones(3, dtype=torch.float64)),
        r"'items.priority' has shape (3,), expected (8,)",
    ),
    "sampler slots": (
        lambda s: s.__setitem__("sampler.active", torch.zeros(9, dtype=torch.bool)),
        r"'sampler.active' has shape (9,), expected (8,)",
    ),
    "stream state": (
        lambda s: s.__setitem__("storage.streams.ep_len", torch.zeros(3, dtype=torch.int64)),
        r"'storage.streams.ep_len' has shape (3,), expected (8,)",
    ),
    "dtype": (
        lambda s: s.__setitem__("items.priority", s["items.priority"].float()),
        "'items.priority' has dtype float32, expected float64",
    ),
    "group dtype": (
        lambda s: s.__setitem__("storage.group.int64", s["storage.group.int64"].int()),
        "'storage.group.int64' has dtype int32, expected int64",
    ),
    "missing": (
        lambda s: s.pop("items.key"),
        "missing ['items.key'], unknown []",
    ),
    "unknown": (
        lambda s: s.__setitem__("storage.group.float16", torch.zeros(8, 1, dtype=torch.float16)),
        "missing [], unknown ['storage.group.float16']",
    ),
    "total shape": (
        lambda s: s.__setitem__("storage.total", torch.tensor([13, 13])),
        "'storage.total' must be one int64 >= 0",
    ),
    "total dtype": (
        lambda s: s.__setitem__("storage.total", torch.tensor([13], dtype=torch.int32)),
        "'storage.total' must be one int64 >= 0",
    ),
    "total negative": (
        lambda s: s.__setitem__("storage.total", torch.tensor([-1])),
        "'storage.total' must be one int64 >= 0",
    ),
    "total too small": (
        lambda s: s.__setitem__("storage.total", torch.tensor([5])),
        r"has shape (8, 4), expected (5, 4)",
    ),
    "item keys beyond total": (
        lambda s: s.__setitem__("items.key", s["items.key"] + 100),
        "item keys exceed the number of steps written",
    ),
}


@pytest.mark.parametrize("edit", sorted(STATE_EDITS))
def test_tensors_that_do_not_match_the_config(tmp_path: Path, edit: str) -> None:
    table = make_table()
    state = {k: v.clone() for k, v in table.state_dict().items()}
    change, message = STATE_EDITS[edit]
    change(state)
    path = write_table_file(tmp_path / "t.safetensors", state, table.config())
    with pytest.raises(CheckpointError) as info:
        load_table(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_config_of_another_capacity(tmp_path: Path) -> None:
    table = make_table(capacity=8)
    config = {**table.config(), "capacity": 4}
    path = write_table_file(tmp_path / "t.safetensors", table.state_dict(), config)
    with pytest.raises(CheckpointError, match=r"has shape \(8, 4\), expected \(4, 4\)"):
        load_table(path)


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c.pop("spec"),
        lambda c: c.__setitem__("capacity", -1),
        lambda c: c.__setitem__("capacity", "many"),
        lambda c: c.__setitem__("sampler", {"type": "Nope"}),
        lambda c: c.__setitem__("spec", {"x": {"shape": [1], "dtype": "complex64"}}),
    ],
)
def test_invalid_config(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    table = make_table()
    config = table.config()
    change(config)
    path = write_table_file(tmp_path / "t.safetensors", table.state_dict(), config)
    with pytest.raises(CheckpointError, match="the table config is invalid"):
        load_table(path)


def test_checksum_covers_the_config(tmp_path: Path) -> None:
    table = Table(Spec({"x": (1,)}), 4, name="original")
    path = save_table(table, tmp_path / "t.safetensors")
    data = path.read_bytes()
    tampered = data.replace(b"original", b"origamis", 1)
    assert tampered != data
    path.write_bytes(tampered)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_table(path)


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path: Path) -> None:
    table = Table(Spec({"x": (1,)}), 4)
    stale = tmp_path / ".ckpt-00000000000000000001.tmp-999999999-abcdef12"
    stale.mkdir()
    (stale / "junk").write_text("half written")
    write_checkpoint(tmp_path, {"t": table})
    assert not stale.exists()


def test_tensor_checksum_covers_names_dtypes_shapes_and_bytes() -> None:
    base = {"a": torch.arange(6, dtype=torch.int32), "b": torch.zeros(2)}
    digest = tensor_checksum(base)
    assert digest == tensor_checksum({"b": torch.zeros(2), "a": torch.arange(6).int()})
    variants = [
        {"a2": base["a"], "b": base["b"]},
        {"a": base["a"].float(), "b": base["b"]},
        {"a": base["a"].reshape(2, 3), "b": base["b"]},
        {"a": base["a"] + 1, "b": base["b"]},
        {"a": base["a"], "b": -base["b"]},  # -0.0 differs from 0.0 in bits
    ]
    assert all(tensor_checksum(v) != digest for v in variants)


# ------------------------------------------------------- atomic_write_files
def write_text(text: str) -> Callable[[Path], None]:
    return lambda p: p.write_text(text)


def failing_writer(p: Path) -> None:
    p.write_text("partial")
    raise OSError("disk full")


def test_atomic_write_files_writes_every_file(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "sub" / "dir" / "b.bin"
    atomic_write_files({a: write_text("A"), b: write_text("B")})
    assert (a.read_text(), b.read_text()) == ("A", "B")
    assert tmp_leftovers(tmp_path) == []


def test_a_failing_writer_leaves_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "state.safetensors"
    target.write_text("previous")
    with pytest.raises(OSError, match="disk full"):
        atomic_write_files({target: failing_writer})
    assert target.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.safetensors"]


def test_a_failing_second_writer_leaves_the_first_target_untouched(tmp_path: Path) -> None:
    first, second = tmp_path / "meta.json", tmp_path / "state.bin"
    first.write_text("old meta")
    second.write_text("old state")
    with pytest.raises(OSError, match="disk full"):
        atomic_write_files({first: write_text("new meta"), second: failing_writer})
    assert first.read_text() == "old meta"
    assert second.read_text() == "old state"
    assert tmp_leftovers(tmp_path) == []


def test_a_failing_writer_leaves_no_new_file(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    with pytest.raises(OSError, match="disk full"):
        atomic_write_files({first: write_text("A"), second: failing_writer})
    assert list(tmp_path.iterdir()) == []


def test_a_writer_that_writes_nothing_is_an_error(tmp_path: Path) -> None:
    target = tmp_path / "x"
    target.write_text("previous")
    with pytest.raises(FileNotFoundError):
        atomic_write_files({target: lambda p: None})
    assert target.read_text() == "previous"
    assert tmp_leftovers(tmp_path) == []


def test_temporary_files_are_hidden_beside_the_target(tmp_path: Path) -> None:
    seen: list[Path] = []

    def spy(p: Path) -> None:
        seen.append(p)
        p.write_text("x")

    atomic_write_files({tmp_path / "f.txt": spy})
    assert seen[0].parent == tmp_path
    assert seen[0].name.startswith(".f.txt.tmp-")


# ---------------------------------------------------- checkpoint directories
def entries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def test_write_and_read_a_checkpoint(tmp_path: Path) -> None:
    tables = {"main": make_table(), "seq/3": make_table(sequence_length=3)}
    path = write_checkpoint(tmp_path / "ckpts", tables, extra={"spec": {"a": 1}})
    assert path.parent == tmp_path / "ckpts"
    assert ckpt._CKPT_RE.match(path.name)
    assert entries(path) == ["COMPLETE", "main.safetensors", "manifest.json", "seq_3.safetensors"]
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format"] == CHECKPOINT_FORMAT
    assert manifest["created_unix_ns"] == int(path.name[5:])
    assert manifest["extra"] == {"spec": {"a": 1}}
    assert manifest["tables"]["seq/3"] == {
        "file": "seq_3.safetensors",
        "size": len(tables["seq/3"]),
        "steps": tables["seq/3"].num_steps,
    }
    for where in (path, tmp_path / "ckpts", str(path)):
        loaded, again = read_checkpoint(where)
        assert again == manifest
        assert sorted(loaded) == ["main", "seq/3"]
        for name, table in tables.items():
            assert_same_state(loaded[name].state_dict(), table.state_dict())
    assert latest_checkpoint(tmp_path / "ckpts") == path
    assert list_checkpoints(tmp_path / "ckpts") == [path]


def test_no_checkpoint_yet(tmp_path: Path) -> None:
    assert list_checkpoints(tmp_path / "missing") == []
    assert latest_checkpoint(tmp_path / "missing") is None
    assert latest_checkpoint(tmp_path) is None
    with pytest.raises(CheckpointError, match="no complete replaydb checkpoint"):
        read_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no complete replaydb checkpoint"):
        read_checkpoint(tmp_path / "missing")


def test_timestamps_strictly_increase(tmp_path: Path) -> None:
    table = Table(MIXED_SPEC, 2)
    paths = [write_checkpoint(tmp_path, {"t": table}, keep=10) for _ in range(5)]
    stamps = [int(p.name[5:]) for p in paths]
    assert stamps == sorted(set(stamps))
    assert list_checkpoints(tmp_path) == paths


def test_timestamps_increase_even_when_the_clock_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = Table(MIXED_SPEC, 2)
    first = write_checkpoint(tmp_path, {"t": table}, keep=10)
    monkeypatch.setattr(ckpt.time, "time_ns", lambda: 1_000)  # a clock set back
    paths = [first] + [write_checkpoint(tmp_path, {"t": table}, keep=10) for _ in range(3)]
    stamps = [int(p.name[5:]) for p in paths]
    assert stamps == [stamps[0] + i for i in range(4)]
    assert latest_checkpoint(tmp_path) == paths[-1]


def test_keep_prunes_only_complete_checkpoints_replaydb_wrote(tmp_path: Path) -> None:
    unrelated_dirs = [
        "notes",
        "ckpt-00000000000000000001",  # named like one, no COMPLETE marker
        "ckpt-123",  # wrong name, with a marker
        "ckpt-000000000000000000012",  # 21 digits, with a marker
        ".hidden",
    ]
    for name in unrelated_dirs:
        (tmp_path / name).mkdir()
        (tmp_path / name / "data.txt").write_text(name)
    for name in ("ckpt-123", "ckpt-000000000000000000012"):
        (tmp_path / name / "COMPLETE").write_text("ok\n")
    (tmp_path / "ckpt-00000000000000000002").write_text("a file, not a directory")
    (tmp_path / "README.txt").write_text("mine")
    before = entries(tmp_path)

    table = make_table()
    paths = [write_checkpoint(tmp_path, {"t": table}, keep=2) for _ in range(4)]
    assert list_checkpoints(tmp_path) == paths[-2:]
    assert entries(tmp_path) == sorted(before + [p.name for p in paths[-2:]])
    for name in unrelated_dirs:
        assert (tmp_path / name / "data.txt").read_text() == name
    assert (tmp_path / "README.txt").read_text() == "mine"
    # keep=1 then leaves only the newest.
    newest = write_checkpoint(tmp_path, {"t": table})
    assert list_checkpoints(tmp_path) == [newest]
    assert entries(tmp_path) == sorted([*before, newest.name])


def test_an_incomplete_checkpoint_is_ignored(tmp_path: Path) -> None:
    old_table, new_table = make_table(steps=3), make_table(steps=20)
    old = write_checkpoint(tmp_path, {"t": old_table}, keep=5)
    new = write_checkpoint(tmp_path, {"t": new_table}, keep=5)
    (new / "COMPLETE").unlink()
    assert latest_checkpoint(tmp_path) == old
    assert list_checkpoints(tmp_path) == [old]
    tables, _ = read_checkpoint(tmp_path)
    assert_same_state(tables["t"].state_dict(), old_table.state_dict())
    with pytest.raises(CheckpointError, match="no complete replaydb checkpoint"):
        read_checkpoint(new / "t.safetensors")
    # A later write does not prune the incomplete one (replaydb cannot tell it is its own).
    write_checkpoint(tmp_path, {"t": new_table}, keep=1)
    assert new.is_dir()
    assert not old.exists()


def test_a_far_future_incomplete_directory_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "ckpt-99999999999999999999").mkdir()
    path = write_checkpoint(tmp_path, {"t": make_table()})
    assert latest_checkpoint(tmp_path) == path
    assert (tmp_path / "ckpt-99999999999999999999").is_dir()


def test_a_crash_mid_checkpoint_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = make_table()
    previous = write_checkpoint(tmp_path, {"a": table, "b": table})
    real_save = ckpt.save_table
    calls: list[str] = []

    def save_then_crash(t: Any, path: Any, extra: Any = None) -> Path:
        calls.append(str(path))
        if len(calls) == 2:
            raise OSError("No space left on device")
        return real_save(t, path, extra)

    monkeypatch.setattr(ckpt, "save_table", save_then_crash)
    other = make_table(steps=20)
    with pytest.raises(OSError, match="No space left"):
        write_checkpoint(tmp_path, {"a": other, "b": other})
    assert len(calls) == 2
    assert entries(tmp_path) == [previous.name]
    assert latest_checkpoint(tmp_path) == previous
    tables, _ = read_checkpoint(tmp_path)
    assert_same_state(tables["a"].state_dict(), table.state_dict())


def test_an_interrupt_mid_checkpoint_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous = write_checkpoint(tmp_path, {"a": make_table()})

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "atomic_write_files", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(tmp_path, {"a": make_table()})
    assert entries(tmp_path) == [previous.name]


def test_root_that_is_a_file(tmp_path: Path) -> None:
    root = tmp_path / "ckpts"
    root.write_text("not a directory")
    with pytest.raises(CheckpointError, match="is a file; give a directory path"):
        write_checkpoint(root, {"t": make_table()})
    assert root.read_text() == "not a directory"
    assert list_checkpoints(root) == []


@pytest.mark.parametrize("keep", [0, -1, 1.5, True, "2"])
def test_keep_must_be_at_least_one(tmp_path: Path, keep: Any) -> None:
    with pytest.raises(CheckpointError, match=f"keep must be an int >= 1 .*, got {keep!r}"):
        write_checkpoint(tmp_path / "ckpts", {"t": make_table()}, keep=keep)
    assert not (tmp_path / "ckpts").exists()


def test_a_corrupt_table_in_the_latest_checkpoint_is_an_error(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path, {"t": make_table()})
    flip_byte(path / "t.safetensors", (path / "t.safetensors").stat().st_size - 1)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        read_checkpoint(tmp_path)


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ("{broken", "manifest unreadable"),
        (None, "manifest unreadable"),
        (json.dumps({"format": "something.else", "tables": {}}), "not a replaydb checkpoint"),
    ],
)
def test_a_bad_manifest(tmp_path: Path, manifest: str | None, message: str) -> None:
    path = write_checkpoint(tmp_path, {"t": make_table()})
    if manifest is None:
        (path / "manifest.json").unlink()
    else:
        (path / "manifest.json").write_text(manifest)
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(path)


# -------------------------------------------------------- a real crash
CHILD = textwrap.dedent(
    """
    import sys, torch
    from replaydb import Spec, Table
    from replaydb.checkpoint import write_checkpoint

    rows = 51_200  # 51,200 rows x 1,024 float32 = 200 MiB
    table = Table(Spec({"x": (1024,)}), rows)
    table.extend({"x": torch.ones(rows, 1024)})
    print("ready", flush=True)
    write_checkpoint(sys.argv[1], {"big": table}, keep=1)
    print("done", flush=True)
    """
)


@pytest.mark.slow
def test_sigkill_while_writing_a_large_checkpoint_keeps_the_previous_one(tmp_path: Path) -> None:
    root = tmp_path / "ckpts"
    small = make_table()
    previous = write_checkpoint(root, {"small": small})

    src = str(Path(replaydb.__file__).resolve().parents[1])
    paths = [src, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        assert child.stderr is not None
        try:
            line = child.stdout.readline()
            assert line.strip() == "ready", child.stderr.read()
            # Kill the child once it is writing the table file in its temporary directory.
            deadline = time.monotonic() + 120
            partial: list[Path] = []
            while not partial:
                assert child.poll() is None, "the child finished before it could be killed"
                assert time.monotonic() < deadline, "the child never started writing"
                partial = [
                    p for d in root.glob(".ckpt-*") for p in d.glob(".big.safetensors.tmp-*")
                ]
                time.sleep(0.001)
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
    assert child.returncode == -signal.SIGKILL
    assert partial[0].exists()  # killed mid-write: the partial file is still there
    assert latest_checkpoint(root) == previous
    assert list_checkpoints(root) == [previous]
    tables, _ = read_checkpoint(root)
    assert_same_state(tables["small"].state_dict(), small.state_dict())
    # The half-written directory is hidden and never taken for a checkpoint.
    assert all(p.name.startswith(".ckpt-") for p in root.iterdir() if p != previous)


def _with_device(tmp_path: Path, device: str) -> Path:
    table = make_table()
    config = {**table.config(), "device": device}
    return write_table_file(tmp_path / "t.safetensors", table.state_dict(), config)


def test_a_device_this_host_cannot_make(tmp_path: Path) -> None:
    path = _with_device(tmp_path, "cud")
    with pytest.raises(CheckpointError, match="cannot create the table on device 'cud'") as info:
        load_table(path)
    assert "pass device='cpu'" in str(info.value)
    assert load_table(path, device="cpu").device == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has CUDA")
def test_a_table_saved_on_a_gpu_loads_on_a_cpu_only_host_with_device_cpu(tmp_path: Path) -> None:
    path = _with_device(tmp_path, "cuda:0")
    with pytest.raises(CheckpointError, match="cannot create the table on device 'cuda:0'"):
        load_table(path)
    loaded = load_table(path, device="cpu")
    assert_same_state(loaded.state_dict(), make_table().state_dict())


@pytest.mark.parametrize("names", [("a/b", "a_b"), ("main", "MAIN"), ("x y", "x:y")])
def test_table_names_that_would_share_a_file(tmp_path: Path, names: tuple[str, str]) -> None:
    tables = {names[0]: make_table(steps=2), names[1]: make_table(steps=5)}
    with pytest.raises(CheckpointError, match="would both be saved to") as info:
        write_checkpoint(tmp_path / "ckpts", tables)
    assert repr(names[0]) in str(info.value)
    assert repr(names[1]) in str(info.value)
    assert not (tmp_path / "ckpts").exists()


def test_table_names_are_sanitized_into_file_names(tmp_path: Path) -> None:
    tables = {"": make_table(steps=2), "a b/c": make_table(steps=3), "ok-1.x": make_table()}
    path = write_checkpoint(tmp_path, tables)
    assert entries(path) == [
        "COMPLETE",
        "a_b_c.safetensors",
        "manifest.json",
        "ok-1.x.safetensors",
        "table.safetensors",
    ]
    loaded, _ = read_checkpoint(path)
    for name, table in tables.items():
        assert_same_state(loaded[name].state_dict(), table.state_dict())


def test_save_while_another_thread_inserts(tmp_path: Path) -> None:
    capacity = 20_000
    spec = replaydb.Spec({"x": (16,), "k": ((), "int64")})
    table = Table(spec, capacity)

    def batch(start: int, n: int) -> dict[str, torch.Tensor]:
        k = torch.arange(start, start + n)
        return {"x": k[:, None].float().expand(n, 16), "k": k}

    table.extend(batch(0, capacity))
    stop, started = threading.Event(), threading.Event()
    written = [capacity]

    def insert() -> None:
        while not stop.is_set():
            table.extend(batch(written[0], 500))
            written[0] += 500
            started.set()

    thread = threading.Thread(target=insert)
    thread.start()
    try:
        assert started.wait(timeout=60)
        paths = [save_table(table, tmp_path / f"t{i}") for i in range(4)]
    finally:
        stop.set()
        thread.join()
    assert written[0] > capacity
    for path in paths:
        loaded = load_table(path)  # a torn snapshot fails its checksum here
        s = loaded.storage
        # A consistent snapshot: every row holds the step its key names.
        assert torch.equal(s.fields["k"], s.key)
        assert torch.equal(s.fields["x"][:, 0], s.key.float())
        assert int(s.key.max()) == s.total - 1
        assert len(loaded) == capacity


# ------------------------------------------------ hostile files (issue 11)
def _checkpoint_with_outside_file(tmp_path: Path) -> tuple[Path, Path]:
    """A checkpoint, and a valid table file outside it that an entry could point at."""
    path = write_checkpoint(tmp_path / "ckpts", {"t": make_table()})
    outside = save_table(make_table(), tmp_path / "outside.safetensors")
    return path, outside


def _write_manifest(path: Path, manifest: Any) -> None:
    """Write a manifest as a tamperer would: with its checksum recomputed."""
    if isinstance(manifest, dict) and isinstance(manifest.get("checksum"), str):
        manifest["checksum"] = ckpt._manifest_checksum(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def _set_entry_file(path: Path, file: Any) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["tables"]["t"]["file"] = file
    _write_manifest(path, manifest)


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "nested dotdot"])
def test_a_manifest_entry_outside_the_checkpoint_is_rejected(tmp_path: Path, kind: str) -> None:
    path, outside = _checkpoint_with_outside_file(tmp_path)
    file = {
        "dotdot": "../../outside.safetensors",
        "absolute": str(outside),
        "nested dotdot": "sub/../../../outside.safetensors",
    }[kind]
    _set_entry_file(path, file)
    with pytest.raises(CheckpointError, match=r"tables\.t\.file = .* outside the checkpoint"):
        read_checkpoint(path)


def test_a_table_file_symlinked_outside_is_rejected(tmp_path: Path) -> None:
    path, outside = _checkpoint_with_outside_file(tmp_path)
    (path / "t.safetensors").unlink()
    (path / "t.safetensors").symlink_to(outside)
    with pytest.raises(CheckpointError, match=r"tables\.t\.file = 't.safetensors' resolves to"):
        read_checkpoint(path)


def test_a_symlink_that_stays_inside_is_followed(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path / "ckpts", {"t": make_table()})
    (path / "t.safetensors").rename(path / "real.safetensors")
    (path / "t.safetensors").symlink_to("real.safetensors")
    assert len(read_checkpoint(path)[0]["t"]) == len(make_table())


def test_a_checkpoint_directory_that_is_a_symlink_is_not_listed(tmp_path: Path) -> None:
    elsewhere = write_checkpoint(tmp_path / "elsewhere", {"t": make_table()})
    root = tmp_path / "root"
    root.mkdir()
    (root / elsewhere.name).symlink_to(elsewhere)
    assert list_checkpoints(root) == []
    with pytest.raises(CheckpointError, match="no complete replaydb checkpoint"):
        read_checkpoint(root)


def test_confined_path() -> None:
    root = Path("/tmp/some-ckpt")
    assert ckpt.confined_path(root, "a/b.safetensors") == root.resolve() / "a/b.safetensors"
    for bad in ("", "..", "/etc/passwd", "a/../..", "x\x00y"):
        with pytest.raises(CheckpointError, match="entry"):
            ckpt.confined_path(root, bad, "entry")
    with pytest.raises(CheckpointError, match="entry must be a string, got an integer"):
        ckpt.confined_path(root, 5, "entry")


def test_a_manifest_linked_to_dev_zero_fails_fast(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path, {"t": make_table()})
    (path / "manifest.json").unlink()
    (path / "manifest.json").symlink_to("/dev/zero")
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="manifest unreadable"):
        read_checkpoint(path)
    assert time.perf_counter() - start < 1.0


def test_read_json_refuses_devices_fifos_and_huge_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a regular file"):
        ckpt.read_json("/dev/zero")
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # opening it must not block waiting for a writer
    with pytest.raises(CheckpointError, match="not a regular file"):
        ckpt.read_json(fifo)
    big = tmp_path / "big.json"
    with open(big, "wb") as fh:
        fh.write(b"[" + b" " * ckpt.MAX_JSON_BYTES + b"]")
    with pytest.raises(CheckpointError, match="over the limit"):
        ckpt.read_json(big)
    with pytest.raises(CheckpointError, match="cannot be opened"):
        ckpt.read_json(tmp_path / "missing.json")


def test_velora_style_metadata_is_capped_too(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_text('{"a": 1}')
    assert ckpt.read_json(tmp_path / "m.json") == {"a": 1}


@pytest.mark.parametrize("prioritized", [False, True], ids=["uniform", "prioritized"])
def test_a_raised_capacity_is_rejected_before_allocating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prioritized: bool
) -> None:
    import replaydb.storage

    sampler = replaydb.samplers.Prioritized(seed=1) if prioritized else Uniform(seed=1)
    table = Table(Spec({"x": (64,)}), 16, sampler=sampler)
    table.extend({"x": torch.ones(10, 64)})
    config, state = table.snapshot()
    config["capacity"] = 2**23  # 2 GiB of rows; the checksum recomputed, as anyone can
    path = write_table_file(tmp_path / "big.safetensors", state, config)
    built: list[int] = []
    real_init = replaydb.storage.Storage.__init__

    def spy(self: Any, spec: Any, capacity: int, *args: Any, **kwargs: Any) -> None:
        built.append(capacity)
        real_init(self, spec, capacity, *args, **kwargs)

    monkeypatch.setattr(replaydb.storage.Storage, "__init__", spy)
    with pytest.raises(CheckpointError, match="capacity 8,388,608 is larger than the file"):
        load_table(path)
    assert built and max(built) <= 4  # only the tiny templates were built


def test_a_lowered_capacity_of_a_full_ring_is_rejected_before_allocating(tmp_path: Path) -> None:
    table = make_table(capacity=8)
    config, state = table.snapshot()
    config["capacity"] = 2**23
    path = write_table_file(tmp_path / "t.safetensors", state, config)
    # The ring wrapped (13 steps in 8 rows): the config now claims 13 stored rows.
    with pytest.raises(CheckpointError, match=r"has shape \(8, 4\), expected \(13, 4\)"):
        load_table(path)


def _meta_of(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    return dict(json.loads(meta["replaydb"]))


def _rewrite_meta(path: Path, raw: str) -> None:
    from safetensors.torch import load_file

    save_file(load_file(str(path)), str(path), {"replaydb": raw})


# (path of keys to change, new value, part of the message)
WRONG_TYPES: list[tuple[tuple[str, ...], Any, str]] = [
    ((), 5, "the metadata must be a JSON object, got an integer"),
    ((), [1], "the metadata must be a JSON object, got an array"),
    (("config",), "x", "config must be a JSON object, got a string"),
    (("config",), None, "config must be a JSON object, got null"),
    (("config", "capacity"), "8", "config.capacity must be an integer, got a string"),
    (("config", "capacity"), True, "config.capacity must be an integer, got true/false"),
    (("config", "capacity"), 8.5, "config.capacity must be an integer, got a number"),
    (("config", "spec"), [1], "config.spec must be a JSON object, got an array"),
    (("config", "spec", "obs"), 3, "config.spec.obs must be a JSON object, got an integer"),
    (("config", "spec", "obs", "shape"), "3", "config.spec.obs.shape must be a JSON array"),
    (("config", "spec", "obs", "shape"), [-1], "config.spec.obs.shape[0] must be an integer >= 0"),
    (("config", "spec", "obs", "dtype"), 1, "config.spec.obs.dtype must be a string"),
    (("config", "sampler"), "Uniform", "config.sampler must be a JSON object, got a string"),
    (("config", "sampler", "type"), 1, "config.sampler.type must be a string"),
    (("config", "sampler", "seed"), "x", "the table config is invalid"),
    (("config", "rate_limiter"), 1, "config.rate_limiter must be a JSON object"),
    (("config", "rate_limiter", "min_size"), "x", "the table config is invalid"),
    (("config", "rate_limiter", "bogus"), 1, "the table config is invalid"),
    (("config", "name"), 1, "config.name must be a string"),
    (("config", "pad"), "no", "config.pad must be true or false"),
    (("config", "max_times_sampled"), "1", "config.max_times_sampled must be an integer or null"),
    (("config", "device"), 0, "config.device must be a string"),
    (("config", "device"), "garbage", "cannot create the table on device 'garbage'"),
    (("extra",), [], "'extra' must be a JSON object, got an array"),
]


@pytest.mark.parametrize(("keys", "value", "message"), WRONG_TYPES, ids=lambda x: repr(x)[:40])
def test_metadata_of_the_wrong_json_type(
    tmp_path: Path, keys: tuple[str, ...], value: Any, message: str
) -> None:
    path = save_table(make_table(), tmp_path / "t.safetensors")
    meta = _meta_of(path)
    if not keys:
        meta = value
    else:
        node = meta
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    config = meta.get("config") if isinstance(meta, dict) else None
    if isinstance(meta, dict):  # recompute the checksum, as a tamperer would
        from safetensors.torch import load_file

        meta["checksum"] = tensor_checksum(load_file(str(path)), config)
    _rewrite_meta(path, json.dumps(meta))
    with pytest.raises(CheckpointError) as info:
        load_table(path)
    text = str(info.value)
    assert message in text
    assert str(path) in text


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"format": ' + "1" * 5000 + "}", "not valid JSON"),
        ("x" * (ckpt.MAX_JSON_BYTES + 1), "over the limit"),
    ],
    ids=["deep", "huge int", "too long"],
)
def test_hostile_metadata_json(tmp_path: Path, raw: str, message: str) -> None:
    path = save_table(make_table(), tmp_path / "t.safetensors")
    _rewrite_meta(path, raw)
    with pytest.raises(CheckpointError, match=message):
        load_table(path)


def _bad_manifest(path: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    replaced = change(manifest)
    _write_manifest(path, manifest if replaced is None else replaced)


MANIFEST_EDITS: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("manifest 5", lambda m: 5, "the manifest must be a JSON object, got an integer"),
    ("manifest list", lambda m: [], "the manifest must be a JSON object, got an array"),
    ("tables list", lambda m: m.__setitem__("tables", []), "tables must be a JSON object"),
    ("tables str", lambda m: m.__setitem__("tables", "t"), "tables must be a JSON object"),
    ("entry 5", lambda m: m["tables"].__setitem__("t", 5), "tables.t must be a JSON object"),
    ("no tables", lambda m: m.pop("tables") and None, "has no 'tables' key"),
    ("checksum 5", lambda m: m.__setitem__("checksum", 5), "checksum must be a string"),
    ("no file", lambda m: m["tables"]["t"].pop("file") and None, "tables.t has no 'file' key"),
    ("file 5", lambda m: m["tables"]["t"].__setitem__("file", 5), "tables.t.file must be a str"),
    ("file null", lambda m: m["tables"]["t"].__setitem__("file", None), "got null"),
    ("size str", lambda m: m["tables"]["t"].__setitem__("size", "1"), "tables.t.size must be"),
    ("size wrong", lambda m: m["tables"]["t"].__setitem__("size", 1), "tables.t.size is 1, but"),
    ("extra list", lambda m: m.__setitem__("extra", [1]), "extra must be a JSON object"),
    ("backend 5", lambda m: m.__setitem__("backend", 5), "backend must be a string"),
    ("version", lambda m: m.__setitem__("format_version", 99), "format_version 99 is not 1"),
]


@pytest.mark.parametrize(
    ("change", "message"),
    [m[1:] for m in MANIFEST_EDITS],
    ids=[m[0] for m in MANIFEST_EDITS],
)
def test_manifest_values_of_the_wrong_type(
    tmp_path: Path, change: Callable[[dict[str, Any]], Any], message: str
) -> None:
    path = write_checkpoint(tmp_path, {"t": make_table()})
    _bad_manifest(path, change)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        read_checkpoint(path)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"format": 1e999999}', "not a replaydb checkpoint"),
    ],
    ids=["not utf-8", "deep", "huge float"],
)
def test_manifest_bytes_that_are_not_json(tmp_path: Path, raw: bytes, message: str) -> None:
    path = write_checkpoint(tmp_path, {"t": make_table()})
    (path / "manifest.json").write_bytes(raw)
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(path)


def test_crafted_bookkeeping_values_are_rejected(tmp_path: Path) -> None:
    table = make_table()
    for name, value in (
        ("storage.meta.next", 10**9),
        ("storage.meta.prev", -5),
        ("items.key", -7),
        ("items.priority", float("nan")),
        ("items.times_sampled", -1),
    ):
        config, state = table.snapshot()
        state[name][0] = value
        path = write_table_file(tmp_path / "t.safetensors", state, config)
        with pytest.raises(CheckpointError, match=re.escape(repr(name))):
            load_table(path)


# ---------------------------------------- temporaries of killed saves (issue 11)
def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporaries_of_killed_table_saves_are_removed(tmp_path: Path) -> None:
    dead = _dead_pid()
    stale = tmp_path / f".t.safetensors.tmp-{dead}-123"
    stale.write_bytes(b"half a table")
    stale_buffer = tmp_path / f".buffer_state.safetensors.tmp-{dead}-456"
    stale_buffer.write_bytes(b"half a buffer")
    mine = tmp_path / f".t.safetensors.tmp-{os.getpid()}-789"  # a save in progress here
    mine.write_bytes(b"in progress")
    other = tmp_path / ".notes.tmp-x"  # not named like a replaydb temporary
    other.write_text("keep")
    save_table(make_table(), tmp_path / "t.safetensors")
    assert not stale.exists() and not stale_buffer.exists()
    assert mine.exists() and other.exists()
    # and on load, for leftovers of saves killed since
    stale.write_bytes(b"half a table")
    load_table(tmp_path / "t.safetensors")
    assert not stale.exists() and mine.exists()


def test_half_written_checkpoints_of_dead_writers_are_removed_on_load(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, {"t": make_table()})
    dead = tmp_path / f".ckpt-00000000000000000009.tmp-{_dead_pid()}-abcdef12"
    live = tmp_path / f".ckpt-00000000000000000009.tmp-{os.getpid()}-abcdef12"
    for d in (dead, live):
        d.mkdir()
        (d / "t.safetensors").write_bytes(b"half")
    read_checkpoint(tmp_path)
    assert not dead.exists() and live.exists()


def test_a_live_writers_temporary_is_kept(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".t.safetensors.tmp-{child.pid}-1"
        live.write_bytes(b"being written")
        save_table(make_table(), tmp_path / "t.safetensors")
        load_table(tmp_path / "t.safetensors")
        assert live.exists()
    finally:
        child.kill()
        child.wait()
    save_table(make_table(), tmp_path / "t.safetensors")
    assert not live.exists()


def test_the_manifest_is_checksummed(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path, {"t": make_table()})
    text = (path / "manifest.json").read_text()
    assert '"checksum"' in text
    # A flipped digit that still parses (a bit rot a type check cannot see):
    (path / "manifest.json").write_text(text.replace('"size": 8', '"size": 9'))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        read_checkpoint(path)
    # Manifests written before the checksum existed still load.
    manifest = json.loads(text)
    del manifest["checksum"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    assert len(read_checkpoint(path)[0]["t"]) == 8


def test_snapshot_is_a_copy_taken_under_the_lock() -> None:
    table = make_table()
    config, state = table.snapshot()
    assert config == table.config()
    before = {k: v.clone() for k, v in state.items()}
    table.extend(make_batch(MIXED_SPEC, 5, seed=1))
    assert_same_state(state, before)  # shares no memory with the live table
    assert not _same_state_dicts(state, table.state_dict())


def _same_state_dicts(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    return sorted(a) == sorted(b) and all(same_bits(a[k], b[k]) for k in a)


def test_the_reliability_page_names_only_tests_that_exist() -> None:
    root = Path(__file__).resolve().parent.parent
    page = (root / "docs" / "reliability.md").read_text()
    named = set(re.findall(r"\b(test_[a-z0-9_]+)\b(?!\.py)", page))
    defined = {
        m
        for f in (root / "tests").glob("test_*.py")
        for m in re.findall(r"def (test_\w+)\(", f.read_text())
    }
    assert len(named) > 20
    assert sorted(named - defined) == []


@pytest.mark.parametrize("data_spec", [5, "x", [1], {"spec": 5}, {"spec": {}, "structure": 5}])
def test_a_manager_checkpoint_with_a_malformed_data_spec(tmp_path: Path, data_spec: Any) -> None:
    from replaydb import ReplayBufferManager
    from replaydb.errors import ReplayError

    spec = {"obs": ((3,), "float32"), "reward": ((), "float32")}
    manager = ReplayBufferManager(spec, 100, tmp_path, sequence_length=2)
    manager.create_replay_buffer()
    manager.checkpoint()
    manager.close()
    path = latest_checkpoint(tmp_path)
    assert path is not None
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["extra"]["manager"]["data_spec"] = data_spec
    _write_manifest(path, manifest)
    for given in (spec, None):
        # A replaydb ValueError naming the description (the manager may wrap it in a
        # CheckpointError), never an AttributeError or TypeError.
        with pytest.raises(ReplayError, match="Nest description") as info:
            ReplayBufferManager(given, 100, tmp_path, sequence_length=2).load_replay_buffer()
        assert isinstance(info.value, ValueError)


def test_a_table_file_that_is_a_device_fails_fast(tmp_path: Path) -> None:
    (tmp_path / "t.safetensors").symlink_to("/dev/zero")
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_table(tmp_path / "t.safetensors")
    assert time.perf_counter() - start < 1.0
