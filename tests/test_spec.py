"""Tests of ``replaydb.spec``: Field, Spec and the checks every write goes through."""

from __future__ import annotations

import json
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from replaydb.errors import InvalidArgumentError, ReplayError, SpecMismatchError
from replaydb.spec import (
    Field,
    Spec,
    dtype_from_name,
    dtype_name,
    flatten,
    flatten_gym,
    unflatten,
)
from strategies import DTYPES, MIXED_SPEC, make_batch, nests, spec_and_batch, specs

spaces = gym.spaces


class Pair(NamedTuple):
    left: float
    right: float


# ----------------------------------------------------------------- dtypes
@pytest.mark.parametrize(("name", "dtype"), sorted(DTYPES.items()))
def test_dtype_names_round_trip(name: str, dtype: torch.dtype) -> None:
    assert dtype_name(dtype) == name
    assert dtype_from_name(name) is dtype
    assert dtype_from_name(f"torch.{name}") is dtype


@pytest.mark.parametrize(
    ("alias", "dtype"),
    [("float", torch.float32), ("double", torch.float64), ("half", torch.float16)],
)
def test_dtype_aliases(alias: str, dtype: torch.dtype) -> None:
    assert dtype_from_name(alias) is dtype


@pytest.mark.parametrize("name", ["complex64", "float8", "", "str"])
def test_unsupported_dtype_name_lists_the_supported_ones(name: str) -> None:
    with pytest.raises(InvalidArgumentError, match="is not supported") as info:
        dtype_from_name(name)
    assert repr(name) in str(info.value)
    assert "'float32'" in str(info.value)


# ------------------------------------------------------------------ Field
def test_field_defaults_to_float32_and_normalizes_shape() -> None:
    f = Field([2, np.int64(3)])
    assert f.shape == (2, 3)
    assert all(type(d) is int for d in f.shape)
    assert f.dtype is torch.float32
    assert f.numel == 6
    assert Field(()).numel == 1
    assert Field((4, 0)).numel == 0


@pytest.mark.parametrize(
    "dtype",
    ["int64", "torch.int64", np.int64, np.dtype("int64"), torch.int64, "long"],
)
def test_field_accepts_torch_numpy_and_string_dtypes(dtype: object) -> None:
    assert Field((1,), dtype).dtype is torch.int64  # type: ignore[arg-type]


def test_field_is_frozen_hashable_and_compares_by_value() -> None:
    a, b = Field((2,), "float32"), Field([2], torch.float32)
    assert a == b
    assert hash(a) == hash(b)
    assert a != Field((2,), torch.float64)
    with pytest.raises(AttributeError):
        a.shape = (3,)  # type: ignore[misc]


def test_field_rejects_negative_dims() -> None:
    with pytest.raises(InvalidArgumentError, match=r"must not be negative, got \(2, -1\)"):
        Field((2, -1))


@pytest.mark.parametrize("shape", [None, 4, ("a",), "ab", (2.5,), ((2,),)])
def test_field_rejects_shapes_that_are_not_tuples_of_ints(shape: object) -> None:
    with pytest.raises(InvalidArgumentError, match="Field shape must be a tuple of ints") as info:
        Field(shape)  # type: ignore[arg-type]
    assert repr(shape) in str(info.value)


@pytest.mark.parametrize("dtype", [3, object, "complex64", np.complex64, torch.complex64])
def test_field_rejects_unsupported_dtypes(dtype: object) -> None:
    with pytest.raises(InvalidArgumentError, match="dtype"):
        Field((1,), dtype)  # type: ignore[arg-type]


