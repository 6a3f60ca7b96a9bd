"""Nest: nested data specs (TF-Agents-like trajectories, dicts, spaces) and their JSON."""

from __future__ import annotations

import collections
import json
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from replaydb.errors import InvalidArgumentError, SpecMismatchError
from replaydb.nest import Nest
from replaydb.spec import Field, Spec, flatten, unflatten

Trajectory = collections.namedtuple(
    "Trajectory",
    ["step_type", "observation", "action", "policy_info", "next_step_type", "reward", "discount"],
)


def trajectory_spec() -> Any:
    return Trajectory(
        step_type=((), "int32"),
        observation={"temp": ((3,), "float32"), "hum": gym.spaces.Box(0, 1, (2,))},
        action=gym.spaces.Discrete(4),
        policy_info=(),
        next_step_type=((), np.int32),
        reward=Field(()),
        discount=((), torch.float32),
    )


def test_trajectory_leaves_become_dotted_fields() -> None:
    nest = Nest(trajectory_spec())
    assert list(nest.spec) == [
        "step_type",
        "observation.temp",
        "observation.hum",
        "action",
        "next_step_type",
        "reward",
        "discount",
    ]
    assert nest.spec["action"] == Field((), torch.int64)
    assert nest.spec["observation.hum"] == Field((2,), torch.float32)
    assert nest.spec["step_type"].dtype == torch.int32
    assert not nest.is_flat


def test_pack_rebuilds_structure_and_empty_leaf() -> None:
    nest = Nest(trajectory_spec())
    packed = nest.pack({name: name for name in nest.spec})
    assert isinstance(packed, Trajectory)
    assert packed.policy_info == ()
    assert packed.observation == {"temp": "observation.temp", "hum": "observation.hum"}
    assert nest.unpack(packed) == {name: name for name in nest.spec}


def test_json_round_trip_recreates_named_tuple() -> None:
    nest = Nest(trajectory_spec())
    again = Nest.from_json(json.loads(json.dumps(nest.to_json())))
    assert again == nest
    assert again.spec == nest.spec
    packed = again.pack({name: 1 for name in again.spec})
    assert type(packed).__name__ == "Trajectory"
    assert packed._fields == Trajectory._fields
    assert packed.policy_info == ()
    # The same description gives the same class, so batches compare and isinstance-check.
    assert type(Nest.from_json(nest.to_json()).pack(dict.fromkeys(nest.spec, 0))) is type(packed)


def test_flat_spec_becomes_nested_dicts() -> None:
    spec = Spec({"observation.temp": (2,), "observation.hum": (1,), "reward": ()})
    nest = Nest(spec)
    assert nest.spec is spec
    assert nest.pack({"observation.temp": 1, "observation.hum": 2, "reward": 3}) == {
        "observation": {"temp": 1, "hum": 2},
        "reward": 3,
    }
    assert Nest(Spec({"a": (1,), "b": ()})).is_flat


def test_gym_dict_and_tuple_spaces_and_lists() -> None:
    space = gym.spaces.Dict(
        {"pos": gym.spaces.Box(-1, 1, (3,)), "flags": gym.spaces.Tuple((gym.spaces.Discrete(2),))}
    )
    nest = Nest({"observation": space, "extras": [((1,), "float32"), ((), "int64")]})
    # Gymnasium's Dict space sorts its keys.
    assert list(nest.spec) == ["observation.flags.0", "observation.pos", "extras.0", "extras.1"]
    packed = nest.pack(dict.fromkeys(nest.spec, 7))
    assert packed == {"observation": {"pos": 7, "flags": (7,)}, "extras": [7, 7]}
    assert Nest.from_json(nest.to_json()).pack(dict.fromkeys(nest.spec, 7)) == packed


def test_shape_only_and_tensor_spec_like_leaves() -> None:
    class TensorSpecLike:
        shape = (5,)
        dtype = np.dtype("float64")

    nest = Nest({"a": (4,), "b": TensorSpecLike(), "c": {}, "d": []})
    assert nest.spec["a"] == Field((4,), torch.float32)
    assert nest.spec["b"] == Field((5,), torch.float64)
    assert nest.pack({"a": 1, "b": 2}) == {"a": 1, "b": 2, "c": {}, "d": []}


