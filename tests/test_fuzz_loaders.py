"""Fuzzing every file loader with byte-level and JSON-level mutations (issue 11).

Each loader is given a file (or directory) that replaydb wrote, mutated one way:

* bytes: truncated, a bit flipped, a chunk spliced over another place, bytes
  inserted or deleted (positions biased toward the JSON headers, where parsing is);
* JSON: a value replaced by another JSON type, a key deleted, a value nested
  thousands of levels deep, a huge or non-finite number; for table files the
  checksum is optionally recomputed, as anyone can.

The contract checked for every mutation: the loader raises
:class:`~replaydb.errors.CheckpointError` or returns the same data as the original
(a no-op mutation, or a JSON change that keeps the file valid), within a second,
without building a table larger than the file accounts for, and without changing
an object loaded before.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import replaydb.storage
from replaydb import ReplayBuffer, Spec, Table
from replaydb.checkpoint import (
    load_table,
    read_checkpoint,
    read_json,
    save_table,
    tensor_checksum,
    write_checkpoint,
)
from replaydb.errors import CheckpointError
from replaydb.samplers import Prioritized, Uniform

FUZZ = settings(
    max_examples=60,
    deadline=None,  # the one-second bound is asserted on the load itself
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SECONDS = 1.0
PYTHON_BYTES = 64 * 2**20
CAPACITY = 16


# ------------------------------------------------------------------ originals
def _table(prioritized: bool, seed: int = 0) -> Table:
    sampler = Prioritized(seed=3) if prioritized else Uniform(seed=3)
    table = Table(
        Spec({"obs": (3,), "reward": (), "action": ((), torch.int64)}),
        CAPACITY,
        sampler=sampler,
        sequence_length=2,
        name="replay",
    )
    n = 21  # wraps the ring
    gen = torch.Generator().manual_seed(seed)
    table.extend(
        {
            "obs": torch.randn(n, 3, generator=gen),
            "reward": torch.arange(n, dtype=torch.float32),
            "action": torch.arange(n),
        },
        streams=torch.arange(n) % 2,
        ends=(torch.arange(n) % 7 == 6).long(),
    )
    table.sample(3)
    return table


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    if sorted(a) != sorted(b):
        return False
    for k in a:
        x, y = a[k].contiguous(), b[k].contiguous()
        if x.dtype != y.dtype or x.shape != y.shape:
            return False
        if x.numel() and not torch.equal(
            x.reshape(-1).view(torch.uint8), y.reshape(-1).view(torch.uint8)
        ):
            return False
    return True


@contextlib.contextmanager
def _storage_sizes() -> Iterator[list[int]]:
    """Record the capacity of every Storage built meanwhile."""
    sizes: list[int] = []
    real = replaydb.storage.Storage.__init__

    def spy(self: Any, spec: Any, capacity: Any, *args: Any, **kwargs: Any) -> None:
        sizes.append(int(capacity))
        real(self, spec, capacity, *args, **kwargs)

    with mock.patch.object(replaydb.storage.Storage, "__init__", spy):
        yield sizes


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="replaydb-fuzz-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- mutations
def _header_end(data: bytes) -> int:
    """Where a safetensors file's JSON header ends (the whole file for plain JSON)."""
    if len(data) >= 8:
        n = int.from_bytes(data[:8], "little")
        if 0 < n < len(data):
            return 8 + n
    return len(data)


@st.composite
def byte_mutation(draw: st.DrawFn, data: bytes) -> bytes:
    n = len(data)
    hot = _header_end(data)
    pos = draw(st.one_of(st.integers(0, max(hot - 1, 0)), st.integers(0, n - 1)))
    kind = draw(st.sampled_from(["truncate", "flip", "splice", "insert", "delete"]))
    if kind == "truncate":
        return data[:pos]
    if kind == "flip":
        out = bytearray(data)
        out[pos] ^= 1 << draw(st.integers(0, 7))
        return bytes(out)
    if kind == "splice":
        src = draw(st.integers(0, n - 1))
        chunk = data[src : src + draw(st.integers(1, 64))]
        return data[:pos] + chunk + data[pos + len(chunk) :]
    if kind == "insert":
        return data[:pos] + draw(st.binary(min_size=1, max_size=32)) + data[pos:]
    return data[:pos] + data[pos + draw(st.integers(1, 32)) :]


