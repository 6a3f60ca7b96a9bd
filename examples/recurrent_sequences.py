"""A recurrent agent learning from sequence windows written by a vector env (seconds).

Eight environments write one step each per tick, interleaved, into a sequence
table (one stream per environment). The learner samples ``[B, T]`` windows of one
episode each, padded at episode ends with a mask, unrolls a GRU over them and
regresses 3-step returns.

Run: PYTHONPATH=src python examples/recurrent_sequences.py
"""

from __future__ import annotations

import time

import torch
from torch import nn

from replaydb import Spec, Table
from replaydb.nstep import nstep_returns

ENVS, OBS, T, GAMMA = 8, 6, 12, 0.9


class RecurrentValue(nn.Module):
    """GRU over the window, a value per step."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(OBS, 32, batch_first=True)
        self.head = nn.Linear(32, 1)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(obs)
        return self.head(out).squeeze(-1)  # [B, T]


def main(ticks: int = 400, updates: int = 200) -> None:
    torch.set_num_threads(1)  # tiny model: threads only add overhead
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    spec = Spec({"obs": (OBS,), "reward": ()})
    table = Table(spec, capacity=20_000, sequence_length=T, pad=True)
    lengths = torch.randint(20, 60, (ENVS,), generator=g)
    t_in_episode = torch.zeros(ENVS, dtype=torch.int64)
    for _ in range(ticks):  # a vector env: every env writes one step per tick
        ends = (t_in_episode + 1 >= lengths).long()  # 1: terminated
        table.extend(
            {"obs": torch.randn(ENVS, OBS, generator=g), "reward": torch.rand(ENVS, generator=g)},
            streams=torch.arange(ENVS),
            ends=ends,
        )
        t_in_episode = torch.where(ends.bool(), 0, t_in_episode + 1)
    print(f"{table.num_steps} steps from {ENVS} streams, {len(table)} windows of {T}")

    model = RecurrentValue()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    n = 3
    start = time.perf_counter()
    for step in range(updates):
        batch = table.sample(32)
        assert batch.mask is not None
        assert batch.ends is not None
        values = model(batch["obs"])  # [B, T]
        # n-step targets for every position t0 < T - n at once: unfold the window
        # into [B, T - n, n + 1] sub-windows and flatten them into one batch.
        sub = T - n
        rewards = batch["reward"].unfold(1, n + 1, 1).reshape(-1, n + 1)
        ends = batch.ends.unfold(1, n + 1, 1).reshape(-1, n + 1)
        mask = batch.mask.unfold(1, n + 1, 1).reshape(-1, n + 1)
        tgt = nstep_returns(rewards, ends, GAMMA, mask=mask)
        ahead = values.detach().unfold(1, n + 1, 1).reshape(-1, n + 1)
        y = tgt.targets(tgt.gather(ahead)).view(-1, sub)
        valid = batch.mask[:, :sub].float()
        loss = (((values[:, :sub] - y) ** 2) * valid).sum() / valid.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            print(f"update {step:4d}  loss {loss.item():.4f}")
    print(f"{updates} recurrent updates in {time.perf_counter() - start:.2f}s")


if __name__ == "__main__":
    main()
