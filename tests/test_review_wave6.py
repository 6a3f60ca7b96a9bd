"""Wave 6 review of wave 5's compiled paths: each test here failed on f1dc18f, or
guards an edge of those paths that nothing else checked (each checked to fail with
the code it guards broken).

The compiled writes of ``ReplayBuffer.add``/``add_multi`` must leave the table
*byte for byte* as the torch/numpy path leaves it (``torch.equal`` calls ``-0.0``
and ``0.0`` equal, so the comparisons here are of the raw bytes).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from replaydb import ReplayBuffer, Table, _kernels
from replaydb.samplers import Uniform

needs_numba = pytest.mark.skipif(_kernels.get() is None, reason="numba is not installed")

S, A, H = 3, 2, 1


@pytest.fixture(autouse=True)
def _restore_kernels() -> Iterator[None]:
    yield
    _kernels.use(True)


def buffer(capacity: int, kernels: bool, prioritized: bool = False) -> ReplayBuffer:
    """A buffer whose table was built with (or without) the compiled kernels."""
    _kernels.use(kernels)
    try:
        if prioritized:
            return ReplayBuffer.prioritized(capacity, S, A, H, seed=0)
        spec = ReplayBuffer.transition_spec(S, A, H)
        table = Table(spec, capacity, sampler=Uniform(seed=0))
        return ReplayBuffer(capacity, S, A, H, table=table)
    finally:
        _kernels.use(True)


def raw_state(table: Table) -> dict[str, bytes]:
    """The table's state_dict as raw bytes (``-0.0`` and NaN payloads included)."""
    return {k: v.contiguous().numpy().tobytes() for k, v in table.state_dict().items()}


def same_bytes(a: Table, b: Table) -> None:
    ra, rb = raw_state(a), raw_state(b)
    assert ra.keys() == rb.keys()
    for k in ra:
        assert ra[k] == rb[k], k
    assert (a.total_steps_written, len(a)) == (b.total_steps_written, len(b))


NUMBERS = st.one_of(
    st.floats(width=64, allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-45, -1e-45, 3.4028235e38, -3.4028235e38, 5e-324]),
    st.booleans(),
    st.integers(-(1 << 25), 1 << 25),
)


@needs_numba
@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.tuples(NUMBERS, NUMBERS), min_size=1, max_size=8))
def test_add_stores_the_bytes_of_rewards_and_dones_the_numpy_path_stores(
    steps: list[tuple[Any, Any]],
) -> None:
    """Bug (f1dc18f): the compiled ``add`` stored ``-0.0`` as ``+0.0`` (``x + 0.0``)."""
    ours, ref = buffer(4, kernels=True), buffer(4, kernels=False)
    for i, (r, d) in enumerate(steps):
        s = torch.full((S,), float(i))
        for buf in (ours, ref):
            buf.add(s, torch.ones(A), r, s + 1, d, torch.zeros(H))
        same_bytes(ours.table, ref.table)


@needs_numba
def test_a_negative_zero_reward_keeps_its_sign() -> None:
    for kernels in (True, False):
        buf = buffer(4, kernels)
        buf.add(torch.ones(S), torch.ones(A), -0.0, torch.ones(S), -0.0, torch.ones(H))
        assert math.copysign(1.0, float(buf.rewards[0, 0])) == -1.0, kernels
        assert math.copysign(1.0, float(buf.dones[0, 0])) == -1.0, kernels
        assert np.signbit(buf.rewards.numpy()[0, 0])


# ------------------------------------------------------------------ frame-stack samples
def _twins(**kw: Any) -> tuple[Table, Table]:
    from test_frames_sample import fill, make

    fused, plain = make(True, **kw), make(False, **kw)
    for t in (fused, plain):
        fill(t, 70, 2, 1)
    return fused, plain


