"""The *steps* layout's spec and constants (see :mod:`replaydb.collect`).

:func:`step_spec` (the spec ``populate`` stores for an env), the Velora field names
(the ``step_type`` codes live in :mod:`replaydb._constants`), the table name and
layout tag of a populate checkpoint, and the single-env probe both the collector and
``populate`` use to read an env's spaces.
"""

from __future__ import annotations

from typing import Any

import torch

from replaydb.errors import InvalidArgumentError, require
from replaydb.spec import Field, Spec

_VELORA_FIELDS = ("states", "actions", "rewards", "next_states", "dones", "hiddens")
#: Table name of the buffer in a populate checkpoint (what ReplayBufferManager loads).
TABLE_NAME = "replay_buffer"
#: ``manifest["extra"]["layout"]`` of a populate checkpoint.
LAYOUT = "replaydb.collect.steps/v1"


def step_spec(env: Any) -> Spec:
    """The spec of the *steps* layout for an environment (what ``populate`` stores).

    Args:
        env: A Gymnasium env id, an env, or a vector env.

    Returns:
        ``observation`` (``observation.key`` / ``observation.i`` for the parts of
        Dict / Tuple spaces, the naming rule of :meth:`Spec.from_gym`; likewise
        ``action``), ``action``, ``reward`` (float32),
        ``terminated`` and ``truncated`` (bool) and ``step_type`` (int32).

    Example:
        >>> list(step_spec("CartPole-v1"))
        ['observation', 'action', 'reward', 'terminated', 'truncated', 'step_type']
    """
    gym: Any = require("gymnasium", "gym")
    if isinstance(env, str):
        probe = _make_single(gym, env)
        try:
            obs_space, act_space = probe.observation_space, probe.action_space
        finally:
            probe.close()
    else:
        obs_space = getattr(env, "single_observation_space", None)
        act_space = getattr(env, "single_action_space", None)
        if obs_space is None or act_space is None:
            obs_space, act_space = env.observation_space, env.action_space
    return _spec_from_spaces(obs_space, act_space)


def _spec_from_spaces(obs_space: Any, act_space: Any) -> Spec:
    fields: dict[str, Field] = dict(Spec.from_gym(obs_space, "observation").items())
    fields.update(Spec.from_gym(act_space, "action").items())
    fields["reward"] = Field((), torch.float32)
    fields["terminated"] = Field((), torch.bool)
    fields["truncated"] = Field((), torch.bool)
    fields["step_type"] = Field((), torch.int32)
    return Spec(fields)


def _make_single(gym: Any, env_id: str) -> Any:
    try:
        return gym.make(env_id)
    except gym.error.Error as exc:
        raise InvalidArgumentError(
            f"env {env_id!r} is not a registered Gymnasium environment ({exc}); "
            "check the id (e.g. 'CartPole-v1') and that the package registering it is installed"
        ) from exc
