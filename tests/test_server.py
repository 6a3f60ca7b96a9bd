"""Server and Client (local backend): the Table verbs by name, threads, checkpoints."""

from __future__ import annotations

import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from replaydb.checkpoint import list_checkpoints, read_checkpoint
from replaydb.errors import (
    ClosedError,
    InvalidArgumentError,
    MissingDependencyError,
    RateLimiterTimeout,
    SpecMismatchError,
)
from replaydb.server import Client, Server
from replaydb.spec import Spec
from replaydb.table import Table

SPEC = Spec({"x": ((2,), "float32"), "id": ((), "int64")})


def make_table(name: str = "t", capacity: int = 100, **kwargs: Any) -> Table:
    return Table(SPEC, capacity, name=name, **kwargs)


def test_single_table_server_and_client_verbs(tmp_path: Path) -> None:
    table = make_table()
    with Server(table, checkpoint_dir=tmp_path) as server:
        assert table.shared
        client = server.client()
        assert server.tables() == client.tables() == ["t"]
        client.insert({"x": [1.0, 2.0], "id": 0})
        client.extend({"x": torch.ones(3, 2), "id": torch.arange(1, 4)}, priorities=2.0)
        info = client.info()
        assert (info.size, info.num_steps, info.name) == (4, 4, "t")
        sample = client.sample(5)
        assert sample["x"].shape == (5, 2)
        assert client.update_priorities(sample.keys, torch.full((5,), 3.0)) == 5
        path = client.checkpoint()
        assert Path(path).parent == tmp_path
        tables, _ = read_checkpoint(path)
        assert len(tables["t"]) == 4
        client.reset()
        assert client.info().size == 0
    assert not table.shared


def test_sequence_and_mapping_of_tables() -> None:
    a, b = make_table("a"), make_table("b")
    server = Server([a, b])
    client = server.client()
    assert server.tables() == ["a", "b"]
    client.insert({"x": [0.0, 0.0], "id": 1}, table="b")
    assert client.info(table="b").size == 1
    assert client.info(table="a").size == 0
    with pytest.raises(InvalidArgumentError, match=r"hosts 2 tables \['a', 'b'\]; pass table="):
        client.info()
    with pytest.raises(InvalidArgumentError, match=r"table 'c' is not hosted here"):
        client.sample(1, table="c")
    mapped = Server({"first": make_table("ignored"), "second": make_table()})
    assert mapped.tables() == ["first", "second"]
    assert mapped.table("first").name == "ignored"


