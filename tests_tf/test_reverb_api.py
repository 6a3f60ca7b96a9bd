"""The Reverb 0.14 surface of replaydb.reverb, call by call."""

from __future__ import annotations

import collections
import pickle
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import reverb
import tensorflow as tf

import replaydb.reverb
from replaydb.errors import ClosedError, InvalidArgumentError, ReplayError

pytestmark = pytest.mark.tf

Step = collections.namedtuple("Step", ["obs", "action", "info"])


def uniform_table(name: str = "t", max_size: int = 100, min_size: int = 1) -> reverb.Table:
    return reverb.Table(
        name,
        sampler=reverb.selectors.Uniform(),
        remover=reverb.selectors.Fifo(),
        max_size=max_size,
        rate_limiter=reverb.rate_limiters.MinSize(min_size),
    )


def write_steps(client: reverb.Client, table: str, n: int, length: int = 2) -> None:
    with client.trajectory_writer(num_keep_alive_refs=length) as writer:
        for i in range(n):
            writer.append(Step(np.full(3, i, np.float32), np.int64(i), ()))
            if writer.episode_steps >= length:
                item = tf.nest.map_structure(lambda h: h[-length:], writer.history)
                writer.create_item(table, priority=1.0, trajectory=item)


# ------------------------------------------------------------------ install
def test_install_aliases_reverb_and_its_submodules() -> None:
    import reverb.platform.checkpointers_lib as lib
    import reverb.trajectory_writer as tw

    assert reverb is replaydb.reverb
    assert replaydb.reverb.installed()
    assert tw.TrajectoryWriter is replaydb.reverb.TrajectoryWriter
    assert lib.DefaultCheckpointer is reverb.platform.checkpointers_lib.DefaultCheckpointer


def test_install_refuses_to_shadow_another_reverb(monkeypatch: pytest.MonkeyPatch) -> None:
    replaydb.reverb.uninstall()
    try:
        fake = types.ModuleType("reverb")
        fake.__file__ = "/site-packages/reverb/__init__.py"
        monkeypatch.setitem(sys.modules, "reverb", fake)
        with pytest.raises(InvalidArgumentError, match="replace_existing=True"):
            replaydb.reverb.install()
        assert sys.modules["reverb"] is fake
        replaydb.reverb.install(replace_existing=True)
        assert sys.modules["reverb"] is replaydb.reverb
        replaydb.reverb.uninstall()
        assert sys.modules["reverb"] is fake
    finally:
        monkeypatch.undo()
        replaydb.reverb.install(replace_existing=True)
    assert replaydb.reverb.installed()


# ------------------------------------------------------------------- tables
def test_table_views_are_live() -> None:
    table = uniform_table(min_size=2)
    server = reverb.Server([table])
    try:
        assert table.info.current_size == 0
        assert not table.can_sample(1)
        write_steps(server.localhost_client(), "t", 3)
        assert table.info.current_size == 2
        assert table.can_sample(1)
        assert table.can_insert(5)
        info = server.localhost_client().server_info()["t"]
        assert (info.max_size, info.current_size) == (100, 2)
        assert not info.sampler_options.is_deterministic
        assert info.remover_options.is_deterministic
        assert info.rate_limiter_info.min_size_to_sample == 2
        assert info.signature is None
    finally:
        server.stop()


