"""The checks of :class:`~replaydb.table.Table`'s constructor and presets.

Every argument is checked (and the table's size against free memory) before
anything is allocated; each check names the argument, the value, what was expected
and the fix. The checks that every verb shares live in :mod:`replaydb._validate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from replaydb._validate import check_int, is_int
from replaydb.errors import InvalidArgumentError, InvalidTypeError
from replaydb.rate_limiters import RateLimiter
from replaydb.samplers import Sampler
from replaydb.spec import Spec
from replaydb.storage import NO_DISK_STORAGE, Storage, check_memory

#: Bytes of bookkeeping per row beside the storage: the 32-byte item record and
#: the sampler's state (at most a float64 sum tree of two nodes per slot, padded).
ROW_OVERHEAD = 32 + 32

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
    check_int("sequence_length", sequence_length, 1)
    if max_times_sampled is not None:
        check_int("max_times_sampled", max_times_sampled, 1, what="None or an int")
    if is_int(capacity) and 0 < capacity < sequence_length:
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
    check_int("stride", stride, 1, hint=" (windows start every stride steps of an episode)")
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
        check_int(f"frame_stack[{name!r}]: k", k, 1, hint=" (frames per step)")
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
    # ``size`` overlapping windows of one stream need size + T - 1 steps.
    return check_int("size", size, 1) + check_int("sequence_length", sequence_length, 1) - 1


def check_mapping(name: str, value: Any, spec: Spec, verb: str, values: str) -> None:
    """Raise unless ``value`` is a mapping of field names (a TensorDict passes too)."""
    if not isinstance(value, Mapping) and not hasattr(value, "keys"):
        hint = ", ".join(f"{k!r}: ..." for k in list(spec)[:3]) + (", ..." if len(spec) > 3 else "")
        raise InvalidTypeError(
            f"{name} must be a mapping of field name -> {values}, got "
            f"{type(value).__name__}; e.g. table.{verb}({{{hint}}})"
        )


def check_table_memory(
    spec: Spec, capacity: Any, device: torch.device, name: str, on_disk: bool
) -> None:
    """Raise unless the table (storage plus bookkeeping) fits in free memory or disk."""
    if not is_int(capacity) or capacity <= 0:
        return  # the storage rejects it, naming the value
    cap = int(capacity)
    check_memory(
        Storage.required_nbytes(spec, cap, on_disk=on_disk) + ROW_OVERHEAD * cap,
        device,
        f"table {name!r} (capacity={cap} rows of {spec.step_nbytes} bytes plus bookkeeping)",
        "use a smaller capacity or smaller fields (e.g. uint8 frames)"
        + ("" if on_disk else "; " + NO_DISK_STORAGE),
    )