# ------------------------------------------------------------------- Spec
def test_spec_from_fields_pairs_and_shapes() -> None:
    spec = Spec(
        {
            "a": Field((2,), torch.int32),
            "b": ((3, 4), "uint8"),
            "c": (5,),
            "d": [2, 2],
            "e": (),
            "f": ((), torch.bool),
            "g": (2, 3),
        }
    )
    assert list(spec) == ["a", "b", "c", "d", "e", "f", "g"]
    assert spec["a"] == Field((2,), torch.int32)
    assert spec["b"] == Field((3, 4), torch.uint8)
    assert spec["c"] == Field((5,), torch.float32)
    assert spec["d"] == Field((2, 2), torch.float32)
    assert spec["e"] == Field((), torch.float32)
    assert spec["f"] == Field((), torch.bool)
    # A pair of ints is a 2-D shape, not (shape, dtype).
    assert spec["g"] == Field((2, 3), torch.float32)
    assert len(spec) == 7
    assert "a" in spec
    assert "z" not in spec


def test_spec_shape_pair_with_numpy_int_is_a_shape() -> None:
    # (2, np.int64(3)) comes up when shapes are assembled from array sizes.
    assert Spec({"x": (2, np.int64(3))})["x"] == Field((2, 3))


def test_spec_accepts_objects_with_shape_and_dtype() -> None:
    spec = Spec({"img": spaces.Box(0, 255, (2, 3), np.uint8)})
    assert spec["img"] == Field((2, 3), torch.uint8)


def test_spec_equality_hash_and_repr() -> None:
    a = Spec({"x": (2,), "y": ((), "int64")})
    b = Spec({"x": Field((2,)), "y": Field((), torch.int64)})
    assert a == b
    assert hash(a) == hash(b)
    assert a != Spec({"y": ((), "int64"), "x": (2,)})  # order matters
    assert a != {"x": Field((2,)), "y": Field((), torch.int64)}
    assert repr(a) == "Spec({x: (2,) float32, y: () int64})"


def test_spec_step_nbytes() -> None:
    assert MIXED_SPEC.step_nbytes == 3 * 4 + 4 + 8 + 2 * 1 + 4 * 1


def test_spec_rejects_no_fields() -> None:
    with pytest.raises(InvalidArgumentError, match="at least one field"):
        Spec({})


@pytest.mark.parametrize("name", ["", 3, None])
def test_spec_rejects_bad_names(name: object) -> None:
    with pytest.raises(InvalidArgumentError, match="non-empty strings") as info:
        Spec({name: (1,)})  # type: ignore[dict-item]
    assert repr(name) in str(info.value)


@pytest.mark.parametrize("value", [3, "float32", torch.float32, None, 2.5])
def test_spec_rejects_values_that_are_not_fields(value: object) -> None:
    with pytest.raises(InvalidArgumentError, match="field 'x': expected a Field") as info:
        Spec({"x": value})
    assert repr(value) in str(info.value)


def test_errors_subclass_value_error() -> None:
    with pytest.raises(ValueError, match="at least one field"):
        Spec({})
    assert issubclass(SpecMismatchError, ReplayError)


# ------------------------------------------------------------ from_example
def test_from_example_unbatched() -> None:
    spec = Spec.from_example(
        {
            "obs": torch.zeros(4, dtype=torch.float64),
            "img": np.zeros((2, 3), np.uint8),
            "reward": 1.0,
            "np_reward": np.float64(1.0),
            "action": 3,
            "done": True,
            "pair": Pair(1.0, 2.0),
            "nested": {"a": torch.zeros(2, dtype=torch.int32), "b": {"c": [1.0, 2.0]}},
        }
    )
    assert spec == Spec(
        {
            "obs": ((4,), torch.float64),
            "img": ((2, 3), torch.uint8),
            "reward": ((), torch.float32),
            "np_reward": ((), torch.float32),
            "action": ((), torch.int64),
            "done": ((), torch.bool),
            "pair.left": ((), torch.float32),
            "pair.right": ((), torch.float32),
            "nested.a": ((2,), torch.int32),
            "nested.b.c": ((2,), torch.float32),
        }
    )


def test_from_example_keeps_float64_arrays() -> None:
    spec = Spec.from_example({"x": np.zeros(3)})
    assert spec["x"].dtype is torch.float64


