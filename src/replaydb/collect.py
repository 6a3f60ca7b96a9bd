"""Filling tables from Gymnasium environments: :func:`warm` and :class:`Collector`.

A :class:`Collector` steps a Gymnasium (>= 1.0) vector environment with a policy and
writes what it sees into a :class:`~replaydb.Table` or a Velora-style
:class:`~replaydb.ReplayBuffer`. :func:`warm` is one collector run that fills a
target up to a number of rows; ``replaydb populate`` (see :mod:`replaydb.cli`) runs
one collector for several runs and checkpoints after each.

What is stored
--------------
The vector env runs in Gymnasium's *same-step* autoreset mode, so every
``step()`` is a real transition: the observation returned for an env whose episode
just ended is already its reset observation, and the real final observation is
read from ``info["final_obs"]``. No autoreset step is ever stored, and the
``next_state`` of a terminated or truncated step is the real final observation.
A recurrent agent's hidden state is zeroed for each env whose episode ended.

Rows go to the target in one of three layouts, picked from its spec:

* **Velora** (a :class:`~replaydb.ReplayBuffer`, or a table with its spec): one row
  per transition, ``states, actions, rewards, next_states, dones, hiddens``, with
  ``dones = terminated or truncated``.
* **transitions** (a table whose spec has ``next_observation``): one row per
  transition, fields taken from ``observation``, ``action``, ``reward``,
  ``next_observation``, ``terminated``, ``truncated``, ``done``, ``step_type`` and
  ``hidden`` (a spec may use any subset).
* **steps** (any other table; the layout ``replaydb populate`` writes): TF-Agents
  style, one row per *step* of an episode, read as windows of two. Row ``t`` of an
  episode holds observation ``o_t``, the action ``a_t`` taken there, the reward
  ``r_t`` that action earned, and ``terminated``/``truncated`` as ``env.step(a_t)``
  returned them. After the last transition of an episode one more row, the *final
  step*, holds the real final observation with a zero action and zero reward, the
  same ``terminated``/``truncated`` flags, ``step_type`` 2 (LAST), and the end code
  (1 terminated, 2 truncated) in the table's episode links. So an episode of ``L``
  transitions takes ``L + 1`` rows and gives exactly ``L`` windows of two, the last
  one ``(o_{L-1}, a_{L-1}, r_{L-1}, terminated) -> o_L``. ``step_type`` is 0 (FIRST)
  on an episode's first row and 1 (MID) between. Streams are env indices.

Episodes interleave in the ring (one stream per env) and are linked by the table,
so windows never cross an episode or an env.

Starter buffers
---------------
:func:`populate` (``replaydb populate``) writes ``out/buffer_name`` as a checkpoint
root of :mod:`replaydb.checkpoint`: ``ckpt-<ns>/replay_buffer.safetensors`` (a table
named ``"replay_buffer"`` in the steps layout, uniform sampler, ``sequence_length``
2 by default), ``manifest.json`` whose ``extra`` records the layout, env id, policy,
seed, runs completed and every episode return, and the ``COMPLETE`` marker. One
checkpoint is written after every run and only the newest is kept.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from replaydb.errors import InvalidArgumentError, SpecMismatchError, require
from replaydb.spec import Field, Spec, flatten_gym

__all__ = [
    "LAYOUT",
    "STEP_FIRST",
    "STEP_LAST",
    "STEP_MID",
    "TABLE_NAME",
    "CollectStats",
    "Collector",
    "check_output",
    "PopulateResult",
    "load_policy",
    "populate",
    "step_spec",
    "warm",
]

STEP_FIRST, STEP_MID, STEP_LAST = 0, 1, 2
_VELORA_FIELDS = ("states", "actions", "rewards", "next_states", "dones", "hiddens")
_CHUNK_ROWS = 512


@dataclass
class CollectStats:
    """Counters of a collector (all runs so far).

    Attributes:
        rows: Rows written to the target.
        env_steps: Vector-env steps taken (each is ``num_envs`` transitions).
        episodes: Episodes finished.
        episode_returns: Undiscounted return of every finished episode, in order.
        seconds: Time spent collecting.
    """

    rows: int = 0
    env_steps: int = 0
    episodes: int = 0
    episode_returns: list[float] = field(default_factory=list)
    seconds: float = 0.0


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


# ------------------------------------------------------------------ policies
def load_policy(path: str, observation_space: Any, action_space: Any) -> Any:
    """Build a policy from ``"random"`` or ``"package.module:factory"``.

    The factory is called as ``factory(observation_space, action_space)`` with the
    single-env spaces and must return a policy: a callable ``policy(observations) ->
    actions`` or an agent with ``predict(states, hidden, train_mode=True)``.

    Args:
        path: ``"random"`` or ``"package.module:factory"``.
        observation_space: The env's (single) observation space.
        action_space: The env's (single) action space.

    Returns:
        The policy (``"random"`` is returned as is).

    Raises:
        InvalidArgumentError: If the path is malformed, does not import, names no
            callable, or the factory returns something that is not a policy.

    Example:
        >>> load_policy("random", None, None)
        'random'
    """
    if path == "random":
        return "random"
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidArgumentError(
            f"policy {path!r} must be 'random' or 'package.module:callable', "
            "e.g. 'mypkg.policies:make_policy'"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of user code
        raise InvalidArgumentError(
            f"policy {path!r}: module {module_name!r} does not import "
            f"({type(exc).__name__}: {exc}); check the name and that it is on PYTHONPATH"
        ) from exc
    factory: Any = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise InvalidArgumentError(
                f"policy {path!r}: module {module_name!r} has no attribute {attr!r}"
            )
        factory = getattr(factory, part)
    if not callable(factory):
        raise InvalidArgumentError(
            f"policy {path!r}: {attr!r} is a {type(factory).__name__}, expected a callable "
            "factory(observation_space, action_space) returning a policy"
        )
    try:
        policy = factory(observation_space, action_space)
    except Exception as exc:  # user code: report it as bad input, with its message
        raise InvalidArgumentError(
            f"policy {path!r}: factory({observation_space}, {action_space}) raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not (callable(policy) or hasattr(policy, "predict")):
        raise InvalidArgumentError(
            f"policy {path!r}: the factory returned a {type(policy).__name__}, expected a "
            "callable policy(observations) -> actions or an agent with predict()"
        )
    return policy


# ------------------------------------------------------------------ collector
class Collector:
    """Steps a vector env with a policy and writes exactly the rows asked for.

    Args:
        target: A :class:`~replaydb.Table` or a :class:`~replaydb.ReplayBuffer`.
        policy: ``"random"``, a callable ``policy(observations) -> actions`` (given a
            ``[num_envs, *obs_shape]`` tensor, or a dict of them for Dict spaces), or a
            Velora-style agent with ``env.spec.id``, ``device`` and
            ``predict(states, hidden, train_mode=True) -> (actions, hidden)``.
        num_envs: Environments stepped together (streams ``0..num_envs-1``).
        env: A Gymnasium env id or a factory returning an env; required unless the
            policy is an agent (whose ``agent.env.spec.id`` is used).
        seed: Seeds the envs (``reset(seed=seed)``, env ``i`` gets ``seed + i``) and the
            random policy, so the collected rows are identical run to run. A policy's
            own randomness is its own to seed.

    Raises:
        InvalidArgumentError: For a bad policy, env, ``num_envs`` or a target whose
            spec does not fit the env (the envs are closed again).
        MissingDependencyError: If Gymnasium is not installed.

    Example:
        >>> table = Table(step_spec("CartPole-v1"), 100, sequence_length=2)
        >>> with Collector(table, "random", env="CartPole-v1", seed=0) as c:
        ...     stats = c.collect(50, progress=False)
        >>> stats.rows, table.num_steps
        (50, 50)
    """

    def __init__(
        self,
        target: Any,
        policy: Any,
        *,
        num_envs: int = 8,
        env: str | Callable[[], Any] | None = None,
        seed: int | None = None,
    ) -> None:
        gym: Any = require("gymnasium", "gym")
        self._gym = gym
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise InvalidArgumentError(f"num_envs must be an int >= 1, got {num_envs!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise InvalidArgumentError(f"seed must be an int or None, got {seed!r}")
        self.table, velora = _target_table(target)
        self.num_envs = num_envs
        self.seed = seed
        self.stats = CollectStats()
        self._agent = hasattr(policy, "predict") and not isinstance(policy, str)
        if isinstance(policy, str) and policy != "random":
            raise InvalidArgumentError(
                f"policy {policy!r} is not understood; pass 'random', a callable or an agent "
                "(the CLI's 'package.module:callable' form goes through load_policy)"
            )
        if not (isinstance(policy, str) or self._agent or callable(policy)):
            raise InvalidArgumentError(
                f"policy must be 'random', a callable policy(observations) -> actions, or an "
                f"agent with predict(states, hidden, train_mode=True); got {type(policy).__name__}"
            )
        self.policy = policy
        if env is None:
            if not self._agent:
                raise InvalidArgumentError(
                    "env is required for a 'random' or callable policy: pass env='CartPole-v1' "
                    "or an env factory"
                )
            env = _agent_env_id(policy)
        self.env_id = env if isinstance(env, str) else getattr(env, "__name__", repr(env))
        # Velora agents default to device=None, which means CPU.
        self._device = torch.device(
            (getattr(policy, "device", None) or "cpu") if self._agent else "cpu"
        )
        self.envs = _make_vec(gym, env, num_envs)
        try:
            self._obs_space = self.envs.single_observation_space
            self._act_space = self.envs.single_action_space
            self._layout = _pick_layout(self.table, velora, self._obs_space, self._act_space)
            if seed is not None:
                self.envs.action_space.seed(seed)
            obs, _ = self.envs.reset(seed=seed)
        except BaseException:
            self.envs.close()
            raise
        self._obs = obs
        self._hidden: Any = None
        self._first = np.ones(num_envs, dtype=bool)
        self._running = np.zeros(num_envs, dtype=np.float64)
        self._pending: list[
            tuple[dict[str, np.ndarray[Any, Any]], np.ndarray[Any, Any], np.ndarray[Any, Any]]
        ] = []
        self._pending_rows = 0
        self.closed = False

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the environments (idempotent). Rows not yet written are dropped."""
        if not self.closed:
            self.closed = True
            self._pending = []
            self._pending_rows = 0
            self.envs.close()

    def collect(self, n_rows: int, *, progress: Any = None) -> CollectStats:
        """Step the envs until ``n_rows`` more rows are written to the target.

        Rows a step produced beyond ``n_rows`` are kept for the next call, so runs
        of one collector stitch together without a gap in any episode.

        Args:
            n_rows: Rows to write (>= 0).
            progress: ``True``/``False`` to force a progress bar on or off; ``None``
                shows one when stderr is a terminal. A ``tqdm`` bar is also accepted.

        Returns:
            The collector's running :class:`CollectStats`.

        Raises:
            InvalidArgumentError: If the policy returns actions of the wrong shape or
                range (the step is not taken and nothing of it is written).
            ClosedError: If the collector was closed.
        """
        if self.closed:
            from replaydb.errors import ClosedError

            raise ClosedError("this Collector is closed; make a new one")
        if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 0:
            raise InvalidArgumentError(f"n_rows must be an int >= 0, got {n_rows!r}")
        bar, own = _progress_bar(progress, n_rows)
        start = time.perf_counter()
        try:
            left = n_rows
            while left > 0:
                # Batch a few env steps per table write (fewer, larger copies).
                while self._pending_rows < min(left, _CHUNK_ROWS):
                    self._step()
                k = min(left, self._pending_rows)
                self._flush(k)
                left -= k
                if bar is not None:
                    bar.update(k)
        finally:
            self.stats.seconds += time.perf_counter() - start
            if bar is not None and own:
                bar.close()
        return self.stats

    # ----------------------------------------------------------------- steps
    def _act(self) -> np.ndarray[Any, Any]:
        e = self.num_envs
        if isinstance(self.policy, str):
            actions: Any = self.envs.action_space.sample()
        else:
            obs_t = _to_torch(self._obs, self._device)
            with torch.no_grad():
                if self._agent:
                    out = self.policy.predict(obs_t, self._hidden, train_mode=True)
                    if not (isinstance(out, tuple) and len(out) == 2):
                        raise InvalidArgumentError(
                            f"agent.predict must return (actions, hidden), got {type(out).__name__}"
                        )
                    actions, self._hidden = out
                else:
                    actions = self.policy(obs_t)
        return _check_actions(actions, self._act_space, e)

    def _step(self) -> None:
        e = self.num_envs
        actions = self._act()
        hidden = _hidden_rows(self._hidden, e)
        next_obs, rewards, terminated, truncated, info = self.envs.step(actions)
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        rewards = np.asarray(rewards, dtype=np.float32)
        done = terminated | truncated
        obs_flat = _flat_obs(self._obs)
        real_next = _flat_obs(next_obs)
        done_idx = np.flatnonzero(done)
        if done_idx.size:
            real_next = {k: v.copy() for k, v in real_next.items()}
            finals = info["final_obs"]
            for i in done_idx:  # one per finished episode, not per row
                for k, v in _flat_obs(finals[i]).items():
                    real_next[k][i] = v
        step_type = np.where(self._first, STEP_FIRST, STEP_MID).astype(np.int32)
        cols = {
            "obs": obs_flat,
            "next_obs": real_next,
            "action": actions,
            "reward": rewards,
            "terminated": terminated,
            "truncated": truncated,
            "step_type": step_type,
            "hidden": hidden,
        }
        rows, streams, ends = self._layout(cols, done_idx, e)
        self._pending.append((rows, streams, ends))
        self._pending_rows += int(streams.shape[0])
        # Episode bookkeeping and hidden resets.
        self._running += rewards
        if done_idx.size:
            self.stats.episode_returns.extend(self._running[done_idx].tolist())
            self.stats.episodes += int(done_idx.size)
            self._running[done_idx] = 0.0
            if self._hidden is not None:
                self._hidden = _reset_hidden(self._hidden, torch.as_tensor(done), e)
        self._first = done
        self._obs = next_obs
        self.stats.env_steps += 1

    def _flush(self, k: int) -> None:
        if len(self._pending) == 1:
            rows, streams, ends = self._pending[0]
        else:
            parts = self._pending
            rows = {name: np.concatenate([p[0][name] for p in parts]) for name in parts[0][0]}
            streams = np.concatenate([p[1] for p in parts])
            ends = np.concatenate([p[2] for p in parts])
        head = {name: v[:k] for name, v in rows.items()}
        self.table.extend(head, streams=streams[:k], ends=ends[:k])
        n = int(streams.shape[0])
        if k < n:
            self._pending = [({name: v[k:] for name, v in rows.items()}, streams[k:], ends[k:])]
        else:
            self._pending = []
        self._pending_rows = n - k
        self.stats.rows += k


