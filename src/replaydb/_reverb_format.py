"""The bytes of a dm-reverb 0.14 checkpoint: framing, protocol buffers and tensors.

Private helpers of :mod:`replaydb._reverb_checkpoint`; no TensorFlow, no Reverb.

* **Files** (``tables``/``items``/``chunks.tfrecord``): one zlib stream around
  TFRecord framing, ``u64 length | u32 masked CRC32C(length) | bytes | u32 masked
  CRC32C(bytes)`` (little-endian; mask ``((c >> 15) | (c << 17)) + 0xa282ead8``).
  Checkpoints older than Reverb's compression are plain TFRecord files; a file that
  is not a zlib stream is read as one.
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

import struct
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from replaydb.errors import CheckpointError, require

__all__ = [
    "DTYPES",
    "MAX_INFLATE_RATIO",
    "crc32c_many",
    "decode_chunk_tensor",
    "decode_plain_tensor",
    "masked_crc32c",
    "messages",
    "read_records",
]

#: deflate cannot expand data by more than ~1032x; larger outputs are corrupt.
MAX_INFLATE_RATIO = 1100
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

# ---------------------------------------------------------------- CRC32C
_CRC_TABLE: list[int] = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def _crc32c_py(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


_NP_TABLE = np.array(_CRC_TABLE, dtype=np.uint32)


def _crc32c_np(data: bytes) -> int:
    """CRC32C of long inputs in numpy: lanes in parallel, then combined.

    The input is cut into ``B`` lanes of ``L`` bytes; every lane's CRC register
    (started at 0) advances one byte per step, for all lanes at once. The CRC is
    linear over GF(2), so the whole register is then folded lane by lane:
    ``R = zeros_L(R) ^ lane_i``, where ``zeros_L`` (the effect of ``L`` zero bytes)
    is a fixed linear map, applied through four 256-entry tables.
    """
    n = len(data)
    lanes = 16384 if n >= 1 << 22 else 1024
    length = n // lanes
    table = _NP_TABLE
    grid = np.ascontiguousarray(
        np.frombuffer(data, dtype=np.uint8, count=lanes * length).reshape(lanes, length).T
    )
    regs = np.zeros(lanes, dtype=np.uint32)
    for row in grid:
        regs = table[(regs ^ row) & 0xFF] ^ (regs >> 8)
    cols = np.left_shift(np.uint32(1), np.arange(32, dtype=np.uint32))
    for _ in range(length):
        cols = table[cols & 0xFF] ^ (cols >> 8)
    values = np.arange(256)
    maps = []
    for byte in range(4):
        m = np.zeros(256, dtype=np.uint32)
        for bit in range(8):
            m[(values >> bit) & 1 == 1] ^= cols[8 * byte + bit]
        maps.append(m.tolist())
    m0, m1, m2, m3 = maps
    crc = 0xFFFFFFFF
    for lane in regs.tolist():
        crc = m0[crc & 0xFF] ^ m1[(crc >> 8) & 0xFF] ^ m2[(crc >> 16) & 0xFF] ^ m3[crc >> 24] ^ lane
    for b in data[lanes * length :]:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _crc32c_any(data: bytes) -> int:
    return _crc32c_np(data) if len(data) >= 1 << 16 else _crc32c_py(data)


def _crc32c_impl() -> Any:
    try:  # a C implementation when one is installed; numpy and table loops otherwise
        import google_crc32c

        return google_crc32c.value
    except ImportError:
        return _crc32c_any


_crc32c = _crc32c_impl()


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC32C (Castagnoli) of ``data``.

    Example:
        >>> hex(masked_crc32c(b"123456789"))
        '0x4fa0c71a'
    """
    return _mask(int(_crc32c(data)))


# ---------------------------------------------------------------- files
_CHUNK = 1 << 16