def test_from_example_batched_drops_the_batch_dimension() -> None:
    batch = make_batch(MIXED_SPEC, 5, seed=0)
    assert Spec.from_example(batch, batched=True) == MIXED_SPEC
    assert Spec.from_example({"r": [1.0, 2.0, 3.0]}, batched=True)["r"] == Field(())


def test_from_example_batched_rejects_scalars() -> None:
    with pytest.raises(SpecMismatchError, match="field 'r': batched=True needs values with"):
        Spec.from_example({"x": torch.zeros(2, 3), "r": 1.0}, batched=True)


def test_from_example_unconvertible_value_names_the_field() -> None:
    with pytest.raises(SpecMismatchError, match="field 'bad': cannot convert object"):
        Spec.from_example({"ok": 1.0, "bad": object()})


@settings(max_examples=30, deadline=None)
@given(spec_and_batch())
def test_from_example_recovers_any_spec(case: tuple[Spec, dict[str, torch.Tensor], int]) -> None:
    spec, batch, _ = case
    assert Spec.from_example(batch, batched=True) == spec
    assert Spec.from_example({k: v[0] for k, v in make_batch(spec, 1, 1).items()}) == spec


# ---------------------------------------------------------------- from_gym
def test_from_gym_leaf_spaces() -> None:
    assert Spec.from_gym(spaces.Box(-1, 1, (3,))) == Spec({"observation": (3,)})
    assert Spec.from_gym(spaces.Box(0, 255, (2, 2), np.uint8), "img") == Spec(
        {"img": ((2, 2), torch.uint8)}
    )
    assert Spec.from_gym(spaces.Box(-1, 1, (2,), np.float64), "x")["x"].dtype is torch.float64
    assert Spec.from_gym(spaces.Discrete(5), "a") == Spec({"a": ((), torch.int64)})
    assert Spec.from_gym(spaces.MultiBinary(4), "m") == Spec({"m": ((4,), torch.int8)})
    assert Spec.from_gym(spaces.MultiBinary((2, 3)), "m")["m"].shape == (2, 3)
    assert Spec.from_gym(spaces.MultiDiscrete([2, 3, 4]), "md") == Spec({"md": ((3,), torch.int64)})


def test_from_gym_tuple_space_uses_indices() -> None:
    space = spaces.Tuple((spaces.Discrete(2), spaces.Box(0, 1, (2,))))
    assert Spec.from_gym(space, "obs") == Spec(
        {"obs.0": ((), torch.int64), "obs.1": ((2,), torch.float32)}
    )


def test_from_gym_dict_space_is_flattened_under_its_name() -> None:
    space = spaces.Dict(
        {
            "pos": spaces.Box(-1, 1, (2,)),
            "inner": spaces.Dict({"temp": spaces.Box(0, 1, ()), "hum": spaces.Discrete(3)}),
            "pair": spaces.Tuple((spaces.Discrete(2), spaces.MultiBinary(3))),
        }
    )
    spec = Spec.from_gym(space)
    # Gymnasium sorts the keys of a plain dict; the spec follows the space's order.
    assert list(spec) == [
        "observation.inner.hum",
        "observation.inner.temp",
        "observation.pair.0",
        "observation.pair.1",
        "observation.pos",
    ]
    assert dict(spec) == {
        "observation.pos": Field((2,), torch.float32),
        "observation.inner.temp": Field((), torch.float32),
        "observation.inner.hum": Field((), torch.int64),
        "observation.pair.0": Field((), torch.int64),
        "observation.pair.1": Field((3,), torch.int8),
    }


def test_from_gym_dict_and_tuple_follow_one_naming_rule() -> None:
    # The rule: a space is named `name`, Dict parts `name.key`, Tuple parts `name.i`,
    # the names flatten({name: sample}) gives, at every depth and for both kinds.
    space = spaces.Dict(
        {"img": spaces.Box(0, 255, (2, 2), np.uint8), "t": spaces.Tuple((spaces.Discrete(2),))}
    )
    as_tuple = spaces.Tuple((spaces.Dict({"img": spaces.Box(0, 1, (2,))}), spaces.Discrete(3)))
    for sp in (space, as_tuple):
        spec = Spec.from_gym(sp, "obs")
        assert list(spec) == list(flatten_gym(sp.sample(), "obs"))
    assert list(Spec.from_gym(space, "obs")) == ["obs.img", "obs.t.0"]
    assert list(Spec.from_gym(as_tuple, "obs")) == ["obs.0.img", "obs.1"]


