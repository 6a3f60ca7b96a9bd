"""The main demo (examples/dqn_cartpole.py) runs end to end in its smoke mode."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

pytest.importorskip("gymnasium")

from replaydb.checkpoint import read_checkpoint

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "dqn_cartpole.py"


def _load() -> object:
    spec = importlib.util.spec_from_file_location("dqn_cartpole_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dqn_demo_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demo = _load()
    result = demo.main(["--smoke", "--out", str(tmp_path)])  # type: ignore[attr-defined]
    out = capsys.readouterr().out
    assert "starter buffer:" in out
    assert "sampling:" in out
    assert "greedy return" in out
    steps = [s for s, _, _ in result["curve"]]
    assert steps[0] == 0
    assert steps[-1] > 0
    assert all(math.isfinite(g) for _, _, g in result["curve"])
    assert result["random_return"] > 5
    # Both buffers are on disk and load back.
    starter, manifest = read_checkpoint(tmp_path / "cartpole_starter")
    assert manifest["extra"]["env"] == "CartPole-v1"
    assert starter["replay_buffer"].num_steps == 400
    trained, _ = read_checkpoint(result["buffer"])
    assert trained["replay_buffer"].num_steps > 400


def test_dqn_demo_is_reproducible(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demo = _load()
    a = demo.main(["--smoke", "--updates", "60", "--out", str(tmp_path / "a")])  # type: ignore[attr-defined]
    b = demo.main(["--smoke", "--updates", "60", "--out", str(tmp_path / "b")])  # type: ignore[attr-defined]
    capsys.readouterr()
    assert repr(a["curve"]) == repr(b["curve"])  # nan-safe
    assert a["train_returns"] == b["train_returns"]
