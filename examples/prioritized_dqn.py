"""A prioritized DQN-style update loop on synthetic data (runs in a few seconds).

An actor writes transitions of a random 4-state chain into a prioritized table; a
learner samples importance-weighted batches, takes a TD step on a small Q-network
and feeds the new TD errors back as priorities.

Run: PYTHONPATH=src python examples/prioritized_dqn.py
"""

from __future__ import annotations

import time

import torch
from torch import nn

from replaydb import Spec, Table
from replaydb.samplers import Prioritized

OBS, ACTIONS, GAMMA = 8, 4, 0.99


def synthetic_transitions(n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Random observations; reward 1 for action 0 in states whose first feature > 1."""
    obs = torch.randn(n, OBS, generator=g)
    action = torch.randint(0, ACTIONS, (n,), generator=g)
    reward = ((action == 0) & (obs[:, 0] > 1.0)).float()
    return {
        "obs": obs,
        "action": action,
        "reward": reward,
        "next_obs": torch.randn(n, OBS, generator=g),
        "done": (torch.rand(n, generator=g) < 0.05).float(),
    }


def main(steps: int = 300, batch_size: int = 128) -> None:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    spec = Spec(
        {"obs": (OBS,), "action": ((), "int64"), "reward": (), "next_obs": (OBS,), "done": ()}
    )
    table = Table(spec, capacity=50_000, sampler=Prioritized(alpha=0.6, beta=0.4, seed=0))
    q = nn.Sequential(nn.Linear(OBS, 64), nn.ReLU(), nn.Linear(64, ACTIONS))
    target = nn.Sequential(nn.Linear(OBS, 64), nn.ReLU(), nn.Linear(64, ACTIONS))
    target.load_state_dict(q.state_dict())
    opt = torch.optim.Adam(q.parameters(), lr=1e-3)

    table.extend(synthetic_transitions(2_000, g))
    start = time.perf_counter()
    for step in range(steps):
        table.extend(synthetic_transitions(32, g))  # the actor keeps writing
        beta = 0.4 + 0.6 * step / steps  # anneal towards 1
        batch = table.sample(batch_size, beta=beta)
        with torch.no_grad():
            best = target(batch["next_obs"]).max(dim=1).values
            y = batch["reward"] + GAMMA * (1.0 - batch["done"]) * best
        pred = q(batch["obs"]).gather(1, batch["action"].unsqueeze(1)).squeeze(1)
        td = y - pred
        loss = (batch.weights * td.pow(2)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        table.update_priorities(batch.keys, td.detach().abs().double() + 1e-6)
        if step % 100 == 0:
            target.load_state_dict(q.state_dict())
            print(f"step {step:4d}  loss {loss.item():.4f}  items {len(table)}")
    elapsed = time.perf_counter() - start
    print(f"{steps} updates in {elapsed:.2f}s; table holds {len(table)} transitions")


if __name__ == "__main__":
    main()
