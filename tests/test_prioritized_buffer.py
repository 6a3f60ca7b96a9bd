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
    assert batch.weights.shape == (32, 1)  # like rewards: no [B, B] broadcast
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
    assert torch.equal(b.weights, torch.ones(4, 1))
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


def test_save_keeps_velora_files_and_the_sampler(tmp_path: Path) -> None:
    buf = filled(alpha=0.7, beta=0.3, eps=1e-3)
    b = buf.sample(16)
    assert b.keys is not None
    buf.update_priorities(b.keys, torch.rand(16) + 0.5)
    buf.save(tmp_path, prefix="p_")
    meta = json.loads((tmp_path / "p_metadata.json").read_text())
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[:2] == ["p_metadata.json", "p_state.safetensors"]
    assert len(names) == 3
    assert names[2] == meta["table"]["file"]
    assert meta["table"]["config"]["sampler"] == {
        "type": "Prioritized",
        "alpha": 0.7,
        "beta": 0.3,
        "eps": 1e-3,
        "seed": 0,
    }
    again = ReplayBuffer.load(tmp_path / "p_state.safetensors", meta)
    assert isinstance(again.table.sampler, Prioritized)
    assert (again.table.sampler.alpha, again.table.sampler.beta) == (0.7, 0.3)
    x, y = buf.sample(16), again.sample(16)
    assert x.keys is not None
    assert y.keys is not None
    assert torch.equal(x.keys, y.keys)
    assert x.weights is not None
    assert y.weights is not None
    assert torch.equal(x.weights, y.weights)
    assert torch.equal(x.states, y.states)
    assert torch.equal(
        buf.table.sample(8).priorities, again.table.sample(8).priorities
    )  # priorities and generator state both came back


def test_velora_reads_the_prioritized_files(tmp_path: Path) -> None:
    """Velora's reader uses the two Velora files only; the table file does not disturb it."""
    buf = filled()
    buf.save(tmp_path)
    meta = json.loads((tmp_path / "buffer_metadata.json").read_text())
    from safetensors.torch import load_file

    data = load_file(str(tmp_path / "buffer_state.safetensors"))
    for k in ("states", "actions", "rewards", "next_states", "dones", "hiddens"):
        assert torch.equal(data[k], getattr(buf, k))
    assert (meta["position"], meta["size"], meta["capacity"]) == (64, 64, 128)


def test_save_table_keeps_priorities_too(tmp_path: Path) -> None:
    buf = filled()
    path = save_table(buf.table, tmp_path / "prio")
    again = ReplayBuffer(128, 3, 2, 4, table=load_table(path))
    x, y = buf.sample(16), again.sample(16)
    assert x.keys is not None
    assert y.keys is not None
    assert torch.equal(x.keys, y.keys)


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
