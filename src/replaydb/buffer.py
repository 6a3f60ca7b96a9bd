"""A Velora-compatible ``ReplayBuffer`` over a :class:`~replaydb.Table`.

Code written for Velora's buffer runs unchanged after changing the import::

    from replaydb import ReplayBuffer   # was: from velora.buffer import ReplayBuffer

and Velora's own agents (``NeuroFlow``, ``NeuroFlowCT``) run on it when it is swapped
in for ``velora.buffer.ReplayBuffer``: ``config()`` returns a :class:`BufferConfig`
that Velora's pydantic models accept, the six storage tensors are attributes,
``state_dict()`` is what ``safetensors.torch.save_file`` takes, and ``warm`` keeps
Velora's contract.

The buffer is a single-step table whose spec is Velora's transition, every field
float32 and packed, in this order, into one
``[capacity, 2*state_dim + action_dim + hidden_dim + 2]`` tensor, so a sample is
one gather and a single ``add`` one ``torch.cat`` into a staging row:

===============  ==================
``states``       ``(state_dim,)``
``actions``      ``(action_dim,)``
``next_states``  ``(state_dim,)``
``hiddens``      ``(hidden_dim,)``
``rewards``      ``(1,)``
``dones``        ``(1,)``
===============  ==================

``buffer.states`` and the other five attributes are live ``[capacity, dim]``
column views of that tensor (not contiguous; ``state_dict()`` returns dense copies).

Files are Velora's: ``<prefix>metadata.json`` and ``<prefix>state.safetensors`` (the
six tensors at full capacity). replaydb adds a format version, a SHA-256 of the
state file and the previous save's metadata to the JSON; Velora ignores extra keys,
and files move both ways. A buffer whose table is not the plain uniform one (a
:meth:`ReplayBuffer.prioritized` buffer, a table with ``max_times_sampled``...)
also writes ``<prefix>table-<sha>.safetensors`` with the table's item, sampler and
rate-limiter state, named in the JSON, so priorities, ``alpha``, ``beta`` and the
generator come back on load.

Crash safety of :meth:`ReplayBuffer.save`: every file is written under a temporary
name and fsynced; then the metadata is renamed into place, then the state file.
The new metadata carries the previous save's metadata under ``"previous"``, so a
kill between the two renames leaves a new metadata file beside the old state file,
which :meth:`ReplayBuffer.load` recognises by its SHA-256 and loads as the old
buffer. Temporary files of killed saves are removed by the next save or load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from replaydb.errors import CheckpointError, InvalidArgumentError, NotEnoughDataError
from replaydb.rate_limiters import MinSize, rate_limiter_from_config
from replaydb.samplers import Prioritized, sampler_from_config
from replaydb.spec import Field, Spec
from replaydb.table import Table

__all__ = ["BatchExperience", "BufferConfig", "ReplayBuffer"]

VELORA_FORMAT = "replaydb.velora"
FORMAT_VERSION = 2
_KEYS = ("states", "actions", "rewards", "next_states", "dones", "hiddens")
_META_KEYS = ("capacity", "state_dim", "action_dim", "hidden_dim", "position", "size", "device")
_MAX_JSON = 1 << 20  # metadata files are a few hundred bytes


@dataclass
class BatchExperience:
    """A batch of transitions, each attribute float32 ``(batch_size, features)``.

    Attributes:
        states: Observations.
        actions: Actions taken in ``states``.
        rewards: Rewards received, ``(B, 1)``.
        next_states: Observations after the actions.
        dones: 1.0 where the episode ended after the action, ``(B, 1)``.
        hiddens: Hidden states of the acting network.
        weights: Importance weights ``(B, 1)``, like ``rewards`` (prioritized buffers
            only), so ``(batch.weights * td_error**2).mean()`` never broadcasts.
        keys: ``(B,)`` item keys for :meth:`ReplayBuffer.update_priorities`
            (prioritized only).

    Example:
        >>> b = BatchExperience(*(torch.zeros(2, 1) for _ in range(6)))
        >>> (b.rewards + (1 - b.dones) * 0.99).shape
        torch.Size([2, 1])
    """

    states: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_states: torch.Tensor
    dones: torch.Tensor
    hiddens: torch.Tensor
    weights: torch.Tensor | None = None
    keys: torch.Tensor | None = None


@dataclass(frozen=True, eq=False)
class BufferConfig(Mapping[str, Any]):
    """What :meth:`ReplayBuffer.config` returns: Velora's ``BufferConfig`` fields.

    A frozen record that is also a read-only mapping, so Velora's pydantic
    ``RLAgentConfig(buffer=...)`` validates it like a dict (replaydb depends on
    neither velora nor pydantic). It compares equal to a mapping with the same
    items and to any object with the same five attributes, Velora's
    ``BufferConfig(type="ReplayBuffer", ...)`` included.

    Attributes:
        type: ``"ReplayBuffer"``.
        capacity: Transitions kept.
        state_dim: Size of an observation.
        action_dim: Size of an action.
        hidden_dim: Size of the hidden state.

    Example:
        >>> cfg = ReplayBuffer(100, 4, 1, 8).config()
        >>> cfg == {"type": "ReplayBuffer", "capacity": 100, "state_dim": 4,
        ...         "action_dim": 1, "hidden_dim": 8}
        True
    """

    type: str
    capacity: int
    state_dim: int
    action_dim: int
    hidden_dim: int

    def __getitem__(self, key: str) -> Any:
        if key not in _CONFIG_FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(_CONFIG_FIELDS)

    def __len__(self) -> int:
        return len(_CONFIG_FIELDS)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self) == dict(other)
        try:
            return all(getattr(other, k) == getattr(self, k) for k in _CONFIG_FIELDS)
        except AttributeError:
            return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, k) for k in _CONFIG_FIELDS))

    def model_dump(self) -> dict[str, Any]:
        """The fields as a plain dict (the name pydantic models use)."""
        return dict(self)


_CONFIG_FIELDS = tuple(f.name for f in fields(BufferConfig))


def _positive_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InvalidArgumentError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_device(device: Any) -> torch.device:
    """``device`` as a :class:`torch.device` that can hold tensors here, or one clear error.

    Args:
        device: ``None`` (CPU), a string such as ``"cuda:0"``, or a ``torch.device``.

    Returns:
        The device.

    Raises:
        InvalidArgumentError: If the device is malformed, not built into this torch,
            absent on this machine, or ``meta``.

    Example:
        >>> check_device("cpu")
        device(type='cpu')
    """
    if device is None:
        return torch.device("cpu")
    if not isinstance(device, str | torch.device):
        raise InvalidArgumentError(
            f"device must be a string such as 'cpu' or 'cuda:0' or a torch.device, got "
            f"{type(device).__name__} {device!r}"
        )
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise InvalidArgumentError(
            f"device {device!r} is not a device torch knows; use 'cpu', 'cuda', 'cuda:<n>' or 'mps'"
        ) from exc
    if dev.type == "meta":
        raise InvalidArgumentError(
            "device 'meta' holds no data, so a buffer cannot live there; use 'cpu' or 'cuda'"
        )
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidArgumentError(
                f"device {str(dev)!r} was asked for but this torch has no usable CUDA GPU "
                "(CPU-only build or no driver); use device='cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InvalidArgumentError(
                f"device {str(dev)!r} does not exist: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
        return dev
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InvalidArgumentError(
                f"device {str(dev)!r} was asked for but Apple's MPS backend is not available "
                "on this machine; use device='cpu'"
            )
        return dev
    if dev.type != "cpu":
        try:
            torch.empty(1, device=dev)
        except Exception as exc:  # each backend raises its own type
            raise InvalidArgumentError(
                f"device {str(dev)!r} cannot hold tensors on this machine ({type(exc).__name__}); "
                "use device='cpu'"
            ) from exc
    return dev


class _Staging(threading.local):
    """Per-thread staging arrays, so concurrent ``add`` calls never share a row."""

    row: tuple[np.ndarray[Any, Any], torch.Tensor] | None = None  # the row, its head as torch
    block: tuple[torch.Tensor, np.ndarray[Any, Any]] | None = None  # a block, as numpy


class ReplayBuffer:
    """Velora's off-policy replay buffer, backed by a replaydb table.

    Thread-safe: any number of threads may ``add``, ``add_multi`` and ``sample``
    at once (each thread stages its own rows; storage is written under the
    table's lock).

    Args:
        capacity: Transitions kept; the oldest is overwritten first.
        state_dim: Size of an observation.
        action_dim: Size of an action.
        hidden_dim: Size of the acting network's hidden state (0 allowed).
        device: Where the tensors live (default CPU); also accepted by position.
        table: A table with :meth:`transition_spec` and this capacity to use
            instead of a new uniform one (a sampler, a rate limiter, ...).

    Raises:
        InvalidArgumentError: If a size is not a positive int, the device cannot be
            used here, or ``table`` does not fit.

    Example:
        >>> buffer = ReplayBuffer(100, state_dim=4, action_dim=1, hidden_dim=2)
        >>> buffer.add(torch.zeros(4), 1.0, 1.0, torch.zeros(4), False)
        >>> len(buffer), tuple(buffer.states.shape)
        (1, (100, 4))
    """

    def __init__(
        self,
        capacity: int,
        state_dim: int,
        action_dim: int,
        hidden_dim: int,
        device: torch.device | str | None = None,
        *,
        table: Table | None = None,
    ) -> None:
        self.capacity = _positive_int("capacity", capacity, 1)
        self.state_dim = _positive_int("state_dim", state_dim, 1)
        self.action_dim = _positive_int("action_dim", action_dim, 1)
        self.hidden_dim = _positive_int("hidden_dim", hidden_dim, 0)
        spec = self.transition_spec(self.state_dim, self.action_dim, self.hidden_dim)
        if table is None:
            self.device = check_device(device)
            table = Table(spec, self.capacity, device=self.device, name="replay_buffer")
        else:
            if not isinstance(table, Table):
                raise InvalidArgumentError(
                    f"table must be a replaydb Table, got {type(table).__name__}"
                )
            if table.spec != spec or table.capacity != self.capacity or table.sequence_length != 1:
                raise InvalidArgumentError(
                    "table must be a single-step table with ReplayBuffer.transition_spec"
                    f"({self.state_dim}, {self.action_dim}, {self.hidden_dim}) and capacity "
                    f"{self.capacity}; got capacity {table.capacity}, sequence_length "
                    f"{table.sequence_length}, fields {list(table.spec)}"
                )
            if device is not None and check_device(device) != table.device:
                raise InvalidArgumentError(
                    f"device {str(device)!r} differs from the table's device {str(table.device)!r}"
                )
            self.device = table.device
        self.table = table
        self._fields = table.storage.fields  # live [capacity, dim] column views
        self._fast = self.device.type == "cpu"
        self._width = 2 * self.state_dim + self.action_dim + self.hidden_dim + 2
        self._tls = _Staging()
        self._hidden_zeros = np.zeros(self.hidden_dim, dtype=np.float32)
        self._hidden_zeros_t = torch.zeros(self.hidden_dim)
        self._shapes = (
            torch.Size([self.state_dim]),
            torch.Size([self.action_dim]),
            torch.Size([self.hidden_dim]),
        )
        self._shapes_2d = tuple(torch.Size([1, *sh]) for sh in self._shapes)
        self._weighted = not table.sampler.deterministic and hasattr(table.sampler, "beta")

    @classmethod
    def prioritized(
        cls,
        capacity: int,
        state_dim: int,
        action_dim: int,
        hidden_dim: int,
        *,
        alpha: float = 0.6,
        beta: float = 0.4,
        eps: float = 1e-6,
        seed: int | None = None,
        device: torch.device | str | None = None,
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

        Returns:
            The buffer.

        Example:
            >>> buf = ReplayBuffer.prioritized(100, 4, 1, 0, seed=0)
            >>> s, z = torch.zeros(8, 4), torch.zeros(8)
            >>> buf.add_multi(s, z, z + 1, s, z)
            >>> batch = buf.sample(4); buf.update_priorities(batch.keys, torch.rand(4) + 0.1)
            4
        """
        c = _positive_int("capacity", capacity, 1)
        spec = cls.transition_spec(
            _positive_int("state_dim", state_dim, 1),
            _positive_int("action_dim", action_dim, 1),
            _positive_int("hidden_dim", hidden_dim, 0),
        )
        sampler = Prioritized(alpha=alpha, beta=beta, eps=eps, seed=seed)
        dev = check_device(device)
        table = Table(spec, c, sampler=sampler, device=dev, name="replay_buffer")
        return cls(c, state_dim, action_dim, hidden_dim, table=table)

    @staticmethod
    def transition_spec(state_dim: int, action_dim: int, hidden_dim: int) -> Spec:
        """The spec of a Velora transition.

        Example:
            >>> list(ReplayBuffer.transition_spec(4, 1, 2))
            ['states', 'actions', 'next_states', 'hiddens', 'rewards', 'dones']
        """
        return Spec(
            {
                "states": Field((state_dim,)),
                "actions": Field((action_dim,)),
                "next_states": Field((state_dim,)),
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
            f"device={self.device})"
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
            state: Observation, shape ``(state_dim,)`` or ``(1, state_dim)``.
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
        if self._fast:
            row = self._stage_add(state, action, reward, next_state, done, hidden)
            if row is not None:
                self.table.extend_unchecked({torch.float32: row}, 1)
                return
        values = {
            "states": self._row("state", state, self.state_dim, broadcast=False),
            "actions": self._row("action", action, self.action_dim, broadcast=True),
            "rewards": self._row("reward", reward, 1, broadcast=False),
            "next_states": self._row("next_state", next_state, self.state_dim, broadcast=False),
            "dones": self._row("done", done, 1, broadcast=False),
            "hiddens": self._hidden_zeros
            if hidden is None
            else self._row("hidden", hidden, self.hidden_dim, broadcast=True),
        }
        self.table.extend_unchecked(values, 1)

    def _stage_add(
        self, state: Any, action: Any, reward: Any, next_state: Any, done: Any, hidden: Any
    ) -> np.ndarray[Any, Any] | None:
        """This thread's staging row holding the transition; ``None`` if it needs the checked path.

        The common Velora call (1-D CPU float tensors, numbers for reward and done) is
        one ``torch.cat`` into the staging row, which storage then copies in one
        assignment. Anything else (lists, arrays, a ``(1, dim)`` state, a tensor that
        requires grad or lives on a GPU, a wrong size, ``None``) returns ``None`` and
        :meth:`_row` produces the conversion or the exact error.
        """
        tensor = torch.Tensor
        if not (
            isinstance(state, tensor)
            and isinstance(next_state, tensor)
            and isinstance(action, tensor)
        ) or (reward is None or done is None):
            return None
        if hidden is None:
            hidden = self._hidden_zeros_t
        elif not isinstance(hidden, tensor):
            return None
        shapes = self._shapes
        if action.shape != shapes[1]:
            if action.dim() == 0:
                action = action.expand(self.action_dim)  # one value fills every slot
            elif action.shape == self._shapes_2d[1]:  # Velora's agents pass (1, dim)
                action = action[0]
            else:
                return None
        if hidden.shape != shapes[2]:
            if hidden.shape != self._shapes_2d[2]:
                return None
            hidden = hidden[0]
        if state.shape != shapes[0]:
            if state.shape != self._shapes_2d[0]:
                return None
            state = state[0]
        if next_state.shape != shapes[0]:
            if next_state.shape != self._shapes_2d[0]:
                return None
            next_state = next_state[0]
        if isinstance(reward, tensor):  # a 0-d tensor from a NumpyToTorch env
            if reward.numel() != 1 or reward.dim() > 2:
                return None
            reward = reward.item()
        if isinstance(done, tensor):
            if done.numel() != 1 or done.dim() > 2:
                return None
            done = done.item()
        staged = self._tls.row
        if staged is None:
            arr = np.zeros(self._width, np.float32)
            staged = self._tls.row = (arr, torch.from_numpy(arr[:-2]))
        row, head = staged
        try:
            torch.cat((state, action, next_state, hidden), out=head)
            row[-2] = reward
            row[-1] = done
        except (RuntimeError, TypeError, ValueError):
            return None
        return row

    def _row(self, name: str, value: Any, dim: int, *, broadcast: bool) -> Any:
        """Return ``value`` as something numpy can assign into a ``(dim,)`` row."""
        if value is None:
            raise InvalidArgumentError(
                f"{name} must be "
                + ("a number" if dim == 1 and name in ("reward", "done") else "a tensor or array")
                + ", got None"
            )
        if isinstance(value, torch.Tensor):
            _check_tensor(name, value)
            if value.requires_grad:
                value = value.detach()
            if value.dtype is not torch.float32 or not value.is_cpu:
                value = value.to("cpu", torch.float32)
            shape = value.shape
            if (len(shape) == 1 and shape[0] == dim) or shape == (1, dim):
                return value.numpy()  # numpy drops the leading 1 when assigning
            n, shape = value.numel(), tuple(shape)
            out: Any = value.numpy()
        elif isinstance(value, bool | int | float | np.number | np.bool_):
            if dim != 1 and not broadcast:
                raise InvalidArgumentError(
                    f"{name}: expected shape ({dim},) or (1, {dim}), got a single number {value!r}"
                )
            return float(value)
        else:
            try:
                out = np.asarray(value, dtype=np.float32)
            except (TypeError, ValueError) as exc:
                raise InvalidArgumentError(
                    f"{name}: expected a tensor, array or number, got {type(value).__name__}"
                ) from exc
            n, shape = out.size, out.shape
        if n == dim and (len(shape) <= 1 or shape == (1, dim)):
            return out.reshape(dim) if len(shape) != 1 else out
        if n == 1 and (broadcast or dim == 1) and len(shape) <= 2:
            return out.reshape(())
        expected = f"({dim},) or (1, {dim})" + (" or a single value" if broadcast else "")
        raise InvalidArgumentError(
            f"{name}: expected shape {expected}, got {shape}; "
            f"this buffer was built with {name.removesuffix('s')}_dim={dim}"
            if name in ("state", "next_state", "action", "hidden")
            else f"{name}: expected shape {expected}, got {shape}"
        )

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
        cols = [
            self._column("states", states, self.state_dim),
            self._column("actions", actions, self.action_dim),
            self._column("rewards", rewards, 1),
            self._column("next_states", next_states, self.state_dim),
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
        if self._fast:
            # Pack the columns in spec order into one contiguous block of this
            # thread's: one row-block copy into storage instead of six strided ones.
            tls = self._tls
            staged = tls.block
            if staged is None or staged[1].shape[0] != n:
                t = torch.empty(n, self._width)
                staged = tls.block = (t, t.numpy())
            s, a, r, s2, d, h = cols
            torch.cat((s, a, s2, h, r, d), 1, out=staged[0])
            self.table.extend_unchecked({torch.float32: staged[1]}, n)
        else:
            self.table.extend(
                {name: t.to(self.device) for name, t in zip(_KEYS, cols, strict=True)}
            )

    def _column(self, name: str, value: Any, dim: int) -> torch.Tensor:
        """``value`` as a float32 ``(N, dim)`` tensor (on CPU for the fast path)."""
        if isinstance(value, torch.Tensor):
            _check_tensor(name, value)
            t = value.detach() if value.requires_grad else value
        else:
            try:
                t = torch.as_tensor(np.asarray(value))
            except (TypeError, ValueError) as exc:
                raise InvalidArgumentError(
                    f"{name}: expected a tensor or array, got {type(value).__name__}"
                ) from exc
        if t.dim() == 1 and dim == 1:
            t = t.unsqueeze(1)
        if t.dim() != 2 or t.shape[1] != dim:
            raise InvalidArgumentError(
                f"{name}: expected shape (N, {dim}), got {tuple(t.shape)}"
                + (" (1-D is accepted when the feature size is 1)" if t.dim() == 1 else "")
            )
        if t.dtype is not torch.float32 or (self._fast and not t.is_cpu):
            t = t.to("cpu" if self._fast else t.device, torch.float32)
        return t

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
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, int | np.integer)
            or (batch_size < 1)
        ):
            raise InvalidArgumentError(f"batch_size must be an int >= 1, got {batch_size!r}")
        n = self.table.num_steps
        if n < batch_size:
            raise NotEnoughDataError(
                f"Buffer does not contain enough experiences. Available: {n}, "
                f"Requested: {batch_size}"
            )
        if self._weighted:
            s = self.table.sample(int(batch_size), beta=beta)
            return BatchExperience(**s.data, weights=s.weights.unsqueeze(1), keys=s.keys)
        return BatchExperience(**self.table.sample_data(int(batch_size)))

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

    # ------------------------------------------------------------- persistence
    def metadata(self) -> dict[str, Any]:
        """Velora's metadata: capacity, dims, position, size and device, in that order.

        Example:
            >>> ReplayBuffer(10, 2, 1, 0).metadata()["position"]
            0
        """
        return {
            "capacity": self.capacity,
            "state_dim": self.state_dim,
            "action_dim": self.action_dim,
            "hidden_dim": self.hidden_dim,
            "position": self.position,
            "size": self.size,
            "device": str(self.device),
        }

    def config(self) -> BufferConfig:
        """Velora's buffer config: ``type="ReplayBuffer"``, the capacity and the three dims.

        Returns:
            A :class:`BufferConfig`, accepted by Velora's ``RLAgentConfig(buffer=...)``
            and equal to Velora's own ``BufferConfig`` with the same values.

        Example:
            >>> ReplayBuffer(10, 3, 2, 1).config()["type"]
            'ReplayBuffer'
        """
        return BufferConfig(
            type="ReplayBuffer",
            capacity=self.capacity,
            state_dim=self.state_dim,
            action_dim=self.action_dim,
            hidden_dim=self.hidden_dim,
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Dense copies of the six tensors at full capacity (rows past ``size`` are zeros).

        Each is contiguous and owns its memory, so ``safetensors.torch.save_file``
        (what Velora's ``agent.save(..., buffer=True)`` calls) accepts the dict. The
        copies are taken under the table's lock: one consistent snapshot.

        Example:
            >>> ReplayBuffer(10, 3, 2, 1).state_dict()["states"].is_contiguous()
            True
        """
        dense = torch.contiguous_format
        with self.table.locked():
            return {k: self._fields[k].clone(memory_format=dense) for k in _KEYS}

    def _keeps_table_state(self) -> bool:
        """Whether a save needs the table file (anything beyond Velora's plain buffer)."""
        cfg = self.table.config()
        return not (
            cfg["sampler"].get("type") == "Uniform"
            and cfg["max_times_sampled"] is None
            and cfg["rate_limiter"] == MinSize(1).config()  # Table's default limiter
        )

    def save(self, dirpath: str | os.PathLike[str], prefix: str = "buffer_") -> None:
        """Write ``<prefix>metadata.json`` and ``<prefix>state.safetensors`` into ``dirpath``.

        A buffer with more than Velora's plain uniform table (a :meth:`prioritized`
        one, ``max_times_sampled``, a rate limiter) also writes
        ``<prefix>table-<sha>.safetensors`` with its priorities, sampler generator
        and counters, named in the JSON; Velora reads the other two files as usual.

        Crash-safe: a kill at any instant leaves the old or the new buffer loadable
        (see the module docstring for the protocol). Stale temporary files of killed
        saves are removed.

        Raises:
            InvalidArgumentError: If ``dirpath`` is a file or ``prefix`` has a path
                separator.
            OSError: If the directory cannot be created or written (nothing is replaced).

        Example:
            >>> import tempfile
            >>> buf = ReplayBuffer(10, 2, 1, 0); buf.save(tempfile.mkdtemp())
        """
        from safetensors.torch import save_file

        if not isinstance(prefix, str) or "/" in prefix or os.sep in prefix:
            raise InvalidArgumentError(
                f"prefix must be a file name prefix without path separators, got {prefix!r}"
            )
        d = Path(dirpath)
        if d.exists() and not d.is_dir():
            raise InvalidArgumentError(
                f"dirpath {str(d)!r} is a file; save() needs a directory path"
            )
        d.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(d, prefix)
        keep_table = self._keeps_table_state()
        dense = torch.contiguous_format
        with self.table.locked():
            tensors = {
                k: self._fields[k].detach().to("cpu").clone(memory_format=dense) for k in _KEYS
            }
            meta: dict[str, Any] = self.metadata()
            table_state: dict[str, torch.Tensor] = {}
            if keep_table:
                table_config = self.table.config()
                table_state = {
                    k: v.detach().to("cpu").clone(memory_format=dense)
                    for k, v in self.table.state_dict().items()
                    if not k.startswith("storage.group.")
                }

        state_path = d / f"{prefix}state.safetensors"
        meta_path = d / f"{prefix}metadata.json"
        previous = _previous_metadata(meta_path, state_path)
        tmps: list[Path] = []
        try:
            state_tmp = _tmp_beside(state_path)
            tmps.append(state_tmp)
            save_file(tensors, str(state_tmp))
            _fsync_file(state_tmp)
            meta.update(
                format=VELORA_FORMAT,
                format_version=FORMAT_VERSION,
                state_sha256=_sha256(state_tmp),
                previous=previous,
            )
            table_path: Path | None = None
            if keep_table:
                table_tmp = _tmp_beside(d / f"{prefix}table.safetensors")
                tmps.append(table_tmp)
                save_file(table_state, str(table_tmp))
                _fsync_file(table_tmp)
                digest = _sha256(table_tmp)
                # Content-addressed: never overwrites the file the old metadata names.
                table_path = d / f"{prefix}table-{digest[:16]}.safetensors"
                os.replace(table_tmp, table_path)
                meta["table"] = {"file": table_path.name, "sha256": digest, "config": table_config}
            meta_tmp = _tmp_beside(meta_path)
            tmps.append(meta_tmp)
            meta_tmp.write_text(json.dumps(meta, indent=2))
            _fsync_file(meta_tmp)
            _fsync_dir(d)
            # Commit: the metadata first (it still describes the old state file as
            # "previous"), then the state file.
            os.replace(meta_tmp, meta_path)
            os.replace(state_tmp, state_path)
            _fsync_dir(d)
        finally:
            for tmp in tmps:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        # Table files no metadata names any more (the old save's, or a killed save's).
        keep = {table_path.name} if table_path is not None else set()
        for old in d.glob(f"{_glob_escape(prefix)}table-*.safetensors"):
            if old.name not in keep:
                with contextlib.suppress(OSError):
                    old.unlink()

    @classmethod
    def load(
        cls,
        state_path: str | os.PathLike[str],
        metadata: Mapping[str, Any],
        *,
        device: torch.device | str | None = None,
    ) -> ReplayBuffer:
        """Restore a buffer from Velora-format files.

        Args:
            state_path: The ``.safetensors`` file (the suffix may be omitted).
            metadata: The parsed ``<prefix>metadata.json``.
            device: Override the stored device (``null`` in the file means CPU).

        Returns:
            A new buffer with the same contents, position and size, and, where the
            save wrote a table file, the same sampler, priorities and counters.

        Raises:
            CheckpointError: If a file is missing, truncated, corrupt, or does not
                match the metadata, or the metadata is malformed (wrong JSON types, an
                unknown device).

        Example:
            >>> import json, pathlib, tempfile
            >>> d = pathlib.Path(tempfile.mkdtemp()); ReplayBuffer(10, 2, 1, 0).save(d)
            >>> meta = json.loads((d / "buffer_metadata.json").read_text())
            >>> len(ReplayBuffer.load(d / "buffer_state.safetensors", meta))
            0
        """
        from safetensors.torch import load_file

        meta = _check_metadata(metadata)
        p = Path(state_path)
        if p.suffix != ".safetensors":
            p = p.with_name(p.name + ".safetensors")
        if p.name.endswith("state.safetensors"):
            _remove_stale_temporaries(p.parent, p.name[: -len("state.safetensors")])
        if not p.is_file():
            raise CheckpointError(f"no buffer state file at {str(p)!r}; check state_path")
        if "state_sha256" in meta:
            digest = _sha256(p)
            if digest != meta["state_sha256"]:
                prev = meta.get("previous")
                if prev is None or prev.get("state_sha256") != digest:
                    raise CheckpointError(
                        f"{str(p)!r} does not match its metadata's SHA-256: the file is corrupt, "
                        "or the metadata belongs to another save"
                    )
                # A save was killed between its two renames: this is the previous buffer.
                meta = _check_metadata(prev)
        try:
            tensors = load_file(str(p))
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(
                f"{str(p)!r} is not a readable safetensors file (truncated or corrupt?): {exc}"
            ) from exc
        dims = {
            "states": meta["state_dim"],
            "actions": meta["action_dim"],
            "rewards": 1,
            "next_states": meta["state_dim"],
            "dones": 1,
            "hiddens": meta["hidden_dim"],
        }
        if set(tensors) != set(_KEYS):
            raise CheckpointError(
                f"{str(p)!r} holds tensors {sorted(tensors)}, expected {sorted(_KEYS)}"
            )
        for k, dim in dims.items():
            t = tensors[k]
            if t.dtype != torch.float32 or tuple(t.shape) != (meta["capacity"], dim):
                raise CheckpointError(
                    f"{str(p)!r}: tensor {k!r} is {tuple(t.shape)} {t.dtype}, the metadata "
                    f"says ({meta['capacity']}, {dim}) torch.float32"
                )
        if device is not None:
            dev = check_device(device)
        else:
            try:
                dev = check_device(meta["device"])
            except InvalidArgumentError as exc:
                raise CheckpointError(
                    f"metadata['device'] is {meta['device']!r}: {exc}; pass load(..., "
                    "device='cpu') to load it elsewhere"
                ) from exc
        cap, size, position = meta["capacity"], meta["size"], meta["position"]
        spec_args = (meta["state_dim"], meta["action_dim"], meta["hidden_dim"])
        table_state: dict[str, torch.Tensor] | None = None
        if meta.get("table") is not None:
            table, table_state = _load_table_file(
                p.parent, meta["table"], cls.transition_spec(*spec_args), cap, dev
            )
            buffer = cls(cap, *spec_args, table=table)
        else:
            buffer = cls(cap, *spec_args, device=dev)
        total = position if size < cap else cap + position
        order = torch.arange(total - size, total) % cap  # oldest first
        buffer.table.restore_steps(
            {k: tensors[k].index_select(0, order) for k in _KEYS}, total_steps_written=total
        )
        if table_state is not None:
            live = buffer.table.state_dict()
            for k, v in table_state.items():
                if k not in live or live[k].shape != v.shape or live[k].dtype != v.dtype:
                    raise CheckpointError(
                        f"the table file {meta['table']['file']!r} does not fit the buffer: "
                        f"tensor {k!r} is {tuple(v.shape)} {v.dtype}"
                    )
            missing = {k for k in live if not k.startswith("storage.group.")} - set(table_state)
            if missing:
                raise CheckpointError(
                    f"the table file {meta['table']['file']!r} lacks tensors {sorted(missing)}"
                )
            saved_total = int(table_state["storage.total"][0])
            keys = table_state["items.key"]
            if (
                saved_total < 0
                or saved_total % cap != position
                or min(saved_total, cap) != size
                or (keys.numel() and int(keys.max()) >= saved_total)
            ):
                raise CheckpointError(
                    f"the table file {meta['table']['file']!r} does not describe the buffer of "
                    f"the metadata (steps written {saved_total}, position {position}, size {size})"
                )
            # load_state_dict resets storage first: pass copies, not views of it.
            groups = {k: v.clone() for k, v in live.items() if k.startswith("storage.group.")}
            buffer.table.load_state_dict({**live, **groups, **table_state})
        return buffer

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
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 2:
            raise InvalidArgumentError(
                f"'num_envs={num_envs!r}' cannot be smaller than 2 (Velora's warm contract); "
                "use replaydb.collect.warm for a single environment"
            )
        from replaydb.collect import warm

        warm(self, agent, n_samples, num_envs=num_envs, **kwargs)


def _check_tensor(name: str, value: torch.Tensor) -> None:
    if value.layout is not torch.strided:
        raise InvalidArgumentError(
            f"{name}: sparse tensors are not supported (layout {value.layout}); "
            f"pass {name}.to_dense()"
        )
    if value.is_meta:
        raise InvalidArgumentError(
            f"{name}: a tensor on the 'meta' device holds no data; pass a real tensor"
        )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _tmp_beside(path: Path) -> Path:
    """``.<name>.tmp-<pid>-<ns>`` beside ``path`` (the pid lets a later save clean it up)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or we cannot tell: keep its files
    return True


def _remove_stale_temporaries(d: Path, prefix: str) -> None:
    """Remove ``.<prefix>*.tmp-<pid>-<ns>`` files whose process no longer exists."""
    for tmp in d.glob(f".{_glob_escape(prefix)}*.tmp-*"):
        try:
            pid = int(tmp.name.rsplit(".tmp-", 1)[1].split("-", 1)[0])
        except (IndexError, ValueError):
            continue
        if not _pid_alive(pid):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _read_json(path: Path) -> Any:
    """Parse a small JSON file; ``CheckpointError`` for anything unreadable."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(_MAX_JSON + 1)
    except OSError as exc:
        raise CheckpointError(f"cannot read {str(path)!r}: {exc}") from exc
    if len(raw) > _MAX_JSON:
        raise CheckpointError(
            f"{str(path)!r} is larger than {_MAX_JSON} bytes; not a metadata file"
        )
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{str(path)!r} is not valid UTF-8 JSON: {exc}") from exc


def _previous_metadata(meta_path: Path, state_path: Path) -> dict[str, Any] | None:
    """The current save's metadata (without its own ``previous``), if it describes the state file.

    Stored in the new metadata so that a kill between the two renames of a save,
    which leaves the new metadata beside the old state file, still loads.
    """
    if not meta_path.is_file() or not state_path.is_file():
        return None
    try:
        old = _check_metadata(_read_json(meta_path))
    except CheckpointError:
        return None  # unreadable metadata: the old files were not loadable anyway
    old.pop("previous", None)
    if "state_sha256" not in old:  # written by Velora: hash its state file once
        old["state_sha256"] = _sha256(state_path)
    return old


def _load_table_file(
    d: Path, entry: Mapping[str, Any], spec: Spec, capacity: int, device: torch.device
) -> tuple[Table, dict[str, torch.Tensor]]:
    """The empty table and the saved item/sampler/limiter state named by ``metadata["table"]``.

    The table is built from the Velora metadata's spec and capacity; only the
    sampler, rate limiter and ``max_times_sampled`` come from the JSON config (so a
    config edited to ask for a huge table allocates nothing).
    """
    from safetensors.torch import load_file

    path = d / entry["file"]
    if not path.is_file():
        raise CheckpointError(f"the metadata names a table file {str(path)!r}, which is missing")
    if _sha256(path) != entry["sha256"]:
        raise CheckpointError(f"{str(path)!r} does not match its metadata's SHA-256 (corrupt)")
    cfg = entry["config"]
    try:
        table = Table(
            spec,
            capacity,
            sampler=sampler_from_config(cfg["sampler"]),
            rate_limiter=rate_limiter_from_config(cfg["rate_limiter"]),
            max_times_sampled=cfg.get("max_times_sampled"),
            device=device,
            name=str(cfg.get("name", "replay_buffer")),
        )
    except (
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
        OverflowError,
        RecursionError,
        RuntimeError,
    ) as exc:
        raise CheckpointError(
            f"metadata['table']['config'] does not describe a table: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{str(path)!r} is not a readable safetensors file: {exc}") from exc
    return table, state


def _check_metadata(metadata: Any) -> dict[str, Any]:
    if not isinstance(metadata, Mapping):
        raise CheckpointError(
            "metadata must be the dict read from <prefix>metadata.json, "
            f"got {type(metadata).__name__}"
        )
    missing = [k for k in _META_KEYS if k not in metadata and k != "device"]
    if missing:
        raise CheckpointError(f"metadata is missing {missing}; expected keys {list(_META_KEYS)}")
    meta = dict(metadata)
    meta.setdefault("device", None)
    for k in ("capacity", "state_dim", "action_dim", "hidden_dim", "position", "size"):
        v = meta[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise CheckpointError(f"metadata[{k!r}] must be an int >= 0, got {v!r}")
    if meta["device"] is not None and not isinstance(meta["device"], str):
        raise CheckpointError(
            f"metadata['device'] must be a string such as 'cpu' or null, got {meta['device']!r}"
        )
    if meta["capacity"] < 1 or meta["state_dim"] < 1 or meta["action_dim"] < 1:
        raise CheckpointError("metadata capacity, state_dim and action_dim must be >= 1")
    if meta["size"] > meta["capacity"]:
        raise CheckpointError(
            f"metadata size ({meta['size']}) exceeds capacity ({meta['capacity']})"
        )
    if meta["position"] >= meta["capacity"]:
        raise CheckpointError(
            f"metadata position ({meta['position']}) must be < capacity ({meta['capacity']})"
        )
    if meta["size"] < meta["capacity"] and meta["position"] != meta["size"]:
        raise CheckpointError(
            f"metadata position ({meta['position']}) must equal size ({meta['size']}) while "
            "the buffer is not full; the metadata does not describe a ring buffer"
        )
    if "state_sha256" in meta and not (
        isinstance(meta["state_sha256"], str) and len(meta["state_sha256"]) == 64
    ):
        raise CheckpointError(
            f"metadata['state_sha256'] must be a 64-character hex string, got "
            f"{meta['state_sha256']!r}"
        )
    prev = meta.get("previous")
    if prev is not None and not isinstance(prev, Mapping):
        raise CheckpointError(
            f"metadata['previous'] must be an object or null, got {type(prev).__name__}"
        )
    table = meta.get("table")
    if table is not None and not (
        isinstance(table, Mapping)
        and isinstance(table.get("file"), str)
        and "/" not in table["file"]
        and os.sep not in table["file"]
        and not table["file"].startswith(".")
        and isinstance(table.get("sha256"), str)
        and isinstance(table.get("config"), Mapping)
    ):
        raise CheckpointError(
            "metadata['table'] must be an object with 'file' (a file name in the same "
            f"directory), 'sha256' and 'config', got {table!r}"
        )
    return meta
