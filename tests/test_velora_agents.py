"""Velora 0.2.0's own agents, end to end, on replaydb's ReplayBuffer.

The buffer is swapped in the way a Velora user would: by replacing the class that
``velora.models.nf.agent`` constructs. Velora is installed by ``scripts/test.sh``
(``pip install --no-deps velora==0.2.0``; see the comment there for why), so CI
always runs these tests; set ``REPLAYDB_REQUIRE_VELORA=1`` to make a missing Velora
an error rather than a skip.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import replaydb
from replaydb import ReplayBuffer

if sys.version_info < (3, 11):  # pragma: no cover - velora needs Python 3.11
    pytest.skip("velora 0.2.0 needs Python >= 3.11", allow_module_level=True)
if os.environ.get("REPLAYDB_REQUIRE_VELORA"):
    import velora  # noqa: F401  (fail loudly: CI must run these tests)
else:
    pytest.importorskip("velora")
pytest.importorskip("gymnasium")

from pydantic import BaseModel  # velora depends on pydantic
from velora.models.config import BufferConfig as VeloraBufferConfig

# Velora 0.2.0 scripts its networks with torch.jit, which torch 2.13 deprecates.
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)


@pytest.fixture
def velora_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Velora's agents with replaydb's buffer, metrics in memory, files under tmp_path."""
    import velora.models.nf.agent as nf_agent

    monkeypatch.setenv("VELORA_TEST_MODE", "1")  # Velora's in-memory metrics database
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(nf_agent, "ReplayBuffer", replaydb.ReplayBuffer)
    torch.manual_seed(0)
    return nf_agent


def test_config_is_accepted_by_velora_models() -> None:
    ours = ReplayBuffer(100, 2, 1, 2).config()
    theirs = VeloraBufferConfig(
        type="ReplayBuffer", capacity=100, state_dim=2, action_dim=1, hidden_dim=2
    )
    assert ours == theirs
    assert theirs == ours  # pydantic defers to BufferConfig.__eq__
    assert ours != VeloraBufferConfig(
        type="ReplayBuffer", capacity=101, state_dim=2, action_dim=1, hidden_dim=2
    )

    class Holder(BaseModel):
        buffer: VeloraBufferConfig

    held = Holder(buffer=ours)  # type: ignore[arg-type]
    assert held.buffer == theirs
    assert json.loads(held.model_dump_json())["buffer"]["type"] == "ReplayBuffer"


def _check_round_trip(agent: Any, restored: Any) -> None:
    assert isinstance(restored.buffer, ReplayBuffer)
    assert restored.buffer.metadata()["size"] == agent.buffer.size
    assert restored.buffer.position == agent.buffer.position
    for k, v in agent.buffer.state_dict().items():
        assert torch.equal(restored.buffer.state_dict()[k], v), k


@pytest.mark.parametrize(
    ("kind", "env_id"), [("NeuroFlow", "CartPole-v1"), ("NeuroFlowCT", "Pendulum-v1")]
)
def test_agent_trains_saves_loads_and_continues(
    velora_env: Any, tmp_path: Path, kind: str, env_id: str
) -> None:
    cls = getattr(velora_env, kind)
    agent = cls(env_id, 8, 16, buffer_size=500, seed=0)
    assert isinstance(agent.buffer, ReplayBuffer)
    assert agent.config.buffer.type == "ReplayBuffer"
    assert agent.config.buffer.capacity == 500
    agent.train(16, n_episodes=2, max_steps=40, display_count=1, log_freq=1, window_size=2)
    size = len(agent.buffer)
    assert size >= 32  # the warm-up (2 * batch_size) and the training steps
    assert agent.buffer.hiddens.shape == (500, agent.actor.hidden_size)
    assert bool(agent.buffer.hiddens[:size].abs().sum() > 0)  # hidden states were stored

    agent.save(tmp_path / "ckpt", buffer=True, config=True)
    assert (tmp_path / "ckpt" / "buffer_state.safetensors").is_file()
    restored = cls.load(tmp_path / "ckpt", buffer=True)
    _check_round_trip(agent, restored)

    restored.train(16, n_episodes=1, max_steps=20, warmup_steps=0, display_count=1)
    assert len(restored.buffer) > size or len(restored.buffer) == 500


def test_velora_buffer_warm_contract(velora_env: Any) -> None:
    agent = velora_env.NeuroFlow("CartPole-v1", 8, 16, buffer_size=200, seed=1)
    with pytest.raises(ValueError, match="num_envs=1"):
        agent.buffer.warm(agent, 10, 1)
    agent.buffer.warm(agent, 10, 2)
    assert len(agent.buffer) >= 10
