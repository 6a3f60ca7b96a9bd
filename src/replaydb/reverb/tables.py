"""Reverb's ``Table``: items of any shape over a replaydb :class:`~replaydb.table.Table`.

A Reverb item is a list of *columns*, each a run of steps of one field of a
trajectory (a column may be *squeezed*: one step, no time axis). Items of one
table may have different lengths (whole episodes). The layout:

* the replaydb table (one row per item, ``sequence_length=1``, one int64 field
  ``ref``) does everything but storage: selection (the sampler), priorities,
  ``max_times_sampled``, the rate limiter, eviction of the oldest item, blocking
  with timeouts, counters and checkpoints of that state;
* the item store maps ``ref -> columns``, where a column is a tuple of per-step
  numpy arrays. Overlapping items share their step arrays (as Reverb's chunks
  are shared), so a step is stored once however many items reference it.

A sample draws refs from the replaydb table and stacks each column's step arrays
of the whole batch with one ``np.stack`` per column. Refs of items the replaydb
table no longer holds are dropped from the store in amortized O(1): when the
store has grown past twice the table's size, a :meth:`replaydb.table.Table.items`
snapshot tells which refs are live, and refs found dead in two snapshots in a row
are deleted (a sampler between its draw and its read always finds its items).

Writes come in two steps. :meth:`Table.new_ref` gives an item its ref, and the
writer keeps the item under it, apart from the store (so the garbage collection
above never sees it); :meth:`Table.insert_refs` moves the items into the store and
inserts their refs into the replaydb table, under its rate limiter. Writers stage
refs between the two in a :class:`replaydb.writer.Writer` (see
:mod:`replaydb.reverb.item_writer`).

Reverb: Cassirer et al. 2021, arXiv 2102.04736.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from replaydb._validate import check_int
from replaydb.errors import InvalidArgumentError, RateLimiterTimeout, WouldBlockForeverError
from replaydb.reverb import rate_limiters as rl
from replaydb.reverb import selectors as sel
from replaydb.reverb.errors import DeadlineExceededError
from replaydb.spec import Spec
from replaydb.table import Table as _CoreTable

__all__ = [
    "REF_SPEC",
    "Column",
    "Item",
    "RateLimiterInfo",
    "Table",
    "TableInfo",
    "check_priorities",
]

#: One column of an item: its step arrays and whether the time axis is squeezed.
Column = tuple[tuple[np.ndarray[Any, Any], ...], bool]
#: One item: its columns, in flattened order.
Item = tuple[Column, ...]
#: The smallest priority replaydb's samplers take (Reverb's 0 becomes this).
_TINY = float(np.finfo(np.float64).tiny)
#: The core table's one field: the ref of an item in the store.
REF_SPEC = Spec({"ref": ((), torch.int64)})


def check_priorities(priorities: Sequence[float], n: int) -> None:
    """Raise unless ``priorities`` are ``n`` finite numbers >= 0.

    Example:
        >>> check_priorities([0.0, 2.5], 2)
    """
    pri = np.asarray(priorities, dtype=np.float64)
    if pri.shape != (n,) or not bool(np.all(np.isfinite(pri) & (pri >= 0))):
        raise InvalidArgumentError(
            f"priorities must be {n} finite numbers >= 0, got {list(priorities)!r}"
        )


@dataclass(frozen=True)
class RateLimiterInfo:
    """The rate limiter's numbers and counters, as ``TableInfo.rate_limiter_info``."""

    samples_per_insert: float
    min_size_to_sample: int
    min_diff: float
    max_diff: float
    insert_count: int
    sample_count: int


@dataclass(frozen=True)
class TableInfo:
    """A snapshot of a table, as Reverb's ``Client.server_info()`` reports it.

    Example:
        >>> from replaydb.reverb import selectors, rate_limiters
        >>> t = Table("t", selectors.Uniform(), selectors.Fifo(), 10, rate_limiters.MinSize(1))
        >>> (t.info.max_size, t.info.current_size)
        (10, 0)
    """

    name: str
    sampler_options: sel.KeyDistributionOptions
    remover_options: sel.KeyDistributionOptions
    max_size: int
    max_times_sampled: int
    rate_limiter_info: RateLimiterInfo
    signature: Any
    current_size: int
    num_episodes: int
    num_deleted_episodes: int
    num_unique_samples: int


