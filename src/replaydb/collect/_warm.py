""":func:`warm`: one collector run that fills a target up to a number of rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from replaydb._validate import check_int
from replaydb.collect._collector import Collector, CollectStats
from replaydb.collect._env import _target_table
from replaydb.errors import InvalidArgumentError


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
    n_samples = check_int("n_samples", n_samples, 0)
    if n_samples > table.capacity:
        raise InvalidArgumentError(
            f"n_samples ({n_samples}) exceeds the buffer's capacity ({table.capacity}), so it "
            "could never hold that many rows; pass n_samples <= capacity or build a larger buffer"
        )
    with Collector(target, agent_or_policy, num_envs=num_envs, env=env, seed=seed) as collector:
        return collector.collect(max(0, n_samples - table.num_steps), progress=progress)
