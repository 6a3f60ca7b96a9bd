"""What travels over a shared table's socket: plain pickles of numpy arrays, never tensors.

Tensors are sent as numpy arrays (``bfloat16``, which numpy lacks, as its int16
bits): plain ``pickle`` copies them by value, where torch's multiprocessing
reductions would move their storage into shared memory and pass descriptors.
Both ends authenticated each other with the share's random key first.
"""

from __future__ import annotations

import os
import pickle
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from replaydb.errors import ClosedError

#: Longest slice a waiting request holds the owner's table for (seconds).
SLICE_S = 0.5
_POLL_S = 0.25


@dataclass(frozen=True)
class _BFloat16:
    bits: np.ndarray[Any, Any]


def to_wire(obj: Any) -> Any:
    """Tensors (also inside dicts, lists and tuples) to numpy arrays."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        if t.dtype == torch.bfloat16:
            return _BFloat16(t.contiguous().view(torch.int16).numpy())
        return t.numpy()
    if isinstance(obj, dict):
        return {k: to_wire(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_wire(v) for v in obj)
    return obj


def from_wire(obj: Any) -> Any:
    """The inverse of :func:`to_wire`: numpy arrays back to tensors."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj)
    if isinstance(obj, _BFloat16):
        return torch.from_numpy(obj.bits).view(torch.bfloat16)
    if isinstance(obj, dict):
        return {k: from_wire(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(from_wire(v) for v in obj)
    return obj


def dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def error_reply(exc: BaseException) -> bytes:
    """An ``("err", exc)`` reply; an exception that does not pickle travels as its text."""
    try:
        data = dumps(("err", exc))
        pickle.loads(data)
        return data
    except Exception:
        return dumps(("err", RuntimeError(f"{type(exc).__name__}: {exc}")))


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def call(conn: Any, owner_pid: int, name: str, verb: str, args: tuple[Any, ...]) -> Any:
    """Send one request and wait for its answer, checking that the owner lives."""
    gone = ClosedError(
        f"the process that owns shared table {name!r} (pid {owner_pid}) exited or closed "
        "the share; keep the owner running (and its handle open) while other processes "
        "use the table"
    )
    try:
        conn.send_bytes(dumps((verb, to_wire(args))))
        while not conn.poll(_POLL_S):
            if not alive(owner_pid):
                raise gone
        status, value = pickle.loads(conn.recv_bytes())
    except BaseException as exc:
        # Interrupted between a request and its answer (owner gone, Ctrl-C): the
        # connection is out of step, so drop it; the next call opens a fresh one.
        conn.close()
        if isinstance(exc, EOFError | OSError):
            raise gone from exc
        raise
    if status == "err":
        raise value
    return from_wire(value)


def deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def next_slice(until: float | None) -> float:
    """The timeout of the next waiting slice before ``until`` (monotonic)."""
    if until is None:
        return SLICE_S
    return max(0.0, min(SLICE_S, until - time.monotonic()))
