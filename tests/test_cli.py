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


def _fake_ray_backend(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    import types

    seen: list[list[str]] = []
    fake = types.ModuleType("replaydb.ray")
    fake.serve_command = lambda argv: seen.append(argv) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "replaydb.ray", fake)
    return seen


GOOD_SERVE = {
    "name": "replay",
    "shards": 2,
    "keep": 3,
    "restore": True,
    "checkpoint_interval_s": 1.5,
    "tables": {
        "replay": {
            "spec": {"obs": [4], "act": {"shape": [], "dtype": "int64"}},
            "capacity": 100,
            "sequence_length": 2,
            "sampler": {"type": "Prioritized", "alpha": 0.6, "seed": None},
            "limiter": {
                "type": "SampleToInsertRatio",
                "samples_per_insert": 4,
                "min_size_to_sample": 10,
                "error_buffer": [2.0, 8],
                "max_diff": "inf",
            },
        }
    },
}


def test_serve_forwards_its_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _fake_ray_backend(monkeypatch)
    conf = tmp_path / "conf.json"
    conf.write_text(json.dumps(GOOD_SERVE))
    assert main(["serve", str(conf), "--port", "5"]) == 0
    assert seen == [[str(conf), "--port", "5"]]
    toml = tmp_path / "conf.toml"
    toml.write_text("shards = 2\n[tables.replay]\ncapacity = 10\nspec = {obs = [4]}\n")
    assert main(["serve", str(toml)]) == 0
    assert seen[-1] == [str(toml)]


