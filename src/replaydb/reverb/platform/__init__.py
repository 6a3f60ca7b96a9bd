"""``reverb.platform``: the checkpointers, where Reverb keeps them."""

from replaydb.reverb.platform import checkpointers_lib

__all__ = ["checkpointers_lib"]
