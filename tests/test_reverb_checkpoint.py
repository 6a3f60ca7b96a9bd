"""Reading real dm-reverb 0.14 checkpoints without TensorFlow, and importing them.

The checkpoint under tests/data/reverb/ was written by dm-reverb 0.14.0 and
tf-agents 0.19.0 (scripts/make_reverb_checkpoint.py); expected.json records what
went in and what Reverb's own API reported about it.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("google.protobuf")
pytest.importorskip("cramjam")

from replaydb._reverb_checkpoint import (
    ReverbCheckpoint,
    ReverbItem,
    ReverbTable,
    ReverbTensorSpec,
    import_reverb_checkpoint,
    latest_reverb_checkpoint,
    read_reverb_checkpoint,
    signature_fields,
)
from replaydb._reverb_format import decode_structure, messages
from replaydb._tfrecord import masked_crc32c, read_records
from replaydb.checkpoint import read_checkpoint
from replaydb.cli import main
from replaydb.errors import CheckpointError, InvalidArgumentError, SpecMismatchError
from replaydb.manager import ReplayBufferManager
from replaydb.spec import Spec

DATA = Path(__file__).resolve().parent / "data" / "reverb"
CKPT = DATA / "checkpoint"
EXPECTED = json.loads((DATA / "expected.json").read_text())
FILES = ("tables.tfrecord", "items.tfrecord", "chunks.tfrecord")


def _decode(entry: dict[str, Any]) -> np.ndarray[Any, Any]:
    if entry["dtype"] == "bytes":
        out = np.empty(len(entry["items"]), dtype=object)
        for i, b in enumerate(entry["items"]):
            out[i] = base64.b64decode(b)
        return out.reshape(entry["shape"])
    raw = base64.b64decode(entry["b64"])
    return np.frombuffer(raw, dtype=entry["dtype"]).reshape(entry["shape"])


def _same(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


def _in_order(table: ReverbTable) -> list[ReverbItem]:
    return sorted(table.items, key=lambda it: it.inserted_at or 0)


@pytest.fixture(scope="module")
def ckpt() -> ReverbCheckpoint:
    return read_reverb_checkpoint(CKPT)


def _digest(c: ReverbCheckpoint) -> list[Any]:
    """Everything a checkpoint holds, comparable with ==."""
    out: list[Any] = []
    for t in c.tables:
        out.append(
            (
                t.name,
                t.max_size,
                t.max_times_sampled,
                t.sampler,
                t.remover,
                t.rate_limiter,
                t.signature_bytes,
                t.num_deleted_episodes,
                t.num_unique_samples,
            )
        )
        for it in t.items:
            cols = [(str(x.dtype), x.shape, x.tolist()) for x in it.columns]
            out.append((it.key, it.priority, it.times_sampled, it.inserted_at, it.squeeze, cols))
    return out


# ------------------------------------------------------------------ reading
def test_checkpoint_was_written_by_reverb_0_14() -> None:
    assert EXPECTED["reverb_version"] == "0.14.0"
    assert sum(f.stat().st_size for f in DATA.rglob("*") if f.is_file()) < 100_000


@pytest.mark.parametrize("name", sorted(EXPECTED["tables"]))
def test_table_settings_match_reverbs_server_info(ckpt: ReverbCheckpoint, name: str) -> None:
    exp = EXPECTED["tables"][name]
    t = ckpt.table(name)
    assert t.max_size == exp["max_size"]
    assert t.max_times_sampled == exp["max_times_sampled"]
    for mine, theirs in ((t.sampler, exp["sampler"]), (t.remover, exp["remover"])):
        assert mine.kind == theirs["kind"]
        assert mine.is_deterministic == theirs["is_deterministic"]
        assert mine.priority_exponent == theirs.get("priority_exponent")
        assert mine.min_heap == theirs.get("min_heap")
    lim, elim = t.rate_limiter, exp["rate_limiter"]
    assert lim.samples_per_insert == elim["samples_per_insert"]
    assert lim.min_diff == elim["min_diff"]
    assert lim.max_diff == elim["max_diff"]
    assert lim.min_size_to_sample == elim["min_size_to_sample"]
    assert lim.insert_count == elim["insert_count"]
    assert lim.sample_count == elim["sample_count"]
    assert lim.delete_count == elim["insert_count"] - exp["current_size"]
    assert t.num_deleted_episodes == exp["num_deleted_episodes"]
    assert t.num_unique_samples == exp["num_unique_samples"]
    assert (t.signature is not None) == exp["has_signature"]
    assert (t.signature_bytes is not None) == exp["has_signature"]
    assert len(t.items) == exp["current_size"]


@pytest.mark.parametrize("name", sorted(EXPECTED["tables"]))
def test_items_match_what_was_written(ckpt: ReverbCheckpoint, name: str) -> None:
    exp = EXPECTED["tables"][name]["items"]
    items = _in_order(ckpt.table(name))
    assert len(items) == len(exp)
    assert len({it.key for it in items}) == len(items)
    for it, e in zip(items, exp, strict=True):
        if e["key"] is not None:
            assert it.key == int(e["key"])
        assert it.priority == e["priority"]
        assert it.times_sampled == e["times_sampled"]
        assert it.squeeze == tuple(e["squeeze"])
        assert it.inserted_at is not None and it.inserted_at > 1_600_000_000 * 10**9
        want = [_decode(c) for c in e["columns"]]
        assert len(it.columns) == len(want)
        for got, w in zip(it.columns, want, strict=True):
            assert _same(got, w), (name, it.key, got, w)


def test_image_column_and_delta_encoded_columns(ckpt: ReverbCheckpoint) -> None:
    traj = ckpt.table("trajectories").items[0]
    assert traj.columns[1].dtype == np.uint8 and traj.columns[1].shape == (2, 8, 8, 3)
    legacy = _in_order(ckpt.table("legacy"))
    # uint16 values wrap around in the delta encoding: 65535 - t next to t.
    assert legacy[0].columns[1][:, 0, 0].tolist() == [65535, 65534]
    assert legacy[0].columns[3].tolist() == [b"", b"step-1"]


def test_signature_is_decoded(ckpt: ReverbCheckpoint) -> None:
    sig = ckpt.table("prioritized").signature
    assert sig == {
        "id": ReverbTensorSpec("id", (), "int64"),
        "obs": ReverbTensorSpec("obs", (3,), "float32"),
    }
    assert [n for n, _ in signature_fields(sig)] == EXPECTED["tables"]["prioritized"]["field_names"]


def test_tensorflow_encoded_signature_decodes_like_tree_flatten() -> None:
    msg = messages()["StructuredValue"].FromString((DATA / "signature.pb").read_bytes())
    decoded = decode_structure(msg, "signature.pb")
    assert type(decoded[0]).__name__ == "Trajectory"
    assert decoded[0].policy_info == ()
    got = signature_fields(decoded)
    want = EXPECTED["signature_example"]
    assert [n for n, _ in got] == [n for n, _ in want]
    for (_, leaf), (name, exp) in zip(got, want, strict=True):
        if exp is None:
            assert leaf is None
            continue
        assert leaf.name == exp["name"], name
        assert leaf.dtype == exp["dtype"], name
        assert list(leaf.shape) == exp["shape"], name
        if "minimum" in exp:
            assert leaf.minimum.dtype == np.dtype(exp["dtype"])
            assert leaf.minimum.tolist() == exp["minimum"]
            assert leaf.maximum.tolist() == exp["maximum"]
        else:
            assert leaf.minimum is None


def test_plain_tensors_of_signature_bounds() -> None:
    from replaydb._reverb_format import decode_plain_tensor

    proto = messages()["TensorProto"]

    def tp(dtype: int, dims: list[int], **values: Any) -> Any:
        t = proto(dtype=dtype, **values)
        for d in dims:
            t.tensor_shape.dim.add(size=d)
        return t

    def dec(t: Any) -> np.ndarray[Any, Any]:
        return decode_plain_tensor(t, "t")

    assert dec(tp(4, [3], int_val=[255])).tolist() == [255, 255, 255]  # last value repeats
    assert dec(tp(6, [2], int_val=[-1, 300])).tolist() == [-1, 44]  # int8 wraps
    assert dec(tp(19, [1], half_val=[0x3C00])).tolist() == [1.0]
    assert dec(tp(19, [1], half_val=[-1])).dtype == np.float16
    assert dec(tp(8, [1], scomplex_val=[1.0, 2.0])).tolist() == [1 + 2j]
    assert dec(tp(10, [2], bool_val=[True, False])).tolist() == [True, False]
    assert dec(tp(23, [], uint64_val=[2**64 - 1])).tolist() == 2**64 - 1
    assert dec(tp(2, [2])).tolist() == [0.0, 0.0]
    assert dec(tp(1, [2], tensor_content=np.float32([1, 2]).tobytes())).tolist() == [1.0, 2.0]
    assert dec(tp(7, [2], string_val=[b"a"])).tolist() == [b"a", b"a"]
    with pytest.raises(CheckpointError, match="pairs expected"):
        dec(tp(8, [1], scomplex_val=[1.0]))
    with pytest.raises(CheckpointError, match="needs 12"):
        dec(tp(1, [3], tensor_content=b"\x00" * 8))
    with pytest.raises(CheckpointError, match="more elements than"):
        dec(tp(1, [1 << 20, 1 << 20], float_val=[1.0]))


def test_odd_named_tuples_in_signatures() -> None:
    sv = messages()["StructuredValue"]()
    nt = sv.named_tuple_value
    nt.name = "class"
    for key in ("_x", "def"):
        nt.values.add(key=key).value.tensor_spec_value.dtype = 1
    value = decode_structure(sv, "sig")
    assert type(value).__name__ == "NamedTuple" and len(value) == 2
    nt.values.add(key="_x")
    with pytest.raises(CheckpointError, match="repeats a field"):
        decode_structure(sv, "sig")
    sv = messages()["StructuredValue"]()
    sv.type_spec_value.type_spec_class_name = "RaggedTensorSpec"
    assert decode_structure(sv, "sig").class_name == "RaggedTensorSpec"
    deep = messages()["StructuredValue"]()
    node = deep
    for _ in range(70):
        node = node.list_value.values.add()
    with pytest.raises(CheckpointError, match="nested deeper"):
        decode_structure(deep, "sig")


def test_signature_fields_follow_tree_flatten_order() -> None:
    import collections

    leaf = ReverbTensorSpec("", (), "float32")
    traj = collections.namedtuple("Traj", ["step_type", "observation", "policy_info", "reward"])
    sig = traj(leaf, {"temp": leaf, "image": leaf}, (), [leaf, (leaf,)])
    names = [n for n, _ in signature_fields(sig)]
    assert names == ["step_type", "observation.image", "observation.temp", "reward.0", "reward.1.0"]
    assert signature_fields(ReverbTensorSpec("x", (), "int8"))[0][0] == "x"


def test_root_picks_name_sorted_last_complete_checkpoint(tmp_path: Path) -> None:
    assert latest_reverb_checkpoint(tmp_path / "missing") is None
    assert latest_reverb_checkpoint(tmp_path) is None
    with pytest.raises(CheckpointError, match="DONE"):
        read_reverb_checkpoint(tmp_path)
    shutil.copytree(CKPT, tmp_path / "2024-01-01T00:00:00.000000000+00:00")
    shutil.copytree(CKPT, tmp_path / "2024-03-01T00:00:00.000000000+00:00")
    (tmp_path / "2024-03-01T00:00:00.000000000+00:00" / "items.tfrecord").write_bytes(b"junk")
    unfinished = tmp_path / "2024-05-01T00:00:00.000000000+00:00"
    shutil.copytree(CKPT, unfinished)
    (unfinished / "DONE").unlink()
    assert latest_reverb_checkpoint(tmp_path) == tmp_path / "2024-03-01T00:00:00.000000000+00:00"
    with pytest.raises(CheckpointError, match=r"items.tfrecord"):
        read_reverb_checkpoint(tmp_path)  # the newest complete one is damaged: no fallback
    shutil.rmtree(tmp_path / "2024-03-01T00:00:00.000000000+00:00")
    got = read_reverb_checkpoint(tmp_path)
    assert got.path.name.startswith("2024-01-01")
    assert _digest(got) == _digest(read_reverb_checkpoint(CKPT))
    with pytest.raises(CheckpointError, match="no DONE marker"):
        read_reverb_checkpoint(unfinished)


def test_missing_paths_and_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no directory"):
        read_reverb_checkpoint(tmp_path / "nope")
    shutil.copytree(CKPT, tmp_path / "c")
    (tmp_path / "c" / "chunks.tfrecord").unlink()
    with pytest.raises(CheckpointError, match=r"chunks.tfrecord.*missing"):
        read_reverb_checkpoint(tmp_path / "c")


def test_uncompressed_files_of_old_checkpoints_load(tmp_path: Path) -> None:
    shutil.copytree(CKPT, tmp_path / "c")
    for name in FILES:
        f = tmp_path / "c" / name
        f.write_bytes(zlib.decompress(f.read_bytes()))
    assert _digest(read_reverb_checkpoint(tmp_path / "c")) == _digest(read_reverb_checkpoint(CKPT))


def test_masked_crc32c_known_values() -> None:
    # CRC32C("123456789") = 0xE3069283 (the Castagnoli check value), masked by TFRecord's rule.
    c = 0xE3069283
    assert masked_crc32c(b"123456789") == ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & (
        0xFFFFFFFF
    )
    assert masked_crc32c(b"") == 0xA282EAD8


def test_missing_extras_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from replaydb import _reverb_format
    from replaydb.errors import MissingDependencyError

    monkeypatch.setattr(_reverb_format, "_CRAMJAM", [])
    monkeypatch.setitem(sys.modules, "cramjam", None)
    with pytest.raises(MissingDependencyError, match=r"replaydb\[reverb-import\]"):
        read_reverb_checkpoint(CKPT)
    monkeypatch.setattr(_reverb_format, "_messages", {})
    monkeypatch.setitem(sys.modules, "google.protobuf", None)
    with pytest.raises(MissingDependencyError, match=r"replaydb\[reverb-import\]"):
        read_reverb_checkpoint(CKPT)
    assert main(["import-reverb", str(CKPT), "--out", "/nonexistent/x"]) == 2


@pytest.mark.parametrize("n", [1 << 16, (1 << 16) + 7, 300_001, (1 << 22) + 5])
def test_numpy_crc32c_matches_the_table_loop(n: int) -> None:
    from replaydb._tfrecord import _crc32c_np, _crc32c_py

    data = np.random.default_rng(n).bytes(n)
    assert _crc32c_np(data) == _crc32c_py(data)


def test_batched_crc32c_matches_the_table_loop() -> None:
    from replaydb._tfrecord import _crc32c_py, crc32c_many

    rng = np.random.default_rng(7)
    payloads = [rng.bytes(int(n)) for n in rng.integers(0, 3000, 400)]
    payloads += [b"", b"x", rng.bytes(70_000), *([b"same"] * 9)]
    assert crc32c_many(payloads) == [_crc32c_py(p) for p in payloads]


# ------------------------------------------------------- synthetic damage
def _frame(payloads: list[bytes]) -> bytes:
    out = bytearray()
    for p in payloads:
        head = struct.pack("<Q", len(p))
        out += head + struct.pack("<I", masked_crc32c(head)) + p
        out += struct.pack("<I", masked_crc32c(p))
    return bytes(out)


def _records(name: str) -> list[bytes]:
    return [p for _, p in read_records((CKPT / name).read_bytes(), name)]


def _rewrite(tmp_path: Path, name: str, edit: Callable[[list[Any]], None]) -> Path:
    """A copy of the checkpoint whose ``name`` records went through ``edit`` (as messages)."""
    kind = {
        "tables.tfrecord": "PriorityTableCheckpoint",
        "items.tfrecord": "PrioritizedItem",
        "chunks.tfrecord": "ChunkData",
    }[name]
    msgs = [messages()[kind].FromString(p) for p in _records(name)]
    edit(msgs)
    d = tmp_path / "c"
    shutil.copytree(CKPT, d, dirs_exist_ok=True)
    (d / name).write_bytes(zlib.compress(_frame([m.SerializeToString() for m in msgs])))
    return d


def _chunk_of(msgs: list[Any], dtype: int | None = None, delta: bool | None = None) -> Any:
    for m in msgs:
        t = m.data.tensors[0]
        if (dtype is None or t.dtype == dtype) and (delta is None or m.delta_encoded == delta):
            return m
    raise AssertionError("no such chunk")


DAMAGE: list[tuple[str, str, Callable[[list[Any]], None]]] = [
    ("tables.tfrecord", "appears twice", lambda ms: ms.append(ms[0])),
    ("tables.tfrecord", "table_name is empty", lambda ms: ms[0].ClearField("table_name")),
    ("tables.tfrecord", "max_size", lambda ms: setattr(ms[0], "max_size", 0)),
    ("tables.tfrecord", "deprecated_items", lambda ms: ms[0].deprecated_items.add(key=1)),
    ("tables.tfrecord", "no selector", lambda ms: ms[0].ClearField("sampler")),
    ("tables.tfrecord", "does not hold", lambda ms: ms.pop(0)),
    (
        "tables.tfrecord",
        "unknown TensorFlow dtype",
        lambda ms: [
            m.signature.dict_value.fields["id"].tensor_spec_value.__setattr__("dtype", 99)
            for m in ms
            if m.HasField("signature")
        ],
    ),
    ("items.tfrecord", "deprecated_chunk_keys", lambda ms: ms[0].deprecated_chunk_keys.append(1)),
    ("items.tfrecord", "no columns", lambda ms: ms[0].flat_trajectory.ClearField("columns")),
    (
        "items.tfrecord",
        "no chunk slices",
        lambda ms: ms[0].flat_trajectory.columns[0].ClearField("chunk_slices"),
    ),
    (
        "items.tfrecord",
        "not in chunks.tfrecord",
        lambda ms: setattr(ms[0].flat_trajectory.columns[0].chunk_slices[0], "chunk_key", 7),
    ),
    (
        "items.tfrecord",
        "index 5",
        lambda ms: setattr(ms[0].flat_trajectory.columns[0].chunk_slices[0], "index", 5),
    ),
    (
        "items.tfrecord",
        "outside chunk",
        lambda ms: setattr(ms[0].flat_trajectory.columns[0].chunk_slices[0], "length", 9),
    ),
    (
        "items.tfrecord",
        "squeeze is set",
        lambda ms: [
            setattr(m.flat_trajectory.columns[0], "squeeze", True)
            for m in ms
            if m.table == "trajectories"
        ],
    ),
    (
        "items.tfrecord",
        "does not match the column",
        lambda ms: [
            m.flat_trajectory.columns[0].chunk_slices.append(
                m.flat_trajectory.columns[1].chunk_slices[0]
            )
            for m in ms
            if m.table == "trajectories"
        ],
    ),
    ("items.tfrecord", "nanos", lambda ms: setattr(ms[0].inserted_at, "nanos", -1)),
    (
        "chunks.tfrecord",
        "appears again with different data",
        lambda ms: ms.append(type(ms[1])(chunk_key=ms[0].chunk_key, data=ms[1].data)),
    ),
    (
        "chunks.tfrecord",
        "data_tensors_len",
        lambda ms: [setattr(m, "data_tensors_len", 9) for m in ms],
    ),
    (
        "chunks.tfrecord",
        "deprecated_data",
        lambda ms: [(m.ClearField("data"), m.deprecated_data.add(dtype=1)) for m in ms],
    ),
    (
        "chunks.tfrecord",
        "dtype 99 is not supported",
        lambda ms: [setattr(m.data.tensors[0], "dtype", 99) for m in ms],
    ),
    (
        "chunks.tfrecord",
        "negative dimension",
        lambda ms: [setattr(m.data.tensors[0].tensor_shape.dim[0], "size", -1) for m in ms],
    ),
    (
        "chunks.tfrecord",
        "unknown rank",
        lambda ms: [setattr(m.data.tensors[0].tensor_shape, "unknown_rank", True) for m in ms],
    ),
    (
        "chunks.tfrecord",
        "inflates to",
        lambda ms: [m.data.tensors[0].tensor_shape.dim.add(size=2) for m in ms],
    ),
    (
        "chunks.tfrecord",
        "more elements than",
        lambda ms: [m.data.tensors[0].tensor_shape.dim.add(size=10**12) for m in ms],
    ),
    (
        "chunks.tfrecord",
        "not Snappy data|corrupt Snappy",
        lambda ms: [
            setattr(m.data.tensors[0], "tensor_content", b"\xff\xff\xff\xff\xff\xff")
            for m in ms
            if m.data.tensors[0].dtype != 7
        ],
    ),
    (
        "chunks.tfrecord",
        "length varint|add up to",
        lambda ms: [
            setattr(t, "tensor_content", bytes(t.tensor_content)[:-1] or b"\x05")
            for m in ms
            for t in m.data.tensors
            if t.dtype == 7
        ],
    ),
]


@pytest.mark.parametrize(
    ("name", "match", "edit"), DAMAGE, ids=[f"{n.split('.')[0]}-{m}" for n, m, _ in DAMAGE]
)
def test_damaged_messages_name_the_problem(
    tmp_path: Path, name: str, match: str, edit: Callable[[list[Any]], None]
) -> None:
    with pytest.raises(CheckpointError, match=match) as info:
        read_reverb_checkpoint(_rewrite(tmp_path, name, edit))
    assert "record" in str(info.value) or "tables.tfrecord" in str(info.value)


def test_repeated_identical_chunks_are_read_once(tmp_path: Path) -> None:
    # Real Reverb checkpoints repeat some chunks (seen with 5,000 TF-Agents items).
    d = _rewrite(tmp_path, "chunks.tfrecord", lambda ms: ms.extend(ms[:3]))
    assert _digest(read_reverb_checkpoint(d)) == _digest(read_reverb_checkpoint(CKPT))


def test_framing_errors(tmp_path: Path) -> None:
    d = tmp_path / "c"
    shutil.copytree(CKPT, d)
    good = zlib.decompress((CKPT / "items.tfrecord").read_bytes())
    cases = {
        "truncated": good[:-3],
        "length's CRC": good[:8] + bytes([good[8] ^ 1]) + good[9:],
        "payload's CRC": good[:-1] + bytes([good[-1] ^ 1]),
        "claims": struct.pack("<Q", 10**9)
        + struct.pack("<I", masked_crc32c(struct.pack("<Q", 10**9)))
        + good[12:],
    }
    for match, raw in cases.items():
        (d / "items.tfrecord").write_bytes(zlib.compress(raw))
        with pytest.raises(CheckpointError, match=match):
            read_reverb_checkpoint(d)
    # The CRCs can be skipped (a damaged CRC then goes unnoticed).
    (d / "items.tfrecord").write_bytes(zlib.compress(cases["payload's CRC"]))
    assert len(read_reverb_checkpoint(d, verify_checksums=False).tables) == 3
    stream = zlib.compress(good)
    for match, raw in {
        "truncated": stream[:-5],
        "stray bytes": stream + b"\x00",
        "corrupt": stream[:2] + b"\xff" * 8 + stream[10:],
    }.items():
        (d / "items.tfrecord").write_bytes(raw)
        with pytest.raises(CheckpointError, match=match):
            read_reverb_checkpoint(d)


def test_zip_bomb_fails_before_inflating(tmp_path: Path) -> None:
    import tracemalloc

    d = tmp_path / "c"
    shutil.copytree(CKPT, d)
    packer = zlib.compressobj(9)
    zeros = bytes(1 << 20)
    bomb = b"".join(packer.compress(zeros) for _ in range(100)) + packer.flush()
    (d / "chunks.tfrecord").write_bytes(bomb)  # 100 MiB of zeros in ~100 KB
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="length's CRC"):
            read_reverb_checkpoint(d)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
    # Without CRCs, the zero header is a chain of empty records: read, but bounded.
    (d / "chunks.tfrecord").write_bytes(zlib.compress(bytes(16 * 3)))
    with pytest.raises(CheckpointError, match=r"is not in chunks.tfrecord"):
        read_reverb_checkpoint(d, verify_checksums=False)


def test_empty_file_is_truncated(tmp_path: Path) -> None:
    d = tmp_path / "c"
    shutil.copytree(CKPT, d)
    (d / "items.tfrecord").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"items.tfrecord is empty"):
        read_reverb_checkpoint(d)


# ------------------------------------------------------------------ fuzzing
_ORIGINAL: dict[str, bytes] = {n: (CKPT / n).read_bytes() for n in FILES}
_ORIGINAL_DIGEST = _digest(read_reverb_checkpoint(CKPT))


@st.composite
def _mutations(draw: st.DrawFn, data: bytes) -> bytes:
    kind = draw(st.sampled_from(["truncate", "flip", "splice"]))
    n = len(data)
    if kind == "truncate":
        return data[: draw(st.integers(0, n - 1))]
    if kind == "flip":
        i = draw(st.integers(0, n - 1))
        return data[:i] + bytes([data[i] ^ (1 << draw(st.integers(0, 7)))]) + data[i + 1 :]
    a = draw(st.integers(0, n - 1))
    b = draw(st.integers(a + 1, min(n, a + 64)))
    at = draw(st.integers(0, n))
    out = data[:at] + data[a:b] + data[at:]
    return out if draw(st.booleans()) else out[: len(data)]


def _read_with(tmp: Path, name: str, raw: bytes) -> tuple[ReverbCheckpoint | None, float]:
    d = tmp / "fuzz"
    if not d.exists():
        shutil.copytree(CKPT, d)
    for n in FILES:
        (d / n).write_bytes(raw if n == name else _ORIGINAL[n])
    start = time.process_time()
    try:
        return read_reverb_checkpoint(d), time.process_time() - start
    except CheckpointError:
        return None, time.process_time() - start


@pytest.mark.parametrize("name", FILES)
@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzzed_files_end_in_checkpoint_error(
    tmp_path: Path, name: str, data: st.DataObject
) -> None:
    """Truncated, bit-flipped or spliced files: a CheckpointError, never a wrong result."""
    raw = data.draw(_mutations(_ORIGINAL[name]))
    got, cpu = _read_with(tmp_path, name, raw)
    assert cpu < 1.0
    # zlib's Adler-32 and the record CRCs catch every change; the only changes that
    # can pass are no-ops (e.g. a splice that rewrites the same bytes, or the
    # padding bits after deflate's last block), and those must read unchanged.
    assert got is None or _digest(got) == _ORIGINAL_DIGEST


@pytest.mark.parametrize("name", FILES)
@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzzed_records_with_valid_framing_never_crash(
    tmp_path: Path, name: str, data: st.DataObject
) -> None:
    """Damage inside records, re-framed with good CRCs: parsed or a CheckpointError."""
    records = _records(name)
    i = data.draw(st.integers(0, len(records) - 1))
    records[i] = data.draw(_mutations(records[i]))
    got, cpu = _read_with(tmp_path, name, zlib.compress(_frame(records)))
    assert cpu < 1.0
    if got is not None:  # the damage parsed as other valid values: shapes stay sane
        for t in got.tables:
            for it in t.items:
                assert all(isinstance(c, np.ndarray) for c in it.columns)


# ------------------------------------------------------------------ import
def _trajectory_spec() -> Spec:
    names = EXPECTED["tables"]["trajectories"]["field_names"]
    first = EXPECTED["tables"]["trajectories"]["items"][0]["columns"]
    return Spec({n: (tuple(c["shape"][1:]), c["dtype"]) for n, c in zip(names, first, strict=True)})


def test_import_keeps_items_priorities_and_times_sampled(tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(_trajectory_spec().to_json()))
    result = import_reverb_checkpoint(CKPT, tmp_path / "out", spec=spec_file, table="trajectories")
    (info,) = result.tables
    # Two runs of three consecutive windows (episodes 1 and 2): 4 + 4 rows.
    assert (info.items, info.sequence_length, info.capacity) == (6, 2, 8)
    assert info.fields == tuple(EXPECTED["tables"]["trajectories"]["field_names"])
    tables, manifest = read_checkpoint(tmp_path / "out")
    table = tables["trajectories"]
    exp = EXPECTED["tables"]["trajectories"]["items"]
    assert len(table) == 6 and table.sequence_length == 2
    assert table.rate_limiter.config() == {"type": "MinSize", "min_size": 1}
    assert (table.rate_limiter.inserts, table.rate_limiter.samples) == (7, 150)
    assert table.sampler.config()["type"] == "Uniform"
    assert table.num_steps == 8
    meta = manifest["extra"]["reverb_import"]["tables"]["trajectories"]
    assert meta["reverb_keys"] == [e["key"] for e in exp]
    assert meta["keys"] == [0, 1, 2, 4, 5, 6]
    state = table.state_dict()
    slots = torch.tensor(meta["keys"])
    assert state["items.key"][slots].tolist() == slots.tolist()
    assert state["items.priority"][slots].tolist() == [e["priority"] for e in exp]
    assert state["items.times_sampled"][slots].tolist() == [e["times_sampled"] for e in exp]
    sample = table.sample(200)
    assert set(sample.keys.tolist()) == set(meta["keys"])
    names = list(_trajectory_spec())
    for b, key in enumerate(sample.keys.tolist()):
        want = [_decode(c) for c in exp[meta["keys"].index(key)]["columns"]]
        for n, w in zip(names, want, strict=True):
            assert np.array_equal(sample[n][b].numpy(), w), (key, n)


def _check_import(out: Path, table: ReverbTable) -> list[int]:
    """The imported table serves exactly ``table``'s items; returns the replaydb keys."""
    tables, manifest = read_checkpoint(out)
    native = tables[table.name]
    meta = manifest["extra"]["reverb_import"]["tables"][table.name]
    by_key = {it.key: it for it in table.items}
    items = [by_key[int(k)] for k in meta["reverb_keys"]]
    keys = meta["keys"]
    assert len(native) == len(items) == len(keys)
    state = native.state_dict()
    assert state["items.priority"][keys].tolist() == [it.priority for it in items]
    assert state["items.times_sampled"][keys].tolist() == [it.times_sampled for it in items]
    sample = native.sample(300)
    assert set(sample.keys.tolist()) == set(keys)
    for b, key in enumerate(sample.keys.tolist()):
        item = items[keys.index(key)]
        for name, col in zip(native.spec, item.columns, strict=True):
            assert np.array_equal(sample[name][b].numpy(), col), (key, name)
    return list(keys)


