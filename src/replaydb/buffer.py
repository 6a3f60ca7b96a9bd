"""A Velora-compatible ``ReplayBuffer`` over a :class:`~replaydb.Table`.

Code written for Velora's buffer runs unchanged after changing the import::

    from replaydb import ReplayBuffer   # was: from velora.buffer import ReplayBuffer

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

Files are Velora's: ``<prefix>metadata.json`` and ``<prefix>state.safetensors`` (the
six tensors at full capacity). replaydb adds a format version and a SHA-256 of the
state file to the JSON; Velora ignores extra keys, and files move both ways.

:meth:`ReplayBuffer.prioritized` builds the same buffer over a
:class:`~replaydb.samplers.Prioritized` sampler: ``sample`` then fills
``weights`` and ``keys``, and ``update_priorities(keys, priorities)`` feeds TD
errors back. Its ``save`` still writes Velora's two files (the transitions, which
Velora can read); priorities and the sampler's RNG are kept by
:func:`~replaydb.save_table` on ``buffer.table`` instead.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from replaydb.checkpoint import atomic_write_files
from replaydb.errors import CheckpointError, InvalidArgumentError, NotEnoughDataError
from replaydb.samplers import Prioritized
from replaydb.spec import Field, Spec
from replaydb.table import Table

__all__ = ["BatchExperience", "ReplayBuffer"]

VELORA_FORMAT = "replaydb.velora"
_KEYS = ("states", "actions", "rewards", "next_states", "dones", "hiddens")
_META_KEYS = ("capacity", "state_dim", "action_dim", "hidden_dim", "position", "size", "device")


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
        weights: Importance weights ``(B,)`` (prioritized buffers only).
        keys: Item keys for :meth:`ReplayBuffer.update_priorities` (prioritized only).

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


def _positive_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InvalidArgumentError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


class ReplayBuffer:
    """Velora's off-policy replay buffer, backed by a replaydb table.

    Args:
        capacity: Transitions kept; the oldest is overwritten first.
        state_dim: Size of an observation.
        action_dim: Size of an action.
        hidden_dim: Size of the acting network's hidden state (0 allowed).
        device: Where the tensors live (default CPU).

    Raises:
        InvalidArgumentError: If a size is not a positive int.

    Example:
        >>> buffer = ReplayBuffer(100, state_dim=4, action_dim=1, hidden_dim=2)
        >>> buffer.add(torch.zeros(4), 1.0, 1.0, torch.zeros(4), False)
        >>> len(buffer)
        1
    """

    def __init__(
        self,
        capacity: int,
        state_dim: int,
        action_dim: int,
        hidden_dim: int,
        *,
        device: torch.device | str | None = None,
        table: Table | None = None,
    ) -> None:
        self.capacity = _positive_int("capacity", capacity, 1)
        self.state_dim = _positive_int("state_dim", state_dim, 1)
        self.action_dim = _positive_int("action_dim", action_dim, 1)
        self.hidden_dim = _positive_int("hidden_dim", hidden_dim, 0)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.table = (
            table
            if table is not None
            else Table(
                self.transition_spec(self.state_dim, self.action_dim, self.hidden_dim),
                self.capacity,
                device=self.device,
                name="replay_buffer",
            )
        )
        self._fast = self.table.storage._np is not None
        self._hidden_zeros = np.zeros(self.hidden_dim, dtype=np.float32)
        # Staging row for single adds: one packed float32 row in spec order, the four
        # vector fields first so that one torch.cat fills them.
        self._stage = np.zeros(
            2 * self.state_dim + self.action_dim + self.hidden_dim + 2, np.float32
        )
        self._stage_head = torch.from_numpy(self._stage)[:-2]
        self._stage_values = {torch.float32: self._stage}
        self._block: torch.Tensor | None = None
        self._hidden_zeros_t = torch.zeros(self.hidden_dim)
        self._shapes = (
            torch.Size([self.state_dim]),
            torch.Size([self.action_dim]),
            torch.Size([self.hidden_dim]),
        )
        self._weighted = not self.table.sampler.deterministic and hasattr(
            self.table.sampler, "beta"
        )

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

        ``sample`` returns ``weights`` and ``keys`` besides Velora's fields; feed
        ``abs(td_error) + eps`` back through :meth:`update_priorities`. New
        transitions get the highest priority seen so far.

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
        table = Table(spec, c, sampler=sampler, device=device, name="replay_buffer")
        return cls(c, state_dim, action_dim, hidden_dim, device=device, table=table)

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
        return self.table.storage.total % self.capacity

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
            ValueError: Naming the field, the expected and the received shape; the
                buffer is left unchanged.
        """
        if self._fast and self._stage_add(state, action, reward, next_state, done, hidden):
            self.table.extend_unchecked(self._stage_values, 1)
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
    ) -> bool:
        """Write one transition into the staging row; ``False`` if it needs the checked path.

        The common Velora call (1-D CPU float tensors, numbers for reward and done) is
        one ``torch.cat`` into the staging row, whose numpy view is then copied into
        storage in one assignment. Anything else (lists, arrays, a ``(1, dim)`` state,
        a tensor that requires grad or lives on a GPU, a wrong size) returns ``False``
        and :meth:`_row` produces the conversion or the exact error.
        """
        tensor = torch.Tensor
        if not (
            isinstance(state, tensor)
            and isinstance(next_state, tensor)
            and isinstance(action, tensor)
        ):
            return False
        if hidden is None:
            hidden = self._hidden_zeros_t
        elif not isinstance(hidden, tensor):
            return False
        shapes = self._shapes
        if action.shape != shapes[1]:
            if action.dim() != 0:
                return False
            action = action.expand(self.action_dim)  # one value fills every slot
        if state.shape != shapes[0] or next_state.shape != shapes[0] or hidden.shape != shapes[2]:
            return False
        try:
            torch.cat((state, action, next_state, hidden), out=self._stage_head)
            self._stage[-2] = reward
            self._stage[-1] = done
        except (RuntimeError, TypeError, ValueError):
            return False
        return True

    def _row(self, name: str, value: Any, dim: int, *, broadcast: bool) -> Any:
        """Return ``value`` as something numpy can assign into a ``(dim,)`` row."""
        if isinstance(value, torch.Tensor):
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
            ValueError: Naming the field and the shapes; nothing is written.
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
            # Pack the columns in spec order into one contiguous block: one row-block
            # copy into storage instead of six strided ones.
            if self._block is None or self._block.shape[0] != n:
                self._block = torch.empty(n, self._stage.shape[0])
            states, actions, rewards, next_states, dones_, hiddens_ = cols
            torch.cat((states, actions, next_states, hiddens_, rewards, dones_), 1, out=self._block)
            block: dict[Any, Any] = {torch.float32: self._block.numpy()}
            self.table.extend_unchecked(block, n)
        else:
            self.table.extend(
                {name: t.to(self.device) for name, t in zip(_KEYS, cols, strict=True)}
            )

    def _column(self, name: str, value: Any, dim: int) -> torch.Tensor:
        """``value`` as a float32 ``(N, dim)`` tensor (on CPU for the fast path)."""
        if isinstance(value, torch.Tensor):
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
        ``weights`` and ``keys`` (``beta`` overrides its importance-weight exponent).

        Returns:
            A :class:`BatchExperience` on the buffer's device.

        Raises:
            ValueError: ``"Buffer does not contain enough experiences. Available: n,
                Requested: b"`` when fewer than ``batch_size`` are stored.
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
            return BatchExperience(**s.data, weights=s.weights, keys=s.keys)
        table = self.table
        with table._cond:
            # The uniform single-step case is a random row and one gather; the
            # full Table.sample path would add item bookkeeping Velora never reads.
            draw = getattr(table.sampler, "draw", None)
            b = int(batch_size)
            rows = draw(b) if draw is not None else table.sampler.sample(b).slots
            data = table.storage.gather(rows)
            table.rate_limiter.on_sample(int(batch_size))
        return BatchExperience(**data)

    # ------------------------------------------------------------- persistence
    def metadata(self) -> dict[str, Any]:
        """Velora's metadata: capacity, dims, position, size and device, in that order."""
        return {
            "capacity": self.capacity,
            "state_dim": self.state_dim,
            "action_dim": self.action_dim,
            "hidden_dim": self.hidden_dim,
            "position": self.position,
            "size": self.size,
            "device": str(self.device),
        }

    def config(self) -> dict[str, Any]:
        """The constructor arguments (without the device)."""
        return {
            "capacity": self.capacity,
            "state_dim": self.state_dim,
            "action_dim": self.action_dim,
            "hidden_dim": self.hidden_dim,
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The six tensors at full capacity (rows past ``size`` are zeros)."""
        return {k: self.table.storage.fields[k] for k in _KEYS}

    def save(self, dirpath: str | os.PathLike[str], prefix: str = "buffer_") -> None:
        """Write ``<prefix>metadata.json`` and ``<prefix>state.safetensors`` into ``dirpath``.

        Both files are written to temporary names, fsynced and renamed, so a crash
        while saving leaves the previous files as they were.

        Raises:
            OSError: If the directory cannot be created or written (nothing is replaced).
        """
        from safetensors.torch import save_file

        d = Path(dirpath)
        if d.exists() and not d.is_dir():
            raise InvalidArgumentError(
                f"dirpath {str(d)!r} is a file; save() needs a directory path"
            )
        d.mkdir(parents=True, exist_ok=True)
        with self.table._cond:
            tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
            meta = self.metadata()

        state_path = d / f"{prefix}state.safetensors"
        meta_path = d / f"{prefix}metadata.json"
        digest: dict[str, str] = {}

        def write_state(tmp: Path) -> None:
            save_file(tensors, str(tmp))
            digest["sha256"] = _sha256(tmp)

        def write_meta(tmp: Path) -> None:
            full = {
                **meta,
                "format": VELORA_FORMAT,
                "format_version": 1,
                "state_sha256": digest["sha256"],
            }
            tmp.write_text(json.dumps(full, indent=2))

        atomic_write_files({state_path: write_state, meta_path: write_meta})

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
            A new buffer with the same contents, position and size.

        Raises:
            CheckpointError: If the file is missing, truncated, corrupt, or does not
                match the metadata.
        """
        from safetensors.torch import load_file

        meta = _check_metadata(metadata)
        p = Path(state_path)
        if p.suffix != ".safetensors":
            p = p.with_name(p.name + ".safetensors")
        if not p.is_file():
            raise CheckpointError(f"no buffer state file at {str(p)!r}; check state_path")
        if "state_sha256" in meta and _sha256(p) != meta["state_sha256"]:
            raise CheckpointError(
                f"{str(p)!r} does not match its metadata's SHA-256: the file is corrupt, or "
                "the metadata belongs to another save"
            )
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
        dev = device if device is not None else (meta["device"] or "cpu")
        buffer = cls(
            meta["capacity"], meta["state_dim"], meta["action_dim"], meta["hidden_dim"], device=dev
        )
        size, position, cap = meta["size"], meta["position"], meta["capacity"]
        if size == cap:
            order = torch.cat([torch.arange(position, cap), torch.arange(0, position)])
            buffer.table.storage.seek(position)
        else:
            order = torch.arange(0, size)
        if size:
            buffer.table.extend({k: tensors[k].index_select(0, order) for k in _KEYS})
        return buffer

    def warm(self, agent: Any, n_samples: int, num_envs: int = 8, **kwargs: Any) -> None:
        """Fill the buffer with ``n_samples`` transitions from Gymnasium vector envs.

        See :func:`replaydb.collect.warm` for the arguments (``env=``, ``seed=``,
        ``progress=``) and what is stored. Needs ``pip install 'replaydb[gym]'``.
        """
        from replaydb.collect import warm

        warm(self, agent, n_samples, num_envs=num_envs, **kwargs)

    def update_priorities(self, keys: Any, priorities: Any) -> int:
        """Set priorities of sampled transitions (see :meth:`Table.update_priorities`)."""
        return self.table.update_priorities(keys, priorities)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
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
    return meta
