"""Write the small dm-reverb 0.14 checkpoint under tests/data/reverb/ and what it must hold.

Run with a Python that has TensorFlow 2.15, dm-reverb 0.14.0 and tf-agents 0.19.0
(not part of CI; the output is committed)::

    /work/tfenv/bin/python scripts/make_reverb_checkpoint.py [OUT_DIR]

Three tables are filled through real Reverb's own APIs and checkpointed with its
``DefaultCheckpointer``:

* ``trajectories``: the TF-Agents/sbsim shape: ``Uniform`` sampler, ``Fifo``
  remover, ``MinSize(1)``, no signature, filled by ``ReverbAddTrajectoryObserver``
  (``sequence_length=2``) with ``Trajectory`` steps holding a uint8 image column;
  ``max_size`` is smaller than the number of items written, so the oldest ones are
  evicted.
* ``prioritized``: ``Prioritized(0.8)`` sampler, min-heap remover, a signature,
  distinct priorities, some items sampled and one priority mutated.
* ``legacy``: the legacy ``client.writer(delta_encoded=True)`` (delta-encoded integer
  columns, a string column, one chunk holding every column, items of 2 and 3
  steps), ``Lifo`` sampler, max-heap remover,
  ``SampleToInsertRatio`` limiter and ``max_times_sampled=2``.

``signature.pb`` holds a TF-Agents-style signature as TensorFlow's
``nested_structure_coder`` encodes it (Reverb stores table signatures so).
``expected.json`` records, from what the script wrote and what Reverb's
``server_info`` and ``sample`` returned: each table's settings and counters and
each stored item (key where a sample revealed it, priority, times sampled and
its columns) in insertion order. The checkpoint directory is copied to
``OUT_DIR/checkpoint`` (Reverb names it by a timestamp with colons, which some
file systems reject; its original name is kept in ``expected.json``).
"""

from __future__ import annotations

import base64
import importlib.metadata
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import reverb
import tensorflow as tf
import tree
from tensorflow.python.saved_model import nested_structure_coder
from tf_agents.replay_buffers import reverb_utils
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import trajectory

RNG = np.random.default_rng(20231201)


def encode(value: Any) -> dict[str, Any]:
    """An array as JSON: dtype, shape and base64 bytes (byte strings: a base64 list)."""
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind == "S":
        return {
            "dtype": "bytes",
            "shape": list(arr.shape),
            "items": [base64.b64encode(bytes(x)).decode() for x in arr.reshape(-1)],
        }
    return {
        "dtype": arr.dtype.name,
        "shape": list(arr.shape),
        "b64": base64.b64encode(np.ascontiguousarray(arr).tobytes()).decode(),
    }


def key_distribution(options: Any) -> dict[str, Any]:
    kind = options.WhichOneof("distribution")
    out: dict[str, Any] = {"kind": kind, "is_deterministic": options.is_deterministic}
    if kind == "prioritized":
        out["priority_exponent"] = options.prioritized.priority_exponent
    if kind == "heap":
        out["min_heap"] = options.heap.min_heap
    return out


def table_settings(info: Any) -> dict[str, Any]:
    lim = info.rate_limiter_info
    return {
        "max_size": info.max_size,
        "max_times_sampled": info.max_times_sampled,
        "sampler": key_distribution(info.sampler_options),
        "remover": key_distribution(info.remover_options),
        "rate_limiter": {
            "samples_per_insert": lim.samples_per_insert,
            "min_diff": lim.min_diff,
            "max_diff": lim.max_diff,
            "min_size_to_sample": lim.min_size_to_sample,
            "insert_count": lim.insert_stats.completed,
            "sample_count": lim.sample_stats.completed,
        },
        "current_size": info.current_size,
        "num_deleted_episodes": info.num_deleted_episodes,
        "num_unique_samples": info.num_unique_samples,
        "has_signature": info.signature is not None,
    }


def sample_keys(
    client: reverb.Client, table: str, n: int
) -> tuple[dict[int, list[np.ndarray]], dict[int, int], dict[int, float]]:
    """Sample ``n`` items one by one: data, count and last priority per key."""
    data: dict[int, list[np.ndarray]] = {}
    counts: dict[int, int] = {}
    priorities: dict[int, float] = {}
    for _ in range(n):
        (s,) = list(client.sample(table, 1, emit_timesteps=False))
        key = int(s.info.key)
        flat = [np.asarray(x) for x in tf.nest.flatten(s.data)]
        data[key] = flat
        counts[key] = counts.get(key, 0) + 1
        assert int(s.info.times_sampled) == counts[key], (s.info, counts[key])
        priorities[key] = float(s.info.priority)
    return data, counts, priorities


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(
        x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)
        for x, y in zip(a, b, strict=True)
    )


