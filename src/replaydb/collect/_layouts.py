"""How one vector-env step becomes rows: the three layouts of :mod:`replaydb.collect`.

:func:`_pick_layout` checks the target's spec against the env and returns the
function that turns a step's columns into ``(rows, streams, ends)`` for
:meth:`Table.extend`: the Velora layout, the *transitions* layout or the *steps*
layout (with its final step per finished episode).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from replaydb._constants import END_NONE, END_TERMINATED, END_TRUNCATED, STEP_LAST
from replaydb.collect._spec import _spec_from_spaces
from replaydb.errors import SpecMismatchError
from replaydb.spec import Field, Spec

Rows = tuple[dict[str, np.ndarray[Any, Any]], np.ndarray[Any, Any], np.ndarray[Any, Any]]
Layout = Callable[[dict[str, Any], np.ndarray[Any, Any], int], Rows]


def _end_codes(
    terminated: np.ndarray[Any, Any], truncated: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    return np.where(
        terminated, END_TERMINATED, np.where(truncated, END_TRUNCATED, END_NONE)
    ).astype(np.int64)


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
