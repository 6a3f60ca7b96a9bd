"""``python -m replaydb.cli``: the same command as ``replaydb`` (see :mod:`replaydb.cli`)."""

from __future__ import annotations

import sys

from replaydb.cli import main

if __name__ == "__main__":
    sys.exit(main())
