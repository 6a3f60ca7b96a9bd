"""The compiled frame-stack gather against the torch path, field by field.

``_frames`` serves a CPU table's sample with one compiled pass that copies every
field's bytes out of the storage's packed dtype groups. These tests build the same
table twice (compiled pass on, and off: the torch path) with fields that share a
group with stacked fields, several stacks with different ``k`` and padding, images,
ragged episodes and a wrapped ring, and require the two gathers to be equal for
every live row, in every layout of the sampled rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from replaydb import Spec, Table, _frames, _kernels

# uint8: two stacked image-like fields and a plain flag share one packed group;
# int64: a stacked id and a plain action; float32: a plain reward.
SPEC = Spec(
    {
        "img": ((3, 5), "uint8"),
        "flag": ((), "uint8"),
        "depth": ((2,), "uint8"),
        "ident": ((), "int64"),
        "action": ((2,), "int64"),
        "reward": ((), "float32"),
    }
)

needs_numba = pytest.mark.skipif(_kernels.get() is None, reason="numba not installed")


@pytest.fixture(autouse=True)
def _restore_kernels() -> Iterator[None]:
    yield
    _kernels.use(True)


def fill(table: Table, steps: int, streams: int, seed: int) -> None:
    """``steps`` interleaved steps with random episode ends; every value from the key."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < steps:
        n = int(min(rng.integers(1, 9), steps - done))
        key = np.arange(done, done + n)
        table.extend(
            {
                "img": torch.from_numpy((key[:, None, None] + np.arange(15).reshape(3, 5)) % 251)
                .to(torch.uint8)
                .contiguous(),
                "flag": torch.from_numpy(key % 7).to(torch.uint8),
                "depth": torch.from_numpy(np.stack([key % 5, key % 3], 1)).to(torch.uint8),
                "ident": torch.from_numpy(key + 1),
                "action": torch.from_numpy(np.stack([key, -key], 1)),
                "reward": torch.from_numpy(key * 0.5).float(),
            },
            streams=torch.from_numpy(rng.integers(0, streams, n)),
            ends=torch.from_numpy((rng.random(n) < 0.15).astype(np.int64)),
        )
        done += n


def twin(
    capacity: int, stack: dict[str, tuple[int, str]], compiled: bool, path: Path | None = None
) -> Table:
    _kernels.use(compiled)
    table = Table(SPEC, capacity, frame_stack=stack, path=path)
    _kernels.use(True)
    return table


STACKS = st.fixed_dictionaries(
    {
        "img": st.tuples(st.integers(1, 5), st.sampled_from(["first", "zeros"])),
        "depth": st.tuples(st.integers(1, 3), st.sampled_from(["first", "zeros"])),
        "ident": st.tuples(st.integers(1, 4), st.sampled_from(["first", "zeros"])),
    }
)


@needs_numba
@settings(max_examples=30, deadline=None)
@given(
    stack=STACKS,
    capacity=st.integers(4, 40),
    steps=st.integers(1, 120),
    streams=st.integers(1, 4),
    seed=st.integers(0, 10**6),
)
def test_compiled_pass_equals_the_torch_path(
    stack: dict[str, tuple[int, str]], capacity: int, steps: int, streams: int, seed: int
) -> None:
    fused, plain = twin(capacity, stack, True), twin(capacity, stack, False)
    for t in (fused, plain):
        fill(t, steps, streams, seed)
    assert _frames._plan(fused) is not None
    assert _frames._plan(plain) is None
    rows = torch.arange(min(steps, capacity))
    rng = np.random.default_rng(seed)
    for shaped in (rows, rows.flip(0).reshape(-1, 1), torch.from_numpy(rng.permutation(rows))):
        got, want = _frames.gather(fused, shaped), _frames.gather(plain, shaped)
        assert list(got) == list(want) == list(SPEC)
        for name in SPEC:
            assert got[name].dtype == want[name].dtype, name
            assert got[name].shape == want[name].shape, name
            assert torch.equal(got[name], want[name]), name


@needs_numba
def test_disk_backed_table_takes_the_compiled_pass(tmp_path: Path) -> None:
    stack = {"img": (4, "zeros"), "ident": (2, "first")}
    on_disk = twin(50, stack, True, tmp_path / "t")
    plain = twin(50, stack, False)
    for t in (on_disk, plain):
        fill(t, 130, 3, 7)
    assert _frames._plan(on_disk) is not None
    rows = torch.arange(50).reshape(5, 10)
    got, want = _frames.gather(on_disk, rows), _frames.gather(plain, rows)
    assert got["img"].shape == (5, 10, 4, 3, 5)
    for name in SPEC:
        assert torch.equal(got[name], want[name]), name


@needs_numba
def test_samples_are_fresh_tensors_and_empty_gathers_work() -> None:
    table = twin(20, {"img": (3, "first")}, True)
    fill(table, 20, 2, 1)
    a = table.sample(4)["img"]
    before = a.clone()
    b = table.sample(4)["img"]
    assert torch.equal(a, before)  # a later sample does not write into an earlier one
    assert a.data_ptr() != b.data_ptr()
    for name, t in _frames.gather(table, torch.arange(6)).items():
        assert t.is_contiguous(), name
        assert t.data_ptr() % 16 == 0, name
    empty = _frames.gather(table, torch.zeros(0, dtype=torch.int64))
    assert empty["img"].shape == (0, 3, 3, 5)
    assert empty["reward"].shape == (0,)


def test_info_reports_stride_final_step_and_frame_stack() -> None:
    plain = Table(SPEC, 10).info()
    assert (plain.stride, plain.final_step, plain.frame_stack) == (1, False, {})
    table = Table(
        SPEC,
        10,
        sequence_length=3,
        stride=2,
        pad=True,
        final_step=True,
        frame_stack={"img": 4, "ident": (2, "zeros")},
    )
    info = table.info()
    assert info.stride == 2 and info.final_step is True
    assert info.frame_stack == {"img": [4, "first"], "ident": [2, "zeros"]}
    assert info.frame_stack == table.config()["frame_stack"]


@needs_numba
def test_rows_outside_the_storage_are_refused() -> None:
    table = twin(20, {"img": (3, "first")}, True)
    fill(table, 20, 2, 1)
    for bad in (-1, 20):
        with pytest.raises(IndexError, match="outside the storage"):
            _frames.gather(table, torch.tensor([0, bad]))
