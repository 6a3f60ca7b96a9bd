"""End-to-end workflows on replaydb.reverb: sbsim's manager calls and the DQN example."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.tf

ROOT = Path(__file__).resolve().parents[1]
#: A Python with dm-reverb installed, for a side-by-side run (skipped when absent).
REAL = os.environ.get("REPLAYDB_REAL_REVERB_PYTHON", "/work/tfenv/bin/python")


def run(args: list[str], python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [python, *args], capture_output=True, text=True, env=env, timeout=600, check=False
    )


def sbsim_flow(tmp_path: Path, python: str = sys.executable, *extra: str) -> dict[str, object]:
    proc = run([str(ROOT / "tests_tf" / "sbsim_flow.py"), str(tmp_path / "ckpt"), *extra], python)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_sbsim_manager_flow(tmp_path: Path) -> None:
    got = sbsim_flow(tmp_path)
    assert got["empty"] == 0
    frames = got["frames"]
    assert isinstance(frames, int)
    assert frames > 100
    assert got["batch_shape"] == [16, 2, 4]
    assert got["info_shape"] == [16, 2]
    assert got["loaded"] == frames  # a new manager restored the checkpoint
    assert got["loaded_batch_shape"] == [8, 2, 4]
    after_more = got["after_more"]
    assert isinstance(after_more, int)
    assert after_more > frames
    # sbsim's clear() stops the server and creates it again with the same checkpointer,
    # so Reverb restores the last checkpoint: back to `frames`, not empty.
    assert got["after_clear"] == frames


@pytest.mark.skipif(
    not Path(REAL).exists()
    or subprocess.run([REAL, "-c", "import reverb"], capture_output=True, check=False).returncode,
    reason="no Python with dm-reverb (set REPLAYDB_REAL_REVERB_PYTHON)",
)
def test_sbsim_manager_flow_matches_real_reverb(tmp_path: Path) -> None:
    ours = sbsim_flow(tmp_path / "ours")
    real = sbsim_flow(tmp_path / "real", REAL, "--real-reverb")
    assert ours == real


@pytest.mark.slow
def test_tf_agents_dqn_example_smoke() -> None:
    proc = run([str(ROOT / "examples" / "tf_agents_dqn_cartpole.py"), "--smoke"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "replaydb.reverb: 300 iterations" in proc.stdout
    assert "average return" in proc.stdout


def test_reverb_docs_page_runs() -> None:
    page = ROOT / "docs" / "reverb.md"
    blocks = re.findall(r"^```py\n(.*?)^```", page.read_text(), re.S | re.M)
    assert len(blocks) >= 2
    proc = run(["-c", "\n".join(blocks)])
    assert proc.returncode == 0, proc.stderr[-4000:]
