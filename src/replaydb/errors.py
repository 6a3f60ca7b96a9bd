"""Errors raised by replaydb.

Every error is a :class:`ReplayError` and also subclasses the built-in exception a
caller would reach for, so ``except ValueError`` keeps working for code written
against other replay libraries::

    ReplayError (Exception)
    ├── InvalidArgumentError (ValueError)   bad constructor or call argument
    │   └── InvalidTypeError (also TypeError)  an argument of the wrong kind (None, str, ...)
    ├── SpecMismatchError (ValueError)      data that does not match the table's spec
    ├── NotEnoughDataError (ValueError)     fewer items stored than a sample needs
    ├── CheckpointError (ValueError)        a file that is missing, truncated, corrupt or foreign
    ├── RateLimiterTimeout (TimeoutError)   a blocked insert/sample ran past its timeout
    ├── WouldBlockForeverError (RuntimeError)  a call that no other thread can ever unblock
    ├── ClosedError (RuntimeError)          a call on a closed manager, dataset or server
    ├── DeviceError (RuntimeError)          a device that does not exist or is not usable here
    ├── InsufficientMemoryError (MemoryError)  a table or sample larger than the free memory
    └── MissingDependencyError (ImportError)   an optional extra that is not installed

Messages name the argument or field, the value received, what was expected and
how to fix it.

Example:
    >>> from replaydb import Table
    >>> from replaydb.errors import InvalidArgumentError
    >>> try:
    ...     Table({"x": ((), "float32")}, capacity=0)
    ... except InvalidArgumentError as exc:
    ...     print(type(exc).__name__, isinstance(exc, ValueError))
    InvalidArgumentError True
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ClosedError",
    "DeviceError",
    "InsufficientMemoryError",
    "InvalidArgumentError",
    "InvalidTypeError",
    "MissingDependencyError",
    "NotEnoughDataError",
    "RateLimiterTimeout",
    "ReplayError",
    "SpecMismatchError",
    "WouldBlockForeverError",
]


class ReplayError(Exception):
    """Base class of every error replaydb raises on purpose."""


class InvalidArgumentError(ReplayError, ValueError):
    """An argument is out of range or of the wrong kind."""


class InvalidTypeError(InvalidArgumentError, TypeError):
    """An argument is of the wrong kind (``None``, a string, a list where a mapping goes).

    Both ``except ValueError`` and ``except TypeError`` catch it.
    """


class SpecMismatchError(ReplayError, ValueError):
    """Data does not match the table's spec (missing field, wrong shape or dtype)."""


class NotEnoughDataError(ReplayError, ValueError):
    """A sample asked for more items than the table can give."""


class CheckpointError(ReplayError, ValueError):
    """A checkpoint is missing, truncated, corrupt, or does not match its metadata."""


class RateLimiterTimeout(ReplayError, TimeoutError):
    """A call blocked by the rate limiter did not get through within its timeout."""


class WouldBlockForeverError(ReplayError, RuntimeError):
    """A call would block and nothing else can ever unblock it (a single-threaded deadlock)."""


class ClosedError(ReplayError, RuntimeError):
    """A call was made on an object that has been closed."""


class DeviceError(ReplayError, RuntimeError):
    """A device string that names no device, or a device this process cannot use.

    For example ``"garbage"``, ``"meta"`` (no data), or ``"cuda"`` on a host without
    a GPU. A ``RuntimeError``, as torch raises for the same devices.
    """


class InsufficientMemoryError(ReplayError, MemoryError):
    """An allocation would not fit in the free memory of its device (checked before allocating).

    Set the environment variable ``REPLAYDB_MEMORY_CHECK=0`` to skip the check.
    """


class MissingDependencyError(ReplayError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


def require(module: str, extra: str) -> object:
    """Import an optional dependency or raise a :class:`MissingDependencyError`.

    Args:
        module: The module to import, e.g. ``"gymnasium"``.
        extra: The replaydb extra that installs it, e.g. ``"gym"``.

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: If the module cannot be imported.

    Example:
        >>> np = require("numpy", "core")
        >>> np.__name__
        'numpy'
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"this feature needs the optional dependency {module!r}, which is not installed; "
            f"install it with: pip install 'replaydb[{extra}]'"
        ) from exc