class _Stream:
    """The bytes of a file, inflated on demand when it is a zlib stream.

    Reading record by record keeps memory near the largest record: a damaged header
    is caught before the rest of the stream is inflated, and a stream may not
    inflate past ``MAX_INFLATE_RATIO`` times its size.
    """

    def __init__(self, raw: bytes, where: str) -> None:
        self.raw, self.where, self.pos = raw, where, 0
        # A zlib stream starts with CMF 0x78 and a header whose 16-bit value is a
        # multiple of 31 (Reverb itself tries zlib first, then plain records).
        zlib_header = len(raw) >= 2 and raw[0] == 0x78 and ((raw[0] << 8) | raw[1]) % 31 == 0
        self.z = zlib.decompressobj() if zlib_header else None
        self.buf = bytearray()
        self.total = 0
        self.limit = MAX_INFLATE_RATIO * len(raw) + 4096

    def _fill(self, n: int) -> None:
        z = self.z
        assert z is not None
        while len(self.buf) < n and not z.eof:
            if z.unconsumed_tail:
                data = z.unconsumed_tail
            elif self.pos < len(self.raw):
                data = self.raw[self.pos : self.pos + _CHUNK]
                self.pos += len(data)
            else:
                return
            try:
                out = z.decompress(data, max(n - len(self.buf), _CHUNK))
            except zlib.error as exc:
                raise CheckpointError(f"{self.where}: the zlib stream is corrupt ({exc})") from exc
            self.total += len(out)
            if self.total > self.limit:
                raise CheckpointError(
                    f"{self.where}: the zlib stream inflates to more than {self.limit} bytes, "
                    "which no valid stream of this size does; the file is corrupt"
                )
            self.buf += out

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer only at the end of the data)."""
        if self.z is None:
            out = self.raw[self.pos : self.pos + n]
            self.pos += len(out)
            return out
        self._fill(n)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def finish(self) -> None:
        """Check that a zlib stream ended cleanly, with nothing after it."""
        if self.z is None:
            return
        if not self.z.eof:
            raise CheckpointError(f"{self.where}: the zlib stream is truncated (no end marker)")
        stray = len(self.z.unused_data) + len(self.raw) - self.pos
        if stray:
            raise CheckpointError(
                f"{self.where}: {stray} stray bytes after the zlib stream; the file is corrupt"
            )


def _crc32c_lanes(payloads: Sequence[bytes]) -> list[int]:
    """CRC32C of many short inputs at once, one numpy lane each.

    Inputs are right-aligned in a zero-padded grid: a CRC register at 0 stays 0
    while it reads zeros, so each lane gets its initial value (``0xFFFFFFFF``) at
    the step where its own bytes begin.
    """
    k = len(payloads)
    lengths = np.fromiter((len(p) for p in payloads), dtype=np.int64, count=k)
    m = int(lengths.max())
    grid = np.zeros((k, m), dtype=np.uint8)
    for i, p in enumerate(payloads):
        if p:
            grid[i, m - len(p) :] = np.frombuffer(p, dtype=np.uint8)
    columns = np.ascontiguousarray(grid.T)
    starts = m - lengths
    order = np.argsort(starts, kind="stable")
    bounds = np.searchsorted(starts[order], np.arange(m + 2))
    regs = np.zeros(k, dtype=np.uint32)
    table = _NP_TABLE
    for j in range(m + 1):
        begin = order[bounds[j] : bounds[j + 1]]
        if begin.size:
            regs[begin] ^= np.uint32(0xFFFFFFFF)
        if j < m:
            regs = table[(regs ^ columns[j]) & 0xFF] ^ (regs >> 8)
    return [int(c) for c in regs ^ np.uint32(0xFFFFFFFF)]


def crc32c_many(payloads: Sequence[bytes]) -> list[int]:
    """CRC32C of each input (grouped by length into numpy lanes; long ones alone).

    Example:
        >>> [hex(c) for c in crc32c_many([b"123456789", b""])]
        ['0xe3069283', '0x0']
    """
    out = [0] * len(payloads)
    short: list[int] = []
    for i, p in enumerate(payloads):
        if len(p) >= 1 << 16:
            out[i] = int(_crc32c(p))
        else:
            short.append(i)
    if _crc32c is not _crc32c_any:  # a C implementation is installed
        for i in short:
            out[i] = int(_crc32c(payloads[i]))
        return out
    short.sort(key=lambda i: len(payloads[i]))
    start = 0
    while start < len(short):
        # Lengths within ~25% of each other share a grid, so padding stays small.
        top = len(payloads[short[start]]) * 5 // 4 + 64
        end = start
        while end < len(short) and len(payloads[short[end]]) <= top and end - start < 65536:
            end += 1
        group = short[start:end]
        if len(group) < 8:
            for i in group:
                out[i] = _crc32c_py(payloads[i])
        else:
            for i, c in zip(group, _crc32c_lanes([payloads[i] for i in group]), strict=True):
                out[i] = c
        start = end
    return out


def _mask(c: int) -> int:
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(raw: bytes, where: str, *, verify: bool = True) -> Iterator[tuple[int, bytes]]:
    """``(index, payload)`` of every TFRecord in a checkpoint file's bytes.

    Each length's CRC is checked as its header is read (so a damaged header stops
    the read before more is inflated); the payloads' CRCs are checked together
    once the file is read, before any record is returned.

    Args:
        raw: The file's bytes (a zlib stream, or plain TFRecords for old checkpoints).
        where: The file's name, for error messages.
        verify: Check both CRCs of every record.

    Raises:
        CheckpointError: For an empty file, a corrupt stream, a truncated record or a
            CRC mismatch.
    """
    if not raw:
        raise CheckpointError(
            f"{where} is empty; Reverb writes at least a zlib header, so the file was truncated"
        )
    stream = _Stream(raw, where)
    index = 0
    records: list[bytes] = []
    crcs: list[int] = []
    while True:
        head = stream.read(12)
        if not head:
            break
        if len(head) < 12:
            raise CheckpointError(
                f"{where}: record {index} is truncated ({len(head)} bytes left, a header needs 12)"
            )
        length, len_crc = struct.unpack("<QI", head)
        if verify and masked_crc32c(head[:8]) != len_crc:
            raise CheckpointError(f"{where}: record {index}: the length's CRC does not match")
        if stream.z is None and length > len(raw) - stream.pos:
            raise CheckpointError(
                f"{where}: record {index} claims {length} bytes but only "
                f"{len(raw) - stream.pos} remain; the file is truncated or corrupt"
            )
        payload = stream.read(length)
        tail = stream.read(4)
        if len(payload) < length or len(tail) < 4:
            raise CheckpointError(
                f"{where}: record {index} claims {length} bytes but the data ends "
                f"after {len(payload)}; the file is truncated or corrupt"
            )
        records.append(payload)
        crcs.append(struct.unpack("<I", tail)[0])
        index += 1
    stream.finish()
    if verify:
        for i, (c, want) in enumerate(zip(crc32c_many(records), crcs, strict=True)):
            if _mask(c) != want:
                raise CheckpointError(f"{where}: record {i}: the payload's CRC does not match")
    return enumerate(records)


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
