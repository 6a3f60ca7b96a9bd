"""Argument checks and column conversion for :class:`~replaydb.table.Table`'s verbs.

Every check names the argument, the value, what was expected and the fix, and runs
before anything is written, so a rejected call leaves the table as it was. The
column helpers turn user values (scalars, lists, numpy arrays, tensors) into the
int64/float64 tensors the table stores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from replaydb.errors import InvalidArgumentError, InvalidTypeError
from replaydb.rate_limiters import RateLimiter
from replaydb.samplers import Sampler
from replaydb.spec import Spec, dtype_name
from replaydb.storage import END_NONE, END_TERMINATED, END_TRUNCATED

#: How a frame stack pads where an episode has fewer than ``k`` earlier frames.
FRAME_PADS = ("first", "zeros")


def check_table_args(
    spec: Spec | Mapping[str, Any],
    capacity: Any,
    sampler: Any,
    rate_limiter: Any,
    sequence_length: Any,
    max_times_sampled: Any,
    name: Any,
    pad: Any,
) -> Spec:
    """Check ``Table``'s constructor arguments but the sequence options; return the spec
    as a :class:`~replaydb.spec.Spec`."""
    if not isinstance(spec, Spec):
        if not isinstance(spec, Mapping):
            raise InvalidTypeError(
                f"spec must be a Spec or a mapping of field name -> Field or shape, got "
                f"{type(spec).__name__}; e.g. Spec({{'obs': (4,), 'reward': ()}})"
            )
        spec = Spec(spec)
    if sampler is not None and not isinstance(sampler, Sampler):
        raise InvalidTypeError(
            f"sampler must be a sampler object such as replaydb.samplers.Uniform() or "
            f"Prioritized(alpha=0.6), got {sampler!r} ({type(sampler).__name__})"
        )
    if rate_limiter is not None and not isinstance(rate_limiter, RateLimiter):
        raise InvalidTypeError(
            f"rate_limiter must be a rate limiter object such as "
            f"replaydb.rate_limiters.MinSize(1) or SampleToInsertRatio(...), got "
            f"{rate_limiter!r} ({type(rate_limiter).__name__})"
        )
    if not isinstance(name, str):
        raise InvalidTypeError(f"name must be a string, got {name!r}")
    if not isinstance(pad, bool):
        raise InvalidArgumentError(f"pad must be a bool, got {pad!r}")
    if pad and sequence_length == 1:
        raise InvalidArgumentError(
            "pad=True needs sequence_length > 1 (single steps never run past an "
            "episode end); drop pad or set sequence_length"
        )
    if (
        isinstance(sequence_length, bool)
        or not isinstance(sequence_length, int)
        or (sequence_length < 1)
    ):
        raise InvalidArgumentError(f"sequence_length must be an int >= 1, got {sequence_length!r}")
    if max_times_sampled is not None and (
        isinstance(max_times_sampled, bool)
        or not isinstance(max_times_sampled, int)
        or max_times_sampled < 1
    ):
        raise InvalidArgumentError(
            f"max_times_sampled must be None or an int >= 1, got {max_times_sampled!r}"
        )
    if (
        isinstance(capacity, int)
        and not isinstance(capacity, bool)
        and (0 < capacity < sequence_length)
    ):
        raise InvalidArgumentError(
            f"capacity ({capacity}) must be at least sequence_length ({sequence_length}) "
            "or no item could ever be complete"
        )
    return spec


def check_sequence_options(
    spec: Spec,
    sequence_length: int,
    stride: Any,
    final_step: Any,
    frame_stack: Any,
    max_times_sampled: int | None,
    sampler: Sampler | None,
) -> dict[str, tuple[int, str]]:
    """Check ``stride``, ``final_step`` and ``frame_stack``; return the frame stack as
    ``name -> (k, pad)``."""
    if isinstance(stride, bool) or not isinstance(stride, int | np.integer) or stride < 1:
        raise InvalidArgumentError(
            f"stride must be an int >= 1 (windows start every stride steps of an episode), "
            f"got {stride!r}"
        )
    if stride > 1 and sequence_length == 1:
        raise InvalidArgumentError(
            f"stride={stride} needs sequence_length > 1 (it spaces the windows of a "
            "sequence table); drop stride or set sequence_length"
        )
    if not isinstance(final_step, bool):
        raise InvalidArgumentError(f"final_step must be a bool, got {final_step!r}")
    if frame_stack is None:
        return {}
    if not isinstance(frame_stack, Mapping):
        raise InvalidTypeError(
            f"frame_stack must be a mapping of field name -> k or (k, pad), got "
            f"{frame_stack!r} ({type(frame_stack).__name__}); e.g. frame_stack={{'obs': 4}}"
        )
    out: dict[str, tuple[int, str]] = {}
    for name, value in frame_stack.items():
        if name not in spec:
            raise InvalidArgumentError(
                f"frame_stack names field {name!r}, which the spec does not have; "
                f"fields are {list(spec)}"
            )
        if isinstance(value, tuple | list):
            if len(value) != 2:
                raise InvalidArgumentError(
                    f"frame_stack[{name!r}] must be k or (k, pad), got {value!r}"
                )
            k, pad = value
        else:
            k, pad = value, "first"
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise InvalidArgumentError(
                f"frame_stack[{name!r}]: k must be an int >= 1 (frames per step), got {k!r}"
            )
        if pad not in FRAME_PADS:
            raise InvalidArgumentError(
                f"frame_stack[{name!r}]: pad must be one of {FRAME_PADS}, got {pad!r}"
            )
        out[str(name)] = (int(k), str(pad))
    if out and sampler is not None and sampler.deterministic and max_times_sampled is not None:
        raise InvalidArgumentError(
            "frame_stack needs a ring that overwrites oldest first (it follows episode "
            "links), but a selector with max_times_sampled writes into free rows; use a "
            "sampling table (e.g. Uniform) or drop frame_stack"
        )
    return out


def preset_capacity(size: int, sequence_length: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InvalidArgumentError(f"size must be an int >= 1, got {size!r}")
    if (
        isinstance(sequence_length, bool)
        or not isinstance(sequence_length, int)
        or (sequence_length < 1)
    ):
        raise InvalidArgumentError(f"sequence_length must be an int >= 1, got {sequence_length!r}")
    # ``size`` overlapping windows of one stream need size + T - 1 steps.
    return size + sequence_length - 1


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


def field_hint(spec: Spec) -> str:
    return ", ".join(f"{k!r}: ..." for k in list(spec)[:3]) + (", ..." if len(spec) > 3 else "")


def check_timeout(timeout: Any) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float | np.integer | np.floating):
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
