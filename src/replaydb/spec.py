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

__all__ = ["Field", "Spec", "dtype_from_name", "dtype_name", "flatten", "unflatten"]

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
        return isinstance(other, Spec) and list(self._fields.items()) == list(
            other._fields.items()
        )

    def __hash__(self) -> int:
        return hash(tuple(self._fields.items()))

    def __repr__(self) -> str:
        inner = ", ".join(
            f"{k}: {v.shape} {dtype_name(v.dtype)}" for k, v in self._fields.items()
        )
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
    if hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(
        value, torch.Tensor | np.ndarray
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
