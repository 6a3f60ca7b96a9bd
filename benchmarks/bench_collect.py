"""warm() throughput on CartPole-v1, against the env-stepping floor and a Velora-style loop.

Rows/s of:

* **floor**: stepping the same vector env with random actions and storing nothing;
* **velora-style**: Velora's warm loop (next-step autoreset, ``add_multi`` every step,
  autoreset rows included) into replaydb's ``ReplayBuffer``;
* **warm -> ReplayBuffer** and **warm -> Table (steps layout)**: replaydb.

Run: ``python benchmarks/bench_collect.py [--quick]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import gymnasium as gym
import torch

from replaydb import ReplayBuffer, Table
from replaydb.collect import step_spec, warm

ENV = "CartPole-v1"


def floor(n: int, num_envs: int) -> None:
    envs = gym.make_vec(
        ENV,
        num_envs=num_envs,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
    )
    envs.reset(seed=0)
    envs.action_space.seed(0)
    for _ in range(n // num_envs):
        envs.step(envs.action_space.sample())
    envs.close()


def velora_style(n: int, num_envs: int) -> None:
    buffer = ReplayBuffer(n, state_dim=4, action_dim=1, hidden_dim=0)
    envs = gym.make_vec(ENV, num_envs=num_envs, vectorization_mode="sync")
    states, _ = envs.reset(seed=0)
    envs.action_space.seed(0)
    while len(buffer) < n:
        actions = envs.action_space.sample()
        next_states, rewards, terminated, truncated, _ = envs.step(actions)
        buffer.add_multi(states, actions, rewards, next_states, terminated | truncated)
        states = next_states
    envs.close()


def warm_buffer(n: int, num_envs: int) -> None:
    buffer = ReplayBuffer(n, state_dim=4, action_dim=1, hidden_dim=0)
    warm(buffer, "random", n, num_envs=num_envs, env=ENV, seed=0, progress=False)


def warm_table(n: int, num_envs: int) -> None:
    table = Table(step_spec(ENV), n, sequence_length=2)
    warm(table, "random", n, num_envs=num_envs, env=ENV, seed=0, progress=False)


def best_of(fn: Callable[[int, int], None], n: int, num_envs: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(n, num_envs)
        times.append(time.perf_counter() - start)
    return n / min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows, one repeat")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n, repeats = (20_000, 1) if args.quick else (100_000, 3)
    for num_envs in (1, 8):
        rates = {
            name: best_of(fn, n, num_envs, repeats)
            for name, fn in [
                ("floor (env steps only)", floor),
                ("velora-style loop", velora_style),
                ("warm -> ReplayBuffer", warm_buffer),
                ("warm -> Table (steps)", warm_table),
            ]
        }
        base = rates["floor (env steps only)"]
        print(f"CartPole-v1, {n:,} rows, num_envs={num_envs}")
        for name, rate in rates.items():
            print(f"  {name:<24} {rate:>10,.0f} rows/s   {rate / base:5.2f}x floor")


if __name__ == "__main__":
    main()
