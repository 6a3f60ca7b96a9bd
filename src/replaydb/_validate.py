"""The argument checks every verb shares: one place, one message per check.

Each check names the argument, the value, what was expected and the fix, and runs
before anything is written, so a rejected call leaves its object as it was. The
column helpers turn user values (scalars, lists, numpy arrays, tensors) into the
int64/float64 tensors a table stores. Table construction checks live in
:mod:`replaydb._table_checks`; the codes checked here in :mod:`replaydb._constants`.
"""

from __future__ import annotations

import math
from typing import Any, TypeGuard

import numpy as np
import torch

from replaydb._constants import END_NONE, END_TERMINATED, END_TRUNCATED
from replaydb.errors import InvalidArgumentError, InvalidTypeError
from replaydb.spec import dtype_name


def check_int(
    name: str, value: Any, minimum: int | None = None, *, what: str = "an int", hint: str = ""
) -> int:
    """``value`` as an int, or raise naming ``name``: Python and numpy ints, never bools.

    ``what`` names the expected kind in the message (e.g. ``"None or an int"``) and
    ``hint`` follows the bound (e.g. ``" (frames per step)"``).
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int | np.integer)
        or (minimum is not None and value < minimum)
    ):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise InvalidArgumentError(f"{name} must be {what}{bound}{hint}, got {value!r}")
    return int(value)


def is_int(value: Any) -> TypeGuard[int | np.integer[Any]]:
    """Whether ``value`` is a Python or numpy int (not a bool)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """Whether ``value`` is a real Python or numpy number (not a bool)."""
    return not isinstance(value, bool) and isinstance(value, int | float | np.integer | np.floating)


