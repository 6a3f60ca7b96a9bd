"""``TrajectoryDataset``: a ``tf.data.Dataset`` of samples of a served table.

Built on ``tf.data.Dataset.from_generator``: a generator draws up to
``max_in_flight_samples_per_worker`` items per call (as many as the rate limiter
lets through now, at least one), stacks each column with one ``np.stack`` and
yields the batch, which ``unbatch`` splits into single samples. Items whose shapes
vary (``None`` in ``shapes``) are yielded as batches of one. While the rate limiter
blocks, the generator yields an empty batch every 0.2 s instead of blocking inside
TensorFlow's ``py_func`` for ever, so an iterator that is dropped (or a server that
is stopped) never leaves a thread stuck.
Iteration ends at the first rate-limiter timeout (``rate_limiter_timeout_ms >= 0``)
or once the server is stopped. The dataset can be built inside a traced function
(``Dataset.interleave``), as TF-Agents does.
"""

from __future__ import annotations

import atexit
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf  # type: ignore[import-untyped, unused-ignore]
from tensorflow.python.data.ops import (  # type: ignore[import-untyped, unused-ignore]
    dataset_ops,
)
from tensorflow.python.util import nest as tf_nest  # type: ignore[import-untyped, unused-ignore]

from replaydb.errors import ClosedError, InvalidArgumentError
from replaydb.reverb.errors import DeadlineExceededError
from replaydb.reverb.replay_sample import ReplaySample, SampleInfo, stack_columns
from replaydb.reverb.server import resolve

__all__ = ["TrajectoryDataset"]

_INFO_DTYPES = (tf.uint64, tf.float64, tf.int64, tf.float64, tf.int32)
_INFO_KEYS = ("key", "probability", "table_size", "priority", "times_sampled")
_state = {"exiting": False, "built": False}
#: Longest single wait inside the generator: a blocked dataset yields an empty batch
#: this often, so TensorFlow can tear down an iterator that nobody reads any more.
_SLICE_S = 0.2


def _at_exit() -> None:
    """End every dataset of this module and free live iterators while Python still runs.

    A ``TrajectoryDataset`` draws through Python (``from_generator``). If a
    ``tf.data`` iterator over one (TF-Agents' ``as_dataset`` pipelines keep up to 32
    of them busy in ``interleave``) is still alive when the interpreter finalizes,
    its worker threads call into Python after finalization has begun; Python ends
    such threads on the spot, and TensorFlow then waits for them for ever (the
    process hangs at exit) or aborts ("terminate called without an active
    exception"). Real Reverb's dataset is a C++ op, so its users never see this.
    Here, at exit (atexit handlers run before finalization), every generator is
    told to end and the iterator resources of live ``tf.data`` iterators are
    released, so their threads are joined while Python can still serve them. The
    Python iterator objects stay, unusable, for the last moments of the process.
    """
    _state["exiting"] = True
    if not _state["built"]:
        return
    import gc

    from tensorflow.python.data.ops import (  # type: ignore[import-untyped, unused-ignore]
        iterator_ops,
    )

    for obj in gc.get_objects():
        if isinstance(obj, iterator_ops.OwnedIterator) and hasattr(obj, "_iterator_resource"):
            del obj._iterator_resource
    gc.collect()


atexit.register(_at_exit)


def _check(name: str, arr: Any, dtype: Any, shape: tf.TensorShape) -> Any:
    """``arr`` (a batch) checked against the dataset's dtype and per-item shape."""
    a = np.asarray(arr)
    if a.dtype != dtype.as_numpy_dtype:
        raise InvalidArgumentError(
            f"column {name} of the sampled items has dtype {a.dtype}, but the dataset was "
            f"built with {dtype.name}; pass the dtypes the items were written with"
        )
    inner = tuple(a.shape[1:])
    if not shape.is_compatible_with(inner):
        raise InvalidArgumentError(
            f"column {name} of the sampled items has shape {inner}, but the dataset was built "
            f"with {shape}; match the sequence length and the spec the items were written with"
        )
    return a


