"""Nest: the structure of a nested data spec (TF-Agents trajectories, dicts, spaces).

A :class:`Nest` records how named tuples, dicts, tuples and lists nest around the
leaves of a data spec. The leaves become the fields of a flat
:class:`~replaydb.spec.Spec`, named by their dotted path (``observation.temp``);
empty containers such as ``policy_info=()`` hold no field and come back empty.
:meth:`Nest.unpack` reads a step's leaves, :meth:`Nest.pack` rebuilds the structure
around a batch, and :meth:`Nest.to_json` stores the structure beside a checkpoint
(JSON, never pickle; named tuples are recreated from their name and fields).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from replaydb._validate import is_int
from replaydb.errors import InvalidArgumentError, SpecMismatchError
from replaydb.spec import Field, Spec, _as_field, _gym_fields, unflatten

__all__ = ["Nest"]

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
    return isinstance(value, tuple | list | torch.Size) and all(is_int(d) for d in value)


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
    def leaves(self) -> list[str]:
        """Field names in the order :meth:`pack` and :meth:`unpack` walk the structure."""
        return list(self._paths)

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
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
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
