"""The table file: one ``.safetensors`` file per :class:`~replaydb.Table`, written atomically.

Holds :func:`save_table` / :func:`load_table` and what they stand on: the file's
JSON header (format, version, table config, a BLAKE2b :func:`tensor_checksum` over
every tensor), :func:`read_table_file`, the checks of a config against the file's
tensors made before the table is allocated, and :func:`atomic_write_files`, the
write-to-temporary, fsync, rename primitive that checkpoint directories also use.
Import these names from :mod:`replaydb.checkpoint`, which re-exports them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from replaydb._untrusted import (
    expect_int,
    expect_json,
    parse_json,
    regular_file,
    remove_stale_temporaries,
)
from replaydb.errors import CheckpointError
from replaydb.spec import dtype_name

__all__ = [
    "FORMAT_VERSION",
    "TABLE_FORMAT",
    "atomic_write_files",
    "fsync_dir",
    "load_table",
    "read_table_file",
    "save_table",
    "tensor_checksum",
]

TABLE_FORMAT = "replaydb.table"
FORMAT_VERSION = 1


def tensor_checksum(tensors: Mapping[str, torch.Tensor], config: Any = None) -> str:
    """BLAKE2b digest over names, dtypes, shapes and bytes of ``tensors`` (sorted by name).

    Args:
        tensors: The tensors to digest.
        config: JSON-serializable metadata digested with them (a table's config), so
            a flipped byte in the JSON is caught too.

    Example:
        >>> len(tensor_checksum({"a": torch.zeros(3)}))
        32
    """
    h = hashlib.blake2b(digest_size=16)
    if config is not None:
        h.update(json.dumps(config, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{dtype_name(t.dtype)}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")


def atomic_write_files(writers: Mapping[Path, Callable[[Path], None]]) -> None:
    """Write several files so that each appears whole or not at all.

    Each writer is called with a temporary path beside its target; when every
    writer has succeeded, the files are fsynced and renamed into place in the
    order given. On any error the temporary files are removed and the targets
    are untouched.

    Args:
        writers: ``target path -> function writing that file's content to a path``.

    Raises:
        OSError: From the writers or the file system (disk full, read-only, ...).
    """
    for parent in {target.parent for target in writers}:
        remove_stale_temporaries(parent)
    tmps: list[tuple[Path, Path]] = []
    try:
        for target, write in writers.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = _tmp_name(target)
            tmps.append((tmp, target))
            write(tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        for tmp, target in tmps:
            os.replace(tmp, target)
        for parent in {t.parent for _, t in tmps}:
            fsync_dir(parent)
    finally:
        for tmp, _ in tmps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _save_safetensors(
    tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str], path: Path
) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path), dict(meta))


def read_table_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a table file's metadata and tensors, checking format, types and checksum.

    Args:
        path: The ``.safetensors`` file (a regular file).

    Returns:
        ``(metadata, tensors)``; the metadata's ``config`` has been checked for its
        JSON types (not yet against the tensors: :func:`load_table` does that).

    Raises:
        CheckpointError: If the file is missing, not a regular file, truncated,
            corrupt, not a table file, or its metadata has the wrong shape.

    Example:
        >>> from replaydb import Table, Spec
        >>> p = save_table(Table(Spec({"x": (1,)}), 4), "/tmp/t.safetensors")
        >>> read_table_file(p)[0]["config"]["capacity"]
        4
    """
    from safetensors import safe_open

    p = Path(path)
    regular_file(p, "table file")
    where = repr(str(p))
    try:
        with safe_open(str(p), framework="pt") as fh:
            raw_meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(
            f"{where} is not a readable safetensors file (truncated or corrupt?): {exc}"
        ) from exc
    if "replaydb" not in raw_meta:
        raise CheckpointError(
            f"{where} is a safetensors file but not a replaydb table "
            "(no 'replaydb' metadata); Velora-format buffers load with ReplayBuffer.load"
        )
    meta = parse_json(raw_meta["replaydb"], f"{where}: the metadata")
    expect_json(meta, dict, f"{where}: the metadata")
    if meta.get("format") != TABLE_FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{where}: format {meta.get('format')!r} version {meta.get('format_version')!r} "
            f"is not {TABLE_FORMAT!r} version {FORMAT_VERSION}; upgrade replaydb to read it"
        )
    try:
        digest = tensor_checksum(tensors, meta.get("config"))
    except (RecursionError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{where}: the config cannot be digested ({exc})") from exc
    if digest != meta.get("checksum"):
        raise CheckpointError(
            f"{where}: checksum mismatch (stored {meta.get('checksum')}, computed {digest}); "
            "the file is corrupt — restore it from another checkpoint"
        )
    expect_json(meta.get("extra", {}), dict, f"{where}: the metadata's 'extra'")
    _check_config(meta.get("config"), f"{where}: the table config is invalid: config")
    return meta, tensors


# key -> (JSON type, required)
_CONFIG_KEYS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "name": (str, False),
    "capacity": (int, True),
    "sequence_length": (int, True),
    "max_times_sampled": ((int, type(None)), False),
    "pad": (bool, False),
    "spec": (dict, True),
    "sampler": (dict, True),
    "rate_limiter": (dict, True),
    "device": (str, False),
}