def _nested(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    config = json.loads(json.dumps(GOOD_SERVE))
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return config


# file name -> (content, part of the one-line message)
BAD_SERVE: dict[str, tuple[bytes, str]] = {
    "not-utf8.json": (b'{"name": "\xff"}', "is not UTF-8 text"),
    "five.json": (b"5", "the config must be a JSON object, got an integer (5)"),
    "list.json": (b"[]", "the config must be a JSON object, got an array"),
    "broken.json": (b"{", "is not valid JSON"),
    "deep.json": (b"[" * 100_000, "nested too deeply"),
    "broken.toml": (b"shards = = 2", "does not parse as TOML"),
    "not-utf8.toml": (b"name = '\xff'", "is not UTF-8 text"),
    "shards.json": (
        json.dumps(_nested(("shards",), "x")).encode(),
        "shards must be an integer, got a string ('x')",
    ),
    "shards0.json": (
        json.dumps(_nested(("shards",), 0)).encode(),
        "shards must be an integer >= 1",
    ),
    "keep.json": (
        json.dumps(_nested(("keep",), "many")).encode(),
        "keep must be an integer, got a string ('many')",
    ),
    "restore.json": (json.dumps(_nested(("restore",), "yes")).encode(), "restore must be true or"),
    "interval.json": (
        json.dumps(_nested(("checkpoint_interval_s",), "soon")).encode(),
        "checkpoint_interval_s must be a number",
    ),
    "spi.json": (
        json.dumps(_nested(("tables", "replay", "limiter", "samples_per_insert"), "x")).encode(),
        "tables.replay.limiter.samples_per_insert must be a number or null, got a string ('x')",
    ),
    "entry.json": (
        json.dumps(_nested(("tables", "replay"), 5)).encode(),
        "tables.replay must be a JSON object, got an integer (5)",
    ),
    "tables.json": (json.dumps(_nested(("tables",), [1])).encode(), "tables must be a JSON object"),
    "capacity.json": (
        json.dumps(_nested(("tables", "replay", "capacity"), "big")).encode(),
        "tables.replay.capacity must be an integer",
    ),
    "spec.json": (
        json.dumps(_nested(("tables", "replay", "spec", "obs"), "4")).encode(),
        "tables.replay.spec.obs must be a JSON array",
    ),
    "sampler.json": (
        json.dumps(_nested(("tables", "replay", "sampler"), "Uniform")).encode(),
        "tables.replay.sampler must be a JSON object",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_SERVE))
def test_bad_serve_config_gets_one_line_and_exit_2(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _fake_ray_backend(monkeypatch)
    content, message = BAD_SERVE[name]
    (tmp_path / name).write_bytes(content)
    code, err = _main(capsys, "serve", str(tmp_path / name))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("replaydb serve: error: ")
    assert message in err
    assert seen == []  # rejected before the server (and Ray) would start


def test_serve_config_that_is_a_device_or_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_ray_backend(monkeypatch)
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    code, err = _main(capsys, "serve", str(tmp_path / "zero.json"))
    assert (code, "not a regular file" in err) == (2, True)
    code, err = _main(capsys, "serve", str(tmp_path / "missing.json"))
    assert (code, "does not exist" in err) == (2, True)


def test_bad_serve_config_end_to_end_prints_no_traceback(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    (tmp_path / "c.json").write_text(json.dumps(_nested(("keep",), "many")))
    done = _run("serve", "c.json", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "replaydb serve: error: config file 'c.json': keep must be an integer, got a string "
        "('many')"
    ]


# ------------------------------------------------- inspect on hostile files
def _table_file(tmp_path: Path) -> Path:
    table = Table(Spec({"reward": ()}), 4)
    table.extend({"reward": torch.ones(3)}, ends=[0, 0, 1])
    return save_table(table, tmp_path / "t.safetensors")


def _rewrite_table_meta(path: Path, meta: Any) -> None:
    from safetensors.torch import load_file, save_file

    from replaydb.checkpoint import tensor_checksum

    tensors = load_file(str(path))
    if isinstance(meta, dict):
        meta["checksum"] = tensor_checksum(tensors, meta.get("config"))
    save_file(tensors, str(path), {"replaydb": json.dumps(meta)})


def _meta(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return dict(json.loads((fh.metadata() or {})["replaydb"]))


def _set(meta: dict[str, Any], keys: tuple[str, ...], value: Any) -> dict[str, Any]:
    node = meta
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return meta


HOSTILE_TABLE_FILES: dict[str, tuple[Any, str]] = {
    "metadata 5": (lambda m: 5, "the metadata must be a JSON object"),
    "config list": (lambda m: _set(m, ("config",), []), "config must be a JSON object"),
    "spec str": (lambda m: _set(m, ("config", "spec"), "x"), "config.spec must be a JSON object"),
    "extra list": (lambda m: _set(m, ("extra",), [1]), "'extra' must be a JSON object"),
    "capacity huge": (
        lambda m: _set(m, ("config", "capacity"), 2**23),
        "is larger than the file's tensors account for",
    ),
    "device garbage": (lambda m: _set(m, ("config", "device"), "garbage"), "device 'garbage'"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_TABLE_FILES))
def test_inspect_a_hostile_table_file(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _table_file(tmp_path)
    change, message = HOSTILE_TABLE_FILES[case]
    _rewrite_table_meta(path, change(_meta(path)))
    code, err = _main(capsys, "inspect", str(path))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("replaydb inspect: error: ")
    assert message in err


HOSTILE_MANIFESTS: dict[str, tuple[bytes, str]] = {
    "five": (b"5", "the manifest must be a JSON object, got an integer"),
    "not utf-8": (b"\xff\xfe", "not UTF-8"),
    "deep": (b"[" * 100_000, "nested too deeply"),
    "tables list": (b'{"format": "replaydb.checkpoint", "tables": []}', "tables must be a JSON"),
    "entry 5": (
        b'{"format": "replaydb.checkpoint", "tables": {"t": 5}}',
        "tables.t must be a JSON object",
    ),
    "file 5": (
        b'{"format": "replaydb.checkpoint", "tables": {"t": {"file": 5}}}',
        "tables.t.file must be a string",
    ),
    "file outside": (
        b'{"format": "replaydb.checkpoint", "tables": {"t": {"file": "../t.safetensors"}}}',
        "outside the checkpoint directory",
    ),
    "extra 5": (b'{"format": "replaydb.checkpoint", "extra": 5}', "extra must be a JSON object"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_MANIFESTS))
def test_inspect_a_hostile_checkpoint(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from replaydb.checkpoint import write_checkpoint

    table = Table(Spec({"reward": ()}), 4)
    ckpt = write_checkpoint(tmp_path / "root", {"t": table})
    save_table(table, tmp_path / "root" / "t.safetensors")  # a target for "../"
    content, message = HOSTILE_MANIFESTS[case]
    (ckpt / "manifest.json").write_bytes(content)
    for where in (ckpt, tmp_path / "root"):
        code, err = _main(capsys, "inspect", str(where))
        assert code == 2
        assert err.count("\n") == 1 and err.startswith("replaydb inspect: error: ")
        assert message in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"5", "metadata"),
        (b"\xff", "not UTF-8"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"capacity": "x"}', "metadata"),
    ],
    ids=["five", "not utf-8", "deep", "capacity str"],
)
def test_inspect_a_hostile_velora_metadata(
    content: bytes, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    buffer = ReplayBuffer(10, state_dim=2, action_dim=1, hidden_dim=1)
    buffer.save(tmp_path / "v", prefix="b_")
    (tmp_path / "v" / "b_metadata.json").write_bytes(content)
    code, err = _main(capsys, "inspect", str(tmp_path / "v"))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("replaydb inspect: error: ")
    assert message in err


def test_inspect_plot_to_an_unknown_format_fails_before_reading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    import replaydb.cli._inspect as inspect_command

    read: list[str] = []
    monkeypatch.setattr(inspect_command, "describe", lambda p: read.append(p))
    code, err = _main(capsys, "inspect", str(_table_file(tmp_path)), "--plot", "x.xyz")
    assert code == 2
    assert "--plot 'x.xyz': matplotlib cannot write .xyz files" in err and ".png" in err
    assert read == []
    code, err = _main(capsys, "inspect", "whatever", "--plot", "noext")
    assert (code, "a file without a suffix" in err) == (2, True)


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


def test_inspect_turns_any_loader_crash_into_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import replaydb.cli._inspect as inspect_command

    def crash(path: Any) -> Any:
        raise TypeError("unhashable type: 'list'\nsecond line")

    monkeypatch.setattr(inspect_command, "describe", crash)
    code, err = _main(capsys, "inspect", str(tmp_path))
    assert code == 2
    assert err == (
        f"replaydb inspect: error: {str(tmp_path)!r} cannot be read as a replaydb buffer "
        "(TypeError: unhashable type: 'list' second line)\n"
    )


def test_inspect_describes_priorities_through_the_public_verb(tmp_path: Path) -> None:
    from replaydb.samplers import Prioritized

    table = Table(Spec({"reward": ()}), 8, sampler=Prioritized(seed=0))
    table.extend({"reward": torch.ones(4)}, priorities=torch.tensor([1.0, 2.0, 3.0, 4.0]))
    info = describe(save_table(table, tmp_path / "p.safetensors"))
    assert info["priorities"]["count"] == 4
    assert info["priorities"]["mean"] == 2.5
