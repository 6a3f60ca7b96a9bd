"""A checkpoint written by real dm-reverb 0.14 restores through DefaultCheckpointer.

Needs the TF-free reader ``replaydb._reverb_checkpoint`` and its test checkpoint
``tests/data/reverb/`` (both from the Reverb-checkpoint work); skipped without them.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import reverb

pytestmark = pytest.mark.tf

DATA = Path(
    os.environ.get(
        "REPLAYDB_REVERB_TEST_DATA",
        Path(__file__).resolve().parents[1] / "tests" / "data" / "reverb",
    )
)
needs_reader = pytest.mark.skipif(
    importlib.util.find_spec("replaydb._reverb_checkpoint") is None
    or not (DATA / "expected.json").is_file(),
    reason="replaydb._reverb_checkpoint or tests/data/reverb not in this build",
)


@needs_reader
def test_dm_reverb_checkpoint_restores_with_identical_items(tmp_path: Path) -> None:
    expected = json.loads((DATA / "expected.json").read_text())
    root = tmp_path / "root"
    shutil.copytree(DATA / "checkpoint", root / expected["checkpoint_name"])
    tables = [
        reverb.Table(
            name,
            reverb.selectors.Uniform(),
            reverb.selectors.Fifo(),
            10,
            reverb.rate_limiters.MinSize(1),
        )
        for name in expected["tables"]
    ]
    lib = reverb.platform.checkpointers_lib
    server = reverb.Server(tables, checkpointer=lib.DefaultCheckpointer(str(root)))
    try:
        for table in tables:
            want = expected["tables"][table.name]
            info = table.info
            assert info.current_size == want["current_size"]
            assert info.max_size == want["max_size"]
            assert info.sampler_options.kind == want["sampler"]["kind"]
            assert (info.signature is not None) == want["has_signature"]
            assert info.rate_limiter_info.insert_count == want["rate_limiter"]["insert_count"]
            assert info.rate_limiter_info.sample_count == want["rate_limiter"]["sample_count"]
            snap, store = table.live_items()
            assert np.allclose(
                snap.priorities.numpy(), [item["priority"] for item in want["items"]]
            )
            for ref, item in zip(snap["ref"].tolist(), want["items"], strict=True):
                got = [s[0] if squeeze else np.stack(s) for s, squeeze in store[ref]]
                for column, col in zip(got, item["columns"], strict=True):
                    if "b64" not in col:
                        continue
                    raw = np.frombuffer(base64.b64decode(col["b64"]), dtype=col["dtype"])
                    assert np.array_equal(column, raw.reshape(col["shape"]))
    finally:
        server.stop()