# ------------------------------------------------------------------- warm
def warm(
    target: Any,
    agent_or_policy: Any,
    n_samples: int,
    *,
    num_envs: int = 8,
    env: str | Callable[[], Any] | None = None,
    seed: int | None = None,
    progress: Any = None,
) -> CollectStats:
    """Fill ``target`` until it holds exactly ``n_samples`` rows.

    Args:
        target: A :class:`~replaydb.ReplayBuffer` or a :class:`~replaydb.Table`.
        agent_or_policy: ``"random"``, a callable or a Velora-style agent (see
            :class:`Collector`).
        n_samples: Rows the target holds afterwards (rows already stored count).
        num_envs: Environments stepped together (1 works).
        env: Env id or factory (default: the agent's ``agent.env.spec.id``).
        seed: Makes the filled rows identical run to run.
        progress: Progress bar on/off (default: on when stderr is a terminal).

    Returns:
        The :class:`CollectStats` of the fill.

    Raises:
        InvalidArgumentError: If ``n_samples`` exceeds the capacity (it could never
            be reached) or another argument is bad; the envs are always closed.

    Example:
        >>> buffer = ReplayBuffer(200, state_dim=4, action_dim=1, hidden_dim=0)
        >>> _ = warm(buffer, "random", 100, env="CartPole-v1", seed=0, progress=False)
        >>> len(buffer)
        100
    """
    table, _ = _target_table(target)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 0:
        raise InvalidArgumentError(f"n_samples must be an int >= 0, got {n_samples!r}")
    if n_samples > table.capacity:
        raise InvalidArgumentError(
            f"n_samples ({n_samples}) exceeds the buffer's capacity ({table.capacity}), so it "
            "could never hold that many rows; pass n_samples <= capacity or build a larger buffer"
        )
    with Collector(target, agent_or_policy, num_envs=num_envs, env=env, seed=seed) as collector:
        return collector.collect(max(0, n_samples - table.num_steps), progress=progress)


