"""The records of a dm-reverb 0.14 checkpoint: protocol buffers, tensors, signatures.

Private helpers of :mod:`replaydb._reverb_checkpoint`; no TensorFlow, no Reverb.
The files' framing is read by :mod:`replaydb._tfrecord`.

* **Messages**: Reverb's ``PriorityTableCheckpoint``, ``PrioritizedItem`` and
  ``ChunkData`` and TensorFlow's ``TensorProto`` and ``StructuredValue``, declared
  here from their field numbers (wire-compatible subsets of ``reverb/cc/schema.proto``,
  ``reverb/cc/checkpointing/checkpoint.proto``, ``tensorflow/core/framework/tensor.proto``
  and ``tensorflow/core/protobuf/struct.proto``) and parsed by ``google.protobuf``.
* **Tensors** in chunks: ``tensor_content`` is raw Snappy (decoded by ``cramjam``)
  of the little-endian array, except ``DT_STRING`` tensors, which hold TensorFlow's
  string list (every length as a varint, then the bytes). Integer tensors of rank
  >= 2 in a ``delta_encoded`` chunk hold differences along the time axis, in the
  unsigned type of the same width.

Every size read from the file is checked against what the file can hold before
anything is allocated, so a damaged or hostile file costs bounded memory and ends
in a :class:`~replaydb.errors.CheckpointError` naming the file, record and field.
"""

from __future__ import annotations

import collections
import keyword
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from replaydb.errors import CheckpointError, require

__all__ = [
    "DTYPES",
    "ReverbTensorSpec",
    "ReverbTypeSpec",
    "decode_chunk_tensor",
    "decode_plain_tensor",
    "decode_structure",
    "messages",
    "parse",
    "signature_fields",
]

#: Snappy cannot expand data by more than ~22x (a 3-byte copy of 64 bytes).
_MAX_SNAPPY_RATIO = 32
#: Largest tensor a few repeated values may describe (signature bounds).
_MAX_REPEATED = 1 << 16

#: TensorFlow DataType enum -> numpy dtype (None: strings).
DTYPES: dict[int, np.dtype[Any] | None] = {
    1: np.dtype("<f4"),
    2: np.dtype("<f8"),
    3: np.dtype("<i4"),
    4: np.dtype("u1"),
    5: np.dtype("<i2"),
    6: np.dtype("i1"),
    7: None,
    8: np.dtype("<c8"),
    9: np.dtype("<i8"),
    10: np.dtype("?"),
    17: np.dtype("<u2"),
    18: np.dtype("<c16"),
    19: np.dtype("<f2"),
    22: np.dtype("<u4"),
    23: np.dtype("<u8"),
}

