"""Input validation of the core: every bad argument is a replaydb error raised before any work.

Regression tests for issue 11 items 3, 9, 10 and 11 (torn rows, wrong exception types,
messages that do not name the argument, bad input silently accepted) and issue 14
item 2 (memory preflight). Each rejected call must leave the table exactly as it was.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from replaydb import _kernels, storage
from replaydb.errors import (
    DeviceError,
    InsufficientMemoryError,
    InvalidArgumentError,
    InvalidTypeError,
    ReplayError,
    SpecMismatchError,
)
from replaydb.rate_limiters import RateLimiter, SampleToInsertRatio
from replaydb.samplers import Prioritized, Uniform
from replaydb.spec import Spec
from replaydb.storage import MEMORY_CHECK_ENV, Storage, available_memory, check_memory
from replaydb.sum_tree import SumTree
from replaydb.table import Table

SPEC = Spec({"obs": ((2,), "float32"), "step": ((), "int64")})


def batch(n: int, start: int = 0) -> dict[str, torch.Tensor]:
    v = torch.arange(start, start + n)
    return {"obs": torch.stack([v.float(), -v.float()], 1), "step": v}


def state(table: Table) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in table.state_dict().items() if k != "sampler.rng"}


def assert_unchanged(table: Table, before: dict[str, torch.Tensor]) -> None:
    after = state(table)
    assert after.keys() == before.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k


@pytest.fixture(autouse=True)
def _restore_kernels() -> Iterator[None]:
    yield
    _kernels.use(True)


# ------------------------------------------------------------ item 3: torn rows
# kind -> (a bad batch of n values for the int64 field "step", one bad value, message)
BAD_FIELD_VALUES: dict[str, tuple[Callable[[int], Any], Callable[[], Any], str]] = {
    "sparse": (
        lambda n: torch.ones(n, dtype=torch.int64).to_sparse(),
        lambda: torch.ones((), dtype=torch.int64).to_sparse(),
        "layout torch.sparse_coo",
    ),
    "meta": (
        lambda n: torch.ones(n, dtype=torch.int64, device="meta"),
        lambda: torch.ones((), dtype=torch.int64, device="meta"),
        "meta device",
    ),
    "string": (lambda n: ["x"] * n, lambda: "x", "cannot convert"),
    "complex": (
        lambda n: torch.ones(n, dtype=torch.complex64),
        lambda: torch.ones((), dtype=torch.complex64),
        "complex",
    ),
    "object": (lambda n: np.array([object()] * n), lambda: object(), "cannot convert"),
    "none": (lambda n: None, lambda: None, "cannot convert NoneType"),
    "float_into_int": (lambda n: torch.full((n,), 0.5), lambda: 0.5, "floats are not cast"),
    "uint64_too_big": (
        lambda n: np.full(n, 2**63, dtype=np.uint64),
        lambda: np.array(2**63, dtype=np.uint64),
        "does not fit dtype int64",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_FIELD_VALUES))
@pytest.mark.parametrize("sequence_length", [1, 3])
def test_a_bad_last_field_leaves_a_full_table_unchanged(
    kind: str, sequence_length: int, device: torch.device
) -> None:
    make_batch, make_one, message = BAD_FIELD_VALUES[kind]
    table = Table(SPEC, 6, sequence_length=sequence_length, device=device)
    table.extend(batch(6))  # full: the next write would overwrite row 0
    before = state(table)
    with pytest.raises(SpecMismatchError, match=f"field 'step'.*{message}"):
        table.extend({"obs": torch.full((2, 2), 99.0), "step": make_batch(2)})
    assert_unchanged(table, before)
    assert table.storage.fields["obs"][0].tolist() == [0.0, -0.0]
    with pytest.raises(SpecMismatchError, match=f"field 'step'.*{message}"):
        table.insert({"obs": [99.0, 99.0], "step": make_one()})
    assert_unchanged(table, before)


def test_a_value_out_of_range_leaves_a_full_table_unchanged() -> None:
    table = Table(Spec({"obs": (2,), "pixel": ((), "uint8")}), 4)
    table.extend({"obs": torch.zeros(4, 2), "pixel": torch.arange(4)})
    before = state(table)
    with pytest.raises(SpecMismatchError, match="field 'pixel': value 300"):
        table.extend({"obs": torch.ones(2, 2), "pixel": torch.tensor([1, 300])})
    assert_unchanged(table, before)


def test_sparse_tensor_message_says_how_to_fix() -> None:
    table = Table(Spec({"a": (2,), "b": (2,)}), 2)
    table.extend({"a": torch.ones(2, 2), "b": torch.ones(2, 2)})
    with pytest.raises(SpecMismatchError, match=r"field 'b'.*sparse_coo.*to_dense"):
        table.extend({"a": torch.full((1, 2), 7.0), "b": torch.ones(1, 2).to_sparse()})
    assert table.storage.fields["a"][0].tolist() == [1.0, 1.0]


# --------------------------------------------- item 9: wrong exception types
@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda t: t.extend(None), "steps must be a mapping.*NoneType"),
        (lambda t: t.extend([1, 2]), "steps must be a mapping.*list"),
        (lambda t: t.extend(torch.ones(3, 2)), "steps must be a mapping.*Tensor"),
        (lambda t: t.insert(None), "step must be a mapping.*NoneType"),
        (lambda t: t.insert("obs"), "step must be a mapping.*str"),
        (lambda t: t.extend(batch(2), ends="x"), "ends must be.*'x'"),
        (lambda t: t.extend(batch(2), streams="x"), "streams must be.*'x'"),
        (lambda t: t.insert({"obs": [1.0, 2.0], "step": 1}, end="x"), "ends must be.*'x'"),
        (lambda t: t.extend(batch(2), timeout="x"), "timeout must be.*'x'"),
        (lambda t: t.insert({"obs": [1.0, 2.0], "step": 1}, timeout="x"), "timeout must be"),
        (lambda t: t.sample(1, timeout="x"), "timeout must be.*'x'"),
        (lambda t: t.sample(1, timeout=[1]), "timeout must be"),
        (lambda t: t.extend(batch(2), priorities="high"), "priorities must be real numbers"),
        (lambda t: t.update_priorities(None, [1.0]), r"keys must be.*None"),
        (lambda t: t.update_priorities(["a"], [1.0]), r"keys must be.*\['a'\]"),
        (lambda t: t.update_priorities([True], [1.0]), r"keys must be"),
        (lambda t: t.update_priorities([0], ["x"]), r"priorities must be real numbers"),
        (lambda t: t.update_priorities([0], None), r"priorities must be real numbers"),
        (lambda t: t.update_priorities(torch.tensor([True]), [1.0]), r"keys must be"),
    ],
)
def test_arguments_of_the_wrong_kind_are_type_errors_naming_the_argument(
    call: Callable[[Table], Any], match: str
) -> None:
    table = Table(SPEC, 8, sampler=Prioritized(seed=0))
    table.extend(batch(4))
    before = state(table)
    with pytest.raises(InvalidTypeError, match=match) as info:
        call(table)
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, ValueError)
    assert_unchanged(table, before)


class MappingLike:
    """A TensorDict-like batch: keys, items and values, but not a registered Mapping."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def keys(self) -> Any:
        return self._data.keys()

    def values(self) -> Any:
        return self._data.values()

    def items(self) -> Any:
        return self._data.items()

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)