def check_unit_interval(name: str, value: Any) -> float:
    """``value`` as a float in [0, 1], or raise naming ``name`` (ints and floats, not bools)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise InvalidArgumentError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def priority_column(
    priorities: Any, n: int, device: torch.device | None = None, limit: float = math.inf
) -> torch.Tensor:
    """``[n]`` float64 priorities from a scalar or ``[n]`` values, each finite, > 0, <= limit."""
    p = float_column("priorities", priorities, device or torch.device("cpu"))
    if p.dim() == 0:
        p = p.expand(n)
    if p.shape != (n,):
        raise InvalidArgumentError(
            f"priorities must be a scalar or have shape ({n},), got {tuple(p.shape)}"
        )
    check_priority_values(p, limit)
    return p


def check_priority_values(p: torch.Tensor, limit: float = math.inf) -> None:
    bad = ~torch.isfinite(p) | (p <= 0)
    if bool(bad.any()):
        first = float(p[bad][0])
        raise InvalidArgumentError(
            f"priorities must be finite and > 0, got {first} at index "
            f"{int(torch.nonzero(bad)[0, 0])}; clamp TD errors with e.g. abs(td) + 1e-6"
        )
    if limit < math.inf:
        high = p > limit
        if bool(high.any()):
            raise InvalidArgumentError(
                f"priorities must be at most {limit:.6g}, got {float(p[high][0]):g} at index "
                f"{int(torch.nonzero(high)[0, 0])}: the sampler's sum of (priority + eps) ** "
                "alpha over the table would overflow float64; scale priorities down or clip "
                "TD errors"
            )


def check_timeout(timeout: Any) -> None:
    if not is_number(timeout):
        raise InvalidTypeError(
            f"timeout must be None or a number >= 0 (seconds), got {timeout!r} "
            f"({type(timeout).__name__})"
        )
    if not timeout >= 0:  # NaN fails too
        raise InvalidArgumentError(
            f"timeout must be None or a number >= 0 (seconds), got {timeout}"
        )


def kind_error(name: str, value: Any, expected: str) -> InvalidTypeError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return InvalidTypeError(f"{name} must be {expected}, got {shown} ({type(value).__name__})")


def check_numbers(name: str, value: Any) -> None:
    """Raise unless ``value`` holds real numbers (a tensor, an array, numbers or lists of them)."""
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.dtype.is_complex:
            raise kind_error(name, value, "real numbers")
        return
    if isinstance(value, int | float) and not isinstance(value, bool):
        return
    try:
        kind = np.asarray(value).dtype.kind
    except (TypeError, ValueError):
        kind = "O"
    if kind not in "iuf":
        raise kind_error(name, value, "real numbers")


def check_keys(keys: Any) -> None:
    """Raise unless ``keys`` are whole numbers (ints, or floats with integral values)."""
    if isinstance(keys, torch.Tensor):
        dt = keys.dtype
        if dt == torch.bool or dt.is_complex:
            raise kind_error("keys", keys, "integer item keys (Sample.keys)")
        if not dt.is_floating_point:
            return
        k = keys.detach()
        bad = ~torch.isfinite(k) | (k != k.trunc())
        if bool(bad.any()):
            raise InvalidArgumentError(
                f"keys must be whole numbers (item keys from Sample.keys), got "
                f"{float(k[bad].reshape(-1)[0])}"
            )
        return
    try:
        arr = np.asarray(keys)
    except (TypeError, ValueError):
        raise kind_error("keys", keys, "integer item keys (Sample.keys)") from None
    if arr.dtype.kind in "iu":
        return
    if arr.dtype.kind != "f":
        raise kind_error("keys", keys, "integer item keys (Sample.keys)")
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(arr) | (arr != np.trunc(arr))
    if bad.any():
        raise InvalidArgumentError(
            f"keys must be whole numbers (item keys from Sample.keys), got {arr[bad].flat[0]}"
        )


def float_column(name: str, value: Any, device: torch.device) -> torch.Tensor:
    check_numbers(name, value)
    if isinstance(value, torch.Tensor):
        return value.detach().to(device, torch.float64)
    return torch.as_tensor(value, dtype=torch.float64, device=device)


def as_numpy(value: Any, dtype: type[np.generic]) -> np.ndarray[Any, Any]:
    """A flat numpy copy-free view of a CPU tensor or array, cast to ``dtype``."""
    if (
        isinstance(value, torch.Tensor)
        and value.is_cpu
        and not value.requires_grad
        and value.dtype is not torch.bfloat16
    ):
        arr = value.numpy()
        if arr.dtype == dtype and arr.ndim == 1 and arr.flags.c_contiguous:
            return arr
        return np.ascontiguousarray(arr, dtype=dtype).reshape(-1)
    if isinstance(value, torch.Tensor):
        value = value.detach()
        if value.device.type != "cpu":
            value = value.cpu()
        arr = value.numpy() if value.dtype != torch.bfloat16 else value.float().numpy()
    else:
        arr = np.asarray(value)
    return np.ascontiguousarray(arr, dtype=dtype).reshape(-1)


def int_column(name: str, value: Any, n: int, device: torch.device, default: int) -> torch.Tensor:
    if value is None:
        return torch.full((n,), default, dtype=torch.int64, device=device)
    try:
        t = torch.as_tensor(value, device=device)
    except (TypeError, ValueError, RuntimeError):
        raise kind_error(name, value, f"an int or {n} ints") from None
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.dtype.is_complex:
        raise InvalidArgumentError(f"{name} must be integers, got dtype {dtype_name(t.dtype)}")
    t = t.to(torch.int64)
    if t.dim() == 0:
        return t.expand(n).clone()
    if t.shape != (n,):
        raise InvalidArgumentError(
            f"{name} must be a scalar or have shape ({n},), got {tuple(t.shape)}"
        )
    return t


def stream_column(name: str, value: Any, n: int, device: torch.device) -> torch.Tensor:
    """``[n]`` int64 stream ids (default 0), each >= 0."""
    t = int_column(name, value, n, device, 0)
    if n and int(t.min()) < 0:
        raise InvalidArgumentError(
            f"{name} must be >= 0, got {int(t.min())}; number streams from 0"
        )
    return t


def end_column(value: Any, n: int, device: torch.device) -> torch.Tensor:
    if value is None or value is False:
        return torch.zeros(n, dtype=torch.int64, device=device)
    if value is True:
        return torch.full((n,), END_TERMINATED, dtype=torch.int64, device=device)
    try:
        t = torch.as_tensor(value, device=device)
    except (TypeError, ValueError, RuntimeError):
        raise kind_error(
            "ends", value, "bools or end codes 0 (none), 1 (terminated), 2 (truncated)"
        ) from None
    if t.dtype.is_complex:
        raise kind_error("ends", value, "bools or end codes 0, 1, 2")
    if t.dtype.is_floating_point and bool(((t != 0) & (t != 1)).any()):
        raise InvalidArgumentError("ends given as floats must be 0.0 or 1.0")
    t = t.to(torch.int64).reshape(-1) if t.dim() else t.to(torch.int64).expand(n)
    if t.shape != (n,):
        raise InvalidArgumentError(
            f"ends must be a scalar or have shape ({n},), got {tuple(t.shape)}"
        )
    if bool(((t < END_NONE) | (t > END_TRUNCATED)).any()):
        raise InvalidArgumentError(
            "ends must be bools or codes 0 (not done), 1 (terminated), 2 (truncated)"
        )
    return t
