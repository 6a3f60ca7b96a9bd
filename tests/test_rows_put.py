"""The row writer's compiled writes (``put_row``/``put_rows``) against its torch/numpy path.

With numba, ``RowWriter.add`` copies its staging row and writes the records in one
kernel call, and ``RowWriter.extend`` copies C-contiguous columns straight from
their addresses into the ring with the records in the same call. Each must leave the
table as the path without kernels leaves it, for every form of input (contiguous or
not, 1-D columns of width 1, other dtypes, inputs that require grad, views of the
ring itself, blocks that wrap), uniform and prioritized, and refuse what the other
path refuses.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from replaydb import ReplayBuffer, Spec, Table, _kernels, _row_kernels
from replaydb.errors import InvalidArgumentError
from replaydb.samplers import Uniform

pytestmark = pytest.mark.skipif(_kernels.get() is None, reason="numba is not installed")

S, A, H = 3, 2, 2
KEYS = ("states", "actions", "rewards", "next_states", "dones", "hiddens")


@pytest.fixture(autouse=True)
def _restore_kernels() -> Iterator[None]:
    yield
    _kernels.use(True)


def buffer(prioritized: bool, capacity: int, kernels: bool) -> ReplayBuffer:
    _kernels.use(kernels)
    if prioritized:
        buf = ReplayBuffer.prioritized(capacity, S, A, H, seed=0)
    else:
        table = Table(ReplayBuffer.transition_spec(S, A, H), capacity, sampler=Uniform(seed=0))
        buf = ReplayBuffer(capacity, S, A, H, table=table)
    _kernels.use(True)
    assert buf.table.row_writer() is not None
    return buf


def same_state(a: Table, b: Table) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert a.total_steps_written == b.total_steps_written
    assert len(a) == len(b)
    assert a.rate_limiter.inserts == b.rate_limiter.inserts


def block(start: int, n: int, form: str) -> tuple[torch.Tensor, ...]:
    """add_multi's arguments for steps start .. start + n - 1, in a given form."""
    g = torch.Generator().manual_seed(start * 131 + n)
    cols = {
        "states": torch.randn(n, S, generator=g),
        "actions": torch.randn(n, A, generator=g),
        "rewards": torch.randn(n, 1, generator=g),
        "next_states": torch.randn(n, S, generator=g),
        "dones": (torch.rand(n, 1, generator=g) < 0.3).float(),
        "hiddens": torch.randn(n, H, generator=g),
    }
    if form == "one_d":  # rewards and dones as [n]
        cols["rewards"] = cols["rewards"][:, 0].contiguous()
        cols["dones"] = cols["dones"][:, 0].contiguous()
    elif form == "strided":  # a column that is not C-contiguous: torch's path
        cols["states"] = torch.randn(S, n, generator=g).t()
    elif form == "float64":  # another dtype: torch's path (or the checked one)
        cols["next_states"] = cols["next_states"].double()
    elif form == "grad":
        cols["hiddens"] = cols["hiddens"].requires_grad_()
    return tuple(cols[k] for k in KEYS)


@pytest.mark.parametrize("prioritized", [False, True])
@settings(max_examples=30, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(0, 9),
            st.sampled_from(["plain", "one_d", "strided", "float64", "grad", "no_hidden"]),
        ),
        min_size=1,
        max_size=10,
    ),
    capacity=st.integers(1, 12),
    removals=st.lists(st.integers(0, 40), max_size=3),
)
def test_compiled_writes_leave_the_state_the_torch_path_leaves(
    prioritized: bool, steps: list[tuple[int, str]], capacity: int, removals: list[int]
) -> None:
    """Adds (n = 0) and blocks of every form, wrapping, with removals between them."""
    ours = buffer(prioritized, capacity, kernels=True)
    ref = buffer(prioritized, capacity, kernels=False)
    start = 0
    for i, (n, form) in enumerate(steps):
        if n == 0:
            s, a, r, s2, d, h = block(start, 1, "plain")
            for buf in (ours, ref):
                buf.add(s[0], a[0], float(r[0, 0]), s2[0], bool(d[0, 0]), h[0])
            n = 1
        else:
            args = block(start, n, "plain" if form == "no_hidden" else form)
            if form == "no_hidden":
                args = args[:5]
            for buf in (ours, ref):
                buf.add_multi(*args)
        start += n
        if i < len(removals) and removals[i] < start:
            for buf in (ours, ref):
                buf.table.remove([removals[i]])
        same_state(ours.table, ref.table)


