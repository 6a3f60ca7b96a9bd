"""Throughput of the Ray-backed replay service on one machine, next to Reverb's figures.

Writers are Ray actors that call ``client.insert`` one step at a time (the client
batches them); one learner actor calls ``client.sample(256)``. Items are 140 bytes
(33 float32 + one int64), the size of Reverb's local benchmark. Printed per writer
count: aggregate insert items/s and learner sample items/s while the writers run,
then the learner alone; ratios against DeepMind Reverb's figures measured on this
machine (constants below) and against an in-process Table (the floor Ray adds to).

Run:
    PYTHONPATH=src python benchmarks/bench_ray.py --quick
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from replaydb import Spec, Table

# DeepMind Reverb, local server, 140-byte items, this machine (items/s).
REVERB_INSERT_SINGLE = 3_200.0  # client.insert, one item per call
REVERB_TRAJECTORY_WRITER = 5_600.0  # TrajectoryWriter
REVERB_CLIENT_SAMPLE = 16_600.0  # client.sample
REVERB_DATASET_B256 = 82_000.0  # TrajectoryDataset, batch 256
TARGET_INSERT = 10 * REVERB_TRAJECTORY_WRITER
TARGET_SAMPLE = 2 * REVERB_DATASET_B256

SPEC = Spec({"obs": (33,), "id": ((), torch.int64)})
BATCH = 256


def local_floor(n: int) -> tuple[float, float]:
    """Insert and sample items/s of an in-process Table (no Ray)."""
    table = Table(SPEC, 2 * n)
    obs = torch.zeros(33)
    t0 = time.perf_counter()
    for i in range(n):
        table.insert({"obs": obs, "id": i})
    ins = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    reps = max(1, n // BATCH)
    for _ in range(reps):
        table.sample(BATCH)
    return ins, reps * BATCH / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer items (well under a minute)")
    parser.add_argument("--shards", type=int, default=1, help="shard actors per table")
    parser.add_argument("--client-batch", type=int, default=256, help="client write batch")
    parser.add_argument("--prefetch", type=int, default=2, help="learner sample prefetch")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import ray

    from replaydb.ray import RayServer

    per_writer = 20_000 if args.quick else 100_000
    learn_s = 1.5 if args.quick else 5.0

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="replaydb")

    @ray.remote(num_cpus=0)
    class Writer:
        def run(self, client: Any, writer: int, n: int) -> float:
            torch.set_num_threads(1)
            obs = torch.zeros(33)
            t0 = time.perf_counter()
            for j in range(n):
                client.insert({"obs": obs, "id": j}, stream=writer)
            client.flush()
            return time.perf_counter() - t0

    @ray.remote(num_cpus=0)
    class Learner:
        def run(
            self, client: Any, seconds: float, until: Any = None, batch: int = BATCH
        ) -> tuple[int, float]:
            torch.set_num_threads(1)
            got, t0 = 0, time.perf_counter()
            while True:
                got += len(client.sample(batch))
                elapsed = time.perf_counter() - t0
                if until is not None:
                    ready, _ = ray.wait(until, num_returns=len(until), timeout=0)
                    if len(ready) == len(until):
                        return got, elapsed
                elif elapsed >= seconds:
                    return got, elapsed

    floor_ins, floor_smp = local_floor(per_writer // 2)
    server = RayServer(Table(SPEC, 4 * per_writer + 10_000), num_shards=args.shards)
    client = server.client(batch_size=args.client_batch)
    learner_client = server.client(prefetch=args.prefetch)
    writers = [Writer.remote() for _ in range(4)]
    learner = Learner.remote()
    client.extend({"obs": torch.zeros(10_000, 33), "id": torch.arange(10_000)})
    client.flush()
    ray.get([learner.run.remote(client, 0.2)])  # warm up

    print(
        f"replaydb Ray backend, {args.shards} shard(s), client batch {args.client_batch}, "
        f"{per_writer} steps per writer, 140-byte items, learner batch {BATCH}, "
        f"learner prefetch {args.prefetch}"
    )
    print(f"in-process Table floor: insert {floor_ins:,.0f}/s, sample {floor_smp:,.0f}/s")
    print(
        f"{'writers':>7} {'insert/s alone':>15} {'x TrajWriter':>12} "
        f"{'insert/s + learner':>19} {'sample/s + writers':>19} {'x Dataset256':>12}"
    )
    best_ins = 0.0
    for w in (1, 2, 4):
        times = ray.get([writers[i].run.remote(client, i, per_writer) for i in range(w)])
        solo = w * per_writer / max(times)
        client.reset()
        client.extend({"obs": torch.zeros(10_000, 33), "id": torch.arange(10_000)})
        refs = [writers[i].run.remote(client, i, per_writer) for i in range(w)]
        learned = learner.run.remote(learner_client, 0.0, refs)
        times = ray.get(refs)
        got, elapsed = ray.get(learned)
        ins = w * per_writer / max(times)
        smp = got / elapsed
        best_ins = max(best_ins, solo)
        print(
            f"{w:>7} {solo:>15,.0f} {solo / REVERB_TRAJECTORY_WRITER:>11.1f}x "
            f"{ins:>19,.0f} {smp:>19,.0f} {smp / REVERB_DATASET_B256:>11.2f}x"
        )
    got, elapsed = ray.get(learner.run.remote(client, learn_s))
    plain = got / elapsed
    got, elapsed = ray.get(learner.run.remote(learner_client, learn_s))
    alone = got / elapsed
    print(
        f"learner alone, no prefetch: sample {plain:,.0f} items/s = "
        f"{plain / REVERB_CLIENT_SAMPLE:.1f}x Reverb client.sample ({REVERB_CLIENT_SAMPLE:,.0f}/s)"
    )
    print(
        f"learner alone, prefetch {args.prefetch}: sample {alone:,.0f} items/s = "
        f"{alone / REVERB_DATASET_B256:.2f}x "
        f"Reverb TrajectoryDataset b256 ({REVERB_DATASET_B256:,.0f}/s), "
        f"{alone / REVERB_CLIENT_SAMPLE:.1f}x Reverb client.sample; "
        f"{alone / floor_smp:.2f}x the in-process floor"
    )
    print(
        f"best insert {best_ins:,.0f}/s = {best_ins / REVERB_TRAJECTORY_WRITER:.1f}x Reverb "
        f"TrajectoryWriter ({REVERB_TRAJECTORY_WRITER:,.0f}/s), "
        f"{best_ins / REVERB_INSERT_SINGLE:.1f}x Reverb single insert; "
        f"{best_ins / floor_ins:.2f}x the in-process floor"
    )
    got, elapsed = ray.get(learner.run.remote(learner_client, learn_s, None, 1024))
    big = got / elapsed
    print(
        f"learner alone, prefetch {args.prefetch}, batch 1024: sample {big:,.0f} items/s = "
        f"{big / REVERB_DATASET_B256:.2f}x Reverb TrajectoryDataset b256"
    )
    ins_ok = "met" if best_ins >= TARGET_INSERT else "MISSED"
    smp_ok = "met" if alone >= TARGET_SAMPLE else "MISSED"
    print(
        f"targets: insert >= {TARGET_INSERT:,.0f}/s: {ins_ok}; "
        f"sample >= {TARGET_SAMPLE:,.0f}/s: {smp_ok}"
    )
    server.close()
    ray.shutdown()


if __name__ == "__main__":
    main()
