"""Velora's persistence API of :class:`~replaydb.buffer.ReplayBuffer`, as a mixin.

``metadata``, ``config``, ``state_dict``, ``save`` and ``load``: what Velora's
``agent.save(..., buffer=True)`` and ``ReplayBuffer.load`` call. ``ReplayBuffer``
inherits them; ``save``/``load`` delegate to ``_files`` (the file format and the
crash-safe commit protocol are described in :mod:`replaydb.buffer`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import torch

from replaydb.buffer import _files
from replaydb.buffer._records import _KEYS, BufferConfig
from replaydb.rate_limiters import MinSize

if TYPE_CHECKING:
    from replaydb.buffer._buffer import ReplayBuffer

__all__: list[str] = []


class _VeloraFiles:
    """The persistence methods of :class:`~replaydb.buffer.ReplayBuffer` (its base)."""

    def metadata(self) -> dict[str, Any]:
        """Velora's metadata: capacity, dims, position, size and device, in that order.

        A buffer built with a state shape, ``state_dtype`` or ``frame_stack`` writes
        ``state_dim`` as a list (the shape) and adds ``state_dtype`` (a name such as
        ``"uint8"``) and ``frame_stack``: Velora, which builds its buffer with
        ``torch.zeros((capacity, state_dim))``, then fails on the list instead of
        silently reading pixels as something else.

        Example:
            >>> ReplayBuffer(10, 2, 1, 0).metadata()["position"]
            0
            >>> meta = ReplayBuffer(10, (2, 3), 1, 0, state_dtype=torch.uint8).metadata()
            >>> meta["state_dim"], meta["state_dtype"]
            ([2, 3], 'uint8')
        """
        buf = cast("ReplayBuffer", self)
        if not buf.velora_layout:
            return {
                "capacity": buf.capacity,
                "state_dim": list(buf.state_shape),
                "action_dim": buf.action_dim,
                "hidden_dim": buf.hidden_dim,
                "position": buf.position,
                "size": buf.size,
                "device": str(buf.device),
                "state_dtype": str(buf.state_dtype).removeprefix("torch."),
                "frame_stack": buf.frame_stack,
            }
        return {
            "capacity": buf.capacity,
            "state_dim": buf.state_dim,
            "action_dim": buf.action_dim,
            "hidden_dim": buf.hidden_dim,
            "position": buf.position,
            "size": buf.size,
            "device": str(buf.device),
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
        buf = cast("ReplayBuffer", self)
        return BufferConfig(
            type="ReplayBuffer",
            capacity=buf.capacity,
            state_dim=buf.state_dim,
            action_dim=buf.action_dim,
            hidden_dim=buf.hidden_dim,
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
        buf = cast("ReplayBuffer", self)
        dense = torch.contiguous_format
        with buf.table.locked():
            return {k: buf._fields[k].clone(memory_format=dense) for k in _KEYS}

    def _keeps_table_state(self) -> bool:
        """Whether a save needs the table file (anything beyond Velora's plain buffer)."""
        buf = cast("ReplayBuffer", self)
        cfg = buf.table.config()
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
        _files.save(cast("ReplayBuffer", self), dirpath, prefix)

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
        return _files.load(cast("type[ReplayBuffer]", cls), state_path, metadata, device=device)
