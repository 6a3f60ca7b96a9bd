"""The Gymnasium glue of the collector.

Resolving the target (a :class:`~replaydb.Table` or a Velora-style
:class:`~replaydb.ReplayBuffer`) to its table, building the same-step autoreset
vector env, turning observations into flat numpy columns and torch inputs, checking
a policy's actions, storing and resetting a recurrent agent's hidden state per env,
and the progress bar.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from replaydb.collect._spec import _VELORA_FIELDS
from replaydb.errors import InvalidArgumentError
from replaydb.spec import flatten_gym
from replaydb.table import Table


def _target_table(target: Any) -> tuple[Any, bool]:
    """The target's table, and whether rows go in the Velora layout.

    A :class:`~replaydb.ReplayBuffer` is recognised by what it holds (a ``table``
    attribute that is a :class:`~replaydb.Table` with the Velora fields) rather than
    by its class, so this package never imports :mod:`replaydb.buffer` (whose
    ``ReplayBuffer.warm`` calls :func:`~replaydb.collect.warm`).
    """
    if isinstance(target, Table):
        return target, set(target.spec) == set(_VELORA_FIELDS)
    table = getattr(target, "table", None)
    if isinstance(table, Table) and set(table.spec) == set(_VELORA_FIELDS):
        return table, True
    raise InvalidArgumentError(
        f"target must be a replaydb ReplayBuffer or Table, got {type(target).__name__}"
    )


def _agent_env_id(agent: Any) -> str:
    try:
        env_id = agent.env.spec.id
    except AttributeError as exc:
        raise InvalidArgumentError(
            "the agent has no agent.env.spec.id to build environments from; pass env= "
            "(an env id or factory)"
        ) from exc
    if not isinstance(env_id, str):
        raise InvalidArgumentError(f"agent.env.spec.id must be a string, got {env_id!r}")
    return env_id


def _make_vec(gym: Any, env: Any, num_envs: int) -> Any:
    mode = gym.vector.AutoresetMode.SAME_STEP
    if isinstance(env, str):
        try:
            return gym.make_vec(
                env,
                num_envs=num_envs,
                vectorization_mode="sync",
                vector_kwargs={"autoreset_mode": mode},
            )
        except gym.error.Error as exc:
            raise InvalidArgumentError(
                f"env {env!r} is not a registered Gymnasium environment ({exc}); check the id "
                "(e.g. 'CartPole-v1') and that the package registering it is installed"
            ) from exc
    if callable(env):
        return gym.vector.SyncVectorEnv([env] * num_envs, autoreset_mode=mode)
    raise InvalidArgumentError(
        f"env must be a Gymnasium env id or a factory returning an env, got {type(env).__name__}"
    )


def _flat_obs(obs: Any) -> dict[str, np.ndarray[Any, Any]]:
    if isinstance(obs, np.ndarray):
        return {"observation": obs}
    # The names Spec.from_gym gives (observation.key for Dict, observation.i for Tuple).
    return {k: np.asarray(v) for k, v in flatten_gym(obs, "observation").items()}


def _to_torch(obs: Any, device: torch.device) -> Any:
    if isinstance(obs, Mapping):
        return {k: _to_torch(v, device) for k, v in obs.items()}
    if isinstance(obs, tuple):  # a Tuple space's batch
        return tuple(_to_torch(v, device) for v in obs)
    return torch.as_tensor(np.asarray(obs), device=device)


def _check_actions(actions: Any, space: Any, e: int) -> np.ndarray[Any, Any]:
    if isinstance(actions, torch.Tensor):
        arr = actions.detach().cpu().numpy()
    else:
        arr = np.asarray(actions)
    shape = tuple(space.shape or ())
    want = (e, *shape)
    if arr.shape != want:
        if arr.size == math.prod(want) and arr.ndim == len(want) + 1 and arr.shape[-1] == 1:
            arr = arr.reshape(want)  # (E, 1) for a Discrete space
        else:
            raise InvalidArgumentError(
                f"the policy returned actions of shape {arr.shape}, expected {want} "
                f"(num_envs={e}, action space {space}); return one action per env"
            )
    kind = type(space).__name__
    if kind == "Discrete":
        if arr.dtype.kind not in "iu":
            if arr.dtype.kind == "f" and np.all(arr == np.round(arr)):
                arr = arr.astype(np.int64)
            else:
                raise InvalidArgumentError(
                    f"the policy returned {arr.dtype} actions {arr.tolist()} for {space}; "
                    "return integer actions"
                )
        lo, hi = int(space.start), int(space.start) + int(space.n)
        if arr.size and (int(arr.min()) < lo or int(arr.max()) >= hi):
            raise InvalidArgumentError(
                f"the policy returned actions {arr.tolist()}, outside {space} "
                f"(expected integers in [{lo}, {hi}))"
            )
    return arr


def _hidden_rows(hidden: Any, e: int) -> np.ndarray[Any, Any] | None:
    """The hidden state as ``[E, H]`` float32 rows (for storage), or None."""
    if hidden is None:
        return None
    t = hidden[0] if isinstance(hidden, tuple | list) else hidden
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(np.asarray(t))
    t = t.detach().float().cpu()
    if t.dim() >= 1 and t.shape[0] == e:
        return t.reshape(e, -1).numpy()
    if t.dim() >= 2 and t.shape[1] == e:
        return t.transpose(0, 1).reshape(e, -1).numpy()
    raise InvalidArgumentError(
        f"the agent's hidden state has shape {tuple(t.shape)}; expected the env dimension "
        f"({e}) first or second so it can be stored and reset per env"
    )


def _reset_hidden(hidden: Any, done: torch.Tensor, e: int) -> Any:
    """Zero the hidden state of every env whose episode ended."""
    if isinstance(hidden, tuple | list):
        return type(hidden)(_reset_hidden(h, done, e) for h in hidden)
    if not isinstance(hidden, torch.Tensor):
        return _reset_hidden(torch.as_tensor(np.asarray(hidden)), done, e)
    mask = done.to(hidden.device)
    if hidden.dim() >= 1 and hidden.shape[0] == e:
        mask = mask.reshape(e, *([1] * (hidden.dim() - 1)))
    elif hidden.dim() >= 2 and hidden.shape[1] == e:
        mask = mask.reshape(1, e, *([1] * (hidden.dim() - 2)))
    else:
        raise InvalidArgumentError(
            f"the agent's hidden state has shape {tuple(hidden.shape)}; expected the env "
            f"dimension ({e}) first or second so it can be reset per env"
        )
    return hidden.masked_fill(mask, 0)


def _progress_bar(progress: Any, total: int) -> tuple[Any, bool]:
    """A tqdm bar (or None) and whether this call owns it."""
    if progress is not None and not isinstance(progress, bool) and hasattr(progress, "update"):
        return progress, False
    show = sys.stderr.isatty() if progress is None else bool(progress)
    if not show or total == 0:
        return None, False
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="row", desc="collect", dynamic_ncols=True), True
