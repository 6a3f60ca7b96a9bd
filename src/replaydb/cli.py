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
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from replaydb.errors import ReplayError

__all__ = ["check_serve_config", "describe", "format_description", "main", "plot_description"]

_PROG = "replaydb"


class _UsageError(Exception):
    """Bad command-line input (exit code 2)."""


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
    _add_import_reverb_parser(sub)
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
        return _serve(args_list[1:])
    parser = _parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse already printed usage and the error
        return int(exc.code) if isinstance(exc.code, int) else 2
    try:
        if args.command == "populate":
            return _populate(args)
        if args.command == "inspect":
            return _inspect(args)
        if args.command == "import-reverb":
            return _import_reverb(args)
        return _serve([args.config, *args.rest])
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


def _fail(command: str, message: str, code: int) -> int:
    line = " ".join(message.splitlines())  # one line, whatever the message held
    print(f"{_PROG} {command}: error: {line}", file=sys.stderr)
    return code


def _serve(argv: list[str]) -> int:
    import importlib

    try:
        serve_command = importlib.import_module("replaydb.ray").serve_command
    except (ImportError, AttributeError):
        return _fail(
            "serve", "`replaydb serve` needs Ray; install it with pip install 'replaydb[ray]'", 2
        )
    if argv and not argv[0].startswith("-"):
        try:
            check_serve_config(argv[0])
        except (_UsageError, ReplayError) as exc:
            return _fail("serve", str(exc), 2)
    return int(serve_command(argv))


# ------------------------------------------------------------ serve config
_NUMBER_STRINGS = ("inf", "-inf", "+inf", "infinity", "-infinity")