DEEP = "[" * 50_000 + "]" * 50_000
HUGE = ["1" * 5_000, "1e999999", "-1e999999", "NaN", "Infinity", str(2**64), "-1"]
OTHER_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from([0, 1, 2**23, 2**62, -1, "../outside.safetensors", "/etc/passwd"]),
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def json_mutation(draw: st.DrawFn, doc: Any) -> tuple[Any, str]:
    """``(mutated document or None, its JSON text)``."""
    path = draw(st.sampled_from(_paths(doc)))
    kind = draw(st.sampled_from(["replace", "delete", "deep", "huge"]))
    out = copy.deepcopy(doc)
    if kind == "delete" and path:
        parent = out
        for key in path[:-1]:
            parent = parent[key]
        del parent[path[-1]]
        return out, json.dumps(out)
    sentinel = "\x00mutation\x00"
    value: Any = draw(OTHER_VALUES) if kind in ("replace", "delete") else sentinel
    if not path:
        out = value
    else:
        parent = out
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = value
    text = json.dumps(out)
    if value is sentinel:
        raw = DEEP if kind == "deep" else draw(st.sampled_from(HUGE))
        return None, text.replace(json.dumps(sentinel), raw)
    return out, text


# ---------------------------------------------------------------- the check
def _expect_rejected_or_same(
    load: Callable[[], Any], same: Callable[[Any], bool], max_capacity: int
) -> None:
    tracemalloc.start()
    try:
        with _storage_sizes() as sizes:
            start = time.perf_counter()
            try:
                result = load()
            except CheckpointError:
                result = None
            elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < SECONDS, f"the loader took {elapsed:.2f} s"
    # Tensors live outside Python's allocator: the spy bounds the tables built, and
    # tracemalloc bounds what parsing the JSON and the headers cost.
    assert max(sizes, default=0) <= max_capacity, f"built a table of {max(sizes)} rows"
    assert peak < PYTHON_BYTES, f"Python allocated {peak:,} bytes"
    if result is not None:
        assert same(result), "a mutated file loaded as different data"


# ---------------------------------------------------------------- table files
@pytest.fixture(scope="module", params=[False, True], ids=["uniform", "prioritized"])
def table_file(request: pytest.FixtureRequest) -> Iterator[tuple[Path, Table]]:
    with _workdir() as d:
        table = _table(bool(request.param))
        yield save_table(table, d / "t.safetensors"), table


@FUZZ
@given(data=st.data())
def test_table_file_byte_mutations(table_file: tuple[Path, Table], data: st.DataObject) -> None:
    path, _original = table_file
    before = load_table(path)  # an object loaded earlier must not change
    snapshot = before.snapshot()[1]
    good = path.read_bytes()
    mutated = data.draw(byte_mutation(good))
    with _workdir() as d:
        target = d / "t.safetensors"
        target.write_bytes(mutated)
        _expect_rejected_or_same(
            lambda: load_table(target),
            lambda t: _same_state(t.snapshot()[1], snapshot),
            4 * CAPACITY,
        )
    assert _same_state(before.snapshot()[1], snapshot)


@FUZZ
@given(data=st.data())
def test_table_file_json_mutations(table_file: tuple[Path, Table], data: st.DataObject) -> None:
    from safetensors import safe_open

    path, _original = table_file
    before = load_table(path)
    snapshot = before.snapshot()[1]
    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads((fh.metadata() or {})["replaydb"])
    tensors = load_file(str(path))
    doc, text = data.draw(json_mutation(meta))
    if isinstance(doc, dict) and data.draw(st.booleans(), label="recompute checksum"):
        with contextlib.suppress(Exception):  # a config the digest cannot encode
            doc["checksum"] = tensor_checksum(tensors, doc.get("config"))
            text = json.dumps(doc)
    with _workdir() as d:
        target = d / "t.safetensors"
        save_file(tensors, str(target), {"replaydb": text})
        # A JSON change may keep the file valid (a new name, a new seed): the tensors
        # must still be the original ones.
        _expect_rejected_or_same(
            lambda: load_table(target),
            lambda t: _same_state(t.snapshot()[1], snapshot),
            4 * CAPACITY,
        )
    assert _same_state(before.snapshot()[1], snapshot)


# ------------------------------------------------------ checkpoint directories
@pytest.fixture(scope="module")
def checkpoint_dir() -> Iterator[tuple[Path, dict[str, dict[str, torch.Tensor]]]]:
    with _workdir() as d:
        tables = {"uniform": _table(False), "prioritized": _table(True)}
        path = write_checkpoint(d / "root", tables, extra={"note": {"a": [1, 2]}})
        yield path, {k: t.snapshot()[1] for k, t in tables.items()}


def _load_dir(root: Path) -> Callable[[], Any]:
    return lambda: read_checkpoint(root)


def _same_tables(states: dict[str, dict[str, torch.Tensor]]) -> Callable[[Any], bool]:
    def same(result: Any) -> bool:
        tables, _ = result
        return sorted(tables) == sorted(states) and all(
            _same_state(tables[k].snapshot()[1], states[k]) for k in states
        )

    return same


