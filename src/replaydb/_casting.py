"""Dtypes by name, and the checked conversion of user values to a field's dtype.

:meth:`Spec.coerce_batch <replaydb.spec.Spec.coerce_batch>` turns each value
(tensor, numpy array, nested lists, Python scalars) into a dense tensor of the
field's dtype on the table's device through :func:`coerce`. Casts are *checked* by
default: a conversion that would change a value (int64 ``300`` into ``uint8``, a
float into an integer field, a finite float64 that overflows float32) raises a
:class:`~replaydb.errors.SpecMismatchError` naming the field, unless the caller
passes ``cast="unsafe"``. The checks are one vectorized pass per converted field (a
compiled one on CPU, which converts at the same time), and cost nothing when the
dtypes already match. :mod:`replaydb.spec` re-exports the public names.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from replaydb import _kernels
from replaydb.errors import InvalidArgumentError, SpecMismatchError

if TYPE_CHECKING:
    from replaydb.spec import Field

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


def as_dtype(dtype: Any) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype_from_name(dtype_name(dtype))
    if isinstance(dtype, str):
        return dtype_from_name(dtype)
    try:
        return dtype_from_name(np.dtype(dtype).name)
    except TypeError as exc:
        raise InvalidArgumentError(
            f"dtype {dtype!r} is not a torch, numpy or string dtype; "
            f"expected one of {sorted(_DTYPES)}"
        ) from exc


#: How :meth:`Spec.coerce_batch` converts values to a field's dtype.
CASTS = ("checked", "unsafe")


def check_cast(cast: Any) -> None:
    """Raise unless ``cast`` is one of :data:`CASTS` (``"checked"`` or ``"unsafe"``).

    Raises:
        InvalidArgumentError: Naming the value and the accepted ones.
    """
    if cast not in CASTS:
        raise InvalidArgumentError(
            f"cast must be 'checked' (the default: reject casts that change a value) or "
            f"'unsafe' (convert as torch's .to() does), got {cast!r}"
        )


def to_tensor(name: str, value: Any, device: torch.device | None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value.detach()
        if t.layout is not torch.strided:
            raise SpecMismatchError(
                f"field {name!r}: got a tensor with layout {t.layout}; tables store dense "
                "tensors, convert it with .to_dense()"
            )
        if t.is_meta:
            raise SpecMismatchError(
                f"field {name!r}: got a tensor on the meta device, which holds no data; "
                "pass a tensor with values (e.g. on 'cpu')"
            )
        return t if device is None or t.device == device else t.to(device)
    try:
        if isinstance(value, np.ndarray):
            arr = np.ascontiguousarray(value)
            # torch warns on read-only arrays (frombuffer, memmaps); copy them instead.
            return torch.from_numpy(arr if arr.flags.writeable else arr.copy()).to(device)
        return torch.as_tensor(value, device=device)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise SpecMismatchError(
            f"field {name!r}: cannot convert {type(value).__name__} to a tensor ({exc})"
        ) from exc


_INT_RANGES: dict[torch.dtype, tuple[int, int]] = {torch.bool: (0, 1)}


def _int_range(dtype: torch.dtype) -> tuple[int, int]:
    got = _INT_RANGES.get(dtype)
    if got is None:
        info = torch.iinfo(dtype)
        got = _INT_RANGES[dtype] = (int(info.min), int(info.max))
    return got


_FLOAT_MAX: dict[torch.dtype, float] = {}


def _float_max(dtype: torch.dtype) -> float:
    got = _FLOAT_MAX.get(dtype)
    if got is None:
        got = _FLOAT_MAX[dtype] = float(torch.finfo(dtype).max)
    return got


def _check_float_overflow(name: str, src: torch.Tensor, out: torch.Tensor) -> None:
    """Raise if a finite value of ``src`` became infinite in ``out`` (its narrower copy)."""
    overflow = torch.isinf(out) & torch.isfinite(src)
    if bool(overflow.any()):
        bad = float(src[overflow].reshape(-1)[0])
        raise SpecMismatchError(
            f"field {name!r}: value {bad} overflows dtype {dtype_name(out.dtype)} "
            f"(largest {torch.finfo(out.dtype).max:g}); scale it, store the field as "
            "float64, or pass cast='unsafe' to store it as inf"
        )


def coerce(
    name: str, value: Any, field: Field, device: torch.device | None, cast: str = "checked"
) -> torch.Tensor:
    """Convert ``value`` to ``field.dtype``; with ``cast="checked"`` only if no value changes.

    Checked: ints and bools go into float fields; float64 goes into narrower float
    fields unless a finite value overflows to infinity; integers go into narrower
    integer (or bool) fields only when every value fits; floats never go into
    integer fields. Each check is one vectorized pass, made only when the dtypes
    differ. Complex values are always rejected.
    """
    t = to_tensor(name, value, device)
    dst = field.dtype
    if t.dtype == dst:
        return t
    if t.dtype.is_complex:
        raise SpecMismatchError(
            f"field {name!r}: expected dtype {dtype_name(dst)}, got complex "
            f"{dtype_name(t.dtype)}; store the real and imaginary parts as separate fields"
        )
    if cast == "unsafe":
        return t.to(dst)
    src_float = t.dtype.is_floating_point
    if dst.is_floating_point:
        if not (src_float and _float_max(t.dtype) > _float_max(dst)):
            return t.to(dst)  # ints and bools, or a float of no larger range: no overflow
        kernels = (
            _kernels.get()
            if t.device.type == "cpu" and t.dtype == torch.float64 and dst == torch.float32
            else None
        )
        if kernels is not None:
            # CPU float64 -> float32: convert and count infinities in one compiled pass.
            # numpy allocations and views: a fraction of torch's per-call cost.
            out_np = np.empty(t.shape, np.float32)
            out = torch.from_numpy(out_np)
            if t.numel() and kernels.narrow_float(t.numpy().reshape(-1), out_np.reshape(-1)):
                _check_float_overflow(name, t, out)
            return out
        out = t.to(dst)
        # One reduction: the sum is finite when no value became inf; else look closer
        # (a float32 sum can overflow, or infs and NaNs were in the input already).
        # Half types sum in float64, where their largest values cannot overflow.
        wide = torch.float64 if out.element_size() < 4 else None
        if out.numel() and not math.isfinite(out.sum(dtype=wide).item()):
            _check_float_overflow(name, t, out)
        return out
    if src_float:
        raise SpecMismatchError(
            f"field {name!r}: expected dtype {dtype_name(dst)}, got "
            f"{dtype_name(t.dtype)}; floats are not cast to integers implicitly, "
            f"convert with .to(torch.{dtype_name(dst)}) or pass cast='unsafe' if that is intended"
        )
    lo, hi = _int_range(dst)
    src_lo, src_hi = _int_range(t.dtype)
    if (src_lo < lo or src_hi > hi) and t.numel():
        kernels = _kernels.get() if t.device.type == "cpu" else None
        if kernels is not None:
            # CPU: convert and find the range in one compiled pass (faster than .to()).
            out = torch.empty(t.shape, dtype=dst)
            src_np, out_np = t.numpy().reshape(-1), out.numpy().reshape(-1)
            vmin, vmax = (int(v) for v in kernels.narrow(src_np, out_np))
            if vmin < lo or vmax > hi:
                raise SpecMismatchError(
                    f"field {name!r}: value {vmin if vmin < lo else vmax} does not fit dtype "
                    f"{dtype_name(dst)} (range [{lo}, {hi}]); convert it yourself, store the "
                    "field with a wider dtype, or pass cast='unsafe' to store it wrapped as "
                    "torch's .to() does"
                )
            return out
        flat = t.reshape(-1)
        if t.dtype == torch.uint64:
            # Same bits as int64: values >= 2**63 read as negative, and fit no field.
            flat = flat.view(torch.int64)
            if bool((flat < 0).any()):
                raise SpecMismatchError(
                    f"field {name!r}: value {int(flat[flat < 0][0]) + 2**64} does not fit "
                    f"dtype {dtype_name(dst)} (range [{lo}, {hi}]); convert it yourself, or "
                    "pass cast='unsafe' to store it wrapped as torch's .to() does"
                )
        vmin, vmax = (int(v) for v in torch.aminmax(flat.to(torch.int64)))
        if vmin < lo or vmax > hi:
            bad = vmin if vmin < lo else vmax
            raise SpecMismatchError(
                f"field {name!r}: value {bad} does not fit dtype {dtype_name(dst)} (range "
                f"[{lo}, {hi}]); convert it yourself, store the field with a wider dtype, or "
                "pass cast='unsafe' to store it wrapped as torch's .to() does"
            )
    return t.to(dst)
