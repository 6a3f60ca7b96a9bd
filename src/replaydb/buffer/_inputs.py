"""Checking and converting what callers pass to a :class:`ReplayBuffer`.

Sizes (:func:`~replaydb._validate.check_int`), devices (:func:`check_device`) for constructors;
for ``add``, the less common forms of the fast path (``_parts``: the transition as
the parts the table's row writer concatenates under its lock) and the checked
conversion with exact errors (``_row``); for ``add_multi``, the conversion of each
column (``_column``). The observation shape and dtype options (:func:`state_shape`,
:func:`check_state_dtype`, :func:`check_frame_stack`) and the path of buffers that
use them (``_states``, ``_add_shaped``). The functions with ``self`` take the
buffer: ``ReplayBuffer`` binds them as its methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from replaydb._validate import check_int, is_int
from replaydb.errors import InvalidArgumentError

if TYPE_CHECKING:
    from replaydb.buffer._buffer import ReplayBuffer
    from replaydb.buffer._sequential import StreamReplayBuffer


#: The dtypes ``states`` may be stored in: real and integer types safetensors writes.
STATE_DTYPES = {
    str(d).removeprefix("torch."): d
    for d in (
        torch.float32,
        torch.float64,
        torch.float16,
        torch.bfloat16,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
    )
}


def state_shape(state_dim: Any) -> tuple[int, ...]:
    """``state_dim`` (an int or a sequence of ints, each >= 1) as a shape tuple.

    Raises:
        InvalidArgumentError: Naming the value, if it is neither.

    Example:
        >>> state_shape(4), state_shape([84, 84])
        ((4,), (84, 84))
    """
    if is_int(state_dim):
        return (check_int("state_dim", state_dim, 1),)
    if (
        isinstance(state_dim, tuple | list | torch.Size)
        and len(state_dim) > 0
        and all(is_int(d) and d >= 1 for d in state_dim)
    ):
        return tuple(int(d) for d in state_dim)
    raise InvalidArgumentError(
        f"state_dim must be an int >= 1 or a non-empty tuple of ints >= 1 (the observation "
        f"shape, e.g. (84, 84)), got {state_dim!r}"
    )


def check_state_dtype(dtype: Any) -> torch.dtype:
    """``dtype`` if ``states`` can be stored in it (see :data:`STATE_DTYPES`).

    Raises:
        InvalidArgumentError: For anything else (bool, complex, a string...).

    Example:
        >>> check_state_dtype(torch.uint8)
        torch.uint8
    """
    if isinstance(dtype, torch.dtype) and dtype in STATE_DTYPES.values():
        return dtype
    raise InvalidArgumentError(
        f"state_dtype must be one of torch.{', torch.'.join(STATE_DTYPES)}, got {dtype!r}; "
        "e.g. state_dtype=torch.uint8 for pixels"
    )


def check_frame_stack(k: Any) -> int | None:
    """``k`` (``None`` or an int >= 1) as the frame stack depth.

    Raises:
        InvalidArgumentError: For anything else.

    Example:
        >>> check_frame_stack(4)
        4
    """
    if k is None:
        return None
    return check_int("frame_stack", k, 1)


def check_device(device: Any) -> torch.device:
    """``device`` as a :class:`torch.device` that can hold tensors here, or one clear error.

    Args:
        device: ``None`` (CPU), a string such as ``"cuda:0"``, or a ``torch.device``.

    Returns:
        The device.

    Raises:
        InvalidArgumentError: If the device is malformed, not built into this torch,
            absent on this machine, or ``meta``.

    Example:
        >>> check_device("cpu")
        device(type='cpu')
    """
    if device is None:
        return torch.device("cpu")
    if not isinstance(device, str | torch.device):
        raise InvalidArgumentError(
            f"device must be a string such as 'cpu' or 'cuda:0' or a torch.device, got "
            f"{type(device).__name__} {device!r}"
        )
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise InvalidArgumentError(
            f"device {device!r} is not a device torch knows; use 'cpu', 'cuda', 'cuda:<n>' or 'mps'"
        ) from exc
    if dev.type == "meta":
        raise InvalidArgumentError(
            "device 'meta' holds no data, so a buffer cannot live there; use 'cpu' or 'cuda'"
        )
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidArgumentError(
                f"device {str(dev)!r} was asked for but this torch has no usable CUDA GPU "
                "(CPU-only build or no driver); use device='cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InvalidArgumentError(
                f"device {str(dev)!r} does not exist: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
        return dev
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InvalidArgumentError(
                f"device {str(dev)!r} was asked for but Apple's MPS backend is not available "
                "on this machine; use device='cpu'"
            )
        return dev
    if dev.type != "cpu":
        try:
            torch.empty(1, device=dev)
        except Exception as exc:  # each backend raises its own type
            raise InvalidArgumentError(
                f"device {str(dev)!r} cannot hold tensors on this machine ({type(exc).__name__}); "
                "use device='cpu'"
            ) from exc
    return dev


def _parts(
    self: ReplayBuffer,
    state: Any,
    action: Any,
    reward: Any,
    next_state: Any,
    done: Any,
    hidden: Any,
) -> tuple[tuple[torch.Tensor, ...], tuple[Any, Any]] | None:
    """The transition as the row writer's parts and numbers; ``None`` for the checked path.

    The other forms of the fast path of ``add`` (its common call is in ``add``):
    ``(1, dim)`` tensors (as Velora's agents pass actions and hidden states), a
    0-d action that fills every slot, one-element tensors or numpy numbers for
    reward and done. Anything else (lists, arrays, a wrong size, ``None``) returns
    ``None`` and :meth:`_row` produces the conversion or the exact error.
    """
    tensor = torch.Tensor
    if not (
        isinstance(state, tensor)
        and isinstance(next_state, tensor)
        and isinstance(action, tensor)
        and isinstance(hidden, tensor)
    ) or (reward is None or done is None):
        return None
    shapes, shapes_2d = self._shapes, self._shapes_2d
    if action.shape != shapes[1]:
        if action.dim() == 0:
            action = action.expand(self.action_dim)  # one value fills every slot
        elif action.shape == shapes_2d[1]:  # Velora's agents pass (1, dim)
            action = action[0]
        else:
            return None
    if hidden.shape != shapes[2]:
        if hidden.shape != shapes_2d[2]:
            return None
        hidden = hidden[0]
    if state.shape != shapes[0]:
        if state.shape != shapes_2d[0]:
            return None
        state = state[0]
    if next_state.shape != shapes[0]:
        if next_state.shape != shapes_2d[0]:
            return None
        next_state = next_state[0]
    if isinstance(reward, tensor):  # a 0-d tensor from a NumpyToTorch env
        if reward.numel() != 1 or reward.dim() > 2 or reward.is_meta:
            return None
        reward = reward.item()
    elif not isinstance(reward, int | float | np.integer | np.floating | np.bool_):
        return None
    if isinstance(done, tensor):
        if done.numel() != 1 or done.dim() > 2 or done.is_meta:
            return None
        done = done.item()
    elif not isinstance(done, int | float | np.integer | np.floating | np.bool_):
        return None
    return (state, action, next_state, hidden), (reward, done)


def _row(self: object, name: str, value: Any, dim: int, *, broadcast: bool) -> Any:
    """Return ``value`` as something numpy can assign into a ``(dim,)`` row."""
    if value is None:
        raise InvalidArgumentError(
            f"{name} must be "
            + ("a number" if dim == 1 and name in ("reward", "done") else "a tensor or array")
            + ", got None"
        )
    if isinstance(value, torch.Tensor):
        _check_tensor(name, value)
        if value.requires_grad:
            value = value.detach()
        if value.dtype is not torch.float32 or not value.is_cpu:
            value = value.to("cpu", torch.float32)
        shape = value.shape
        if (len(shape) == 1 and shape[0] == dim) or shape == (1, dim):
            return value.numpy()  # numpy drops the leading 1 when assigning
        n, shape = value.numel(), tuple(shape)
        out: Any = value.numpy()
    elif isinstance(value, bool | int | float | np.number | np.bool_) and not isinstance(
        value, np.complexfloating
    ):
        if dim != 1 and not broadcast:
            raise InvalidArgumentError(
                f"{name}: expected shape ({dim},) or (1, {dim}), got a single number {value!r}"
            )
        return float(value)
    else:
        _check_kind(name, value)
        try:
            out = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(
                f"{name}: expected a tensor, array or number, got {type(value).__name__}"
            ) from exc
        n, shape = out.size, out.shape
    if n == dim and (len(shape) <= 1 or shape == (1, dim)):
        return out.reshape(dim) if len(shape) != 1 else out
    if n == 1 and (broadcast or dim == 1) and len(shape) <= 2:
        return out.reshape(())
    expected = f"({dim},) or (1, {dim})" + (" or a single value" if broadcast else "")
    raise InvalidArgumentError(
        f"{name}: expected shape {expected}, got {shape}; "
        f"this buffer was built with {name.removesuffix('s')}_dim={dim}"
        if name in ("state", "next_state", "action", "hidden")
        else f"{name}: expected shape {expected}, got {shape}"
    )


def _column(self: ReplayBuffer, name: str, value: Any, dim: int) -> torch.Tensor:
    """``value`` as a float32 ``(N, dim)`` tensor (on CPU for the fast path)."""
    t = _as_tensor(name, value)
    if t.dim() == 1 and dim == 1:
        t = t.unsqueeze(1)
    if t.dim() != 2 or t.shape[1] != dim:
        raise InvalidArgumentError(
            f"{name}: expected shape (N, {dim}), got {tuple(t.shape)}"
            + (" (1-D is accepted when the feature size is 1)" if t.dim() == 1 else "")
        )
    if t.dtype is not torch.float32 or (self._fast and not t.is_cpu):
        t = t.to("cpu" if self._fast else t.device, torch.float32)
    return t


def given_state_dim(state_dim: Any, shape: tuple[int, ...]) -> int | tuple[int, ...]:
    """``state_dim`` as the user gave it: an int, or the observation shape as a tuple."""
    if is_int(state_dim):
        return shape[0]
    return shape


def _as_tensor(name: str, value: Any) -> torch.Tensor:
    """``value`` as a tensor without copying where it already is one (checked, detached)."""
    if isinstance(value, torch.Tensor):
        _check_tensor(name, value)
        return value.detach() if value.requires_grad else value
    _check_kind(name, value)
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(
            f"{name}: expected a tensor or array, got {type(value).__name__}"
        ) from exc


def _row_tensor(
    self: ReplayBuffer | StreamReplayBuffer, name: str, value: Any, dim: int, broadcast: bool
) -> torch.Tensor:
    """One transition's ``name`` as a float32 ``(1, dim)`` tensor (checked by ``_row``)."""
    v = np.asarray(self._row(name, value, dim, broadcast=broadcast), dtype=np.float32)
    return torch.from_numpy(np.broadcast_to(v, (dim,)).reshape(1, dim).copy())


def _check_kind(name: str, value: Any) -> None:
    """Refuse text and complex values, which numpy would convert to floats silently."""
    dtype = getattr(value, "dtype", None)
    kind = getattr(dtype, "kind", None)
    shown = f"a {type(value).__name__} of dtype {dtype}" if kind else repr(value)
    if isinstance(value, str | bytes) or kind in ("U", "S"):
        raise InvalidArgumentError(
            f"{name}: expected numbers, got text ({shown}); convert it first "
            f"(float({name}) or np.asarray({name}, dtype=np.float32))"
        )
    if isinstance(value, complex) or kind == "c":
        raise InvalidArgumentError(
            f"{name}: complex values are not supported, got {shown}; pass the real "
            f"part ({name}.real) if that is what you mean"
        )


def _check_tensor(name: str, value: torch.Tensor) -> None:
    if value.is_complex():
        raise InvalidArgumentError(
            f"{name}: complex tensors are not supported (dtype {value.dtype}); pass "
            f"{name}.real if the real part is what you mean"
        )
    if value.layout is not torch.strided:
        raise InvalidArgumentError(
            f"{name}: sparse tensors are not supported (layout {value.layout}); "
            f"pass {name}.to_dense()"
        )
    if value.is_meta:
        raise InvalidArgumentError(
            f"{name}: a tensor on the 'meta' device holds no data; pass a real tensor"
        )


class _Shaped(Protocol):
    """What :func:`_states` reads from its buffer."""

    state_shape: tuple[int, ...]
    state_dim: int | tuple[int, ...]


def _states(self: _Shaped, name: str, value: Any, *, batched: bool = True) -> torch.Tensor:
    """``value`` as a ``[N, *state_shape]`` tensor in its own dtype (the table casts it).

    ``batched=False`` takes one observation, ``state_shape`` or ``(1, *state_shape)``.
    """
    if value is None:
        raise InvalidArgumentError(f"{name} must be a tensor or array, got None")
    t = _as_tensor(name, value)
    shape = self.state_shape
    if batched:
        if t.dim() == len(shape) + 1 and tuple(t.shape[1:]) == shape:
            return t
        expected = f"(N, {', '.join(map(str, shape))})"
    else:
        if tuple(t.shape) == shape:
            return t.unsqueeze(0)
        if tuple(t.shape) == (1, *shape):
            return t
        expected = f"{shape} or (1, {', '.join(map(str, shape))})"
    raise InvalidArgumentError(
        f"{name}: expected shape {expected}, got {tuple(t.shape)}; this buffer was built "
        f"with state_dim={self.state_dim}"
    )


def _add_shaped(
    self: ReplayBuffer,
    state: Any,
    action: Any,
    reward: Any,
    next_state: Any,
    done: Any,
    hidden: Any,
) -> None:
    """``add`` for a buffer with a state shape, dtype or frame stack: one checked write."""

    def one(name: str, value: Any, dim: int, broadcast: bool) -> torch.Tensor:
        return _row_tensor(self, name, value, dim, broadcast)

    values = {
        "states": self._states("state", state, batched=False),
        "actions": one("action", action, self.action_dim, True),
        "rewards": one("reward", reward, 1, False),
        "next_states": self._states("next_state", next_state, batched=False),
        "dones": one("done", done, 1, False),
        "hiddens": torch.zeros(1, self.hidden_dim)
        if hidden is None
        else one("hidden", hidden, self.hidden_dim, True),
    }
    self.table.extend(values, ends=bool(values["dones"][0, 0] != 0))
