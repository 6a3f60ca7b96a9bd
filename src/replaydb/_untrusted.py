"""Reading files that may be damaged or hostile: the primitives every loader uses.

* :func:`read_small_file` / :func:`read_json` / :func:`parse_json`: regular files
  only (checked after a non-blocking open, so a FIFO or ``/dev/zero`` fails at
  once), at most :data:`MAX_JSON_BYTES`, UTF-8, parse and recursion errors turned
  into :class:`~replaydb.errors.CheckpointError`.
* :func:`expect_json`: one check of a parsed value's JSON type, whose message names
  the key path, the type found and the type expected.
* :func:`confined_path`: a file name read from a checkpoint, resolved and refused
  when it leads outside the checkpoint directory (absolute, ``..``, symlinks).
* :func:`remove_stale_temporaries`: temporaries of atomic writes whose process died.

The names are re-exported by :mod:`replaydb.checkpoint`; import them from there.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from replaydb.errors import CheckpointError

__all__ = [
    "MAX_JSON_BYTES",
    "confined_path",
    "expect_int",
    "expect_json",
    "parse_json",
    "process_is_gone",
    "read_json",
    "read_small_file",
    "regular_file",
    "remove_stale_temporaries",
]

#: The most bytes of JSON any loader reads (a manifest, Velora metadata, a table
#: file's header metadata); replaydb's own files are a few KiB.
MAX_JSON_BYTES = 16 * 2**20
# A temporary of atomic_write_files: .<name>.tmp-<pid>-<monotonic ns>
_TMP_FILE_RE = re.compile(r"^\..+\.tmp-(\d+)-\d+$")


_KIND_NAMES: dict[type, str] = {
    dict: "a JSON object",
    list: "a JSON array",
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    type(None): "null",
}


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    if value is None:
        return "null"
    return type(value).__name__


def expect_json(
    value: Any,
    kind: type | tuple[type, ...],
    where: str,
    error: type[Exception] = CheckpointError,
) -> Any:
    """Return ``value`` if it has the JSON type ``kind``, else raise ``error`` saying so.

    ``bool`` never passes for ``int`` or ``float``; an ``int`` passes for ``float``.
    The message names ``where`` (a key path), the type found and the type expected.

    Args:
        value: A value parsed from JSON (or TOML).
        kind: The expected Python type(s): ``dict``, ``list``, ``str``, ``int``,
            ``float``, ``bool``, ``type(None)``.
        where: The key path, e.g. ``"'manifest.json': tables.replay.file"``.
        error: The exception class to raise (default :class:`CheckpointError`).

    Returns:
        ``value`` unchanged.

    Raises:
        CheckpointError: (or ``error``) If ``value`` has another type.

    Example:
        >>> expect_json([1], list, "tables")
        [1]
        >>> expect_json("x", int, "capacity")
        Traceback (most recent call last):
        replaydb.errors.CheckpointError: capacity must be an integer, got a string ('x')
    """
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        wanted = " or ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise error(f"{where} must be {wanted}, got {_json_type(value)} ({shown})")
    return value


def expect_int(value: Any, where: str, minimum: int = 0) -> int:
    """Return ``value`` if it is a JSON integer >= ``minimum``, else raise a CheckpointError.

    Example:
        >>> expect_int(3, "capacity", 1)
        3
    """
    expect_json(value, int, where)
    if value < minimum:
        raise CheckpointError(f"{where} must be an integer >= {minimum}, got {value}")
    return int(value)


def parse_json(data: bytes | str, where: str) -> Any:
    """Parse JSON from an untrusted source.

    Args:
        data: The JSON text (bytes must be UTF-8).
        where: What the text is, for messages (e.g. the file name).

    Returns:
        The parsed value (any JSON type: check it with the caller's expectations).

    Raises:
        CheckpointError: If the text is over :data:`MAX_JSON_BYTES`, not UTF-8, not
            JSON, nested too deeply, or holds a number Python will not parse.

    Example:
        >>> parse_json(b'{"a": [1, 2]}', "example")
        {'a': [1, 2]}
    """
    if len(data) > MAX_JSON_BYTES:
        raise CheckpointError(
            f"{where}: {len(data):,} bytes of JSON is over the limit of {MAX_JSON_BYTES:,}; "
            "this is not a file replaydb wrote"
        )
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CheckpointError(f"{where} is not UTF-8 text ({exc})") from exc
    try:
        return json.loads(data)
    except RecursionError as exc:
        raise CheckpointError(f"{where}: the JSON is nested too deeply to be replaydb's") from exc
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
        raise CheckpointError(f"{where} is not valid JSON ({exc})") from exc


def read_small_file(path: str | os.PathLike[str], limit: int = MAX_JSON_BYTES) -> bytes:
    """Read a file from an untrusted place: a regular file of at most ``limit`` bytes.

    The file is opened without blocking and checked to be a regular file before a
    byte is read, so a FIFO or a link to ``/dev/zero`` fails at once; at most
    ``limit + 1`` bytes are ever read.

    Args:
        path: The file.
        limit: The most bytes accepted.

    Returns:
        The file's bytes.

    Raises:
        CheckpointError: If the file is missing, not a regular file or too large.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "m.json"
        >>> _ = p.write_text('{"format": 1}')
        >>> read_small_file(p)
        b'{"format": 1}'
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise CheckpointError(f"{str(p)!r} cannot be opened ({exc.strerror or exc})") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CheckpointError(f"{str(p)!r} is not a regular file; replaydb reads only files")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise CheckpointError(f"{str(p)!r} cannot be read ({exc.strerror or exc})") from exc
    finally:
        os.close(fd)
    if size > limit:
        raise CheckpointError(
            f"{str(p)!r} is over the limit of {limit:,} bytes; this is not a file replaydb wrote"
        )
    return b"".join(chunks)


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file from an untrusted place (see :func:`read_small_file`, :func:`parse_json`).

    Args:
        path: The file.

    Returns:
        The parsed value (any JSON type: check it with :func:`expect_json`).

    Raises:
        CheckpointError: If the file is missing, not a regular file, over
            :data:`MAX_JSON_BYTES`, not UTF-8 or not JSON.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "m.json"
        >>> _ = p.write_text('{"format": 1}')
        >>> read_json(p)
        {'format': 1}
    """
    return parse_json(read_small_file(path), repr(str(Path(path))))


def confined_path(root: str | os.PathLike[str], relative: Any, where: str = "file") -> Path:
    """Resolve a file name read from a checkpoint, refusing anything outside ``root``.

    Absolute paths, ``..`` components and symbolic links that lead out of ``root``
    are rejected; links that stay inside are followed.

    Args:
        root: The checkpoint directory.
        relative: The name as read from the manifest (must be a relative path string).
        where: The manifest key it came from, for messages.

    Returns:
        The resolved path, inside ``root``.

    Raises:
        CheckpointError: If ``relative`` is not a non-empty relative path or it resolves
            outside ``root``.

    Example:
        >>> confined_path("/tmp/ckpt", "t.safetensors").name
        't.safetensors'
    """
    expect_json(relative, str, where)
    if not relative or "\x00" in relative:
        raise CheckpointError(
            f"{where} must be a file name inside the checkpoint, got {relative!r}"
        )
    base = Path(root).resolve()
    rel = Path(relative)
    if rel.is_absolute() or rel.drive or ".." in rel.parts:
        raise CheckpointError(
            f"{where} = {relative!r} points outside the checkpoint directory {str(base)!r}; "
            "checkpoints name only files inside their own directory"
        )
    try:
        resolved = (base / rel).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise CheckpointError(f"{where} = {relative!r} cannot be resolved ({exc})") from exc
    if resolved == base or not resolved.is_relative_to(base):
        raise CheckpointError(
            f"{where} = {relative!r} resolves to {str(resolved)!r}, outside the checkpoint "
            f"directory {str(base)!r} (a symbolic link?); checkpoints name only files inside "
            "their own directory"
        )
    return resolved


def regular_file(p: Path, what: str) -> None:
    """Raise a CheckpointError unless ``p`` is (or links to) a regular file.

    Example:
        >>> regular_file(Path("/dev/zero"), "file")
        Traceback (most recent call last):
        replaydb.errors.CheckpointError: '/dev/zero' is not a regular file; give the file itself
    """
    try:
        mode = p.stat().st_mode
    except OSError as exc:
        raise CheckpointError(f"no {what} at {str(p)!r}; check the path") from exc
    if stat.S_ISDIR(mode):
        raise CheckpointError(f"no {what} at {str(p)!r} (a directory); give the file's path")
    if not stat.S_ISREG(mode):
        raise CheckpointError(f"{str(p)!r} is not a regular file; give the {what} itself")


def remove_stale_temporaries(directory: str | os.PathLike[str], prefix: str = "") -> list[Path]:
    """Delete temporaries of atomic writes whose writing process has died.

    A save writes ``.<name>.tmp-<pid>-<ns>`` beside its target and renames it; a
    save killed before the rename leaves that file, a whole copy of the state.
    Files whose process is alive (this one included) are never touched, nor is
    anything not named like a replaydb temporary. Errors are ignored: a
    read-only directory keeps its leftovers.

    Args:
        directory: The directory to clean.
        prefix: Only temporaries of files whose name starts with it (a Velora
            buffer's ``prefix`` cleans its own files, not a neighbour's).

    Returns:
        The files removed.

    Example:
        >>> remove_stale_temporaries("/nonexistent")
        []
    """
    removed: list[Path] = []
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TMP_FILE_RE.match(p.name)
        if m is None or not p.name.startswith("." + prefix):
            continue
        if not process_is_gone(int(m.group(1))):
            continue
        with contextlib.suppress(OSError):
            if p.is_file() and not p.is_symlink():
                p.unlink()
                removed.append(p)
    return removed


def process_is_gone(pid: int) -> bool:
    """Whether no process ``pid`` runs on this host (never true for this process).

    Example:
        >>> process_is_gone(os.getpid())
        False
    """
    if pid == os.getpid() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, OSError):
        return False  # alive under another user, or not a pid this host can ask about
    return False