def test_mapping_like_batches_such_as_tensordicts_are_still_accepted() -> None:
    table = Table(SPEC, 8)
    table.extend(MappingLike(batch(3)))  # type: ignore[arg-type]
    table.insert(MappingLike({"obs": [1.0, 2.0], "step": 7}))  # type: ignore[arg-type]
    assert table.num_steps == 4


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"sampler": "uniform"}, InvalidTypeError, r"sampler must be.*Uniform\(\).*'uniform'"),
        ({"rate_limiter": "x"}, InvalidTypeError, r"rate_limiter must be.*'x'"),
        ({"device": "garbage"}, DeviceError, "device 'garbage' is not a device"),
        ({"device": 3.5}, InvalidTypeError, "device must be"),
        ({"device": "meta"}, DeviceError, "meta device holds no data"),
        ({"name": 5}, InvalidTypeError, "name must be a string"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        Table(SPEC, 4, **kwargs)


def test_bad_spec_kind_is_a_type_error() -> None:
    with pytest.raises(InvalidTypeError, match="spec must be a Spec or a mapping"):
        Table(None, 4)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(DeviceError, match=r"CUDA is not available.*device='cpu'"):
        Table(SPEC, 4, device="cuda")


def test_huge_capacity_is_a_memory_error_before_allocating() -> None:
    t0 = time.monotonic()
    with pytest.raises(InsufficientMemoryError, match=r"capacity=4611686018427387904") as info:
        Table(SPEC, 2**62)
    assert isinstance(info.value, MemoryError) and isinstance(info.value, ReplayError)
    assert time.monotonic() - t0 < 1.0


def test_huge_sample_is_a_memory_error_naming_batch_size() -> None:
    table = Table(SPEC, 8)
    table.extend(batch(4))
    before = state(table)
    t0 = time.monotonic()
    with pytest.raises(InsufficientMemoryError, match=r"batch_size=1000000000000.*fewer items"):
        table.sample(10**12)
    assert time.monotonic() - t0 < 1.0
    assert_unchanged(table, before)
    assert table.rate_limiter.samples == 0


@pytest.mark.parametrize("sampler", [Uniform, Prioritized])
@pytest.mark.parametrize(
    ("seed", "match"),
    [("x", r"seed must be.*'x' \(str\)"), (2**70, "seed must be.*2\\*\\*64"), (True, "seed")],
)
def test_bad_seeds_fail_at_construction_naming_seed(sampler: type, seed: Any, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        sampler(seed=seed)


def test_good_seeds_still_work() -> None:
    for seed in (0, 2**64 - 1, np.int64(7)):
        t = Table(SPEC, 4, sampler=Uniform(seed=seed))  # type: ignore[arg-type]
        t.extend(batch(2))
        assert len(t.sample(3)) == 3


# ------------------------------------------------- item 10: named arguments
@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: SampleToInsertRatio("x", 1, 4.0), r"samples_per_insert must be a number.*'x'"),  # type: ignore[arg-type]
        (lambda: SampleToInsertRatio(1.0, "x", 4.0), r"min_size_to_sample must be.*'x'"),  # type: ignore[arg-type]
        (lambda: SampleToInsertRatio(1.0, 1, "x"), r"error_buffer must be a number.*'x'"),  # type: ignore[arg-type]
        (lambda: SampleToInsertRatio(1.0, 1, (0.0,)), r"error_buffer must be.*pair"),  # type: ignore[arg-type]
        (lambda: SampleToInsertRatio(1.0, 1, (0.0, "x")), r"error_buffer\[1\]"),  # type: ignore[arg-type]
        (lambda: SampleToInsertRatio(math.nan, 1, 4.0), r"samples_per_insert must be a number"),
        (lambda: RateLimiter(1.0, 1, "lo", 1.0), r"min_diff must be a number.*'lo'"),  # type: ignore[arg-type]
        (lambda: RateLimiter(1.0, 1, 0.0, None), r"max_diff must be a number.*None"),  # type: ignore[arg-type]
        (lambda: RateLimiter(math.inf, 1, 0.0, 1.0), r"samples_per_insert must be a finite"),
    ],
)
def test_rate_limiter_messages_name_the_argument(make: Callable[[], Any], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        make()


@pytest.mark.parametrize("timeout", [-1, math.nan])
def test_negative_or_nan_timeouts_are_rejected(timeout: float) -> None:
    table = Table(SPEC, 4)
    table.extend(batch(2))
    with pytest.raises(InvalidArgumentError, match="timeout must be None or a number >= 0"):
        table.sample(1, timeout=timeout)
    with pytest.raises(InvalidArgumentError, match="timeout must be None or a number >= 0"):
        table.extend(batch(1), timeout=timeout)
    assert len(table) == 2


# ------------------------------------------------------- item 11: lossy casts
U8 = Spec({"x": ((), "uint8")})


def test_int64_300_into_uint8_is_rejected_unless_cast_unsafe(device: torch.device) -> None:
    table = Table(U8, 4, device=device)
    with pytest.raises(SpecMismatchError, match=r"field 'x': value 300 does not fit dtype uint8"):
        table.extend({"x": torch.tensor([3, 300])})
    with pytest.raises(SpecMismatchError, match=r"value -1 does not fit"):
        table.insert({"x": torch.tensor(-1)})
    assert table.num_steps == 0
    table.extend({"x": torch.tensor([3, 255])})  # fits: stored as is
    table.extend({"x": torch.tensor([300])}, cast="unsafe")
    table.insert({"x": np.int64(257)}, cast="unsafe")
    assert table.storage.fields["x"][:4].tolist() == [3, 255, 44, 1]


def test_bad_cast_value_is_rejected() -> None:
    table = Table(U8, 4)
    with pytest.raises(InvalidArgumentError, match=r"cast must be 'checked'.*'sometimes'"):
        table.extend({"x": torch.tensor([1])}, cast="sometimes")


def test_float_into_int_is_allowed_only_with_cast_unsafe() -> None:
    table = Table(Spec({"a": ((), "int64")}), 4)
    with pytest.raises(SpecMismatchError, match=r"floats are not cast to integers.*cast='unsafe'"):
        table.extend({"a": torch.tensor([1.7])})
    table.extend({"a": torch.tensor([1.7])}, cast="unsafe")
    assert table.storage.fields["a"][0].item() == 1


def test_ints_into_bool_fields_must_be_zero_or_one() -> None:
    table = Table(Spec({"done": ((), "bool")}), 4)
    table.extend({"done": torch.tensor([0, 1])})
    with pytest.raises(SpecMismatchError, match="value 2 does not fit dtype bool"):
        table.extend({"done": np.array([1, 2])})
    assert table.storage.fields["done"][:2].tolist() == [False, True]


def test_float64_overflowing_float32_is_rejected_but_inf_stays_inf() -> None:
    table = Table(Spec({"r": ()}), 4)
    with pytest.raises(SpecMismatchError, match=r"value 1e\+39 overflows dtype float32"):
        table.extend({"r": np.array([1.0, 1e39])})
    table.extend({"r": np.array([1.0, np.inf, -np.inf])})  # no finite value changes into inf
    table.extend({"r": np.array([1e39])}, cast="unsafe")
    assert table.storage.fields["r"][:4].tolist() == [1.0, math.inf, -math.inf, math.inf]


def test_narrowing_float_checks_overflow_not_sums() -> None:
    half = Table(Spec({"h": ((), "float16")}), 4)
    with pytest.raises(SpecMismatchError, match=r"value 70000\.0 overflows dtype float16"):
        half.extend({"h": torch.tensor([1.0, 70000.0])})
    half.extend({"h": torch.tensor([60000.0, 60000.0])})  # their sum overflows float16
    big = Table(Spec({"f": ()}), 4)
    big.extend({"f": np.full(4, 3e38)})  # each fits float32, their float32 sum does not
    assert big.storage.fields["f"].tolist() == pytest.approx([3e38] * 4, rel=1e-6)
    big.extend({"f": np.array([math.nan])})
    assert math.isnan(big.storage.fields["f"][0].item())


INT_DTYPES = ["uint8", "int8", "int16", "int32", "bool"]


@pytest.mark.parametrize("numba", [True, False])
@settings(max_examples=30, deadline=None)
@given(
    dst=st.sampled_from(INT_DTYPES),
    values=st.lists(st.integers(-(2**40), 2**40) | st.integers(-3, 300), min_size=1, max_size=6),
)
def test_checked_integer_casts_store_exactly_or_raise(
    numba: bool, dst: str, values: list[int]
) -> None:
    """Reference model: a value is accepted iff it fits the field's dtype, then stored exactly.

    Both paths: the compiled one-pass cast and the torch fallback.
    """
    _kernels.use(numba)
    lo, hi = (0, 1) if dst == "bool" else (np.iinfo(dst).min, np.iinfo(dst).max)
    table = Table(Spec({"x": ((), dst)}), 8)
    src = torch.tensor(values, dtype=torch.int64)
    if all(lo <= v <= hi for v in values):
        table.extend({"x": src})
        stored = table.storage.fields["x"][: len(values)].to(torch.int64).tolist()
        assert stored == values
    else:
        with pytest.raises(SpecMismatchError, match=f"does not fit dtype {dst}"):
            table.extend({"x": src})
        assert table.num_steps == 0


# -------------------------------------------- item 11: keys and priorities
@pytest.fixture(params=["numba", "numpy", pytest.param("cuda", marks=pytest.mark.gpu)])
def path(request: pytest.FixtureRequest) -> str:
    """The three update paths: compiled kernels, numpy views (CPU), torch (GPU)."""
    return str(request.param)


def _prioritized_table(path: str = "numba") -> Table:
    _kernels.use(path == "numba")
    device = "cuda" if path == "cuda" else "cpu"
    table = Table(
        Spec({"x": ()}), 8, sampler=Prioritized(alpha=1.0, eps=0.0, seed=0), device=device
    )
    _kernels.use(True)
    table.extend({"x": torch.zeros(6)})
    return table


@pytest.mark.parametrize(
    "keys", [[0.5, 4.5], np.array([0.0, 4.5]), torch.tensor([0.5, 4.0]), [math.nan, 1.0]]
)
def test_non_integral_keys_are_rejected(path: str, keys: Any) -> None:
    table = _prioritized_table(path)
    before = state(table)
    with pytest.raises(InvalidArgumentError, match="keys must be whole numbers"):
        table.update_priorities(keys, [2.0, 3.0])
    assert_unchanged(table, before)


def test_integral_float_keys_are_accepted() -> None:
    table = _prioritized_table()
    assert table.update_priorities([0.0, 4.0], [2.0, 3.0]) == 2
    assert table.update_priorities(torch.tensor([1], dtype=torch.int32), [5.0]) == 1
    assert table.update_priorities(np.array([2], dtype=np.uint16), [6.0]) == 1
    assert table._priority[:6].tolist() == [2.0, 5.0, 6.0, 1.0, 3.0, 1.0]


@pytest.mark.parametrize("how", ["update", "extend", "insert"])
def test_priorities_that_would_overflow_the_sum_tree_are_rejected(path: str, how: str) -> None:
    table = _prioritized_table(path)
    sampler = table.sampler
    assert isinstance(sampler, Prioritized)
    before = state(table)
    calls = {
        "update": lambda: table.update_priorities([0, 1, 2], [1e308, 1e308, 1e308]),
        "extend": lambda: table.extend({"x": torch.zeros(2)}, priorities=1e308),
        "insert": lambda: table.insert({"x": 0.0}, priority=1e308),
    }
    with pytest.raises(InvalidArgumentError, match=r"priorities must be at most .*overflow"):
        calls[how]()
    assert_unchanged(table, before)
    assert math.isfinite(sampler.tree.total)


def test_a_tree_full_of_the_largest_priority_stays_finite(path: str) -> None:
    table = _prioritized_table(path)
    sampler = table.sampler
    assert isinstance(sampler, Prioritized)
    table.extend({"x": torch.zeros(2)})  # all 8 slots hold an item
    bound = sampler.priority_bound
    assert 1e300 < bound < 1.8e308 / 8
    assert (
        table.update_priorities(torch.arange(8), torch.full((8,), bound, dtype=torch.float64)) == 8
    )
    assert math.isfinite(sampler.tree.total)
    s = table.sample(64)
    assert bool(torch.isfinite(s.probabilities).all())
    assert len(set(s.keys.tolist())) > 1  # draws still spread over the items


def test_priority_bound_follows_alpha_eps_and_capacity() -> None:
    big = Prioritized(alpha=1.0, eps=0.0)
    big.bind(1000, torch.device("cpu"))
    # The tree sums at most `capacity` leaves.
    assert big.priority_bound == pytest.approx(sys.float_info.max / 1000, rel=1e-6)
    flat = Prioritized(alpha=0.0)
    flat.bind(4, torch.device("cpu"))
    assert flat.priority_bound == math.inf
    half = Prioritized(alpha=0.5)
    half.bind(4, torch.device("cpu"))
    assert half.priority_bound == math.inf  # sqrt(float64 max) * 4 cannot overflow
    table = Table(Spec({"x": ()}), 4, sampler=Uniform())
    table.extend({"x": torch.zeros(2)})
    assert table.update_priorities([0], [1e308]) == 1  # no sum to overflow


def test_sum_tree_rejects_leaves_whose_sum_could_overflow() -> None:
    tree = SumTree(4)
    with pytest.raises(InvalidArgumentError, match=r"values must be at most .*capacity 4"):
        tree.update(torch.tensor([0]), torch.tensor([1e308], dtype=torch.float64))
    assert tree.total == 0.0
    tree.update(torch.arange(4), torch.full((4,), tree.max_leaf, dtype=torch.float64))
    assert math.isfinite(tree.total)


# ------------------------------------------- issue 14 item 2: memory preflight
def test_memory_preflight_names_size_free_memory_and_alternatives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(storage._preflight, "available_memory", lambda device: 10 * 2**20)
    spec = Spec({"frame": ((84, 84), "uint8")})
    need = Storage.required_nbytes(spec, 10_000)
    assert need == 10_000 * (84 * 84 + 40)
    with pytest.raises(InsufficientMemoryError) as info:
        Table(spec, 10_000, name="atari")
    msg = str(info.value)
    assert "table 'atari'" in msg and "capacity=10000" in msg
    total = (need + 10_000 * 64) / 2**20  # storage plus the table's bookkeeping
    assert f"needs {total:.2f} MiB on cpu" in msg and "10.00 MiB is available" in msg
    assert "smaller capacity" in msg and "disk-backed storage" in msg and "path=DIR" in msg
    assert MEMORY_CHECK_ENV in msg
    with pytest.raises(InsufficientMemoryError, match="a storage of 10000 rows"):
        Storage(spec, 10_000)
    Table(spec, 1_000)  # 7 MiB fits


def test_memory_preflight_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage._preflight, "available_memory", lambda device: 1024)
    with pytest.raises(InsufficientMemoryError):
        Table(SPEC, 1000)
    monkeypatch.setenv(MEMORY_CHECK_ENV, "0")
    assert Table(SPEC, 1000).capacity == 1000


