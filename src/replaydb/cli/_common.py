"""What every ``replaydb`` command shares.

The program name, the usage error (exit code 2) and :func:`_fail`, which prints
an error as one line naming the command and returns the exit code.
"""

from __future__ import annotations

import sys

_PROG = "replaydb"


class _UsageError(Exception):
    """Bad command-line input (exit code 2)."""


def _fail(command: str, message: str, code: int) -> int:
    line = " ".join(message.splitlines())  # one line, whatever the message held
    print(f"{_PROG} {command}: error: {line}", file=sys.stderr)
    return code
