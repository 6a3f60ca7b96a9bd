"""warm(), Collector, populate() and load_policy(): what lands in the buffer, and errors."""

from __future__ import annotations

import errno
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

gym = pytest.importorskip("gymnasium")

from replaydb import ReplayBuffer, Spec, Table  # noqa: E402
from replaydb.checkpoint import list_checkpoints, read_checkpoint  # noqa: E402
from replaydb.collect import (  # noqa: E402
    LAYOUT,
    STEP_LAST,
    TABLE_NAME,
    Collector,
    load_policy,
    populate,
    step_spec,
    warm,
)
from replaydb.errors import InvalidArgumentError, SpecMismatchError  # noqa: E402
from replaydb.samplers import Uniform  # noqa: E402

ENV = "CartPole-v1"
X_LIMIT, THETA_LIMIT = 2.4, 12 * 2 * np.pi / 360


def _rows_by_stream(table: Table) -> dict[int, torch.Tensor]:
    """Rows of each stream in write order."""
    st = table.storage
    n = st.num_rows
    order = torch.argsort(st.key[:n])
    streams = st.stream[:n][order]
    return {int(s): order[streams == s] for s in torch.unique(streams)}


def _terminal(obs: torch.Tensor) -> torch.Tensor:
    return (obs[:, 0].abs() > X_LIMIT) | (obs[:, 2].abs() > THETA_LIMIT)


# ------------------------------------------------------------------ Velora
def test_seeded_warm_is_reproducible() -> None:
    states = []
    for _ in range(2):
        buffer = ReplayBuffer(600, state_dim=4, action_dim=1, hidden_dim=0)
        warm(buffer, "random", 600, num_envs=3, env=ENV, seed=7, progress=False)
        states.append(buffer.state_dict())
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    other = ReplayBuffer(600, state_dim=4, action_dim=1, hidden_dim=0)
    warm(other, "random", 600, num_envs=3, env=ENV, seed=8, progress=False)
    assert not torch.equal(other.state_dict()["states"], states[0]["states"])


def test_velora_warm_stores_no_autoreset_rows() -> None:
    buffer = ReplayBuffer(3000, state_dim=4, action_dim=1, hidden_dim=0)
    stats = warm(buffer, "random", 3000, num_envs=4, env=ENV, seed=0, progress=False)
    assert len(buffer) == 3000
    assert stats.episodes > 50
    f = buffer.table.storage.fields
    # CartPole pays 1.0 on every real step; an autoreset row would pay 0.
    assert torch.equal(f["rewards"], torch.ones(3000, 1))
    dones = f["dones"][:, 0] > 0
    assert int(dones.sum()) == stats.episodes
    for rows in _rows_by_stream(buffer.table).values():
        nxt, cur = f["next_states"][rows[:-1]], f["states"][rows[1:]]
        mid = ~dones[rows[:-1]]
        # Every non-terminal row's next_state is that env's next stored state...
        assert torch.equal(nxt[mid], cur[mid])
        # ...and a done row's next_state is the real final observation, not the reset one.
        done_rows = rows[dones[rows]]
        assert bool(_terminal(f["next_states"][done_rows]).all())
        assert not torch.equal(nxt[~mid], cur[~mid])


class CountingAgent:
    """A duck-typed Velora agent whose hidden state counts steps since reset."""

    def __init__(self, hidden_shape: str = "flat") -> None:
        self.env = SimpleNamespace(spec=SimpleNamespace(id=ENV))
        self.device = torch.device("cpu")
        self.calls = 0
        self.hidden_shape = hidden_shape
        self.seen_none = 0

    def predict(self, states: torch.Tensor, hidden: Any, train_mode: bool = False) -> Any:
        assert train_mode is True
        assert isinstance(states, torch.Tensor)
        assert states.dtype == torch.float32
        e = states.shape[0]
        if hidden is None:
            self.seen_none += 1
            hidden = torch.zeros(e, 1) if self.hidden_shape == "flat" else torch.zeros(1, e, 1)
        self.calls += 1
        # Push the pole one way: short episodes, many boundaries.
        return torch.zeros(e, dtype=torch.int64), hidden + 1


