"""Quick start: fill a Velora-style buffer, sample it, save it, load it back.

Run: python examples/quickstart.py
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch

from replaydb import ReplayBuffer


def main() -> None:
    torch.manual_seed(0)
    buffer = ReplayBuffer(capacity=100_000, state_dim=11, action_dim=3, hidden_dim=8)
    n = 50_000
    start = time.perf_counter()
    for _ in range(n // 256):
        buffer.add_multi(
            torch.randn(256, 11),
            torch.rand(256, 3) * 2 - 1,
            torch.randn(256),
            torch.randn(256, 11),
            torch.rand(256) < 0.01,
            torch.randn(256, 8),
        )
    fill_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(1000):
        batch = buffer.sample(batch_size=256)
    sample_s = time.perf_counter() - start
    target = batch.rewards + (1 - batch.dones) * 0.99 * batch.rewards
    with tempfile.TemporaryDirectory() as tmp:
        buffer.save(Path(tmp, "run"), prefix="buffer_")
        metadata = json.loads(Path(tmp, "run", "buffer_metadata.json").read_text())
        restored = ReplayBuffer.load(Path(tmp, "run", "buffer_state"), metadata)
        same = all(
            torch.equal(buffer.state_dict()[k], restored.state_dict()[k])
            for k in buffer.state_dict()
        )
        nbytes = sum(p.stat().st_size for p in Path(tmp, "run").iterdir())
    print(
        f"filled {len(buffer):,} transitions in {fill_s:.3f}s ({len(buffer) / fill_s:,.0f} rows/s)"
    )
    print(f"sampled 1000 batches of 256 in {sample_s:.3f}s ({1000 / sample_s:,.0f} batches/s)")
    print(f"a TD target from the last batch: shape {tuple(target.shape)}")
    print(f"saved {nbytes / 1e6:.1f} MB and loaded it back: identical={same}")
    print(f"metadata: {restored.metadata()}")


if __name__ == "__main__":
    main()
