"""The front ends share one set of argument checks and constants.

The integer, number and timeout checks of the dataset, manager, writer, server,
collector and buffer are :mod:`replaydb._validate`'s: one message per check (the
argument, the value, the bound), numpy ints accepted where Python ints are, bools
never. The step types, end codes and torch -> numpy dtypes are
:mod:`replaydb._constants`'.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from replaydb import ReplayBuffer, Server, Table
from replaydb._constants import (
    END_NONE,
    END_TERMINATED,
    END_TRUNCATED,
    NUMPY_DTYPES,
    STEP_FIRST,
    STEP_LAST,
    STEP_MID,
)
from replaydb.collect import STEP_FIRST as COLLECT_FIRST
from replaydb.collect import STEP_LAST as COLLECT_LAST
from replaydb.collect import STEP_MID as COLLECT_MID
from replaydb.dataset import Dataset
from replaydb.errors import InvalidArgumentError, InvalidTypeError
from replaydb.manager._observer import FIRST, LAST, MID
from replaydb.spec import Spec
from replaydb.writer import Writer, numpy_dtype

SPEC = Spec({"x": ()})


def _client() -> Any:
    return Server(Table(SPEC, 16, sequence_length=2)).client()


#: ``(argument, make(value))``: a front-end call taking one int argument >= 1.
INT_ARGS: list[tuple[str, Callable[[Any], object]]] = [
    ("batch_size", lambda v: Dataset(_client(), v)),
    ("num_parallel_calls", lambda v: Dataset(_client(), 2, num_parallel_calls=v)),
    ("keep", lambda v: Server(Table(SPEC, 4), keep=v)),
    ("max_steps", lambda v: Writer(Table(SPEC, 4), SPEC, max_steps=v)),
    ("action_dim", lambda v: ReplayBuffer(8, 2, v, 0)),
]


@pytest.mark.parametrize(("name", "make"), INT_ARGS, ids=[n for n, _ in INT_ARGS])
@pytest.mark.parametrize("bad", [0, True, 2.0, "2", None])
def test_int_arguments_share_one_message(
    name: str, make: Callable[[Any], object], bad: object
) -> None:
    with pytest.raises(InvalidArgumentError, match=rf"^{name} must be an int >= 1, got {bad!r}$"):
        make(bad)


@pytest.mark.parametrize(("name", "make"), INT_ARGS, ids=[n for n, _ in INT_ARGS])
def test_int_arguments_accept_numpy_ints(name: str, make: Callable[[Any], object]) -> None:
    made = make(np.int64(2))
    kept = getattr(made, name)
    assert type(kept) is int and kept == 2
    close = getattr(made, "close", None)
    if close is not None:
        close()


@pytest.mark.parametrize("bad", [-1.0, math.nan, "1", True])
def test_dataset_timeout_uses_the_shared_check(bad: object) -> None:
    kind = InvalidTypeError if isinstance(bad, str | bool) else InvalidArgumentError
    with pytest.raises(kind, match=r"timeout must be None or a number >= 0 \(seconds\)"):
        Dataset(_client(), 2, timeout=bad)  # type: ignore[arg-type]


def test_dataset_num_steps_message_names_none() -> None:
    with pytest.raises(InvalidArgumentError, match=r"num_steps must be None or an int >= 1, got 0"):
        Dataset(_client(), 2, num_steps=0)
    with Dataset(_client(), 2, num_steps=np.int64(1)) as ds:
        assert type(ds.num_steps) is int and ds.num_steps == 1


def test_step_types_and_end_codes_are_one_set() -> None:
    assert (FIRST, MID, LAST) == (STEP_FIRST, STEP_MID, STEP_LAST) == (0, 1, 2)
    assert (COLLECT_FIRST, COLLECT_MID, COLLECT_LAST) == (STEP_FIRST, STEP_MID, STEP_LAST)
    assert (END_NONE, END_TERMINATED, END_TRUNCATED) == (0, 1, 2)


@pytest.mark.parametrize("dtype", [*NUMPY_DTYPES, torch.bfloat16])
def test_writer_numpy_dtype_is_the_shared_map(dtype: torch.dtype) -> None:
    got = numpy_dtype(dtype)
    if dtype is torch.bfloat16:
        assert got is None
    else:
        assert got == np.dtype(NUMPY_DTYPES[dtype])
        assert got == torch.empty((), dtype=dtype).numpy().dtype
