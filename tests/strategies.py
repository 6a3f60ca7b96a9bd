"""Hypothesis strategies shared by the tests: specs, batches, stream/end sequences.

Values of generated batches are drawn from a seeded ``torch.Generator`` rather than
element by element, so even large batches cost hypothesis one integer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import strategies as st

from replaydb.spec import Field, Spec

#: Every dtype a Field accepts, by short name.
DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
    "uint8": torch.uint8,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "bool": torch.bool,
}

#: A spec holding one field of each dtype family a table usually stores.
MIXED_SPEC = Spec(
    {
        "obs": ((3,), torch.float32),
        "reward": ((), torch.float32),
        "action": ((), torch.int64),
        "mask": ((2,), torch.bool),
        "pixels": ((2, 2), torch.uint8),
    }
)

field_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
dtypes = st.sampled_from(sorted(DTYPES.values(), key=str))
shapes = st.lists(st.integers(0, 3), max_size=3).map(tuple)
fields = st.builds(Field, shapes, dtypes)


@st.composite
def specs(draw: st.DrawFn, max_fields: int = 4) -> Spec:
    """A spec of 1..max_fields fields with small shapes and any supported dtype."""
    names = draw(st.lists(field_names, min_size=1, max_size=max_fields, unique=True))
    return Spec({name: draw(fields) for name in names})


def random_values(shape: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    """Random values of any supported dtype (integers stay inside the dtype's range)."""
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=gen) * 100).to(dtype)
    info = torch.iinfo(dtype)
    low, high = max(info.min, -(2**31)), min(info.max, 2**31 - 1)
    return torch.randint(low, high, shape, generator=gen, dtype=torch.int64).to(dtype)


def make_batch(spec: Spec, n: int, seed: int) -> dict[str, torch.Tensor]:
    """A batch of ``n`` rows matching ``spec``, reproducible from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return {name: random_values((n, *f.shape), f.dtype, gen) for name, f in spec.items()}


@st.composite
def spec_and_batch(draw: st.DrawFn, max_rows: int = 6) -> tuple[Spec, dict[str, torch.Tensor], int]:
    """A spec, a batch matching it and the batch's row count."""
    spec = draw(specs())
    n = draw(st.integers(0, max_rows))
    return spec, make_batch(spec, n, draw(st.integers(0, 2**31 - 1))), n


@dataclass(frozen=True)
class Append:
    """One ``Storage.append`` call: ``n`` steps with their streams and end codes."""

    streams: tuple[int, ...]
    ends: tuple[int, ...]

    @property
    def n(self) -> int:
        return len(self.streams)


@dataclass(frozen=True)
class EndStreams:
    """One ``Storage.end_streams`` call."""

    streams: tuple[int, ...]


@st.composite
def appends(draw: st.DrawFn, max_rows: int, num_streams: int = 3) -> Append:
    """A batch of steps from ``num_streams`` interleaved streams; ends are rare-ish."""
    n = draw(st.integers(0, max_rows))
    streams = draw(st.lists(st.integers(0, num_streams - 1), min_size=n, max_size=n))
    ends = draw(
        st.lists(st.sampled_from([0, 0, 0, 1, 2]), min_size=n, max_size=n),
    )
    return Append(tuple(streams), tuple(ends))


def storage_ops(capacity: int, num_streams: int = 3) -> st.SearchStrategy[list[Any]]:
    """Sequences of appends (batches from empty up to beyond capacity) and end_streams."""
    end_streams = st.lists(st.integers(0, num_streams - 1), max_size=2).map(
        lambda s: EndStreams(tuple(s))
    )
    op = st.one_of(appends(2 * capacity + 1, num_streams), end_streams)
    return st.lists(op, min_size=1, max_size=12)


def nests(max_depth: int = 3) -> st.SearchStrategy[dict[str, Any]]:
    """Nested dicts with dot-free string keys and integer leaves (non-empty at every level)."""
    keys = st.text(alphabet="abcxyz", min_size=1, max_size=3)
    leaves: st.SearchStrategy[Any] = st.integers()
    return st.recursive(
        st.dictionaries(keys, leaves, min_size=1, max_size=3),
        lambda children: st.dictionaries(keys, st.one_of(leaves, children), min_size=1, max_size=3),
        max_leaves=12,
    )
