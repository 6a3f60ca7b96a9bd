"""The ``replaydb`` command: ``populate``, ``inspect``, ``serve`` and ``import-reverb``.

* ``replaydb populate --env ID [--policy random|pkg.mod:factory] --out DIR ...`` fills a
  starter buffer with a baseline policy and checkpoints it after every run (see
  :func:`replaydb.collect.populate`).
* ``replaydb inspect PATH [--plot FILE.png]`` describes any buffer replaydb saved: a
  Velora-format directory, a table file, or a checkpoint directory or root.
* ``replaydb serve CONFIG`` hosts tables on Ray (needs ``pip install 'replaydb[ray]'``);
  the config's types are checked (:func:`check_serve_config`) before Ray starts.
* ``replaydb import-reverb CKPT_DIR --out DIR [--spec FILE] [--table NAME]`` turns a
  dm-reverb checkpoint into a replaydb checkpoint directory, without TensorFlow
  (needs ``pip install 'replaydb[reverb-import]'``).

Expected errors (bad input, an unknown env, a full or read-only disk) print one line
naming the problem and the fix and exit non-zero, without a traceback: exit code 2
for bad input, 1 for a failure while running, 130 when interrupted.

The parser and :func:`main` live here; each command lives in a private module of
its own (``_populate``, ``_inspect``, ``_serve``, ``_import_reverb``, each with a
``run(args)``), and what they share (the one-line error report) in ``_common``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from replaydb.cli import _import_reverb, _inspect, _populate, _serve
from replaydb.cli._common import _PROG, _fail, _UsageError
from replaydb.cli._inspect import describe, format_description, plot_description
from replaydb.cli._serve import check_serve_config
from replaydb.errors import ReplayError

__all__ = ["check_serve_config", "describe", "format_description", "main", "plot_description"]


# ------------------------------------------------------------------ parsing
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG, description="Experience replay for reinforcement learning."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    pop = sub.add_parser(
        "populate",
        help="pre-fill a starter buffer from a Gymnasium env with a baseline policy",
        description="Pre-fill a starter buffer and checkpoint it after every run.",
    )
    pop.add_argument("--env", required=True, help="a registered Gymnasium env id, e.g. CartPole-v1")
    pop.add_argument(
        "--policy",
        default="random",
        help="'random' or 'package.module:factory'; factory(observation_space, action_space) "
        "returns a policy (default: random)",
    )
    pop.add_argument("--buffer-name", default="replay_buffer", help="directory name under --out")
    pop.add_argument("--out", required=True, help="directory to write the buffer into")
    pop.add_argument("--capacity", type=int, default=50_000, help="rows the buffer holds")
    pop.add_argument("--steps-per-run", type=int, default=100, help="rows written per run")
    pop.add_argument("--num-runs", type=int, default=5, help="runs (one checkpoint after each)")
    pop.add_argument("--sequence-length", type=int, default=2, help="steps per sampled item")
    pop.add_argument("--num-envs", type=int, default=8, help="environments stepped together")
    pop.add_argument("--seed", type=int, default=None, help="seed for identical buffers")
    pop.add_argument("--force", action="store_true", help="replace an existing buffer")
    pop.add_argument("--quiet", action="store_true", help="no progress bar or per-run lines")

    ins = sub.add_parser(
        "inspect",
        help="describe a saved buffer (Velora directory, table file or checkpoint)",
        description="Print what a saved buffer holds.",
    )
    ins.add_argument("path", help="a Velora buffer directory, a table file or a checkpoint")
    ins.add_argument("--plot", metavar="FILE.png", help="draw reward/return/priority histograms")
    ins.add_argument("--json", action="store_true", help="print the description as JSON")

    srv = sub.add_parser(
        "serve",
        help="host replay tables on Ray (needs replaydb[ray])",
        description="Host replay tables on Ray.",
    )
    srv.add_argument("config", help="server configuration file")
    srv.add_argument("rest", nargs=argparse.REMAINDER, help="more options for the server")
    _import_reverb.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``replaydb`` command.

    Args:
        argv: Arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 2 for bad input, 1 for a failure while
        running, 130 when interrupted.

    Example:
        >>> main(["inspect", "/no/such/path"])
        2
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "serve":
        return _serve.run(args_list[1:])
    parser = _parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse already printed usage and the error
        return int(exc.code) if isinstance(exc.code, int) else 2
    try:
        if args.command == "populate":
            return _populate.run(args)
        if args.command == "inspect":
            return _inspect.run(args)
        if args.command == "import-reverb":
            return _import_reverb.run(args)
        return _serve.run([args.config, *args.rest])
    except _UsageError as exc:
        return _fail(args.command, str(exc), 2)
    except ReplayError as exc:
        code = 2 if isinstance(exc, ValueError | ImportError) else 1
        return _fail(args.command, str(exc), code)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        return _fail(
            args.command,
            f"{exc.strerror or exc}{where}; free space or pick a writable --out "
            "(completed checkpoints were kept)"
            if args.command == "populate"
            else f"{exc.strerror or exc}{where}",
            1,
        )
    except KeyboardInterrupt:
        return _fail(args.command, "interrupted; completed runs were kept", 130)