def _check_config(config: Any, where: str) -> None:
    """Check the JSON shape of a table config (values are checked by the constructors)."""
    expect_json(config, dict, where)
    for key, (kind, required) in _CONFIG_KEYS.items():
        if key not in config:
            if required:
                raise CheckpointError(f"{where} has no {key!r} key")
            continue
        expect_json(config[key], kind, f"{where}.{key}")
    expect_int(config["capacity"], f"{where}.capacity", 1)
    expect_int(config["sequence_length"], f"{where}.sequence_length", 1)
    if not config["spec"]:
        raise CheckpointError(f"{where}.spec has no fields")
    for name, field in config["spec"].items():
        at = f"{where}.spec.{name}"
        expect_json(field, dict, at)
        expect_json(field.get("dtype"), str, f"{at}.dtype")
        for i, dim in enumerate(expect_json(field.get("shape"), list, f"{at}.shape")):
            expect_int(dim, f"{at}.shape[{i}]")
    for part in ("sampler", "rate_limiter"):
        expect_json(config[part].get("type"), str, f"{where}.{part}.type")


def save_table(
    table: Any, path: str | os.PathLike[str], extra: Mapping[str, Any] | None = None
) -> Path:
    """Save a table to one ``.safetensors`` file, atomically.

    Temporaries left in the target directory by saves that were killed are removed
    first (only those whose process is gone).

    Args:
        table: The :class:`~replaydb.Table` to save.
        path: The file to write (``.safetensors`` is appended if missing).
        extra: More JSON-serializable metadata to store beside the table's config.

    Returns:
        The path written.

    Raises:
        CheckpointError: If ``path`` is a directory.
        OSError: If the disk is full or read-only (the previous file is untouched).

    Example:
        >>> from replaydb import Table, Spec
        >>> save_table(Table(Spec({"x": (1,)}), 4), "/tmp/t.safetensors").name
        't.safetensors'
    """
    p = Path(path)
    if p.suffix != ".safetensors":
        p = p.with_name(p.name + ".safetensors")
    if p.is_dir():
        raise CheckpointError(f"{str(p)!r} is a directory; give a file path to save the table to")
    config, tensors = table.snapshot()
    meta = {
        "format": TABLE_FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config,
        "checksum": tensor_checksum(tensors, config),
        "extra": dict(extra or {}),
    }
    encoded = {"replaydb": json.dumps(meta)}
    atomic_write_files({p: lambda tmp: _save_safetensors(tensors, encoded, tmp)})
    return p