def test_contiguous_blocks_take_the_compiled_write() -> None:
    buf = ReplayBuffer(16, S, A, H)
    writer = buf._rows
    assert writer is not None and writer._put is not None
    args = block(0, 4, "plain")
    cols = (args[0], args[1], args[3], args[5], args[2], args[4])
    assert type(writer._sources(cols, 4)) is tuple  # the compiled write applies
    assert writer._sources((cols[0], cols[1].t(), *cols[2:]), 4) is None  # wrong shape
    strided = (torch.randn(S, 4).t(), *cols[1:])
    assert writer._sources(strided, 4) is True  # torch's path
    one = tuple(c[:1] for c in cols)
    assert writer._sources(one, 1) is True  # a single row: torch's path
    buf.add_multi(*args)
    assert torch.equal(buf.states[:4], args[0]) and torch.equal(buf.dones[:4], args[4])
    assert buf.table.storage.key[:4].tolist() == [0, 1, 2, 3]
    assert len(buf) == 4 and buf.table.rate_limiter.inserts == 4


def test_columns_overlapping_the_rows_written_take_torch_s_path() -> None:
    """A source over the ring rows being written: the kernel writes nothing and
    torch's concatenation decides, as without kernels."""
    results = []
    for kernels in (True, False):
        _kernels.use(kernels)
        table = Table(Spec({"x": (4,)}), 8, sampler=Uniform(seed=0))
        _kernels.use(True)
        writer = table.row_writer()
        assert writer is not None
        assert writer.extend((torch.arange(24.0).view(6, 4),), 6)
        ring = table.storage.groups[torch.float32]
        # rows 6, 7 are written from rows 5, 6: the source overlaps the target rows
        ok = writer.extend((ring[5:7],), 2)
        results.append((ok, table.state_dict()))
        # rows 0, 1 (after the wrap) from rows 2, 3: no overlap, the kernel copies
        assert writer.extend((ring[2:4].clone(),), 2) if ok else True
    (ok1, s1), (ok2, s2) = results
    assert ok1 == ok2
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_add_multi_of_rows_of_its_own_storage_with_kernels() -> None:
    """Contiguous views of the ring that do not overlap the target rows."""
    table = Table(ReplayBuffer.transition_spec(S, A, 0), 8)
    buf = ReplayBuffer(8, S, A, 0, table=table)
    for i in range(4):
        buf.add(torch.full((S,), float(i)), torch.full((A,), i + 0.5), i, torch.ones(S), False)
    packed = table.storage.groups[torch.float32]
    writer = table.row_writer()
    assert writer is not None
    assert writer.extend((packed[:4],), 4)  # one contiguous column of the full width
    assert torch.equal(packed[4:8], packed[:4])
    assert table.storage.key.tolist() == list(range(8))


def test_expect_checks_its_widths() -> None:
    table = Table(Spec({"x": (4,), "y": (1,)}), 8)
    writer = table.row_writer()
    assert writer is not None
    for bad in [(4,), (4, 2), (4, -1, 2), (4.0, 1), (True, 4)]:
        with pytest.raises(InvalidArgumentError, match=r"widths must be ints >= 0 .* 5"):
            writer.expect(bad)  # type: ignore[arg-type]
    writer.expect((2, 0, 2, 1))
    z = torch.zeros
    before = table.state_dict()
    assert not writer.extend((z(3, 2), z(3, 0), z(3, 3), z(3, 1)), 3)  # 3rd: width 3
    assert not writer.extend((z(3, 2), z(3, 0), z(3, 2)), 3)  # a column short
    assert not writer.extend([z(3, 2), z(3, 0), z(3, 2), z(3)], 3)  # type: ignore[arg-type]
    assert not writer.extend((z(3, 2), z(3, 0), z(3, 2), np.zeros(3)), 3)  # type: ignore[arg-type]
    assert not writer.extend((z(3, 2), z(3, 0), z(3, 2), z(2)), 3)  # [n] of the wrong n
    after = table.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    x = torch.arange(12.0).view(3, 4)
    assert writer.extend((x[:, :2].contiguous(), z(3, 0), x[:, 2:].contiguous(), -z(3)), 3)
    assert torch.equal(table.storage.groups[torch.float32][:3], torch.cat([x, z(3, 1)], 1))


