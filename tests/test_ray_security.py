"""A local Ray service listens on loopback only, and clients get in only with the token.

Each test starts its own Ray in a subprocess (a local start needs a process that
is not connected to Ray yet) and stops it again; nothing here needs the cluster of
``test_ray_backend.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.ray

SRC = str(Path(__file__).resolve().parents[1] / "src")
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}

#: Run in a fresh interpreter: a default ``Server(..., backend="ray")``, some traffic,
#: then every listening socket of the Ray processes it started, and which of them
#: answer plain HTTP without a token.
_PROBE = r"""
import json, sys, urllib.request
import ray, psutil  # psutil ships inside Ray (ray/thirdparty_files)
import torch
from replaydb.server import Server
from replaydb.spec import Spec
from replaydb.table import Table

server = Server(Table(Spec({"x": (2,)}), 100), backend="ray", num_shards=2)
client = server.client()
client.extend({"x": torch.zeros(8, 2)}, streams=torch.arange(8))
assert len(client.sample(4)) == 4
me = psutil.Process()
procs = {me.pid: me} | {p.pid: p for p in me.children(recursive=True)}
listening = []
for c in psutil.net_connections(kind="inet"):
    if c.status == psutil.CONN_LISTEN and c.pid in procs:
        try:
            name = procs[c.pid].name()
        except psutil.Error:
            name = "?"
        listening.append({"ip": c.laddr.ip, "port": c.laddr.port, "process": name})
open_http = []
for s in listening:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{s['port']}/metrics", timeout=2) as r:
            if r.status == 200:
                open_http.append(s["port"])
    except Exception:
        pass
from ray.autoscaler._private.constants import AUTOSCALER_METRIC_PORT
from ray.dashboard.consts import DASHBOARD_METRIC_PORT
out = {
    "gcs": ray.get_runtime_context().gcs_address,
    "listening": listening,
    "open_http": sorted(set(open_http)),
    "ray_metric_ports": [AUTOSCALER_METRIC_PORT, DASHBOARD_METRIC_PORT],
}
server.close()
print("RESULT " + json.dumps(out))
"""


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    for key in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        env.pop(key, None)
    env.update(extra)
    return env


def test_default_local_service_listens_on_loopback_only() -> None:
    pytest.importorskip("ray")
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out: dict[str, Any] = json.loads(lines[0][len("RESULT ") :])
    gcs_host, gcs_port = out["gcs"].rsplit(":", 1)
    assert gcs_host == "127.0.0.1"
    ports = {s["port"] for s in out["listening"]}
    assert int(gcs_port) in ports  # the scan sees Ray's own servers
    assert {s["process"] for s in out["listening"]} >= {"gcs_server", "raylet"}
    exposed = [s for s in out["listening"] if s["ip"] not in LOOPBACK]
    assert exposed == [], f"Ray sockets reachable from other hosts: {exposed}"
    # No dashboard; the only HTTP endpoints that answer without a token are the two
    # Prometheus exporters Ray 2.60 always starts on the head (autoscaler monitor
    # and dashboard head process), bound to 127.0.0.1 (see docs/ray.md).
    assert 8265 not in ports
    assert set(out["open_http"]) <= set(out["ray_metric_ports"])


def _start_serve(tmp_path: Path) -> tuple[subprocess.Popen[str], list[str]]:
    cfg = tmp_path / "serve.toml"
    cfg.write_text(
        'name = "sec"\nshards = 1\n[tables.replay]\ncapacity = 100\nspec = {obs = [4]}\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "replaydb", "serve", str(cfg), "--for", "120"],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if "from a Ray task or actor" in line:
            return proc, lines
    proc.kill()
    proc.wait()
    proc.stdout.close()
    pytest.fail(f"replaydb serve printed no connect lines: {lines}")


def _connect(address: str, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    code = (
        "from replaydb.ray import RayClient\n"
        f"print(RayClient.connect('sec', address={address!r}).tables())\n"
    )
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code], env=_env(**env), capture_output=True, text=True, timeout=120
    )
    return done, time.monotonic() - t0


def test_serve_prints_a_connect_line_that_works_and_bad_tokens_fail_fast(
    tmp_path: Path,
) -> None:
    pytest.importorskip("ray")
    proc, lines = _start_serve(tmp_path)
    try:
        shell = [ln.strip() for ln in lines if ln.strip().startswith("RAY_AUTH_MODE=token ")]
        assert len(shell) == 1, lines
        ran = subprocess.run(
            ["bash", "-c", shell[0]], env=_env(), capture_output=True, text=True, timeout=120
        )
        assert ran.returncode == 0, ran.stderr[-3000:]
        assert ran.stdout.strip().splitlines()[-1] == "['replay']"
        address = next(ln.split()[2] for ln in lines if ln.startswith("Ray address: "))
        assert address.startswith("127.0.0.1:")

        no_token, took = _connect(address)
        assert no_token.returncode != 0
        assert "requires token authentication" in no_token.stderr
        assert "RAY_AUTH_MODE=token" in no_token.stderr
        assert took < 10
        wrong, took = _connect(address, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 32)
        assert wrong.returncode != 0
        assert "refused this process's authentication token" in wrong.stderr
        assert took < 10
        nobody, took = _connect("127.0.0.1:1", RAY_AUTH_MODE="token")
        assert "no Ray cluster answered at address='127.0.0.1:1'" in nobody.stderr
        assert took < 10
    finally:
        proc.send_signal(signal.SIGTERM)  # serve writes no checkpoint here and stops Ray
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