def test_import_runs_split_where_items_are_not_consecutive(
    tmp_path: Path, ckpt: ReverbCheckpoint
) -> None:
    traj = ckpt.table("trajectories")
    items = _in_order(traj)
    # Drop the middle window of episode 1: its neighbours no longer form one run.
    gap = dataclasses.replace(traj, items=tuple(items[:1] + items[2:]))
    import_reverb_checkpoint(ReverbCheckpoint(ckpt.path, (gap,)), tmp_path / "gap")
    assert _check_import(tmp_path / "gap", gap) == [0, 2, 4, 5, 6]
    # Overlapping steps that differ (here: episode 2's second window) start a new run.
    changed = [c.copy() for c in items[4].columns]
    changed[5][0] += 1.0
    odd = dataclasses.replace(
        traj, items=(*items[:4], dataclasses.replace(items[4], columns=tuple(changed)), items[5])
    )
    import_reverb_checkpoint(ReverbCheckpoint(ckpt.path, (odd,)), tmp_path / "odd")
    assert _check_import(tmp_path / "odd", odd) == [0, 1, 2, 4, 6, 7]
    # Without sequence ranges every item is a run of its own.
    lost = dataclasses.replace(
        traj, items=tuple(dataclasses.replace(it, episode_id=None, start=None) for it in items)
    )
    (info,) = import_reverb_checkpoint(ReverbCheckpoint(ckpt.path, (lost,)), tmp_path / "l").tables
    assert info.capacity == 12
    assert _check_import(tmp_path / "l", lost) == [0, 2, 4, 6, 8, 10]