def test_queue_and_stack_presets() -> None:
    queue, stack = reverb.Table.queue("q", 3), reverb.Table.stack("s", 3)
    server = reverb.Server([queue, stack])
    try:
        client = server.localhost_client()
        for i in range(3):
            client.insert(np.int64(i), {"q": 1.0, "s": 1.0})
        assert not queue.can_insert(1)
        got_q = [int(next(client.sample("q", 1))[0].data[0]) for _ in range(3)]
        got_s = [int(next(client.sample("s", 1))[0].data[0]) for _ in range(3)]
        assert got_q == [0, 1, 2]
        assert got_s == [2, 1, 0]
        assert queue.info.current_size == 0
        assert queue.can_insert(3)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: reverb.Table(
                "t", "uniform", reverb.selectors.Fifo(), 10, reverb.rate_limiters.MinSize(1)
            ),
            "sampler",
        ),
        (lambda: uniform_table(max_size=0), "max_size"),
        (lambda: reverb.rate_limiters.MinSize(0), "min_size_to_sample"),
        (lambda: reverb.rate_limiters.SampleToInsertRatio(1.0, 1, 0.5), "error_buffer"),
        (lambda: reverb.selectors.Prioritized(1.5), "priority_exponent"),
        (lambda: reverb.Table.queue("q", 0), "size"),
        (lambda: uniform_table(max_size=True), r"max_size must be an int >= 1, got True"),
        (
            lambda: reverb.Table(
                "t",
                sampler=reverb.selectors.Uniform(),
                remover=reverb.selectors.Fifo(),
                max_size=10,
                rate_limiter=reverb.rate_limiters.MinSize(1),
                max_times_sampled=-1,
            ),
            r"max_times_sampled must be an int >= 0 \(0: unlimited\), got -1",
        ),
        (
            lambda: reverb.selectors.Prioritized(True),
            r"priority_exponent must be a number in \[0, 1\], got True",
        ),
        (
            lambda: reverb.Server([uniform_table()], port=-1),
            r"port must be None or an int >= 0, got -1",
        ),
    ],
)
def test_bad_table_arguments_are_named(make: object, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        make()  # type: ignore[operator]


# ------------------------------------------------------------- server/client
def test_server_address_resolution_and_stop() -> None:
    server = reverb.Server([uniform_table()], port=None)
    client = reverb.Client(f"localhost:{server.port}")
    assert pickle.loads(pickle.dumps(client)).server_address == client.server_address
    assert set(client.server_info()) == {"t"}
    other = reverb.Server([uniform_table("u")])
    assert other.port != server.port
    server.stop()
    server.stop()
    with pytest.raises(ClosedError, match="in-process only"):
        client.server_info()
    with pytest.raises(InvalidArgumentError, match="host:port"):
        reverb.Client("nowhere").server_info()
    with pytest.raises(InvalidArgumentError, match="no table 'x'"):
        other.localhost_client().reset("x")
    other.stop()


def test_duplicate_tables_and_ports_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="unique"):
        reverb.Server([uniform_table(), uniform_table()])
    table = uniform_table()
    server = reverb.Server([table])
    try:
        with pytest.raises(InvalidArgumentError, match="already served"):
            reverb.Server([table])
        with pytest.raises(InvalidArgumentError, match="already used"):
            reverb.Server([uniform_table("b")], port=server.port)
    finally:
        server.stop()


def test_client_insert_sample_mutate_reset() -> None:
    table = reverb.Table(
        "p",
        sampler=reverb.selectors.Prioritized(1.0),
        remover=reverb.selectors.Fifo(),
        max_size=10,
        rate_limiter=reverb.rate_limiters.MinSize(1),
    )
    server = reverb.Server([table])
    try:
        client = server.localhost_client()
        client.insert([np.float32(1.0), np.arange(3)], {"p": 1.0})
        client.insert([np.float32(2.0), np.arange(3)], {"p": 1.0})
        sample = next(client.sample("p", 1, emit_timesteps=False))
        assert sample.data[1].shape == (1, 3)
        keys = [int(next(client.sample("p", 1))[0].info.key) for _ in range(20)]
        assert len(set(keys)) == 2
        client.mutate_priorities("p", updates={keys[0]: 1e-9})
        later = {int(next(client.sample("p", 1))[0].info.key) for _ in range(20)}
        assert later == {k for k in set(keys) if k != keys[0]}
        client.mutate_priorities("p", deletes=[keys[0]])
        assert table.info.current_size == 1
        client.reset("p")
        assert table.info.current_size == 0
        with pytest.raises(InvalidArgumentError, match="at least one table"):
            client.insert(np.zeros(1), {})
    finally:
        server.stop()


def test_legacy_writer_items_keep_a_time_axis() -> None:
    server = reverb.Server([uniform_table()])
    try:
        client = server.localhost_client()
        with client.writer(3) as writer:
            for i in range(3):
                writer.append({"x": np.float32(i), "y": np.full(2, i)})
            writer.create_item("t", num_timesteps=2, priority=1.0)
            with pytest.raises(InvalidArgumentError, match="num_timesteps"):
                writer.create_item("t", num_timesteps=4, priority=1.0)
        steps = next(client.sample("t", 1))
        assert [float(s.data[0]) for s in steps] == [1.0, 2.0]
    finally:
        server.stop()


# --------------------------------------------------------- trajectory writer
def test_trajectory_writer_history_and_items() -> None:
    server = reverb.Server([uniform_table()])
    try:
        client = server.localhost_client()
        writer = client.trajectory_writer(num_keep_alive_refs=2)
        writer.append(Step(tf.constant([1.0, 2.0]), 7, ()))
        writer.append(Step(np.array([3.0, 4.0], np.float32), 8, ()))
        assert writer.episode_steps == 2
        history = writer.history
        assert tf.nest.flatten(history)[0] is history.obs  # opaque to tf.nest
        assert history.obs[-1].shape == (2,)
        assert history.obs[:].shape == (2, 2)
        writer.create_item("t", 1.0, Step(history.obs[-2:], history.action[-1], ()))
        with pytest.raises(InvalidArgumentError, match=r"columns of writer\.history"):
            writer.create_item("t", 1.0, {"x": np.zeros(2)})
        with pytest.raises(InvalidArgumentError, match="structure"):
            writer.append({"a": 1, "b": 2, "c": 3})
        writer.end_episode()
        assert writer.episode_steps == 0
        for i in range(6):
            writer.append(Step(np.zeros(2, np.float32), i, ()))
        with pytest.raises(InvalidArgumentError, match="num_keep_alive_refs"):
            writer.history.action[0:3]
        writer.close()
        with pytest.raises(ClosedError):
            writer.append(Step(np.zeros(2, np.float32), 0, ()))
        sample = next(client.sample("t", 1, emit_timesteps=False))
        assert sample.data[0].tolist() == [[1.0, 2.0], [3.0, 4.0]]
        assert int(sample.data[1]) == 8
    finally:
        server.stop()