@pytest.mark.parametrize("layout", ["flat", "layers_first"])
def test_hidden_state_resets_at_episode_boundaries(layout: str) -> None:
    buffer = ReplayBuffer(400, state_dim=4, action_dim=1, hidden_dim=1)
    agent = CountingAgent(layout)
    stats = warm(buffer, agent, 400, num_envs=3, seed=1, progress=False)
    assert agent.seen_none == 1
    assert stats.episodes > 10
    f = buffer.table.storage.fields
    for rows in _rows_by_stream(buffer.table).values():
        h = f["hiddens"][rows, 0]
        d = f["dones"][rows, 0] > 0
        assert h[0] == 1
        expected = torch.where(d[:-1], torch.ones_like(h[1:]), h[:-1] + 1)
        assert torch.equal(h[1:], expected)


def test_n_samples_above_capacity_raises_before_any_env() -> None:
    buffer = ReplayBuffer(10, state_dim=4, action_dim=1, hidden_dim=0)
    with pytest.raises(ValueError, match=r"n_samples \(11\) exceeds the buffer's capacity \(10\)"):
        warm(buffer, "random", 11, env=ENV)
    assert len(buffer) == 0


def test_warm_fills_to_exactly_n_counting_rows_already_there() -> None:
    buffer = ReplayBuffer(100, state_dim=4, action_dim=1, hidden_dim=0)
    warm(buffer, "random", 37, num_envs=8, env=ENV, seed=0, progress=False)
    assert len(buffer) == 37
    warm(buffer, "random", 90, num_envs=8, env=ENV, seed=1, progress=False)
    assert len(buffer) == 90
    warm(buffer, "random", 50, env=ENV, progress=False)  # already past: nothing to do
    assert len(buffer) == 90


def test_num_envs_one_and_callable_policy() -> None:
    seen: list[torch.Tensor] = []

    def policy(obs: torch.Tensor) -> np.ndarray[Any, Any]:
        seen.append(obs)
        return (obs[:, 2] > 0).long().numpy()  # lean with the pole

    buffer = ReplayBuffer(300, state_dim=4, action_dim=1, hidden_dim=0)
    stats = warm(buffer, policy, 300, num_envs=1, env=ENV, seed=3, progress=False)
    assert len(buffer) == 300
    assert seen[0].shape == (1, 4)
    assert stats.episode_returns
    assert np.mean(stats.episode_returns) > 25


class ClosingEnv(gym.Wrapper):  # type: ignore[misc]
    closed = 0

    def close(self) -> None:
        ClosingEnv.closed += 1
        super().close()


def _factory() -> Any:
    return ClosingEnv(gym.make(ENV))


