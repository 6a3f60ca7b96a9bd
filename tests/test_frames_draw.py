"""The frame-stack short path's draw and its samples' lazily made item columns.

``_sampling._sample_stacked`` writes the uniform draw in place into a slots tensor
it keeps (``random_``, which is what ``torch.randint`` does on a new tensor), so
the sampler's generator must advance exactly as on the general path, through
checkpoints too. Its samples (``_frames.StackSample``) make the item columns into
tensors when first read, and pickle and copy as plain ``Sample`` objects.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from replaydb import Table, _kernels, _sampling, load_table, save_table
from replaydb._frames import StackSample
from replaydb.table import Sample
from test_frames_sample import SPEC, assert_same, fill, make

needs_numba = pytest.mark.skipif(_kernels.get() is None, reason="numba not installed")


@needs_numba
@pytest.mark.parametrize("max_times", [None, 2])
def test_the_generator_advances_as_on_the_general_path(max_times: int | None) -> None:
    kw = {"frame_stack": {"img": 3}, "max_times_sampled": max_times, "capacity": 40}
    fused, plain = make(True, **kw), make(False, **kw)
    for t in (fused, plain):
        fill(t, 70, 2, 1)  # wrapped: some slots of the first lap are overwritten
    assert _sampling._stacked(fused) is not None
    for b in (1, 7, 7, 32, 3, 7):
        if plain.info().size == 0:
            break
        assert_same(fused.sample(b), plain.sample(b))
        fs, ps = fused.sampler.generator.get_state(), plain.sampler.generator.get_state()
        assert torch.equal(fs, ps)
    assert torch.equal(fused._items, plain._items)


@needs_numba
def test_a_restored_sampler_draws_the_same_samples_again() -> None:
    table = make(True, frame_stack={"img": 2}, sequence_length=2, pad=True)
    fill(table, 50, 3, 2)
    table.sample(5)
    state = {k: v.clone() for k, v in table.sampler.state_dict().items()}
    first = [table.sample(b) for b in (4, 9, 4)]
    table.sampler.load_state_dict(state)
    again = [table.sample(b) for b in (4, 9, 4)]
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a.keys, b.keys)
        assert torch.equal(a["img"], b["img"])
        assert torch.equal(a.mask, b.mask)  # type: ignore[arg-type]


@needs_numba
def test_a_saved_table_samples_what_the_original_samples(tmp_path: Path) -> None:
    table = make(True, frame_stack={"img": (3, "zeros")})
    fill(table, 45, 2, 7)
    table.sample(6)
    save_table(table, tmp_path / "t.rdb")
    loaded = load_table(tmp_path / "t.rdb")
    assert _sampling._stacked(loaded) is not None
    for b in (3, 8):
        assert_same(loaded.sample(b), table.sample(b))


@needs_numba
def test_item_columns_are_made_on_first_read_and_kept() -> None:
    table = make(True, sequence_length=2, frame_stack={"img": 2})
    fill(table, 40, 2, 3)
    s = table.sample(5)
    assert isinstance(s, StackSample) and isinstance(s, Sample)
    assert len(s) == 5
    assert s.keys is s.keys and s.ends is s.ends
    assert s.mask is None  # unpadded windows
    assert s.ends is not None and s.ends.shape == (5, 2)
    assert torch.equal(s.weights, torch.ones(5))
    size = table.info().size
    assert torch.equal(s.probabilities, torch.full((5,), 1 / size, dtype=torch.float64))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.keys = torch.zeros(5, dtype=torch.int64)  # type: ignore[misc]
    single = make(True, frame_stack={"img": 2})
    fill(single, 20, 1, 0)
    one = single.sample(3)
    assert one.ends is None and one.mask is None
    assert "Sample(data=" in repr(one)


@needs_numba
def test_a_stack_sample_pickles_and_copies_as_a_plain_sample() -> None:
    table = make(True, sequence_length=2, pad=True, frame_stack={"img": 3})
    fill(table, 40, 2, 5)
    s = table.sample(4)
    for other in (pickle.loads(pickle.dumps(s)), copy.copy(s), copy.deepcopy(s)):
        assert type(other) is Sample
        assert_same(other, s)
    changed = dataclasses.replace(s, keys=s.keys + 1)
    assert torch.equal(changed.keys, s.keys + 1)
    assert torch.equal(changed["img"], s["img"]) and changed.mask is not None


@needs_numba
def test_the_kept_slots_do_not_leak_into_samples() -> None:
    table = make(True, frame_stack={"img": 2}, max_times_sampled=1, capacity=30)
    fill(table, 30, 1, 4)
    a = table.sample(4)
    keys = a.keys.clone()
    b = table.sample(4)  # refills the kept slots tensor
    assert torch.equal(a.keys, keys)
    assert not set(keys.tolist()) & set(b.keys.tolist())  # sampled once, then removed
    assert table.info().size == 30 - len(set(keys.tolist())) - len(set(b.keys.tolist()))


def test_without_numba_the_general_path_samples() -> None:
    _kernels.use(False)
    try:
        table = Table(SPEC, 20, frame_stack={"img": 2})
    finally:
        _kernels.use(True)
    fill(table, 10, 1, 0)
    assert _sampling._stacked(table) is None
    assert type(table.sample(3)) is Sample


CACHED = """
import torch
from replaydb import Spec, Table, _frames
t = Table(Spec({"obs": ((4, 4), "uint8")}), 20, frame_stack={"obs": 3})
t.extend({"obs": torch.zeros(12, 4, 4, dtype=torch.uint8)})
t.sample(2)
stats = _frames._kernel().sample.stats
print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
"""


@needs_numba
@pytest.mark.slow
def test_a_new_process_finds_the_compiled_pass_in_numbas_cache(tmp_path: Path) -> None:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [
        subprocess.run(
            [sys.executable, "-c", CACHED], env=env, capture_output=True, text=True, check=True
        ).stdout.split()
        for _ in range(2)
    ]
    assert runs[0] == ["0", "1"]  # compiled and saved
    assert runs[1] == ["1", "0"]  # loaded: a closure cell would make every process miss
