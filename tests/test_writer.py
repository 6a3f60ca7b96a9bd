"""Writer: the one stage and flush policy of every step writer (issue 10, item 3)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from replaydb.errors import (
    ClosedError,
    InvalidArgumentError,
    RateLimiterTimeout,
    SpecMismatchError,
)
from replaydb.server import Client, Server, TableClient
from replaydb.spec import Spec
from replaydb.table import Table
from replaydb.writer import Writer

SPEC = Spec({"x": ((2,), "float32"), "r": ((), "float32"), "k": ((), "int64")})


def _step(i: float) -> list[Any]:
    return [np.full(2, i, np.float32), np.float32(i), i]


def _batch(start: int, n: int) -> dict[str, np.ndarray[Any, Any]]:
    v = np.arange(start, start + n, dtype=np.float32)
    return {"x": np.stack([v, v], 1), "r": v, "k": v.astype(np.int64)}


def _items(table: Table) -> list[list[float]]:
    return table.items()["r"].tolist()


class _Recorder:
    """A sink that keeps every write (and can refuse them)."""

    def __init__(self, refuse: int = 0) -> None:
        self.calls: list[dict[str, Any]] = []
        self.refuse = refuse

    def extend(
        self,
        steps: Mapping[str, Any],
        *,
        streams: Any = None,
        ends: Any = None,
        priorities: Any = None,
        timeout: float | None = None,
        table: str | None = None,
    ) -> None:
        if self.refuse:
            self.refuse -= 1
            raise RateLimiterTimeout("refused")
        self.calls.append(
            {
                "steps": {k: np.array(v) for k, v in steps.items()},
                "streams": np.array(streams),
                "ends": np.array(ends),
                "priorities": None if priorities is None else np.array(priorities),
                "timeout": timeout,
                "table": table,
            }
        )


# ------------------------------------------------------------ equivalence
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 2), st.sampled_from([0, 0, 0, 1, 2])),
        st.tuples(st.just("extend"), st.integers(0, 2), st.integers(1, 7)),
        st.tuples(st.just("flush"), st.integers(0, 6), st.just(0)),
        st.tuples(st.just("end"), st.integers(0, 2), st.sampled_from([1, 2])),
    ),
    max_size=40,
)


@settings(max_examples=30, deadline=None)
@given(ops=_OPS, max_steps=st.integers(1, 9))
def test_writer_gives_the_items_of_direct_writes(ops: list[Any], max_steps: int) -> None:
    """Any interleaving of appends, batches, flushes and ended episodes gives the
    items the same steps written one at a time (with their final end codes) give."""
    table = Table(SPEC, 500, sequence_length=2)
    fresh = iter(range(100, 1000))
    writer = Writer(table, SPEC, max_steps=max_steps, new_stream=lambda: next(fresh))
    ref_steps: list[tuple[float, int, int]] = []  # value, logical stream, end
    tails: dict[int, int] = {}
    i = 0
    for op, a, b in ops:
        if op == "append":
            writer.append(_step(i), stream=a, end=b)
            ref_steps.append((i, a, b))
            if b:
                tails.pop(a, None)
            else:
                tails[a] = len(ref_steps) - 1
            i += 1
        elif op == "extend":
            writer.extend(_batch(i, b), streams=a, ends=0)
            ref_steps += [(i + j, a, 0) for j in range(b)]
            tails[a] = len(ref_steps) - 1
            i += b
        elif op == "flush":
            writer.flush(limit=a or None)
        else:
            if a in tails:
                idx = tails.pop(a)
                ref_steps[idx] = (*ref_steps[idx][:2], b)
            writer.end_episode(a, b)
    writer.flush()
    assert writer.staged == 0
    ref = Table(SPEC, 500, sequence_length=2)
    for v, s, e in ref_steps:
        ref.insert({"x": [v, v], "r": v, "k": int(v)}, stream=s, end=e)
    assert sorted(_items(table)) == sorted(_items(ref))
    assert table.num_steps == len(ref_steps)


# ------------------------------------------------------------ flush policy
def test_a_full_stage_is_written_in_one_extend() -> None:
    sink = _Recorder()
    writer = Writer(sink, SPEC, max_steps=3, table="t")
    for i in range(7):
        writer.append(_step(i), stream=i % 2)
    assert len(sink.calls) == 2 and writer.staged == 1
    assert sink.calls[0]["steps"]["r"].tolist() == [0, 1, 2]
    assert sink.calls[1]["streams"].tolist() == [1, 0, 1]
    assert sink.calls[0]["table"] == "t"


def test_a_batch_of_max_steps_passes_straight_through_after_the_stage() -> None:
    sink = _Recorder()
    writer = Writer(sink, SPEC, max_steps=4)
    writer.append(_step(0))
    batch = _batch(1, 4)
    writer.extend(batch, streams=1)
    assert [c["steps"]["r"].tolist() for c in sink.calls] == [[0.0], [1, 2, 3, 4]]
    assert writer.staged == 0


def test_flush_limit_writes_the_oldest_steps_and_keeps_the_rest_in_order() -> None:
    table = Table(SPEC, 100, sequence_length=2)
    writer = Writer(table, SPEC, max_steps=64)
    writer.extend(_batch(0, 5))
    writer.append(_step(5))
    writer.flush(limit=4)
    assert table.num_steps == 4 and writer.staged == 2
    writer.extend(_batch(6, 2))
    writer.flush()
    assert table.items()["r"][:, 0].tolist() == [0, 1, 2, 3, 4, 5, 6]


def test_end_episode_patches_a_staged_step_and_continues_a_written_one_elsewhere() -> None:
    ids = iter([7, 8, 9])
    sink = _Recorder()
    writer = Writer(sink, SPEC, max_steps=10, new_stream=lambda: next(ids))
    writer.append(_step(0), stream=0)
    writer.end_episode(0, 1)
    writer.flush()
    assert sink.calls[0]["ends"].tolist() == [1] and sink.calls[0]["streams"].tolist() == [7]
    writer.append(_step(1), stream=0)  # a new episode on the same stream id
    writer.flush()
    writer.end_episode(0)  # already written: the next step goes to a fresh id
    writer.append(_step(2), stream=0)
    writer.flush()
    assert [c["streams"].tolist() for c in sink.calls] == [[7], [7], [8]]
    assert not writer.is_open(5)
    writer.end_episode(5)  # nothing open: nothing to do


def test_end_episode_of_a_written_step_needs_new_stream() -> None:
    writer = Writer(_Recorder(), SPEC)
    writer.append(_step(0))
    writer.flush()
    with pytest.raises(InvalidArgumentError, match="new_stream="):
        writer.end_episode(0)
    with pytest.raises(InvalidArgumentError, match="code must be 1"):
        writer.end_episode(0, 0)


def test_a_refused_write_keeps_the_steps_staged() -> None:
    sink = _Recorder(refuse=2)
    writer = Writer(sink, SPEC)
    writer.append(_step(0))
    with pytest.raises(RateLimiterTimeout):
        writer.flush(timeout=0.0)
    assert writer.staged == 1
    writer.try_flush()  # refused again, silently
    assert writer.staged == 1
    writer.try_flush(older_than=3600.0)  # too young: not even tried
    writer.try_flush()
    assert writer.staged == 0 and sink.calls[0]["steps"]["r"].tolist() == [0.0]


def test_the_smallest_step_timeout_applies_unless_flush_gives_one() -> None:
    sink = _Recorder()
    writer = Writer(sink, SPEC)
    writer.append(_step(0), timeout=5.0)
    writer.extend(_batch(1, 2), timeout=2.0)
    writer.flush()
    writer.append(_step(3), timeout=5.0)
    writer.flush(timeout=1.0)
    writer.append(_step(4))
    writer.flush()
    assert [c["timeout"] for c in sink.calls] == [2.0, 1.0, None]


def test_priorities_given_or_not_are_never_mixed_in_one_write() -> None:
    sink = _Recorder()
    writer = Writer(sink, SPEC)
    writer.append(_step(0), priority=2.0)
    writer.extend(_batch(1, 2), priorities=[3.0, 4.0])
    writer.append(_step(3))
    writer.flush()
    assert [c["priorities"] for c in sink.calls][1] is None
    assert sink.calls[0]["priorities"].tolist() == [2.0, 3.0, 4.0]


def test_discard_and_close() -> None:
    sink = _Recorder()
    writer = Writer(sink, SPEC)
    writer.append(_step(0))
    writer.discard()
    assert writer.staged == 0 and not writer.is_open(0)
    writer.append(_step(1))
    writer.close()
    writer.close()
    assert writer.closed and sink.calls[0]["steps"]["r"].tolist() == [1.0]
    with pytest.raises(ClosedError):
        writer.append(_step(2))
    with pytest.raises(ClosedError):
        writer.extend(_batch(0, 1))
    with pytest.raises(ClosedError):
        writer.flush()
    quiet = Writer(sink, SPEC)
    quiet.append(_step(3))
    quiet.close(flush=False)
    assert len(sink.calls) == 1


def test_torch_only_dtypes_are_staged_as_tensors() -> None:
    spec = Spec({"x": ((2,), torch.bfloat16)})
    table = Table(spec, 10)
    writer = Writer(table, spec, max_steps=4)
    assert not writer.staging
    writer.append([torch.ones(2, dtype=torch.bfloat16)])
    writer.extend({"x": torch.zeros(2, 2, dtype=torch.bfloat16)}, streams=1)
    assert writer.staged == 3 and len(table) == 0
    writer.flush(limit=2)
    assert len(table) == 2 and writer.staged == 1
    writer.flush()
    assert table.items()["x"].dtype == torch.bfloat16 and len(table) == 3


def test_a_client_is_a_destination() -> None:
    server = Server({"a": Table(SPEC, 10), "b": Table(SPEC, 10)})
    client = server.client()
    assert isinstance(client, TableClient) and isinstance(client, Client)
    writer = Writer(client, SPEC, table="b")
    writer.extend(_batch(0, 3))
    writer.flush()
    assert client.info(table="b").size == 3 and client.info(table="a").size == 0
    server.close()


# ------------------------------------------------------------ bad input
def test_bad_arguments_are_refused_and_nothing_is_staged() -> None:
    with pytest.raises(InvalidArgumentError, match="max_steps must be an int >= 1"):
        Writer(_Recorder(), SPEC, max_steps=0)
    with pytest.raises(InvalidArgumentError, match="spec must be a replaydb Spec"):
        Writer(_Recorder(), {"x": (2,)})  # type: ignore[arg-type]
    writer = Writer(_Recorder(), SPEC)
    writer.append(_step(0))
    with pytest.raises(SpecMismatchError, match=r"lack field\(s\) \['k'\]"):
        writer.extend({"x": np.zeros((1, 2)), "r": np.zeros(1)})
    with pytest.raises(SpecMismatchError, match="expected a batch"):
        writer.extend({"x": 1.0, "r": 1.0, "k": 1})
    with pytest.raises(SpecMismatchError, match="field 'x': values do not fit"):
        writer.extend({"x": np.zeros((2, 3)), "r": np.zeros(2), "k": np.zeros(2, np.int64)})
    with pytest.raises(SpecMismatchError, match="field 'x': value does not fit"):
        writer.append([np.zeros(3), 0.0, 0])
    with pytest.raises(InvalidArgumentError, match=r"streams must be ints >= 0.*dtype float64"):
        writer.extend(_batch(0, 2), streams=[0.5, 1.0])
    with pytest.raises(InvalidArgumentError, match="streams must be ints >= 0, got"):
        writer.extend(_batch(0, 2), streams=[-1, 0])
    with pytest.raises(InvalidArgumentError, match=r"streams must be a scalar or have shape"):
        writer.extend(_batch(0, 2), streams=[0, 1, 2])
    with pytest.raises(InvalidArgumentError, match="ends must be codes"):
        writer.extend(_batch(0, 2), ends=[0, 3])
    with pytest.raises(InvalidArgumentError, match=r"ends must be codes.*dtype float64"):
        writer.extend(_batch(0, 2), ends=0.5)
    with pytest.raises(InvalidArgumentError, match=r"priorities must have shape \(2,\)"):
        writer.extend(_batch(0, 2), priorities=[1.0])
    assert writer.staged == 1
    writer.extend(_batch(0, 0))  # an empty batch is nothing
    assert writer.staged == 1


def test_a_full_stage_whose_write_failed_is_written_before_the_next_step() -> None:
    sink = _Recorder(refuse=1)
    writer = Writer(sink, SPEC, max_steps=2)
    writer.append(_step(0))
    with pytest.raises(RateLimiterTimeout):
        writer.append(_step(1))  # staged, but the automatic write was refused
    assert writer.staged == 2
    writer.append(_step(2))
    assert [c["steps"]["r"].tolist() for c in sink.calls] == [[0.0, 1.0]]
    assert writer.staged == 1
