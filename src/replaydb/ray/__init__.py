"""The replay service on Ray: tables split over shard actors, one set of verbs.

This is the only package that imports Ray (lazily: a missing Ray raises
:class:`~replaydb.errors.MissingDependencyError` naming ``pip install 'replaydb[ray]'``).
Ray does membership, placement, transport and restarts; this module only decides
what goes where.

Modules: :mod:`~replaydb.ray.server` (:class:`RayServer`), :mod:`~replaydb.ray.client`
(:class:`RayClient`), :mod:`~replaydb.ray.serve` (``replaydb serve``), and private
``_shard`` (the actor), ``_checkpoint`` (service checkpoints), ``_connect`` (starting
or joining Ray), ``_client_parts`` (write buffers, merged samples) and ``_common``.
``replaydb.ray_backend`` is a deprecated alias of this package for one release.

Layout
------
A :class:`RayServer` splits every table over ``K = num_shards`` *shard actors*, each
hosting an ordinary :class:`~replaydb.table.Table` built from the template's
``config()`` with ``capacity / K`` rows (the remainder spread over the first shards),
placed round-robin over the alive nodes (soft node affinity, so a full or lost node
sends a shard elsewhere).

* **Writes.** Stream ``s`` always goes to shard ``s % K``, so an episode is never
  split and sequence windows stay valid. A :class:`RayClient` batches steps per
  shard (``batch_size`` steps or ``max_latency_s`` seconds, whichever comes first) and
  keeps one batch in flight per shard, sending the next only when the previous one
  was applied: the steps of a stream arrive in order even across actor restarts.
* **Keys.** A sampled item's key is ``local_key * K + shard``: ``shard = key % K``,
  ``local_key = key // K``. :meth:`RayClient.update_priorities` routes by it. Keys
  do not survive a restore onto a different shard count.
* **Global sampling.** For a batch of ``B`` the client asks every shard for its size
  ``n_i`` (uniform) or its priority total ``T_i = sum (p + eps)^alpha`` (prioritized,
  read in O(1) from the root of its sum tree by :meth:`Table.priority_total`), draws
  the per-shard counts from ``Multinomial(B, w_i / sum w)`` and has each shard draw its
  share with its own sampler. An item's probability is then
  ``P = (w_i / sum w) * p_local``, which is ``1 / N`` for uniform and
  ``(p + eps)^alpha / sum_i T_i`` for prioritized: the true global probability. Importance
  weights are ``(N * P) ** -beta`` normalized by the batch maximum (Schaul et al. 2015,
  arXiv 1511.05952). The weights ``w_i`` come back with every shard's reply and are
  reused for 0.1 s, so a busy learner pays one round trip per batch; ``P`` is always
  computed from the weights actually used, so it stays the true probability of the
  draw even when they are slightly stale. With one shard there is nothing to split.
* **Rate limiters.** Each shard gets the template's limiter with ``min_diff`` and
  ``max_diff`` divided by ``K``. ``diff = inserts * samples_per_insert - samples`` is a
  sum over shards, so the global ``diff`` stays inside the template's
  ``[min_diff, max_diff]`` exactly; the approximation is that a shard whose share is
  used up blocks while another still has slack (the effective error buffer can
  shrink to ``1/K`` of the global one when streams are spread unevenly).
  ``min_size_to_sample`` is checked globally by the client.
* **Checkpoints** (Reverb, arXiv 2102.04736, section 3.5 for the idea of a whole-service
  checkpoint): every shard writes its own ``<table>.shard-<i>.safetensors`` into one
  temporary directory, the driver adds ``manifest.json`` (listing shards) and the
  ``COMPLETE`` marker and renames it to ``ckpt-<timestamp>``. Every write lands in one
  shard, so per-shard snapshots form a consistent cut. Restoring onto the same ``K``
  is bit-for-bit; onto another ``K`` the steps are re-inserted in write order
  (priorities kept, ``times_sampled`` reset, limiter counters summed and split).
* **Faults.** Shard actors run with ``max_restarts=-1``; a restarted shard reloads its
  file from the newest checkpoint of this server (so it loses the steps written to
  it since, bounded by ``checkpoint_interval_s``). Writes retry transparently
  (``max_task_retries=-1``); a sample skips a shard that is down and draws its share
  from the others.
* **Security.** A Ray started here has token authentication on (Ray >= 2.59 does it
  for local clusters; on 2.52-2.58 this module sets ``RAY_AUTH_MODE=token``), uses
  127.0.0.1 as its node address and no dashboard. Steps travel as numpy arrays
  through Ray's object transport; checkpoints are safetensors + JSON.
"""

from __future__ import annotations

from replaydb.ray.client import RayClient
from replaydb.ray.serve import load_serve_config, serve_command
from replaydb.ray.server import RayServer

__all__ = ["RayClient", "RayServer", "load_serve_config", "serve_command"]