@pytest.mark.parametrize(
    ("tables", "match"),
    [
        ([], "at least one table"),
        ({}, "at least one table"),
        ([make_table("a"), make_table("a")], "two tables are named 'a'"),
        (["not a table"], r"tables\[0\] must be a replaydb Table"),
        ({"a": 3}, r"tables\['a'\] must be a replaydb Table"),
        ({"": make_table()}, "non-empty strings"),
        ("t", "must be a Table, a sequence"),
        (42, "must be a Table, a sequence"),
    ],
)
def test_bad_tables_are_rejected(tables: Any, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        Server(tables)


@pytest.mark.parametrize("keep", [0, -1, 1.5, True, "2"])
def test_bad_keep(keep: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="keep must be an int >= 1"):
        Server(make_table(), keep=keep)


def test_unknown_backend_and_local_options() -> None:
    with pytest.raises(InvalidArgumentError, match=r"backend must be one of \['local', 'ray'\]"):
        Server(make_table(), backend="grpc")
    with pytest.raises(InvalidArgumentError, match=r"no backend options, got \['num_shards'\]"):
        Server(make_table(), num_shards=2)


def test_ray_backend_without_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'replaydb\[ray\]'"):
        Server(make_table(), backend="ray")


def test_ray_backend_delegates_to_ray_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: dict[str, Any] = {}

    class FakeRayServer:
        def __init__(self, tables: Any, **kwargs: Any) -> None:
            calls["init"] = (dict(tables), kwargs)
            self.local = Server(tables)

        def client(self) -> Client:
            return self.local.client()

        def tables(self) -> list[str]:
            return self.local.tables()

        def checkpoint(self) -> str:
            return "ckpt-path"

        def close(self) -> None:
            calls["closed"] = True

    module = types.ModuleType("replaydb.ray")
    module.RayServer = FakeRayServer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ray", types.ModuleType("ray"))
    monkeypatch.setitem(sys.modules, "replaydb.ray", module)
    table = make_table("r")
    server = Server(table, checkpoint_dir=tmp_path, keep=3, backend="ray", num_shards=2)
    tables, kwargs = calls["init"]
    assert tables == {"r": table}
    assert kwargs == {"checkpoint_dir": tmp_path, "keep": 3, "num_shards": 2}
    assert server.tables() == ["r"]
    assert server.checkpoint() == "ckpt-path"
    server.client().insert({"x": [1.0, 1.0], "id": 0})
    assert table.info().size == 1
    with pytest.raises(InvalidArgumentError, match="live in Ray actors"):
        server.table()
    server.close()
    assert calls["closed"]


def test_checkpoint_needs_a_directory() -> None:
    client = Server(make_table()).client()
    with pytest.raises(InvalidArgumentError, match="no checkpoint_dir"):
        client.checkpoint()


def test_checkpoint_keeps_newest_and_stores_extra(tmp_path: Path) -> None:
    server = Server(make_table(), checkpoint_dir=tmp_path, keep=2)
    server.checkpoint_extra = {"note": "hello"}
    paths = [server.checkpoint() for _ in range(4)]
    assert [p.name for p in list_checkpoints(tmp_path)] == [Path(p).name for p in paths[-2:]]
    _, manifest = read_checkpoint(tmp_path)
    assert manifest["extra"] == {"note": "hello"}


def test_concurrent_checkpoints_are_serialized(tmp_path: Path) -> None:
    server = Server(make_table(), checkpoint_dir=tmp_path, keep=10)
    client = server.client()
    client.extend({"x": torch.zeros(10, 2), "id": torch.arange(10)})
    paths: list[str] = []
    threads = [threading.Thread(target=lambda: paths.append(client.checkpoint())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(paths)) == 4
    assert len(list_checkpoints(tmp_path)) == 4


def test_closed_server_and_client_raise() -> None:
    server = Server(make_table())
    client = server.client()
    server.close()
    server.close()  # idempotent
    assert "closed" in repr(server)
    for call in (
        server.client,
        server.tables,
        server.checkpoint,
        lambda: client.insert({"x": [0.0, 0.0], "id": 0}),
        lambda: client.sample(1),
        client.info,
        client.reset,
    ):
        with pytest.raises(ClosedError, match="Server is closed"):
            call()


def test_client_rejects_non_server() -> None:
    with pytest.raises(InvalidArgumentError, match="server must be a Server"):
        Client("localhost:8000")  # type: ignore[arg-type]


def test_table_errors_pass_through_unchanged() -> None:
    table = make_table()
    client = Server(table).client()
    with pytest.raises(SpecMismatchError, match="'id'"):
        client.insert({"x": [1.0, 2.0]})
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        client.sample(0)
    assert table.info().num_steps == 0


def test_blocked_sample_times_out_and_is_woken_by_a_writer() -> None:
    client = Server(make_table()).client()
    with pytest.raises(RateLimiterTimeout, match="timed out"):
        client.sample(1, timeout=0.05)
    got: list[int] = []
    sampler = threading.Thread(target=lambda: got.append(len(client.sample(3, timeout=10))))
    sampler.start()
    time.sleep(0.05)
    client.insert({"x": [1.0, 1.0], "id": 7})
    sampler.join(timeout=10)
    assert got == [3]


def test_many_threads_no_step_lost_duplicated_or_torn() -> None:
    """8 writers, 2 samplers on one client: every step lands once, windows are whole."""
    writers, per_writer, chunk = 8, 300, 10
    table = Table(
        Spec({"writer": ((), "int64"), "seq": ((), "int64"), "payload": ((6,), "float32")}),
        capacity=writers * per_writer,
        sequence_length=2,
    )
    client = Server(table).client()
    stop = threading.Event()
    errors: list[BaseException] = []
    sampled = [0]

    def payload(w: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        base = (w * 100_000 + s).to(torch.float32).unsqueeze(-1)
        return base + torch.arange(6, dtype=torch.float32)

    def write(w: int) -> None:
        try:
            for start in range(0, per_writer, chunk):
                seq = torch.arange(start, start + chunk)
                wid = torch.full((chunk,), w)
                if start % 20:
                    client.extend(
                        {"writer": wid, "seq": seq, "payload": payload(wid, seq)}, streams=w
                    )
                else:
                    for i in range(chunk):
                        client.insert(
                            {"writer": wid[i], "seq": seq[i], "payload": payload(wid[i], seq[i])},
                            stream=w,
                        )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def sample() -> None:
        try:
            while not stop.is_set():
                try:
                    s = client.sample(32, timeout=0.05)
                except RateLimiterTimeout:
                    continue
                w, q = s["writer"], s["seq"]
                assert (w[:, 0] == w[:, 1]).all(), "a window mixes writers"
                assert (q[:, 1] == q[:, 0] + 1).all(), "a window skips or repeats a step"
                assert torch.equal(s["payload"], payload(w, q)), "a step is torn"
                sampled[0] += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    samplers = [threading.Thread(target=sample) for _ in range(2)]
    for t in threads + samplers:
        t.start()
    for t in threads:
        t.join(timeout=60)
    stop.set()
    for t in samplers:
        t.join(timeout=60)
    assert not errors, errors
    assert sampled[0] > 0
    rows = torch.arange(table.num_steps)
    data = table.storage.gather(rows)
    pairs = sorted(zip(data["writer"].tolist(), data["seq"].tolist(), strict=True))
    assert pairs == [(w, s) for w in range(writers) for s in range(per_writer)]
    assert torch.equal(data["payload"], payload(data["writer"], data["seq"]))
    assert client.info().size == writers * (per_writer - 1)


def test_ray_backend_is_a_deprecated_alias_of_replaydb_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    import replaydb.ray

    monkeypatch.delitem(sys.modules, "replaydb.ray_backend", raising=False)
    with pytest.warns(DeprecationWarning, match=r"import RayServer.* from replaydb\.ray"):
        old = importlib.import_module("replaydb.ray_backend")
    for name in replaydb.ray.__all__:
        assert getattr(old, name) is getattr(replaydb.ray, name)