# ---------------------------------------------------------------- messages
# (name, number, type, repeated, message type or None[, oneof index])
_D, _F, _I64, _U64, _I32, _BOOL, _STR, _MSG, _BYTES, _U32 = 1, 2, 3, 4, 5, 8, 9, 11, 12, 13
_SCHEMA: dict[str, list[tuple[Any, ...]]] = {
    "Dim": [("size", 1, _I64, False, None), ("name", 2, _STR, False, None)],
    "TensorShapeProto": [
        ("dim", 2, _MSG, True, "Dim"),
        ("unknown_rank", 3, _BOOL, False, None),
    ],
    "TensorProto": [
        ("dtype", 1, _I32, False, None),
        ("tensor_shape", 2, _MSG, False, "TensorShapeProto"),
        ("version_number", 3, _I32, False, None),
        ("tensor_content", 4, _BYTES, False, None),
        ("float_val", 5, _F, True, None),
        ("double_val", 6, _D, True, None),
        ("int_val", 7, _I32, True, None),
        ("string_val", 8, _BYTES, True, None),
        ("scomplex_val", 9, _F, True, None),
        ("int64_val", 10, _I64, True, None),
        ("bool_val", 11, _BOOL, True, None),
        ("dcomplex_val", 12, _D, True, None),
        ("half_val", 13, _I32, True, None),
        ("uint32_val", 16, _U32, True, None),
        ("uint64_val", 17, _U64, True, None),
    ],
    "NoneValue": [],
    "ListValue": [("values", 1, _MSG, True, "StructuredValue")],
    "TupleValue": [("values", 1, _MSG, True, "StructuredValue")],
    "PairValue": [("key", 1, _STR, False, None), ("value", 2, _MSG, False, "StructuredValue")],
    "DictValue": [("fields", 1, _MSG, True, "DictValue.FieldsEntry")],
    "DictValue.FieldsEntry": [
        ("key", 1, _STR, False, None),
        ("value", 2, _MSG, False, "StructuredValue"),
    ],
    "NamedTupleValue": [("name", 1, _STR, False, None), ("values", 2, _MSG, True, "PairValue")],
    "TensorSpecProto": [
        ("name", 1, _STR, False, None),
        ("shape", 2, _MSG, False, "TensorShapeProto"),
        ("dtype", 3, _I32, False, None),
    ],
    "BoundedTensorSpecProto": [
        ("name", 1, _STR, False, None),
        ("shape", 2, _MSG, False, "TensorShapeProto"),
        ("dtype", 3, _I32, False, None),
        ("minimum", 4, _MSG, False, "TensorProto"),
        ("maximum", 5, _MSG, False, "TensorProto"),
    ],
    "TypeSpecProto": [
        ("type_spec_class", 1, _I32, False, None),
        ("type_state", 2, _MSG, False, "StructuredValue"),
        ("type_spec_class_name", 3, _STR, False, None),
    ],
    "StructuredValue": [
        ("none_value", 1, _MSG, False, "NoneValue", 0),
        ("float64_value", 11, _D, False, None, 0),
        ("int64_value", 12, 18, False, None, 0),  # sint64
        ("string_value", 13, _STR, False, None, 0),
        ("bool_value", 14, _BOOL, False, None, 0),
        ("tensor_shape_value", 31, _MSG, False, "TensorShapeProto", 0),
        ("tensor_dtype_value", 32, _I32, False, None, 0),
        ("tensor_spec_value", 33, _MSG, False, "TensorSpecProto", 0),
        ("type_spec_value", 34, _MSG, False, "TypeSpecProto", 0),
        ("bounded_tensor_spec_value", 35, _MSG, False, "BoundedTensorSpecProto", 0),
        ("list_value", 51, _MSG, False, "ListValue", 0),
        ("tuple_value", 52, _MSG, False, "TupleValue", 0),
        ("dict_value", 53, _MSG, False, "DictValue", 0),
        ("named_tuple_value", 54, _MSG, False, "NamedTupleValue", 0),
        ("tensor_value", 55, _MSG, False, "TensorProto", 0),
        ("numpy_value", 56, _MSG, False, "TensorProto", 0),
    ],
    "Timestamp": [("seconds", 1, _I64, False, None), ("nanos", 2, _I32, False, None)],
    "Prioritized": [("priority_exponent", 1, _D, False, None)],
    "Heap": [("min_heap", 1, _BOOL, False, None)],
    "KeyDistributionOptions": [
        ("fifo", 1, _BOOL, False, None, 0),
        ("uniform", 2, _BOOL, False, None, 0),
        ("prioritized", 3, _MSG, False, "Prioritized", 0),
        ("heap", 4, _MSG, False, "Heap", 0),
        ("lifo", 6, _BOOL, False, None, 0),
        ("is_deterministic", 7, _BOOL, False, None),
    ],
    "RateLimiterCheckpoint": [
        ("samples_per_insert", 2, _D, False, None),
        ("min_diff", 3, _D, False, None),
        ("max_diff", 4, _D, False, None),
        ("min_size_to_sample", 5, _I64, False, None),
        ("sample_count", 6, _I64, False, None),
        ("insert_count", 7, _I64, False, None),
        ("delete_count", 8, _I64, False, None),
    ],
    "ChunkSlice": [
        ("chunk_key", 1, _U64, False, None),
        ("offset", 2, _I32, False, None),
        ("length", 3, _I32, False, None),
        ("index", 4, _I32, False, None),
    ],
    "Column": [("chunk_slices", 1, _MSG, True, "ChunkSlice"), ("squeeze", 2, _BOOL, False, None)],
    "FlatTrajectory": [("columns", 1, _MSG, True, "Column")],
    "PrioritizedItem": [
        ("key", 1, _U64, False, None),
        ("table", 2, _STR, False, None),
        ("deprecated_chunk_keys", 3, _U64, True, None),
        ("priority", 5, _D, False, None),
        ("times_sampled", 6, _I32, False, None),
        ("inserted_at", 7, _MSG, False, "Timestamp"),
        ("flat_trajectory", 8, _MSG, False, "FlatTrajectory"),
    ],
    "PriorityTableCheckpoint": [
        ("table_name", 1, _STR, False, None),
        ("deprecated_items", 2, _MSG, True, "PrioritizedItem"),
        ("rate_limiter", 3, _MSG, False, "RateLimiterCheckpoint"),
        ("sampler", 4, _MSG, False, "KeyDistributionOptions"),
        ("remover", 5, _MSG, False, "KeyDistributionOptions"),
        ("max_size", 6, _I64, False, None),
        ("max_times_sampled", 7, _I32, False, None),
        ("num_deleted_episodes", 8, _I64, False, None),
        ("signature", 9, _MSG, False, "StructuredValue"),
        ("num_unique_samples", 10, _I64, False, None),
    ],
    "SequenceRange": [
        ("episode_id", 1, _U64, False, None),
        ("start", 2, _I32, False, None),
        ("end", 3, _I32, False, None),
        ("sparse", 4, _BOOL, False, None),
    ],
    "ChunkData": [
        ("chunk_key", 1, _U64, False, None),
        ("sequence_range", 2, _MSG, False, "SequenceRange"),
        ("deprecated_data", 3, _MSG, True, "TensorProto"),
        ("delta_encoded", 4, _BOOL, False, None),
        ("data", 5, _MSG, False, "ChunkData.Data"),
        ("data_tensors_len", 6, _I32, False, None),
        ("data_uncompressed_size", 7, _I64, False, None),
    ],
    "ChunkData.Data": [("tensors", 1, _MSG, True, "TensorProto")],
}
_ONEOFS = {"StructuredValue": "kind", "KeyDistributionOptions": "distribution"}
_PACKAGE = "replaydb_reverb"
_messages: dict[str, Any] = {}


