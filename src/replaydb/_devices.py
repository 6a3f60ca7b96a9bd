"""Parsing and checking a ``device`` argument, for storages and tables.

:func:`resolve_device` is public as ``replaydb.storage.resolve_device``; it lives
here because it needs nothing of the ring.
"""

from __future__ import annotations

from typing import Any

import torch

from replaydb.errors import DeviceError, InvalidTypeError

__all__ = ["host_path", "resolve_device", "use_generic"]


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


# ------------------------------------------------------------------------------------
# The device path: decided once, when a storage, sum tree or sampler is built.
# ------------------------------------------------------------------------------------

_STATE = {"generic": False}


def host_path(device: torch.device, *dtypes: torch.dtype) -> bool:
    """Whether an object on ``device`` holding ``dtypes`` takes the host (numpy) path.

    The host path works on zero-copy numpy views of CPU tensors (each numpy call
    costs a fraction of a torch call's dispatch) and, where numba is installed, on
    the compiled loops of :mod:`replaydb._kernels`. It applies on CPU for dtypes
    numpy has (not bfloat16); everything else, and CPU after :func:`use_generic`,
    takes the generic torch path. Storages, sum trees and samplers ask this once,
    at construction, and keep the implementation object it selects.

    Example:
        >>> host_path(torch.device("cpu"), torch.float32)
        True
    """
    return (
        device.type == "cpu"
        and not _STATE["generic"]
        and all(dt != torch.bfloat16 for dt in dtypes)
    )


def use_generic(enabled: bool) -> None:
    """Build objects created afterwards on the generic torch path, even on CPU (tests).

    The generic path is what a GPU runs; forcing it on CPU lets the tests compare it
    with the host path on the same data.

    Args:
        enabled: ``True`` for the torch path everywhere; ``False`` (the default)
            for the host path on CPU.
    """
    _STATE["generic"] = bool(enabled)
