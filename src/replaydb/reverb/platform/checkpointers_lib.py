"""``reverb.platform.checkpointers_lib``: see :mod:`replaydb.reverb.checkpointers`."""

from replaydb.reverb.checkpointers import (
    CheckpointerBase,
    DefaultCheckpointer,
    TempDirCheckpointer,
    default_checkpointer,
)

__all__ = ["CheckpointerBase", "DefaultCheckpointer", "TempDirCheckpointer", "default_checkpointer"]