def messages() -> dict[str, Any]:
    """The message classes by name (``"ChunkData"``, ...), built once in a private pool.

    Raises:
        MissingDependencyError: If ``protobuf`` is not installed.
    """
    if _messages:
        return _messages
    require("google.protobuf", "reverb-import")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(
        name="replaydb_reverb_checkpoint.proto", package=_PACKAGE, syntax="proto3"
    )
    protos: dict[str, Any] = {}
    for name, fields in _SCHEMA.items():
        outer, _, inner = name.partition(".")
        if inner:
            m = protos[outer].nested_type.add(name=inner)
            if inner.endswith("Entry"):
                m.options.map_entry = True
        else:
            m = fdp.message_type.add(name=name)
        protos[name] = m
        if name in _ONEOFS:
            m.oneof_decl.add(name=_ONEOFS[name])
        for fname, number, ftype, repeated, type_name, *oneof in fields:
            f = m.field.add(name=fname, number=number, type=ftype)
            f.label = 3 if repeated else 1
            if type_name is not None:
                f.type_name = f".{_PACKAGE}.{type_name}"
            if oneof:
                f.oneof_index = oneof[0]
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    get_class = getattr(message_factory, "GetMessageClass", None)
    for name in _SCHEMA:
        desc = pool.FindMessageTypeByName(f"{_PACKAGE}.{name}")
        if get_class is not None:
            _messages[name] = get_class(desc)
        else:  # protobuf < 4.22
            _messages[name] = message_factory.MessageFactory(pool).GetPrototype(desc)
    return _messages


def parse(name: str, payload: bytes, where: str) -> Any:
    """Parse ``payload`` as message ``name``, or raise a CheckpointError naming ``where``."""
    from google.protobuf.message import DecodeError

    msg = messages()[name]()
    try:
        msg.ParseFromString(payload)
    except (DecodeError, RecursionError, ValueError) as exc:
        raise CheckpointError(f"{where}: not a valid {name} message ({exc})") from exc
    return msg


# ---------------------------------------------------------------- tensors
def _shape(proto: Any, where: str) -> tuple[int, ...]:
    if proto.tensor_shape.unknown_rank:
        raise CheckpointError(f"{where}: tensor_shape has an unknown rank")
    dims = tuple(int(d.size) for d in proto.tensor_shape.dim)
    if any(d < 0 for d in dims):
        raise CheckpointError(f"{where}: tensor_shape {list(dims)} has a negative dimension")
    return dims