class TrajectoryDataset(dataset_ops.DatasetSource):  # type: ignore[misc]
    """Samples of ``table`` as ``ReplaySample(info=SampleInfo, data=nest)`` elements.

    Args:
        server_address: ``'localhost:<port>'`` of a server in this process.
        table: The table's name.
        dtypes: Nest of ``tf.DType`` of an item's columns.
        shapes: Nest (matching ``dtypes``) of ``tf.TensorShape``; ``None`` dims vary.
        max_in_flight_samples_per_worker: The most items drawn per call.
        num_workers_per_iterator: Accepted for compatibility (one worker here).
        max_samples_per_stream: Accepted for compatibility.
        rate_limiter_timeout_ms: End the dataset if no item comes within this
            many ms (-1: wait as long as it takes).
        max_samples: Stop after this many samples (-1: never).

    Raises:
        InvalidArgumentError: If ``dtypes`` and ``shapes`` do not match.

    Example:
        >>> # ds = TrajectoryDataset(f"localhost:{server.port}", "t", tf.float32,
        >>> #                        tf.TensorShape([2]), max_in_flight_samples_per_worker=10)
    """

    def __init__(
        self,
        server_address: str,
        table: str,
        dtypes: Any,
        shapes: Any,
        max_in_flight_samples_per_worker: int,
        num_workers_per_iterator: int = -1,
        max_samples_per_stream: int = -1,
        rate_limiter_timeout_ms: int = -1,
        max_samples: int = -1,
    ) -> None:
        if max_in_flight_samples_per_worker < 1:
            raise InvalidArgumentError(
                "max_in_flight_samples_per_worker must be >= 1, got "
                f"{max_in_flight_samples_per_worker}"
            )
        flat_dtypes = [tf.as_dtype(d) for d in tf.nest.flatten(dtypes)]
        try:
            flat_shapes = [tf.TensorShape(s) for s in tf_nest.flatten_up_to(dtypes, shapes)]
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"shapes must have the structure of dtypes: {exc}") from exc
        batched = all(s.is_fully_defined() for s in flat_shapes)
        chunk = int(max_in_flight_samples_per_worker) if batched else 1
        if batched:
            # Drawing ahead is invisible where items are not consumed and the limiter
            # never blocks on samples (MinSize): draw 64 a call to spread the py_func cost.
            chunk = max(chunk, _ahead(str(server_address), str(table)))
        timeout = None if rate_limiter_timeout_ms < 0 else rate_limiter_timeout_ms / 1000
        address, name = str(server_address), str(table)

        empty = (
            tuple(np.zeros(0, d.as_numpy_dtype) for d in _INFO_DTYPES),
            tuple(
                np.zeros((0, *[x or 0 for x in s.as_list()]), d.as_numpy_dtype)
                for s, d in zip(flat_shapes, flat_dtypes, strict=True)
            ),
        )

        def batch(info: dict[str, Any], cols: list[Any]) -> Any:
            return tuple(info[k] for k in _INFO_KEYS), tuple(
                _check(str(i), c, d, s)
                for i, (c, d, s) in enumerate(zip(cols, flat_dtypes, flat_shapes, strict=True))
            )

        def generate() -> Iterator[Any]:
            emitted = 0
            while max_samples < 0 or emitted < max_samples:
                want = chunk if max_samples < 0 else min(chunk, max_samples - emitted)
                drawn = _draw(address, name, want, timeout)
                if drawn is None:
                    return
                if drawn is _WAITING:
                    yield empty
                    continue
                info, items = drawn
                emitted += len(items)
                if batched:
                    yield batch(info, stack_columns(items))
                    continue
                for j, item in enumerate(items):
                    one = {k: v[j : j + 1] for k, v in info.items()}
                    yield batch(one, stack_columns([item]))

        signature = ReplaySample(
            SampleInfo(*[tf.TensorSpec([None], d) for d in _INFO_DTYPES]),
            tf.nest.pack_sequence_as(
                dtypes,
                [
                    tf.TensorSpec([None, *s.as_list()] if s.rank is not None else None, d)
                    for s, d in zip(flat_shapes, flat_dtypes, strict=True)
                ],
            ),
        )

        def structured() -> Iterator[Any]:
            for info, data in generate():
                yield ReplaySample(SampleInfo(*info), tf.nest.pack_sequence_as(dtypes, list(data)))

        _state["built"] = True
        ds = tf.data.Dataset.from_generator(structured, output_signature=signature).unbatch()
        self._inner = ds
        super().__init__(ds._variant_tensor)

    @property
    def element_spec(self) -> Any:
        """``ReplaySample`` of ``SampleInfo`` scalar specs and the data specs."""
        return self._inner.element_spec

    @classmethod
    def from_table_signature(
        cls,
        server_address: str,
        table: str,
        max_in_flight_samples_per_worker: int,
        num_workers_per_iterator: int = -1,
        max_samples_per_stream: int = -1,
        rate_limiter_timeout_ms: int = -1,
        get_signature_timeout_secs: float | None = None,
        max_samples: int = -1,
    ) -> TrajectoryDataset:
        """A dataset whose dtypes and shapes come from the table's signature.

        Raises:
            InvalidArgumentError: If the table has no signature.
        """
        sig = resolve(server_address).table(table).signature
        if sig is None:
            raise InvalidArgumentError(
                f"table {table!r} has no signature; build the Table with signature=... or "
                "pass dtypes and shapes to TrajectoryDataset"
            )
        dtypes = tf.nest.map_structure(lambda s: s.dtype, sig)
        shapes = tf.nest.map_structure(lambda s: s.shape, sig)
        return cls(
            server_address,
            table,
            dtypes,
            shapes,
            max_in_flight_samples_per_worker,
            num_workers_per_iterator,
            max_samples_per_stream,
            rate_limiter_timeout_ms,
            max_samples,
        )


_WAITING: Any = object()


def _draw(address: str, table: str, n: int, timeout: float | None) -> Any:
    """Up to ``n`` items; ``_WAITING`` after one wait slice; None to end the dataset.

    The dataset ends at the rate limiter's timeout, when the server stops, and
    when the interpreter exits.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while not _state["exiting"]:
        try:
            t = resolve(address).table(table)
        except ClosedError:
            return None
        left = _SLICE_S if deadline is None else min(_SLICE_S, deadline - time.monotonic())
        try:
            return t.sample(n, timeout=max(left, 0.0))
        except DeadlineExceededError:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            if deadline is None:
                return _WAITING
    return None


#: Items a dataset draws per call where drawing ahead has no visible effect.
_AHEAD = 64


def _ahead(address: str, table: str) -> int:
    """How many items to draw per call from ``table`` (1 where drawing ahead shows)."""
    try:
        info = resolve(address).table(table).info
    except (ClosedError, InvalidArgumentError):
        return 1
    lim = info.rate_limiter_info
    if info.max_times_sampled == 0 and lim.min_diff <= -1e300 and lim.max_diff >= 1e300:
        return _AHEAD
    return 1
