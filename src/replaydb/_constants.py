"""The codes replaydb stores and exchanges, defined once.

* A step's *end code* (the ``end`` column of a storage, :attr:`Sample.ends
  <replaydb.table.Sample.ends>`): ``END_NONE`` (the episode goes on),
  ``END_TERMINATED`` (it ended in a terminal state), ``END_TRUNCATED`` (it was cut
  short: a time limit, the end of a collection).
* A TF-Agents / Reverb *step type* (the ``step_type`` field of the steps layout):
  ``STEP_FIRST``, ``STEP_MID``, ``STEP_LAST``.
* ``NUMPY_DTYPES``: the numpy dtype of each torch dtype that numpy has (not
  ``bfloat16``), for staging rows in numpy before one copy into torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = [
    "END_NONE",
    "END_TERMINATED",
    "END_TRUNCATED",
    "NUMPY_DTYPES",
    "STEP_FIRST",
    "STEP_LAST",
    "STEP_MID",
    "end_code",
]

END_NONE, END_TERMINATED, END_TRUNCATED = 0, 1, 2
STEP_FIRST, STEP_MID, STEP_LAST = 0, 1, 2

NUMPY_DTYPES: dict[torch.dtype, Any] = {
    torch.bool: np.bool_,
    torch.uint8: np.uint8,
    torch.int8: np.int8,
    torch.int16: np.int16,
    torch.int32: np.int32,
    torch.int64: np.int64,
    torch.float16: np.float16,
    torch.float32: np.float32,
    torch.float64: np.float64,
}


def end_code(end: Any) -> int | None:
    """The end code of one step's ``end`` argument, or ``None`` if it is not one.

    ``None``/``False`` -> ``END_NONE``, ``True`` -> ``END_TERMINATED``, an int in
    ``[0, 2]`` -> itself; anything else (``3``, ``1.0``, ``"done"``) -> ``None``, for
    the caller to reject with its own argument's name.

    Example:
        >>> end_code(True), end_code(2), end_code(3)
        (1, 2, None)
    """
    if end is None or end is False:
        return END_NONE
    if end is True:
        return END_TERMINATED
    if isinstance(end, int | np.integer) and END_NONE <= int(end) <= END_TRUNCATED:
        return int(end)
    return None
