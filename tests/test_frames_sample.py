"""``Table.sample`` of a uniform frame-stack table in one compiled pass.

``_sampling`` serves such a table (CPU, numba, a ``Uniform`` sampler, single steps
or windows) with one pass that counts the draws, walks the windows and gathers the
stacks (``_frames.sample_fused``). These tests drive twin tables, one on that pass
and one on the numpy paths (kernels off), through the same writes and samples and
require equal samples (every field and column) and equal item records, and check
the pass's edges: the rate limiter, ``max_times_sampled``, waiting, and the
buffers it hands out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from replaydb import Spec, Table, _kernels, _sampling
from replaydb.errors import WouldBlockForeverError
from replaydb.rate_limiters import SampleToInsertRatio
from replaydb.samplers import Prioritized, Uniform

SPEC = Spec({"img": ((3, 2), "uint8"), "ident": ((), "int64"), "reward": ((), "float32")})

needs_numba = pytest.mark.skipif(_kernels.get() is None, reason="numba not installed")


@pytest.fixture(autouse=True)
def _restore_kernels() -> Iterator[None]:
    yield
    _kernels.use(True)


def make(compiled: bool, **kw: object) -> Table:
    _kernels.use(compiled)
    try:
        return Table(SPEC, kw.pop("capacity", 60), sampler=Uniform(seed=5), **kw)  # type: ignore[arg-type]
    finally:
        _kernels.use(True)


def fill(table: Table, steps: int, streams: int, seed: int) -> None:
    """``steps`` interleaved steps with random episode ends; values from the key."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < steps:
        n = int(min(rng.integers(1, 9), steps - done))
        key = np.arange(done, done + n)
        table.extend(
            {
                "img": torch.from_numpy((key[:, None, None] + np.arange(6).reshape(3, 2)) % 251)
                .to(torch.uint8)
                .contiguous(),
                "ident": torch.from_numpy(key + 1),
                "reward": torch.from_numpy(key * 0.5).float(),
            },
            streams=torch.from_numpy(rng.integers(0, streams, n)),
            ends=torch.from_numpy((rng.random(n) < 0.15).astype(np.int64)),
        )
        done += n


def assert_same(got: object, want: object) -> None:
    for name in ("keys", "probabilities", "weights", "priorities", "times_sampled", "mask", "ends"):
        a, b = getattr(got, name), getattr(want, name)
        if b is None:
            assert a is None, name
            continue
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert torch.equal(a, b), name
    assert got.table_size == want.table_size  # type: ignore[attr-defined]
    data, expected = got.data, want.data  # type: ignore[attr-defined]
    assert list(data) == list(expected) == list(SPEC)
    for name in SPEC:
        assert data[name].dtype == expected[name].dtype, name
        assert data[name].shape == expected[name].shape, name
        assert torch.equal(data[name], expected[name]), name


@needs_numba
@settings(max_examples=30, deadline=None)
@given(
    length=st.integers(1, 3),
    pad=st.booleans(),
    k=st.integers(1, 4),
    zeros=st.booleans(),
    max_times=st.sampled_from([None, 1, 3]),
    steps=st.integers(1, 150),
    streams=st.integers(1, 3),
    seed=st.integers(0, 10**6),
)
def test_the_compiled_sample_equals_the_numpy_path(
    length: int,
    pad: bool,
    k: int,
    zeros: bool,
    max_times: int | None,
    steps: int,
    streams: int,
    seed: int,
) -> None:
    kw = {
        "sequence_length": length,
        "pad": pad and length > 1,
        "frame_stack": {"img": (k, "zeros" if zeros else "first"), "ident": 2},
        "max_times_sampled": max_times,
    }
    fused, plain = make(True, **kw), make(False, **kw)
    for t in (fused, plain):
        fill(t, steps, streams, seed)
    assert _sampling._stacked(fused) is not None
    assert _sampling._stacked(plain) is None
    rng = np.random.default_rng(seed)
    for _ in range(6):
        if plain.info().size == 0:
            break
        b = int(rng.integers(1, 9))
        got, want = fused.sample(b), plain.sample(b)
        assert_same(got, want)
        assert got["img"].shape[: 2 if length > 1 else 1] == ((b, length) if length > 1 else (b,))
    assert torch.equal(fused._items, plain._items)
    assert fused.info() == plain.info()


@needs_numba
def test_only_uniform_frame_stack_tables_take_the_pass() -> None:
    stacked = make(True, frame_stack={"img": 3})
    assert _sampling._stacked(stacked) is not None
    assert _sampling._stacked(make(True)) is None  # no frame stack: the other paths
    _kernels.use(True)
    prio = Table(SPEC, 20, sampler=Prioritized(seed=0), frame_stack={"img": 3})
    assert _sampling._stacked(prio) is None
    fill(prio, 30, 2, 0)
    assert prio.sample(5)["img"].shape == (5, 3, 3, 2)


@needs_numba
def test_the_pass_counts_in_the_rate_limiter_and_refuses_like_the_general_path() -> None:
    table = make(True, frame_stack={"img": 2})
    with pytest.raises(WouldBlockForeverError, match="holds 0 item"):
        table.sample(2)  # empty: the pass declines, the general path raises
    fill(table, 40, 2, 3)
    before = table.rate_limiter.samples
    table.sample(7)
    assert table.rate_limiter.samples == before + 7
    _kernels.use(True)
    limited = Table(
        SPEC,
        40,
        sampler=Uniform(seed=1),
        rate_limiter=SampleToInsertRatio(1.0, 1, 2.0),
        frame_stack={"img": 2},
    )
    fill(limited, 3, 1, 0)
    limited.sample(2)
    with pytest.raises(WouldBlockForeverError):
        limited.sample(5)  # over the ratio: the pass declines, the general path refuses
    with pytest.raises(ValueError, match="batch_size"):
        limited.sample(0)


@needs_numba
def test_samples_own_fresh_buffers_and_columns_apart_from_frames() -> None:
    table = make(True, sequence_length=2, pad=True, frame_stack={"img": 3})
    fill(table, 60, 2, 4)
    a = table.sample(4)
    img, keys = a["img"].clone(), a.keys.clone()
    b = table.sample(4)
    assert torch.equal(a["img"], img) and torch.equal(a.keys, keys)
    assert a["img"].data_ptr() != b["img"].data_ptr()
    for t in (*a.data.values(), a.keys, a.weights, a.probabilities, a.priorities, a.ends, a.mask):
        assert t is not None and t.is_contiguous()
        assert t.data_ptr() % t.element_size() == 0
    # The item columns share no memory with the frames: keeping the keys alone does
    # not keep a batch of frames alive.
    frames = a["img"].untyped_storage()
    assert a.keys.untyped_storage().data_ptr() != frames.data_ptr()
    assert a.keys.untyped_storage().nbytes() < frames.nbytes()


@needs_numba
def test_a_disk_backed_table_samples_through_the_pass(tmp_path: Path) -> None:
    kw = {"sequence_length": 2, "frame_stack": {"img": (4, "zeros")}}
    on_disk = make(True, path=tmp_path / "t", **kw)
    plain = make(False, **kw)
    for t in (on_disk, plain):
        fill(t, 130, 3, 9)
    assert _sampling._stacked(on_disk) is not None
    for b in (1, 5, 32):
        assert_same(on_disk.sample(b), plain.sample(b))