@needs_numba
@pytest.mark.parametrize("max_times", [None, 3])
def test_stack_samples_read_late_hold_what_the_general_path_returned(
    max_times: int | None, tmp_path: Any
) -> None:
    """A StackSample's columns made on first read, long after the draw (later samples
    of the same size refill the kept slots; later writes overwrite the rows), and
    a never-read one pickled, saved and copied then, equal the general path's."""
    import copy
    import pickle

    from replaydb import _sampling
    from replaydb._frames import StackSample
    from test_frames_sample import assert_same, fill

    fused, plain = _twins(frame_stack={"img": 3}, sequence_length=2, max_times_sampled=max_times)
    assert _sampling._stacked(fused) is not None
    first = [(fused.sample(5), plain.sample(5)) for _ in range(3)]
    assert all(type(f) is StackSample for f, _ in first)
    for t in (fused, plain):
        fill(t, 50, 2, 9)  # overwrites the rows the first samples drew
    for _ in range(3):
        assert_same(fused.sample(5), plain.sample(5))
    (f0, p0), (f1, p1), (f2, p2) = first
    assert_same(f0, p0)  # columns first read now
    for other in (pickle.loads(pickle.dumps(f1)), copy.deepcopy(f1), copy.copy(f1)):
        assert_same(other, p1)
    torch.save(f2, tmp_path / "s.pt")
    assert_same(torch.load(tmp_path / "s.pt", weights_only=False), p2)
    assert_same(f2, p2)


