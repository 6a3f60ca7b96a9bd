"""``replaydb import-reverb CKPT_DIR --out DIR``: its subparser and the command.

The command reads a dm-reverb checkpoint without TensorFlow and writes a replaydb
checkpoint directory (:func:`replaydb._reverb_checkpoint.import_reverb_checkpoint`),
then prints what it wrote as text or JSON.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any) -> None:
    imp = sub.add_parser(
        "import-reverb",
        help="turn a dm-reverb checkpoint into a replaydb checkpoint (replaydb[reverb-import])",
        description="Read a dm-reverb 0.14 checkpoint without TensorFlow and write its tables "
        "as a replaydb checkpoint directory (one item per Reverb item: data, priority and "
        "times sampled kept).",
    )
    imp.add_argument(
        "checkpoint", help="a Reverb checkpoint directory, or the checkpointer root holding it"
    )
    imp.add_argument("--out", required=True, help="the replaydb checkpoint root to create")
    imp.add_argument(
        "--spec",
        help="JSON spec file (Spec.to_json()) naming the columns in tree.flatten order "
        "(default: the table signature's names, else column_0..)",
    )
    imp.add_argument(
        "--table", action="append", help="import only this table (repeat for more; default all)"
    )
    imp.add_argument(
        "--capacity", type=int, default=None, help="rows of the table (default max_size x T)"
    )
    imp.add_argument("--force", action="store_true", help="write into a non-empty --out")
    imp.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from replaydb._reverb_checkpoint import import_reverb_checkpoint

    result = import_reverb_checkpoint(
        args.checkpoint,
        args.out,
        spec=args.spec,
        table=args.table,
        capacity=args.capacity,
        force=bool(args.force),
    )
    if args.json:
        print(
            json.dumps(
                {
                    "path": str(result.path),
                    "source": str(result.source),
                    "tables": [
                        {
                            "name": t.name,
                            "items": t.items,
                            "capacity": t.capacity,
                            "sequence_length": t.sequence_length,
                            "fields": list(t.fields),
                            "notes": list(t.notes),
                        }
                        for t in result.tables
                    ],
                },
                indent=2,
            )
        )
        return 0
    print(f"read {result.source}")
    print(f"wrote {result.path}")
    for t in result.tables:
        print(
            f"table {t.name!r}: {t.items} items of {t.sequence_length} step(s), "
            f"capacity {t.capacity} rows; fields {', '.join(t.fields)}"
        )
        for note in t.notes:
            print(f"  note: {note}")
    if len(result.tables) == 1:
        t = result.tables[0]
        print(
            f"load it with ReplayBufferManager(data_spec, capacity={t.capacity}, "
            f"checkpoint_dir={str(args.out)!r}, sequence_length={t.sequence_length})"
            ".load_replay_buffer()"
        )
    return 0