def check_serve_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check the JSON/TOML shape of a ``replaydb serve`` config before Ray starts.

    Reads at most :data:`~replaydb.checkpoint.MAX_JSON_BYTES` from a regular file,
    decodes it as UTF-8 and parses it (``.toml`` as TOML, anything else as JSON),
    then checks the type of every setting the server reads: ``shards`` and
    ``keep`` (integers >= 1), ``restore`` (a bool), ``name``, ``address`` and
    ``checkpoint_dir`` (strings), ``checkpoint_interval_s`` (a number), and each
    table under ``tables`` (an object whose ``capacity``, ``sequence_length`` and
    ``max_times_sampled`` are integers, ``spec`` an object of shapes, and
    ``sampler``/``limiter`` objects of numbers). Values are range-checked by the
    server itself.

    Args:
        path: The config file.

    Returns:
        The parsed config.

    Raises:
        CheckpointError: If the file cannot be read (missing, not a regular file,
            too large, not UTF-8, not JSON).
        InvalidArgumentError: Naming the first setting of the wrong type.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "serve.json"
        >>> table = {"spec": {"obs": [4]}, "capacity": 10}
        >>> _ = p.write_text(json.dumps({"shards": 2, "tables": {"replay": table}}))
        >>> check_serve_config(p)["shards"]
        2
    """
    from replaydb.checkpoint import expect_json, parse_json, read_small_file
    from replaydb.errors import CheckpointError, InvalidArgumentError

    p = Path(path)
    where = f"config file {str(p)!r}"
    if not p.exists():
        raise InvalidArgumentError(f"{where} does not exist; check the path")
    data = read_small_file(p)
    if p.suffix == ".toml":
        import tomllib

        try:
            raw: Any = tomllib.loads(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise CheckpointError(f"{where} is not UTF-8 text ({exc})") from exc
        except (ValueError, RecursionError) as exc:
            raise InvalidArgumentError(f"{where} does not parse as TOML: {exc}") from exc
    else:
        raw = parse_json(data, where)

    def expect(value: Any, kind: type | tuple[type, ...], key: str) -> Any:
        return expect_json(value, kind, f"{where}: {key}", InvalidArgumentError)

    def positive(value: Any, key: str, none_ok: bool = False) -> None:
        expect(value, (int, type(None)) if none_ok else int, key)
        if value is not None and value < 1:
            raise InvalidArgumentError(f"{where}: {key} must be an integer >= 1, got {value}")

    def numbers(options: Any, key: str) -> None:
        expect(options, dict, key)
        expect(options.get("type", ""), str, f"{key}.type")
        for name, value in options.items():
            if name == "type":
                continue
            at = f"{key}.{name}"
            if isinstance(value, str) and value.strip().lower() in _NUMBER_STRINGS:
                continue
            if isinstance(value, list):
                for i, v in enumerate(value):
                    expect(v, float, f"{at}[{i}]")
                continue
            expect(value, (float, type(None)), at)

    expect(raw, dict, "the config")
    for key in ("shards", "keep"):
        if key in raw:
            positive(raw[key], key)
    for key in ("name", "address", "checkpoint_dir"):
        if raw.get(key) is not None:
            expect(raw[key], str, key)
    if "restore" in raw:
        expect(raw["restore"], bool, "restore")
    if raw.get("checkpoint_interval_s") is not None:
        expect(raw["checkpoint_interval_s"], float, "checkpoint_interval_s")
    tables = expect(raw.get("tables", {}), dict, "tables")
    for name, table in tables.items():
        at = f"tables.{name}"
        expect(table, dict, at)
        if "capacity" in table:
            positive(table["capacity"], f"{at}.capacity")
        if "sequence_length" in table:
            positive(table["sequence_length"], f"{at}.sequence_length")
        if "max_times_sampled" in table:
            positive(table["max_times_sampled"], f"{at}.max_times_sampled", none_ok=True)
        for field, shape in expect(table.get("spec", {}), dict, f"{at}.spec").items():
            if isinstance(shape, dict):
                shape = shape.get("shape", [])
            for i, dim in enumerate(expect(shape, list, f"{at}.spec.{field}")):
                expect(dim, int, f"{at}.spec.{field}[{i}]")
        for part in ("sampler", "limiter"):
            if part in table:
                numbers(table[part], f"{at}.{part}")
    return dict(raw)


# ----------------------------------------------------------------- populate
def _populate(args: argparse.Namespace) -> int:
    from replaydb.collect import CollectStats, populate

    quiet = bool(args.quiet)
    show_bar = not quiet and sys.stderr.isatty()

    def on_run(run: int, stats: CollectStats, ckpt: Path) -> None:
        if not quiet and not show_bar:
            print(
                f"run {run}/{args.num_runs}: {stats.rows} rows, {stats.episodes} episodes, "
                f"checkpoint {ckpt.name}",
                flush=True,
            )

    result = populate(
        args.env,
        args.policy,
        out=args.out,
        buffer_name=args.buffer_name,
        capacity=args.capacity,
        steps_per_run=args.steps_per_run,
        num_runs=args.num_runs,
        sequence_length=args.sequence_length,
        num_envs=args.num_envs,
        seed=args.seed,
        force=args.force,
        progress=show_bar,
        on_run=on_run,
    )
    rets = result.episode_returns
    rows = [
        ("path", str(result.path)),
        ("frames", f"{result.frames:,}"),
        ("runs", str(result.runs)),
        ("episodes", f"{result.episodes:,}"),
        ("episode return", _stats_line(rets) if rets else "no episode finished"),
        ("bytes on disk", _human_bytes(result.nbytes)),
        (
            "time",
            f"{result.seconds:.2f} s ({result.frames / max(result.seconds, 1e-9):,.0f} rows/s)",
        ),
    ]
    print(_kv_table(f"populated {args.env} with policy {args.policy}", rows))
    return 0


# ------------------------------------------------------------------ inspect
def _inspect(args: argparse.Namespace) -> int:
    if args.plot:
        _check_plot_path(args.plot)
    try:
        info = describe(args.path)
    except ReplayError:
        raise
    except Exception as exc:  # whatever else a hostile file provokes
        raise _UsageError(
            f"{args.path!r} cannot be read as a replaydb buffer ({type(exc).__name__}: {exc})"
        ) from exc
    if args.json:
        print(json.dumps({k: v for k, v in info.items() if not k.startswith("_")}, indent=2))
    else:
        print(format_description(info))
    if args.plot:
        out = plot_description(info, args.plot)
        print(f"plot written to {out}")
    return 0


def _check_plot_path(path: str) -> None:
    """Fail before any work when matplotlib is missing or cannot write ``path``'s format."""
    from replaydb.errors import require

    matplotlib: Any = require("matplotlib", "plot")
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    formats = Figure().canvas.get_supported_filetypes()
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in formats:
        what = f".{suffix} files" if suffix else "a file without a suffix"
        raise _UsageError(
            f"--plot {path!r}: matplotlib cannot write {what}; give a file ending in one of "
            f"{', '.join('.' + f for f in sorted(formats))}"
        )


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Describe a saved buffer: its format, spec, sizes, episodes, rewards and returns.

    Args:
        path: A Velora-format buffer directory (``<prefix>metadata.json`` +
            ``<prefix>state.safetensors``) or its metadata/state file, a table file
            (``.safetensors``), or a checkpoint directory or root.

    Returns:
        A JSON-friendly dict; keys starting with ``_`` hold tensors for plotting.

    Raises:
        CheckpointError: If the path holds no buffer replaydb can read.

    Example:
        >>> describe("ckpts/replay_buffer")["format"]  # doctest: +SKIP
        'replaydb checkpoint'
    """
    from replaydb.checkpoint import list_checkpoints, read_checkpoint
    from replaydb.errors import CheckpointError

    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"nothing at {str(p)!r}; check the path")
    if p.is_file():
        if p.name.endswith("metadata.json") or (
            p.name.endswith("state.safetensors") and _velora_pair(p) is not None
        ):
            return _describe_velora(p.parent, _prefix_of(p))
        return _describe_table_file(p)
    if (p / "COMPLETE").is_file() or list_checkpoints(p):
        tables, manifest = read_checkpoint(p)
        ckpt = p if (p / "COMPLETE").is_file() else list_checkpoints(p)[-1]
        out: dict[str, Any] = {
            "format": "replaydb checkpoint",
            "path": str(ckpt),
            "extra": {k: v for k, v in manifest.get("extra", {}).items() if k != "episode_returns"},
            "tables": [_describe_table(name, t) for name, t in tables.items()],
        }
        returns = manifest.get("extra", {}).get("episode_returns")
        if isinstance(returns, list) and returns:
            out["collected_returns"] = _stats(torch.tensor(returns, dtype=torch.float64))
            out["_collected_returns"] = torch.tensor(returns, dtype=torch.float64)
        return out
    metas = sorted(p.glob("*metadata.json"))
    if metas:
        return _describe_velora(p, _prefix_of(metas[0]))
    files = sorted(p.glob("*.safetensors"))
    if len(files) == 1:
        return _describe_table_file(files[0])
    raise CheckpointError(
        f"{str(p)!r} holds no replaydb buffer (no checkpoint, no <prefix>metadata.json, "
        "no single .safetensors table file); pass the buffer's directory or file"
    )


def _prefix_of(path: Path) -> str:
    for suffix in ("metadata.json", "state.safetensors"):
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return ""


def _velora_pair(state: Path) -> Path | None:
    meta = state.with_name(_prefix_of(state) + "metadata.json")
    return meta if meta.is_file() else None


def _describe_velora(directory: Path, prefix: str) -> dict[str, Any]:
    from replaydb.buffer import ReplayBuffer
    from replaydb.checkpoint import read_json
    from replaydb.errors import CheckpointError

    meta_path = directory / f"{prefix}metadata.json"
    try:
        metadata = read_json(meta_path)
    except CheckpointError as exc:
        raise CheckpointError(f"{str(meta_path)!r} is not readable JSON ({exc})") from exc
    buffer = ReplayBuffer.load(directory / f"{prefix}state", metadata)
    n = buffer.size
    fields = buffer.table.storage.fields
    rewards = fields["rewards"][:n, 0].double()
    dones = fields["dones"][:n, 0]
    return {
        "format": "Velora ReplayBuffer",
        "path": str(directory / f"{prefix}state.safetensors"),
        "spec": buffer.table.spec.to_json(),
        "size": n,
        "capacity": buffer.capacity,
        "episodes": int((dones > 0).sum()),
        "rewards": _stats(rewards) if n else None,
        "returns": None,
        "returns_note": "the Velora format keeps no episode links; returns are not recoverable",
        "priorities": None,
        "_rewards": rewards,
    }


def _describe_table_file(path: Path) -> dict[str, Any]:
    from replaydb.checkpoint import load_table

    table = load_table(path)
    out = {"format": "replaydb table file", "path": str(path)}
    out.update(_describe_table(table.name, table))
    return out


def _describe_table(name: str, table: Any) -> dict[str, Any]:
    storage = table.storage
    n = storage.num_rows
    info: dict[str, Any] = {
        "name": name,
        "spec": table.spec.to_json(),
        "size": len(table),
        "steps": n,
        "capacity": table.capacity,
        "sequence_length": table.sequence_length,
        "sampler": table.sampler.config(),
    }
    reward_name = next((k for k in ("reward", "rewards") if k in table.spec), None)
    end = storage.end[:n]
    info["episodes"] = int((end != 0).sum())
    if reward_name is not None and n:
        reward = storage.fields[reward_name][:n].reshape(n, -1)[:, 0].double()
        transition = torch.ones(n, dtype=torch.bool)
        if "step_type" in table.spec:
            # Final steps of the steps layout carry no reward of their own.
            transition = storage.fields["step_type"][:n].reshape(n) != 2
        info["rewards"] = _stats(reward[transition])
        info["_rewards"] = reward[transition]
        returns = _episode_returns(storage, reward)
        info["returns"] = _stats(returns) if returns.numel() else None
        info["_returns"] = returns
    else:
        info["rewards"] = info["returns"] = None
    pri = table.item_priorities()[1]
    if pri.numel() and table.sampler.config().get("type") != "Uniform":
        info["priorities"] = _stats(pri)
        info["_priorities"] = pri
    else:
        info["priorities"] = None
    return info


def _episode_returns(storage: Any, reward: torch.Tensor) -> torch.Tensor:
    """Returns of the complete episodes stored (vectorized over rows)."""
    n = reward.numel()
    key = storage.key[:n]
    order = torch.argsort(key)
    stream = storage.stream[:n][order]
    order = order[torch.argsort(stream, stable=True)]
    stream = storage.stream[:n][order]
    ends = storage.end[:n][order] != 0
    prev = storage.prev[:n][order]
    starts = torch.ones(n, dtype=torch.bool)
    starts[1:] = (stream[1:] != stream[:-1]) | ends[:-1]
    ep = torch.cumsum(starts.long(), 0) - 1
    num = int(ep[-1]) + 1
    totals = torch.zeros(num, dtype=torch.float64).index_add_(0, ep, reward[order])
    complete = torch.zeros(num, dtype=torch.bool)
    complete[ep[ends]] = True
    if storage.links:
        # An episode whose first stored row had a predecessor lost its start to the ring.
        complete[ep[starts & (prev >= 0)]] = False
    elif storage.total > storage.capacity:
        complete[ep[starts]] &= ~(
            torch.cat([torch.tensor([True]), stream[1:] != stream[:-1]])[starts]
        )
    return totals[complete]


def _stats(x: torch.Tensor) -> dict[str, float]:
    x = x.double()
    return {
        "count": int(x.numel()),
        "mean": float(x.mean()),
        "std": float(x.std()) if x.numel() > 1 else 0.0,
        "min": float(x.min()),
        "max": float(x.max()),
    }


def _stats_line(values: Any) -> str:
    s = _stats(torch.as_tensor(values, dtype=torch.float64))
    return f"mean {s['mean']:.2f}  min {s['min']:.2f}  max {s['max']:.2f}  (n={s['count']})"


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{n} B"


def _kv_table(title: str, rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    lines = [title, "-" * len(title)]
    lines += [f"{k.ljust(width)}  {v}" for k, v in rows]
    return "\n".join(lines)


def _stat_cell(s: dict[str, float] | None) -> str:
    if not s:
        return "n/a"
    return (
        f"mean {s['mean']:.3g}  std {s['std']:.3g}  min {s['min']:.3g}  max {s['max']:.3g}"
        f"  (n={s['count']:,})"
    )


def _spec_lines(spec: dict[str, Any]) -> list[str]:
    names = list(spec)
    w = max([len("field"), *(len(k) for k in names)])
    shapes = [str(tuple(spec[k]["shape"])) for k in names]
    sw = max([len("shape"), *(len(s) for s in shapes)])
    lines = [f"  {'field'.ljust(w)}  {'shape'.ljust(sw)}  dtype"]
    lines += [
        f"  {k.ljust(w)}  {s.ljust(sw)}  {spec[k]['dtype']}"
        for k, s in zip(names, shapes, strict=True)
    ]
    return lines


def format_description(info: dict[str, Any]) -> str:
    """Render :func:`describe` output as a readable text table.

    Example:
        >>> print(format_description(describe("buf")))  # doctest: +SKIP
    """
    out = [f"format  {info['format']}", f"path    {info['path']}"]
    extra = info.get("extra")
    if extra:
        out.append("collected with")
        out += [f"  {k}: {v}" for k, v in extra.items()]
    if "collected_returns" in info:
        out.append(f"  episode returns while collecting: {_stat_cell(info['collected_returns'])}")
    for t in info.get("tables", [info]):
        if "tables" in info:
            out.append(f"table {t['name']!r}")
        out.append("spec")
        out += _spec_lines(t["spec"])
        rows = [("size", f"{t['size']:,} / {t['capacity']:,}")]
        if "steps" in t:
            rows[0] = ("items / steps", f"{t['size']:,} items, {t['steps']:,} steps")
            rows.append(("capacity", f"{t['capacity']:,} steps"))
            rows.append(("sequence length", str(t["sequence_length"])))
            rows.append(("sampler", json.dumps(t["sampler"])))
        rows.append(("episodes ended", f"{t['episodes']:,}"))
        rows.append(("rewards", _stat_cell(t.get("rewards"))))
        returns = _stat_cell(t.get("returns"))
        if t.get("returns_note"):
            returns = f"n/a ({t['returns_note']})"
        rows.append(("episode returns", returns))
        rows.append(
            (
                "priorities",
                _stat_cell(t.get("priorities")) if t.get("priorities") else "none (uniform)",
            )
        )
        w = max(len(k) for k, _ in rows)
        out += [f"{k.ljust(w)}  {v}" for k, v in rows]
    return "\n".join(out)


def plot_description(info: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Draw the reward and return histograms and the priority distribution to a PNG.

    Args:
        info: :func:`describe` output.
        path: The image file to write.

    Returns:
        The path written.

    Raises:
        MissingDependencyError: If matplotlib is not installed (``replaydb[plot]``).

    Example:
        >>> plot_description(describe("buf"), "buf.png")  # doctest: +SKIP
    """
    from replaydb.errors import require

    matplotlib: Any = require("matplotlib", "plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = info.get("tables", [info])
    panels: list[tuple[str, torch.Tensor]] = []
    for t in tables:
        prefix = f"{t['name']}: " if "tables" in info else ""
        for key, title in (
            ("_rewards", "rewards per step"),
            ("_returns", "episode returns (stored)"),
            ("_priorities", "priorities"),
        ):
            v = t.get(key)
            if isinstance(v, torch.Tensor) and v.numel():
                panels.append((prefix + title, v))
    if isinstance(info.get("_collected_returns"), torch.Tensor):
        panels.append(("episode returns (while collecting)", info["_collected_returns"]))
    if not panels:
        panels.append(("empty buffer", torch.zeros(0)))
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, (title, values) in zip(axes.flat, panels, strict=False):
        if values.numel():
            ax.hist(values.numpy(), bins=min(50, max(5, int(torch.unique(values).numel()))))
        ax.set_title(title)
        ax.set_ylabel("count")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(f"{info['format']}: {Path(info['path']).name}")
    fig.tight_layout()
    out = Path(path)
    try:
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out


# ------------------------------------------------------------ import-reverb
def _add_import_reverb_parser(sub: Any) -> None:
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


def _import_reverb(args: argparse.Namespace) -> int:
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
