"""The public surface is pinned: adding or removing a name is a deliberate change."""

from __future__ import annotations

import replaydb

EXPECTED = [
    "BatchExperience",
    "CheckpointError",
    "Client",
    "ClosedError",
    "Collector",
    "Dataset",
    "Field",
    "Fifo",
    "InvalidArgumentError",
    "Lifo",
    "MaxHeap",
    "MinHeap",
    "MinSize",
    "MissingDependencyError",
    "NStepTargets",
    "NotEnoughDataError",
    "Prioritized",
    "Queue",
    "RateLimiter",
    "RateLimiterTimeout",
    "ReplayBuffer",
    "ReplayBufferManager",
    "ReplayError",
    "Sample",
    "SampleInfo",
    "SampleToInsertRatio",
    "Sampler",
    "Server",
    "Spec",
    "SpecMismatchError",
    "Stack",
    "StepObserver",
    "Storage",
    "SumTree",
    "Table",
    "TableInfo",
    "Uniform",
    "WouldBlockForeverError",
    "__version__",
    "load_table",
    "nstep_returns",
    "populate",
    "save_table",
    "warm",
]


def test_all_is_pinned_and_sorted() -> None:
    assert replaydb.__all__ == EXPECTED
    assert replaydb.__all__ == sorted(replaydb.__all__)


def test_every_public_name_resolves_and_is_documented() -> None:
    for name in replaydb.__all__:
        obj = getattr(replaydb, name)
        if name != "__version__":
            assert obj.__doc__, f"{name} has no docstring"


def test_import_has_no_optional_dependencies() -> None:
    import subprocess
    import sys

    code = (
        "import sys, replaydb; "
        "bad = [m for m in ('ray', 'gymnasium', 'tensorflow', 'matplotlib') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