def _dtype(code: int, where: str) -> np.dtype[Any] | None:
    if code not in DTYPES:
        raise CheckpointError(
            f"{where}: TensorFlow dtype {code} is not supported (supported: "
            "bool, float16/32/64, complex64/128, int8-64, uint8-64 and string)"
        )
    return DTYPES[code]


def _count(dims: tuple[int, ...], limit: int, where: str) -> int:
    n = 1
    for d in dims:
        n *= d
        if n > limit:
            raise CheckpointError(
                f"{where}: tensor_shape {list(dims)} holds more elements than its "
                f"{limit}-byte payload can encode; the chunk is corrupt"
            )
    return n


def _strings(content: bytes, dims: tuple[int, ...], where: str) -> np.ndarray[Any, Any]:
    """TensorFlow's string list: ``n`` varint lengths, then the bytes."""
    n = _count(dims, len(content), where)
    pos, lengths = 0, []
    for i in range(n):
        value, shift = 0, 0
        while True:
            if pos >= len(content) or shift > 28:
                raise CheckpointError(f"{where}: string {i}: truncated or overlong length varint")
            b = content[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        lengths.append(value)
    if pos + sum(lengths) != len(content):
        raise CheckpointError(
            f"{where}: the string lengths add up to {sum(lengths)} bytes but "
            f"{len(content) - pos} follow them"
        )
    out = np.empty(n, dtype=object)
    for i, length in enumerate(lengths):
        out[i] = content[pos : pos + length]
        pos += length
    return out.reshape(dims)


_CRAMJAM: list[Any] = []


def _cramjam() -> Any:
    if not _CRAMJAM:
        _CRAMJAM.append(require("cramjam", "reverb-import"))
    return _CRAMJAM[0]


def decode_chunk_tensor(proto: Any, delta_encoded: bool, where: str) -> np.ndarray[Any, Any]:
    """A chunk's tensor: Snappy-compressed content (strings plain), delta-decoded.

    Raises:
        CheckpointError: For an unknown dtype, a bad shape, corrupt Snappy data or a
            size that does not match the shape.
    """
    dtype = _dtype(int(proto.dtype), where)
    dims = _shape(proto, where)
    content = bytes(proto.tensor_content)
    if dtype is None:
        return _strings(content, dims, where)
    cramjam = _cramjam()
    limit = _MAX_SNAPPY_RATIO * len(content) + 64
    nbytes = _count(dims, limit, where) * dtype.itemsize
    if nbytes > limit:
        raise CheckpointError(
            f"{where}: shape {list(dims)} of {dtype.name} needs {nbytes} bytes, more than "
            f"{len(content)} bytes of Snappy data can hold; the chunk is corrupt"
        )
    try:
        declared = int(cramjam.snappy.decompress_raw_len(content))
    except Exception as exc:  # cramjam raises its own DecompressionError
        raise CheckpointError(f"{where}: tensor_content is not Snappy data ({exc})") from exc
    if declared != nbytes:
        raise CheckpointError(
            f"{where}: tensor_content inflates to {declared} bytes, but shape {list(dims)} "
            f"of {dtype.name} needs {nbytes}"
        )
    try:
        raw = bytes(cramjam.snappy.decompress_raw(content))
    except Exception as exc:
        raise CheckpointError(f"{where}: tensor_content is corrupt Snappy data ({exc})") from exc
    if len(raw) != nbytes:
        raise CheckpointError(f"{where}: tensor_content inflated to {len(raw)} bytes, not {nbytes}")
    arr = np.frombuffer(raw, dtype=dtype).reshape(dims)
    if delta_encoded and dtype.kind in "iu" and arr.ndim >= 2:
        unsigned = np.dtype(f"<u{dtype.itemsize}")
        arr = np.cumsum(arr.view(unsigned), axis=0, dtype=unsigned).view(dtype)
    return arr.astype(dtype.newbyteorder("="), copy=True)


_VALUE_FIELDS = {
    1: "float_val",
    2: "double_val",
    3: "int_val",
    4: "int_val",
    5: "int_val",
    6: "int_val",
    8: "scomplex_val",
    9: "int64_val",
    10: "bool_val",
    17: "int_val",
    18: "dcomplex_val",
    19: "half_val",
    22: "uint32_val",
    23: "uint64_val",
}


def decode_plain_tensor(proto: Any, where: str) -> np.ndarray[Any, Any]:
    """An uncompressed TensorProto (signature bounds): ``tensor_content`` or typed values.

    Raises:
        CheckpointError: For an unknown dtype or values that do not fit the shape.
    """
    dtype = _dtype(int(proto.dtype), where)
    dims = _shape(proto, where)
    if dtype is None:
        values: list[Any] = [bytes(s) for s in proto.string_val]
        n = _count(dims, max(len(values), _MAX_REPEATED), where)
        arr = np.empty(n, dtype=object)
        for i in range(n):
            arr[i] = values[min(i, len(values) - 1)] if values else b""
        return arr.reshape(dims)
    content = bytes(proto.tensor_content)
    if content:
        n = _count(dims, len(content), where)
        if n * dtype.itemsize != len(content):
            raise CheckpointError(
                f"{where}: tensor_content has {len(content)} bytes, shape {list(dims)} "
                f"of {dtype.name} needs {n * dtype.itemsize}"
            )
        return np.frombuffer(content, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))
    raw_values = list(getattr(proto, _VALUE_FIELDS[int(proto.dtype)]))
    # TensorFlow repeats the last value to fill the shape: a small message may
    # describe a large (constant) tensor; bounds are small, so cap it.
    n = _count(dims, max(len(raw_values), _MAX_REPEATED), where)
    if int(proto.dtype) == 19:  # half_val holds the float16 bits
        flat = np.array(raw_values, dtype=np.int64).astype(np.uint16).view(np.float16)
    elif dtype.kind == "c":
        if len(raw_values) % 2:
            raise CheckpointError(
                f"{where}: {len(raw_values)} values for a complex tensor (pairs expected)"
            )
        flat = np.array(raw_values, dtype=np.float64).view(np.complex128).astype(dtype)
    elif dtype.kind == "f":
        flat = np.array(raw_values, dtype=np.float64).astype(dtype)
    elif dtype.kind == "b":
        flat = np.array(raw_values, dtype=bool)
    else:  # integers: wrap to the width, as TensorFlow's int_val holds them
        flat = np.array([int(v) & 0xFFFFFFFFFFFFFFFF for v in raw_values], dtype=np.uint64)
        flat = flat.astype(np.dtype(f"u{dtype.itemsize}")).view(dtype)
    if flat.size == 0:
        return np.zeros(dims, dtype=dtype.newbyteorder("="))
    if flat.size < n:  # TensorFlow repeats the last value
        flat = np.concatenate([flat, np.repeat(flat[-1:], n - flat.size)])
    return flat[:n].reshape(dims).astype(dtype.newbyteorder("="))


