""":class:`StreamReplayBuffer`: Velora's ``add``/``sample`` with each observation stored once.

Transitions that are consecutive steps of one stream (an environment's loop:
``next_state`` of one call is ``state`` of the next) are written as the steps of a
``T = 2`` sequence table whose spec has no ``next_states``: a sample's
``next_states`` is the window's second step. An episode's last observation is
written as a *final step* (``Table(..., final_step=True)``) carrying the end code.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import torch

from replaydb._validate import check_int
from replaydb.buffer import _inputs
from replaydb.buffer._inputs import (
    _row_tensor,
    check_device,
    check_state_dtype,
    given_state_dim,
    state_shape,
)
from replaydb.buffer._records import BatchExperience
from replaydb.errors import NotEnoughDataError
from replaydb.spec import Field, Spec
from replaydb.table import Table

__all__ = ["StreamReplayBuffer"]


class StreamReplayBuffer:
    """A replay buffer for consecutive transitions that stores each observation once.

    ``add(state, action, reward, next_state, done, stream=i)`` takes Velora's
    transition. Each stream (one per environment) is assumed to be one environment's
    loop: ``state`` is the previous call's ``next_state``. The buffer checks this
    (one ``torch.equal`` per call): a ``state`` that differs starts a new episode and
    closes the previous one as *truncated* (its last ``next_state`` is kept, and its
    last transition bootstraps from it, ``done=0``). ``done=True`` ends the episode
    (terminated); the next ``add`` of that stream starts a new one.

    ``capacity`` counts stored observations (rows): a transition takes one row, and
    each episode's last observation one more. ``len`` counts sampleable transitions.
    Not Velora's storage layout: there are no ``[capacity, dim]`` views, no
    ``state_dict`` and no Velora files. Thread-safe: ``add`` holds the buffer's lock
    while it checks and writes a stream's steps.

    Args:
        capacity: Observations (rows) kept; the oldest is overwritten first.
        state_dim: Size of an observation, or its shape.
        action_dim: Size of an action.
        hidden_dim: Size of the hidden state (0 allowed).
        state_dtype: Dtype of the stored and sampled observations (e.g. ``torch.uint8``).
        device: Where the tensors live (default CPU).

    Raises:
        InvalidArgumentError: For a bad size, shape, dtype or device.

    Example:
        >>> buf = StreamReplayBuffer(100, (84, 84), 1, 0, state_dtype=torch.uint8)
        >>> f = [torch.full((84, 84), i, dtype=torch.uint8) for i in range(4)]
        >>> for i in range(3):
        ...     buf.add(f[i], 0, 1.0, f[i + 1], done=(i == 2))
        >>> batch = buf.sample(3)
        >>> bool((batch.next_states.long() == batch.states.long() + 1).all()), len(buf)
        (True, 3)
    """

    def __init__(
        self,
        capacity: int,
        state_dim: int | Sequence[int],
        action_dim: int,
        hidden_dim: int,
        *,
        state_dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        self.capacity = check_int("capacity", capacity, 2)
        self.state_shape = state_shape(state_dim)
        self.state_dim = given_state_dim(state_dim, self.state_shape)
        self.state_dtype = check_state_dtype(state_dtype)
        self.action_dim = check_int("action_dim", action_dim, 1)
        self.hidden_dim = check_int("hidden_dim", hidden_dim, 0)
        self.device = check_device(device)
        spec = Spec(
            {
                "states": Field(self.state_shape, self.state_dtype),
                "actions": Field((self.action_dim,)),
                "rewards": Field((1,)),
                "dones": Field((1,)),
                "hiddens": Field((self.hidden_dim,)),
            }
        )
        self.table = Table(
            spec,
            self.capacity,
            sequence_length=2,
            final_step=True,
            device=self.device,
            name="replay_buffer",
        )
        # Each stream's last next_state while its episode is open (None: closed).
        self._open: dict[int, torch.Tensor] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        return (
            f"StreamReplayBuffer(capacity={self.capacity}, state_dim={self.state_dim}, "
            f"action_dim={self.action_dim}, hidden_dim={self.hidden_dim}, "
            f"state_dtype={self.state_dtype}, size={len(self)}, device={self.device})"
        )

    _states = _inputs._states
    _row = _inputs._row

    def add(
        self,
        state: Any,
        action: Any,
        reward: Any,
        next_state: Any,
        done: Any,
        hidden: Any = None,
        *,
        stream: int = 0,
    ) -> None:
        """Add one transition of ``stream`` (see the class docstring for the assumptions).

        Args:
            state: Observation, the buffer's shape or ``(1, *shape)``.
            action: ``action_dim`` values (a single value fills every slot).
            reward: One number.
            next_state: Observation after the action, like ``state``.
            done: Whether the episode terminated.
            hidden: ``hidden_dim`` values; omitted means zeros.
            stream: Which environment this transition comes from (int >= 0).

        Raises:
            InvalidArgumentError: For a bad shape, None, or a bad ``stream``.
            SpecMismatchError: For an observation the stored dtype cannot hold exactly
                (a float frame into ``uint8``). Nothing is written on any error.

        Example:
            >>> buf = StreamReplayBuffer(10, 2, 1, 0)
            >>> buf.add(torch.zeros(2), 0, 1.0, torch.ones(2), False)
            >>> buf.add(torch.ones(2), 0, 1.0, torch.ones(2) * 2, True)
            >>> len(buf), buf.table.num_steps
            (2, 3)
        """
        stream = check_int("stream", stream, 0)

        def one(name: str, value: Any, dim: int, broadcast: bool) -> torch.Tensor:
            return _row_tensor(self, name, value, dim, broadcast)

        step = {
            "states": self._states("state", state, batched=False),
            "actions": one("action", action, self.action_dim, True),
            "rewards": one("reward", reward, 1, False),
            "dones": one("done", done, 1, False),
            "hiddens": torch.zeros(1, self.hidden_dim)
            if hidden is None
            else one("hidden", hidden, self.hidden_dim, True),
        }
        nxt = self._states("next_state", next_state, batched=False)
        spec = self.table.spec
        dev = self.table.device
        step, _ = spec.coerce_batch(step, dev)  # checked casts, before anything is written
        nxt = spec.coerce_batch({**step, "states": nxt}, dev)[0]["states"]
        terminated = bool(step["dones"][0, 0] != 0)
        with self._lock:  # a stream's check and write are one step for other threads
            rows: list[dict[str, torch.Tensor]] = []
            ends: list[int] = []
            last = self._open.get(stream)
            if last is not None and not torch.equal(last, step["states"]):
                rows.append(self._final(last))  # the previous episode was cut: truncated
                ends.append(2)
            rows.append(step)
            ends.append(0)
            if terminated:
                rows.append(self._final(nxt))
                ends.append(1)
            batch = {k: torch.cat([r[k] for r in rows]) for k in step}
            self.table.extend(batch, streams=stream, ends=torch.tensor(ends))
            if terminated:
                self._open.pop(stream, None)
            else:
                self._open[stream] = nxt

    def _final(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        """The final-step row of an episode: its last observation, zeros elsewhere."""
        dev = self.table.device
        return {
            "states": obs,
            "actions": torch.zeros(1, self.action_dim, device=dev),
            "rewards": torch.zeros(1, 1, device=dev),
            "dones": torch.zeros(1, 1, device=dev),
            "hiddens": torch.zeros(1, self.hidden_dim, device=dev),
        }

    def sample(self, batch_size: int) -> BatchExperience:
        """Sample ``batch_size`` transitions uniformly, with replacement.

        ``next_states`` is the second step of each stored window: the observation that
        followed, or the episode's last observation.

        Raises:
            InvalidArgumentError: If ``batch_size`` is not an int >= 1.
            NotEnoughDataError: If fewer than ``batch_size`` transitions are stored.

        Example:
            >>> buf = StreamReplayBuffer(10, 2, 1, 0)
            >>> buf.add(torch.zeros(2), 0, 1.0, torch.ones(2), True)
            >>> buf.sample(1).next_states.tolist()
            [[1.0, 1.0]]
        """
        b = check_int("batch_size", batch_size, 1)
        n = len(self.table)
        if n < b:
            raise NotEnoughDataError(
                f"Buffer does not contain enough experiences. Available: {n}, Requested: {b}"
            )
        d = self.table.sample_data(b)
        return BatchExperience(
            states=d["states"][:, 0],
            actions=d["actions"][:, 0],
            rewards=d["rewards"][:, 0],
            next_states=d["states"][:, 1],
            dones=d["dones"][:, 0],
            hiddens=d["hiddens"][:, 0],
        )
