"""Waiting on a :class:`~replaydb.table.Table`'s rate limiter, and refusing to wait forever.

Blocked inserts and samples wait on the table's condition variable. Without a
timeout, a wait that no other thread could end (no other live thread has used the
table, and the table is not marked ``shared``) raises
:class:`~replaydb.errors.WouldBlockForeverError` at once, naming why it is blocked
and the fix. The free functions here take the table; call them with its lock held.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from replaydb._validate import check_timeout
from replaydb.errors import RateLimiterTimeout, WouldBlockForeverError

if TYPE_CHECKING:
    from replaydb.table import Table


def note_thread(table: Table) -> None:
    table._threads.add(threading.get_ident())


def notify(table: Table) -> None:
    """Wake the waiting threads, if any (called with the lock held)."""
    if table._waiting:
        table._cond.notify_all()


def wait(table: Table, ready: Any, timeout: float | None, verb: str, n: int) -> None:
    """Wait on the condition until ``ready()``; raise instead of waiting for ever.

    Without a timeout, a wait that no other thread can end raises
    :class:`WouldBlockForeverError` at once, and again if every other thread
    that used the table exits while this one waits.
    """
    if timeout is not None:
        check_timeout(timeout)
    why = why_blocked(table, verb, n)
    if timeout is None and not others_alive(table):
        raise WouldBlockForeverError(forever_message(table, verb, why))
    deadline = None if timeout is None else time.monotonic() + timeout
    table._waiting += 1
    try:
        while not ready():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise RateLimiterTimeout(
                    f"{verb} on table {table.name!r} timed out after {timeout}s: "
                    f"{why_blocked(table, verb, n)}"
                )
            if remaining is None and not others_alive(table):
                raise WouldBlockForeverError(
                    forever_message(table, verb, why_blocked(table, verb, n))
                )
            table._cond.wait(min(remaining, 0.5) if remaining is not None else 0.5)
    finally:
        table._waiting -= 1


def why_blocked(table: Table, verb: str, n: int) -> str:
    lim = table.rate_limiter
    if verb == "insert":
        if not has_space(table, n):
            return (
                f"the table holds {table._size} unconsumed item(s) in {table.capacity} rows "
                "and never overwrites one; sample to consume items first"
            )
        return lim.why_insert_blocked(n, table._size)
    if table._size > 0 and lim.can_sample(n, table._size) and not enough(table, n):
        return (
            f"the table's {table._size} item(s) can be sampled fewer than {n} more times "
            f"(max_times_sampled={table.max_times_sampled})"
        )
    if table._size == 0 and lim.can_sample(n, max(n, 10**9)) and table.num_steps > 0:
        return (
            f"the table holds {table.num_steps} step(s) but no complete item yet "
            f"(items are windows of {table.sequence_length} steps of one episode)"
        )
    return lim.why_sample_blocked(n, table._size)


def forever_message(table: Table, verb: str, why: str) -> str:
    fix = (
        "Insert more items first, or sample from another thread (or pass timeout=)."
        if verb == "sample"
        else "Sample items first, or insert from another thread (or pass timeout=)."
    )
    return (
        f"{verb} on table {table.name!r} would block forever: {why}, and no other "
        f"thread uses this table. {fix}"
    )


def others_alive(table: Table) -> bool:
    if table.shared:
        return True
    me = threading.get_ident()
    alive = {t.ident for t in threading.enumerate()}
    return bool((table._threads & alive) - {me})


def has_space(table: Table, n: int) -> bool:
    """Whether ``n`` steps can be written without overwriting an unconsumed item."""
    if not table.consuming:
        return True
    if table.sequence_length == 1:
        return table._size + n <= table.capacity
    # The ring overwrites keys up to total + n - 1 - capacity; windows run
    # forward from their first key, so every live item must start after that.
    live = table._item_key[table._item_key >= 0]
    return live.numel() == 0 or int(live.min()) > table.storage.total + n - 1 - table.capacity


def enough(table: Table, n: int) -> bool:
    """Whether a selector table holds ``n`` more draws before items run out."""
    if not table.sampler.deterministic or table.max_times_sampled is None or table._size >= n:
        return True
    live = table._item_key >= 0
    left = (table.max_times_sampled - table._times[live]).sum()
    return int(left) >= n
