"""Front ends touch only Table's public verbs (docs/architecture.md).

The core modules (spec, storage, sum tree, samplers, rate limiters, table) keep their
state private; every front end (the Velora buffer, the manager and observer, datasets,
checkpoints, the CLI, servers, Ray, collectors and replaydb.reverb) goes through the
public verbs. This test reads the sources and fails on the two ways around them: a
private name imported from another module, and a core object's private attribute read
from a front end.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "replaydb"
CORE = (
    "spec.py",
    "nest.py",
    "storage/__init__.py",
    "storage/_memory.py",
    "storage/_rings.py",
    "storage/_preflight.py",
    "storage/_disk.py",
    "_links.py",
    "_devices.py",
    "sum_tree.py",
    "_tree_kernels.py",
    "_huge_pages.py",
    "samplers/__init__.py",
    "samplers/_base.py",
    "samplers/_uniform.py",
    "samplers/_prioritized.py",
    "samplers/_selectors.py",
    "rate_limiters.py",
    "table.py",
    "_items.py",
    "_waiting.py",
    "_frames.py",
    "_shared_rows.py",
    "_table_persist.py",
    "_table_frontends.py",
    "_table_checks.py",
    "_sampling.py",
    "_table_state.py",
    "_records.py",
    "_validate.py",
    "_constants.py",
    "_casting.py",
    "_rows.py",
    "_row_kernels.py",
    "_row_direct.py",
    "_row_kernels_nb.py",
)
# namedtuple API, public despite the underscore
NAMEDTUPLE = {"_fields", "_asdict", "_replace", "_make", "_field_defaults"}


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def _front_ends() -> list[Path]:
    core = {SRC / name for name in (*CORE, "_kernels.py", "errors.py")}
    return [p for p in _modules() if p not in core]


def _core_private_names() -> set[str]:
    names: set[str] = set()
    for name in CORE:
        tree = ast.parse((SRC / name).read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                names.add(node.attr)
    return names


def test_the_rule_sees_the_core_state() -> None:
    names = _core_private_names()
    assert {"_cond", "_size"} <= names, names


@pytest.mark.parametrize("path", _front_ends(), ids=lambda p: str(p.relative_to(SRC)))
def test_front_end_uses_public_verbs_only(path: Path) -> None:
    private = _core_private_names()
    tree = ast.parse(path.read_text())
    # A subpackage's modules share private helpers among themselves (replaydb.ray._shard
    # for replaydb.ray.server); only imports from outside the subpackage count.
    parts = path.relative_to(SRC).parts
    own = "replaydb." + parts[0] + "." if len(parts) > 1 else None
    found: list[str] = []
    for node in ast.walk(tree):
        module = node.module or "" if isinstance(node, ast.ImportFrom) else ""
        if (
            isinstance(node, ast.ImportFrom)
            and module.startswith("replaydb")
            and not (own and (module + ".").startswith(own))
        ):
            found += [
                f"line {node.lineno}: imports {a.name} from {node.module}"
                for a in node.names
                if a.name.startswith("_") and not a.name.startswith("__")
            ]
        if (
            isinstance(node, ast.Attribute)
            and node.attr in private - NAMEDTUPLE
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            found.append(f"line {node.lineno}: reads .{node.attr} of {ast.unparse(node.value)}")
    assert not found, f"{path.name} reaches around Table:\n" + "\n".join(found)
