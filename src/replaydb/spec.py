"""Specs: the names, shapes and dtypes of the fields a table stores.

A :class:`Spec` is an ordered mapping ``name -> Field(shape, dtype)``. It is built by
hand, from an example batch (:meth:`Spec.from_example`), or from Gymnasium spaces
(:meth:`Spec.from_gym`). Nested structures (dicts, named tuples) are flattened to
dotted names such as ``observation.temp``; :func:`flatten` and :func:`unflatten`
convert between the two forms.

Every value entering a table is checked here, whole, before anything is written:
:meth:`Spec.coerce_batch` returns tensors of the right dtype on the right device or
raises a :class:`~replaydb.errors.SpecMismatchError` naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from replaydb.errors import InvalidArgumentError, SpecMismatchError

__all__ = ["Field", "Nest", "Spec", "dtype_from_name", "dtype_name", "flatten", "unflatten"]

_DTYPES: dict[str, torch.dtype] = {
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


def dtype_name(dtype: torch.dtype) -> str:
    """Return the short name of a torch dtype (``torch.float32`` -> ``"float32"``)."""
    return str(dtype).removeprefix("torch.")


def dtype_from_name(name: str) -> torch.dtype:
    """Return the torch dtype for a short name, numpy name or torch name.

    Raises:
        InvalidArgumentError: If the name is not a supported dtype.
    """
    key = str(name).removeprefix("torch.")
    if key in ("float", "double", "half", "long", "int"):
        key = {"float": "float32", "double": "float64", "half": "float16"}.get(key, "int64")
    if key not in _DTYPES:
        raise InvalidArgumentError(
            f"dtype {name!r} is not supported; expected one of {sorted(_DTYPES)}"
        )
    return _DTYPES[key]


def _as_dtype(dtype: Any) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str):
        return dtype_from_name(dtype)
    try:
        return dtype_from_name(np.dtype(dtype).name)
    except TypeError as exc:
        raise InvalidArgumentError(
            f"dtype {dtype!r} is not a torch, numpy or string dtype; "
            f"expected one of {sorted(_DTYPES)}"
        ) from exc


@dataclass(frozen=True)
class Field:
    """The shape and dtype of one field of a step, without the batch dimension.

    Args:
        shape: The per-step shape, e.g. ``(4,)`` for a CartPole observation, ``()``
            for a scalar reward.
        dtype: A torch dtype (numpy dtypes and names like ``"float32"`` are accepted).

    Example:
        >>> Field((4,), torch.float32)
        Field(shape=(4,), dtype=torch.float32)
    """

    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        try:
            shape = tuple(int(d) for d in self.shape)
        except TypeError as exc:
            raise InvalidArgumentError(
                f"Field shape must be a tuple of ints, got {self.shape!r}"
            ) from exc
        if any(d < 0 for d in shape):
            raise InvalidArgumentError(f"Field shape must not be negative, got {shape}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "dtype", _as_dtype(self.dtype))

    @property
    def numel(self) -> int:
        """Number of scalars one step of this field holds."""
        return math.prod(self.shape)


def flatten(nest: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten dicts, named tuples and tuples into a dict of dotted names.

    Leaves are anything that is not a mapping or (named) tuple/list of nests; a
    :class:`Field`, a tensor and an array are leaves. Empty containers become a
    leaf holding themselves so they round-trip through :func:`unflatten`.

    Example:
        >>> flatten({"obs": {"temp": 1, "hum": 2}, "reward": 3})
        {'obs.temp': 1, 'obs.hum': 2, 'reward': 3}
    """
    out: dict[str, Any] = {}
    if isinstance(nest, Mapping):
        items: list[tuple[str, Any]] = [(str(k), v) for k, v in nest.items()]
    elif isinstance(nest, tuple) and hasattr(nest, "_fields"):
        items = [(str(k), getattr(nest, k)) for k in nest._fields]
    else:
        return {prefix: nest}
    if not items:
        return {prefix: nest} if prefix else {}
    for key, value in items:
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping) or (isinstance(value, tuple) and hasattr(value, "_fields")):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Rebuild nested dicts from dotted names (inverse of :func:`flatten` for dicts).

    Example:
        >>> unflatten({"obs.temp": 1, "reward": 3})
        {'obs': {'temp': 1}, 'reward': 3}
    """
    out: dict[str, Any] = {}
    for name, value in flat.items():
        node = out
        parts = name.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


class Spec(Mapping[str, Field]):
    """An ordered mapping of field names to :class:`Field` s.

    Args:
        fields: ``name -> Field``, or ``name -> (shape, dtype)``, or ``name -> shape``
            (float32).

    Raises:
        InvalidArgumentError: If there are no fields or a name is not a string.

    Example:
        >>> spec = Spec({"obs": ((4,), "float32"), "reward": ((), "float32")})
        >>> spec["obs"].shape
        (4,)
    """

    def __init__(self, fields: Mapping[str, Field | tuple[Any, ...] | Any]) -> None:
        parsed: dict[str, Field] = {}
        for name, value in fields.items():
            if not isinstance(name, str) or not name:
                raise InvalidArgumentError(f"field names must be non-empty strings, got {name!r}")
            parsed[name] = _as_field(name, value)
        if not parsed:
            raise InvalidArgumentError("a Spec needs at least one field, got none")
        self._fields = parsed

    # Mapping protocol
    def __getitem__(self, name: str) -> Field:
        return self._fields[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Spec) and list(self._fields.items()) == list(other._fields.items())

    def __hash__(self) -> int:
        return hash(tuple(self._fields.items()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}: {v.shape} {dtype_name(v.dtype)}" for k, v in self._fields.items())
        return f"Spec({{{inner}}})"

    @property
    def step_nbytes(self) -> int:
        """Bytes one step of every field takes in storage."""
        return sum(f.numel * _itemsize(f.dtype) for f in self._fields.values())

    @classmethod
    def from_example(cls, example: Mapping[str, Any], *, batched: bool = False) -> Spec:
        """Build a spec from one example step (or a batch, with ``batched=True``).

        Args:
            example: ``name -> value`` (tensors, arrays, numbers); nests are flattened.
            batched: Whether the values carry a leading batch dimension to drop.

        Returns:
            The spec with each value's shape and dtype (Python floats become float32).

        Example:
            >>> Spec.from_example({"obs": torch.zeros(4), "reward": 1.0})
            Spec({obs: (4,) float32, reward: () float32})
        """
        fields: dict[str, Field] = {}
        for name, value in flatten(example).items():
            t = _to_tensor(name, value, None)
            if t.dtype == torch.float64 and not isinstance(value, torch.Tensor | np.ndarray):
                t = t.float()
            shape = tuple(t.shape[1:]) if batched else tuple(t.shape)
            fields[name] = Field(shape, t.dtype)
        return cls(fields)

    @classmethod
    def from_gym(cls, space: Any, name: str = "observation") -> Spec:
        """Build a spec from a Gymnasium space (``Dict`` and ``Tuple`` spaces are flattened).

        Args:
            space: A ``gymnasium.spaces.Space``, or a mapping of names to spaces.
            name: The field name to use when ``space`` is a single space.

        Returns:
            The spec, one field per leaf space.

        Example:
            >>> import gymnasium as gym
            >>> Spec.from_gym(gym.spaces.Box(-1, 1, (3,)), "obs")
            Spec({obs: (3,) float32})
        """
        if isinstance(space, Mapping):
            fields: dict[str, Field] = {}
            for key, sub in space.items():
                fields.update(cls.from_gym(sub, str(key))._fields)
            return cls(fields)
        return cls(_gym_fields(space, name))

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-serializable description (the inverse of :meth:`from_json`)."""
        return {
            name: {"shape": list(f.shape), "dtype": dtype_name(f.dtype)}
            for name, f in self._fields.items()
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Spec:
        """Rebuild a spec from :meth:`to_json` output."""
        return cls({k: Field(tuple(v["shape"]), v["dtype"]) for k, v in data.items()})

    def diff(self, other: Spec) -> list[str]:
        """Describe how ``other`` differs from this spec, one line per field.

        Example:
            >>> Spec({"a": (2,)}).diff(Spec({"a": (3,)}))
            ["field 'a': shape (2,) float32 here, (3,) float32 there"]
        """
        lines = []
        for name in self._fields.keys() | other._fields.keys():
            mine, theirs = self._fields.get(name), other._fields.get(name)
            if mine is None:
                lines.append(f"field {name!r}: missing here, present there")
            elif theirs is None:
                lines.append(f"field {name!r}: present here, missing there")
            elif mine != theirs:
                lines.append(
                    f"field {name!r}: shape {mine.shape} {dtype_name(mine.dtype)} here, "
                    f"{theirs.shape} {dtype_name(theirs.dtype)} there"
                )
        return sorted(lines)

    def coerce_batch(
        self, data: Mapping[str, Any], device: torch.device | None = None
    ) -> tuple[dict[str, torch.Tensor], int]:
        """Check a batch against the spec and convert it to tensors.

        Every field must be present with shape ``(N, *field.shape)`` for one common N.
        Values are converted to the field's dtype when that loses nothing of kind
        (ints and bools to floats, float64 to float32); floats into integer fields
        are rejected. Nested mappings are flattened first. Nothing is written.

        Args:
            data: ``name -> batch`` (tensors, arrays, lists).
            device: Where the returned tensors live (default: where they are).

        Returns:
            ``(tensors, N)``.

        Raises:
            SpecMismatchError: Naming the first missing, unknown or mis-shaped field.
        """
        flat = flatten(data) if any(isinstance(v, Mapping) for v in data.values()) else data
        missing = [k for k in self._fields if k not in flat]
        if missing:
            raise SpecMismatchError(
                f"field(s) {missing} missing from the data; the spec expects "
                f"{list(self._fields)}, got {list(flat)}"
            )
        unknown = [k for k in flat if k not in self._fields]
        if unknown:
            raise SpecMismatchError(
                f"field(s) {unknown} are not in the spec; the spec has {list(self._fields)}. "
                "Remove them or build the table with a spec that includes them."
            )
        out: dict[str, torch.Tensor] = {}
        n: int | None = None
        first = ""
        for name, field in self._fields.items():
            t = _coerce(name, flat[name], field, device)
            if t.dim() != len(field.shape) + 1 or tuple(t.shape[1:]) != field.shape:
                raise SpecMismatchError(
                    f"field {name!r}: expected a batch of shape (N, {_shape_str(field.shape)}), "
                    f"got {tuple(t.shape)}"
                )
            if n is None:
                n, first = int(t.shape[0]), name
            elif t.shape[0] != n:
                raise SpecMismatchError(
                    f"field {name!r} has {t.shape[0]} rows but field {first!r} has {n}; "
                    "every field of a batch needs the same number of rows"
                )
            out[name] = t
        assert n is not None
        return out, n

    def coerce_step(
        self, data: Mapping[str, Any], device: torch.device | None = None
    ) -> dict[str, torch.Tensor]:
        """Check one step (no batch dimension) and return it as a batch of one."""
        flat = flatten(data) if any(isinstance(v, Mapping) for v in data.values()) else data
        batched: dict[str, Any] = {}
        for name, value in flat.items():
            field = self._fields.get(name)
            if field is None:
                batched[name] = value
                continue
            t = _coerce(name, value, field, device)
            if tuple(t.shape) != field.shape:
                raise SpecMismatchError(
                    f"field {name!r}: expected one step of shape {field.shape}, "
                    f"got {tuple(t.shape)}"
                )
            batched[name] = t.unsqueeze(0)
        return self.coerce_batch(batched, device)[0]


def _shape_str(shape: tuple[int, ...]) -> str:
    return ", ".join(str(d) for d in shape) if shape else ""


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _as_field(name: str, value: Any) -> Field:
    if isinstance(value, Field):
        return value
    if isinstance(value, tuple) and len(value) == 2 and not isinstance(value[1], int):
        return Field(tuple(value[0]), value[1])
    if (
        hasattr(value, "shape")
        and hasattr(value, "dtype")
        and not isinstance(value, torch.Tensor | np.ndarray)
    ):
        # A Gymnasium space or a TF TensorSpec-like object.
        return Field(tuple(value.shape), _as_dtype(getattr(value.dtype, "name", value.dtype)))
    if isinstance(value, tuple | list):
        return Field(tuple(value), torch.float32)
    raise InvalidArgumentError(
        f"field {name!r}: expected a Field, a (shape, dtype) pair or a shape, got {value!r}"
    )


def _gym_fields(space: Any, name: str) -> dict[str, Field]:
    kind = type(space).__name__
    if kind == "Dict":
        out: dict[str, Field] = {}
        for key, sub in space.spaces.items():
            out.update(_gym_fields(sub, f"{name}.{key}"))
        return out
    if kind == "Tuple":
        out = {}
        for i, sub in enumerate(space.spaces):
            out.update(_gym_fields(sub, f"{name}.{i}"))
        return out
    if kind == "Discrete":
        return {name: Field((), torch.int64)}
    if kind in ("Box", "MultiBinary", "MultiDiscrete"):
        return {name: Field(tuple(space.shape), _as_dtype(space.dtype))}
    raise InvalidArgumentError(
        f"field {name!r}: Gymnasium space {space!r} is not supported; "
        "expected Box, Discrete, MultiBinary, MultiDiscrete, Dict or Tuple"
    )


def _to_tensor(name: str, value: Any, device: torch.device | None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value.detach()
        return t if device is None or t.device == device else t.to(device)
    try:
        if isinstance(value, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(value)).to(device)
        return torch.as_tensor(value, device=device)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise SpecMismatchError(
            f"field {name!r}: cannot convert {type(value).__name__} to a tensor ({exc})"
        ) from exc


def _coerce(name: str, value: Any, field: Field, device: torch.device | None) -> torch.Tensor:
    t = _to_tensor(name, value, device)
    if t.dtype == field.dtype:
        return t
    src_float = t.dtype.is_floating_point
    dst_float = field.dtype.is_floating_point
    if src_float and not dst_float:
        raise SpecMismatchError(
            f"field {name!r}: expected dtype {dtype_name(field.dtype)}, got "
            f"{dtype_name(t.dtype)}; floats are not cast to integers implicitly, "
            f"convert with .to(torch.{dtype_name(field.dtype)}) if that is intended"
        )
    return t.to(field.dtype)


# ------------------------------------------------------------------- nests
_EMPTY = ("tuple", "list", "dict")
_NT_CACHE: dict[tuple[str, tuple[str, ...]], type] = {}


@dataclass(frozen=True)
class _Node:
    """One node of a :class:`Nest`: a leaf (``name`` set), a container or an empty leaf."""

    kind: str  # "leaf", "dict", "namedtuple", "tuple", "list", "empty"
    name: str = ""  # leaf: the dotted field name; namedtuple: the class name; empty: the type
    keys: tuple[str, ...] = ()
    children: tuple[_Node, ...] = ()
    cls: Any = None  # the named tuple class, when known


def _namedtuple_class(name: str, fields: tuple[str, ...]) -> Any:
    from collections import namedtuple

    key = (name, fields)
    if key not in _NT_CACHE:
        _NT_CACHE[key] = namedtuple(name, fields)
    return _NT_CACHE[key]


def _is_shape(value: Any) -> bool:
    return isinstance(value, tuple | list | torch.Size) and all(
        isinstance(d, int | np.integer) and not isinstance(d, bool) for d in value
    )


def _is_dtype_like(value: Any) -> bool:
    if isinstance(value, torch.dtype | str | np.dtype):
        return True
    return isinstance(value, type) and issubclass(value, np.generic | float | int | bool)


def _is_spec_leaf(value: Any) -> bool:
    if isinstance(value, Field):
        return True
    if isinstance(value, tuple | list) and not hasattr(value, "_fields"):
        if len(value) == 2 and _is_shape(value[0]) and _is_dtype_like(value[1]):
            return True
        return bool(value) and _is_shape(value)
    return (
        hasattr(value, "shape")
        and hasattr(value, "dtype")
        and not isinstance(value, torch.Tensor | np.ndarray | Mapping)
        and type(value).__name__ not in ("Dict", "Tuple")
    )


class Nest:
    """The structure of a nested data spec, and how steps map to and from its fields.

    A nest is what TF-Agents calls a spec: named tuples (e.g. a ``Trajectory``),
    dicts, tuples and lists whose leaves are :class:`Field` s, ``(shape, dtype)``
    pairs, shapes, Gymnasium spaces or TensorSpec-like objects. The leaves become the
    fields of :attr:`spec`, named by their dotted path (``observation.temp``); empty
    containers such as ``policy_info=()`` are kept in the structure, hold no field,
    and come back empty. The structure is JSON-serializable (:meth:`to_json`), so it
    can be stored beside a checkpoint and rebuilt without the original classes
    (named tuples are then recreated from their recorded name and fields).

    Args:
        data_spec: The nest (or a flat :class:`Spec`, whose dotted names become
            nested dicts).

    Raises:
        InvalidArgumentError: Naming the path of a leaf that is not a spec.

    Example:
        >>> nest = Nest({"obs": {"temp": ((2,), "float32")}, "info": ()})
        >>> list(nest.spec)
        ['obs.temp']
        >>> nest.pack({"obs.temp": 1})
        {'obs': {'temp': 1}, 'info': ()}
    """

    def __init__(self, data_spec: Any) -> None:
        if isinstance(data_spec, Spec):
            self.root = _node_from_flat(list(data_spec))
            self.spec = data_spec
            self._paths = _leaf_paths(self.root)
            return
        if not (
            isinstance(data_spec, Mapping)
            or (isinstance(data_spec, tuple) and hasattr(data_spec, "_fields"))
            or type(data_spec).__name__ in ("Dict", "Tuple")
            or (isinstance(data_spec, tuple | list) and not _is_spec_leaf(data_spec))
        ):
            raise InvalidArgumentError(
                f"data_spec must be a Spec or a nest (dict, named tuple, tuple or list) of "
                f"Fields, (shape, dtype) pairs or Gymnasium spaces, got {data_spec!r}; "
                "wrap a single leaf in a dict, e.g. {'observation': space}"
            )
        fields: dict[str, Field] = {}
        self.root = _node_from_spec(data_spec, "", fields)
        if not fields:
            raise InvalidArgumentError(
                f"data_spec {data_spec!r} has no leaves; a step needs at least one field"
            )
        self.spec = Spec(fields)
        self._paths = _leaf_paths(self.root)

    def __repr__(self) -> str:
        return f"Nest({self.to_json()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Nest) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(repr(self))

    @property
    def is_flat(self) -> bool:
        """Whether the structure is one dict of leaves (no nesting, no empty leaves)."""
        return self.root.kind == "dict" and all(c.kind == "leaf" for c in self.root.children)

    def pack(self, flat: Mapping[str, Any]) -> Any:
        """Rebuild the nest from ``field name -> value`` (inverse of :meth:`unpack`).

        Raises:
            KeyError: If a field of the spec is missing from ``flat``.
        """
        return _pack(self.root, flat)

    def unpack(self, value: Any) -> dict[str, Any]:
        """Read every field of the spec out of a nested value, by the nest's structure.

        Dict nodes are read by key (attributes also work), named-tuple nodes by
        attribute (keys also work), tuples and lists by index; empty leaves are
        skipped. A flat mapping keyed by dotted field names is accepted as is.

        Returns:
            ``field name -> value``, in spec order.

        Raises:
            SpecMismatchError: Naming the missing or unknown field.
        """
        if (
            isinstance(value, Mapping)
            and all(isinstance(k, str) for k in value)
            and (value.keys() == self.spec.keys())
        ):
            return {name: value[name] for name in self.spec}
        out: dict[str, Any] = {}
        _unpack(self.root, value, "", out)
        return out

    def to_json(self) -> dict[str, Any]:
        """A JSON-serializable description: the structure plus every field's spec."""
        return {"structure": _node_to_json(self.root), "spec": self.spec.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Nest:
        """Rebuild a nest from :meth:`to_json` output (named tuples are recreated).

        Raises:
            InvalidArgumentError: If the description is malformed.
        """
        try:
            spec = Spec.from_json(data["spec"])
            root = _node_from_json(data["structure"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"not a Nest description ({exc!r}): {data!r}") from exc
        nest = cls.__new__(cls)
        nest.root, nest.spec = root, spec
        nest._paths = _leaf_paths(root)
        if sorted(nest._paths) != sorted(spec):
            raise InvalidArgumentError(
                f"Nest description leaves {sorted(nest._paths)} do not match its spec "
                f"fields {sorted(spec)}"
            )
        return nest


def _node_from_flat(names: list[str]) -> _Node:
    tree = unflatten(dict.fromkeys(names, None))

    def build(node: Any, prefix: str) -> _Node:
        keys = tuple(node)
        children = []
        for key in keys:
            path = f"{prefix}.{key}" if prefix else key
            sub = node[key]
            children.append(build(sub, path) if isinstance(sub, dict) else _Node("leaf", path))
        return _Node("dict", keys=keys, children=tuple(children))

    return build(tree, "")


def _node_from_spec(value: Any, path: str, fields: dict[str, Field]) -> _Node:
    kind = type(value).__name__
    if kind == "Dict" and hasattr(value, "spaces"):
        value = dict(value.spaces)
    elif kind == "Tuple" and hasattr(value, "spaces"):
        value = tuple(value.spaces)
    if isinstance(value, tuple | list | Mapping) and not value and not _is_spec_leaf(value):
        return _Node("empty", "dict" if isinstance(value, Mapping) else type(value).__name__)
    if _is_spec_leaf(value):
        if not path:
            raise InvalidArgumentError(
                f"data_spec {value!r} is a single leaf; wrap it in a dict, e.g. "
                "{'observation': ...}"
            )
        if not isinstance(value, Field | tuple | list) and hasattr(value, "sample"):
            got = _gym_fields(value, path)
            fields.update(got)
            return _Node("leaf", path)
        fields[path] = _as_field(path, value)
        return _Node("leaf", path)
    if isinstance(value, Mapping):
        keys = tuple(str(k) for k in value)
        if any("." in k or not k for k in keys):
            raise InvalidArgumentError(
                f"data_spec keys under {path or 'the root'!r} must be non-empty and contain "
                f"no '.', got {list(keys)}"
            )
        children = tuple(
            _node_from_spec(v, f"{path}.{k}" if path else k, fields)
            for k, v in zip(keys, value.values(), strict=True)
        )
        return _Node("dict", keys=keys, children=children)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        keys = tuple(value._fields)
        children = tuple(
            _node_from_spec(getattr(value, k), f"{path}.{k}" if path else k, fields) for k in keys
        )
        return _Node("namedtuple", type(value).__name__, keys, children, type(value))
    if isinstance(value, tuple | list):
        keys = tuple(str(i) for i in range(len(value)))
        children = tuple(
            _node_from_spec(v, f"{path}.{k}" if path else k, fields)
            for k, v in zip(keys, value, strict=True)
        )
        return _Node(type(value).__name__, keys=keys, children=children)
    raise InvalidArgumentError(
        f"data_spec leaf {path or '<root>'!r}: expected a Field, a (shape, dtype) pair, a "
        f"Gymnasium space or a nest of them, got {value!r} ({type(value).__name__})"
    )


def _leaf_paths(node: _Node) -> list[str]:
    if node.kind == "leaf":
        return [node.name]
    out: list[str] = []
    for child in node.children:
        out.extend(_leaf_paths(child))
    return out


def _pack(node: _Node, flat: Mapping[str, Any]) -> Any:
    kind = node.kind
    if kind == "leaf":
        return flat[node.name]
    if kind == "empty":
        return {} if node.name == "dict" else [] if node.name == "list" else ()
    values = [_pack(c, flat) for c in node.children]
    if kind == "dict":
        return dict(zip(node.keys, values, strict=True))
    if kind == "namedtuple":
        cls = node.cls if node.cls is not None else _namedtuple_class(node.name, node.keys)
        return cls(*values)
    return tuple(values) if kind == "tuple" else values


def _child(value: Any, key: str, kind: str, path: str) -> Any:
    try:
        if kind in ("tuple", "list"):
            return value[int(key)]
        if isinstance(value, Mapping):
            return value[key]
        return getattr(value, key)
    except (KeyError, AttributeError, IndexError, TypeError):
        pass
    raise SpecMismatchError(
        f"field {path!r} missing from the step (got {type(value).__name__} "
        f"{_describe_keys(value)}); every leaf of the data spec needs a value"
    )


def _describe_keys(value: Any) -> str:
    if isinstance(value, Mapping):
        return f"with keys {list(value)}"
    if hasattr(value, "_fields"):
        return f"with fields {list(value._fields)}"
    return ""


def _unpack(node: _Node, value: Any, path: str, out: dict[str, Any]) -> None:
    if node.kind == "leaf":
        out[node.name] = value
        return
    if node.kind == "empty":
        return
    if isinstance(value, Mapping):
        unknown = [k for k in value if str(k) not in node.keys]
        if unknown:
            where = f"under {path!r}" if path else "at the top level"
            raise SpecMismatchError(
                f"field(s) {unknown} {where} are not in the data spec, which has "
                f"{list(node.keys)}; remove them or add them to the spec"
            )
    for key, child in zip(node.keys, node.children, strict=True):
        sub = f"{path}.{key}" if path else key
        _unpack(child, _child(value, key, node.kind, sub), sub, out)


def _node_to_json(node: _Node) -> Any:
    if node.kind == "leaf":
        return {"leaf": node.name}
    if node.kind == "empty":
        return {"empty": node.name}
    items = [[k, _node_to_json(c)] for k, c in zip(node.keys, node.children, strict=True)]
    if node.kind == "namedtuple":
        return {"namedtuple": node.name, "fields": items}
    return {node.kind: items}


def _node_from_json(data: Any) -> _Node:
    if "leaf" in data:
        return _Node("leaf", str(data["leaf"]))
    if "empty" in data:
        if data["empty"] not in _EMPTY:
            raise ValueError(f"unknown empty container {data['empty']!r}")
        return _Node("empty", str(data["empty"]))
    for kind in ("namedtuple", "dict", "tuple", "list"):
        if kind in data:
            items = data["fields"] if kind == "namedtuple" else data[kind]
            keys = tuple(str(k) for k, _ in items)
            children = tuple(_node_from_json(c) for _, c in items)
            name = str(data["namedtuple"]) if kind == "namedtuple" else ""
            if kind == "namedtuple" and not all(k.isidentifier() for k in (name, *keys)):
                raise ValueError(f"named tuple {name!r} has invalid field names {keys}")
            return _Node(kind, name, keys, children)
    raise ValueError(f"unknown node {data!r}")
