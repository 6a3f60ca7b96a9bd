"""Every ``>>>`` example in replaydb's docstrings runs as a doctest.

Each example runs in its module's namespace plus a few names a reader assumes from
the surrounding docs: ``torch``, ``np``, the top-level ``replaydb`` names, a
``client`` of a local server over a small two-step table with 40 steps in it, and in
the manager's modules a fresh ``manager`` (no buffer yet) of ``obs`` and ``done``. Files
an example writes land in a temporary directory (where ``tests/data`` is reachable
as in the repository). Modules that need an optional
dependency (Ray, TensorFlow) run only where it is installed; the Ray examples share
one local cluster, started on loopback and stopped afterwards.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import replaydb

NEEDS = {
    "replaydb.ray_backend": "ray",
    "replaydb.ray": "ray",
    "replaydb.reverb": "tensorflow",
    # The compiled kernels' modules import numba (an optional dependency) when imported.
    "replaydb._tree_kernels": "numba",
    "replaydb._row_kernels_nb": "numba",
}
SKIP_MODULES = {
    "replaydb.__main__",
    "replaydb.ray_backend",
    "replaydb.observer",
}  # deprecated aliases
ROOT = Path(__file__).resolve().parents[1]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _needs(module: str) -> str | None:
    for prefix, dependency in NEEDS.items():
        if module == prefix or module.startswith(prefix + "."):
            return dependency
    return None


def _examples() -> Iterator[Any]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    for info in pkgutil.walk_packages(replaydb.__path__, "replaydb."):
        dependency = _needs(info.name)
        if info.name in SKIP_MODULES:
            continue
        if dependency and importlib.util.find_spec(dependency) is None:
            continue
        module = importlib.import_module(info.name)
        for test in finder.find(module, info.name):
            if not test.examples:
                continue
            marks = [pytest.mark.ray] if dependency == "ray" else []
            yield pytest.param(info.name, test.name, marks=marks, id=test.name)


def _client() -> Any:
    from replaydb.server import Server

    table = replaydb.Table(
        {"obs": ((3,), "float32"), "reward": ((), "float32")}, capacity=1000, sequence_length=2
    )
    table.extend({"obs": torch.randn(40, 3), "reward": torch.randn(40)})
    return Server(table).client()


@pytest.fixture(scope="module")
def ray_server() -> Iterator[Any]:
    """One local Ray service for every Ray example: a two-shard table of ``x: (2,)``."""
    pytest.importorskip("ray")
    from replaydb.ray import RayServer
    from replaydb.spec import Spec

    server = RayServer(replaydb.Table(Spec({"x": (2,)}), 100), num_shards=2)
    client = server.client()
    client.extend({"x": torch.zeros(64, 2)})
    client.flush()
    yield server
    server.close()


@pytest.mark.parametrize(("module_name", "test_name"), list(_examples()))
def test_docstring_example_runs(
    module_name: str,
    test_name: str,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    module = importlib.import_module(module_name)
    (test,) = [t for t in doctest.DocTestFinder().find(module, module_name) if t.name == test_name]
    (tmp_path / "tests").symlink_to(ROOT / "tests")  # examples read tests/data/...
    monkeypatch.chdir(tmp_path)
    globs = {name: getattr(replaydb, name) for name in replaydb.__all__}
    globs.update(vars(module))
    globs.update(torch=torch, np=np, replaydb=replaydb, client=_client())
    if module_name.startswith(("replaydb.manager", "replaydb.observer")):
        # A fresh manager with no buffer yet, as the examples start from.
        manager = replaydb.ReplayBufferManager(
            {"obs": ((3,), "float32"), "done": ((), "bool")},
            100,
            "manager-ckpts",
            sequence_length=2,
        )
        request.addfinalizer(manager.close)
        globs.update(manager=manager)
    if _needs(module_name) == "ray":
        from replaydb.spec import Spec

        server = request.getfixturevalue("ray_server")
        client = server.client()
        globs.update(
            server=server,
            client=client,
            table=replaydb.Table(Spec({"x": (2,)}), 100),
            batch=client.sample(32),
        )
    test.globs = globs
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    out: list[str] = []
    runner.run(test, out=out.append)
    assert runner.failures == 0, "".join(out)