def test_pending_items_become_visible_to_readers() -> None:
    table = uniform_table()
    server = reverb.Server([table])
    try:
        writer = server.localhost_client().trajectory_writer(1)
        writer.append(np.float32(1.0))
        writer.create_item("t", 1.0, writer.history[-1])
        assert table.info.current_size == 1  # pushed when a reader asks
        writer.close()
    finally:
        server.stop()


# ------------------------------------------------------------ TF and datasets
def test_tf_client_ops_inside_tf_function() -> None:
    table = uniform_table(max_size=10)
    server = reverb.Server([table])
    try:
        tf_client = reverb.TFClient(f"localhost:{server.port}")

        @tf.function
        def roundtrip(x: tf.Tensor) -> tf.Tensor:
            tf_client.insert([x], tf.constant(["t"]), tf.constant([1.0], tf.float64))
            return tf_client.sample("t", [tf.float32]).data[0]

        got = roundtrip(tf.constant([1.0, 2.0]))
        assert got.numpy().tolist() == [1.0, 2.0]
        sample = tf_client.sample("t", [tf.float32])
        assert sample.info.key.dtype == tf.uint64

        @tf.function
        def reprioritize(key: tf.Tensor) -> None:
            tf_client.update_priorities("t", key[None], tf.constant([5.0], tf.float64))

        reprioritize(sample.info.key)
        assert float(next(server.localhost_client().sample("t"))[0].info.priority) == 5.0
        with pytest.raises(InvalidArgumentError, match="float64"):
            tf_client.insert([tf.constant(1.0)], tf.constant(["t"]), tf.constant([1.0]))
    finally:
        server.stop()


def _dataset(port: int, timeout_ms: int = -1, length: int = 2) -> reverb.TrajectoryDataset:
    return reverb.TrajectoryDataset(
        f"localhost:{port}",
        "t",
        Step(tf.float32, tf.int64, ()),
        Step(tf.TensorShape([length, 3]), tf.TensorShape([length]), ()),
        max_in_flight_samples_per_worker=8,
        rate_limiter_timeout_ms=timeout_ms,
    )


def test_trajectory_dataset_elements_and_interleave() -> None:
    server = reverb.Server([uniform_table()])
    try:
        write_steps(server.localhost_client(), "t", 6)
        ds = _dataset(server.port)
        assert isinstance(ds, tf.data.Dataset)
        sample = next(iter(ds))
        assert sample.info.key.dtype == tf.uint64
        assert sample.info.times_sampled.dtype == tf.int32
        assert sample.info.table_size.numpy() == 5
        obs = sample.data.obs.numpy()
        assert obs[1, 0] == obs[0, 0] + 1
        inter = tf.data.Dataset.range(2).interleave(
            lambda _: _dataset(server.port), cycle_length=2, num_parallel_calls=2
        )
        batch = next(iter(inter.batch(16, drop_remainder=True)))
        assert batch.data.obs.shape == (16, 2, 3)
    finally:
        server.stop()


def test_dataset_blocks_until_the_rate_limiter_allows() -> None:
    server = reverb.Server([uniform_table(min_size=3)])
    try:
        it = iter(_dataset(server.port))
        threading.Timer(0.5, write_steps, (server.localhost_client(), "t", 4)).start()
        start = time.monotonic()
        next(it)
        assert time.monotonic() - start >= 0.4
    finally:
        server.stop()


def test_dataset_ends_at_the_first_rate_limiter_timeout() -> None:
    server = reverb.Server([reverb.Table.queue("t", 10)])
    try:
        write_steps(server.localhost_client(), "t", 4)
        got = list(_dataset(server.port, timeout_ms=200))
        assert len(got) == 3
        assert [int(s.data.action[0]) for s in got] == [0, 1, 2]
    finally:
        server.stop()


