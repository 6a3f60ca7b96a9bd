"""``replaydb inspect PATH``: :func:`describe` any buffer replaydb saved, then print or plot it.

:func:`describe` reads a Velora-format directory, a table file, or a checkpoint
directory or root into a JSON-friendly dict (spec, sizes, episodes, reward,
return and priority statistics); :func:`format_description` renders it as text
and :func:`plot_description` as histograms (matplotlib, ``replaydb[plot]``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from replaydb.cli._common import _UsageError
from replaydb.errors import ReplayError


def run(args: argparse.Namespace) -> int:
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
    pri = table.items(fields=()).priorities.cpu()
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
