"""``SampleInfo`` and ``ReplaySample``: what a Reverb sample carries.

A sample is its data plus the facts a learner needs to weigh and re-prioritize it:
the item's key, the probability it was drawn with, the table's size at the time,
its priority and how many times it has been sampled (this time included).
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["ReplaySample", "SampleInfo"]


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