def test_dataset_with_variable_length_items() -> None:
    server = reverb.Server([uniform_table()])
    try:
        client = server.localhost_client()
        with client.trajectory_writer(num_keep_alive_refs=5) as writer:
            for length in (2, 4):
                for i in range(length):
                    writer.append(Step(np.zeros(3, np.float32), np.int64(i), ()))
                writer.create_item("t", 1.0, tf.nest.map_structure(lambda h: h[:], writer.history))
                writer.end_episode()
        ds = reverb.TrajectoryDataset(
            f"localhost:{server.port}",
            "t",
            Step(tf.float32, tf.int64, ()),
            Step(tf.TensorShape([None, 3]), tf.TensorShape([None]), ()),
            max_in_flight_samples_per_worker=4,
        )
        lengths = {int(s.data.action.shape[0]) for s in ds.take(20)}
        assert lengths == {2, 4}
    finally:
        server.stop()


def test_dataset_rejects_mismatched_dtypes() -> None:
    server = reverb.Server([uniform_table()])
    try:
        write_steps(server.localhost_client(), "t", 3)
        ds = reverb.TrajectoryDataset(
            f"localhost:{server.port}",
            "t",
            Step(tf.float64, tf.int64, ()),
            Step(tf.TensorShape([2, 3]), tf.TensorShape([2]), ()),
            max_in_flight_samples_per_worker=2,
        )
        with pytest.raises(tf.errors.OpError, match="dtype float32"):
            next(iter(ds))
    finally:
        server.stop()


# -------------------------------------------------------------- checkpoints
def test_server_without_checkpointer_leaves_no_directory_until_it_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    table = reverb.Table(
        "t",
        sampler=reverb.selectors.Uniform(),
        remover=reverb.selectors.Fifo(),
        max_size=10,
        rate_limiter=reverb.rate_limiters.MinSize(1),
    )
    server = reverb.Server([table])
    client = server.localhost_client()
    write_steps(client, "t", 3)
    assert list(tmp_path.iterdir()) == []  # Reverb's own default creates one per server
    saved = Path(client.checkpoint())
    assert saved.parent.parent == tmp_path
    assert saved.parent.name.startswith("replaydb-reverb-")
    server.stop()


def test_default_checkpointer_restores_newest_or_starts_empty(tmp_path: Path) -> None:
    path = str(tmp_path / "rb")

    def serve() -> tuple[reverb.Server, reverb.Table]:
        table = reverb.Table(
            "t",
            sampler=reverb.selectors.Uniform(),
            remover=reverb.selectors.Fifo(),
            max_size=50,
            rate_limiter=reverb.rate_limiters.MinSize(1),
            signature=Step(tf.TensorSpec([2, 3], tf.float32), tf.TensorSpec([2], tf.int64), ()),
        )
        checkpointer = reverb.platform.checkpointers_lib.DefaultCheckpointer(path=path)
        return reverb.Server([table], checkpointer=checkpointer), table

    server, table = serve()
    assert table.info.current_size == 0  # nothing to restore: empty, no error
    client = server.localhost_client()
    write_steps(client, "t", 8)
    next(client.sample("t", 1))
    before = table.info
    first = client.checkpoint()
    write_steps(client, "t", 3)
    second = client.checkpoint()
    assert first != second
    assert not Path(first).exists()
    server.stop()

    server, table = serve()
    after = table.info
    assert after.current_size == before.current_size + 2
    assert after.rate_limiter_info.sample_count == before.rate_limiter_info.sample_count
    assert after.signature == before.signature
    ds = reverb.TrajectoryDataset.from_table_signature(
        f"localhost:{server.port}", "t", max_in_flight_samples_per_worker=4
    )
    assert next(iter(ds)).data.obs.shape == (2, 3)
    server.stop()


def test_checkpoint_table_missing_from_server_aborts(tmp_path: Path) -> None:
    path = str(tmp_path / "rb")
    lib = reverb.platform.checkpointers_lib
    server = reverb.Server([uniform_table("a")], checkpointer=lib.DefaultCheckpointer(path))
    server.localhost_client().checkpoint()
    server.stop()
    with pytest.raises(ReplayError, match="does not serve"):
        reverb.Server([uniform_table("b")], checkpointer=lib.DefaultCheckpointer(path))


def test_broken_reverb_format_checkpoint_fails_clearly(tmp_path: Path) -> None:
    # A Reverb-style timestamped directory with DONE but no tables.tfrecord is refused
    # (Reverb's loader would fail too); it never silently starts empty.
    stamp = tmp_path / "2024-01-01T00:00:00.000000000+00:00"
    stamp.mkdir()
    (stamp / "DONE").write_text("")
    lib = reverb.platform.checkpointers_lib
    with pytest.raises(ReplayError, match="Reverb checkpoint"):
        reverb.Server([uniform_table()], checkpointer=lib.DefaultCheckpointer(str(tmp_path)))
