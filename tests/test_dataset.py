"""Dataset: shapes, chunking, prefetch threads, rate-limiter waits, errors, torch DataLoader."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

from replaydb.dataset import AUTOTUNE, Dataset, SampleInfo
from replaydb.errors import ClosedError, InvalidArgumentError, RateLimiterTimeout
from replaydb.nest import Nest
from replaydb.rate_limiters import MinSize
from replaydb.server import Client, Server
from replaydb.spec import Spec
from replaydb.table import Table

SPEC = Spec({"t": ((), "int64"), "obs": ((3,), "float32")})


def make_client(sequence_length: int = 2, steps: int = 40, **kwargs: Any) -> Client:
    """One episode of ``steps`` steps with ``t = 0..steps-1`` and obs = t."""
    table = Table(SPEC, 1000, sequence_length=sequence_length, **kwargs)
    client = Server(table).client()
    if steps:
        t = torch.arange(steps)
        client.extend({"t": t, "obs": t.float().unsqueeze(1).expand(steps, 3)})
    return client


def test_batches_are_b_by_num_steps_with_info() -> None:
    with Dataset(make_client(), batch_size=16, num_steps=2) as ds:
        assert isinstance(ds, IterableDataset)
        batch, info = next(iter(ds))
        assert batch["obs"].shape == (16, 2, 3)
        assert batch["t"].shape == (16, 2)
        assert isinstance(info, SampleInfo)
        for field in info:
            assert field.shape == (16, 2)
        assert torch.equal(batch["t"][:, 1], batch["t"][:, 0] + 1)
        assert torch.equal(info.key[:, 0], batch["t"][:, 0])
        assert (info.table_size == 39).all()
        assert (info.probability == 1 / 39).all()
        assert info.key.dtype == torch.int64
        assert info.probability.dtype == torch.float64
        assert (info.times_sampled >= 1).all()


def test_batches_and_info_live_on_the_table_device(device: torch.device) -> None:
    table = Table(SPEC, 100, sequence_length=4, device=device)
    client = Server(table).client()
    client.extend({"t": torch.arange(10), "obs": torch.zeros(10, 3)})
    with Dataset(client, batch_size=3, num_steps=2).prefetch(1) as ds:
        batch, info = next(ds)
        assert batch["obs"].device.type == device.type
        assert all(v.device.type == device.type for v in info)


def test_default_num_steps_is_the_sequence_length() -> None:
    ds = Dataset(make_client(sequence_length=3), batch_size=4)
    assert ds.num_steps == 3
    assert next(ds)[0]["t"].shape == (4, 3)


def test_single_step_tables_give_a_step_axis_of_one() -> None:
    batch, info = next(Dataset(make_client(sequence_length=1), batch_size=5))
    assert batch["obs"].shape == (5, 1, 3)
    assert info.key.shape == (5, 1)


def test_chunks_of_an_item_are_consecutive_rows_and_leftovers_open_the_next_batch() -> None:
    # T = 4, num_steps = 2: k = 2 chunks per item; B = 3 leaves one chunk over.
    ds = Dataset(make_client(sequence_length=4), batch_size=3, num_steps=2)
    rows_t: list[torch.Tensor] = []
    rows_key: list[torch.Tensor] = []
    for _ in range(4):
        batch, info = next(ds)
        assert batch["t"].shape == (3, 2)
        rows_t.append(batch["t"])
        rows_key.append(info.key)
    t = torch.cat(rows_t)  # 12 rows = exactly 6 items, no chunk dropped
    key = torch.cat(rows_key)
    assert torch.equal(key[0::2], key[1::2])
    assert torch.equal(t[0::2, 0], key[0::2, 0])
    assert torch.equal(t[1::2, 0], key[0::2, 0] + 2)
    assert torch.equal(t[:, 1], t[:, 0] + 1)


@pytest.mark.parametrize(("num_steps", "match"), [(3, r"use one of \[1, 2, 4\]"), (5, "divide")])
def test_num_steps_must_divide_sequence_length(num_steps: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Dataset(make_client(sequence_length=4), batch_size=2, num_steps=num_steps)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size must be an int >= 1"),
        ({"batch_size": 2.0}, "batch_size must be an int >= 1"),
        ({"batch_size": 2, "num_steps": 0}, "num_steps must be None or an int >= 1"),
        ({"batch_size": 2, "num_parallel_calls": 0}, "num_parallel_calls must be an int >= 1"),
        ({"batch_size": 2, "timeout": -1}, "timeout must be None or a number >= 0"),
        ({"batch_size": 2, "timeout": "1"}, "timeout must be None or a number >= 0"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        Dataset(make_client(), **kwargs)


def test_bad_prefetch() -> None:
    ds = Dataset(make_client(), 2)
    for bad in (-2, 1.5, True):
        with pytest.raises(InvalidArgumentError, match="buffer_size must be an int >= 0"):
            ds.prefetch(bad)  # type: ignore[arg-type]


def test_prefetch_keeps_n_batches_ready_and_close_stops_threads() -> None:
    base = Dataset(make_client(), batch_size=8, num_parallel_calls=3)
    ds = base.prefetch(4)
    assert ds.buffer_size == 4
    assert base.buffer_size == 0
    assert next(ds)[0]["t"].shape == (8, 2)
    assert len(ds._threads) == 3
    assert ds._queue is not None
    deadline = time.monotonic() + 5
    while ds._queue.qsize() < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ds._queue.qsize() == 4
    threads = list(ds._threads)
    base.close()  # closes the prefetched child too
    assert ds.closed
    assert not any(t.is_alive() for t in threads)
    with pytest.raises(ClosedError, match="Dataset is closed"):
        next(ds)
    with pytest.raises(ClosedError):
        iter(base)
    with pytest.raises(ClosedError):
        base.prefetch(1)
    ds.close()  # idempotent


def test_dropped_dataset_stops_its_threads() -> None:
    import gc

    ds = Dataset(make_client(), batch_size=4).prefetch(2)
    next(ds)
    threads = list(ds._threads)
    del ds
    gc.collect()
    for t in threads:
        t.join(timeout=5)
    assert not any(t.is_alive() for t in threads)


def test_autotune_keeps_two_per_thread() -> None:
    ds = Dataset(make_client(), 2, num_parallel_calls=2).prefetch(AUTOTUNE)
    assert ds.buffer_size == 4
    ds.close()


@pytest.mark.parametrize("prefetch", [0, 2])
def test_waits_for_the_rate_limiter_then_times_out(prefetch: int) -> None:
    client = make_client(steps=0)
    ds = Dataset(client, batch_size=4, timeout=0.2)
    ds = ds.prefetch(prefetch) if prefetch else ds
    t0 = time.monotonic()
    with pytest.raises(RateLimiterTimeout, match=r"waited 0\.2s for a batch of 4"):
        next(ds)
    assert time.monotonic() - t0 >= 0.2
    if prefetch:
        with pytest.raises(RateLimiterTimeout):  # the failure sticks
            next(ds)
    ds.close()


def test_waits_until_a_writer_makes_the_table_sampleable() -> None:
    table = Table(SPEC, 100, sequence_length=2, rate_limiter=MinSize(10))
    client = Server(table).client()
    ds = Dataset(client, batch_size=4).prefetch(1)

    def write_later() -> None:
        time.sleep(0.1)
        t = torch.arange(11)
        client.extend({"t": t, "obs": torch.zeros(11, 3)})

    writer = threading.Thread(target=write_later)
    writer.start()
    batch, info = next(ds)
    writer.join()
    assert batch["t"].shape == (4, 2)
    assert (info.table_size == 10).all()
    ds.close()


class _FailingClient:
    def __init__(self, after: int) -> None:
        self.inner = make_client()
        self.after = after

    def info(self, *, table: str | None = None) -> Any:
        return self.inner.info(table=table)

    def sample(self, n: int, *, timeout: float | None = None, table: str | None = None) -> Any:
        if self.after <= 0:
            raise RuntimeError("backend went away")
        self.after -= 1
        return self.inner.sample(n, timeout=timeout, table=table)


@pytest.mark.parametrize("prefetch", [0, 3])
def test_background_errors_are_raised_in_the_consumer(prefetch: int) -> None:
    ds = Dataset(_FailingClient(after=2), batch_size=2)
    ds = ds.prefetch(prefetch) if prefetch else ds
    next(ds)
    next(ds)
    with pytest.raises(RuntimeError, match="backend went away"):
        next(ds)
    ds.close()


def test_structure_rebuilds_the_nest() -> None:
    ds = Dataset(make_client(), batch_size=3)
    ds.structure = Nest({"t": ((), "int64"), "obs": ((3,), "float32"), "policy_info": ()})
    batch, _ = next(ds)
    assert batch["policy_info"] == ()
    assert batch["obs"].shape == (3, 2, 3)


def test_before_sample_hook_runs() -> None:
    calls = [0]
    ds = Dataset(make_client(), batch_size=3)
    ds.before_sample = lambda: calls.__setitem__(0, calls[0] + 1)
    next(ds)
    assert calls[0] == 1


def test_torch_dataloader_iterates_it() -> None:
    ds = Dataset(make_client(), batch_size=6).prefetch(2)
    loader = DataLoader(ds, batch_size=None)
    for i, (batch, info) in enumerate(loader):
        assert batch["obs"].shape == (6, 2, 3)
        assert info.key.shape == (6, 2)
        if i == 2:
            break
    ds.close()


def test_repr_mentions_shape_and_state() -> None:
    ds = Dataset(make_client(), batch_size=6)
    assert "batch_size=6" in repr(ds)
    ds.close()
    assert "closed" in repr(ds)


@pytest.mark.parametrize("iterated_first", [False, True])
def test_dataloader_workers_refuse_an_in_process_table(iterated_first: bool) -> None:
    # Forked workers would each sample a frozen copy (identical batches, no new data),
    # and one forked after prefetch threads started would hang on their locks.
    ds = Dataset(make_client(), batch_size=4).prefetch(2)
    if iterated_first:
        next(ds)
    loader = DataLoader(ds, batch_size=None, num_workers=2, timeout=30)
    with pytest.raises(InvalidArgumentError, match=r"DataLoader worker \d.*num_workers=0"):
        next(iter(loader))
    ds.close()