def test_import_loads_in_the_manager(tmp_path: Path) -> None:
    import collections

    from replaydb import Field

    import_reverb_checkpoint(CKPT, tmp_path, spec=_trajectory_spec(), table="trajectories")
    manager = ReplayBufferManager(None, 8, tmp_path, sequence_length=2)
    try:
        buffer, _ = manager.load_replay_buffer()
        assert manager.num_frames() == 6
        assert list(manager.data_spec.spec) == list(_trajectory_spec())
        batch = next(iter(buffer.as_dataset(4, num_steps=2)))
        assert batch[0]["observation"]["image"].shape == (4, 2, 8, 8, 3)
    finally:
        manager.close()
    # A TF-Agents-shaped data spec (a Trajectory named tuple, policy_info=()) loads it too.
    traj = collections.namedtuple(
        "Trajectory",
        "step_type observation action policy_info next_step_type reward discount",
    )
    fields = {n: Field(f.shape, f.dtype) for n, f in _trajectory_spec().items()}
    data_spec = traj(
        fields["step_type"],
        {"image": fields["observation.image"], "temp": fields["observation.temp"]},
        fields["action"],
        (),
        fields["next_step_type"],
        fields["reward"],
        fields["discount"],
    )
    manager = ReplayBufferManager(data_spec, 8, tmp_path, sequence_length=2)
    try:
        buffer, _ = manager.load_replay_buffer()
        batch = next(iter(buffer.as_dataset(4, num_steps=2)))
        assert type(batch[0]).__name__ == "Trajectory" and batch[0].policy_info == ()
        assert batch[0].observation["temp"].shape == (4, 2, 2)
    finally:
        manager.close()


