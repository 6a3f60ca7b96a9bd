"""Specs: the names, shapes and dtypes of the fields a table stores.

A :class:`Spec` is an ordered mapping ``name -> Field(shape, dtype)``. It is built by
hand, from an example batch (:meth:`Spec.from_example`), or from Gymnasium spaces
(:meth:`Spec.from_gym`). Nested structures (dicts, named tuples) are flattened to
dotted names such as ``observation.temp``; :func:`flatten` and :func:`unflatten`
convert between the two forms.

Every value entering a table is checked here, whole, before anything is written:
:meth:`Spec.coerce_batch` returns dense tensors of the right dtype on the right
device or raises a :class:`~replaydb.errors.SpecMismatchError` naming the field.
Casts are *checked* by default: a conversion that would change a value (int64
``300`` into ``uint8``, a float into an integer field, a finite float64 that
overflows float32) is rejected unless the caller passes ``cast="unsafe"``. The
checks are one vectorized pass per converted field (a compiled one on CPU, which
converts at the same time), and cost nothing when the dtypes already match.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from replaydb._casting import CASTS as CASTS
from replaydb._casting import as_dtype as _as_dtype
from replaydb._casting import check_cast as check_cast
from replaydb._casting import coerce as _coerce
from replaydb._casting import dtype_from_name, dtype_name
from replaydb._casting import to_tensor as _to_tensor
from replaydb.errors import InvalidArgumentError, InvalidTypeError, SpecMismatchError

__all__ = [
    "Field",
    "Spec",
    "dtype_from_name",
    "dtype_name",
    "flatten",
    "flatten_gym",
    "unflatten",
]


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
            shape = tuple(operator.index(d) for d in self.shape)
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


def flatten_gym(value: Any, name: str = "observation") -> dict[str, Any]:
    """Flatten a value of a Gymnasium space into the field names :meth:`Spec.from_gym` gives.

    Dicts give ``name.key`` and tuples (a ``Tuple`` space's values) ``name.index``,
    recursively; anything else (an array, a number) is a leaf named ``name``.
    Unlike :func:`flatten`, plain tuples and lists are containers here, as they are
    in Gymnasium's ``Tuple`` spaces.

    Example:
        >>> flatten_gym({"img": 1, "pair": (2, 3)})
        {'observation.img': 1, 'observation.pair.0': 2, 'observation.pair.1': 3}
    """
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(flatten_gym(sub, f"{name}.{key}"))
        return out
    if isinstance(value, tuple):
        out = {}
        for i, sub in enumerate(value):
            out.update(flatten_gym(sub, f"{name}.{i}"))
        return out
    return {name: value}


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

        Raises:
            SpecMismatchError: If a value cannot be converted to a tensor, or is a
                scalar while ``batched=True``.

        Example:
            >>> Spec.from_example({"obs": torch.zeros(4), "reward": 1.0})
            Spec({obs: (4,) float32, reward: () float32})
        """
        fields: dict[str, Field] = {}
        for name, value in flatten(example).items():
            t = _to_tensor(name, value, None)
            if t.dtype == torch.float64 and not isinstance(value, torch.Tensor | np.ndarray):
                t = t.float()
            if batched and t.dim() == 0:
                raise SpecMismatchError(
                    f"field {name!r}: batched=True needs values with a leading batch "
                    f"dimension, got a scalar {value!r}; pass batched=False for one step"
                )
            shape = tuple(t.shape[1:]) if batched else tuple(t.shape)
            fields[name] = Field(shape, t.dtype)
        return cls(fields)

    @classmethod
    def from_gym(cls, space: Any, name: str = "observation") -> Spec:
        """Build a spec from a Gymnasium space, one field per leaf space.

        Naming rule, the same for every kind of space at every depth: a space is
        named ``name``; the parts of a ``Dict`` space are named ``name.key`` and those
        of a ``Tuple`` space ``name.index``, recursively. So a ``Dict`` observation
        space with keys ``img`` and ``pos`` gives ``observation.img`` and
        ``observation.pos``, and a ``Tuple`` of two gives ``observation.0`` and
        ``observation.1``: the names :func:`flatten` gives ``{"observation": obs}``,
        which is what collectors write. A plain Python mapping of spaces (not a
        Gymnasium ``Dict``) names several spaces at once, each by its key:
        ``{"observation": obs_space, "action": act_space}``.

        Args:
            space: A ``gymnasium.spaces.Space``, or a plain mapping of names to spaces.
            name: The name of ``space`` (ignored for a plain mapping).

        Returns:
            The spec, one field per leaf space.

        Raises:
            InvalidArgumentError: For an unsupported space or a bad ``name``.

        Example:
            >>> import gymnasium as gym
            >>> list(Spec.from_gym(gym.spaces.Dict({"img": gym.spaces.Box(0, 1, (2,))})))
            ['observation.img']
        """
        if isinstance(space, Mapping) and not _is_gym_space(space):
            fields: dict[str, Field] = {}
            for key, sub in space.items():
                fields.update(_gym_fields(sub, str(key)))
            return cls(fields)
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"name must be a non-empty string, got {name!r}")
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
        self,
        data: Mapping[str, Any],
        device: torch.device | None = None,
        *,
        cast: str = "checked",
    ) -> tuple[dict[str, torch.Tensor], int]:
        """Check a batch against the spec and convert it to dense tensors.

        Every field must be present with shape ``(N, *field.shape)`` for one common N,
        as a dense (strided) tensor with data (not on the meta device), an array, a
        list or a number. Values are converted to the field's dtype when no value
        changes (``cast="checked"``, the default): ints and bools go into float
        fields, float64 into float32 unless a finite value would overflow, integers
        into narrower integer or bool fields only when every value fits (int64 300
        into a uint8 field is rejected, not stored as 44); floats never go into
        integer fields. ``cast="unsafe"`` converts as torch's ``.to()`` does (wraps,
        truncates) for callers who want that. Nested mappings and named tuples are
        flattened first. Nothing is written: every field is checked before a caller
        writes any.

        Args:
            data: ``name -> batch`` (tensors, arrays, lists).
            device: Where the returned tensors live (default: where they are).
            cast: ``"checked"`` or ``"unsafe"``, as above.

        Returns:
            ``(tensors, N)``.

        Raises:
            SpecMismatchError: Naming the first missing, unknown, mis-shaped or
                unconvertible field.
            InvalidTypeError: If ``data`` is not a mapping.
            InvalidArgumentError: For a bad ``cast``.

        Example:
            >>> Spec({"x": ((), "uint8")}).coerce_batch({"x": [1, 2]})[1]
            2
        """
        if not isinstance(data, Mapping) and not hasattr(data, "keys"):  # TensorDict-like ok
            raise InvalidTypeError(
                f"a batch must be a mapping of field name -> values, got "
                f"{type(data).__name__}; pass e.g. {{{', '.join(repr(k) for k in self._fields)}}}"
                " -> [N, *shape] values"
            )
        if cast != "checked":
            check_cast(cast)
        flat = self._flat_names(data)
        out: dict[str, torch.Tensor] = {}
        n: int | None = None
        first = ""
        for name, field in self._fields.items():
            t = _coerce(name, flat[name], field, device, cast)
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
        self,
        data: Mapping[str, Any],
        device: torch.device | None = None,
        *,
        cast: str = "checked",
    ) -> dict[str, torch.Tensor]:
        """Check one step (no batch dimension) and return it as a batch of one.

        The checks and ``cast`` are those of :meth:`coerce_batch`.

        Raises:
            SpecMismatchError: Naming the first field that does not match.
            InvalidTypeError: If ``data`` is not a mapping.

        Example:
            >>> Spec({"x": (2,)}).coerce_step({"x": [1.0, 2.0]})["x"].shape
            torch.Size([1, 2])
        """
        if not isinstance(data, Mapping) and not hasattr(data, "keys"):  # TensorDict-like ok
            raise InvalidTypeError(
                f"a step must be a mapping of field name -> value, got {type(data).__name__}; "
                f"pass e.g. {{{', '.join(repr(k) for k in self._fields)}}} -> values"
            )
        if cast != "checked":
            check_cast(cast)
        flat = self._flat_names(data)
        out: dict[str, torch.Tensor] = {}
        for name, field in self._fields.items():
            t = _coerce(name, flat[name], field, device, cast)
            if tuple(t.shape) != field.shape:
                raise SpecMismatchError(
                    f"field {name!r}: expected one step of shape {field.shape}, "
                    f"got {tuple(t.shape)}"
                )
            out[name] = t.unsqueeze(0)
        return out

    def _flat_names(self, data: Mapping[str, Any]) -> Mapping[str, Any]:
        """Flatten nests in ``data``; raise unless it has exactly the spec's fields."""
        flat = flatten(data) if any(isinstance(v, Mapping | tuple) for v in data.values()) else data
        names = flat.keys()
        missing = [k for k in self._fields if k not in names]
        if missing:
            raise SpecMismatchError(
                f"field(s) {missing} missing from the data; the spec expects "
                f"{list(self._fields)}, got {list(names)}"
            )
        if len(names) != len(self._fields):
            unknown = [k for k in names if k not in self._fields]
            raise SpecMismatchError(
                f"field(s) {unknown} are not in the spec; the spec has {list(self._fields)}. "
                "Remove them or build the table with a spec that includes them."
            )
        return flat


def _shape_str(shape: tuple[int, ...]) -> str:
    return ", ".join(str(d) for d in shape) if shape else ""


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _as_field(name: str, value: Any) -> Field:
    if isinstance(value, Field):
        return value
    if isinstance(value, tuple) and len(value) == 2 and not isinstance(value[1], int | np.integer):
        return Field(value[0], value[1])
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


def _is_gym_space(space: Any) -> bool:
    """Whether ``space`` is a Gymnasium space (duck-typed: gymnasium stays optional)."""
    return callable(getattr(space, "sample", None)) and callable(getattr(space, "contains", None))


def _gym_fields(space: Any, name: str) -> dict[str, Field]:
    kind = type(space).__name__
    if isinstance(space, Mapping):  # a gymnasium Dict, or a plain mapping of spaces
        out: dict[str, Field] = {}
        for key, sub in space.items():
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
