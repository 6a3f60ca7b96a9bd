"""The Velora ReplayBuffer with prioritized replay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from replaydb import ReplayBuffer, load_table, save_table
from replaydb.errors import InvalidArgumentError, NotEnoughDataError
from replaydb.samplers import Prioritized


def filled(n: int = 64, **kw: object) -> ReplayBuffer:
    buf = ReplayBuffer.prioritized(128, 3, 2, 4, seed=0, **kw)  # type: ignore[arg-type]
    states = torch.arange(n, dtype=torch.float32).unsqueeze(1).expand(n, 3)
    buf.add_multi(
        states, torch.zeros(n, 2), torch.arange(n, dtype=torch.float32), states, torch.zeros(n)
    )
    return buf


def test_sample_has_weights_keys_and_velora_fields() -> None:
    buf = filled()
    batch = buf.sample(32)
    assert batch.states.shape == (32, 3)
    assert batch.hiddens.shape == (32, 4)
    assert batch.rewards.shape == (32, 1)
    assert batch.dones.shape == (32, 1)
    assert batch.weights is not None
    assert batch.keys is not None
    assert batch.weights.shape == (32,)
    assert float(batch.weights.max()) == 1.0
    assert isinstance(buf.table.sampler, Prioritized)


def test_update_priorities_steers_sampling() -> None:
    buf = filled(alpha=1.0, eps=0.0)
    keys = torch.arange(64)
    pri = torch.full((64,), 1e-3)
    pri[7] = 100.0
    assert buf.update_priorities(keys, pri) == 64
    batch = buf.sample(60)
    share = float((batch.rewards.squeeze(1) == 7.0).double().mean())
    assert share > 0.9
    # Weights: the rare items get the largest weight (1), the dominant one less.
    assert batch.weights is not None
    w7 = batch.weights[batch.rewards.squeeze(1) == 7.0]
    assert float(w7.max()) < 1.0 or share == 1.0


def test_beta_per_call_and_single_adds() -> None:
    buf = ReplayBuffer.prioritized(10, 2, 1, 0, seed=1)
    for i in range(5):
        buf.add(torch.full((2,), float(i)), 0.0, float(i), torch.zeros(2), False)
    assert len(buf) == 5
    b = buf.sample(4, beta=0.0)
    assert b.weights is not None
    assert torch.equal(b.weights, torch.ones(4))
    with pytest.raises(InvalidArgumentError, match="beta must be"):
        buf.sample(2, beta=2.0)
    with pytest.raises(NotEnoughDataError, match="Available: 5, Requested: 6"):
        buf.sample(6)
    with pytest.raises(InvalidArgumentError, match=r"alpha must be in \[0, 1\]"):
        ReplayBuffer.prioritized(10, 2, 1, 0, alpha=2.0)


def test_uniform_buffer_is_unchanged() -> None:
    buf = ReplayBuffer(10, 2, 1, 0)
    buf.add_multi(
        torch.zeros(4, 2), torch.zeros(4), torch.ones(4), torch.zeros(4, 2), torch.zeros(4)
    )
    b = buf.sample(3)
    assert b.weights is None
    assert b.keys is None


def test_save_keeps_velora_files_and_save_table_keeps_priorities(tmp_path: Path) -> None:
    buf = filled()
    b = buf.sample(16)
    buf.update_priorities(b.keys, torch.rand(16) + 0.5)
    buf.save(tmp_path, prefix="p_")
    meta = json.loads((tmp_path / "p_metadata.json").read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p_metadata.json", "p_state.safetensors"]
    plain = ReplayBuffer.load(tmp_path / "p_state.safetensors", meta)
    assert len(plain) == 64
    path = save_table(buf.table, tmp_path / "prio")
    again = ReplayBuffer(128, 3, 2, 4, table=load_table(path))
    x, y = buf.sample(16), again.sample(16)
    assert torch.equal(x.keys, y.keys)
    assert torch.equal(x.weights, y.weights)
    assert torch.equal(x.states, y.states)


@pytest.mark.gpu
def test_prioritized_buffer_on_cuda() -> None:
    buf = ReplayBuffer.prioritized(1000, 4, 1, 0, device="cuda", seed=0)
    buf.add_multi(
        torch.zeros(500, 4),
        torch.zeros(500),
        torch.ones(500),
        torch.zeros(500, 4),
        torch.zeros(500),
    )
    b = buf.sample(256)
    assert b.states.device.type == "cuda"
    assert b.weights is not None
    assert b.weights.device.type == "cuda"
    assert buf.update_priorities(b.keys, torch.rand(256, device="cuda") + 0.1) == 256