# ------------------------------------------------------------------ shared tables
@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process plays a DataLoader worker (its own slot pool, removed after)."""
    import os

    import replaydb.shared._handle as handle_module
    from replaydb.shared import _batches

    monkeypatch.setattr(_batches, "_POOL", None)
    monkeypatch.setattr(handle_module, "get_worker_info", lambda: object())
    yield
    pool = _batches._POOL
    if pool is not None:
        pool.close()
        assert not os.path.exists(pool.dir)


def _remote_handle(table: Table) -> Any:
    import os
    import pickle

    handle = table.share()
    remote = pickle.loads(pickle.dumps(handle))
    remote.owner_pid = os.getppid()  # alive, and not us: every call goes through the socket
    return handle, remote


@pytest.mark.parametrize("change", ["reset", "remove", "overwrite"])
def test_a_worker_never_serves_items_drawn_ahead_of_a_reset_or_an_overwrite(
    worker: None, change: str
) -> None:
    """The 8 batches of one owner draw: after ``reset()`` (or a full lap of new
    steps) every batch still served holds only steps written after it, each with
    its own key; removed items' rows (not overwritten) are still served, as
    documented for draws ahead."""
    import replaydb.shared._handle as handle_module
    from replaydb.shared import memory_table
    from replaydb.spec import Spec

    table = memory_table(Spec({"x": ()}), 16, sampler=Uniform(seed=4))

    def write(n: int) -> set[int]:  # x is each step's key
        start = table.total_steps_written
        table.extend({"x": torch.arange(start, start + n, dtype=torch.float32)})
        return set(range(start, start + n))

    allowed = write(16)
    handle, remote = _remote_handle(table)
    try:
        first = remote.sample(4)  # queues the next AHEAD batches of the same draw
        assert set(first.keys.tolist()) <= allowed
        if change == "reset":
            table.reset()
            allowed = write(4)
        elif change == "overwrite":
            allowed = write(16)
        else:
            table.remove(list(range(8)))
        for _ in range(handle_module.AHEAD + 2):
            s = remote.sample(4, timeout=30)
            assert torch.equal(s["x"], s.keys.float()), (change, s["x"], s.keys)
            assert set(s.keys.tolist()) <= allowed, (change, s.keys)
    finally:
        handle.close()


# ------------------------------------------------------------------ whole-buffer twins
def _table_kwargs(kind: str) -> dict[str, Any]:
    from replaydb.rate_limiters import SampleToInsertRatio
    from replaydb.samplers import Prioritized

    if kind == "limited":
        limiter = SampleToInsertRatio(1.0, min_size_to_sample=2, error_buffer=3.0)
        return {"rate_limiter": limiter, "sampler": Uniform(seed=1)}
    if kind == "max_times":
        return {"max_times_sampled": 2, "sampler": Uniform(seed=1)}
    return {"max_times_sampled": 3, "sampler": Prioritized(alpha=0.6, seed=1)}


def _twin_buffer(kind: str, capacity: int, kernels: bool) -> ReplayBuffer:
    _kernels.use(kernels)
    try:
        table = Table(ReplayBuffer.transition_spec(S, A, H), capacity, **_table_kwargs(kind))
    finally:
        _kernels.use(True)
    return ReplayBuffer(capacity, S, A, H, table=table)


def _step(buf: ReplayBuffer, op: str, i: int) -> str:
    """One operation on ``buf``, the same values on every buffer; its outcome."""
    g = torch.Generator().manual_seed(i)
    n = 1 + i % 5
    cols = [torch.randn(n, w, generator=g) for w in (S, A, 1, S, 1, H)]
    cols[2][0, 0] = -0.0 if i % 2 else math.nan
    try:
        if op == "add":
            s, a, r, s2, _d, h = (c[0] for c in cols)
            buf.add(s, a, float(r), s2, -0.0 if i % 3 else 1.0, h)
        elif op == "add_grad":
            s, a, r, s2, _d, h = (c[0] for c in cols)
            buf.add(s.requires_grad_(), a, float(r), s2, True, h.requires_grad_())
        elif op == "add_multi":
            buf.add_multi(*cols)
        elif op == "add_multi_1d":
            buf.add_multi(cols[0], cols[1], cols[2][:, 0], cols[3], cols[4][:, 0], cols[5])
        elif op == "add_multi_grad":
            buf.add_multi(cols[0].requires_grad_(), *cols[1:5], cols[5].double())
        elif op == "sample":
            got = buf.table.sample(2, timeout=0)
            if i % 2 and getattr(buf.table.sampler, "alpha", None) is not None:
                buf.table.update_priorities(got.keys, torch.rand(2, generator=g) + 0.1)
        elif op == "remove":
            buf.table.remove([i % 7, i % 11])
    except Exception as exc:  # the outcome must match, whatever it is
        return f"{type(exc).__name__}: {exc}"
    return "ok"


@needs_numba
@pytest.mark.parametrize("kind", ["limited", "max_times", "prioritized"])
@settings(max_examples=25, deadline=None)
@given(
    ops=st.lists(
        st.sampled_from(
            ["add", "add_grad", "add_multi", "add_multi_1d", "add_multi_grad", "sample", "remove"]
        ),
        min_size=1,
        max_size=14,
    ),
    capacity=st.integers(2, 9),
)
def test_buffers_with_and_without_kernels_stay_byte_identical(
    kind: str, ops: list[str], capacity: int
) -> None:
    """Rate limits, ``max_times_sampled`` removals, prioritized max priorities,
    priority updates, grad, 1-D columns, other dtypes, wraps: the same outcome of
    every call and the same table bytes, with and without the compiled kernels."""
    ours = _twin_buffer(kind, capacity, kernels=True)
    ref = _twin_buffer(kind, capacity, kernels=False)
    for i, op in enumerate(ops):
        assert _step(ours, op, i) == _step(ref, op, i), op
        same_bytes(ours.table, ref.table)


@needs_numba
def test_a_table_written_by_the_compiled_path_saves_the_same_file(tmp_path: Any) -> None:
    from replaydb import load_table, save_table

    paths = []
    for kernels in (True, False):
        buf = _twin_buffer("prioritized", 6, kernels)
        for i, op in enumerate(["add", "add_multi", "sample", "add", "add_multi_1d", "add"]):
            assert _step(buf, op, i) == "ok"
        (tmp_path / str(kernels)).mkdir()
        path = save_table(buf.table, tmp_path / str(kernels) / "t")
        same_bytes(load_table(path), buf.table)
        paths.append(path)
    assert paths[0].read_bytes() == paths[1].read_bytes()


# ------------------------------------------------------------------ priority updates
PRIORITIES = st.one_of(
    st.floats(min_value=1e-30, max_value=1e30),
    st.sampled_from([0.0, -0.0, -1.0, math.nan, math.inf, -math.inf, 1e-45, 3.4e38, 1e300]),
)


@needs_numba
@settings(max_examples=40, deadline=None)
@given(
    capacity=st.integers(1, 12),
    written=st.integers(1, 30),
    keys=st.lists(st.integers(-2, 40), min_size=1, max_size=12),
    data=st.data(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    column=st.booleans(),
)
def test_update_priorities_short_path_matches_the_checked_path_bytes_and_errors(
    capacity: int, written: int, keys: list[int], data: Any, dtype: torch.dtype, column: bool
) -> None:
    """The compiled short path (CPU int64 keys, float32/64 priorities) against a
    table without kernels: the same count or the same error (type and text), and
    the same bytes after (priorities, sum tree, max priority), for stale and
    duplicate keys, zero, negative, NaN, infinite, float32-overflowing values."""
    from replaydb.samplers import Prioritized

    pri = data.draw(st.lists(PRIORITIES, min_size=len(keys), max_size=len(keys)))
    tables = []
    for kernels in (True, False):
        _kernels.use(kernels)
        try:
            t = Table({"x": ((2,), "float32")}, capacity, sampler=Prioritized(alpha=0.6, seed=2))
        finally:
            _kernels.use(True)
        t.extend({"x": torch.zeros(written, 2)})
        tables.append(t)
    k = torch.tensor(keys, dtype=torch.int64)
    with np.errstate(over="ignore"):
        p = torch.from_numpy(np.array(pri, dtype=np.float64).astype(dtype_np(dtype)))
    if column:
        k, p = k.view(-1, 1), p.view(-1, 1)
    outcomes = []
    for t in tables:
        try:
            outcomes.append(repr(t.update_priorities(k, p)))
        except Exception as exc:
            outcomes.append(f"{type(exc).__name__}: {exc}")
    assert outcomes[0] == outcomes[1]
    assert tables[0]._max_priority == tables[1]._max_priority
    same_bytes(tables[0], tables[1])


def dtype_np(dtype: torch.dtype) -> Any:
    return np.float32 if dtype is torch.float32 else np.float64


# ------------------------------------------------------------------ without numba
_WITHOUT_NUMBA = """
import sys
sys.modules["numba"] = None  # as on a machine where numba is not installed
import pytest, torch
from replaydb import ReplayBuffer, Table, _kernels
from replaydb.samplers import Prioritized
assert _kernels.get() is None
buf = ReplayBuffer.prioritized(16, 3, 2, 1)
buf.add(torch.ones(3), torch.ones(2), -0.0, torch.ones(3), False)
buf.add_multi(torch.ones(4, 3), torch.ones(4, 2), torch.ones(4), torch.ones(4, 3), torch.zeros(4))
s = buf.table.sample(3)
buf.table.update_priorities(s.keys, torch.rand(3) + 0.1)
t = Table({"img": ((2, 2), "uint8")}, 16, frame_stack={"img": 3})
t.extend({"img": torch.zeros(5, 2, 2, dtype=torch.uint8)})
assert t.sample(4)["img"].shape == (4, 3, 2, 2)
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "--collect-only", sys.argv[1]]))
"""


def test_without_numba_the_library_runs_and_its_docstring_tests_collect() -> None:
    """Bug (f1dc18f): ``tests/test_docstrings.py`` imported every module, the
    numba-only kernel modules too, so without numba (an optional dependency) the
    whole file failed to collect."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("REPLAYDB_NUMBA", None)
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_NUMBA, str(root / "tests" / "test_docstrings.py")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=root,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "tests collected" in done.stdout