def test_import_prioritized_table_maps_settings(tmp_path: Path) -> None:
    result = import_reverb_checkpoint(CKPT, tmp_path, table=["prioritized"])
    (info,) = result.tables
    assert info.fields == ("id", "obs") and info.sequence_length == 1
    assert any("remover heap" in n for n in info.notes)
    table = read_checkpoint(tmp_path)[0]["prioritized"]
    assert table.sampler.config()["alpha"] == 0.8 and table.sampler.config()["eps"] == 0.0
    assert table.rate_limiter.config() == {"type": "MinSize", "min_size": 2}
    exp = EXPECTED["tables"]["prioritized"]["items"]
    state = table.state_dict()
    assert state["items.priority"].tolist() == [e["priority"] for e in exp]
    assert state["items.times_sampled"].tolist() == [e["times_sampled"] for e in exp]


def test_import_legacy_items_of_one_length_widens_uint16(
    tmp_path: Path, ckpt: ReverbCheckpoint
) -> None:
    legacy = ckpt.table("legacy")
    two = tuple(
        dataclasses.replace(it, columns=it.columns[:3], squeeze=it.squeeze[:3])
        for it in legacy.items
        if it.columns[0].shape[0] == 2
    )
    one = ReverbCheckpoint(ckpt.path, (dataclasses.replace(legacy, items=two),))
    (info,) = import_reverb_checkpoint(one, tmp_path).tables
    assert any("uint16 widened to int32" in n for n in info.notes)
    table = read_checkpoint(tmp_path)[0]["legacy"]
    assert table.spec["column_1"].dtype == torch.int32
    assert table.max_times_sampled == 2 and table.sampler.config()["type"] == "Lifo"
    assert table.rate_limiter.config()["type"] == "RateLimiter"
    assert (table.rate_limiter.min_diff, table.rate_limiter.max_diff) == (-98.0, 102.0)