def build_expected(
    written: list[dict[str, Any]],
    stored: int,
    sampled: dict[int, list[np.ndarray]],
    counts: dict[int, int],
    priorities: dict[int, float],
    removed: set[int] = frozenset(),  # type: ignore[assignment]
) -> list[dict[str, Any]]:
    """Items still stored, in insertion order, with keys recovered from samples."""
    alive = [w for i, w in enumerate(written) if i not in removed]
    alive = alive[len(alive) - stored :] if stored else []
    items = []
    for w in alive:
        matches = [k for k, cols in sampled.items() if same(cols, w["columns"])]
        assert len(matches) <= 1, "two stored items hold the same data"
        key = matches[0] if matches else None
        items.append(
            {
                "key": str(key) if key is not None else None,
                "priority": priorities.get(key, w["priority"]) if key else w["priority"],
                "times_sampled": counts.get(key, 0) if key is not None else 0,
                "columns": [encode(c) for c in w["columns"]],
                "squeeze": w["squeeze"],
            }
        )
    return items


def main(out: Path) -> None:
    # ---- table (a): TF-Agents Trajectory items, like sbsim's starter buffer.
    traj_table = reverb.Table(
        "trajectories",
        sampler=reverb.selectors.Uniform(),
        remover=reverb.selectors.Fifo(),
        max_size=6,
        rate_limiter=reverb.rate_limiters.MinSize(1),
    )
    prio_signature = {
        "id": tf.TensorSpec([], tf.int64, "id"),
        "obs": tf.TensorSpec([3], tf.float32, "obs"),
    }
    prio_table = reverb.Table(
        "prioritized",
        sampler=reverb.selectors.Prioritized(0.8),
        remover=reverb.selectors.MinHeap(),
        max_size=5,
        rate_limiter=reverb.rate_limiters.MinSize(2),
        signature=prio_signature,
    )
    legacy_table = reverb.Table(
        "legacy",
        sampler=reverb.selectors.Lifo(),
        remover=reverb.selectors.MaxHeap(),
        max_size=10,
        max_times_sampled=2,
        rate_limiter=reverb.rate_limiters.SampleToInsertRatio(
            samples_per_insert=2.0, min_size_to_sample=1, error_buffer=100.0
        ),
    )
    root = Path(tempfile.mkdtemp(prefix="reverb-ckpt-"))
    checkpointer = reverb.platform.checkpointers_lib.DefaultCheckpointer(path=str(root))
    server = reverb.Server(
        [traj_table, prio_table, legacy_table], port=None, checkpointer=checkpointer
    )
    client = reverb.Client(f"localhost:{server.port}")

    # (a) two episodes of 4 and 3 steps, each followed by its boundary step.
    observer = reverb_utils.ReverbAddTrajectoryObserver(
        client, "trajectories", sequence_length=2, stride_length=1
    )
    steps: list[list[np.ndarray]] = []  # flattened steps of the current episode
    traj_written: list[dict[str, Any]] = []
    for length in (4, 3):
        steps = []
        for t in range(length + 1):
            boundary = t == length
            first, last = t == 0, t == length - 1
            step_type = 2 if boundary else (0 if first else 1)
            next_step_type = 0 if boundary else (2 if last else 1)
            traj = trajectory.Trajectory(
                step_type=np.int32(step_type),
                observation={
                    "image": RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8),
                    "temp": RNG.normal(size=2).astype(np.float32),
                },
                action=np.int64(RNG.integers(0, 4)),
                policy_info=(),
                next_step_type=np.int32(next_step_type),
                reward=np.float32(RNG.normal()),
                discount=np.float32(0.0 if last else 1.0),
            )
            observer(traj)
            steps.append([np.asarray(x) for x in tf.nest.flatten(traj)])
            if len(steps) >= 2:
                window = [np.stack([a, b]) for a, b in zip(steps[-2], steps[-1], strict=True)]
                traj_written.append({"columns": window, "priority": 5.0, "squeeze": [False] * 7})
    observer.flush()
    observer.close()

    # (b) prioritized single-step items with a string column, squeezed columns.
    prio_written: list[dict[str, Any]] = []
    with client.trajectory_writer(num_keep_alive_refs=1) as writer:
        for i in range(7):
            step = {
                "id": np.int64(100 + i),
                "obs": RNG.normal(size=3).astype(np.float32),
            }
            writer.append(step)
            priority = 0.5 + 0.75 * i
            writer.create_item(
                "prioritized",
                priority=priority,
                trajectory={k: writer.history[k][-1] for k in ("id", "obs")},
            )
            writer.flush()
            cols = [np.asarray(step["id"]), step["obs"]]
            prio_written.append({"columns": cols, "priority": priority, "squeeze": [True] * 2})
        writer.end_episode()

    # (c) legacy writer, delta-encoded integer columns (with wraparound).
    legacy_written: list[dict[str, Any]] = []
    with client.writer(max_sequence_length=3, delta_encoded=True, chunk_length=3) as writer:
        history: list[list[np.ndarray]] = []
        for t in range(8):
            step = [
                (np.arange(4, dtype=np.int32) * (t - 4) * 1_000_000).astype(np.int32),
                np.array([[65535 - t, t], [7 * t, 65535]], dtype=np.uint16),
                np.float64(t) / 3,
                np.array(f"step-{t}".encode() * (t % 3), dtype=object),
            ]
            writer.append(step)
            history.append(step)
            if t >= 1:
                n = 2 if t % 2 else 3 if t >= 2 else 2
                priority = float(t)
                writer.create_item("legacy", num_timesteps=n, priority=priority)
                cols = [np.stack([s[c] for s in history[-n:]]) for c in range(4)]
                legacy_written.append(
                    {"columns": cols, "priority": priority, "squeeze": [False] * 4}
                )

    # Samples: every trajectory item is seen (uniform, 6 items, 150 draws); a few
    # prioritized ones; the legacy Lifo table consumes its newest item (2 draws,
    # max_times_sampled=2) and samples the next one once.
    traj_data, traj_counts, traj_prio = sample_keys(client, "trajectories", 150)
    assert len(traj_counts) == 6, traj_counts
    prio_data, prio_counts, prio_prio = sample_keys(client, "prioritized", 6)
    some_key = sorted(prio_counts)[0]
    client.mutate_priorities("prioritized", updates={some_key: 9.25})
    prio_prio[some_key] = 9.25
    legacy_data, legacy_counts, legacy_prio = sample_keys(client, "legacy", 3)

    info = client.server_info()
    # Legacy: the newest item was consumed (removed after 2 samples).
    assert sorted(legacy_counts.values()) == [1, 2], legacy_counts
    consumed = {len(legacy_written) - 1}
    legacy_prio_table_size = info["legacy"].current_size
    # Max-heap remover: the highest priorities go first when the table is full;
    # 10 >= 7 items, so nothing was evicted here.
    assert legacy_prio_table_size == len(legacy_written) - 1
    # Prioritized (min-heap remover, max_size 5): the two lowest priorities went.
    prio_alive = sorted(prio_written, key=lambda w: w["priority"])[2:]
    prio_alive.sort(key=lambda w: int(w["columns"][0]))

    path = client.checkpoint()
    ckpt = Path(path)
    expected: dict[str, Any] = {
        "reverb_version": importlib.metadata.version("dm-reverb"),
        "checkpoint_name": ckpt.name,
        "tables": {},
    }
    expected["tables"]["trajectories"] = {
        **table_settings(info["trajectories"]),
        "items": build_expected(
            traj_written, info["trajectories"].current_size, traj_data, traj_counts, traj_prio
        ),
        "field_names": [
            "step_type",
            "observation.image",
            "observation.temp",
            "action",
            "next_step_type",
            "reward",
            "discount",
        ],
    }
    expected["tables"]["prioritized"] = {
        **table_settings(info["prioritized"]),
        "items": build_expected(prio_alive, len(prio_alive), prio_data, prio_counts, prio_prio),
        "field_names": ["id", "obs"],
    }
    expected["tables"]["legacy"] = {
        **table_settings(info["legacy"]),
        "items": build_expected(
            legacy_written,
            legacy_prio_table_size,
            legacy_data,
            legacy_counts,
            legacy_prio,
            removed=consumed,
        ),
    }
    for name, t in expected["tables"].items():
        assert len(t["items"]) == t["current_size"], (name, len(t["items"]))
    server.stop()

    out.mkdir(parents=True, exist_ok=True)
    # A TF-Agents-style signature as TensorFlow encodes it (nested_structure_coder),
    # for the signature decoder: named tuple, dict, bounded specs, an unknown
    # dimension, an empty tuple, a string spec and None.
    sig_struct = [
        trajectory.Trajectory(
            step_type=tf.TensorSpec((), tf.int32, "step_type"),
            observation={
                "temp": tf.TensorSpec([2], tf.float32, "temp"),
                "image": tensor_spec.BoundedTensorSpec([8, 8, 3], tf.uint8, 0, 255, "image"),
            },
            action=tensor_spec.BoundedTensorSpec((), tf.int64, 0, 3, "action"),
            policy_info=(),
            next_step_type=tf.TensorSpec((), tf.int32),
            reward=tf.TensorSpec((None,), tf.float32, "reward"),
            discount=tensor_spec.BoundedTensorSpec((), tf.float32, 0.0, 1.0, "discount"),
        ),
        (tf.TensorSpec([], tf.string),),
        None,
    ]
    encoded = nested_structure_coder.encode_structure(sig_struct)
    (out / "signature.pb").write_bytes(encoded.SerializeToString())
    leaves = []
    for keys, leaf in tree.flatten_with_path(sig_struct):
        path = ".".join(str(k) for k in keys)
        if leaf is None:
            leaves.append([path, None])
            continue
        entry = {"name": leaf.name or "", "shape": leaf.shape.as_list(), "dtype": leaf.dtype.name}
        if hasattr(leaf, "minimum"):
            entry["minimum"] = np.asarray(leaf.minimum).tolist()
            entry["maximum"] = np.asarray(leaf.maximum).tolist()
        leaves.append([path, entry])
    expected["signature_example"] = leaves

    dest = out / "checkpoint"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(ckpt, dest)
    (out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {dest} ({ckpt.name}) and expected.json: {total} bytes in all")


if __name__ == "__main__":
    default = Path(__file__).parents[1] / "tests/data/reverb"
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else default)
