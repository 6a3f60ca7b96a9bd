"""The :class:`ReplayBuffer` class: Velora's buffer API over a replaydb table.

Construction (and the :meth:`ReplayBuffer.prioritized` preset), the live storage
views, ``add``/``add_multi``, ``sample``, ``update_priorities`` and ``warm``. The
input conversions it binds as methods are in ``_inputs``; Velora's
``metadata``/``config``/``state_dict``/``save``/``load`` come from the ``_persist``
mixin. The data layout and the file format are described in :mod:`replaydb.buffer`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from replaydb._validate import check_int, is_int
from replaydb.buffer import _inputs
from replaydb.buffer._inputs import (
    check_device,
    check_frame_stack,
    check_state_dtype,
    given_state_dim,
    state_shape,
)
from replaydb.buffer._persist import _VeloraFiles
from replaydb.buffer._records import _KEYS, BatchExperience
from replaydb.collect import warm as collect_warm
from replaydb.errors import InvalidArgumentError, NotEnoughDataError
from replaydb.samplers import Prioritized
from replaydb.spec import Field, Spec
from replaydb.table import Table

__all__ = ["ReplayBuffer"]

#: Reward and done types the fast path of ``add`` stores as they are.
_NUMBERS = frozenset((float, int, bool))


class ReplayBuffer(_VeloraFiles):
    """Velora's off-policy replay buffer, backed by a replaydb table.

    Thread-safe: any number of threads may ``add``, ``add_multi`` and ``sample``
    at once (rows are assembled and written under the table's lock).

    Args:
        capacity: Transitions kept; the oldest is overwritten first.
        state_dim: Size of an observation, or its shape as a tuple, e.g.
            ``(84, 84)`` or ``(3, 64, 64)``.
        action_dim: Size of an action.
        hidden_dim: Size of the acting network's hidden state (0 allowed).
        device: Where the tensors live (default CPU); also accepted by position.
        state_dtype: The dtype ``states`` and ``next_states`` are stored and
            sampled in (default float32, Velora's). An integer dtype such as
            ``torch.uint8`` stores pixels in a quarter of the memory; convert
            after sampling (``batch.states.float() / 255``). Inputs are cast by
            the table's checked rule: a cast that would change a value (a float
            into ``uint8``, ``300`` into ``uint8``) raises.
        frame_stack: Sample ``states`` and ``next_states`` as the last ``k``
            observations of the episode, ``[B, k, *shape]``, oldest first (each
            observation is stored once; the start of an episode repeats its first
            frame). Episodes end where ``done`` is true.
        table: A table with :meth:`transition_spec` and this capacity to use
            instead of a new uniform one (a sampler, a rate limiter, ...).

    Raises:
        InvalidArgumentError: If a size is not a positive int, ``state_dtype`` is
            not a real or integer torch dtype, ``frame_stack`` is not an int >= 1,
            the device cannot be used here, or ``table`` does not fit.

    Example:
        >>> buffer = ReplayBuffer(100, state_dim=4, action_dim=1, hidden_dim=2)
        >>> buffer.add(torch.zeros(4), 1.0, 1.0, torch.zeros(4), False)
        >>> len(buffer), tuple(buffer.states.shape)
        (1, (100, 4))
        >>> pixels = ReplayBuffer(100, (84, 84), 1, 0, state_dtype=torch.uint8, frame_stack=4)
        >>> frame = torch.zeros(84, 84, dtype=torch.uint8)
        >>> pixels.add(frame, 0, 1.0, frame, False)
        >>> pixels.sample(1).states.shape, pixels.sample(1).states.dtype
        (torch.Size([1, 4, 84, 84]), torch.uint8)
    """

    def __init__(
        self,
        capacity: int,
        state_dim: int | Sequence[int],
        action_dim: int,
        hidden_dim: int,
        device: torch.device | str | None = None,
        *,
        state_dtype: torch.dtype = torch.float32,
        frame_stack: int | None = None,
        table: Table | None = None,
    ) -> None:
        self.capacity = check_int("capacity", capacity, 1)
        self.state_shape = state_shape(state_dim)
        #: The ``state_dim`` as given: an int, or the observation shape as a tuple.
        self.state_dim = given_state_dim(state_dim, self.state_shape)
        self.state_dtype = check_state_dtype(state_dtype)
        self.frame_stack = check_frame_stack(frame_stack)
        self.action_dim = check_int("action_dim", action_dim, 1)
        self.hidden_dim = check_int("hidden_dim", hidden_dim, 0)
        #: Velora's layout: an int state_dim, float32 states, no frame stacks.
        self.velora_layout = (
            isinstance(self.state_dim, int)
            and self.state_dtype == torch.float32
            and self.frame_stack is None
        )
        spec = self.transition_spec(
            self.state_dim, self.action_dim, self.hidden_dim, state_dtype=self.state_dtype
        )
        stacks = (
            None
            if self.frame_stack is None
            else {"states": self.frame_stack, "next_states": self.frame_stack}
        )
        if table is None:
            self.device = check_device(device)
            table = Table(
                spec, self.capacity, device=self.device, name="replay_buffer", frame_stack=stacks
            )
        else:
            if not isinstance(table, Table):
                raise InvalidArgumentError(
                    f"table must be a replaydb Table, got {type(table).__name__}"
                )
            if table.spec != spec or table.capacity != self.capacity or table.sequence_length != 1:
                raise InvalidArgumentError(
                    "table must be a single-step table with ReplayBuffer.transition_spec"
                    f"({self.state_dim}, {self.action_dim}, {self.hidden_dim}, "
                    f"state_dtype={self.state_dtype}) and capacity "
                    f"{self.capacity}; got capacity {table.capacity}, sequence_length "
                    f"{table.sequence_length}, fields {list(table.spec)}"
                )
            want = {k: [v, "first"] for k, v in (stacks or {}).items()}
            if table.config()["frame_stack"] != want:
                raise InvalidArgumentError(
                    f"table has frame_stack={table.config()['frame_stack']} but the buffer "
                    f"has frame_stack={self.frame_stack}; build the table with "
                    "Table(..., frame_stack={'states': k, 'next_states': k}) and pass the "
                    "same k as frame_stack"
                )
            if device is not None and check_device(device) != table.device:
                raise InvalidArgumentError(
                    f"device {str(device)!r} differs from the table's device {str(table.device)!r}"
                )
            self.device = table.device
        self.table = table
        self._fields = table.storage.fields  # live [capacity, dim] column views
        self._fast = self.device.type == "cpu" and self.velora_layout
        self._width = 2 * math.prod(self.state_shape) + self.action_dim + self.hidden_dim + 2
        #: The table's row writer (one packed float32 row per transition), or None.
        self._rows = table.row_writer(scalars=2) if self._fast else None
        if self._rows is not None:  # add_multi's columns: states, actions, next_states,
            s, a = self.state_shape[0], self.action_dim  # hiddens, rewards, dones
            self._rows.expect((s, a, s, self.hidden_dim, 1, 1))
            self._rows.expect_step((s, a, s, self.hidden_dim))  # add's parts
        self._hidden_zeros = np.zeros(self.hidden_dim, dtype=np.float32)
        self._hidden_zeros_t = torch.zeros(self.hidden_dim)
        self._hidden_zeros_n = torch.zeros(0, self.hidden_dim)  # read only, never written
        self._shapes = (
            torch.Size(self.state_shape),
            torch.Size([self.action_dim]),
            torch.Size([self.hidden_dim]),
        )
        self._shapes_2d = tuple(torch.Size([1, *sh]) for sh in self._shapes)
        self._weighted = not table.sampler.deterministic and hasattr(table.sampler, "beta")

    @classmethod
    def prioritized(
        cls,
        capacity: int,
        state_dim: int | Sequence[int],
        action_dim: int,
        hidden_dim: int,
        *,
        alpha: float = 0.6,
        beta: float = 0.4,
        eps: float = 1e-6,
        seed: int | None = None,
        device: torch.device | str | None = None,
        state_dtype: torch.dtype = torch.float32,
        frame_stack: int | None = None,
    ) -> ReplayBuffer:
        """A buffer with prioritized replay (Schaul et al. 2015, arXiv 1511.05952).

        ``sample`` returns ``weights`` (``(B, 1)``) and ``keys`` besides Velora's
        fields; feed ``abs(td_error) + eps`` back through :meth:`update_priorities`.
        New transitions get the highest priority seen so far. :meth:`save` keeps
        the priorities, ``alpha``, ``beta``, ``eps`` and the generator.

        Args:
            capacity: Transitions kept.
            state_dim: Size of an observation.
            action_dim: Size of an action.
            hidden_dim: Size of the hidden state (0 allowed).
            alpha: Priority exponent in [0, 1].
            beta: Importance-weight exponent in [0, 1] (``sample(beta=...)`` overrides).
            eps: Added to every priority, >= 0.
            seed: Seed of the sampler's generator.
            device: Where the tensors live.
            state_dtype: As in the constructor.
            frame_stack: As in the constructor.

        Returns:
            The buffer.

        Example:
            >>> buf = ReplayBuffer.prioritized(100, 4, 1, 0, seed=0)
            >>> s, z = torch.zeros(8, 4), torch.zeros(8)
            >>> buf.add_multi(s, z, z + 1, s, z)
            >>> batch = buf.sample(4); buf.update_priorities(batch.keys, torch.rand(4) + 0.1)
            4
        """
        c = check_int("capacity", capacity, 1)
        spec = cls.transition_spec(
            state_shape(state_dim),
            check_int("action_dim", action_dim, 1),
            check_int("hidden_dim", hidden_dim, 0),
            state_dtype=check_state_dtype(state_dtype),
        )
        k = check_frame_stack(frame_stack)
        stacks = None if k is None else {"states": k, "next_states": k}
        sampler = Prioritized(alpha=alpha, beta=beta, eps=eps, seed=seed)
        dev = check_device(device)
        table = Table(
            spec, c, sampler=sampler, device=dev, name="replay_buffer", frame_stack=stacks
        )
        return cls(
            c,
            state_dim,
            action_dim,
            hidden_dim,
            state_dtype=state_dtype,
            frame_stack=frame_stack,
            table=table,
        )

    @staticmethod
    def transition_spec(
        state_dim: int | Sequence[int],
        action_dim: int,
        hidden_dim: int,
        *,
        state_dtype: torch.dtype = torch.float32,
    ) -> Spec:
        """The spec of a Velora transition.

        Args:
            state_dim: Size of an observation, or its shape.
            action_dim: Size of an action.
            hidden_dim: Size of the hidden state.
            state_dtype: Dtype of ``states`` and ``next_states``; the rest is float32.

        Returns:
            The spec, fields in storage order.

        Example:
            >>> list(ReplayBuffer.transition_spec(4, 1, 2))
            ['states', 'actions', 'next_states', 'hiddens', 'rewards', 'dones']
        """
        shape = state_shape(state_dim)
        return Spec(
            {
                "states": Field(shape, state_dtype),
                "actions": Field((action_dim,)),
                "next_states": Field(shape, state_dtype),
                "hiddens": Field((hidden_dim,)),
                "rewards": Field((1,)),
                "dones": Field((1,)),
            }
        )

    # ----------------------------------------------------------------- state
    @property
    def size(self) -> int:
        """Transitions stored."""
        return self.table.num_steps

    @property
    def position(self) -> int:
        """Row the next transition is written to."""
        return self.table.total_steps_written % self.capacity

    @property
    def states(self) -> torch.Tensor:
        """Live ``[capacity, state_dim]`` view of the stored states (row ``i`` is slot ``i``)."""
        return self._fields["states"]

    @property
    def actions(self) -> torch.Tensor:
        """Live ``[capacity, action_dim]`` view of the stored actions."""
        return self._fields["actions"]

    @property
    def rewards(self) -> torch.Tensor:
        """Live ``[capacity, 1]`` view of the stored rewards."""
        return self._fields["rewards"]

    @property
    def next_states(self) -> torch.Tensor:
        """Live ``[capacity, state_dim]`` view of the stored next states."""
        return self._fields["next_states"]

    @property
    def dones(self) -> torch.Tensor:
        """Live ``[capacity, 1]`` view of the stored done flags (1.0 or 0.0)."""
        return self._fields["dones"]

    @property
    def hiddens(self) -> torch.Tensor:
        """Live ``[capacity, hidden_dim]`` view of the stored hidden states."""
        return self._fields["hiddens"]

    def __len__(self) -> int:
        return self.table.num_steps

    def __repr__(self) -> str:
        return (
            f"ReplayBuffer(capacity={self.capacity}, state_dim={self.state_dim}, "
            f"action_dim={self.action_dim}, hidden_dim={self.hidden_dim}, size={self.size}, "
            f"device={self.device}"
            + (
                ""
                if self.velora_layout
                else f", state_dtype={self.state_dtype}, frame_stack={self.frame_stack}"
            )
            + ")"
        )

    # ----------------------------------------------------------------- writes
    def add(
        self,
        state: Any,
        action: Any,
        reward: Any,
        next_state: Any,
        done: Any,
        hidden: Any = None,
    ) -> None:
        """Add one transition.

        Args:
            state: Observation, shape ``(state_dim,)`` or ``(1, state_dim)`` (with a
                shape: that shape, or ``(1, *shape)``).
            action: Action, ``action_dim`` values (a single value fills every slot).
            reward: One number.
            next_state: Observation after the action, like ``state``.
            done: Whether the episode ended (bool or number).
            hidden: Hidden state, ``hidden_dim`` values; omitted means zeros.

        Raises:
            ValueError: Naming the argument, the expected and the received shape or
                type (``None``, sparse and ``meta`` tensors included); the buffer is
                left unchanged.

        Example:
            >>> buf = ReplayBuffer(10, 2, 1, 0)
            >>> buf.add(torch.ones(2), 0, 1.5, torch.ones(2), True); buf.rewards[0].tolist()
            [1.5]
        """
        rows = self._rows
        if rows is not None:
            if hidden is None:
                hidden = self._hidden_zeros_t
            # The common call (1-D float tensors, numbers for reward and done): the
            # writer checks the parts' shapes (declared in __init__) and writes them.
            if (
                type(reward) in _NUMBERS
                and type(done) in _NUMBERS
                and rows.add_step(state, action, next_state, hidden, reward, done)
            ):
                return
            staged = self._parts(state, action, reward, next_state, done, hidden)
            if staged is not None and rows.add(*staged):
                return
        elif not self.velora_layout:
            self._add_shaped(state, action, reward, next_state, done, hidden)
            return
        values = {
            "states": self._row("state", state, self.state_shape[0], broadcast=False),
            "actions": self._row("action", action, self.action_dim, broadcast=True),
            "rewards": self._row("reward", reward, 1, broadcast=False),
            "next_states": self._row(
                "next_state", next_state, self.state_shape[0], broadcast=False
            ),
            "dones": self._row("done", done, 1, broadcast=False),
            "hiddens": self._hidden_zeros
            if hidden is None or hidden is self._hidden_zeros_t
            else self._row("hidden", hidden, self.hidden_dim, broadcast=True),
        }
        self.table.extend_unchecked(values, 1)

    # The other forms of the fast path and the checked conversions are in _inputs.py.
    _parts = _inputs._parts
    _row = _inputs._row
    _add_shaped = _inputs._add_shaped

    def add_multi(
        self,
        states: Any,
        actions: Any,
        rewards: Any,
        next_states: Any,
        dones: Any,
        hiddens: Any = None,
    ) -> None:
        """Add a batch of N transitions (tensors, arrays or lists).

        ``rewards``, ``dones`` and (when ``action_dim == 1``) ``actions`` may be 1-D.
        Bools and ints are cast to float32. If N exceeds the capacity, exactly the
        newest ``capacity`` rows are kept. N = 0 does nothing.

        Raises:
            ValueError: Naming the argument and the shapes; nothing is written.

        Example:
            >>> buf = ReplayBuffer(10, 2, 1, 0)
            >>> buf.add_multi(torch.ones(3, 2), torch.zeros(3), torch.ones(3), torch.ones(3, 2),
            ...               torch.tensor([False, False, True]))
            >>> len(buf), buf.dones[:3, 0].tolist()
            (3, [0.0, 0.0, 1.0])
        """
        rows = self._rows
        if rows is not None and type(states) is torch.Tensor:
            # The common call (CPU tensors): the writer checks the shapes against the
            # widths declared in __init__ and writes the block under the table's lock.
            shape = states.shape
            if len(shape) == 2 and 0 < shape[0] <= self.capacity:
                n = shape[0]
                if hiddens is None:
                    hiddens = self._zero_hiddens(n)
                if rows.extend((states, actions, next_states, hiddens, rewards, dones), n):
                    return
        shaped = not self.velora_layout
        cols = [
            self._states("states", states)
            if shaped
            else self._column("states", states, self.state_shape[0]),
            self._column("actions", actions, self.action_dim),
            self._column("rewards", rewards, 1),
            self._states("next_states", next_states)
            if shaped
            else self._column("next_states", next_states, self.state_shape[0]),
            self._column("dones", dones, 1),
        ]
        n = cols[0].shape[0]
        if hiddens is None:
            cols.append(torch.zeros(n, self.hidden_dim))
        else:
            cols.append(self._column("hiddens", hiddens, self.hidden_dim))
        for name, t in zip(_KEYS, cols, strict=True):
            if t.shape[0] != n:
                raise InvalidArgumentError(
                    f"{name} has {t.shape[0]} rows but states has {n}; "
                    "every argument of add_multi needs the same number of rows"
                )
        if n == 0:
            return
        if shaped:  # the table's checked casts; the done flags end episodes (frame stacks)
            self.table.extend(
                dict(zip(_KEYS, cols, strict=True)), ends=cols[4][:, 0].to("cpu") != 0
            )
            return
        rows = self._rows
        if rows is not None:
            s, a, r, s2, d, h = cols
            # Concatenated in spec order under the table's lock, straight into the ring.
            if n <= self.capacity and rows.extend((s, a, s2, h, r, d), n):
                return
        if self._fast:
            self.table.extend_unchecked(
                {name: t.numpy() for name, t in zip(_KEYS, cols, strict=True)}, n
            )
        else:
            self.table.extend(
                {name: t.to(self.device) for name, t in zip(_KEYS, cols, strict=True)}
            )

    _column = _inputs._column

    def _zero_hiddens(self, n: int) -> torch.Tensor:
        """``[n, hidden_dim]`` zeros for ``add_multi`` without hiddens (kept, never written)."""
        z = self._hidden_zeros_n
        if z.shape[0] != n:
            z = self._hidden_zeros_n = torch.zeros(n, self.hidden_dim)
        return z

    _states = _inputs._states

    # ------------------------------------------------------------------ reads
    def sample(self, batch_size: int, *, beta: float | None = None) -> BatchExperience:
        """Sample ``batch_size`` transitions uniformly, with replacement.

        A :meth:`prioritized` buffer samples by priority instead and also fills
        ``weights`` (``(B, 1)``) and ``keys`` (``beta`` overrides its exponent). The
        draw has the table's semantics (:meth:`Table.sample`): ``times_sampled``
        counts, ``max_times_sampled`` removals and the rate limiter all apply.

        Returns:
            A :class:`BatchExperience` on the buffer's device.

        Raises:
            ValueError: ``"Buffer does not contain enough experiences. Available: n,
                Requested: b"`` when fewer than ``batch_size`` are stored.

        Example:
            >>> buf = ReplayBuffer(10, 2, 1, 0)
            >>> buf.add_multi(torch.ones(4, 2), torch.zeros(4), torch.ones(4), torch.ones(4, 2),
            ...               torch.zeros(4))
            >>> buf.sample(3).rewards.shape
            torch.Size([3, 1])
        """
        if type(batch_size) is not int or batch_size < 1:
            batch_size = check_int("batch_size", batch_size, 1)
        n = self.table.num_steps
        if n < batch_size:
            raise NotEnoughDataError(
                f"Buffer does not contain enough experiences. Available: {n}, "
                f"Requested: {batch_size}"
            )
        data, keys, weights = self.table.sample_transitions(batch_size, beta=beta)
        if self._weighted:
            return BatchExperience(**data, weights=weights, keys=keys)
        return BatchExperience(**data)

    def update_priorities(self, keys: Any, priorities: Any) -> int:
        """Set priorities of sampled transitions (see :meth:`Table.update_priorities`).

        ``priorities`` may be ``(B,)`` or ``(B, 1)`` like the batch's fields.

        Example:
            >>> buf = ReplayBuffer.prioritized(10, 2, 1, 0, seed=0)
            >>> buf.add_multi(torch.ones(4, 2), torch.zeros(4), torch.ones(4), torch.ones(4, 2),
            ...               torch.zeros(4))
            >>> b = buf.sample(2); buf.update_priorities(b.keys, b.rewards.abs() + 0.1)
            2
        """
        return self.table.update_priorities(keys, priorities)

    def warm(self, agent: Any, n_samples: int, num_envs: int = 8, **kwargs: Any) -> None:
        """Fill the buffer with ``n_samples`` transitions from Gymnasium vector envs.

        Velora's contract: ``num_envs`` cannot be smaller than 2 (the generic
        :func:`replaydb.collect.warm` also accepts 1). See
        :func:`replaydb.collect.warm` for the other arguments (``env=``, ``seed=``,
        ``progress=``) and what is stored. Needs ``pip install 'replaydb[gym]'``.

        Raises:
            InvalidArgumentError: If ``num_envs`` is not an int >= 2.

        Example:
            >>> buf = ReplayBuffer(100, 4, 1, 0)
            >>> buf.warm("random", 10, 2, env="CartPole-v1", seed=0, progress=False)
            >>> len(buf)
            10
        """
        if not is_int(num_envs) or num_envs < 2:
            raise InvalidArgumentError(
                f"'num_envs={num_envs!r}' cannot be smaller than 2 (Velora's warm contract); "
                "use replaydb.collect.warm for a single environment"
            )
        collect_warm(self, agent, n_samples, num_envs=num_envs, **kwargs)