def test_import_errors(tmp_path: Path, ckpt: ReverbCheckpoint) -> None:
    with pytest.raises(SpecMismatchError, match=r"items of \[2, 3\] steps"):
        import_reverb_checkpoint(ckpt, tmp_path / "a")
    with pytest.raises(InvalidArgumentError, match="'nope' is not in"):
        import_reverb_checkpoint(ckpt, tmp_path / "a", table="nope")
    with pytest.raises(InvalidArgumentError, match="one table"):
        import_reverb_checkpoint(ckpt, tmp_path / "a", spec=_trajectory_spec())
    with pytest.raises(SpecMismatchError, match="the spec has 2 fields"):
        import_reverb_checkpoint(
            ckpt, tmp_path / "a", spec={"a": (), "b": ()}, table="trajectories"
        )
    wrong = dict(_trajectory_spec().to_json())
    wrong["reward"] = {"shape": [], "dtype": "int8"}
    with pytest.raises(SpecMismatchError, match="field 'reward'"):
        import_reverb_checkpoint(
            ckpt, tmp_path / "a", spec=Spec.from_json(wrong), table="trajectories"
        )
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(InvalidArgumentError, match="not readable JSON"):
        import_reverb_checkpoint(ckpt, tmp_path / "a", spec=bad, table="trajectories")
    bad.write_text('{"a": 1}')
    with pytest.raises(InvalidArgumentError, match="must map each field"):
        import_reverb_checkpoint(ckpt, tmp_path / "a", spec=bad, table="trajectories")
    with pytest.raises(InvalidArgumentError, match="spec must be"):
        import_reverb_checkpoint(ckpt, tmp_path / "a", spec=3, table="trajectories")
    with pytest.raises(InvalidArgumentError, match="capacity 3 is too small"):
        import_reverb_checkpoint(ckpt, tmp_path / "a", table="trajectories", capacity=3)
    with pytest.raises(InvalidArgumentError, match="capacity must be"):
        import_reverb_checkpoint(ckpt, tmp_path / "a", table="trajectories", capacity=0)
    strings = ckpt.table("legacy")
    only = tuple(it for it in strings.items if it.columns[0].shape[0] == 2)
    with pytest.raises(SpecMismatchError, match="holds strings"):
        import_reverb_checkpoint(
            ReverbCheckpoint(ckpt.path, (dataclasses.replace(strings, items=only),)),
            tmp_path / "a",
        )
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(CheckpointError, match="not an empty directory"):
        import_reverb_checkpoint(ckpt, tmp_path / "full", table="trajectories")
    assert not (tmp_path / "a").exists()  # nothing was written by a rejected call
    assert import_reverb_checkpoint(ckpt, tmp_path / "full", table="trajectories", force=True)


