"""The replaydb command: end to end in subprocesses (few, small), errors in-process."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("gymnasium")

from replaydb import ReplayBuffer, Spec, Table, save_table
from replaydb.checkpoint import latest_checkpoint, read_checkpoint
from replaydb.cli import describe, main

SRC = Path(__file__).resolve().parent.parent / "src"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    return env


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "replaydb", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


POPULATE = ["populate", "--env", "CartPole-v1", "--out", "out", "--buffer-name", "starter"]


def test_populate_inspect_and_overwrite_refusal_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    small = ["--capacity", "300", "--steps-per-run", "50", "--num-runs", "3", "--seed", "0"]
    done = _run(*POPULATE, *small, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for word in ("frames", "150", "episodes", "episode return", "bytes on disk", "run 3/3"):
        assert word in done.stdout
    root = tmp_path / "out" / "starter"
    tables, manifest = read_checkpoint(root)
    assert tables["replay_buffer"].num_steps == 150
    assert manifest["extra"]["runs"] == 3

    # Overwrite refusal through the same entry point, in-process (a subprocess
    # start costs seconds of torch import).
    before = latest_checkpoint(root)
    monkeypatch.chdir(tmp_path)
    code = main([*POPULATE, *small])
    err = capsys.readouterr().err
    assert code == 2
    assert "already holds a buffer" in err
    assert "--force" in err
    assert "Traceback" not in err
    assert latest_checkpoint(root) == before
    assert read_checkpoint(root)[0]["replay_buffer"].num_steps == 150

    shown = _run("inspect", str(root), "--plot", "hist.png", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    for word in ("replaydb checkpoint", "observation", "float32", "150 steps", "episode returns"):
        assert word in shown.stdout
    assert (tmp_path / "hist.png").stat().st_size > 1000


def test_killed_populate_keeps_every_completed_run(tmp_path: Path) -> None:
    args = [*POPULATE, "--capacity", "100000", "--steps-per-run", "40", "--num-runs", "2000"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "replaydb", *args, "--seed", "1", "--quiet"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    root = tmp_path / "out" / "starter"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ckpt = latest_checkpoint(root)
            if (
                ckpt is not None
                and json.loads((ckpt / "manifest.json").read_text())["extra"]["runs"] >= 3
            ):
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    tables, manifest = read_checkpoint(root)
    runs = manifest["extra"]["runs"]
    assert 3 <= runs < 2000
    table = tables["replay_buffer"]
    assert table.num_steps == 40 * runs
    assert table.sample(8)["observation"].shape == (8, 2, 4)


# ------------------------------------------------------------ bad input
def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_bad_populate_input_gets_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = ["--out", str(tmp_path / "o"), "--capacity", "100", "--steps-per-run", "10"]
    code, err = _main(capsys, "populate", "--env", "NoSuchEnv-v0", *out)
    assert code == 2
    assert "'NoSuchEnv-v0' is not a registered Gymnasium environment" in err
    code, err = _main(capsys, "populate", "--env", "CartPole-v1", "--policy", "nope.mod:f", *out)
    assert code == 2
    assert "module 'nope.mod' does not import" in err
    (tmp_path / "pol.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            def wide(observation_space, action_space):
                return lambda obs: np.zeros((obs.shape[0], 3), dtype=np.int64)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    code, err = _main(capsys, "populate", "--env", "CartPole-v1", "--policy", "pol:wide", *out)
    assert code == 2
    assert "actions of shape (8, 3), expected (8,)" in err
    (tmp_path / "afile").write_text("keep me")
    code, err = _main(capsys, "populate", "--env", "CartPole-v1", "--out", str(tmp_path / "afile"))
    assert code == 2
    assert "is a file, not a directory" in err
    assert (tmp_path / "afile").read_text() == "keep me"
    code, err = _main(
        capsys, "populate", "--env", "CartPole-v1", "--out", str(tmp_path), "--num-runs", "0"
    )
    assert code == 2
    assert "num_runs must be an int >= 1" in err
    code, err = _main(capsys, "populate", "--out", str(tmp_path))
    assert code == 2
    assert "--env" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").rglob("ckpt-*"))


def test_read_only_or_full_disk_keeps_completed_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import replaydb.checkpoint as ckpt

    real = ckpt.write_checkpoint
    calls = {"n": 0}

    def failing(*args: Any, **kwargs: Any) -> Path:
        calls["n"] += 1
        if calls["n"] >= 2:
            raise OSError(errno.EROFS, "Read-only file system", str(args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(ckpt, "write_checkpoint", failing)
    args = ["populate", "--env", "CartPole-v1", "--out", str(tmp_path), "--capacity", "100"]
    code, err = _main(capsys, *args, "--steps-per-run", "10", "--num-runs", "3", "--quiet")
    assert code == 1
    assert "Read-only file system" in err
    assert "completed checkpoints were kept" in err
    assert len(err.strip().splitlines()) == 1
    tables, manifest = read_checkpoint(tmp_path / "replay_buffer")
    assert manifest["extra"]["runs"] == 1
    assert tables["replay_buffer"].num_steps == 10


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores modes")
def test_read_only_output_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, err = _main(capsys, "populate", "--env", "CartPole-v1", "--out", str(ro))
    finally:
        ro.chmod(0o755)
    assert code == 1
    assert "Permission denied" in err


# -------------------------------------------------------------- inspect
def test_inspect_velora_directory_and_table_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    buffer = ReplayBuffer(50, state_dim=3, action_dim=1, hidden_dim=2)
    buffer.add_multi(
        torch.zeros(20, 3),
        torch.zeros(20),
        torch.arange(20.0),
        torch.zeros(20, 3),
        torch.arange(20) % 5 == 4,
    )
    buffer.save(tmp_path / "velora", prefix="run_")
    assert main(["inspect", str(tmp_path / "velora")]) == 0
    text = capsys.readouterr().out
    for word in ("Velora ReplayBuffer", "next_states", "20 / 50", "mean 9.5"):
        assert word in text
    assert re.search(r"episodes ended +4\n", text)
    info = describe(tmp_path / "velora" / "run_metadata.json")
    assert info["size"] == 20
    assert info["rewards"]["max"] == 19.0

    table = Table(Spec({"obs": (2,), "reward": ()}), 10, sequence_length=2)
    table.extend({"obs": torch.zeros(6, 2), "reward": torch.ones(6)}, ends=[0, 0, 1, 0, 0, 2])
    save_table(table, tmp_path / "t.safetensors")
    assert main(["inspect", str(tmp_path / "t.safetensors"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "replaydb table file"
    assert info["episodes"] == 2
    assert info["returns"]["mean"] == 3.0
    assert info["steps"] == 6

    code, err = _main(capsys, "inspect", str(tmp_path / "missing"))
    assert code == 2
    assert "nothing at" in err
    (tmp_path / "empty").mkdir()
    code, err = _main(capsys, "inspect", str(tmp_path / "empty"))
    assert code == 2
    assert "holds no replaydb buffer" in err


def test_inspect_plot_needs_matplotlib(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    table = Table(Spec({"reward": ()}), 4)
    table.extend({"reward": torch.ones(3)}, ends=[0, 0, 1])
    save_table(table, tmp_path / "t.safetensors")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, err = _main(capsys, "inspect", str(tmp_path / "t.safetensors"), "--plot", "x.png")
    assert code == 2
    assert "pip install 'replaydb[plot]'" in err


def test_serve_without_ray_backend_says_what_to_install(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "replaydb.ray", None)
    code, err = _main(capsys, "serve", "config.yaml")
    assert code == 2
    assert "pip install 'replaydb[ray]'" in err


def test_serve_forwards_its_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    seen: list[list[str]] = []
    fake = types.ModuleType("replaydb.ray")
    fake.serve_command = lambda argv: seen.append(argv) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "replaydb.ray", fake)
    assert main(["serve", "conf.json", "--port", "5"]) == 0
    assert seen == [["conf.json", "--port", "5"]]


def test_unwritable_out_fails_before_collecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import replaydb.collect as collect

    def read_only(self: Path, data: bytes) -> int:
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    stepped: list[int] = []
    monkeypatch.setattr(Path, "write_bytes", read_only)
    monkeypatch.setattr(collect.Collector, "collect", lambda *a, **k: stepped.append(1))
    code, err = _main(capsys, "populate", "--env", "CartPole-v1", "--out", str(tmp_path))
    assert code == 1
    assert "Read-only file system" in err
    assert stepped == []