def test_memory_preflight_skips_when_free_memory_is_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(storage._preflight, "available_memory", lambda device: None)
    check_memory(2**80, torch.device("cpu"), "anything", "nothing")


def test_available_memory_reads_proc_meminfo_without_psutil(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil -> ImportError
    free = available_memory(torch.device("cpu"))
    if sys.platform == "linux":
        assert free is not None and free > 0
    assert available_memory(torch.device("meta")) is None


def test_gpu_preflight_uses_mem_get_info(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 * 2**30, 80 * 2**30))
    cuda = torch.device("cuda")
    assert available_memory(cuda) == 3 * 2**30
    check_memory(2**30, cuda, "a table", "use less")
    with pytest.raises(InsufficientMemoryError, match=r"needs 4.00 GiB on cuda, .*3.00 GiB"):
        check_memory(4 * 2**30, cuda, "a table", "use less")


@pytest.mark.gpu
def test_a_cuda_index_past_the_last_device_is_a_device_error() -> None:
    with pytest.raises(DeviceError, match=r"device 'cuda:99': this machine has \d+ CUDA device"):
        Table(SPEC, 4, device="cuda:99")


@pytest.mark.gpu
def test_a_table_larger_than_gpu_memory_is_rejected_before_allocating() -> None:
    free = available_memory(torch.device("cuda"))
    assert free is not None and free > 0
    rows = free // 1024 + 1024  # just over the free memory at 1 KiB a row
    t0 = time.monotonic()
    with pytest.raises(InsufficientMemoryError, match=r"on cuda.*is available"):
        Table(Spec({"x": ((1024,), "uint8")}), int(rows), device="cuda")
    assert time.monotonic() - t0 < 5.0