def test_from_gym_rejects_a_bad_name() -> None:
    with pytest.raises(InvalidArgumentError, match="name must be a non-empty string"):
        Spec.from_gym(spaces.Box(0, 1, (2,)), "")


def test_from_gym_nested_dicts_with_the_same_leaf_names_stay_apart() -> None:
    space = spaces.Dict(
        {
            "left": spaces.Dict({"x": spaces.Box(0, 1, (1,))}),
            "right": spaces.Dict({"x": spaces.Box(0, 1, (2,))}),
        }
    )
    assert Spec.from_gym(space, "o") == Spec({"o.left.x": (1,), "o.right.x": (2,)})


class NestedObsEnv(gym.Env):  # type: ignore[misc]
    """Five steps an episode; step t observes img = t everywhere and pos = (t, -t) / 10."""

    def __init__(self, kind: str = "dict") -> None:
        img = spaces.Box(0, 255, (3, 3), np.uint8)
        pos = spaces.Box(-1, 1, (2,), np.float32)
        self.kind = kind
        self.observation_space = (
            spaces.Dict({"img": img, "pos": pos})
            if kind == "dict"
            else spaces.Tuple((img, spaces.Dict({"pos": pos})))
        )
        self.action_space = spaces.Discrete(2)
        self.t = 0

    def _obs(self) -> object:
        img = np.full((3, 3), self.t, np.uint8)
        pos = np.array([self.t, -self.t], np.float32) / 10
        return {"img": img, "pos": pos} if self.kind == "dict" else (img, {"pos": pos})

    def reset(self, *, seed: int | None = None, options: object = None) -> tuple[object, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action: int) -> tuple[object, float, bool, bool, dict]:
        self.t += 1
        return self._obs(), 1.0, self.t >= 5, False, {}


@pytest.mark.parametrize("kind", ["dict", "tuple"])
def test_warm_and_collector_work_on_dict_and_tuple_observation_spaces(kind: str) -> None:
    from replaydb.collect import Collector, step_spec, warm
    from replaydb.table import Table

    spec = step_spec(NestedObsEnv(kind))
    img, pos = (
        ("observation.img", "observation.pos")
        if kind == "dict"
        else ("observation.0", "observation.1.pos")
    )
    assert list(spec)[:2] == [img, pos]
    assert spec[img] == Field((3, 3), torch.uint8)
    table = Table(spec, 64, sequence_length=2)
    stats = warm(
        table, "random", 40, num_envs=2, env=lambda: NestedObsEnv(kind), seed=0, progress=False
    )
    assert table.num_steps == 40 and stats.episodes > 0
    with Collector(table, "random", num_envs=2, env=lambda: NestedObsEnv(kind), seed=1) as c:
        c.collect(10, progress=False)
    f = table.storage.fields
    # Every stored row pairs the parts of one observation (img = t, pos = t / 10).
    t_img = f[img][:50, 0, 0].to(torch.float32)
    assert torch.equal(t_img, (f[pos][:50, 0] * 10).round())
    assert torch.equal(f[pos][:50, 1], -f[pos][:50, 0])
    sample = table.sample(8)
    assert sample[img].shape == (8, 2, 3, 3) and sample[pos].shape == (8, 2, 2)


def test_transitions_tables_store_next_observations_of_dict_spaces() -> None:
    from replaydb.collect import warm
    from replaydb.table import Table

    spec = Spec(
        {
            "observation.img": ((3, 3), torch.uint8),
            "observation.pos": (2,),
            "action": ((), torch.int64),
            "next_observation.img": ((3, 3), torch.uint8),
            "next_observation.pos": (2,),
            "done": ((), torch.bool),
        }
    )
    table = Table(spec, 30)
    warm(table, "random", 30, num_envs=3, env=NestedObsEnv, seed=0, progress=False)
    f = table.storage.fields
    now, nxt = f["observation.img"][:, 0, 0].long(), f["next_observation.img"][:, 0, 0].long()
    assert torch.equal(nxt, now + 1)  # the real next observation, also at episode ends
    assert torch.equal(f["done"], nxt == 5)


