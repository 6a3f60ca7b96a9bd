"""Reverb 0.14's Python API on replaydb, for TF-Agents and sbsim (opt-in alias of ``reverb``).

``import replaydb.reverb; replaydb.reverb.install()`` (before TF-Agents is
imported) makes ``import reverb`` and ``import reverb.<submodule>`` resolve to this
package, so TF-Agents' ``ReverbReplayBuffer``, its observers and sbsim's replay
buffer manager run unchanged, in-process, without dm-reverb. ``install`` refuses
to shadow an installed dm-reverb unless asked with ``replace_existing=True``.

This is the only replaydb package that imports TensorFlow; ``import replaydb``
does not import it.

The surface (Reverb's names): :class:`Table` (+ ``queue``/``stack``),
:mod:`selectors`, :mod:`rate_limiters`, :class:`Server`, :class:`Client`,
:class:`Writer`, :class:`TrajectoryWriter`, :class:`TrajectoryColumn`,
:class:`TFClient`, :class:`TrajectoryDataset`, :class:`ReplaySample`,
:class:`SampleInfo`, the errors, and ``platform.checkpointers_lib``.
Out of scope: the gRPC protocol (clients must live in the server's process),
``StructuredWriter``, pattern and timestep datasets, table extensions.
"""

from __future__ import annotations

import importlib.util
import sys
import types

from replaydb.errors import InvalidArgumentError
from replaydb.reverb import (
    checkpointers,
    client,
    errors,
    platform,
    rate_limiters,
    replay_sample,
    selectors,
    server,
    structured_writer,
    tables,
    tf_client,
    trajectory_dataset,
    trajectory_writer,
)
from replaydb.reverb.client import Client, Writer
from replaydb.reverb.errors import DeadlineExceededError, ReverbError
from replaydb.reverb.platform.default import checkpointers as _default_checkpointers
from replaydb.reverb.replay_sample import ReplaySample, SampleInfo
from replaydb.reverb.server import Server
from replaydb.reverb.structured_writer import PatternDataset
from replaydb.reverb.tables import Table
from replaydb.reverb.tf_client import TFClient
from replaydb.reverb.trajectory_dataset import TrajectoryDataset
from replaydb.reverb.trajectory_writer import TrajectoryColumn, TrajectoryWriter

__all__ = [
    "Client",
    "PatternDataset",
    "DeadlineExceededError",
    "ReplaySample",
    "ReverbError",
    "SampleInfo",
    "Server",
    "TFClient",
    "Table",
    "TrajectoryColumn",
    "TrajectoryDataset",
    "TrajectoryWriter",
    "Writer",
    "checkpointers",
    "errors",
    "install",
    "installed",
    "platform",
    "rate_limiters",
    "selectors",
    "structured",
    "structured_writer",
    "uninstall",
]

item_selectors = selectors
structured = structured_writer
reverb_types = tables

#: ``reverb`` module names and the modules they resolve to after :func:`install`.
_ALIASES: dict[str, types.ModuleType] = {
    "reverb.client": client,
    "reverb.errors": errors,
    "reverb.item_selectors": selectors,
    "reverb.platform": platform,
    "reverb.platform.checkpointers_lib": platform.checkpointers_lib,
    "reverb.platform.default": sys.modules["replaydb.reverb.platform.default"],
    "reverb.platform.default.checkpointers": _default_checkpointers,
    "reverb.rate_limiters": rate_limiters,
    "reverb.replay_sample": replay_sample,
    "reverb.reverb_types": tables,
    "reverb.server": server,
    "reverb.structured_writer": structured_writer,
    "reverb.tf_client": tf_client,
    "reverb.trajectory_dataset": trajectory_dataset,
    "reverb.trajectory_writer": trajectory_writer,
}
_saved: dict[str, types.ModuleType] = {}


def installed() -> bool:
    """Whether ``import reverb`` resolves to this package now."""
    return sys.modules.get("reverb") is sys.modules[__name__]


def install(replace_existing: bool = False) -> None:
    """Make ``import reverb`` (and its submodules) resolve to :mod:`replaydb.reverb`.

    Call it before anything imports ``reverb`` (e.g. before TF-Agents' replay
    buffers). Calling it again is a no-op.

    Args:
        replace_existing: Shadow an installed or already-imported dm-reverb. Without
            it, an installed dm-reverb makes this raise instead.

    Raises:
        InvalidArgumentError: If dm-reverb is installed or imported and
            ``replace_existing`` is False.

    Example:
        >>> import replaydb.reverb; replaydb.reverb.install()
        >>> import reverb; reverb.Table is replaydb.reverb.Table
        True
    """
    if installed():
        return
    current = sys.modules.get("reverb")
    real = current is not None or importlib.util.find_spec("reverb") is not None
    if real and not replace_existing:
        where = getattr(current, "__file__", None) or getattr(
            importlib.util.find_spec("reverb"), "origin", "?"
        )
        raise InvalidArgumentError(
            f"dm-reverb is installed ({where}); replaydb.reverb will not shadow it silently. "
            "Uninstall dm-reverb, or call replaydb.reverb.install(replace_existing=True) to "
            "use replaydb.reverb in its place"
        )
    for name in ["reverb", *_ALIASES]:
        if name in sys.modules:
            _saved[name] = sys.modules[name]
    for name in [n for n in sys.modules if n.startswith("reverb.") and n not in _ALIASES]:
        _saved[name] = sys.modules.pop(name)
    sys.modules["reverb"] = sys.modules[__name__]
    sys.modules.update(_ALIASES)


def uninstall() -> None:
    """Undo :func:`install`: ``reverb`` names resolve as before it."""
    if not installed():
        return
    for name in ["reverb", *_ALIASES]:
        sys.modules.pop(name, None)
    sys.modules.update(_saved)
    _saved.clear()
