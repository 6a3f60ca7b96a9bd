"""The row writer's compiled writes: checked sources, their addresses, one kernel call.

:class:`replaydb._rows.RowWriter` binds these as methods (``expect_step``,
``add_step``, ``_sources``) and calls :func:`setup` from its constructor. Where the
table uses numba, a step of ``ReplayBuffer.add`` (four 1-D parts, two numbers) and a
block of ``add_multi`` (six columns) are copied from their tensors' addresses into
the ring, with their records, by one call of :mod:`replaydb._row_kernels`; every
source is checked first (type, shape, dtype, device, contiguity) and anything else
takes the writer's torch/numpy path, so the table ends in the same state either way
(``tests/test_rows_put.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from replaydb import _row_kernels
from replaydb.errors import InvalidArgumentError

if TYPE_CHECKING:
    from replaydb._rows import RowWriter

__all__ = ["add_step", "expect_step", "setup", "sources"]

_INF = float("inf")
_TENSOR = torch.Tensor
_F32 = torch.float32
_get_ident = threading.get_ident
_F32_MAX = float(np.finfo(np.float32).max)  # floats that round to a finite float32
_F32_INT = 1 << 24  # ints that float32 holds exactly


def setup(w: RowWriter, kernels: SimpleNamespace | None) -> None:
    """Give ``w`` its compiled writes where ``kernels`` (the table's) is not ``None``
    and the table's columns have the layout the kernels assume: the context array
    (addresses of the ring, the record columns and the staging row) and the kernels.
    """
    stride = w._item_key.strides[0]
    if not (
        kernels is not None
        and w._itemsize % 4 == 0
        and w._np_group.flags.c_contiguous
        and w._priority.strides[0] == w._times.strides[0] == stride
        and stride % 8 == 0
        and all(a.flags.c_contiguous for a in (w._key, w._stream, w._end))
        and w._key.dtype == w._stream.dtype == w._end.dtype == np.int64
        and w._item_key.dtype == w._times.dtype == np.int64
        and w._priority.dtype == np.float64
    ):
        return
    c = w._ctx
    c[_row_kernels.CTX_RING] = w._np_group.ctypes.data
    c[_row_kernels.CTX_CAP] = w._capacity
    c[_row_kernels.CTX_WORDS] = w.width * w._itemsize // 4
    c[_row_kernels.CTX_KEY] = w._key.ctypes.data
    c[_row_kernels.CTX_STREAM] = w._stream.ctypes.data
    c[_row_kernels.CTX_END] = w._end.ctypes.data
    c[_row_kernels.CTX_ITEM_KEY] = w._item_key.ctypes.data
    c[_row_kernels.CTX_PRIORITY] = w._priority.ctypes.data
    c[_row_kernels.CTX_TIMES] = w._times.ctypes.data
    c[_row_kernels.CTX_ITEM_STRIDE] = stride // 8
    c[_row_kernels.CTX_STAGE] = w._stage.ctypes.data
    w._put = kernels.put_rows
    w._put_row = kernels.put_row
    w._kernel_step = kernels.put_step


def expect_step(self: RowWriter, sizes: Sequence[int]) -> None:
    """Declare the sizes of the four 1-D parts that :meth:`add_step` gets.

    Args:
        sizes: The four parts' sizes, in order; with the two numbers they fill
            the row (``sum(sizes) + 2`` is its width; a writer with ``scalars=2``).

    Raises:
        InvalidArgumentError: If there are not four ints >= 0 adding up to the
            row's width less 2, or the writer has another ``scalars``.
    """
    ss = tuple(sizes)
    if (
        len(ss) != _row_kernels.STEP_PARTS
        or not all(type(v) is int and v >= 0 for v in ss)
        or sum(ss) + 2 != self.width
        or self.scalars != 2
    ):
        raise InvalidArgumentError(
            f"sizes must be {_row_kernels.STEP_PARTS} ints >= 0 adding up to the "
            f"row's width less 2 ({self.width - 2}) on a writer with scalars=2, got "
            f"{ss!r} (scalars={self.scalars})"
        )
    self._step_shapes = tuple(torch.Size((v,)) for v in ss)
    # A 1-element tensor can carry torch's negative bit and be contiguous; a
    # longer 1-D one with that bit (a conjugate's imaginary part) has stride 2.
    self._step_neg = 1 in ss
    if self._put is not None and self.dtype is torch.float32:
        c = self._ctx
        c[_row_kernels.CTX_STEP : _row_kernels.CTX_STEP + len(ss)] = ss
        c[_row_kernels.CTX_STEP + len(ss)] = self.width - 2
        self._put_step = self._kernel_step


def add_step(
    self: RowWriter,
    p0: torch.Tensor,
    p1: torch.Tensor,
    p2: torch.Tensor,
    p3: torch.Tensor,
    x: Any,
    y: Any,
) -> bool:
    """``add((p0, p1, p2, p3), (x, y))`` of parts of the sizes declared with
    :meth:`expect_step`, which are checked here (each 1-D of its size).

    Where the table uses numba, C-contiguous float32 CPU parts and numbers that
    float32 holds (floats in its range, bools, ints up to 2**24 in magnitude)
    are copied from their addresses into the ring with the step's records in
    one compiled call (the data of parts that require grad too, as ``detach``);
    the rest goes through :meth:`add`.

    Returns:
        ``True`` if the step was written; ``False`` (nothing written) for a part
        of another shape, or where :meth:`add` refuses.
    """
    shapes = self._step_shapes
    tensor = _TENSOR
    if not (
        type(p0) is tensor
        and type(p1) is tensor
        and type(p2) is tensor
        and type(p3) is tensor
        and p0.shape == shapes[0]
        and p1.shape == shapes[1]
        and p2.shape == shapes[2]
        and p3.shape == shapes[3]
    ):
        return False
    put = self._put_step
    table = self.table
    if put is None or table._fast_insert is None:
        return self.add((p0, p1, p2, p3), (x, y))
    tx = type(x)
    ty = type(y)
    f32 = _F32
    try:
        if not (
            (tx is float and -_F32_MAX <= x <= _F32_MAX)
            or tx is bool
            or (tx is int and -_F32_INT <= x <= _F32_INT)
        ) or not (
            (ty is float and -_F32_MAX <= y <= _F32_MAX)
            or ty is bool
            or (ty is int and -_F32_INT <= y <= _F32_INT)
        ):
            return self.add((p0, p1, p2, p3), (x, y))
        if not (
            p0.dtype is f32
            and p1.dtype is f32
            and p2.dtype is f32
            and p3.dtype is f32
            and p0.is_cpu
            and p1.is_cpu
            and p2.is_cpu
            and p3.is_cpu
            and p0.is_contiguous()
            and p1.is_contiguous()
            and p2.is_contiguous()
            and p3.is_contiguous()
        ) or (self._step_neg and (p0.is_neg() or p1.is_neg() or p2.is_neg() or p3.is_neg())):
            return self.add((p0, p1, p2, p3), (x, y))
        a0, a1, a2, a3 = p0.data_ptr(), p1.data_ptr(), p2.data_ptr(), p3.data_ptr()
    except RuntimeError:  # no data pointer (an mkldnn tensor)
        return self.add((p0, p1, p2, p3), (x, y))
    self._acquire()
    try:
        lim = table.rate_limiter
        if lim.max_diff != _INF and not lim.can_insert(1, table._size):
            return False
        storage = table.storage
        total = storage.total
        # x * 1.0, not x + 0.0: a float for numba (bools, ints) that keeps -0.0's sign.
        fresh = put(self._ctx, total, table._max_priority, a0, a1, a2, a3, x * 1.0, y * 1.0)
        if fresh >= 0:  # else a part overlaps the row written: add's staging row
            table._threads.add(_get_ident())
            storage.total = total + 1
            if fresh:
                table._fast_insert(total % self._capacity, 1)
                table._size += 1
            elif not self._uniform:
                table._fast_insert(total % self._capacity, 1)
            lim.inserts += 1
            if table._waiting:
                table.locked().notify_all()
            return True
    finally:
        self._release()
    return self.add((p0, p1, p2, p3), (x, y))


def sources(
    self: RowWriter, columns: tuple[torch.Tensor, ...], n: int
) -> tuple[tuple[int, ...], list[int]] | bool | None:
    """How :meth:`extend` writes ``columns``: by the compiled call or by torch.

    Returns the columns' widths in 4-byte words and their addresses where the
    compiled write applies: at most ``MAX_COLUMNS`` C-contiguous CPU tensors of
    the table's dtype that do not require grad (torch refuses those), each
    ``[n, w]`` (or ``[n]`` for a declared width of 1), adding up to the row's
    width, ``n > 1``. Otherwise ``True`` (torch's
    concatenation checks and writes them), or ``None`` where the widths were
    declared with :meth:`expect` and a column has another shape.

    A tensor with the negative bit set (the imaginary part of a conjugated
    complex tensor) is never C-contiguous with more than one element, so
    ``n > 1`` keeps such views on torch's path, which resolves the bit.
    """
    expect = self._expect
    tensor = torch.Tensor
    ptrs = [0] * _row_kernels.MAX_COLUMNS
    if expect is not None:
        if type(columns) is not tuple or len(columns) != len(expect):
            return None
        shapes = self._shapes
        if shapes[0][0] != n:
            shapes = self._shapes = [torch.Size((n, w)) for w in expect]
        direct = self._put is not None and n > 1 and len(expect) <= _row_kernels.MAX_COLUMNS
        dt = self.dtype
        if direct and len(columns) == 6:  # add_multi's six columns, unrolled
            c0, c1, c2, c3, c4, c5 = columns
            try:
                if (
                    type(c0) is tensor
                    and type(c1) is tensor
                    and type(c2) is tensor
                    and type(c3) is tensor
                    and type(c4) is tensor
                    and type(c5) is tensor
                    and c0.shape == shapes[0]
                    and c1.shape == shapes[1]
                    and c2.shape == shapes[2]
                    and c3.shape == shapes[3]
                    and c4.shape == shapes[4]
                    and c5.shape == shapes[5]
                    and c0.dtype is dt
                    and c1.dtype is dt
                    and c2.dtype is dt
                    and c3.dtype is dt
                    and c4.dtype is dt
                    and c5.dtype is dt
                    and c0.is_cpu
                    and c1.is_cpu
                    and c2.is_cpu
                    and c3.is_cpu
                    and c4.is_cpu
                    and c5.is_cpu
                    and c0.is_contiguous()
                    and c1.is_contiguous()
                    and c2.is_contiguous()
                    and c3.is_contiguous()
                    and c4.is_contiguous()
                    and c5.is_contiguous()
                ):
                    addresses = [
                        c0.data_ptr(),
                        c1.data_ptr(),
                        c2.data_ptr(),
                        c3.data_ptr(),
                        c4.data_ptr(),
                        c5.data_ptr(),
                    ]
                    return self._expect_words, addresses
            except RuntimeError:  # a tensor without a data pointer (mkldnn)
                direct = False
        j = 0
        try:
            for c in columns:
                if type(c) is not tensor:
                    return None
                if c.shape != shapes[j] and (expect[j] != 1 or c.shape != (n,)):
                    return None
                if direct:
                    if c.dtype is dt and c.is_cpu and c.is_contiguous():
                        ptrs[j] = c.data_ptr()  # (of a tensor that requires grad too)
                    else:
                        direct = False
                j += 1
        except RuntimeError:  # a tensor without a data pointer (mkldnn)
            direct = False
        return (self._expect_words, ptrs) if direct else True
    if self._put is None or n < 2 or len(columns) > _row_kernels.MAX_COLUMNS:
        return True
    dt = self.dtype
    words = self._itemsize // 4
    widths = []
    total = j = 0
    try:
        for c in columns:
            if (
                type(c) is not tensor
                or c.dtype is not dt
                or not c.is_cpu
                or c.requires_grad
                or not c.is_contiguous()
            ):
                return True
            shape = c.shape
            if len(shape) != 2 or shape[0] != n:
                return True
            w = shape[1]
            total += w
            widths.append(w * words)
            ptrs[j] = c.data_ptr()
            j += 1
    except RuntimeError:  # a tensor without a data pointer (mkldnn)
        return True
    if total != self.width:
        return True
    return tuple(widths), ptrs