@dataclass(frozen=True)
class ReverbTensorSpec:
    """A ``tf.TensorSpec`` (or ``BoundedTensorSpec``) leaf of a table signature.

    Attributes:
        name: The spec's name (may be empty).
        shape: Dimensions (``None``: unknown), or ``None`` for an unknown rank.
        dtype: A numpy dtype name, or ``"string"``.
        minimum: The bounds of a ``BoundedTensorSpec``, else ``None``.
        maximum: See ``minimum``.
    """

    name: str
    shape: tuple[int | None, ...] | None
    dtype: str
    minimum: Any = None
    maximum: Any = None


@dataclass(frozen=True)
class ReverbTypeSpec:
    """A signature leaf that is a ``tf.TypeSpec`` this reader does not interpret."""

    class_name: str


# ---------------------------------------------------------------- signatures
_NAMEDTUPLES: dict[tuple[str, tuple[str, ...]], Any] = {}
_MAX_DEPTH = 64


def _dtype_name(code: int, where: str) -> str:
    if code not in DTYPES:
        raise CheckpointError(f"{where}: unknown TensorFlow dtype {code}")
    dt = DTYPES[code]
    return "string" if dt is None else dt.name


def _spec_shape(shape: Any) -> tuple[int | None, ...] | None:
    if shape.unknown_rank:
        return None
    return tuple(None if d.size < 0 else int(d.size) for d in shape.dim)