def test_from_gym_mapping_of_spaces() -> None:
    spec = Spec.from_gym(
        {
            "observation": spaces.Box(-1, 1, (4,)),
            "action": spaces.Discrete(2),
            "goal": spaces.Dict({"xy": spaces.Box(-1, 1, (2,))}),
        }
    )
    assert spec == Spec(
        {
            "observation": (4,),
            "action": ((), torch.int64),
            "goal.xy": (2,),
        }
    )


@pytest.mark.parametrize(
    "space",
    [spaces.Text(4), spaces.Sequence(spaces.Discrete(2)), spaces.Graph(spaces.Box(0, 1), None)],
)
def test_from_gym_unsupported_space_names_field_and_supported_kinds(space: object) -> None:
    with pytest.raises(InvalidArgumentError, match=r"field 'obs\.0': Gymnasium space") as info:
        Spec.from_gym(spaces.Tuple((space,)), "obs")  # type: ignore[arg-type]
    assert "expected Box, Discrete, MultiBinary, MultiDiscrete, Dict or Tuple" in str(info.value)


# ------------------------------------------------------------------- json
def test_json_round_trip_through_text() -> None:
    data = MIXED_SPEC.to_json()
    assert data["pixels"] == {"shape": [2, 2], "dtype": "uint8"}
    assert Spec.from_json(json.loads(json.dumps(data))) == MIXED_SPEC


@settings(max_examples=50, deadline=None)
@given(specs())
def test_json_round_trip_any_spec(spec: Spec) -> None:
    again = Spec.from_json(json.loads(json.dumps(spec.to_json())))
    assert again == spec
    assert list(again) == list(spec)


# ------------------------------------------------------------------- diff
def test_diff_describes_each_difference_sorted() -> None:
    here = Spec({"a": (2,), "b": ((), "int64"), "c": (1,), "d": (3,)})
    there = Spec({"a": (3,), "b": ((), "int32"), "d": (3,), "e": (1,)})
    assert here.diff(there) == [
        "field 'a': shape (2,) float32 here, (3,) float32 there",
        "field 'b': shape () int64 here, () int32 there",
        "field 'c': present here, missing there",
        "field 'e': missing here, present there",
    ]
    assert here.diff(here) == []


@settings(max_examples=30, deadline=None)
@given(specs(), specs())
def test_diff_is_empty_exactly_when_fields_agree(a: Spec, b: Spec) -> None:
    assert (a.diff(b) == []) == (dict(a) == dict(b))
    assert len(a.diff(b)) == len(b.diff(a))


# ----------------------------------------------------- flatten / unflatten
def test_flatten_examples() -> None:
    t = torch.zeros(2)
    flat = flatten({"obs": {"temp": 1, "hum": {"in": 2}}, "pair": Pair(3.0, 4.0), "t": t})
    assert flat == {"obs.temp": 1, "obs.hum.in": 2, "pair.left": 3.0, "pair.right": 4.0, "t": t}
    assert flat["t"] is t
    # Lists, plain tuples, arrays and Fields are leaves.
    leaf = {"l": [1, 2], "tup": (1, 2), "f": Field((1,))}
    assert flatten(leaf) == leaf
    assert flatten({}) == {}
    assert flatten({"empty": {}}) == {"empty": {}}
    assert flatten({1: "a"}) == {"1": "a"}
    assert flatten(Pair(1.0, 2.0), "p") == {"p.left": 1.0, "p.right": 2.0}


def test_unflatten_examples() -> None:
    assert unflatten({"obs.temp": 1, "obs.hum.in": 2, "reward": 3}) == {
        "obs": {"temp": 1, "hum": {"in": 2}},
        "reward": 3,
    }
    assert unflatten({}) == {}


