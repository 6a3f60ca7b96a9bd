"""What every sampler shares: the protocol, its optional fast paths, the registry.

:class:`Sampler` is what a :class:`~replaydb.table.Table` needs from a sampler.
:class:`FastSampler` is the optional part: a sampler that has cheaper entry points
for a CPU table (plain ints and numpy arrays instead of tensors, each tensor
conversion costing about a microsecond; or one compiled pass for a draw and the
table's item bookkeeping) declares them in one :class:`FastPaths` record, which the
table reads once, when it is built (:func:`fast_paths`), instead of probing the
sampler at every call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from replaydb.errors import InvalidArgumentError

__all__ = [
    "FastPaths",
    "FastSampler",
    "ItemCounter",
    "Sampler",
    "Selection",
    "check_seed",
    "fast_paths",
    "make_generator",
    "register_sampler",
    "sampler_from_config",
    "unit_interval",
]


@dataclass(frozen=True)
class Selection:
    """Slots chosen by a sampler.

    Attributes:
        slots: ``[n]`` int64 slots of the chosen items.
        probabilities: ``[n]`` float64 probability each was chosen with.
        weights: ``[n]`` float32 importance weights, or ``None`` for all ones.
    """

    slots: torch.Tensor
    probabilities: torch.Tensor
    weights: torch.Tensor | None = None


@runtime_checkable
class Sampler(Protocol):
    """What a table needs from a sampler. All tensors live on the bound device."""

    #: ``True`` for selectors whose choice is a deterministic order (Fifo, heaps).
    deterministic: bool

    def bind(self, capacity: int, device: torch.device) -> None:
        """Allocate state for ``capacity`` slots on ``device`` (called by the table)."""

    def on_insert(self, slots: torch.Tensor, priorities: torch.Tensor) -> None:
        """Make ``slots`` sampleable with the given float64 priorities."""

    def on_remove(self, slots: torch.Tensor) -> None:
        """Make ``slots`` unsampleable (slots that are not active are ignored)."""

    def update(self, slots: torch.Tensor, priorities: torch.Tensor) -> None:
        """Change the priorities of active ``slots``."""

    def sample(self, n: int) -> Selection:
        """Choose ``n`` active slots. Only called when one is active.

        Random samplers draw with replacement. Deterministic selectors return the
        first ``min(n, active)`` distinct slots in their order (the table expands
        them by how many more times each item may be sampled).
        """

    def reset(self) -> None:
        """Forget every item (keep the allocation and the generator)."""

    def config(self) -> dict[str, Any]:
        """JSON-serializable constructor arguments, with a ``"type"`` key."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The sampler's state as CPU tensors (RNG state included)."""

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict` output."""


_REGISTRY: dict[str, Callable[..., Sampler]] = {}


def register_sampler(cls: type[Any]) -> type[Any]:
    """Class decorator: make a sampler rebuildable from its :meth:`Sampler.config`."""
    _REGISTRY[cls.__name__] = cls
    return cls


def sampler_from_config(config: Mapping[str, Any]) -> Sampler:
    """Rebuild a sampler from its ``config()``.

    Raises:
        InvalidArgumentError: If the config is not a mapping, the type is unknown, or
            the parameters do not fit the type.

    Example:
        >>> sampler_from_config({"type": "Uniform", "seed": 3}).config()
        {'type': 'Uniform', 'seed': 3}
    """
    if not isinstance(config, Mapping):
        raise InvalidArgumentError(
            f"a sampler config must be a mapping with a 'type' key, got {config!r}"
        )
    params = dict(config)
    kind = params.pop("type", None)
    if not isinstance(kind, str) or kind not in _REGISTRY:
        raise InvalidArgumentError(
            f"sampler type {kind!r} is unknown; expected one of {sorted(_REGISTRY)}"
        )
    try:
        return _REGISTRY[kind](**{str(k): v for k, v in params.items()})
    except TypeError as exc:
        if isinstance(exc, InvalidArgumentError):
            raise
        raise InvalidArgumentError(
            f"sampler config {dict(config)!r} does not fit {kind}: {exc}"
        ) from None


def check_seed(seed: Any) -> int | None:
    """Return ``seed`` as an int (or None); raise unless a torch generator accepts it.

    Raises:
        InvalidArgumentError: If ``seed`` is not None or an int in ``[-2**63, 2**64)``.

    Example:
        >>> check_seed(3)
        3
    """
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise InvalidArgumentError(
            f"seed must be None or an int in [0, 2**64), got {seed!r} ({type(seed).__name__})"
        )
    if not -(2**63) <= int(seed) < 2**64:
        raise InvalidArgumentError(f"seed must be None or an int in [0, 2**64), got {seed}")
    return int(seed)


def make_generator(device: torch.device, seed: int | None) -> torch.Generator:
    """A generator on ``device``, seeded from ``seed`` or from the global RNG once."""
    gen = torch.Generator(device=device)
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    gen.manual_seed(seed)
    return gen


def unit_interval(name: str, value: Any) -> float:
    """Return ``value`` as a float in [0, 1], or raise naming ``name``.

    Example:
        >>> unit_interval("alpha", 0.5)
        0.5
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentError(f"{name} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise InvalidArgumentError(f"{name} must be in [0, 1], got {value}")
    return float(value)


class ItemCounter(Protocol):
    """A sampler that draws and counts a table's items in one compiled pass (CPU).

    The table hands over numpy views of its item records (keys, times sampled,
    priorities); see :meth:`~replaydb.samplers.Prioritized.draw_items` and
    :meth:`~replaydb.samplers.Prioritized.update_items` for the contracts.
    """

    def draw_items(
        self,
        n: int,
        beta: float | None,
        item_key: np.ndarray[Any, Any],
        times: np.ndarray[Any, Any],
        priority: np.ndarray[Any, Any],
    ) -> tuple[Selection, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw ``n`` slots, count them in ``times``; return keys, counts, priorities."""

    def draw_rows(
        self,
        n: int,
        beta: float | None,
        item_key: np.ndarray[Any, Any],
        times: np.ndarray[Any, Any],
        rows: np.ndarray[Any, Any],
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """:meth:`draw_items` that gathers ``rows`` instead; return rows, keys, weights."""

    def update_items(
        self,
        keys: np.ndarray[Any, Any],
        priorities: np.ndarray[Any, Any],
        item_key: np.ndarray[Any, Any],
        priority: np.ndarray[Any, Any],
        limit: float,
    ) -> tuple[int, float, int]:
        """Check and write the float64/float32 priorities of live keys; return (live, hi, bad)."""


@dataclass(frozen=True)
class FastPaths:
    """The optional fast paths of a bound sampler, declared once (see :class:`FastSampler`).

    Every field is optional: ``None`` (or the default) means the table uses the
    sampler's :class:`Sampler` verbs. A sampler returns the paths that fit the
    device it was bound to, so the table never checks the device again.

    Attributes:
        insert_contiguous: ``(start, n)``: :meth:`Sampler.on_insert` for slots
            ``start..start+n-1`` (no wrap), at the table's highest priority;
            already-active slots stay active (their item was replaced).
        update_numpy: ``(slots, priorities)``: :meth:`Sampler.update` for int64 slots
            and float64 priorities as numpy arrays (CPU).
        items: A sampler that draws and counts a single-step table's items in one
            compiled pass (:class:`ItemCounter`, CPU with numba).
        draw: ``(n) -> slots``: the slots of ``sample(n)`` without the
            probabilities, for a sampler whose probabilities are all alike.
        priority_bound: The largest priority the sampler sums without overflow.
        takes_beta: Whether ``sample(n, beta=...)`` takes an importance-weight
            exponent per call.
        priority_total: ``() -> float``: the sum the sampler draws against (e.g.
            its sum tree's root), or ``None`` for one weight per item.

    Example:
        >>> from replaydb.samplers import Uniform
        >>> s = Uniform(seed=0); s.bind(8, torch.device("cpu"))
        >>> fast_paths(s).insert_contiguous is not None, fast_paths(s).takes_beta
        (True, False)
    """

    insert_contiguous: Callable[[int, int], None] | None = None
    update_numpy: Callable[[np.ndarray[Any, Any], np.ndarray[Any, Any]], None] | None = None
    items: ItemCounter | None = None
    draw: Callable[[int], torch.Tensor] | None = None
    priority_bound: float = math.inf
    takes_beta: bool = False
    priority_total: Callable[[], float] | None = None


@runtime_checkable
class FastSampler(Protocol):
    """A :class:`Sampler` that declares optional fast paths.

    A sampler implements :meth:`fast_paths` to offer them; a table calls it once,
    after :meth:`Sampler.bind`, and keeps the record. Samplers without it (any
    object that satisfies :class:`Sampler`) get the plain verbs.
    """

    def fast_paths(self) -> FastPaths:
        """The fast paths of this sampler as bound (call after ``bind``)."""


def fast_paths(sampler: Sampler) -> FastPaths:
    """The fast paths ``sampler`` declares (none when it is not a :class:`FastSampler`).

    Args:
        sampler: A bound sampler.

    Returns:
        Its :class:`FastPaths`.

    Example:
        >>> from replaydb.samplers import Fifo
        >>> f = Fifo(); f.bind(4, torch.device("cpu")); fast_paths(f) == FastPaths()
        True
    """
    if isinstance(sampler, FastSampler):
        return sampler.fast_paths()
    return FastPaths()
