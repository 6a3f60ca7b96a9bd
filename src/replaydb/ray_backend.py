"""Deprecated: the Ray backend moved to :mod:`replaydb.ray`; this alias goes in the next release.

Example:
    >>> from replaydb.ray import RayServer  # instead of replaydb.ray_backend
"""

from __future__ import annotations

import warnings

from replaydb.ray import RayClient, RayServer, load_serve_config, serve_command

__all__ = ["RayClient", "RayServer", "load_serve_config", "serve_command"]

warnings.warn(
    "replaydb.ray_backend is deprecated and will be removed in the next release; "
    "import RayServer, RayClient, load_serve_config and serve_command from replaydb.ray",
    DeprecationWarning,
    stacklevel=2,
)