@settings(max_examples=50, deadline=None)
@given(nests())
def test_unflatten_inverts_flatten(nest: dict[str, object]) -> None:
    flat = flatten(nest)
    assert all(not isinstance(v, dict) for v in flat.values())
    assert unflatten(flat) == nest


# ------------------------------------------------------------ coerce_batch
def test_coerce_batch_returns_tensors_and_row_count() -> None:
    batch = make_batch(MIXED_SPEC, 4, seed=1)
    out, n = MIXED_SPEC.coerce_batch(batch)
    assert n == 4
    assert list(out) == list(MIXED_SPEC)
    for name, field in MIXED_SPEC.items():
        assert out[name].dtype is field.dtype
        assert out[name].shape == (4, *field.shape)
        assert torch.equal(out[name], batch[name])


@settings(max_examples=40, deadline=None)
@given(spec_and_batch())
def test_coerce_batch_accepts_any_matching_batch(
    case: tuple[Spec, dict[str, torch.Tensor], int],
) -> None:
    spec, batch, n = case
    out, got_n = spec.coerce_batch(batch)
    assert got_n == n
    for name, field in spec.items():
        assert out[name].dtype is field.dtype
        assert torch.equal(out[name], batch[name])


def test_coerce_batch_accepts_numpy_lists_and_scalars_per_row() -> None:
    spec = Spec({"obs": (2,), "action": ((), "int64"), "done": ((), "bool")})
    out, n = spec.coerce_batch(
        {
            "obs": np.array([[1, 2], [3, 4]], np.float32),
            "action": [1, 2],
            "done": np.array([True, False]),
        }
    )
    assert n == 2
    assert torch.equal(out["obs"], torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert torch.equal(out["action"], torch.tensor([1, 2]))
    assert torch.equal(out["done"], torch.tensor([True, False]))


def test_coerce_batch_flattens_nested_mappings() -> None:
    spec = Spec({"obs.temp": (), "obs.hum": (), "reward": ()})
    out, n = spec.coerce_batch({"obs": {"temp": [1.0], "hum": [2.0]}, "reward": [3.0]})
    assert n == 1
    assert out["obs.hum"].tolist() == [2.0]


def test_a_spec_from_an_example_with_named_tuples_accepts_that_example() -> None:
    step = {"obs": Pair(1.0, 2.0), "reward": 0.5}
    spec = Spec.from_example(step)
    assert list(spec) == ["obs.left", "obs.right", "reward"]
    assert spec.coerce_step(step)["obs.right"].tolist() == [2.0]
    batch = {"obs": Pair(torch.zeros(3), torch.ones(3)), "reward": torch.zeros(3)}
    out, n = Spec.from_example(batch, batched=True).coerce_batch(batch)
    assert n == 3
    assert out["obs.right"].tolist() == [1.0, 1.0, 1.0]


def test_coerce_batch_accepts_an_empty_batch() -> None:
    out, n = MIXED_SPEC.coerce_batch(make_batch(MIXED_SPEC, 0, seed=0))
    assert n == 0
    assert out["pixels"].shape == (0, 2, 2)


def test_coerce_batch_missing_field() -> None:
    batch = make_batch(MIXED_SPEC, 2, seed=0)
    del batch["reward"]
    with pytest.raises(SpecMismatchError, match=r"field\(s\) \['reward'\] missing") as info:
        MIXED_SPEC.coerce_batch(batch)
    assert str(list(MIXED_SPEC)) in str(info.value)


def test_coerce_batch_unknown_field() -> None:
    batch = make_batch(MIXED_SPEC, 2, seed=0)
    batch["extra"] = torch.zeros(2)
    with pytest.raises(SpecMismatchError, match=r"field\(s\) \['extra'\] are not in the spec"):
        MIXED_SPEC.coerce_batch(batch)


@pytest.mark.parametrize(
    ("value", "got"),
    [
        (torch.zeros(2, 4), "(2, 4)"),
        (torch.zeros(2), "(2,)"),
        (torch.zeros(2, 3, 1), "(2, 3, 1)"),
        (torch.zeros(3), "(3,)"),
    ],
)
def test_coerce_batch_wrong_shape_names_field_and_shapes(value: torch.Tensor, got: str) -> None:
    batch = make_batch(MIXED_SPEC, 2, seed=0)
    batch["obs"] = value
    with pytest.raises(SpecMismatchError) as info:
        MIXED_SPEC.coerce_batch(batch)
    msg = str(info.value)
    assert "field 'obs'" in msg
    assert "(N, 3)" in msg
    assert f"got {got}" in msg


def test_coerce_batch_scalar_for_a_batch_of_scalars() -> None:
    with pytest.raises(SpecMismatchError, match=r"field 'r': expected a batch of shape \(N"):
        Spec({"r": ()}).coerce_batch({"r": torch.tensor(1.0)})


def test_coerce_batch_row_count_mismatch_names_both_fields() -> None:
    batch = make_batch(MIXED_SPEC, 3, seed=0)
    batch["action"] = batch["action"][:2]
    with pytest.raises(SpecMismatchError) as info:
        MIXED_SPEC.coerce_batch(batch)
    assert str(info.value).startswith("field 'action' has 2 rows but field 'obs' has 3")


@pytest.mark.parametrize("target", ["int64", "int32", "uint8", "bool"])
def test_coerce_batch_rejects_floats_into_integer_fields(target: str) -> None:
    spec = Spec({"a": ((), target)})
    with pytest.raises(SpecMismatchError) as info:
        spec.coerce_batch({"a": torch.tensor([1.0, 2.0])})
    msg = str(info.value)
    assert f"field 'a': expected dtype {target}, got float32" in msg
    assert f".to(torch.{target})" in msg


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("abc", "cannot convert str"),
        ([[1.0, 2.0], [1.0]], "cannot convert list"),
        (object(), "cannot convert object"),
        (np.array(["a", "b"]), "cannot convert ndarray"),
        (np.array([{}, {}], dtype=object), "cannot convert ndarray"),
    ],
)
def test_coerce_batch_unconvertible_value_names_field(value: object, why: str) -> None:
    spec = Spec({"ok": (), "obs": (2,)})
    with pytest.raises(SpecMismatchError, match=f"field 'obs': {why}"):
        spec.coerce_batch({"ok": [1.0, 2.0], "obs": value})