def test_unpack_reads_dicts_by_attribute_and_named_tuples_by_key() -> None:
    nest = Nest(trajectory_spec())
    as_dict = {
        "step_type": 0,
        "observation": {"temp": 1, "hum": 2},
        "action": 3,
        "policy_info": (),
        "next_step_type": 1,
        "reward": 0.5,
        "discount": 1.0,
    }
    assert nest.unpack(as_dict)["observation.hum"] == 2
    flat = {name: 9 for name in nest.spec}
    assert nest.unpack(flat) == flat


def test_unpack_errors_name_the_field() -> None:
    nest = Nest({"obs": {"temp": (2,)}, "reward": ()})
    with pytest.raises(SpecMismatchError, match=r"'obs\.temp' missing"):
        nest.unpack({"obs": {}, "reward": 1})
    with pytest.raises(SpecMismatchError, match=r"\['extra'\] under 'obs'"):
        nest.unpack({"obs": {"temp": 1, "extra": 2}, "reward": 1})
    with pytest.raises(SpecMismatchError, match=r"\['bogus'\] at the top level"):
        nest.unpack({"obs": {"temp": 1}, "reward": 1, "bogus": 2})
    with pytest.raises(SpecMismatchError, match="'reward' missing"):
        nest.unpack({"obs": {"temp": 1}})


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (((3,), "float32"), "single leaf"),
        ("observation", "must be a Spec or a nest"),
        ({"a": "not a spec"}, "leaf 'a'"),
        ({"a": {"b": object()}}, r"leaf 'a\.b'"),
        ({"a": ()}, "has no leaves"),
        ({"a.b": ((), "float32")}, "no '.'"),
        ({"a": ((2,), "complex128")}, "not supported"),
    ],
)
def test_bad_data_specs_are_rejected(bad: Any, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        Nest(bad)


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"spec": {}, "structure": {"weird": 1}},
        {"spec": {"a": {"shape": [], "dtype": "float32"}}, "structure": {"leaf": "b"}},
        {"spec": {"a": {"shape": [], "dtype": "float32"}}, "structure": {"empty": "set"}},
        {
            "spec": {"a": {"shape": [], "dtype": "float32"}},
            "structure": {"namedtuple": "bad name", "fields": [["a", {"leaf": "a"}]]},
        },
    ],
)
def test_from_json_rejects_malformed_descriptions(bad: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        Nest.from_json(bad)


def test_existing_helpers_keep_their_behaviour() -> None:
    assert flatten({"obs": {"temp": 1, "hum": 2}, "reward": 3}) == {
        "obs.temp": 1,
        "obs.hum": 2,
        "reward": 3,
    }
    assert unflatten({"obs.temp": 1, "reward": 3}) == {"obs": {"temp": 1}, "reward": 3}
    spec = Spec({"obs": ((4,), "float32"), "reward": ((), "float32")})
    assert Spec.from_json(spec.to_json()) == spec
    assert Spec({"a": (2,)}).diff(Spec({"a": (3,)})) == [
        "field 'a': shape (2,) float32 here, (3,) float32 there"
    ]


_NAMES = st.sampled_from(["a", "b", "obs", "reward", "x1", "info"])
_LEAF = st.tuples(
    st.lists(st.integers(1, 3), max_size=2).map(tuple),
    st.sampled_from(["float32", "int64", "bool", "uint8"]),
)


def _nests(depth: int) -> Any:
    if depth == 0:
        return _LEAF
    child = st.one_of(_LEAF, _nests(depth - 1), st.just(()))
    return st.one_of(
        st.dictionaries(_NAMES, child, min_size=1, max_size=3),
        st.lists(child, min_size=1, max_size=3),
    )


def _has_leaf(nest: Any) -> bool:
    if isinstance(nest, dict):
        return any(_has_leaf(v) for v in nest.values())
    if isinstance(nest, list):
        return any(_has_leaf(v) for v in nest)
    return nest != ()


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(_NAMES, st.one_of(_LEAF, _nests(2), st.just(())), min_size=1, max_size=3))
def test_pack_unpack_and_json_round_trip_property(data_spec: dict[str, Any]) -> None:
    if not _has_leaf(data_spec):
        with pytest.raises(InvalidArgumentError):
            Nest(data_spec)
        return
    nest = Nest(data_spec)
    values = {name: i for i, name in enumerate(nest.spec)}
    packed = nest.pack(values)
    assert nest.unpack(packed) == values
    again = Nest.from_json(json.loads(json.dumps(nest.to_json())))
    assert again.pack(values) == packed
    assert again.spec == nest.spec
