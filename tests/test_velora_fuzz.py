"""Fuzzing the Velora buffer's loader: every mutation loads or ends in CheckpointError.

JSON-level mutations of ``<prefix>metadata.json`` (any key, nested ``table`` config
included, replaced by any JSON value) and byte-level mutations of the state and
table files (flipped bytes, truncation, appended garbage). Velora's ``load(state_path,
metadata)`` takes the parsed metadata, so the JSON mutations are applied to the dict.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replaydb import ReplayBuffer
from replaydb.errors import CheckpointError

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def saved_dir() -> Any:
    d = Path(tempfile.mkdtemp())
    buf = ReplayBuffer.prioritized(16, 2, 1, 1, seed=0)
    ids = torch.arange(12, dtype=torch.float32).unsqueeze(1)
    buf.add_multi(ids.expand(12, 2), ids, ids, ids.expand(12, 2), ids.remainder(2), ids)
    b = buf.sample(4)
    assert b.keys is not None
    buf.update_priorities(b.keys, torch.rand(4) + 0.1)
    buf.save(d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def paths_of(meta: dict[str, Any]) -> list[list[str]]:
    """Every key path of the metadata, nested ones included."""
    out: list[list[str]] = []

    def walk(node: Any, path: list[str]) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                out.append([*path, k])
                walk(v, [*path, k])

    walk(meta, [])
    return out


def load_or_reject(d: Path, meta: Any) -> None:
    start = time.monotonic()
    with contextlib.suppress(CheckpointError):  # loading is fine too
        ReplayBuffer.load(d / "buffer_state.safetensors", meta)
    assert time.monotonic() - start < 1.0


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), value=json_values)
def test_json_mutations_load_or_raise_checkpoint_error(
    saved_dir: Path, data: st.DataObject, value: Any
) -> None:
    meta = json.loads((saved_dir / "buffer_metadata.json").read_text())
    path = data.draw(st.sampled_from(paths_of(meta)))
    mutated = copy.deepcopy(meta)
    node = mutated
    for k in path[:-1]:
        node = node[k]
    if data.draw(st.booleans()):
        node[path[-1]] = value
    else:
        del node[path[-1]]
    load_or_reject(saved_dir, mutated)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    which=st.sampled_from(["state", "table"]),
    kind=st.sampled_from(["flip", "truncate", "append"]),
    where=st.floats(0, 1),
    byte=st.integers(1, 255),
)
def test_byte_mutations_load_or_raise_checkpoint_error(
    saved_dir: Path, which: str, kind: str, where: float, byte: int
) -> None:
    meta = json.loads((saved_dir / "buffer_metadata.json").read_text())
    d = Path(tempfile.mkdtemp())
    try:
        for p in saved_dir.iterdir():
            shutil.copy(p, d / p.name)
        target = d / ("buffer_state.safetensors" if which == "state" else meta["table"]["file"])
        raw = bytearray(target.read_bytes())
        i = int(where * (len(raw) - 1))
        if kind == "flip":
            raw[i] ^= byte
        elif kind == "truncate":
            raw = raw[:i]
        else:
            raw += bytes([byte]) * (i % 64 + 1)
        target.write_bytes(bytes(raw))
        # With the checksums: always rejected. Without (as Velora writes), still no crash.
        with pytest.raises(CheckpointError):
            ReplayBuffer.load(d / "buffer_state.safetensors", meta)
        bare = {k: v for k, v in meta.items() if k not in ("state_sha256", "previous", "table")}
        load_or_reject(d, bare)
    finally:
        shutil.rmtree(d, ignore_errors=True)