@pytest.mark.parametrize(
    ("value", "dtype", "expected"),
    [
        (torch.tensor([True, False]), torch.float32, [1.0, 0.0]),
        (torch.tensor([3, -4]), torch.float32, [3.0, -4.0]),
        (np.array([1.5, 2.25]), torch.float32, [1.5, 2.25]),
        (torch.tensor([1.5, 2.25], dtype=torch.float64), torch.float32, [1.5, 2.25]),
        (torch.tensor([1, 2], dtype=torch.int32), torch.int64, [1, 2]),
        (torch.tensor([True, False]), torch.int64, [1, 0]),
        (torch.tensor([1.5, 2.5]), torch.float64, [1.5, 2.5]),
        ([1, 2], torch.float32, [1.0, 2.0]),
    ],
)
def test_coerce_batch_safe_casts(value: object, dtype: torch.dtype, expected: list[float]) -> None:
    out, _ = Spec({"x": Field((), dtype)}).coerce_batch({"x": value})
    assert out["x"].dtype is dtype
    assert out["x"].tolist() == expected


def test_coerce_batch_does_not_modify_the_input() -> None:
    value = torch.tensor([[1, 2], [3, 4]], dtype=torch.int32)
    out, _ = Spec({"x": ((2,), "float32")}).coerce_batch({"x": value})
    out["x"].add_(1)
    assert value.tolist() == [[1, 2], [3, 4]]
    assert value.dtype is torch.int32