@pytest.mark.parametrize("kernels", [True, False])
def test_declared_columns_that_require_grad(kernels: bool) -> None:
    """With the compiled write their data is written (as detach); torch refuses them."""
    _kernels.use(kernels)
    table = Table(Spec({"x": (2,), "y": (1,)}), 8)
    _kernels.use(True)
    writer = table.row_writer()
    assert writer is not None
    writer.expect((2, 1))
    x = torch.ones(3, 2, requires_grad=True)
    assert writer.extend((x, torch.zeros(3)), 3) is kernels
    assert len(table) == (3 if kernels else 0)


def test_single_adds_with_kernels_match_without() -> None:
    for prioritized in (False, True):
        ours = buffer(prioritized, 5, kernels=True)
        ref = buffer(prioritized, 5, kernels=False)
        assert ours._rows is not None and ours._rows._put_row is not None
        assert ref._rows is not None and ref._rows._put_row is None
        for i in range(13):
            s, a, r, s2, _, h = block(i, 1, "plain")
            for buf in (ours, ref):
                buf.add(s[0], a[0], float(r[0, 0]), s2[0], i % 3 == 0, h[0])
            if i == 7:
                for buf in (ours, ref):
                    buf.table.remove([5])
            same_state(ours.table, ref.table)


def step_args(i: int, form: str, buf: ReplayBuffer) -> tuple[object, ...]:
    """add's arguments for step i in a given form (the same values on every buffer)."""
    g = torch.Generator().manual_seed(i)
    s, a, s2, h = (torch.randn(k, generator=g) for k in (S, A, S, H))
    r: object = float(torch.randn(1, generator=g))
    d: object = i % 3 == 0
    if form == "strided":
        s = torch.randn(S, 2, generator=g)[:, 0]
    elif form == "float64":
        s2 = s2.double()
    elif form == "row":  # (1, dim) parts, as agents pass them
        s, a, s2, h = (x.unsqueeze(0) for x in (s, a, s2, h))
    elif form == "grad":
        h = h.requires_grad_()
    elif form == "int_numbers":
        r, d = i - 3, 1
    elif form == "big_int":
        r = (1 << 24) + 1 + i  # not exact in float32: add's numpy store rounds it
    elif form == "numpy_number":
        r = np.float32(r)
    elif form == "own_rows" and len(buf) > 0:  # views of the row about to be written
        row = buf.table.total_steps_written % buf.capacity
        s, s2 = buf.next_states[row], buf.states[row]
    return (s, a, r, s2, d, h)


@pytest.mark.parametrize("prioritized", [False, True])
@settings(max_examples=30, deadline=None)
@given(
    forms=st.lists(
        st.sampled_from(
            [
                "plain",
                "strided",
                "float64",
                "row",
                "grad",
                "int_numbers",
                "big_int",
                "numpy_number",
                "own_rows",
            ]
        ),
        min_size=1,
        max_size=12,
    ),
    capacity=st.integers(1, 6),
)
def test_single_adds_of_every_form_match_without_kernels(
    prioritized: bool, forms: list[str], capacity: int
) -> None:
    ours = buffer(prioritized, capacity, kernels=True)
    ref = buffer(prioritized, capacity, kernels=False)
    assert ours._rows is not None and ours._rows._put_step is not None
    assert ref._rows is not None and ref._rows._put_step is None
    for i, form in enumerate(forms):
        ours.add(*step_args(i, form, ours))
        ref.add(*step_args(i, form, ref))
        same_state(ours.table, ref.table)


