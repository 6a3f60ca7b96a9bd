"""The Ray backend on a simulated 3-node cluster on loopback, started and stopped here.

One Ray cluster serves the whole module; shard, writer and learner actors take no
CPU so they schedule on a 2-core machine.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from replaydb.checkpoint import latest_checkpoint, list_checkpoints, load_table
from replaydb.errors import (
    CheckpointError,
    InvalidArgumentError,
    MissingDependencyError,
    RateLimiterTimeout,
    SpecMismatchError,
)
from replaydb.rate_limiters import SampleToInsertRatio
from replaydb.spec import Spec
from replaydb.table import Table

pytestmark = pytest.mark.ray

SPEC = Spec({"obs": (2,), "id": ((), torch.int64)})


def _flat(capacity: int = 6000, name: str = "flat") -> Table:
    return Table(SPEC, capacity, name=name)


def _steps(ids: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"obs": torch.stack([ids.float(), -ids.float()], 1), "id": ids}


def _chi_square_ok(counts: torch.Tensor, expected: torch.Tensor) -> bool:
    """Pearson chi-square below mean + 5 standard deviations (df large: normal approx)."""
    stat = float(((counts - expected) ** 2 / expected).sum())
    df = counts.numel() - 1
    return stat < df + 5 * math.sqrt(2 * df)


def _stored_ids(ckpt: Path, name: str) -> list[torch.Tensor]:
    """Per shard file: the ``id`` column of live steps in write order, and their streams."""
    out = []
    for f in sorted(ckpt.glob(f"{name}.shard-*.safetensors")):
        steps = load_table(f).live_steps()
        out.append(torch.stack([steps.data["id"], steps.streams], 1))
    return out


@pytest.fixture(scope="module")
def ray_cluster() -> Any:
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, namespace="replaydb", log_to_driver=False)
    # Writer and learner actors below are defined here; ship them by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def server(ray_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from replaydb.ray import RayServer

    seq = Table(SPEC, 3000, sequence_length=3, name="seq")
    ratio = Table(SPEC, 3000, rate_limiter=SampleToInsertRatio(1.0, 30, 60.0), name="ratio")
    srv = RayServer(
        [_flat(), seq, ratio],
        num_shards=2,
        checkpoint_dir=tmp_path_factory.mktemp("ckpt"),
        keep=2,
    )
    yield srv
    srv.close()


# ------------------------------------------------------------------ no ray needed
def test_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from replaydb import ray as replaydb_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'replaydb\[ray\]'"):
        replaydb_ray.RayServer(_flat())


def test_token_auth_version_gate() -> None:
    from replaydb.ray._connect import _token_auth_default, _token_auth_supported

    assert _token_auth_supported("2.60.0")
    assert _token_auth_supported("2.52.0")
    assert not _token_auth_supported("2.51.2")
    assert not _token_auth_supported("nightly")
    assert _token_auth_default("2.60.0")
    assert not _token_auth_default("2.55.1")


def test_bad_server_arguments_are_rejected_before_ray_starts() -> None:
    from replaydb.ray import RayServer

    with pytest.raises(InvalidArgumentError, match="num_shards must be an int >= 1, got 0"):
        RayServer(_flat(), num_shards=0)
    with pytest.raises(InvalidArgumentError, match="needs a checkpoint_dir"):
        RayServer(_flat(), checkpoint_interval_s=1.0)
    with pytest.raises(InvalidArgumentError, match="fewer than sequence_length"):
        RayServer(Table(SPEC, 8, sequence_length=3), num_shards=4)
    with pytest.raises(InvalidArgumentError, match="tables is empty"):
        RayServer([])
    with pytest.raises(InvalidArgumentError, match=r"tables\['a'\] must be a Table"):
        RayServer({"a": 3})  # type: ignore[dict-item]


# ----------------------------------------------------------------------- on ray
def test_shards_are_spread_over_nodes(server: Any) -> None:
    import ray

    pings = ray.get([s.ping.remote() for s in server.shard_handles("flat")])
    assert len({p["node"] for p in pings}) >= 2
    assert len(ray.nodes()) == 2


def test_client_errors_leave_nothing_buffered(server: Any) -> None:
    client = server.client()
    client.reset(table="flat")
    with pytest.raises(InvalidArgumentError, match=r"table 'nope' is not served here"):
        client.info(table="nope")
    with pytest.raises(InvalidArgumentError, match="pass table= one of"):
        client.sample(1)
    with pytest.raises(SpecMismatchError, match="missing"):
        client.extend({"obs": torch.zeros(3, 2)}, table="flat")
    with pytest.raises(InvalidArgumentError, match="streams must be >= 0"):
        client.extend(_steps(torch.arange(2)), streams=torch.tensor([0, -1]), table="flat")
    with pytest.raises(InvalidArgumentError, match="priorities must be finite and > 0"):
        client.insert(_one(1), priority=0.0, table="flat")
    with pytest.raises(InvalidArgumentError, match="batch_size must be an int >= 1"):
        client.sample(0, table="flat")
    with pytest.raises(InvalidArgumentError, match="same length"):
        client.update_priorities([1, 2], [1.0], table="flat")
    assert client.info(table="flat").num_steps == 0
    with pytest.raises(RateLimiterTimeout, match="needs 1 before sampling"):
        client.sample(4, timeout=0.2, table="flat")


def _one(i: int) -> dict[str, Any]:
    return {"obs": [float(i), -float(i)], "id": i}


def test_writers_and_learner_lose_and_duplicate_nothing(server: Any) -> None:
    import ray

    client = server.client(batch_size=32)
    client.reset(table="flat")
    per_writer = 400

    @ray.remote(num_cpus=0)
    class Writer:
        def run(self, client: Any, writer: int) -> int:
            for j in range(per_writer):
                i = writer * 100_000 + j
                client.insert(_one(i), stream=writer, end=(j % 50 == 49), table="flat")
            client.flush()
            return per_writer

    @ray.remote(num_cpus=0)
    class Learner:
        def run(self, client: Any, batches: int) -> tuple[int, bool]:
            seen, ok = 0, True
            for _ in range(batches):
                s = client.sample(64, timeout=60.0, table="flat")
                ids = s["id"]
                ok &= bool(torch.equal(s["obs"][:, 0], ids.float()))
                ok &= bool(((ids % 100_000) < per_writer).all() and ((ids // 100_000) < 4).all())
                seen += len(s)
            return seen, ok

    writers = [Writer.remote() for _ in range(4)]
    learner = Learner.remote()
    done = [w.run.remote(client, i) for i, w in enumerate(writers)]
    learned = learner.run.remote(client, 30)
    assert sum(ray.get(done)) == 4 * per_writer
    seen, ok = ray.get(learned)
    assert seen == 30 * 64
    assert ok
    assert client.info(table="flat").size == 4 * per_writer
    ckpt = Path(client.checkpoint())
    shards = _stored_ids(ckpt, "flat")
    ids = torch.cat([s[:, 0] for s in shards])
    expected = torch.cat([w * 100_000 + torch.arange(per_writer) for w in range(4)])
    assert torch.equal(ids.sort().values, expected.sort().values)  # nothing lost or doubled
    for s in shards:  # each stream in one shard, in write order
        for stream in s[:, 1].unique().tolist():
            mine = s[s[:, 1] == stream, 0]
            assert torch.equal(mine, mine.sort().values)
            assert bool((mine // 100_000 == stream).all())


def test_global_uniform_frequencies(server: Any) -> None:
    client = server.client(batch_size=1000)
    client.reset(table="flat")
    sizes = [20, 40, 60]  # streams 0, 1, 2 -> shards 0, 1, 0
    for stream, n in enumerate(sizes):
        client.extend(_steps(stream * 1000 + torch.arange(n)), streams=stream, table="flat")
    total = sum(sizes)
    counts: dict[int, int] = {}
    draws = 0
    for _ in range(12):
        s = client.sample(1000, table="flat")
        assert torch.allclose(
            s.probabilities, torch.full((1000,), 1.0 / total, dtype=torch.float64)
        )
        assert s.table_size == total
        assert bool((s.weights == 1).all())
        for i in s["id"].tolist():
            counts[i] = counts.get(i, 0) + 1
        draws += 1000
    assert len(counts) == total
    observed = torch.tensor(list(counts.values()), dtype=torch.float64)
    assert _chi_square_ok(observed, torch.full((total,), draws / total, dtype=torch.float64))


def test_global_prioritized_frequencies(ray_cluster: Any) -> None:
    from replaydb.ray import RayServer
    from replaydb.samplers import Prioritized

    table = Table(SPEC, 600, sampler=Prioritized(alpha=0.6, eps=1e-6), name="prio")
    with RayServer(table, num_shards=2) as srv:
        client = srv.client(batch_size=1000)
        ids = torch.arange(60)
        pri = 1.0 + (ids % 4).double()
        client.extend(_steps(ids), streams=ids % 3, priorities=pri)
        weight = (pri + 1e-6) ** 0.6
        target = weight / weight.sum()
        counts = torch.zeros(60, dtype=torch.float64)
        for _ in range(10):
            s = client.sample(1000)
            assert torch.allclose(s.probabilities, target[s["id"]], rtol=1e-4)
            counts += torch.bincount(s["id"], minlength=60).double()
        assert _chi_square_ok(counts, target * 10_000)
        assert client.update_priorities(s.keys, torch.ones(len(s))) == len(s)


def test_prioritized_split_uses_each_shards_tree_total_with_eps(ray_cluster: Any) -> None:
    """Issue 10: shard weights are ``sum (p + eps)^alpha`` from the tree, not ``sum p^alpha``.

    Shard 0 holds 40 items of priority 1e-3 and shard 1 holds 10 of priority 1..2:
    with eps=0.01 shard 0 carries about 18 % of the mass; ignoring eps gives about 5 %.
    """
    from replaydb.ray import RayServer
    from replaydb.samplers import Prioritized

    alpha, eps = 0.6, 0.01
    table = Table(SPEC, 200, sampler=Prioritized(alpha=alpha, eps=eps, beta=0.5), name="eps")
    ids = torch.arange(50)
    streams = (ids >= 40).long()  # 40 items on shard 0, 10 on shard 1
    pri = torch.where(ids < 40, torch.full((50,), 1e-3), 1.0 + (ids - 40).double() / 10)
    with RayServer(table, num_shards=2) as srv:
        client = srv.client(batch_size=1000)
        client.extend(_steps(ids), streams=streams, priorities=pri.double())
        client.flush()
        weight = (pri.double() + eps) ** alpha
        target = weight / weight.sum()
        assert float(target[:40].sum()) > 0.15  # far from the 0.05 that ignoring eps gives
        counts = torch.zeros(50, dtype=torch.float64)
        for _ in range(10):
            s = client.sample(1000)
            assert s.table_size == 50
            assert torch.allclose(s.probabilities, target[s["id"]], rtol=1e-6)
            w = (50 * target[s["id"]]) ** -0.5
            assert torch.allclose(s.weights.double(), w / w.max(), rtol=1e-5)
            counts += torch.bincount(s["id"], minlength=50).double()
        assert _chi_square_ok(counts, target * 10_000)
        shard_share = counts[:40].sum() / counts.sum()
        assert abs(float(shard_share) - float(target[:40].sum())) < 0.03


def test_prefetch_returns_whole_batches_and_reset_drops_them(server: Any) -> None:
    client = server.client(prefetch=2)
    client.reset(table="flat")
    client.extend(_steps(torch.arange(30)), streams=torch.arange(30) % 2, table="flat")
    for _ in range(4):
        s = client.sample(16, table="flat")
        assert len(s) == 16
        assert bool((s["id"] < 30).all())
    client.reset(table="flat")
    client.extend(_steps(100 + torch.arange(5)), table="flat")
    assert bool((client.sample(8, table="flat")["id"] >= 100).all())
    with pytest.raises(InvalidArgumentError, match="prefetch must be an int >= 0, got -1"):
        server.client(prefetch=-1)


def test_sequences_stay_within_one_episode(server: Any) -> None:
    client = server.client(batch_size=7)
    client.reset(table="seq")
    for j in range(30):  # 4 interleaved streams, episodes of 10 steps
        ids = torch.arange(4) * 1000 + j
        client.extend(_steps(ids), streams=torch.arange(4), ends=(j % 10 == 9), table="seq")
    s = client.sample(200, table="seq")
    ids = s["id"]
    assert ids.shape == (200, 3)
    assert bool((ids[:, 1:] - ids[:, :-1] == 1).all())  # consecutive steps of one stream
    assert bool((ids[:, 0] % 10 <= 7).all())  # never across an episode end
    assert client.info(table="seq").size == 4 * 3 * 8


def test_rate_limiter_holds_across_shards(server: Any) -> None:
    client = server.client(batch_size=1)
    client.reset(table="ratio")
    client.extend(_steps(torch.arange(60)), streams=torch.arange(60) % 3, table="ratio")
    info = client.info(table="ratio")
    assert info.rate_limiter["type"] == "SampleToInsertRatio"
    taken = 0
    for _ in range(40):
        try:
            taken += len(client.sample(4, timeout=0.3, table="ratio"))
        except RateLimiterTimeout:
            break
    else:
        pytest.fail("the limiter never blocked sampling")
    diff = client.info(table="ratio").inserts * 1.0 - client.info(table="ratio").samples
    assert -30.0 <= diff <= 90.0  # the template's [min_diff, max_diff]
    assert 40 <= taken <= 90


def test_kill_a_shard_sampling_continues_and_it_comes_back(
    ray_cluster: Any, tmp_path: Path
) -> None:
    import ray

    from replaydb.ray import RayServer

    with RayServer(_flat(), num_shards=2, checkpoint_dir=tmp_path) as srv:
        client = srv.client(batch_size=16)
        client.extend(_steps(torch.arange(100)), streams=torch.arange(100) % 2)
        client.flush()  # a server checkpoint holds what the shards have applied
        srv.checkpoint()
        client.extend(_steps(1000 + torch.arange(10)), streams=0)  # lost with shard 0
        client.flush()
        victim = srv.shard_handles()[0]
        old_pid = ray.get(victim.ping.remote())["pid"]
        ray.kill(victim, no_restart=False)
        t0, got = time.monotonic(), 0
        for _ in range(20):
            got += len(client.sample(8, timeout=30.0))
        assert got == 160  # sampling went on while shard 0 restarted
        assert time.monotonic() - t0 < 20
        deadline = time.monotonic() + 60
        while True:  # until the restarted actor answers (kill is asynchronous)
            try:
                ping = ray.get(victim.ping.remote(), timeout=10)
                if ping["pid"] != old_pid:
                    break
            except ray.exceptions.RayActorError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert ping["restored_from"] is not None
        assert ping["size"] == 50
        client.insert(_one(5000), stream=0)  # writes reach the restarted shard
        client.flush()
        assert client.info().size == 50 + 50 + 1
        seen = set()
        for _ in range(10):
            seen.update(client.sample(100)["id"].tolist())
        assert 5000 in seen
        assert not seen & set(range(1000, 1010))


def test_a_shard_restarting_onto_a_damaged_file_comes_back_empty_and_says_why(
    ray_cluster: Any, tmp_path: Path
) -> None:
    import ray

    from replaydb.ray import RayServer

    with RayServer(_flat(), num_shards=2, checkpoint_dir=tmp_path) as srv:
        client = srv.client()
        client.extend(_steps(torch.arange(40)), streams=torch.arange(40) % 2)
        ckpt = Path(client.checkpoint())
        f = ckpt / "flat.shard-0.safetensors"
        f.write_bytes(f.read_bytes()[:100])
        victim = srv.shard_handles()[0]
        old_pid = ray.get(victim.ping.remote())["pid"]
        ray.kill(victim, no_restart=False)
        deadline = time.monotonic() + 60
        while True:  # until the restarted actor answers (kill is asynchronous)
            try:
                ping = ray.get(victim.ping.remote(), timeout=10)
                if ping["pid"] != old_pid:
                    break
            except ray.exceptions.RayActorError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert ping["size"] == 0 and ping["restored_from"] is None
        assert "flat.shard-0.safetensors" in ping["error"]
        assert client.info().size == 20  # the other shard kept its items
        client.insert(_one(7), stream=0)  # and the empty one takes writes again
        client.flush()
        assert client.info().size == 21


def test_checkpoint_restores_onto_other_shard_counts(ray_cluster: Any, tmp_path: Path) -> None:
    from replaydb.ray import RayServer

    ids = torch.arange(90)
    with RayServer(_flat(), num_shards=2, checkpoint_dir=tmp_path / "a") as srv:
        client = srv.client()
        client.extend(_steps(ids), streams=ids % 5, priorities=1.0 + ids.double())
        path = client.checkpoint()
    assert latest_checkpoint(tmp_path / "a") == Path(path)
    for k in (3,):
        with RayServer.from_checkpoint(path, num_shards=k, checkpoint_dir=tmp_path / f"k{k}") as s2:
            c2 = s2.client()
            assert c2.num_shards == {"flat": k}
            assert c2.info().size == 90
            assert c2.info().inserts == 90
            batch = c2.sample(300)
            assert torch.equal(batch.priorities, 1.0 + batch["id"].double())
            got = {tuple(r) for s in _stored_ids(Path(s2.checkpoint()), "flat") for r in s.tolist()}
            assert got == {(i, i % 5) for i in range(90)}


def test_same_shard_count_restore_is_exact(ray_cluster: Any, tmp_path: Path) -> None:
    from replaydb.ray import RayServer

    table = Table(SPEC, 200, sampler=_seeded(), name="flat")
    table.extend(_steps(torch.arange(50)))  # template contents are copied in
    with RayServer(table, checkpoint_dir=tmp_path, keep=100, checkpoint_interval_s=0.2) as srv:
        client = srv.client()
        client.sample(5)
        path = srv.checkpoint()
        after = client.sample(20)["id"]
        n = len(list_checkpoints(tmp_path))
        time.sleep(0.7)
        assert len(list_checkpoints(tmp_path)) > n  # the periodic checkpointer runs
    with RayServer.from_checkpoint(path) as s2:
        assert torch.equal(s2.client().sample(20)["id"], after)


def test_damaged_or_escaping_checkpoints_raise_checkpoint_error(
    ray_cluster: Any, tmp_path: Path
) -> None:
    """Issue 11 items 4 and 7: bad shard files and paths are CheckpointErrors in the driver."""
    import json
    import shutil

    import ray

    from replaydb.ray import RayServer

    ids = torch.arange(60)
    with RayServer(_flat(600), num_shards=2, checkpoint_dir=tmp_path / "a") as srv:
        client = srv.client()
        client.extend(_steps(ids), streams=ids % 2)
        good = Path(client.checkpoint())
    cpus_free = ray.available_resources().get("CPU", 0.0)

    def copy(tag: str) -> Path:
        dst = tmp_path / tag / good.name
        shutil.copytree(good, dst)
        return dst

    def edit_manifest(ckpt: Path, fn: Any) -> None:
        m = json.loads((ckpt / "manifest.json").read_text())
        fn(m)
        (ckpt / "manifest.json").write_text(json.dumps(m))

    # A truncated shard file: same shard count (loaded by the actor) and another count.
    trunc = copy("trunc")
    f = trunc / "flat.shard-1.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    for k in (2, 1):
        with pytest.raises(CheckpointError, match=r"flat\.shard-1\.safetensors"):
            RayServer.from_checkpoint(trunc, num_shards=k)
    # A manifest entry pointing outside the checkpoint (a valid shard file there).
    outside = copy("outside")
    shutil.copy(outside / "flat.shard-0.safetensors", outside.parent / "outside.safetensors")
    edit_manifest(
        outside, lambda m: m["tables"]["flat"]["shards"][0].update(file="../outside.safetensors")
    )
    with pytest.raises(CheckpointError, match="outside the checkpoint directory"):
        RayServer.from_checkpoint(outside)
    absolute = copy("absolute")
    target = str(absolute / "flat.shard-0.safetensors")
    shutil.copy(target, tmp_path / "abs.safetensors")
    edit_manifest(
        absolute,
        lambda m: m["tables"]["flat"]["shards"][0].update(file=str(tmp_path / "abs.safetensors")),
    )
    with pytest.raises(CheckpointError, match="outside the checkpoint directory"):
        RayServer.from_checkpoint(absolute)
    # A shard file that is a symlink to a file elsewhere.
    link = copy("link")
    shutil.move(link / "flat.shard-1.safetensors", tmp_path / "elsewhere.safetensors")
    (link / "flat.shard-1.safetensors").symlink_to(tmp_path / "elsewhere.safetensors")
    with pytest.raises(CheckpointError, match="outside the checkpoint directory"):
        RayServer.from_checkpoint(link)
    # Manifests of the wrong JSON types.
    for i, fn in enumerate(
        [
            lambda m: m.update(tables=5),
            lambda m: m["tables"].update(flat=5),
            lambda m: m["tables"]["flat"].update(num_shards="2"),
            lambda m: m["tables"]["flat"].update(shards=[{"file": 3}, {}]),
            lambda m: m["tables"]["flat"]["config"].update(capacity="many"),
            lambda m: m["tables"]["flat"]["config"].update(sampler={"type": "Nope"}),
        ]
    ):
        bad = copy(f"types{i}")
        edit_manifest(bad, fn)
        with pytest.raises(CheckpointError):
            RayServer.from_checkpoint(bad)
    notjson = copy("notjson")
    (notjson / "manifest.json").write_bytes(b"\xff\xfe" + b"[" * 100_000)
    with pytest.raises(CheckpointError, match="not UTF-8 text"):
        RayServer.from_checkpoint(notjson)
    # Nothing was left running, and the good checkpoint still restores.
    deadline = time.monotonic() + 20  # killed shards give back their CPU share
    while ray.available_resources().get("CPU", 0.0) < cpus_free - 1e-6:
        assert time.monotonic() < deadline, "shard actors of failed restores still hold CPU"
        time.sleep(0.2)
    with RayServer.from_checkpoint(good) as s2:
        assert s2.client().info().size == 60


def _seeded() -> Any:
    from replaydb.samplers import Uniform

    return Uniform(seed=7)


def test_register_connect_checkpoint_errors_and_serve_command(
    ray_cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from replaydb.errors import ClosedError
    from replaydb.ray import RayClient, RayServer, serve_command

    with pytest.raises(CheckpointError, match="no complete replaydb checkpoint"):
        RayServer.from_checkpoint(tmp_path)
    with RayServer(_flat()) as srv:
        srv.register("test-service")
        remote = RayClient.connect("test-service", batch_size=4)
        remote.extend(_steps(torch.arange(10)))
        remote.flush()
        assert srv.client().info().size == 10
        with pytest.raises(InvalidArgumentError, match="checkpoint_dir=None"):
            srv.checkpoint()
    srv.close()  # idempotent
    with pytest.raises(ClosedError, match="closed"):
        srv.client()
    with pytest.raises(InvalidArgumentError, match="no replaydb service named 'absent'"):
        RayClient.connect("absent")

    cfg = tmp_path / "serve.toml"
    cfg.write_text(
        f'name = "svc"\nshards = 1\ncheckpoint_dir = "{tmp_path / "ck"}"\n'
        "[tables.replay]\ncapacity = 100\n"
        'spec = {obs = [4], reward = [], action = {shape = [], dtype = "int64"}}\n'
        'limiter = {type = "MinSize", min_size = 2}\n'
    )
    assert serve_command([str(cfg), "--for", "0"]) == 0
    out = capsys.readouterr().out
    assert 'RayClient.connect("svc"' in out
    assert "Ray address:" in out
    assert latest_checkpoint(tmp_path / "ck") is not None
    assert serve_command([str(cfg), "--for", "0"]) == 0  # restores from it
    assert "restored from" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text('{"tables": {"t": {"capacity": 10, "spec": {"x": [1]}, "colour": 1}}}')
    assert serve_command([str(bad)]) == 2
    assert "keys ['colour'] are unknown" in capsys.readouterr().err


# ------------------------------------------------------- front ends over Ray
def test_server_with_ray_backend_has_the_local_verbs(ray_cluster: Any, tmp_path: Path) -> None:
    from replaydb.server import Server

    with Server(_flat(600, "front"), backend="ray", num_shards=2, checkpoint_dir=tmp_path) as srv:
        client = srv.client()
        assert srv.tables() == ["front"]
        client.extend(_steps(torch.arange(40)), streams=torch.arange(40) % 4)
        client.insert({"id": torch.tensor(40), "obs": torch.tensor([40.0, -40.0])}, stream=1)
        sample = client.sample(32, timeout=30)
        assert sample["id"].shape == (32,)
        assert set(sample["id"].tolist()) <= set(range(41))
        assert client.info().size == 41
        path = Path(srv.checkpoint())
        assert (path / "manifest.json").is_file()


def test_manager_with_ray_backend_round_trips(ray_cluster: Any, tmp_path: Path) -> None:
    from replaydb import ReplayBufferManager

    spec = {"observation": ((3,), "float32"), "reward": ((), "float32"), "done": ((), "bool")}
    manager = ReplayBufferManager(
        spec, 400, tmp_path / "ckpt", sequence_length=2, backend="ray", num_shards=2
    )
    try:
        replay_buffer, observer = manager.create_replay_buffer()
        for t in range(30):
            observer(
                {
                    "observation": torch.full((2, 3), float(t)),
                    "reward": torch.ones(2),
                    "done": torch.tensor([t % 10 == 9, False]),
                }
            )
        observer.flush()
        assert manager.num_frames() > 0
        batch, info = next(iter(manager.get_dataset(batch_size=8, num_steps=2)))
        assert batch["observation"].shape == (8, 2, 3)
        assert info.key.shape == (8, 2)
        replay_buffer.py_client.checkpoint()
    finally:
        manager.close()
