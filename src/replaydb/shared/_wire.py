"""What travels over a shared table's socket: plain pickles of numpy arrays, never tensors.

Tensors are sent as numpy arrays (``bfloat16``, which numpy lacks, as its int16
bits): plain ``pickle`` copies them by value, where torch's multiprocessing
reductions would move their storage into shared memory and pass descriptors.
Both ends authenticated each other with the share's random key first.
"""

from __future__ import annotations

import contextlib
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
    except (ProcessLookupError, OverflowError):  # no process has a pid that large
        return False
    except PermissionError:
        return True
    return True


#: The file that marks a directory as one a replaydb process made for itself (a
#: shared-memory table's, a DataLoader worker's slots, an owner's socket): only
#: directories that hold it are removed once their process is gone
#: (:func:`replaydb.shared._owner.remove_left_behind`), never a user's own directory
#: that happens to be named like one.
OWN_MARK = ".replaydb-own"


def mark_own(path: str) -> None:
    """Mark the directory ``path``, just made by this process, as replaydb's own.

    Best effort: where the mark cannot be written (no inode left on a full
    tmpfs), the directory is only left out of the later sweep.
    """
    with contextlib.suppress(OSError), open(os.path.join(path, OWN_MARK), "wb"):
        pass


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


#: The tensors of a :class:`~replaydb.shared.RowSample` that travel (``None`` or ``[B, ...]``).
ROW_TENSORS = (
    "rows",
    "valid",
    "keys",
    "probabilities",
    "weights",
    "priorities",
    "times_sampled",
    "mask",
    "ends",
    "oldest",
)


def pack_rows(draws: list[Any], parts: int = 1) -> dict[str, Any]:
    """Draws of one size (``RowSample``s) as one array per field, concatenated.

    One array a field instead of one a field and draw: pickling and unpickling
    cost per array, not per byte. With ``parts > 1`` (one draw only) the draw
    is cut into ``parts`` batches; :func:`unpack_rows` gives each the
    ``times_sampled`` that ``parts`` consecutive draws would have reported
    (:func:`times_in_turn`).
    """
    n = len(draws) * parts
    out: dict[str, Any] = {
        "n": n,
        "table_size": [int(d.table_size) for d in draws for _ in range(parts)],
        "generation": [int(d.generation) for d in draws for _ in range(parts)],
    }
    for f in ROW_TENSORS:
        first = getattr(draws[0], f)
        if first is None:
            out[f] = None
        elif len(draws) == 1:
            out[f] = first.numpy()
        else:
            out[f] = np.concatenate([getattr(d, f).numpy() for d in draws])
    # Worked out by the receiver: the owner's process is the busy one.
    out["turns"] = parts
    return out


def times_in_turn(
    keys: np.ndarray[Any, Any], times: np.ndarray[Any, Any], parts: int
) -> np.ndarray[Any, Any]:
    """``times_sampled`` of one draw cut into ``parts`` equal batches, as if drawn in turn.

    A draw reports, for every copy of an item, its count after the whole draw.
    Drawn as ``parts`` consecutive draws, a copy in batch ``i`` would report the
    count after batch ``i``: the final count less the item's copies in later
    batches.

    Args:
        keys: ``[n]`` int64 item keys (``n`` a multiple of ``parts``).
        times: ``[n]`` int64 counts after the draw.
        parts: Batches.

    Returns:
        ``[n]`` int64 counts.
    """
    n = keys.shape[0]
    part = np.arange(n, dtype=np.int64) // (n // parts)
    order = np.argsort(keys * parts + part, kind="stable")  # by item, then batch
    ks, ps = keys[order], part[order]
    item = np.empty(n, dtype=bool)
    item[0] = True
    np.not_equal(ks[1:], ks[:-1], out=item[1:])
    run = item.copy()  # copies of one item in one batch
    run[1:] |= ps[1:] != ps[:-1]
    item_end = np.append(np.flatnonzero(item)[1:], n)[np.cumsum(item) - 1]
    run_end = np.append(np.flatnonzero(run)[1:], n)[np.cumsum(run) - 1]
    later = np.empty(n, dtype=np.int64)
    later[order] = item_end - run_end
    return times - later


def unpack_rows(packed: dict[str, Any]) -> list[dict[str, Any]]:
    """The inverse of :func:`pack_rows` (after :func:`from_wire`): one dict per draw,
    its tensors views of the packed ones."""
    n = int(packed["n"])
    if n == 1:
        one = {f: packed[f] for f in ROW_TENSORS}
        one["table_size"], one["generation"] = packed["table_size"][0], packed["generation"][0]
        return [one]
    if packed["turns"] > 1:
        times = times_in_turn(
            packed["keys"].numpy(), packed["times_sampled"].numpy(), packed["turns"]
        )
        packed = {**packed, "times_sampled": torch.from_numpy(times)}
    out: list[dict[str, Any]] = [
        {"table_size": packed["table_size"][i], "generation": packed["generation"][i]}
        for i in range(n)
    ]
    for f in ROW_TENSORS:
        t = packed[f]
        parts = [None] * n if t is None else t.chunk(n) if n > 1 else (t,)
        for d, part in zip(out, parts, strict=True):
            d[f] = part
    return out
