"""TFRecord files as TensorFlow and Reverb write them, read without TensorFlow.

A TFRecord file is a sequence of records ``u64 length | u32 masked CRC32C(length) |
payload | u32 masked CRC32C(payload)`` (little-endian; the mask is
``((c >> 15) | (c << 17)) + 0xa282ead8``). Reverb's checkpoint files wrap them in one
zlib stream (TensorFlow's ``ZLIB`` compression); older checkpoints are plain.

The CRC32C (Castagnoli) comes from ``google-crc32c`` when it is installed, else
from numpy: many short records at once, one lane each, or one long record cut into
lanes whose registers are then combined (the CRC is linear over GF(2)). Private
helper of :mod:`replaydb._reverb_checkpoint`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from replaydb.errors import CheckpointError

__all__ = ["MAX_INFLATE_RATIO", "crc32c_many", "masked_crc32c", "read_records"]

#: deflate cannot expand data by more than ~1032x; larger outputs are corrupt.
MAX_INFLATE_RATIO = 1100


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
        '0xc78ab0e5'
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