# ------------------------------------------------------------------ helpers
def _target_table(target: Any) -> tuple[Any, bool]:
    from replaydb.buffer import ReplayBuffer
    from replaydb.table import Table

    if isinstance(target, ReplayBuffer):
        return target.table, True
    if isinstance(target, Table):
        return target, set(target.spec) == set(_VELORA_FIELDS)
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


Rows = tuple[dict[str, np.ndarray[Any, Any]], np.ndarray[Any, Any], np.ndarray[Any, Any]]
Layout = Callable[[dict[str, Any], np.ndarray[Any, Any], int], Rows]


def _end_codes(
    terminated: np.ndarray[Any, Any], truncated: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    return np.where(terminated, 1, np.where(truncated, 2, 0)).astype(np.int64)


def _pick_layout(table: Any, velora: bool, obs_space: Any, act_space: Any) -> Layout:
    spec: Spec = table.spec
    env_spec = _spec_from_spaces(obs_space, act_space)
    obs_fields = [k for k in env_spec if k.startswith("observation")]
    if velora:
        return _velora_layout(spec, obs_space, act_space, obs_fields)
    known = {**{k: env_spec[k] for k in env_spec}}
    known.update({"next_" + k: env_spec[k] for k in obs_fields})
    known["done"] = Field((), torch.bool)
    unknown = [k for k in spec if k not in known and k != "hidden"]
    if unknown:
        raise SpecMismatchError(
            f"the table's field(s) {unknown} cannot be filled from an environment; "
            f"warm fills {sorted([*known, 'hidden'])} (build the spec with "
            "replaydb.collect.step_spec(env) for the layout populate writes)"
        )
    for name in spec:
        if name in known and spec[name].numel != known[name].numel:
            raise SpecMismatchError(
                f"field {name!r}: the table stores {spec[name].shape} per step but the env "
                f"gives {known[name].shape}; build the table with step_spec(env)"
            )
    transitions = any(k.startswith("next_observation") for k in spec)

    def fill(values: dict[str, Any], n: int) -> dict[str, np.ndarray[Any, Any]]:
        out: dict[str, np.ndarray[Any, Any]] = {}
        for name, f in spec.items():
            if name == "hidden":
                v = values.get("hidden")
                if v is None:
                    v = np.zeros((n, f.numel), dtype=np.float32)
                elif v.shape[1] != f.numel:
                    raise SpecMismatchError(
                        f"field 'hidden': the table stores {f.numel} values per step but the "
                        f"agent's hidden state has {v.shape[1]}"
                    )
            else:
                v = values[name]
            out[name] = np.asarray(v).reshape(n, *f.shape)
        return out

    def rows_of(cols: dict[str, Any], done_idx: np.ndarray[Any, Any], e: int) -> Rows:
        term, trunc = cols["terminated"], cols["truncated"]
        base = {
            **cols["obs"],
            **{"next_" + k: v for k, v in cols["next_obs"].items()},
            "action": cols["action"],
            "reward": cols["reward"],
            "terminated": term,
            "truncated": trunc,
            "done": term | trunc,
            "step_type": cols["step_type"],
            "hidden": cols["hidden"],
        }
        streams = np.arange(e, dtype=np.int64)
        if transitions:
            return fill(base, e), streams, _end_codes(term, trunc)
        rows = fill(base, e)
        m = int(done_idx.size)
        if m == 0:
            return rows, streams, np.zeros(e, dtype=np.int64)
        act = np.asarray(cols["action"])
        final = {
            **{k: v[done_idx] for k, v in cols["next_obs"].items()},
            "action": np.zeros((m, *act.shape[1:]), dtype=act.dtype),
            "reward": np.zeros(m, dtype=np.float32),
            "terminated": term[done_idx],
            "truncated": trunc[done_idx],
            "done": np.ones(m, dtype=bool),
            "step_type": np.full(m, STEP_LAST, dtype=np.int32),
            "hidden": None,
        }
        final_rows = fill(final, m)
        merged = {k: np.concatenate([rows[k], final_rows[k]]) for k in rows}
        ends = np.concatenate(
            [np.zeros(e, dtype=np.int64), _end_codes(term[done_idx], trunc[done_idx])]
        )
        return merged, np.concatenate([streams, done_idx.astype(np.int64)]), ends

    return rows_of


def _velora_layout(spec: Spec, obs_space: Any, act_space: Any, obs_fields: list[str]) -> Layout:
    if obs_fields != ["observation"]:
        raise SpecMismatchError(
            f"a Velora buffer stores flat float observations; {obs_space} has several parts "
            "— use a Table with step_spec(env) instead"
        )
    state_dim = spec["states"].numel
    action_dim = spec["actions"].numel
    hidden_dim = spec["hiddens"].numel
    obs_dim = math.prod(obs_space.shape or ())
    act_dim = max(1, math.prod(act_space.shape or ()))
    if obs_dim != state_dim:
        raise SpecMismatchError(
            f"the buffer has state_dim={state_dim} but the env's observations {obs_space} have "
            f"{obs_dim} values; build the buffer with state_dim={obs_dim}"
        )
    if act_dim != action_dim:
        raise SpecMismatchError(
            f"the buffer has action_dim={action_dim} but the env's actions {act_space} have "
            f"{act_dim} values; build the buffer with action_dim={act_dim}"
        )

    def rows_of(cols: dict[str, Any], done_idx: np.ndarray[Any, Any], e: int) -> Rows:
        term, trunc = cols["terminated"], cols["truncated"]
        hidden = cols["hidden"]
        if hidden is None:
            hidden = np.zeros((e, hidden_dim), dtype=np.float32)
        elif hidden.shape[1] != hidden_dim:
            raise SpecMismatchError(
                f"the buffer has hidden_dim={hidden_dim} but the agent's hidden state has "
                f"{hidden.shape[1]} values per env; build the buffer with hidden_dim="
                f"{hidden.shape[1]}"
            )
        rows = {
            "states": cols["obs"]["observation"].reshape(e, state_dim).astype(np.float32),
            "actions": np.asarray(cols["action"]).reshape(e, action_dim).astype(np.float32),
            "rewards": cols["reward"].reshape(e, 1).astype(np.float32),
            "next_states": cols["next_obs"]["observation"].reshape(e, state_dim).astype(np.float32),
            "dones": (term | trunc).reshape(e, 1).astype(np.float32),
            "hiddens": hidden.astype(np.float32, copy=False),
        }
        return rows, np.arange(e, dtype=np.int64), _end_codes(term, trunc)

    return rows_of


def _progress_bar(progress: Any, total: int) -> tuple[Any, bool]:
    """A tqdm bar (or None) and whether this call owns it."""
    if progress is not None and not isinstance(progress, bool) and hasattr(progress, "update"):
        return progress, False
    show = sys.stderr.isatty() if progress is None else bool(progress)
    if not show or total == 0:
        return None, False
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="row", desc="collect", dynamic_ncols=True), True


