"""Parsing and checking a ``device`` argument, for storages and tables.

:func:`resolve_device` is public as ``replaydb.storage.resolve_device``; it lives
here because it needs nothing of the ring.
"""

from __future__ import annotations

from typing import Any

import torch

from replaydb.errors import DeviceError, InvalidTypeError

__all__ = ["resolve_device"]


def resolve_device(device: Any) -> torch.device:
    """Parse and check a device argument: ``None`` (CPU), a string, an int or a ``torch.device``.

    Args:
        device: The device to resolve.

    Returns:
        The device, which can hold tensors in this process.

    Raises:
        InvalidTypeError: If ``device`` is not a string, int or ``torch.device``.
        DeviceError: If the string is not a device, the device is ``meta``
            (no data), or it is not available here (CUDA without a GPU, a GPU index
            past the last one).

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device is None:
        return torch.device("cpu")
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str | int) and not isinstance(device, bool):
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError) as exc:
            raise DeviceError(
                f"device {device!r} is not a device; use 'cpu', 'cuda' or 'cuda:N'"
            ) from exc
    else:
        raise InvalidTypeError(
            f"device must be None, a string, an int or a torch.device, got {device!r} "
            f"({type(device).__name__})"
        )
    if dev.type == "cpu":
        return dev
    if dev.type == "meta":
        raise DeviceError(f"device {device!r}: the meta device holds no data; use 'cpu' or 'cuda'")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {device!r}: CUDA is not available in this process (torch "
                f"{torch.__version__}, CUDA build {torch.version.cuda}); use device='cpu'"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise DeviceError(
                f"device {device!r}: this machine has {count} CUDA device(s), "
                f"cuda:0..cuda:{count - 1}"
            )
        return dev
    try:
        torch.empty(0, device=dev)
    except Exception as exc:  # any backend failure means "not usable here"
        raise DeviceError(
            f"device {device!r} cannot hold tensors in this process ({type(exc).__name__}); "
            "use 'cpu' or 'cuda'"
        ) from None
    return dev
