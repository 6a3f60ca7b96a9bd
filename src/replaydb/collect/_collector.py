"""The :class:`Collector`: steps a vector env with a policy and writes rows.

Also :class:`CollectStats`, its running counters. The env glue lives in
:mod:`replaydb.collect._env`, the row layouts in :mod:`replaydb.collect._layouts`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from replaydb._constants import STEP_FIRST, STEP_MID
from replaydb._validate import check_int, is_int
from replaydb.collect._env import (
    _agent_env_id,
    _check_actions,
    _flat_obs,
    _hidden_rows,
    _make_vec,
    _progress_bar,
    _reset_hidden,
    _target_table,
    _to_torch,
)
from replaydb.collect._layouts import _pick_layout
from replaydb.errors import InvalidArgumentError, require
from replaydb.writer import Writer

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
        >>> from replaydb.collect import step_spec
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
        num_envs = check_int("num_envs", num_envs, 1)
        if seed is not None and not is_int(seed):
            raise InvalidArgumentError(f"seed must be an int or None, got {seed!r}")
        self.table, velora = _target_table(target)
        self.num_envs = num_envs
        self.seed = None if seed is None else int(seed)
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
        # Rows a step made wait here until a write; a step makes at most 2 rows per
        # env, so the stage never fills (nor flushes) before collect writes its rows.
        self._writer = Writer(self.table, self.table.spec, max_steps=_CHUNK_ROWS + 2 * num_envs)
        self.closed = False

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the environments (idempotent). Rows not yet written are dropped."""
        if not self.closed:
            self.closed = True
            self._writer.close(flush=False)
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
        n_rows = check_int("n_rows", n_rows, 0)
        bar, own = _progress_bar(progress, n_rows)
        start = time.perf_counter()
        try:
            left = n_rows
            while left > 0:
                # Batch a few env steps per table write (fewer, larger copies).
                while self._writer.staged < min(left, _CHUNK_ROWS):
                    self._step()
                k = min(left, self._writer.staged)
                self._writer.flush(limit=k)
                self.stats.rows += k
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
        self._writer.extend(rows, streams=streams, ends=ends)
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
