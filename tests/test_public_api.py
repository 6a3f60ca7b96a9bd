"""The public surface is pinned: adding or removing a name is a deliberate change."""

from __future__ import annotations

import importlib
import sys

import pytest

import replaydb

EXPECTED = [
    "BatchExperience",
    "Client",
    "Collector",
    "Dataset",
    "Field",
    "NStepTargets",
    "ReplayBuffer",
    "ReplayBufferManager",
    "Sample",
    "SampleInfo",
    "Server",
    "Spec",
    "StepObserver",
    "Table",
    "TableInfo",
    "__version__",
    "errors",
    "load_table",
    "nstep_returns",
    "populate",
    "rate_limiters",
    "samplers",
    "save_table",
    "warm",
]


def test_all_is_pinned_and_sorted() -> None:
    assert replaydb.__all__ == EXPECTED
    assert replaydb.__all__ == sorted(replaydb.__all__)


def test_every_public_name_resolves_and_has_an_example() -> None:
    for name in replaydb.__all__:
        obj = getattr(replaydb, name)
        if name != "__version__":
            assert obj.__doc__, f"{name} has no docstring"
            assert "Example" in obj.__doc__, f"{name}'s docstring has no Example: section"


def test_family_members_have_examples() -> None:
    import replaydb.shared

    assert replaydb.shared.__all__ == ["RowSample", "SharedTable", "memory_table"]
    for module in (replaydb.errors, replaydb.rate_limiters, replaydb.samplers, replaydb.shared):
        for name in module.__all__:
            doc = getattr(module, name).__doc__ or ""
            assert doc, f"{module.__name__}.{name} has no docstring"


@pytest.mark.parametrize(
    ("name", "module"),
    [
        ("Uniform", "samplers"),
        ("MinSize", "rate_limiters"),
        ("CheckpointError", "errors"),
        ("SumTree", "sum_tree"),
        ("Storage", "storage"),
    ],
)
def test_moved_names_still_resolve_with_a_deprecation_warning(name: str, module: str) -> None:
    with pytest.warns(DeprecationWarning, match=rf"replaydb\.{module}\.{name}"):
        obj = getattr(replaydb, name)
    assert obj is getattr(importlib.import_module(f"replaydb.{module}"), name)


def test_unknown_names_are_attribute_errors() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        replaydb.Nope  # noqa: B018


def test_import_has_no_optional_dependencies() -> None:
    import subprocess
    import sys

    code = (
        "import sys, replaydb; "
        "bad = [m for m in ('ray', 'gymnasium', 'tensorflow', 'matplotlib') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("module", "names", "needs"),
    [
        ("replaydb.observer", ("StepObserver", "FIRST", "MID", "LAST"), None),
        ("replaydb.ray_backend", ("RayServer", "RayClient"), "ray"),
    ],
)
def test_deprecated_module_aliases_warn_and_still_work(
    module: str, names: tuple[str, ...], needs: str | None
) -> None:
    if needs is not None:
        pytest.importorskip(needs)
    sys.modules.pop(module, None)
    with pytest.warns(DeprecationWarning, match=rf"{module} is deprecated"):
        alias = importlib.import_module(module)
    for name in names:
        assert getattr(alias, name) is not None