class Table:
    """A Reverb table: ``max_size`` items, a sampler, a remover and a rate limiter.

    The object handed to :class:`~replaydb.reverb.Server` *is* the served table, so
    :attr:`info`, :meth:`can_sample` and :meth:`can_insert` are live views.

    Args:
        name: The table's name in its server.
        sampler: A selector from :mod:`replaydb.reverb.selectors`.
        remover: A selector; eviction is always oldest-first (see the module doc).
        max_size: Items the table holds, >= 1.
        rate_limiter: A preset from :mod:`replaydb.reverb.rate_limiters`.
        max_times_sampled: Remove an item after this many samples (0: never).
        extensions: Not supported; must be empty.
        signature: Optional nest of ``tf.TensorSpec`` describing an item.

    Raises:
        InvalidArgumentError: For a bad name, selector, size, limiter or extension.

    Example:
        >>> from replaydb.reverb import selectors, rate_limiters
        >>> t = Table("replay", selectors.Uniform(), selectors.Fifo(), 100,
        ...           rate_limiters.MinSize(1))
        >>> t.can_sample(1)
        False
    """

    def __init__(
        self,
        name: str,
        sampler: sel.Selector,
        remover: sel.Selector,
        max_size: int,
        rate_limiter: rl.RateLimiter,
        max_times_sampled: int = 0,
        extensions: Sequence[Any] = (),
        signature: Any = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"name must be a non-empty str, got {name!r}")
        for arg, value in (("sampler", sampler), ("remover", remover)):
            if not isinstance(value, sel.Selector):
                raise InvalidArgumentError(
                    f"{arg} must be a selector from reverb.selectors (e.g. Uniform()), "
                    f"got {value!r}"
                )
        if not isinstance(rate_limiter, rl.RateLimiter):
            raise InvalidArgumentError(
                "rate_limiter must be a preset from reverb.rate_limiters (e.g. MinSize(1)), "
                f"got {rate_limiter!r}"
            )
        max_size = check_int("max_size", max_size, 1)
        max_times_sampled = check_int(
            "max_times_sampled", max_times_sampled, 0, hint=" (0: unlimited)"
        )
        if extensions:
            raise InvalidArgumentError(
                "table extensions are not supported by replaydb.reverb; pass extensions=()"
            )
        self._name = name
        self._sampler = sampler
        self._remover = remover
        self._limiter = rate_limiter
        self._max_times_sampled = max_times_sampled
        self._max_size = max_size
        self._signature = signature
        self._store: dict[int, Item] = {}
        self._dead: set[int] = set()
        self._next_ref = 0
        self._lock = threading.Lock()  # the store and the ref counter
        self._insert_lock = threading.Lock()  # inserts keep their order
        self._flush_hook: Callable[[], None] | None = None
        self._core = self._new_core()

    def _new_core(self) -> _CoreTable:
        core = _CoreTable(
            REF_SPEC,
            self._max_size_arg(),
            sampler=self._sampler.make_sampler(),
            rate_limiter=self._limiter.make(),
            max_times_sampled=self._max_times_sampled or None,
            name=self._name,
        )
        core.shared = True  # writers and samplers come and go: block like a server
        return core

    def _max_size_arg(self) -> int:
        return self._max_size

    # ---------------------------------------------------------------- presets
    @classmethod
    def queue(
        cls, name: str, max_size: int, extensions: Sequence[Any] = (), signature: Any = None
    ) -> Table:
        """A FIFO queue: ``Fifo`` sampler and remover, each item sampled once.

        Example:
            >>> Table.queue("q", 3).info.max_times_sampled
            1
        """
        return cls(
            name,
            sel.Fifo(),
            sel.Fifo(),
            max_size,
            rl.Queue(max_size),
            max_times_sampled=1,
            extensions=extensions,
            signature=signature,
        )

    @classmethod
    def stack(
        cls, name: str, max_size: int, extensions: Sequence[Any] = (), signature: Any = None
    ) -> Table:
        """A LIFO stack: ``Lifo`` sampler and remover, each item sampled once.

        Example:
            >>> Table.stack("s", 3).info.sampler_options.kind
            'lifo'
        """
        return cls(
            name,
            sel.Lifo(),
            sel.Lifo(),
            max_size,
            rl.Stack(max_size),
            max_times_sampled=1,
            extensions=extensions,
            signature=signature,
        )

    # ------------------------------------------------------------------ views
    @property
    def name(self) -> str:
        """The table's name."""
        return self._name

    @property
    def signature(self) -> Any:
        """The nest of ``tf.TensorSpec`` given at construction (or restored), or None."""
        return self._signature

    def __len__(self) -> int:
        return len(self._core)

    def __repr__(self) -> str:
        return (
            f"Table(name={self._name!r}, sampler={self._sampler!r}, remover={self._remover!r}, "
            f"max_size={self._max_size_arg()}, rate_limiter={self._limiter!r}, "
            f"current_size={len(self._core)})"
        )

    @property
    def info(self) -> TableInfo:
        """A snapshot of the served table (pending writer items pushed first)."""
        self._flush_pending()
        core = self._core
        lim = core.rate_limiter
        return TableInfo(
            name=self._name,
            sampler_options=self._sampler.options(),
            remover_options=self._remover.options(),
            max_size=core.capacity,
            max_times_sampled=self._max_times_sampled,
            rate_limiter_info=RateLimiterInfo(
                lim.samples_per_insert,
                lim.min_size_to_sample,
                lim.min_diff,
                lim.max_diff,
                lim.inserts,
                lim.samples,
            ),
            signature=self._signature,
            current_size=len(core),
            num_episodes=0,
            num_deleted_episodes=0,
            num_unique_samples=0,
        )

    def can_sample(self, num_samples: int) -> bool:
        """Whether ``num_samples`` items could be sampled now without blocking.

        Example:
            >>> Table.queue("q", 2).can_sample(1)
            False
        """
        self._flush_pending()
        core = self._core
        size = len(core)
        return size > 0 and core.rate_limiter.can_sample(num_samples, size)

    def can_insert(self, num_inserts: int) -> bool:
        """Whether ``num_inserts`` items could be inserted now without blocking.

        Example:
            >>> Table.queue("q", 2).can_insert(2)
            True
        """
        core = self._core
        return core.rate_limiter.can_insert(num_inserts, len(core))

    # ------------------------------------------------------------ server side
    def set_flush_hook(self, hook: Callable[[], None] | None) -> None:
        """Called by the server: ``hook()`` pushes writers' pending items before reads."""
        self._flush_hook = hook

    def _flush_pending(self) -> None:
        hook = self._flush_hook
        if hook is not None:
            hook()

    def new_ref(self) -> int:
        """A ref no other item of this table has or will get (refs grow in call order).

        A writer keeps the item under this ref, apart from the table's store, until
        :meth:`insert_refs` moves it in: the store's garbage collection never sees
        an item that is staged but not yet inserted.

        Example:
            >>> t = Table.queue("q", 4); (t.new_ref(), t.new_ref())
            (0, 1)
        """
        with self._lock:
            ref = self._next_ref
            self._next_ref = ref + 1
        return ref

    def insert_refs(
        self,
        refs: Any,
        priorities: Any,
        timeout: float | None = None,
        *,
        pending: MutableMapping[int, Item],
    ) -> None:
        """Move ``pending[ref]`` items into the store and insert their refs, in order.

        Blocks on the rate limiter: in one write when it can never block an insert,
        else one item at a time, as Reverb inserts them (a batch could exceed a
        queue's free room for ever). Refs missing from ``pending`` are skipped:
        inserted by an earlier call the rate limiter stopped part-way, so a refused
        batch can be sent again as it was.

        Args:
            refs: Refs from :meth:`new_ref` (a sequence or ``[N]`` array of ints).
            priorities: One priority per ref (finite, >= 0; checked by the caller).
            timeout: Seconds to wait for the rate limiter (None: as long as it takes).
            pending: ``ref -> item`` of the writer; inserted items leave it.

        Raises:
            DeadlineExceededError: If the limiter did not let the items in in time
                (the refused ones stay in ``pending``; the ones before them are in).

        Example:
            >>> t, item = Table.queue("q", 4), (((np.zeros(1),), True),)
            >>> ref = t.new_ref(); pending = {ref: item}
            >>> t.insert_refs([ref], [0.5], pending=pending); (len(t), pending)
            (1, {})
        """
        core = self._core
        lim = core.rate_limiter
        one_by_one = lim.max_diff < 1e300 or core.max_times_sampled is not None
        with self._insert_lock:
            ids = np.array(refs, dtype=np.int64).reshape(-1)
            pri = np.asarray(priorities, dtype=np.float64).reshape(-1)
            ref_list = ids.tolist()
            keep = [r in pending for r in ref_list]
            if not all(keep):  # a retry: skip the refs an earlier call inserted
                ids, pri = ids[keep], pri[keep]
                ref_list = ids.tolist()
            n = len(ref_list)
            # Reverb allows priority 0; replaydb's samplers need > 0 (a zero-priority
            # item is then drawn with a vanishing but nonzero probability).
            pri = np.maximum(pri, _TINY)
            step = 1 if one_by_one else max(n, 1)
            for start in range(0, n, step):
                chunk = ref_list[start : start + step]
                with self._lock:
                    for r in chunk:
                        self._store[r] = pending.pop(r)
                try:
                    core.extend(
                        {"ref": torch.from_numpy(ids[start : start + step])},
                        priorities=torch.from_numpy(pri[start : start + step]),
                        timeout=timeout,
                    )
                except (RateLimiterTimeout, WouldBlockForeverError) as exc:
                    with self._lock:
                        for r in chunk:
                            pending[r] = self._store.pop(r)
                    raise DeadlineExceededError(
                        f"insert into table {self._name!r} timed out: {exc}"
                    ) from exc
            if len(self._store) > 2 * core.capacity + 64:
                self._collect()

    def insert_items(
        self, items: Sequence[Item], priorities: Sequence[float], timeout: float | None = None
    ) -> None:
        """Insert items (in order) with their priorities now; block on the rate limiter.

        Args:
            items: The items' columns.
            priorities: One priority (>= 0) per item.
            timeout: Seconds to wait for the rate limiter (None: as long as it takes).

        Raises:
            InvalidArgumentError: For a negative or non-finite priority.
            DeadlineExceededError: If the limiter did not let the items in in time (the
                ones it let in before stay; the rest are dropped).

        Example:
            >>> t, item = Table.queue("q", 4), (((np.zeros(1),), True),)
            >>> t.insert_items([item], [1.0]); len(t)
            1
        """
        n = len(items)
        if n == 0:
            return
        check_priorities(priorities, n)
        pending = {self.new_ref(): item for item in items}
        self.insert_refs(list(pending), priorities, timeout, pending=pending)

    def _collect(self) -> None:
        """Delete store entries whose items were dead in this and the previous snapshot."""
        live = set(self._core.items()["ref"].tolist())
        with self._lock:
            dead = self._store.keys() - live
            for r in dead & self._dead:
                del self._store[r]
            self._dead = dead - self._dead

    def sample(
        self, num_samples: int, timeout: float | None = None
    ) -> tuple[dict[str, np.ndarray[Any, Any]], list[Item]]:
        """Draw up to ``num_samples`` items: at least one, more if the limiter allows now.

        Args:
            num_samples: The most items to draw.
            timeout: Seconds to wait for the first item (None: as long as it takes).

        Returns:
            ``(info, items)``: ``info`` holds ``key``, ``probability``, ``table_size``,
            ``priority`` and ``times_sampled`` arrays; ``items`` the drawn items.

        Raises:
            DeadlineExceededError: If no item could be drawn within ``timeout``.
        """
        core = self._core
        lim = core.rate_limiter
        if not (len(core) > 0 and lim.can_sample(1, len(core))):
            self._flush_pending()
        # As many as may go now: the limiter's room, and the items a consuming table holds.
        n = min(int(num_samples), max(1, int(lim.diff - lim.min_diff)))
        if core.max_times_sampled is not None:
            n = min(n, max(1, len(core)))
        try:
            s = core.sample(n, timeout=0)
        except (RateLimiterTimeout, WouldBlockForeverError):
            try:
                s = core.sample(1, timeout=timeout)
            except (RateLimiterTimeout, WouldBlockForeverError) as exc:
                raise DeadlineExceededError(
                    f"sample from table {self._name!r} timed out: {exc}"
                ) from exc
        refs = s["ref"].tolist()
        store = self._store
        items = [store[r] for r in refs]
        n = len(refs)
        info = {
            "key": s.keys.numpy().astype(np.uint64),
            "probability": s.probabilities.numpy(),
            "table_size": np.full(n, s.table_size, dtype=np.int64),
            "priority": s.priorities.numpy(),
            "times_sampled": s.times_sampled.numpy().astype(np.int32),
        }
        return info, items

    def update_priorities(self, keys: Any, priorities: Any) -> int:
        """Set new priorities for items by key; unknown keys are ignored.

        Returns:
            How many keys named a live item.
        """
        k = np.asarray(keys, dtype=np.uint64).astype(np.int64).reshape(-1)
        p = np.asarray(priorities, dtype=np.float64).reshape(-1)
        return self._core.update_priorities(k, np.maximum(p, _TINY))

    def delete(self, keys: Any) -> int:
        """Remove items by key; unknown keys are ignored. Returns how many were live."""
        k = np.asarray(keys, dtype=np.uint64).astype(np.int64).reshape(-1)
        return self._core.remove(torch.from_numpy(k))

    def reset(self) -> None:
        """Remove every item; the rate limiter's counters start again from zero."""
        with self._insert_lock:
            self._core.reset()
            with self._lock:
                self._store.clear()
                self._dead.clear()

    # ------------------------------------------------------- checkpoint hooks
    @property
    def core(self) -> _CoreTable:
        """The replaydb table behind this one (for checkpoints and inspection)."""
        return self._core

    def settings(self) -> dict[str, Any]:
        """JSON-serializable Reverb settings (selectors, limiter, max_times_sampled)."""
        return {
            "name": self._name,
            "sampler": _selector_json(self._sampler),
            "remover": _selector_json(self._remover),
            "max_size": self._max_size_arg(),
            "max_times_sampled": self._max_times_sampled,
            "rate_limiter": [
                self._limiter.samples_per_insert,
                self._limiter.min_size_to_sample,
                _finite(self._limiter.min_diff),
                _finite(self._limiter.max_diff),
            ],
        }

    def live_items(self) -> tuple[Any, dict[int, Item]]:
        """The replaydb items snapshot and the store entries of its refs."""
        with self._insert_lock:
            snap = self._core.items()
            refs = snap["ref"].tolist()
            with self._lock:
                return snap, {r: self._store[r] for r in refs}

    def restore(
        self,
        settings: dict[str, Any],
        core: _CoreTable,
        items: dict[int, Item],
        signature: Any,
    ) -> None:
        """Replace this table's settings, state and items with a checkpoint's (Reverb's rule)."""
        with self._insert_lock, self._lock:
            self._sampler = _selector_from_json(settings["sampler"])
            self._remover = _selector_from_json(settings["remover"])
            lo, hi = (float(v) for v in settings["rate_limiter"][2:])
            self._limiter = rl.RateLimiter(
                float(settings["rate_limiter"][0]), int(settings["rate_limiter"][1]), lo, hi
            )
            self._max_times_sampled = int(settings["max_times_sampled"])
            self._max_size = int(settings["max_size"])
            self._signature = signature
            core.shared = True
            self._core = core
            self._store = dict(items)
            self._dead = set()
            # Never backwards: a ref handed out stays unique (new_ref).
            self._next_ref = max(self._next_ref, max(items, default=-1) + 1)
            if core.num_steps:
                self._next_ref = max(self._next_ref, int(core.info().total_steps_written))


def _finite(x: float) -> float | str:
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")


def _selector_json(s: sel.Selector) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type(s).__name__}
    if isinstance(s, sel.Prioritized):
        out["priority_exponent"] = s.priority_exponent
    return out


def _selector_from_json(data: dict[str, Any]) -> sel.Selector:
    kinds: dict[str, Callable[[], sel.Selector]] = {
        "Uniform": sel.Uniform,
        "Fifo": sel.Fifo,
        "Lifo": sel.Lifo,
        "MinHeap": sel.MinHeap,
        "MaxHeap": sel.MaxHeap,
    }
    if data["type"] == "Prioritized":
        return sel.Prioritized(float(data["priority_exponent"]))
    if data["type"] not in kinds:
        raise InvalidArgumentError(f"unknown selector {data['type']!r} in a checkpoint")
    return kinds[data["type"]]()