def _each_table_is_one_of(states: dict[str, dict[str, torch.Tensor]]) -> Callable[[Any], bool]:
    def same(result: Any) -> bool:
        tables, _ = result
        return all(
            any(_same_state(t.snapshot()[1], s) for s in states.values()) for t in tables.values()
        )

    return same


def _manifest_checksum(manifest: dict[str, Any]) -> str:
    """The manifest digest, recomputed the way anyone can (it has no key)."""
    import hashlib

    body = {k: v for k, v in manifest.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


@FUZZ
@given(data=st.data())
def test_checkpoint_directory_mutations(
    checkpoint_dir: tuple[Path, dict[str, dict[str, torch.Tensor]]], data: st.DataObject
) -> None:
    path, states = checkpoint_dir
    before, _ = read_checkpoint(path)
    names = ["manifest.json", "uniform.safetensors", "prioritized.safetensors", "escape"]
    victim = data.draw(st.sampled_from(names))
    good = (path / victim).read_bytes() if victim != "escape" else b""
    same = _same_tables(states)
    link = None
    if victim == "escape":
        # A tamperer points an entry (or links a table file) outside the directory.
        victim = "manifest.json"
        doc = json.loads((path / victim).read_text())
        name = data.draw(st.sampled_from(sorted(doc["tables"])))
        escape = data.draw(st.sampled_from(["../", "abs", "sub/../../", "link"]))
        doc["tables"][name]["file"] = {
            "../": "../outside.safetensors",
            "abs": "ABSOLUTE",
            "sub/../../": "sub/../../outside.safetensors",
            "link": doc["tables"][name]["file"],
        }[escape]
        link = doc["tables"][name]["file"] if escape == "link" else None
        doc["checksum"] = _manifest_checksum(doc)
        mutated = json.dumps(doc).encode()
        same = _each_table_is_one_of(states)
    elif victim == "manifest.json" and data.draw(st.booleans(), label="json-level"):
        doc, text = data.draw(json_mutation(json.loads(good)))
        if isinstance(doc, dict) and data.draw(st.booleans(), label="recompute checksum"):
            # A tamperer's valid manifest may rename or drop tables, but whatever
            # loads is one of the tables written, bit for bit.
            with contextlib.suppress(Exception):
                doc["checksum"] = _manifest_checksum(doc)
                text = json.dumps(doc)
            same = _each_table_is_one_of(states)
        mutated = text.encode("utf-8", "surrogatepass")
    else:
        mutated = data.draw(byte_mutation(good))
    with _workdir() as d:
        copy_ = d / "root" / path.name
        shutil.copytree(path, copy_)
        # A valid table file just outside, holding other data, for entries that escape.
        outside = save_table(_table(False, seed=9), d / "root" / "outside.safetensors")
        mutated = mutated.replace(b"ABSOLUTE", str(outside).encode())
        (copy_ / victim).write_bytes(mutated)
        if link is not None:
            (copy_ / link).unlink()
            (copy_ / link).symlink_to(outside)
        for where in (copy_, d / "root"):
            _expect_rejected_or_same(_load_dir(where), same, 4 * CAPACITY)
    for name, table in before.items():
        assert _same_state(table.snapshot()[1], states[name])


# ----------------------------------------------------------------- Velora files
@pytest.fixture(scope="module")
def velora_dir() -> Iterator[tuple[Path, dict[str, torch.Tensor]]]:
    with _workdir() as d:
        buffer = ReplayBuffer(12, state_dim=3, action_dim=2, hidden_dim=2)
        n = 9
        buffer.add_multi(
            torch.randn(n, 3),
            torch.randn(n, 2),
            torch.randn(n),
            torch.randn(n, 3),
            torch.arange(n) % 4 == 3,
            torch.randn(n, 2),
        )
        buffer.save(d, prefix="b_")
        yield d, {k: v.clone() for k, v in buffer.state_dict().items()}


def _velora_loader(directory: Path) -> Callable[[], Any]:
    def load() -> Any:
        metadata = read_json(directory / "b_metadata.json")
        if not isinstance(metadata, dict):
            raise CheckpointError("metadata is not an object")  # as a careful caller would
        return ReplayBuffer.load(directory / "b_state.safetensors", metadata)

    return load


@FUZZ
@given(data=st.data())
def test_velora_file_mutations(
    velora_dir: tuple[Path, dict[str, torch.Tensor]], data: st.DataObject
) -> None:
    directory, state = velora_dir
    before = _velora_loader(directory)()
    victim = data.draw(st.sampled_from(["b_metadata.json", "b_state.safetensors"]))
    good = (directory / victim).read_bytes()
    if victim == "b_metadata.json" and data.draw(st.booleans(), label="json-level"):
        mutated = data.draw(json_mutation(json.loads(good)))[1].encode("utf-8", "surrogatepass")
    else:
        mutated = data.draw(byte_mutation(good))
    with _workdir() as d:
        for name in ("b_metadata.json", "b_state.safetensors"):
            shutil.copy(directory / name, d / name)
        (d / victim).write_bytes(mutated)
        _expect_rejected_or_same(
            _velora_loader(d),
            lambda b: _same_state({k: v.contiguous() for k, v in b.state_dict().items()}, state),
            4 * 12,
        )
    assert _same_state({k: v.contiguous() for k, v in before.state_dict().items()}, state)


# ------------------------------------------------------- Ray checkpoint directories
# The driver reads a Ray checkpoint (manifest, saved configs, shard table files)
# before any shard actor starts, so this loader is fuzzed without a Ray cluster: the
# directory is written the way RayServer.checkpoint() lays it out.
def _ray_loader(root: Path) -> Callable[[], Any]:
    from replaydb.ray._checkpoint import _check_saved_config, _load_shard_file, _read_manifest

    def load() -> dict[str, list[Table]]:
        _, saved = _read_manifest(root)
        out = {}
        for name, entry in saved.items():
            _check_saved_config(name, entry.config, entry.num_shards)
            out[name] = [_load_shard_file(f) for f in entry.files]
        return out

    return load


@pytest.fixture(scope="module")
def ray_checkpoint_dir() -> Iterator[tuple[Path, list[dict[str, torch.Tensor]]]]:
    pytest.importorskip("ray")
    from replaydb.checkpoint import commit_checkpoint

    shards = [_table(True, seed=1), _table(True, seed=2)]

    def fill(tmp: Path) -> dict[str, Any]:
        entries = []
        for i, shard in enumerate(shards):
            save_table(shard, tmp / f"replay.shard{i}.safetensors")
            entries.append(
                {
                    "file": f"replay.shard{i}.safetensors",
                    "size": len(shard),
                    "steps": shard.num_steps,
                }
            )
        table = {"config": shards[0].config(), "num_shards": 2, "shards": entries}
        table.update(size=sum(e["size"] for e in entries), steps=sum(e["steps"] for e in entries))
        return {"backend": "ray", "server_id": "fuzz", "tables": {"replay": table}, "extra": {}}

    with _workdir() as d:
        path = commit_checkpoint(d / "root", fill)
        yield path, [s.snapshot()[1] for s in shards]


@FUZZ
@given(data=st.data())
def test_ray_checkpoint_directory_mutations(
    ray_checkpoint_dir: tuple[Path, list[dict[str, torch.Tensor]]], data: st.DataObject
) -> None:
    path, states = ray_checkpoint_dir
    assert [t.snapshot()[1]["storage.total"] for t in _ray_loader(path)()["replay"]] == [
        s["storage.total"] for s in states
    ]
    victim = data.draw(
        st.sampled_from(["manifest.json", "replay.shard0.safetensors", "replay.shard1.safetensors"])
    )
    good = (path / victim).read_bytes()
    if victim == "manifest.json" and data.draw(st.booleans(), label="json-level"):
        doc, text = data.draw(json_mutation(json.loads(good)))
        if isinstance(doc, dict) and data.draw(st.booleans(), label="recompute checksum"):
            with contextlib.suppress(Exception):
                doc["checksum"] = _manifest_checksum(doc)
                text = json.dumps(doc)
        mutated = text.encode("utf-8", "surrogatepass")
    elif victim == "manifest.json" and data.draw(st.booleans(), label="escape"):
        doc = json.loads(good)
        entry = doc["tables"]["replay"]["shards"][data.draw(st.sampled_from([0, 1]))]
        entry["file"] = data.draw(
            st.sampled_from(["../outside.safetensors", "sub/../../outside.safetensors", "ABS"])
        )
        mutated = json.dumps(doc).encode()
    else:
        mutated = data.draw(byte_mutation(good))

    def same(result: Any) -> bool:
        # Whatever loads is one of the shards written, bit for bit.
        return all(any(_same_state(t.snapshot()[1], s) for s in states) for t in result["replay"])

    with _workdir() as d:
        copy_ = d / "root" / path.name
        shutil.copytree(path, copy_)
        outside = save_table(_table(False, seed=9), d / "root" / "outside.safetensors")
        (copy_ / victim).write_bytes(mutated.replace(b"ABS", str(outside).encode()))
        _expect_rejected_or_same(_ray_loader(copy_), same, 4 * CAPACITY)