def load_table(path: str | os.PathLike[str], device: torch.device | str | None = None) -> Any:
    """Load a table saved by :func:`save_table`, checking it against its metadata.

    The file is checked whole before the table is allocated: checksum, the JSON
    types of its config, and every tensor's name, dtype and shape against what
    that config implies, so a tampered config cannot make replaydb allocate more
    than the file's own tensors account for.

    Args:
        path: The ``.safetensors`` file (the suffix may be omitted).
        device: Where to put the table (default: where it was saved from).

    Returns:
        The restored :class:`~replaydb.Table`; sampling continues exactly as it would have.

    Raises:
        CheckpointError: If the file is missing, corrupt, or inconsistent.

    Example:
        >>> from replaydb import Table, Spec
        >>> p = save_table(Table(Spec({"x": (1,)}), 4), "/tmp/t.safetensors")
        >>> load_table(p).capacity
        4
    """
    from replaydb.table import Table

    p = Path(path)
    if not p.exists() and p.suffix != ".safetensors":
        p = p.with_name(p.name + ".safetensors")
    remove_stale_temporaries(p.parent)
    meta, tensors = read_table_file(p)
    where = repr(str(p))
    config = meta["config"]
    _check_layout(config, tensors, where)
    try:
        table = Table.from_config(config, device=device)
    except (RuntimeError, AssertionError, MemoryError) as exc:  # e.g. saved on a missing GPU
        target = device if device is not None else config.get("device")
        raise CheckpointError(
            f"{where}: cannot create the table on device {str(target)!r} ({exc}); "
            "pass device='cpu' (or another device this host has) to load it"
        ) from exc
    except Exception as exc:  # a constructor rejected a value of the config
        raise CheckpointError(f"{where}: the table config is invalid ({exc})") from exc
    _check_state(table, tensors, where)
    try:
        table.load_state_dict(tensors)
    except Exception as exc:  # a sampler or limiter rejected its state
        raise CheckpointError(f"{where}: the table state is invalid ({exc})") from exc
    return table


_PREFIX_KEYS = (
    "storage.group.",
    "storage.meta.",
    "items.key",
    "items.priority",
    "items.times_sampled",
)


def _template_state(
    config: Mapping[str, Any], capacity: int, where: str
) -> dict[str, torch.Tensor]:
    """State of a tiny CPU table of ``config``'s kind: names, dtypes, capacity-free shapes.

    The spec's fields become scalars (same names and dtypes, so the same groups),
    and the capacity is ``capacity``, so building it costs nothing whatever the
    config claims.
    """
    from replaydb.table import Table

    small = dict(config)
    small["capacity"] = capacity
    small["sequence_length"] = min(int(config["sequence_length"]), 2)
    small["spec"] = {k: {"shape": [], "dtype": v["dtype"]} for k, v in config["spec"].items()}
    small["device"] = "cpu"
    try:
        return Table.from_config(small, device="cpu").state_dict()
    except Exception as exc:  # a constructor rejected a value of the config
        raise CheckpointError(f"{where}: the table config is invalid ({exc})") from exc