def test_single_adds_of_one_element_parts_with_the_negative_bit() -> None:
    """A 1-element part can be contiguous with torch's negative bit: resolved."""
    bufs = []
    for kernels in (True, False):
        _kernels.use(kernels)
        bufs.append(ReplayBuffer(4, 2, 1, 0))
        _kernels.use(True)
    act = torch.tensor([1 + 2j], dtype=torch.complex64).conj().imag
    assert act.is_neg() and act.is_contiguous()
    for buf in bufs:
        buf.add(torch.ones(2), act, 1.0, torch.ones(2), False)
        assert buf.actions[0].tolist() == [-2.0]


def test_add_numbers_float32_cannot_hold_go_through_numpy() -> None:
    for kernels in (True, False):
        _kernels.use(kernels)
        buf = ReplayBuffer(4, 2, 1, 0)
        _kernels.use(True)
        with pytest.warns(RuntimeWarning, match="overflow"):
            buf.add(torch.ones(2), torch.ones(1), 1e40, torch.ones(2), False)
        assert buf.rewards[0].item() == float("inf")


def test_expect_step_checks_its_sizes() -> None:
    table = Table(Spec({"x": (4,), "y": (3,)}), 8)
    writer = table.row_writer(scalars=2)
    assert writer is not None
    for bad in [(2, 1, 2), (2, 1, 1, 2), (2, 1, 2, -1), (2, 1, 2.0, 0), (True, 1, 2, 0)]:
        with pytest.raises(InvalidArgumentError, match=r"sizes must be 4 ints >= 0 .* \(5\)"):
            writer.expect_step(bad)  # type: ignore[arg-type]
    other = table.row_writer(scalars=1)
    assert other is not None
    with pytest.raises(InvalidArgumentError, match="scalars=1"):
        other.expect_step((2, 1, 2, 1))
    writer.expect_step((2, 1, 2, 0))
    z = torch.zeros
    before = table.state_dict()
    assert not writer.add_step(z(2), z(1), z(3), z(0), 1.0, 0.0)  # 3rd part: 3
    assert not writer.add_step(z(2), z(1), z(1, 2), z(0), 1.0, 0.0)  # (1, 2): not 1-D
    assert not writer.add_step(z(2), np.zeros(1), z(2), z(0), 1.0, 0.0)  # type: ignore[arg-type]
    assert not writer.add_step(z(2), z(1), z(2), z(0), "x", 0.0)  # not a number
    after = table.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert writer.add_step(z(2) + 1, z(1) + 2, z(2) + 3, z(0), 4.0, True)
    assert table.storage.groups[torch.float32][0].tolist() == [1, 1, 2, 3, 3, 4, 1]


def test_the_kernels_write_nothing_for_widths_that_do_not_fill_the_row() -> None:
    table = Table(Spec({"x": (4,)}), 8, sampler=Uniform(seed=0))
    writer = table.row_writer()
    assert writer is not None and writer._put is not None
    x = torch.ones(2, 4)
    before = table.state_dict()
    ctx = writer._ctx.copy()
    ctx[_row_kernels.CTX_WIDTHS] = 3  # one word short of the row
    assert writer._put(ctx, 2, 0, 1.0, 1, x.data_ptr(), 0, 0, 0, 0, 0) == -1
    ctx[_row_kernels.CTX_WIDTHS] = 4
    for cols in (-1, _row_kernels.MAX_COLUMNS + 1):
        assert writer._put(ctx, 2, 0, 1.0, cols, x.data_ptr(), 0, 0, 0, 0, 0) == -1
    assert writer._kernel_step is not None  # sizes never declared: all zero
    assert writer._kernel_step(ctx, 0, 1.0, x.data_ptr(), 0, 0, 0, 1.0, 0.0) == -1
    after = table.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert writer._put(ctx, 2, 0, 1.0, 1, x.data_ptr(), 0, 0, 0, 0, 0) == 2  # fresh slots
    assert torch.equal(table.storage.groups[torch.float32][:2], x)