@pytest.mark.parametrize(
    "config",
    [
        None,
        {"type": ["Uniform"]},
        {"type": "Uniform", "sed": 3},
        {"type": "Prioritized", "alpha": "x"},
        {"type": "Uniform", "seed": "x"},
    ],
)
def test_bad_sampler_configs_are_invalid_argument_errors(config: Any) -> None:
    from replaydb.samplers import sampler_from_config

    with pytest.raises(InvalidArgumentError):
        sampler_from_config(config)


@pytest.mark.parametrize(
    "config",
    [
        5,
        {"type": {}},
        {"type": "MinSize", "size": 3},
        {
            "type": "RateLimiter",
            "samples_per_insert": 1,
            "min_size_to_sample": 1,
            "min_diff": "lots",
            "max_diff": "inf",
        },
        {"type": "Queue", "size": "x"},
    ],
)
def test_bad_rate_limiter_configs_are_invalid_argument_errors(config: Any) -> None:
    from replaydb.rate_limiters import rate_limiter_from_config

    with pytest.raises(InvalidArgumentError):
        rate_limiter_from_config(config)


def test_capacity_past_what_a_tensor_addresses_is_rejected_even_without_the_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(MEMORY_CHECK_ENV, "0")
    with pytest.raises(InvalidArgumentError, match="capacity 4611686018427387904 is too large"):
        Table(SPEC, 2**62)