def test_envs_are_closed_when_the_policy_raises() -> None:
    ClosingEnv.closed = 0
    calls = {"n": 0}

    def policy(obs: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("policy blew up")
        return torch.zeros(obs.shape[0], dtype=torch.int64)

    buffer = ReplayBuffer(100, state_dim=4, action_dim=1, hidden_dim=0)
    with pytest.raises(RuntimeError, match="policy blew up"):
        warm(buffer, policy, 100, num_envs=2, env=_factory, progress=False)
    assert ClosingEnv.closed == 2


def test_wrong_action_shape_is_rejected_and_nothing_is_written() -> None:
    ClosingEnv.closed = 0
    buffer = ReplayBuffer(100, state_dim=4, action_dim=1, hidden_dim=0)
    with pytest.raises(InvalidArgumentError, match=r"actions of shape \(3,\), expected \(2,\)"):
        warm(buffer, lambda obs: np.zeros(3, dtype=np.int64), 10, num_envs=2, env=_factory)
    with pytest.raises(InvalidArgumentError, match=r"outside Discrete\(2\)"):
        warm(buffer, lambda obs: np.full(2, 5), 10, num_envs=2, env=_factory)
    assert len(buffer) == 0
    assert ClosingEnv.closed == 4


def test_bad_targets_policies_and_envs() -> None:
    buffer = ReplayBuffer(10, state_dim=3, action_dim=1, hidden_dim=0)
    with pytest.raises(SpecMismatchError, match="state_dim=3"):
        warm(buffer, "random", 5, env=ENV)
    ok = ReplayBuffer(10, state_dim=4, action_dim=1, hidden_dim=0)
    with pytest.raises(InvalidArgumentError, match="env is required"):
        warm(ok, "random", 5)
    with pytest.raises(InvalidArgumentError, match="not a registered Gymnasium environment"):
        warm(ok, "random", 5, env="NoSuchEnv-v9")
    with pytest.raises(InvalidArgumentError, match="policy 'greedy' is not understood"):
        warm(ok, "greedy", 5, env=ENV)
    with pytest.raises(InvalidArgumentError, match="num_envs must be an int >= 1"):
        warm(ok, "random", 5, env=ENV, num_envs=0)
    with pytest.raises(InvalidArgumentError, match="target must be a replaydb"):
        warm([], "random", 5, env=ENV)
    with pytest.raises(InvalidArgumentError, match=r"agent.env.spec.id"):
        warm(ok, SimpleNamespace(predict=lambda *a, **k: None), 5)
    table = Table(Spec({"observation": (4,), "mystery": ()}), 10)
    with pytest.raises(SpecMismatchError, match=r"\['mystery'\] cannot be filled"):
        warm(table, "random", 5, env=ENV)
    assert len(ok) == 0


def test_progress_bar_is_quiet_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    buffer = ReplayBuffer(50, state_dim=4, action_dim=1, hidden_dim=0)
    warm(buffer, "random", 50, env=ENV, seed=0)
    assert capsys.readouterr().err == ""
    warm(buffer, "random", 50, env=ENV, seed=0, progress=True)  # already full: no bar
    buffer2 = ReplayBuffer(50, state_dim=4, action_dim=1, hidden_dim=0)
    warm(buffer2, "random", 50, env=ENV, seed=0, progress=True)
    assert "50/50" in capsys.readouterr().err


# ------------------------------------------------------------------ tables
def test_steps_layout_windows_cover_every_transition() -> None:
    table = Table(step_spec(ENV), 2000, sequence_length=2)
    stats = warm(table, "random", 2000, num_envs=4, env=ENV, seed=2, progress=False)
    f = table.storage.fields
    final = f["step_type"] == STEP_LAST
    assert int(final.sum()) == stats.episodes
    assert torch.equal(f["reward"][~final], torch.ones(int((~final).sum())))
    assert torch.equal(f["reward"][final], torch.zeros(stats.episodes))
    assert not bool(f["action"][final].any())
    # A final step holds the real final observation with its episode's end code.
    assert bool(_terminal(f["observation"][final & f["terminated"]]).all())
    assert torch.equal(table.storage.end[:2000] != 0, final)
    # Windows of two = transitions: every non-final row starts one, except each
    # env's trailing row whose successor has not been written yet.
    assert len(table) == 2000 - stats.episodes - 4
    for rows in _rows_by_stream(table).values():
        st = f["step_type"][rows]
        after_final = torch.cat([torch.tensor([True]), st[:-1] == STEP_LAST])
        assert torch.equal(st == 0, after_final)
    s = table.sample(256)
    assert s["observation"].shape == (256, 2, 4)
    assert bool((s["step_type"][:, 0] != STEP_LAST).all())
    ended = s["step_type"][:, 1] == STEP_LAST
    assert torch.equal(s["terminated"][:, 0] | s["truncated"][:, 0], ended)


def test_transitions_layout_and_seeded_tables() -> None:
    spec = Spec(
        {
            "observation": ((4,), torch.float32),
            "action": ((), torch.int64),
            "reward": ((), torch.float32),
            "next_observation": ((4,), torch.float32),
            "done": ((), torch.bool),
        }
    )
    tables = []
    for _ in range(2):
        t = Table(spec, 500)
        warm(t, "random", 500, num_envs=2, env=ENV, seed=11, progress=False)
        tables.append(t)
    a, b = tables[0].state_dict(), tables[1].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith("sampler."))
    f = tables[0].storage.fields
    assert bool(_terminal(f["next_observation"][f["done"]]).all())


