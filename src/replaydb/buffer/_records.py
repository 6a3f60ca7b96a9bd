"""The buffer's records: :class:`BatchExperience` (a sample) and :class:`BufferConfig`.

:class:`BufferConfig` is what :meth:`ReplayBuffer.config` returns, a frozen record
that is also a read-only mapping so Velora's pydantic models accept it; ``_KEYS``
names the six storage tensors in Velora's order (``state_dict`` and the files).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch

_KEYS = ("states", "actions", "rewards", "next_states", "dones", "hiddens")


@dataclass
class BatchExperience:
    """A batch of transitions, each attribute float32 ``(batch_size, features)``.

    A buffer built with a state shape, ``state_dtype`` or ``frame_stack`` returns
    ``states`` and ``next_states`` as ``(B, *shape)`` or ``(B, k, *shape)`` in the
    stored dtype.

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
        state_dim: Size of an observation (its shape, a tuple, for a buffer built
            with one).
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
    state_dim: int | tuple[int, ...]
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
