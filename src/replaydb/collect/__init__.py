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

The package's modules: ``_spec`` (:func:`step_spec`, the step-type codes, the table
name and layout tag), ``_policies`` (:func:`load_policy`), ``_env`` (the Gymnasium
glue: targets, vector envs, observations, actions, hidden states, the progress
bar), ``_layouts`` (how a step becomes rows in each layout), ``_collector``
(:class:`Collector`, :class:`CollectStats`), ``_warm`` (:func:`warm`) and
``_populate`` (:func:`populate`, :func:`check_output`, :class:`PopulateResult`).
"""

from __future__ import annotations

from replaydb._constants import STEP_FIRST, STEP_LAST, STEP_MID
from replaydb.collect._collector import Collector, CollectStats
from replaydb.collect._policies import load_policy
from replaydb.collect._populate import PopulateResult, check_output, populate
from replaydb.collect._spec import LAYOUT, TABLE_NAME, step_spec
from replaydb.collect._warm import warm

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