@pytest.mark.parametrize("numba", [True, False])
def test_uint64_values_past_int64_are_rejected_on_both_paths(numba: bool) -> None:
    _kernels.use(numba)
    table = Table(Spec({"k": ((), "int64"), "b": ((), "uint8")}), 4)
    big = np.array([1, 2**63 + 5], dtype=np.uint64)
    with pytest.raises(SpecMismatchError, match=f"field 'k': value {2**63 + 5} does not fit"):
        table.extend({"k": big, "b": np.array([1, 2], dtype=np.uint64)})
    with pytest.raises(SpecMismatchError, match=f"field 'b': value {2**63 + 5} does not fit"):
        table.extend({"k": np.array([1, 2], dtype=np.uint64), "b": big})
    table.extend({"k": np.array([1, 2], dtype=np.uint64), "b": np.array([3, 255], dtype=np.uint64)})
    assert table.storage.fields["b"][:2].tolist() == [3, 255]
    assert table.num_steps == 2


@pytest.mark.parametrize("numba", [True, False])
@pytest.mark.parametrize(
    ("src", "dst", "big"),
    [
        (torch.float64, "float32", 1e39),
        (torch.float64, "float16", 1e5),
        (torch.float32, "float16", 1e5),
        (torch.bfloat16, "float16", 1e5),
        (torch.float64, "bfloat16", 1e300),
    ],
)
def test_float_narrowing_overflow_on_every_path(
    numba: bool, src: torch.dtype, dst: str, big: float
) -> None:
    _kernels.use(numba)
    table = Table(Spec({"f": ((2,), dst)}), 4)
    with pytest.raises(SpecMismatchError, match=f"field 'f': value .* overflows dtype {dst}"):
        table.extend({"f": torch.tensor([[1.0, big], [2.0, 3.0]], dtype=src)})
    assert table.num_steps == 0
    ok = torch.tensor([[1.5, -math.inf], [math.nan, 2.0]], dtype=src)
    table.extend({"f": ok})
    stored = table.storage.fields["f"][:2].to(torch.float64)
    assert torch.equal(stored.isnan(), ok.to(torch.float64).isnan())
    assert stored[0].tolist() == [1.5, -math.inf]
