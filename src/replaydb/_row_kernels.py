"""Compiled kernels of the row writer (:class:`replaydb._rows.RowWriter`).

``put_rows`` writes a block of rows into a table's packed ring from up to
``MAX_COLUMNS`` column sources and the rows' records (step key, stream, end, item
key, priority, times sampled) in one call; ``put_row`` does the same for the
writer's staging row. Both reach the ring, the record columns and the sources
through raw addresses: numba charges about 0.05 us a call for each array argument
and a few ns for an int, and these calls run once per ``add``. The addresses of the
table's arrays sit in the writer's context array (layout: the ``CTX_*`` indices
below); the writer keeps those arrays alive and checks every source (dtype, device,
contiguity, shape) before it passes an address.

The kernels themselves are in :mod:`replaydb._row_kernels_nb` (imported only with
numba); :mod:`replaydb._kernels` adds them to its namespace (same switches:
``REPLAYDB_NUMBA=0``, :func:`replaydb._kernels.use`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "CTX_CAP",
    "CTX_END",
    "CTX_ITEM_KEY",
    "CTX_ITEM_STRIDE",
    "CTX_SIZE",
    "CTX_STEP",
    "CTX_KEY",
    "CTX_PRIORITY",
    "CTX_RING",
    "CTX_STAGE",
    "CTX_STREAM",
    "CTX_TIMES",
    "CTX_WIDTHS",
    "CTX_WORDS",
    "MAX_COLUMNS",
    "STEP_PARTS",
    "compile_kernels",
]

#: Layout of a row writer's context array (int64): the addresses of the ring and the
#: record columns, fixed for a writer's life (it keeps the arrays alive), then sizes.
CTX_RING, CTX_CAP, CTX_WORDS, CTX_KEY, CTX_STREAM, CTX_END = 0, 1, 2, 3, 4, 5
CTX_ITEM_KEY, CTX_PRIORITY, CTX_TIMES, CTX_ITEM_STRIDE, CTX_STAGE = 6, 7, 8, 9, 10
#: ``ctx[CTX_WIDTHS + j]``: the width in 4-byte words of column ``j`` of a block.
CTX_WIDTHS = 11
#: The most columns :func:`put_rows` copies from (one pointer argument each).
MAX_COLUMNS = 6
#: ``ctx[CTX_STEP + j]``: the size in words of part ``j`` of a step (``put_step``),
#: ``ctx[CTX_STEP + STEP_PARTS]`` the word where its two trailing numbers go.
CTX_STEP = CTX_WIDTHS + MAX_COLUMNS
#: The parts of a step that ``put_step`` copies (one pointer argument each).
STEP_PARTS = 4
#: The length of a writer's context array.
CTX_SIZE = CTX_STEP + STEP_PARTS + 1
#: How far ahead of the row being written ``put_rows`` prefetches (bytes).
_AHEAD = 2048
#: How many rows ahead of the row copied ``put_rows`` prefetches the records.
_LEAD = 32


def compile_kernels(jit: Callable[[Any], Any]) -> dict[str, Any]:
    """The row writer's kernels (compiled on first use; numba's cache keeps them).

    Args:
        jit: :mod:`replaydb._kernels`' ``njit`` wrapper (unused: the kernels are
            module globals of :mod:`replaydb._row_kernels_nb`, which its own wrapper
            of the same settings compiles, so that numba's cache finds them again).

    Returns:
        ``put_rows``, ``put_row`` and ``put_step`` by name.
    """
    import importlib

    nb_kernels: Any = importlib.import_module("replaydb._row_kernels_nb")
    return {
        "put_rows": nb_kernels.put_rows,
        "put_row": nb_kernels.put_row,
        "put_step": nb_kernels.put_step,
    }