def decode_structure(msg: Any, where: str, depth: int = 0) -> Any:
    """A ``StructuredValue`` (a table signature) as Python values and containers.

    Dicts, lists, tuples and named tuples (recreated from their recorded name and
    fields) around :class:`ReverbTensorSpec` / :class:`ReverbTypeSpec` leaves,
    ``None``, numbers, strings, shapes and arrays.

    Args:
        msg: The parsed ``StructuredValue``.
        where: Where it came from, for error messages.
        depth: Nesting depth so far (at most 64).

    Returns:
        The decoded structure.

    Raises:
        CheckpointError: For an unknown dtype, a repeated named-tuple field, bad
            bounds or nesting deeper than 64 levels.
    """
    if depth > _MAX_DEPTH:
        raise CheckpointError(f"{where}: nested deeper than {_MAX_DEPTH} levels")
    kind = msg.WhichOneof("kind")
    sub = depth + 1
    if kind is None or kind == "none_value":
        return None
    if kind in ("float64_value", "int64_value", "string_value", "bool_value"):
        return getattr(msg, kind)
    if kind == "tensor_shape_value":
        return _spec_shape(msg.tensor_shape_value)
    if kind == "tensor_dtype_value":
        return _dtype_name(msg.tensor_dtype_value, where)
    if kind in ("tensor_spec_value", "bounded_tensor_spec_value"):
        spec = getattr(msg, kind)
        bounds: dict[str, Any] = {}
        if kind == "bounded_tensor_spec_value":
            bounds = {
                "minimum": decode_plain_tensor(spec.minimum, f"{where} minimum"),
                "maximum": decode_plain_tensor(spec.maximum, f"{where} maximum"),
            }
        return ReverbTensorSpec(
            spec.name, _spec_shape(spec.shape), _dtype_name(spec.dtype, where), **bounds
        )
    if kind == "type_spec_value":
        ts = msg.type_spec_value
        return ReverbTypeSpec(ts.type_spec_class_name or f"TypeSpecProto.{ts.type_spec_class}")
    if kind in ("list_value", "tuple_value"):
        values = [decode_structure(v, where, sub) for v in getattr(msg, kind).values]
        return values if kind == "list_value" else tuple(values)
    if kind == "dict_value":
        return {
            k: decode_structure(v, f"{where}.{k}", sub) for k, v in msg.dict_value.fields.items()
        }
    if kind == "named_tuple_value":
        nt = msg.named_tuple_value
        keys = tuple(p.key for p in nt.values)
        if len(set(keys)) != len(keys):
            raise CheckpointError(f"{where}: named tuple {nt.name!r} repeats a field: {keys}")
        ident = (nt.name, keys)
        if ident not in _NAMEDTUPLES:
            typename = nt.name.rpartition(".")[2]
            if not typename.isidentifier() or keyword.iskeyword(typename):
                typename = "NamedTuple"
            _NAMEDTUPLES[ident] = collections.namedtuple(typename, keys, rename=True)
        values = [decode_structure(p.value, f"{where}.{p.key}", sub) for p in nt.values]
        return _NAMEDTUPLES[ident](*values)
    return decode_plain_tensor(getattr(msg, kind), where)  # tensor_value / numpy_value


def signature_fields(signature: Any) -> list[tuple[str, Any]]:
    """``(dotted name, leaf)`` of a decoded signature, in ``tree.flatten`` order.

    Dict keys are sorted, named tuples keep their field order, list and tuple
    positions become ``0``, ``1``, ...; empty containers have no leaves. This is the
    order of an item's columns.

    Example:
        >>> spec = ReverbTensorSpec("", (), "float32")
        >>> [n for n, _ in signature_fields({"obs": {"b": spec, "a": spec}, "info": ()})]
        ['obs.a', 'obs.b']
    """
    out: list[tuple[str, Any]] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, Mapping):
            children = [(str(k), node[k]) for k in sorted(node)]
        elif isinstance(node, tuple) and hasattr(node, "_fields"):
            children = [(str(k), getattr(node, k)) for k in node._fields]
        elif isinstance(node, list | tuple):
            children = [(str(i), v) for i, v in enumerate(node)]
        else:
            name = path or (getattr(node, "name", "") or "column_0")
            out.append((name, node))
            return
        for key, child in children:
            walk(child, f"{path}.{key}" if path else key)

    walk(signature, "")
    return out