def test_import_rejects_settings_replaydb_cannot_hold(
    tmp_path: Path, ckpt: ReverbCheckpoint
) -> None:
    prio = ckpt.table("prioritized")
    steep = dataclasses.replace(
        prio, sampler=dataclasses.replace(prio.sampler, priority_exponent=2.0)
    )
    with pytest.raises(InvalidArgumentError, match=r"priority_exponent 2.0"):
        import_reverb_checkpoint(ReverbCheckpoint(ckpt.path, (steep,)), tmp_path / "a")
    neg = dataclasses.replace(
        prio, items=(dataclasses.replace(prio.items[0], priority=-1.0), *prio.items[1:])
    )
    with pytest.raises(CheckpointError, match=r"priority -1.0"):
        import_reverb_checkpoint(ReverbCheckpoint(ckpt.path, (neg,)), tmp_path / "a")
    zero = dataclasses.replace(
        prio, items=(dataclasses.replace(prio.items[0], priority=0.0), *prio.items[1:])
    )
    (info,) = import_reverb_checkpoint(ReverbCheckpoint(ckpt.path, (zero,)), tmp_path / "z").tables
    assert any("priority 0" in n for n in info.notes)
    empty = dataclasses.replace(ckpt.table("trajectories"), items=())
    with pytest.raises(SpecMismatchError, match="no items"):
        import_reverb_checkpoint(ReverbCheckpoint(ckpt.path, (empty,)), tmp_path / "a")
    assert not (tmp_path / "a").exists()
    # With a spec, an empty table imports empty (one-step items: nothing says more).
    (info,) = import_reverb_checkpoint(
        ReverbCheckpoint(ckpt.path, (empty,)), tmp_path / "e", spec=_trajectory_spec()
    ).tables
    assert (info.items, info.sequence_length, info.capacity) == (0, 1, 6)
    assert len(read_checkpoint(tmp_path / "e")[0]["trajectories"]) == 0


# ------------------------------------------------------------------ CLI
def test_cli_import_reverb_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(_trajectory_spec().to_json()))
    out = tmp_path / "native"
    args = ["import-reverb", str(DATA), "--out", str(out), "--spec", str(spec_file)]
    code = main([*args, "--table", "trajectories", "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["tables"][0]["items"] == 6
    assert Path(printed["source"]).resolve() == CKPT.resolve()
    tables, _ = read_checkpoint(out)
    assert len(tables["trajectories"]) == 6
    assert (
        main(["import-reverb", str(CKPT), "--out", str(tmp_path / "p"), "--table", "prioritized"])
        == 0
    )
    text = capsys.readouterr().out
    assert "5 items of 1 step(s)" in text and "load it with ReplayBufferManager" in text


def test_cli_import_reverb_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import-reverb", str(CKPT), "--out", str(tmp_path / "o")]) == 2
    assert "--table NAME" in capsys.readouterr().err
    assert main(["import-reverb", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "no directory" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