def _check_layout(
    config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], where: str
) -> None:
    """Check the tensors against the config before allocating the table it describes."""
    from replaydb.spec import Spec

    try:
        spec = Spec.from_json(config["spec"])
    except Exception as exc:
        raise CheckpointError(f"{where}: the table config is invalid ({exc})") from exc
    small, larger = _template_state(config, 2, where), _template_state(config, 4, where)
    missing = sorted(set(small) - set(tensors))
    unknown = sorted(set(tensors) - set(small))
    if missing or unknown:
        raise CheckpointError(
            f"{where}: tensors do not match the table config (missing {missing}, unknown {unknown})"
        )
    total_t = tensors["storage.total"]
    if total_t.shape != (1,) or total_t.dtype != torch.int64 or int(total_t[0]) < 0:
        raise CheckpointError(f"{where}: 'storage.total' must be one int64 >= 0")
    for name, exp in small.items():
        got = tensors[name]
        if got.dtype != exp.dtype:
            raise CheckpointError(
                f"{where}: tensor {name!r} has dtype {dtype_name(got.dtype)}, "
                f"expected {dtype_name(exp.dtype)}"
            )
    total, capacity = int(total_t[0]), int(config["capacity"])
    n = min(total, capacity)
    widths: dict[str, int] = {}
    for field in spec.values():
        widths[dtype_name(field.dtype)] = widths.get(dtype_name(field.dtype), 0) + field.numel
    evidence = n  # rows of the ring the file accounts for
    scaled = False
    for name, exp in small.items():
        got = tensors[name]
        if name.startswith("storage.group."):
            want: tuple[int, ...] = (n, widths[name[len("storage.group.") :]])
        elif name.startswith(_PREFIX_KEYS):
            want = (n, *exp.shape[1:])
        elif name.startswith("storage.streams."):
            want = (int(tensors["storage.streams.last_key"].shape[0]),)
        elif exp.shape != larger[name].shape:  # state that grows with the capacity
            scaled = True
            evidence = max(evidence, got.numel())
            continue
        else:
            want = tuple(exp.shape)
        if tuple(got.shape) != want:
            raise CheckpointError(
                f"{where}: tensor {name!r} has shape {tuple(got.shape)}, expected {want}"
            )
    if scaled and evidence < capacity:
        raise CheckpointError(
            f"{where}: the config's capacity {capacity:,} is larger than the file's tensors "
            f"account for ({evidence:,} slots); the config does not match the tensors"
        )
    _check_values(tensors, total, capacity, where)


def _check_values(
    tensors: Mapping[str, torch.Tensor], total: int, capacity: int, where: str
) -> None:
    """Range checks on the bookkeeping tensors, so a crafted file cannot index out of bounds."""

    def within(name: str, low: int, high: int) -> None:
        t = tensors[name]
        if t.numel() and (int(t.min()) < low or int(t.max()) >= high):
            raise CheckpointError(
                f"{where}: tensor {name!r} holds values outside [{low}, {high}); "
                "the file is corrupt or was not written by replaydb"
            )

    keys = tensors["items.key"]
    if keys.numel() and int(keys.max()) >= total:
        raise CheckpointError(f"{where}: item keys exceed the number of steps written")
    within("items.key", -1, max(total, 1))
    within("storage.meta.key", 0, max(total, 1))
    within("storage.meta.prev", -1, max(total, 1))
    within("storage.meta.next", -1, max(total, 1))
    within("storage.meta.stream", 0, 2**62)
    within("storage.streams.last_key", -1, max(total, 1))
    within("items.times_sampled", 0, 2**62)
    pri = tensors["items.priority"]
    if pri.numel() and not bool(((pri >= 0) & torch.isfinite(pri)).all()):
        raise CheckpointError(
            f"{where}: tensor 'items.priority' holds negative or non-finite values"
        )
    scalars = tensors["items.scalars"]
    if scalars.numel() != 2 or not 0 <= float(scalars[0]) <= capacity:
        raise CheckpointError(f"{where}: tensor 'items.scalars' is not (size, max priority)")


def _check_state(table: Any, tensors: Mapping[str, torch.Tensor], where: str) -> None:
    """Exact shapes against the allocated table (the sampler's capacity-sized state)."""
    for name, exp in table.state_dict().items():
        got = tensors[name]
        if name.startswith(_PREFIX_KEYS) or name.startswith("storage.streams."):
            continue  # checked by _check_layout
        if tuple(got.shape) != tuple(exp.shape) or got.dtype != exp.dtype:
            raise CheckpointError(
                f"{where}: tensor {name!r} has shape {tuple(got.shape)}, "
                f"expected {tuple(exp.shape)}"
            )