def test_coerce_batch_detaches_tensors_that_require_grad() -> None:
    w = torch.ones(2, 3, requires_grad=True)
    out, _ = Spec({"x": (3,)}).coerce_batch({"x": w * 2})
    assert not out["x"].requires_grad
    assert out["x"].grad_fn is None


def test_coerce_batch_accepts_read_only_numpy_arrays_without_warning() -> None:
    # Arrays from np.frombuffer or memory maps are read-only; torch.from_numpy warns on
    # them (an error under -W error), and a tensor sharing them must not be written.
    value = np.frombuffer(np.arange(6, dtype=np.float32).tobytes(), np.float32).reshape(2, 3)
    assert not value.flags.writeable
    out, n = Spec({"x": (3,)}).coerce_batch({"x": value})
    assert n == 2
    assert out["x"].tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]


def test_coerce_batch_moves_to_the_device(device: torch.device) -> None:
    spec = Spec({"x": (2,), "a": ((), "int64")})
    out, _ = spec.coerce_batch(
        {"x": np.ones((3, 2), np.float64), "a": torch.arange(3)}, device=device
    )
    assert out["x"].device.type == device.type
    assert out["a"].device.type == device.type
    assert out["x"].dtype is torch.float32
    assert out["a"].cpu().tolist() == [0, 1, 2]


def test_coerce_batch_leaves_tensors_where_they_are_without_a_device(
    device: torch.device,
) -> None:
    x = torch.ones(2, 2, device=device)
    out, _ = Spec({"x": (2,)}).coerce_batch({"x": x})
    assert out["x"].device == x.device


# ------------------------------------------------------------- coerce_step
def test_coerce_step_returns_a_batch_of_one() -> None:
    spec = Spec({"obs": (2,), "action": ((), "int64"), "reward": ()})
    out = spec.coerce_step({"obs": [1.0, 2.0], "action": 3, "reward": np.float64(0.5)})
    assert out["obs"].shape == (1, 2)
    assert out["action"].tolist() == [3]
    assert out["action"].dtype is torch.int64
    assert out["reward"].dtype is torch.float32
    assert out["reward"].tolist() == [0.5]


def test_coerce_step_flattens_nested_mappings() -> None:
    spec = Spec({"obs.temp": (), "reward": ()})
    out = spec.coerce_step({"obs": {"temp": 1.0}, "reward": 2.0})
    assert out["obs.temp"].tolist() == [1.0]


def test_coerce_step_with_a_batch_dimension_names_field_and_shapes() -> None:
    spec = Spec({"state": (4,)})
    with pytest.raises(SpecMismatchError) as info:
        spec.coerce_step({"state": torch.zeros(1, 4)})
    assert str(info.value) == "field 'state': expected one step of shape (4,), got (1, 4)"


def test_coerce_step_missing_and_unknown_fields() -> None:
    spec = Spec({"a": (), "b": ()})
    with pytest.raises(SpecMismatchError, match=r"\['b'\] missing"):
        spec.coerce_step({"a": 1.0})
    with pytest.raises(SpecMismatchError, match=r"\['c'\] are not in the spec"):
        spec.coerce_step({"a": 1.0, "b": 2.0, "c": 3.0})


def test_coerce_step_rejects_floats_into_integer_fields() -> None:
    with pytest.raises(SpecMismatchError, match="field 'a': expected dtype int64, got float32"):
        Spec({"a": ((), "int64")}).coerce_step({"a": 1.5})


@settings(max_examples=30, deadline=None)
@given(specs(), st.integers(0, 2**31 - 1))
def test_coerce_step_agrees_with_coerce_batch(spec: Spec, seed: int) -> None:
    batch = make_batch(spec, 1, seed)
    step = spec.coerce_step({k: v[0] for k, v in batch.items()})
    for name in spec:
        assert torch.equal(step[name], batch[name])


def test_spec_pair_with_an_int_shape_is_rejected_as_a_shape() -> None:
    with pytest.raises(InvalidArgumentError, match="Field shape must be a tuple of ints, got 4"):
        Spec({"x": (4, "float32")})