def test_collector_runs_stitch_without_gaps() -> None:
    """Three collects of 50 rows store exactly what one collect of 150 does."""
    out = []
    for chunks in ([150], [50, 50, 50], [7, 100, 43]):
        table = Table(step_spec(ENV), 200, sampler=Uniform(seed=0), sequence_length=2)
        with Collector(table, "random", num_envs=3, env=ENV, seed=5) as c:
            for n in chunks:
                c.collect(n, progress=False)
        out.append(table.state_dict())
    for other in out[1:]:
        for k in out[0]:
            assert torch.equal(out[0][k], other[k]), k


def test_collector_close_is_idempotent_and_final() -> None:
    table = Table(step_spec(ENV), 20, sequence_length=2)
    c = Collector(table, "random", env=ENV, num_envs=1)
    c.close()
    c.close()
    with pytest.raises(RuntimeError, match="closed"):
        c.collect(1)


# ---------------------------------------------------------------- policies
def test_load_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_policies.py").write_text(
        textwrap.dedent(
            """
            import numpy as np

            def make(observation_space, action_space):
                return lambda obs: np.zeros(obs.shape[0], dtype=np.int64)

            NOT_CALLABLE = 3

            def bad(observation_space, action_space):
                return 42

            def boom(observation_space, action_space):
                raise KeyError("no weights file")
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    space = gym.spaces.Discrete(2)
    assert callable(load_policy("my_policies:make", space, space))
    for path, msg in [
        ("nodots", "must be 'random' or 'package.module:callable'"),
        ("no_such_module_xyz:make", "does not import"),
        ("my_policies:missing", "has no attribute 'missing'"),
        ("my_policies:NOT_CALLABLE", "expected a callable factory"),
        ("my_policies:bad", "the factory returned a int"),
        ("my_policies:boom", "raised KeyError: 'no weights file'"),
    ]:
        with pytest.raises(InvalidArgumentError, match=msg):
            load_policy(path, space, space)
    sys.modules.pop("my_policies", None)


# ---------------------------------------------------------------- populate
def test_populate_writes_the_checkpoint_layout(tmp_path: Path) -> None:
    runs = []
    result = populate(
        ENV,
        out=tmp_path,
        buffer_name="starter",
        capacity=500,
        steps_per_run=100,
        num_runs=3,
        num_envs=4,
        seed=0,
        progress=False,
        on_run=lambda run, stats, ckpt: runs.append((run, stats.rows)),
    )
    assert runs == [(1, 100), (2, 200), (3, 300)]
    assert result.frames == 300
    assert result.path == tmp_path / "starter"
    assert list_checkpoints(result.path) == [result.checkpoint]  # only the newest is kept
    tables, manifest = read_checkpoint(result.path)
    table = tables[TABLE_NAME]
    assert table.num_steps == 300
    assert table.capacity == 500
    assert table.sequence_length == 2
    assert table.sampler.config() == {"type": "Uniform", "seed": 0}
    assert list(table.spec)[:5] == ["observation", "action", "reward", "terminated", "truncated"]
    assert table.spec["terminated"].dtype == torch.bool
    extra = manifest["extra"]
    assert extra["layout"] == LAYOUT
    assert extra["env"] == ENV
    assert extra["policy"] == "random"
    assert extra["runs"] == 3
    assert extra["seed"] == 0
    assert extra["episode_returns"] == result.episode_returns
    with pytest.raises(InvalidArgumentError, match="already holds a buffer"):
        populate(ENV, out=tmp_path, buffer_name="starter", capacity=500, progress=False)
    again = populate(
        ENV,
        out=tmp_path,
        buffer_name="starter",
        capacity=500,
        steps_per_run=50,
        num_runs=1,
        seed=0,
        force=True,
        progress=False,
    )
    assert list_checkpoints(again.path) == [again.checkpoint]
    assert read_checkpoint(again.path)[0][TABLE_NAME].num_steps == 50


def test_populate_rejects_bad_numbers_and_paths(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidArgumentError, match="exceeds capacity"):
        populate(ENV, out=tmp_path, capacity=10, steps_per_run=10, num_runs=2)
    with pytest.raises(InvalidArgumentError, match="is a file, not a directory"):
        populate(ENV, out=tmp_path / "file")
    with pytest.raises(InvalidArgumentError, match="plain directory name"):
        populate(ENV, out=tmp_path, buffer_name="a/b")
    with pytest.raises(InvalidArgumentError, match="steps_per_run must be an int >= 1"):
        populate(ENV, out=tmp_path, steps_per_run=0)
    with pytest.raises(InvalidArgumentError, match="not a registered"):
        populate("Nope-v0", out=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_populate_keeps_completed_runs_when_the_disk_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import replaydb.checkpoint as ckpt

    real = ckpt.write_checkpoint
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Path:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(ckpt, "write_checkpoint", flaky)
    with pytest.raises(OSError, match="No space left"):
        populate(ENV, out=tmp_path, capacity=100, steps_per_run=20, num_runs=4, progress=False)
    tables, manifest = read_checkpoint(tmp_path / "replay_buffer")
    assert manifest["extra"]["runs"] == 2
    assert tables[TABLE_NAME].num_steps == 40


def test_warm_fills_tables_and_agents_on_any_device(device: torch.device) -> None:
    table = Table(step_spec(ENV), 300, sequence_length=2, device=device)
    warm(table, "random", 300, num_envs=2, env=ENV, seed=0, progress=False)
    assert table.sample(4)["observation"].device.type == device.type
    agent = CountingAgent()
    agent.device = device
    buffer = ReplayBuffer(200, state_dim=4, action_dim=1, hidden_dim=1, device=device)
    warm(buffer, agent, 200, num_envs=2, seed=0, progress=False)
    assert len(buffer) == 200
    assert int(buffer.table.storage.fields["hiddens"].min()) == 1


COLLECT_SRC = Path(__file__).resolve().parents[1] / "src" / "replaydb" / "collect"


def test_collect_never_imports_the_buffer_package() -> None:
    # ReplayBuffer.warm imports replaydb.collect; the other direction would be a cycle.
    import ast

    found = []
    for path in sorted(COLLECT_SRC.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            if isinstance(node, ast.ImportFrom) and node.module == "replaydb":
                names = [f"replaydb.{a.name}" for a in node.names]
            bad = [n for n in names if n.startswith("replaydb.buffer")]
            found += [f"{path.name}:{node.lineno} imports {n}" for n in bad]
    assert found == []
    assert len(list(COLLECT_SRC.glob("*.py"))) >= 7


def test_collect_modules_stay_small() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in COLLECT_SRC.glob("*.py")}
    assert sizes and max(sizes.values()) <= 600, sizes


def test_a_velora_buffer_still_takes_the_velora_layout() -> None:
    buffer = ReplayBuffer(50, state_dim=4, action_dim=1, hidden_dim=0)
    warm(buffer, "random", 20, num_envs=2, env=ENV, seed=0, progress=False)
    assert len(buffer) == 20
    done = buffer.table.storage.fields["dones"][:20]
    assert done.dtype == torch.float32 and done.shape == (20, 1)
    with pytest.raises(InvalidArgumentError, match="target must be a replaydb"):
        warm(SimpleNamespace(table=None), "random", 5, env=ENV)
    with pytest.raises(InvalidArgumentError, match="target must be a replaydb"):
        warm(SimpleNamespace(table=Table(step_spec(ENV), 10)), "random", 5, env=ENV)
