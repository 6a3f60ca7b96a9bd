"""Policies named on the command line: :func:`load_policy`.

``"random"`` is passed through as is (the collector samples the vector env's action
space for it); ``"package.module:factory"`` is imported and called with the env's
single spaces.
"""

from __future__ import annotations

import importlib
from typing import Any

from replaydb.errors import InvalidArgumentError


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
