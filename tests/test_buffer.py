"""The Velora-compatible ReplayBuffer: API, fixes over Velora, files, and a state machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from replaydb import BatchExperience, ReplayBuffer
from replaydb.errors import CheckpointError

KEYS = ("states", "actions", "rewards", "next_states", "dones", "hiddens")


def snapshot(buffer: ReplayBuffer) -> dict[str, object]:
    return {
        "meta": buffer.metadata(),
        **{k: v.clone() for k, v in buffer.state_dict().items()},
    }


def same(a: dict[str, object], b: dict[str, object]) -> bool:
    return a["meta"] == b["meta"] and all(
        torch.equal(a[k], b[k])  # type: ignore[arg-type]
        for k in KEYS
    )


# ---------------------------------------------------------------- seed docs
def test_seed_doc_examples_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    buffer = ReplayBuffer(capacity=100_000, state_dim=4, action_dim=1, hidden_dim=8, device="cpu")
    exp = (torch.zeros((1, 4)), torch.tensor(1.0), 2.0, torch.zeros((1, 4)), False)
    buffer.add(*exp)
    buffer.add(torch.zeros((1, 4)), torch.tensor(1.0), 2.0, torch.zeros((1, 4)), False)
    exp5 = (
        torch.zeros((5, 4)),
        torch.ones((5, 1)),
        torch.ones((5, 1)),
        torch.zeros((5, 4)),
        torch.zeros(5, 1),
    )
    buffer.add_multi(*exp5)
    assert len(buffer) == 7
    batch = buffer.sample(batch_size=7)
    assert isinstance(batch, BatchExperience)
    gamma, target_q = 0.99, torch.ones(7, 1)
    target_q = batch.rewards + (1 - batch.dones) * gamma * target_q
    assert target_q.shape == (7, 1)

    saved = ReplayBuffer(100, 11, 3, 8, device="cpu")
    saved.save("checkpoints/nf/CartPole_100", prefix="buffer_")
    root = Path("checkpoints/nf/CartPole_100")
    with Path(root, "buffer_metadata.json").open("r") as f:
        metadata = json.load(f)
    loaded = ReplayBuffer.load(Path(root, "buffer_state"), metadata)
    assert loaded.metadata() == {
        "capacity": 100,
        "state_dim": 11,
        "action_dim": 3,
        "hidden_dim": 8,
        "position": 0,
        "size": 0,
        "device": "cpu",
    }


def test_six_argument_add_and_full_example() -> None:
    state_dim, hidden = 4, 20
    buffer = ReplayBuffer(1000, state_dim, 1, hidden)
    buffer.add(
        torch.zeros(state_dim),
        torch.tensor(1.0),
        2.0,
        torch.zeros(state_dim),
        False,
        torch.zeros(hidden),
    )
    buffer.add_multi(
        torch.zeros((3, state_dim)),
        torch.ones((3, 1)),
        torch.ones((3, 1)),
        torch.zeros((3, state_dim)),
        torch.ones((3, 1)),
        torch.zeros((3, hidden)),
    )
    assert len(buffer) == 4
    batch = buffer.sample(batch_size=4)
    for name in KEYS:
        t = getattr(batch, name)
        assert t.dtype == torch.float32 and t.dim() == 2 and t.shape[0] == 4


def test_attributes_and_metadata_order() -> None:
    buffer = ReplayBuffer(10, 3, 2, 1)
    assert (buffer.capacity, buffer.state_dim, buffer.action_dim, buffer.hidden_dim) == (
        10,
        3,
        2,
        1,
    )
    assert buffer.device == torch.device("cpu")
    assert (buffer.position, buffer.size) == (0, 0)
    assert list(buffer.metadata()) == [
        "capacity",
        "state_dim",
        "action_dim",
        "hidden_dim",
        "position",
        "size",
        "device",
    ]
    assert list(buffer.state_dict()) == list(KEYS)
    assert buffer.config() == {
        "type": "ReplayBuffer",
        "capacity": 10,
        "state_dim": 3,
        "action_dim": 2,
        "hidden_dim": 1,
    }


# ------------------------------------------------------------------- inputs
@pytest.mark.parametrize(
    "state",
    [torch.arange(3.0), torch.arange(3.0).view(1, 3), np.arange(3.0), [0.0, 1.0, 2.0]],
    ids=["tensor", "row", "numpy", "list"],
)
def test_add_accepts_tensors_arrays_lists(state: object) -> None:
    buffer = ReplayBuffer(4, 3, 2, 2)
    buffer.add(state, [1, 2], 0.5, state, True, np.ones(2))
    row = {k: v[0] for k, v in buffer.state_dict().items()}
    assert torch.equal(row["states"], torch.arange(3.0))
    assert torch.equal(row["actions"], torch.tensor([1.0, 2.0]))
    assert row["rewards"].item() == 0.5 and row["dones"].item() == 1.0
    assert torch.equal(row["hiddens"], torch.ones(2))


def test_single_value_action_and_hidden_broadcast() -> None:
    buffer = ReplayBuffer(4, 2, 3, 2)
    buffer.add(torch.zeros(2), torch.tensor(1.0), 2.0, torch.zeros(2), False, 0.5)
    assert torch.equal(buffer.state_dict()["actions"][0], torch.ones(3))
    assert torch.equal(buffer.state_dict()["hiddens"][0], torch.full((2,), 0.5))


def test_add_multi_casts_and_reshapes() -> None:
    buffer = ReplayBuffer(10, 2, 1, 0)
    buffer.add_multi(
        np.ones((3, 2), dtype=np.float64),
        torch.tensor([0, 1, 2]),
        torch.tensor([1, 2, 3], dtype=torch.int32),
        torch.ones(3, 2, dtype=torch.float64),
        torch.tensor([True, False, True]),
    )
    sd = buffer.state_dict()
    assert sd["actions"][:3, 0].tolist() == [0.0, 1.0, 2.0]
    assert sd["rewards"][:3, 0].tolist() == [1.0, 2.0, 3.0]
    assert sd["dones"][:3, 0].tolist() == [1.0, 0.0, 1.0]
    assert all(v.dtype == torch.float32 for v in sd.values())


def test_add_multi_larger_than_capacity_keeps_newest_rows() -> None:
    buffer = ReplayBuffer(5, 1, 1, 0)
    n = 12
    buffer.add_multi(
        torch.arange(n, dtype=torch.float32).view(n, 1),
        torch.zeros(n),
        torch.arange(n),
        torch.zeros(n, 1),
        torch.zeros(n),
    )
    assert len(buffer) == 5
    kept = sorted(buffer.state_dict()["rewards"].view(-1).tolist())
    assert kept == [7.0, 8.0, 9.0, 10.0, 11.0]
    # Position is where the next row goes: after the newest one.
    assert buffer.state_dict()["rewards"][buffer.position - 1].item() == 11.0


def test_add_multi_zero_rows_is_a_no_op() -> None:
    buffer = ReplayBuffer(5, 2, 1, 0)
    buffer.add_multi(
        torch.zeros(0, 2), torch.zeros(0), torch.zeros(0), torch.zeros(0, 2), torch.zeros(0)
    )
    assert len(buffer) == 0 and buffer.position == 0


def test_requires_grad_inputs_never_enter_autograd() -> None:
    buffer = ReplayBuffer(8, 2, 1, 1)
    x = torch.ones(2, requires_grad=True)
    buffer.add(x * 2, torch.tensor(1.0, requires_grad=True), 1.0, x, False, x[:1])
    buffer.add_multi(
        x.expand(3, 2) * 1,
        torch.ones(3, requires_grad=True),
        torch.ones(3),
        x.expand(3, 2),
        torch.zeros(3),
        torch.ones(3, 1, requires_grad=True),
    )
    assert all(not v.requires_grad and v.grad_fn is None for v in buffer.state_dict().values())
    batch = buffer.sample(4)
    assert all(getattr(batch, k).grad_fn is None for k in KEYS)


# ------------------------------------------------------------------- errors
def test_capacity_must_be_positive() -> None:
    for bad in (0, -5, 1.5, True):
        with pytest.raises(ValueError, match="capacity must be an int >= 1"):
            ReplayBuffer(bad, 2, 1, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="state_dim"):
        ReplayBuffer(10, 0, 1, 0)


def test_shape_mismatch_names_field_and_shapes() -> None:
    buffer = ReplayBuffer(10, 11, 3, 8)
    before = snapshot(buffer)
    with pytest.raises(
        ValueError, match=r"state: expected shape \(11,\) or \(1, 11\), got \(1, 4\)"
    ):
        buffer.add(torch.zeros((1, 4)), torch.tensor(1.0), 2.0, torch.zeros((1, 4)), False)
    with pytest.raises(ValueError, match=r"next_state: expected shape"):
        buffer.add(torch.zeros(11), 1.0, 2.0, torch.zeros(10), False)
    with pytest.raises(ValueError, match=r"action: expected shape \(3,\)"):
        buffer.add(torch.zeros(11), torch.zeros(2), 2.0, torch.zeros(11), False)
    with pytest.raises(ValueError, match=r"reward"):
        buffer.add(torch.zeros(11), 1.0, torch.zeros(2), torch.zeros(11), False)
    with pytest.raises(ValueError, match=r"hidden"):
        buffer.add(torch.zeros(11), 1.0, 1.0, torch.zeros(11), False, torch.zeros(7))
    with pytest.raises(ValueError, match=r"state: expected a tensor, array or number"):
        buffer.add(object(), 1.0, 1.0, torch.zeros(11), False)
    assert same(before, snapshot(buffer))


@pytest.mark.parametrize("shaped", [False, True])
@pytest.mark.parametrize(
    ("arg", "value", "match"),
    [
        (2, "1", r"reward: expected numbers, got text \('1'\).*float\(reward\)"),
        (4, b"1", r"done: expected numbers, got text"),
        (1, "0", r"action: expected numbers, got text"),
        (2, np.array(["1"]), r"reward: expected numbers, got text \(a ndarray of dtype <U1\)"),
        (2, 1 + 2j, r"reward: complex values are not supported.*reward\.real"),
        (2, np.complex64(1), r"reward: complex values are not supported"),
        (2, np.array([1 + 2j]), r"reward: complex values .*a ndarray of dtype complex128"),
        (2, torch.tensor(1 + 2j), r"reward: complex tensors are not supported"),
        (0, torch.ones(2, dtype=torch.complex64), r"state: complex tensors .*state\.real"),
        (3, np.ones(2, dtype=np.complex64), r"next_state: complex values are not supported"),
    ],
)
def test_text_and_complex_inputs_are_refused_not_converted(
    arg: int, value: object, match: str, shaped: bool
) -> None:
    # numpy and torch would turn "1" into 1.0 and drop an imaginary part (with
    # a warning at most); a transition written so is silently not the user's.
    buffer = ReplayBuffer(4, (2,) if shaped else 2, 1, 0)
    buffer.add(torch.ones(2), 1.0, 1.0, torch.ones(2), False)
    before = snapshot(buffer)
    args: list[object] = [torch.zeros(2), 0.0, 0.5, torch.zeros(2), False]
    args[arg] = value
    with pytest.raises(ValueError, match=match):
        buffer.add(*args)
    batch: list[object] = [
        torch.zeros(3, 2),
        torch.zeros(3),
        torch.zeros(3),
        torch.zeros(3, 2),
        torch.zeros(3),
    ]
    if not isinstance(value, str | bytes | complex) and getattr(value, "ndim", 0) == 1:
        # the same kind of column for add_multi: 3 rows of it
        column = (
            np.stack([value] * 3) if isinstance(value, np.ndarray) else torch.stack([value] * 3)
        )
        batch[arg] = column if arg in (0, 3) else column[:, 0]
        with pytest.raises(ValueError, match=match.split(":")[0] + "s?:"):
            buffer.add_multi(*batch)
    assert same(before, snapshot(buffer))


def test_rejected_add_multi_leaves_buffer_unchanged() -> None:
    buffer = ReplayBuffer(6, 2, 1, 1)
    buffer.add_multi(
        torch.ones(6, 2),
        torch.ones(6),
        torch.ones(6),
        torch.ones(6, 2),
        torch.zeros(6),
        torch.ones(6, 1),
    )
    before = snapshot(buffer)
    with pytest.raises(ValueError, match=r"next_states: expected shape \(N, 2\), got \(3, 3\)"):
        buffer.add_multi(
            torch.zeros(3, 2), torch.zeros(3), torch.zeros(3), torch.zeros(3, 3), torch.zeros(3)
        )
    with pytest.raises(ValueError, match="dones has 2 rows but states has 3"):
        buffer.add_multi(
            torch.zeros(3, 2), torch.zeros(3), torch.zeros(3), torch.zeros(3, 2), torch.zeros(2)
        )
    with pytest.raises(ValueError, match="hiddens"):
        buffer.add_multi(
            torch.zeros(3, 2),
            torch.zeros(3),
            torch.zeros(3),
            torch.zeros(3, 2),
            torch.zeros(3),
            torch.zeros(3, 5),
        )
    assert same(before, snapshot(buffer))


def test_sample_needs_enough_experiences() -> None:
    buffer = ReplayBuffer(10, 2, 1, 0)
    buffer.add(torch.zeros(2), 0.0, 0.0, torch.zeros(2), False)
    with pytest.raises(
        ValueError,
        match=r"^Buffer does not contain enough experiences\. Available: 1, Requested: 2$",
    ):
        buffer.sample(2)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        buffer.sample(0)


def test_sample_is_uniform_over_stored_rows() -> None:
    buffer = ReplayBuffer(50, 1, 1, 0)
    buffer.add_multi(
        torch.arange(10.0).view(10, 1),
        torch.zeros(10),
        torch.arange(10.0),
        torch.zeros(10, 1),
        torch.zeros(10),
    )
    seen = torch.cat([buffer.sample(10).rewards.view(-1) for _ in range(1000)])
    counts = torch.bincount(seen.long(), minlength=10).double()
    assert counts.numel() == 10
    expected = seen.numel() / 10
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 40.0  # 9 degrees of freedom; p < 1e-5 beyond this


def test_import_first_never_fails() -> None:
    for code in ("import replaydb", "from replaydb import ReplayBuffer, BatchExperience"):
        subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- save/load
def fill(buffer: ReplayBuffer, n: int, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    s, a, h = buffer.state_dim, buffer.action_dim, buffer.hidden_dim
    buffer.add_multi(
        torch.randn(n, s, generator=g),
        torch.randn(n, a, generator=g),
        torch.randn(n, generator=g),
        torch.randn(n, s, generator=g),
        torch.rand(n, generator=g) < 0.1,
        torch.randn(n, h, generator=g),
    )


@pytest.mark.parametrize("n", [0, 7, 10, 23])
def test_save_load_round_trip_is_bit_exact(tmp_path: Path, n: int) -> None:
    buffer = ReplayBuffer(10, 3, 2, 4)
    fill(buffer, n)
    buffer.save(tmp_path / "run", prefix="x_")
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert files == ["x_metadata.json", "x_state.safetensors"]
    text = (tmp_path / "run" / "x_metadata.json").read_text()
    assert text == json.dumps(json.loads(text), indent=2)
    metadata = json.loads(text)
    for path in (tmp_path / "run" / "x_state", tmp_path / "run" / "x_state.safetensors"):
        loaded = ReplayBuffer.load(path, metadata)
        assert same(snapshot(buffer), snapshot(loaded))
    # Callable on an instance too, and both continue identically.
    again = buffer.load(tmp_path / "run" / "x_state", metadata)
    fill(buffer, 4, seed=1)
    fill(again, 4, seed=1)
    assert same(snapshot(buffer), snapshot(again))


def test_file_is_velora_layout(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    buffer = ReplayBuffer(6, 3, 2, 4)
    fill(buffer, 4)
    buffer.save(tmp_path)
    tensors = load_file(str(tmp_path / "buffer_state.safetensors"))
    assert sorted(tensors) == sorted(KEYS)
    assert tensors["states"].shape == (6, 3) and tensors["rewards"].shape == (6, 1)
    assert tensors["hiddens"].shape == (6, 4)
    assert all(t.dtype == torch.float32 for t in tensors.values())


def test_loads_a_file_written_the_velora_way(tmp_path: Path) -> None:
    """A file with no replaydb keys (as Velora writes it) loads, with device null."""
    from safetensors.torch import save_file

    cap = 5
    tensors = {
        "states": torch.randn(cap, 2),
        "actions": torch.randn(cap, 1),
        "rewards": torch.randn(cap, 1),
        "next_states": torch.randn(cap, 2),
        "dones": torch.zeros(cap, 1),
        "hiddens": torch.randn(cap, 3),
    }
    save_file(tensors, str(tmp_path / "buffer_state.safetensors"))
    meta = {
        "capacity": cap,
        "state_dim": 2,
        "action_dim": 1,
        "hidden_dim": 3,
        "position": 2,
        "size": cap,
        "device": None,
    }
    buffer = ReplayBuffer.load(tmp_path / "buffer_state", meta)
    assert buffer.device == torch.device("cpu")
    assert buffer.metadata()["position"] == 2 and len(buffer) == cap
    for k in KEYS:
        assert torch.equal(buffer.state_dict()[k], tensors[k])
    # The next add overwrites the oldest row, exactly where Velora would write.
    buffer.add(torch.zeros(2), 0.0, 42.0, torch.zeros(2), False)
    assert buffer.state_dict()["rewards"][2, 0].item() == 42.0


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"position": 10}, "position"),
        ({"size": 11}, "size"),
        ({"capacity": 0}, "capacity"),
        ({"state_dim": 4}, "says"),
        ({"hidden_dim": 2}, "says"),
        ({"size": 3, "position": 5}, "ring"),
        ({"capacity": "10"}, "capacity"),
    ],
)
def test_load_checks_file_against_metadata(
    tmp_path: Path, change: dict[str, object], match: str
) -> None:
    buffer = ReplayBuffer(10, 3, 2, 4)
    fill(buffer, 10)
    buffer.save(tmp_path)
    meta = json.loads((tmp_path / "buffer_metadata.json").read_text())
    meta.pop("state_sha256")
    meta.update(change)
    with pytest.raises(CheckpointError, match=match):
        ReplayBuffer.load(tmp_path / "buffer_state", meta)


def test_load_rejects_missing_keys_and_wrong_dtypes(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    meta = {
        "capacity": 4,
        "state_dim": 1,
        "action_dim": 1,
        "hidden_dim": 1,
        "position": 0,
        "size": 0,
        "device": "cpu",
    }
    good = {k: torch.zeros(4, 1) for k in KEYS}
    save_file({k: v for k, v in good.items() if k != "hiddens"}, str(tmp_path / "a.safetensors"))
    with pytest.raises(CheckpointError, match="holds tensors"):
        ReplayBuffer.load(tmp_path / "a", meta)
    save_file(
        {**good, "dones": torch.zeros(4, 1, dtype=torch.float64)}, str(tmp_path / "b.safetensors")
    )
    with pytest.raises(CheckpointError, match="dones"):
        ReplayBuffer.load(tmp_path / "b", meta)
    with pytest.raises(CheckpointError, match="missing"):
        ReplayBuffer.load(tmp_path / "b", {"capacity": 4})
    with pytest.raises(CheckpointError, match="no buffer state file"):
        ReplayBuffer.load(tmp_path / "nope", meta)


def test_truncated_or_corrupted_state_raises(tmp_path: Path) -> None:
    buffer = ReplayBuffer(50, 3, 2, 4)
    fill(buffer, 50)
    buffer.save(tmp_path)
    meta = json.loads((tmp_path / "buffer_metadata.json").read_text())
    path = tmp_path / "buffer_state.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="SHA-256"):
        ReplayBuffer.load(path, meta)
    meta.pop("state_sha256")  # as Velora's own metadata would be
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        ReplayBuffer.load(path, meta)
    corrupt = bytearray(data)
    corrupt[-10] ^= 0xFF
    path.write_bytes(bytes(corrupt))
    meta["state_sha256"] = "0" * 64
    with pytest.raises(CheckpointError, match="corrupt"):
        ReplayBuffer.load(path, meta)


def test_failed_save_leaves_previous_files_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer = ReplayBuffer(8, 2, 1, 1)
    fill(buffer, 3)
    buffer.save(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    fill(buffer, 3, seed=5)

    import safetensors.torch

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError, match="No space left"):
        buffer.save(tmp_path)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before  # no temporary files left, nothing replaced


def test_save_into_a_file_path_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        ReplayBuffer(4, 1, 1, 0).save(tmp_path / "f")


@pytest.mark.gpu
def test_cuda_buffer_round_trip(tmp_path: Path) -> None:
    buffer = ReplayBuffer(100, 3, 2, 4, device="cuda")
    fill(buffer, 150)
    buffer.add(torch.zeros(3, device="cuda"), torch.ones(2), 1.0, torch.zeros(3), True)
    batch = buffer.sample(32)
    assert batch.states.device.type == "cuda"
    buffer.save(tmp_path)
    meta = json.loads((tmp_path / "buffer_metadata.json").read_text())
    assert meta["device"].startswith("cuda")
    loaded = ReplayBuffer.load(tmp_path / "buffer_state", meta)
    assert same(snapshot(buffer), snapshot(loaded))
    cpu = ReplayBuffer.load(tmp_path / "buffer_state", meta, device="cpu")
    assert torch.equal(cpu.state_dict()["states"], buffer.state_dict()["states"].cpu())


# ------------------------------------------------------- state machine
class BufferMachine(RuleBasedStateMachine):
    """Random add/add_multi/sample/save/load against a list-based ring model."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(__import__("tempfile").mkdtemp())
        self.counter = 0

    @initialize(capacity=st.integers(1, 9))
    def setup(self, capacity: int) -> None:
        self.buffer = ReplayBuffer(capacity, 2, 1, 1)
        self.model: list[list[float] | None] = [None] * capacity
        self.pos = 0
        self.size = 0

    def _row(self) -> list[float]:
        self.counter += 1
        c = float(self.counter)
        return [c, -c, c / 2, c + 1, c + 2, float(self.counter % 2), c * 3]

    def _model_add(self, row: list[float]) -> None:
        self.model[self.pos] = row
        self.pos = (self.pos + 1) % len(self.model)
        self.size = min(self.size + 1, len(self.model))

    @rule()
    def add(self) -> None:
        r = self._row()
        self.buffer.add(torch.tensor(r[0:2]), r[2], r[3], torch.tensor(r[4:6]), bool(r[5]), [r[6]])
        self._model_add([*r[0:2], r[2], r[3], *r[4:6], float(bool(r[5])), r[6]])

    @rule(n=st.integers(0, 20))
    def add_multi(self, n: int) -> None:
        rows = [self._row() for _ in range(n)]
        t = torch.tensor(rows, dtype=torch.float32).view(n, 7)
        self.buffer.add_multi(t[:, 0:2], t[:, 2], t[:, 3], t[:, 4:6], t[:, 5] > 0, t[:, 6:7])
        for r in rows:
            self._model_add([*r[0:2], r[2], r[3], *r[4:6], float(r[5] > 0), r[6]])

    @rule()
    def bad_add(self) -> None:
        with pytest.raises(ValueError, match="state: expected shape"):
            self.buffer.add(torch.zeros(3), 0.0, 0.0, torch.zeros(2), False)

    @precondition(lambda self: self.size > 0)
    @rule(b=st.integers(1, 12))
    def sample(self, b: int) -> None:
        if b > self.size:
            with pytest.raises(ValueError, match="not contain enough"):
                self.buffer.sample(b)
            return
        batch = self.buffer.sample(b)
        stored = {tuple(r) for r in self.model if r is not None}
        got = torch.cat(
            [
                batch.states,
                batch.actions,
                batch.rewards,
                batch.next_states,
                batch.dones,
                batch.hiddens,
            ],
            dim=1,
        )
        for row in got.tolist():
            assert tuple(row) in stored

    @rule()
    def save_load(self) -> None:
        self.buffer.save(self.tmp)
        meta = json.loads((self.tmp / "buffer_metadata.json").read_text())
        self.buffer = ReplayBuffer.load(self.tmp / "buffer_state", meta)

    @invariant()
    def matches_model(self) -> None:
        if not hasattr(self, "buffer"):
            return
        assert len(self.buffer) == self.size
        assert self.buffer.position == self.pos
        sd = self.buffer.state_dict()
        flat = torch.cat([sd[k] for k in KEYS], dim=1)
        for i, row in enumerate(self.model):
            if row is not None:
                assert flat[i].tolist() == row


TestBufferMachine = BufferMachine.TestCase
TestBufferMachine.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