# ---------------------------------------------------------------- populate
#: Table name of the buffer in a populate checkpoint (what ReplayBufferManager loads).
TABLE_NAME = "replay_buffer"
#: ``manifest["extra"]["layout"]`` of a populate checkpoint.
LAYOUT = "replaydb.collect.steps/v1"


@dataclass(frozen=True)
class PopulateResult:
    """What :func:`populate` wrote.

    Attributes:
        path: The buffer's checkpoint root (``out/buffer_name``).
        checkpoint: The newest checkpoint directory under it.
        runs: Runs completed (one checkpoint each).
        frames: Rows stored.
        episodes: Episodes finished while collecting.
        episode_returns: Return of each finished episode.
        nbytes: Bytes of the newest checkpoint on disk.
        seconds: Wall time of the whole job.
    """

    path: Path
    checkpoint: Path
    runs: int
    frames: int
    episodes: int
    episode_returns: list[float]
    nbytes: int
    seconds: float


def _count(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgumentError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_output(out: str | os.PathLike[str], buffer_name: str, *, force: bool) -> Path:
    """Check where :func:`populate` would write, before anything is written.

    Returns:
        The buffer root ``out/buffer_name``.

    Raises:
        InvalidArgumentError: If ``out`` or the root is a file, the name is not a plain
            name, or a buffer is already there and ``force`` is false.
    """
    if (
        not isinstance(buffer_name, str)
        or not buffer_name
        or buffer_name in (".", "..")
        or ("/" in buffer_name or os.sep in buffer_name)
    ):
        raise InvalidArgumentError(
            f"--buffer-name must be a plain directory name, got {buffer_name!r}"
        )
    out_p = Path(out)
    if out_p.exists() and not out_p.is_dir():
        raise InvalidArgumentError(
            f"--out {str(out_p)!r} is a file, not a directory; pass a directory path"
        )
    root = out_p / buffer_name
    if root.exists() and not root.is_dir():
        raise InvalidArgumentError(
            f"{str(root)!r} is a file, not a buffer directory; remove it or pick another "
            "--buffer-name"
        )
    if root.is_dir() and any(root.iterdir()) and not force:
        from replaydb.checkpoint import latest_checkpoint

        what = "a buffer" if latest_checkpoint(root) is not None else "files"
        raise InvalidArgumentError(
            f"{str(root)!r} already holds {what}; refusing to overwrite it. Pass --force to "
            "replace it (the old checkpoint stays until the first new one is complete), or "
            "pick another --buffer-name / --out"
        )
    return root


def populate(
    env: str,
    policy: Any = "random",
    *,
    out: str | os.PathLike[str],
    buffer_name: str = "replay_buffer",
    capacity: int = 50_000,
    steps_per_run: int = 100,
    num_runs: int = 5,
    sequence_length: int = 2,
    num_envs: int = 8,
    seed: int | None = None,
    force: bool = False,
    progress: Any = None,
    on_run: Callable[[int, CollectStats, Path], None] | None = None,
) -> PopulateResult:
    """Pre-fill a starter buffer and checkpoint it after every run.

    Writes ``out/buffer_name`` as a checkpoint root (see
    :func:`replaydb.checkpoint.write_checkpoint`) holding one table named
    ``"replay_buffer"`` in the *steps* layout of this module, with the env id, policy,
    seed, run count and episode returns in the manifest's ``extra``. Only the newest
    checkpoint is kept, so a killed job leaves every completed run loadable.

    Args:
        env: A registered Gymnasium env id.
        policy: ``"random"``, ``"package.module:factory"`` (see :func:`load_policy`), a
            callable, or an agent.
        out: Directory to write into (created if missing).
        buffer_name: Name of the buffer's directory under ``out``.
        capacity: Rows the table holds.
        steps_per_run: Rows written per run (one checkpoint per run).
        num_runs: Runs.
        sequence_length: Steps per sampled item (2: transitions).
        num_envs: Environments stepped together.
        seed: Makes the buffer identical run to run.
        force: Replace an existing buffer.
        progress: Progress bar on/off (default: on when stderr is a terminal).
        on_run: Called after each checkpoint with ``(run, stats, checkpoint_dir)``.

    Returns:
        A :class:`PopulateResult`.

    Raises:
        InvalidArgumentError: For bad numbers, an unknown env, a policy that does not
            load or acts wrongly, an output path that is a file, or an existing buffer
            without ``force``. Nothing is written in these cases.
        OSError: If the disk is full or read-only (completed checkpoints are kept).

    Example:
        >>> r = populate("CartPole-v1", out="/tmp/bufs", steps_per_run=50, num_runs=2, force=True)
        >>> r.frames
        100
    """
    from replaydb.checkpoint import write_checkpoint
    from replaydb.samplers import Uniform
    from replaydb.table import Table

    gym: Any = require("gymnasium", "gym")
    capacity = _count("capacity", capacity)
    steps_per_run = _count("steps_per_run", steps_per_run)
    num_runs = _count("num_runs", num_runs)
    sequence_length = _count("sequence_length", sequence_length)
    num_envs = _count("num_envs", num_envs)
    if steps_per_run * num_runs > capacity:
        raise InvalidArgumentError(
            f"steps_per_run x num_runs = {steps_per_run * num_runs} rows exceeds capacity "
            f"({capacity}); the buffer would overwrite its own oldest rows. Raise capacity or "
            "lower steps_per_run / num_runs"
        )
    if sequence_length > capacity:
        raise InvalidArgumentError(
            f"sequence_length ({sequence_length}) must not exceed capacity ({capacity})"
        )
    if not isinstance(env, str):
        raise InvalidArgumentError(f"env must be a Gymnasium env id string, got {env!r}")
    root = check_output(out, buffer_name, force=force)
    probe = _make_single(gym, env)
    try:
        obs_space, act_space = probe.observation_space, probe.action_space
    finally:
        probe.close()
    policy_name = (
        policy
        if isinstance(policy, str)
        else getattr(policy, "__qualname__", type(policy).__qualname__)
    )
    if isinstance(policy, str):
        policy = load_policy(policy, obs_space, act_space)
    table = Table(
        _spec_from_spaces(obs_space, act_space),
        capacity,
        sampler=Uniform(seed=seed),
        sequence_length=sequence_length,
        name=TABLE_NAME,
    )
    # Fail fast on a read-only or unwritable --out, before any env is stepped.
    root.mkdir(parents=True, exist_ok=True)
    probe_file = root / f".replaydb-write-test-{os.getpid()}"
    probe_file.write_bytes(b"")
    probe_file.unlink()
    start = time.perf_counter()
    bar, own = _progress_bar(progress, steps_per_run * num_runs)
    ckpt = root
    try:
        with Collector(table, policy, num_envs=num_envs, env=env, seed=seed) as collector:
            stats = collector.stats
            for run in range(1, num_runs + 1):
                collector.collect(steps_per_run, progress=bar if bar is not None else False)
                ckpt = write_checkpoint(
                    root,
                    {TABLE_NAME: table},
                    keep=1,
                    extra={
                        "layout": LAYOUT,
                        "env": env,
                        "policy": policy_name,
                        "seed": seed,
                        "num_envs": num_envs,
                        "steps_per_run": steps_per_run,
                        "runs": run,
                        "num_runs": num_runs,
                        "frames": stats.rows,
                        "episodes": stats.episodes,
                        "episode_returns": stats.episode_returns,
                    },
                )
                if on_run is not None:
                    on_run(run, stats, ckpt)
    finally:
        if bar is not None and own:
            bar.close()
    nbytes = sum(p.stat().st_size for p in ckpt.iterdir() if p.is_file())
    return PopulateResult(
        path=root,
        checkpoint=ckpt,
        runs=num_runs,
        frames=stats.rows,
        episodes=stats.episodes,
        episode_returns=list(stats.episode_returns),
        nbytes=nbytes,
        seconds=time.perf_counter() - start,
    )
