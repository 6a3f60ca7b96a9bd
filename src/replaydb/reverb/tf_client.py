"""``TFClient``: Reverb's TensorFlow ops (sample, insert, update_priorities).

Each op is a ``tf.py_function`` that calls the in-process server, so it runs
eagerly and inside ``tf.function`` alike (stateful, so a traced function keeps it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf  # type: ignore[import-untyped, unused-ignore]

from replaydb.errors import InvalidArgumentError
from replaydb.reverb.replay_sample import ReplaySample, SampleInfo, stack_columns
from replaydb.reverb.server import resolve

__all__ = ["TFClient"]

_INFO_DTYPES = [tf.uint64, tf.float64, tf.int64, tf.float64, tf.int32]


class TFClient:
    """Reverb client ops for TensorFlow graphs.

    Args:
        server_address: ``'localhost:<port>'`` of a server in this process.
        shared_name: Accepted for compatibility.
        name: Name scope of the ops.

    Example:
        >>> # TFClient(f"localhost:{server.port}").update_priorities("t", keys, prios)
    """

    def __init__(
        self, server_address: str, shared_name: str | None = None, name: str = "reverb"
    ) -> None:
        self._address = server_address
        self._name = name

    @property
    def server_address(self) -> str:
        """The address the ops resolve."""
        return self._address

    def sample(self, table: str, data_dtypes: Any, name: str | None = None) -> ReplaySample:
        """Sample one item; ``data`` follows the structure of ``data_dtypes``."""
        flat = [tf.as_dtype(d) for d in tf.nest.flatten(data_dtypes)]
        address = self._address

        def run() -> list[Any]:
            info, items = resolve(address).table(table).sample(1)
            cols = stack_columns(items)
            if len(cols) != len(flat):
                raise InvalidArgumentError(
                    f"items of table {table!r} have {len(cols)} columns but data_dtypes has "
                    f"{len(flat)}"
                )
            info_out = [info[k][0] for k in SampleInfo._fields]
            data = []
            for c, (steps, squeeze) in zip(cols, items[0], strict=True):
                if not squeeze and len(steps) != 1:
                    raise InvalidArgumentError(
                        f"TFClient.sample returns one step, but an item of table {table!r} "
                        f"spans {len(steps)}; sample it with TrajectoryDataset"
                    )
                # Like Reverb's op: a one-step item comes back without its time axis.
                data.append(np.asarray(c[0] if squeeze else c[0][0]))
            return info_out + data

        with tf.name_scope(name or f"{self._name}_sample"):
            out = tf.py_function(run, [], _INFO_DTYPES + flat)
        for t in out[:5]:
            t.set_shape([])
        return ReplaySample(
            SampleInfo(*out[:5]), tf.nest.pack_sequence_as(data_dtypes, list(out[5:]))
        )

    def insert(self, data: list[Any], tables: Any, priorities: Any, name: str | None = None) -> Any:
        """Insert ``data`` (a list of tensors, one step) into ``tables[i]`` with ``priorities[i]``.

        Raises:
            ValueError: If ``tables`` is not a rank-1 string tensor, ``priorities`` not a
                rank-1 float64 tensor, or their shapes differ.
        """
        if tables.dtype != tf.string or tables.shape.rank != 1:
            raise InvalidArgumentError("tables must be a string tensor of rank 1")
        if priorities.dtype != tf.float64 or priorities.shape.rank != 1:
            raise InvalidArgumentError("priorities must be a float64 tensor of rank 1")
        if not tables.shape.is_compatible_with(priorities.shape):
            raise InvalidArgumentError("priorities and tables must have the same shape")
        address = self._address
        n_data = len(data)
        names = tf.get_static_value(tables)
        if names is not None:
            for t in names.tolist():
                _check_signature(address, t.decode(), data)

        def run(*args: Any) -> list[Any]:
            values, names, prios = args[:n_data], args[n_data], args[n_data + 1]
            item = tuple(((np.array(v.numpy()),), True) for v in values)
            server = resolve(address)
            for t, p in zip(names.numpy().tolist(), prios.numpy().tolist(), strict=True):
                server.table(t.decode()).insert_items([item], [float(p)])
            return []

        with tf.name_scope(name or f"{self._name}_insert"):
            return tf.py_function(run, [*data, tables, priorities], [])

    def update_priorities(
        self, table: str, keys: Any, priorities: Any, name: str | None = None
    ) -> Any:
        """Set new priorities for ``keys`` of ``table``; unknown keys are ignored."""
        address = self._address

        def run(k: Any, p: Any) -> list[Any]:
            resolve(address).table(table).update_priorities(k.numpy(), p.numpy())
            return []

        with tf.name_scope(name or f"{self._name}_update_priorities"):
            return tf.py_function(run, [keys, priorities], [])


def _check_signature(address: str, table: str, data: list[Any]) -> None:
    """Raise ``tf.errors.InvalidArgumentError`` if ``data`` does not fit the table's signature."""
    signature = resolve(address).table(table).signature
    if signature is None:
        return
    specs = tf.nest.flatten(signature)
    if len(specs) != len(data):
        raise tf.errors.InvalidArgumentError(
            None,
            None,
            f"table {table!r} has a signature of {len(specs)} tensors but {len(data)} were "
            "inserted; insert tf.nest.flatten of a value with the signature's structure",
        )
    for i, (spec, value) in enumerate(zip(specs, data, strict=True)):
        value = tf.convert_to_tensor(value)
        if value.dtype != spec.dtype or not spec.shape.is_compatible_with(value.shape):
            raise tf.errors.InvalidArgumentError(
                None,
                None,
                f"tensor {i} inserted into table {table!r} is {value.dtype.name}{value.shape}, "
                f"but the signature says {spec.dtype.name}{spec.shape}",
            )
