"""The state and persistence verbs of :class:`~replaydb.table.Table`.

``config``/``from_config``, ``state_dict``/``load_state_dict``, ``snapshot``,
``live_steps``/``restore_steps`` and the disk-backed ``path``/``checkpoint``/
``open``: what checkpoints and front ends use to save, move and rebuild a table.
:class:`Table` inherits them from :class:`TableStateVerbs`, so ``table.py`` keeps
the verbs that write and read items; the bodies live in
:mod:`replaydb._table_state` and :mod:`replaydb._disk`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import torch

from replaydb import _table_state
from replaydb._records import LiveSteps
from replaydb.errors import InvalidArgumentError

if TYPE_CHECKING:
    from replaydb.table import Table

__all__ = ["TableStateVerbs"]


def deprecated(old: str, new: str) -> None:
    """Warn that ``Table.<old>`` is deprecated in favour of ``Table.<new>``."""
    warnings.warn(
        f"Table.{old} is deprecated and will be removed in the next release; use Table.{new}",
        DeprecationWarning,
        stacklevel=3,
    )


def _t(verbs: TableStateVerbs) -> Table:
    """``verbs`` as the :class:`Table` it is (the only class that inherits these)."""
    return cast("Table", verbs)


def _cls(verbs: type[TableStateVerbs]) -> type[Table]:
    return cast("type[Table]", verbs)


class TableStateVerbs:
    """Config, state, saved steps and disk-backed tables: a base of :class:`Table`."""

    __slots__ = ()

    def config(self) -> dict[str, Any]:
        """JSON-serializable description from which :meth:`from_config` rebuilds the table."""
        return _table_state.config(_t(self))

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], device: torch.device | str | None = None
    ) -> Table:
        """Build an empty table from :meth:`config` output (``device`` overrides).

        Configs written before ``stride``, ``final_step`` and ``frame_stack``
        existed load with their defaults (1, ``False``, none).
        """
        device = device if device is not None else config.get("device", "cpu")
        return _cls(cls)(**_table_state.table_args(config), device=device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor of the table's state, on CPU (storage, items, sampler, limiter)."""
        return _table_state.state_dict(_t(self))

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict` output into this (same-config) table."""
        _table_state.load_state_dict(_t(self), state)

    def snapshot(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """A consistent copy of the table: its :meth:`config` and :meth:`state_dict`.

        Both are taken under the table's lock and the tensors are copied, so a
        concurrent insert or sample cannot change them afterwards (what a
        checkpoint writer needs).

        Returns:
            ``(config, state)``: JSON-serializable config and CPU tensors that share
            no memory with the table.

        Example:
            >>> table = Table(Spec({"x": ()}), 4)
            >>> config, state = table.snapshot()
            >>> config["capacity"], int(state["storage.total"][0])
            (4, 0)
        """
        return _table_state.snapshot(_t(self))

    def item_priorities(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Deprecated: use ``items(fields=())``, whose ``keys`` and ``priorities`` these are.

        Returns:
            ``(keys, priorities)`` of the live items, on CPU, oldest key first.

        Example:
            >>> t = Table(Spec({"x": ()}), 4); t.extend({"x": torch.zeros(3)})
            >>> t.items(fields=()).keys.tolist()  # not t.item_priorities()[0]
            [0, 1, 2]
        """
        deprecated("item_priorities()", "items(fields=()).keys / .priorities")
        live = _t(self).items(fields=())
        return live.keys.cpu(), live.priorities.cpu()

    def restore_steps(
        self, steps: LiveSteps | Mapping[str, Any], *, total_steps_written: int | None = None
    ) -> int:
        """Refill a table with saved steps, past its rate limiter (which never blocks them).

        ``steps`` is either :meth:`live_steps` output, whose streams, ends and
        priorities are written and whose limiter counters this table's limiter then
        takes (the streams must be new to this table), or ``name -> [N, *shape]``
        values: steps of stream 0 with no episode end, each item at the highest
        priority seen so far, counted as inserts. Blocked callers are woken.

        With ``total_steps_written`` (single-step tables, empty) the steps are the
        newest ``N`` of a table that had written that many, oldest first: they get
        keys ``total_steps_written - N ... total_steps_written - 1`` and land in rows
        ``key % capacity``, as they were.

        Args:
            steps: A :class:`LiveSteps`, or ``name -> [N, *shape]`` for every field.
            total_steps_written: Steps the saved table had written, ``>= N``.

        Returns:
            The number of items in the table afterwards.

        Raises:
            SpecMismatchError: If the steps do not match the spec (nothing is written).
            InvalidArgumentError: For bad streams, ends, priorities or counters; with
                ``total_steps_written``, if the table is not empty or a sequence table,
                or the counts do not fit.

        Example:
            >>> t = Table(Spec({"x": ()}), 4)
            >>> t.restore_steps({"x": torch.arange(4.0)}, total_steps_written=6)
            4
            >>> t.storage.fields["x"].tolist(), t.total_steps_written
            ([2.0, 3.0, 0.0, 1.0], 6)
            >>> Table(Spec({"x": ()}), 8).restore_steps(t.live_steps())
            4
        """
        return _table_state.restore_steps(_t(self), steps, total_steps_written)

    def live_steps(self) -> LiveSteps:
        """A copy of the live steps in write order, for moving a table's contents.

        Each step carries the priority of the item it completes (the table's highest
        priority seen for steps that complete no live item), and the snapshot carries
        the rate limiter's counters. :meth:`restore_live_steps` writes it into another table
        (of any capacity), which then holds the same items, minus ``times_sampled``.

        Returns:
            A :class:`LiveSteps` on CPU.

        Example:
            >>> t = Table(Spec({"x": ()}), 10); t.extend({"x": torch.arange(3.0)})
            >>> t.live_steps().data["x"].tolist()
            [0.0, 1.0, 2.0]
        """
        return _table_state.live_steps(_t(self))

    def restore_live_steps(self, steps: LiveSteps) -> int:
        """Deprecated: use :meth:`restore_steps`, which takes :meth:`live_steps` output.

        Example:
            >>> a = Table(Spec({"x": ()}), 10); a.extend({"x": torch.arange(3.0)})
            >>> Table(Spec({"x": ()}), 5).restore_steps(a.live_steps())
            3
        """
        deprecated("restore_live_steps(steps)", "restore_steps(steps)")
        return self.restore_steps(steps)

    @property
    def path(self) -> str | None:
        """The directory of a disk-backed table, ``None`` for an in-memory one.

        Example:
            >>> Table(Spec({"x": ()}), 4).path is None
            True
        """
        disk = _t(self)._disk
        return str(disk.root) if disk is not None else None

    def checkpoint(self) -> int:
        """Make the table's directory a durable, crash-consistent copy of the table now.

        Flushes the memory-mapped data files (msync), then atomically replaces the
        directory's ``state.safetensors`` (item records, sampler and rate limiter
        state, links, the cursor). Reopening the directory gives the state of the
        last call, minus the items whose rows were overwritten since (see
        :mod:`replaydb._disk`). Costs one write of the bookkeeping (about 100
        bytes per row), never a copy of the data.

        Returns:
            The cursor committed (:attr:`total_steps_written`).

        Raises:
            InvalidArgumentError: If the table is not disk-backed.
            OSError: If the disk is full or read-only (the previous state stays).

        Example:
            >>> import tempfile
            >>> t = Table(Spec({"x": ()}), 4, path=tempfile.mkdtemp())
            >>> t.extend({"x": torch.ones(3)}); t.checkpoint()
            3
        """
        disk = _t(self)._disk
        if disk is None:
            raise InvalidArgumentError(
                "checkpoint() is for disk-backed tables (Table(..., path=DIR)); save an "
                "in-memory table with replaydb.checkpoint.save_table"
            )
        return disk.commit(_t(self))

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Table:
        """Reopen the disk-backed table in ``path`` with its stored configuration.

        The data files are mapped, not read: reopening costs a read of the
        bookkeeping, whatever the size of the data.

        Args:
            path: A directory written by ``Table(..., path=path)``.

        Returns:
            The table, as of its last :meth:`checkpoint`.

        Raises:
            CheckpointError: If ``path`` holds no table, or its files are corrupt.

        Example:
            >>> import tempfile
            >>> d = tempfile.mkdtemp(); Table(Spec({"x": ()}), 4, path=d).checkpoint()
            0
            >>> Table.open(d).capacity
            4
        """
        return _cls(cls)(**_table_state.open_args(path))
