"""``SampleInfo`` and ``ReplaySample``: what a Reverb sample carries.

A sample is its data plus the facts a learner needs to weigh and re-prioritize it:
the item's key, the probability it was drawn with, the table's size at the time,
its priority and how many times it has been sampled (this time included).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from replaydb.reverb.tables import Item

__all__ = ["ReplaySample", "SampleInfo", "stack_columns"]


class SampleInfo(NamedTuple):
    """Facts about one sampled item (scalars, or ``[B]`` tensors in a batch).

    Example:
        >>> SampleInfo.zeros().table_size
        0
    """

    key: Any
    probability: Any
    table_size: Any
    priority: Any
    times_sampled: Any

    @classmethod
    def tf_dtypes(cls) -> SampleInfo:
        """TensorFlow dtypes of the fields: uint64, float64, int64, float64, int32."""
        import tensorflow as tf  # type: ignore[import-untyped, unused-ignore]

        return cls(tf.uint64, tf.float64, tf.int64, tf.float64, tf.int32)

    @classmethod
    def tf_shapes(cls) -> SampleInfo:
        """TensorFlow shapes of the fields (scalars)."""
        import tensorflow as tf  # type: ignore[import-untyped, unused-ignore]

        return cls(*[tf.TensorShape([]) for _ in range(5)])

    @classmethod
    def zeros(cls) -> SampleInfo:
        """A SampleInfo of Python zeros."""
        return cls(0, 0.0, 0, 0.0, 0)


class ReplaySample(NamedTuple):
    """A sampled item: ``info`` (a :class:`SampleInfo`) and its ``data`` nest."""

    info: SampleInfo
    data: Any


def stack_columns(items: Sequence[Item]) -> list[Any]:
    """Stack each column over a batch of items: ``[B, T, ...]`` (``[B, ...]`` if squeezed).

    A column whose items differ in length, squeezing or step shape comes back as
    a list of per-item arrays instead.

    Example:
        >>> a = np.zeros(2, np.float32)
        >>> stack_columns([((( a, a), False),), (((a, a), False),)])[0].shape
        (2, 2, 2)
    """
    if not items:
        return []
    out: list[Any] = []
    b = len(items)
    for c in range(len(items[0])):
        cols = [it[c] for it in items]
        steps0, squeeze0 = cols[0]
        t = len(steps0)
        same = all(len(s) == t and q == squeeze0 for s, q in cols)
        if same:
            flat = [a for s, _ in cols for a in s]
            try:
                arr = np.stack(flat)
            except ValueError:
                same = False
        if not same:
            out.append([s[0] if q else np.stack(s) for s, q in cols])
            continue
        out.append(arr if squeeze0 else arr.reshape(b, t, *arr.shape[1:]))
    return out
