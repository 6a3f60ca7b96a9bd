"""A TF-Agents DqnAgent on CartPole through TF-Agents' own Reverb pipeline, on replaydb.reverb.

The training code is plain TF-Agents: ``ReverbReplayBuffer`` + ``ReverbAddTrajectoryObserver``
+ ``replay_buffer.as_dataset(...)``. The one replaydb line is
``replaydb.reverb.install()``, which makes ``import reverb`` resolve to replaydb's
in-process implementation (no dm-reverb needed). ``--real-reverb`` runs the same
code on an installed dm-reverb instead, for comparison.

    python examples/tf_agents_dqn_cartpole.py --iterations 20000
    python examples/tf_agents_dqn_cartpole.py --smoke          # a few hundred steps

Needs tensorflow-cpu 2.15, tf-agents 0.19.0 and gym 0.23 (``scripts/test_tf.sh``
builds such an environment in ``.venv-tf``).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TABLE = "uniform_table"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=20_000, help="train steps")
    p.add_argument("--collect-steps", type=int, default=1, help="env steps per train step")
    p.add_argument("--initial-steps", type=int, default=1_000, help="random steps first")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--eval-every", type=int, default=1_000)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--target", type=float, default=195.0, help="stop at this average return")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--real-reverb", action="store_true", help="use the installed dm-reverb")
    p.add_argument("--smoke", action="store_true", help="a short run that only checks it works")
    args = p.parse_args(argv)
    if args.smoke:
        args.iterations, args.initial_steps, args.eval_every, args.eval_episodes = 300, 200, 150, 2
    return args


def average_return(env: Any, policy: Any, episodes: int) -> float:
    """Mean undiscounted return of ``policy`` over ``episodes`` episodes of a TF env."""
    total = 0.0
    for _ in range(episodes):
        time_step = env.reset()
        while not time_step.is_last():
            time_step = env.step(policy.action(time_step).action)
            total += float(time_step.reward.numpy()[0])
    return total / episodes


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train; return ``{"returns": [(iteration, avg_return)], "solved_at": int | None, ...}``."""
    args = parse(argv)
    if not args.real_reverb:
        import replaydb.reverb

        replaydb.reverb.install()
    import reverb
    import tensorflow as tf
    from tf_agents.agents.dqn import dqn_agent
    from tf_agents.drivers import py_driver
    from tf_agents.environments import suite_gym, tf_py_environment
    from tf_agents.networks import sequential
    from tf_agents.policies import py_tf_eager_policy, random_py_policy
    from tf_agents.replay_buffers import reverb_replay_buffer, reverb_utils
    from tf_agents.utils import common

    tf.random.set_seed(args.seed)
    train_py_env = suite_gym.load("CartPole-v0")
    eval_env = tf_py_environment.TFPyEnvironment(suite_gym.load("CartPole-v0"))
    train_py_env.seed(args.seed)
    num_actions = int(train_py_env.action_spec().maximum) + 1
    q_net = sequential.Sequential(
        [
            tf.keras.layers.Dense(100, activation="relu"),
            tf.keras.layers.Dense(50, activation="relu"),
            tf.keras.layers.Dense(num_actions),
        ]
    )
    agent = dqn_agent.DqnAgent(
        tf_py_environment.TFPyEnvironment(train_py_env).time_step_spec(),
        tf_py_environment.TFPyEnvironment(train_py_env).action_spec(),
        q_network=q_net,
        optimizer=tf.keras.optimizers.Adam(learning_rate=1e-3),
        td_errors_loss_fn=common.element_wise_squared_loss,
        train_step_counter=tf.Variable(0),
    )
    agent.initialize()

    # The Reverb pipeline, exactly as TF-Agents' tutorials and sbsim write it.
    table = reverb.Table(
        TABLE,
        max_size=100_000,
        sampler=reverb.selectors.Uniform(),
        remover=reverb.selectors.Fifo(),
        rate_limiter=reverb.rate_limiters.MinSize(1),
    )
    server = reverb.Server([table])
    replay_buffer = reverb_replay_buffer.ReverbReplayBuffer(
        agent.collect_data_spec, table_name=TABLE, sequence_length=2, local_server=server
    )
    observer = reverb_utils.ReverbAddTrajectoryObserver(
        replay_buffer.py_client, TABLE, sequence_length=2
    )
    random_policy = random_py_policy.RandomPyPolicy(
        train_py_env.time_step_spec(), train_py_env.action_spec()
    )
    py_driver.PyDriver(train_py_env, random_policy, [observer], max_steps=args.initial_steps).run(
        train_py_env.reset()
    )
    collect = py_driver.PyDriver(
        train_py_env,
        py_tf_eager_policy.PyTFEagerPolicy(agent.collect_policy, use_tf_function=True),
        [observer],
        max_steps=args.collect_steps,
    )
    dataset = replay_buffer.as_dataset(
        sample_batch_size=args.batch_size, num_steps=2, num_parallel_calls=3
    ).prefetch(3)
    iterator = iter(dataset)
    train = common.function(agent.train)

    returns: list[tuple[int, float]] = []
    solved_at = None
    time_step = train_py_env.reset()
    start = time.perf_counter()
    for it in range(1, args.iterations + 1):
        time_step, _ = collect.run(time_step)
        experience, _ = next(iterator)
        loss = float(train(experience).loss)
        if it % args.eval_every == 0:
            avg = average_return(eval_env, agent.policy, args.eval_episodes)
            returns.append((it, avg))
            print(f"iteration {it}: loss {loss:.3f}, average return {avg:.1f}", flush=True)
            if avg >= args.target and solved_at is None:
                solved_at = it
                break
    seconds = time.perf_counter() - start
    frames = replay_buffer.num_frames()
    observer.close()
    server.stop()
    backend = "dm-reverb" if args.real_reverb else "replaydb.reverb"
    print(f"{backend}: {it} iterations in {seconds:.1f}s, {frames} frames, solved_at={solved_at}")
    return {"returns": returns, "solved_at": solved_at, "frames": frames, "seconds": seconds}


if __name__ == "__main__":
    main()
