"""TF-Agents 0.19.0's own Reverb tests, run as upstream runs them, with reverb -> replaydb.reverb.

Each test module of the tf-agents wheel runs as a script in a subprocess through
``tests_tf/run_upstream.py`` (which calls ``replaydb.reverb.install()`` first).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.tf, pytest.mark.slow]

RUNNER = Path(__file__).with_name("run_upstream.py")
MODULES = [
    "tf_agents.replay_buffers.reverb_replay_buffer_test",
    "tf_agents.replay_buffers.reverb_utils_test",
    "tf_agents.replay_buffers.rlds_to_reverb_test",
    "tf_agents.experimental.distributed.reverb_variable_container_test",
    "tf_agents.train.utils.replay_buffer_utils_test",
    "tf_agents.train.utils.train_utils_test",
]


@pytest.mark.parametrize("module", MODULES, ids=[m.rsplit(".", 1)[1] for m in MODULES])
def test_tf_agents_module_passes(module: str) -> None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, str(RUNNER), module],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    out = proc.stdout + proc.stderr
    ran = re.search(r"Ran (\d+) tests?", out)
    assert proc.returncode == 0, out[-6000:]
    assert ran is not None, out[-3000:]
    assert int(ran.group(1)) > 0, out[-3000:]
    assert re.search(r"^OK\b", out, re.M), out[-3000:]
