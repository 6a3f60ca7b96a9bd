"""The compiled kernels are found in numba's disk cache by every new process.

numba keys a cached function by its code and the values it closes over; a
compiled function that closes over another one (a dispatcher) gets a new key in
every process, so it compiles again (about a second) and leaves one more cache
file each time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from replaydb import _kernels

pytestmark = pytest.mark.skipif(_kernels.get() is None, reason="numba is not installed")

SRC = Path(__file__).resolve().parents[1] / "src"

SCRIPT = """
import time, torch
from replaydb import ReplayBuffer, Spec, Table
from replaydb.samplers import Prioritized
t = Table(Spec({"x": (4,)}), 1000, sampler=Prioritized(seed=0))
t.extend({"x": torch.zeros(100, 4)})
buf = ReplayBuffer.prioritized(1000, 3, 1, 0, seed=0)
buf.add_multi(torch.ones(300, 3), torch.zeros(300), torch.ones(300), torch.ones(300, 3),
              torch.zeros(300))
start = time.perf_counter()
for _ in range(3):
    s = t.sample(32)
    t.update_priorities(s.keys, torch.rand(32) + 0.1)
    t.update_priorities(s.keys.numpy(), (torch.rand(32) + 0.1).double().numpy())
    b = buf.sample(32)
    buf.update_priorities(b.keys, torch.rand(32, 1) + 0.1)
print(time.perf_counter() - start)
"""


def test_no_kernel_closes_over_another_compiled_function() -> None:
    from numba.core.registry import CPUDispatcher

    kernels = _kernels.get()
    assert kernels is not None
    for name, fn in vars(kernels).items():
        cells = fn.py_func.__closure__ or ()
        held = [c.cell_contents for c in cells if isinstance(c.cell_contents, CPUDispatcher)]
        assert not held, f"kernel {name} closes over compiled {held}: it would miss the cache"


def _run(cache: Path) -> float:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(SRC)}
    env.pop("REPLAYDB_NUMBA", None)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_second_process_loads_the_prioritized_kernels_from_the_cache(tmp_path: Path) -> None:
    first = _run(tmp_path)  # compiles and writes the cache
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert any("prio_take" in f for f in files)
    for _ in range(2):
        seconds = _run(tmp_path)
        assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == files
        # Relative to the compiling run, so that load on the machine scales both:
        # a compile takes about a second, a load from the cache milliseconds.
        assert seconds < first / 2
