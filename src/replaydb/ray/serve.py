"""`replaydb serve`: a Ray-backed server from a TOML or JSON config."""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from replaydb._validate import is_int, is_number
from replaydb.checkpoint import latest_checkpoint
from replaydb.errors import CheckpointError, InvalidArgumentError
from replaydb.rate_limiters import rate_limiter_from_config
from replaydb.ray._common import _ray
from replaydb.ray._connect import _LOOPBACK
from replaydb.ray.server import RayServer
from replaydb.samplers import sampler_from_config
from replaydb.spec import Spec
from replaydb.table import Table

__all__ = ["load_serve_config", "serve_command"]


def _spec_from_config(name: str, spec: Any) -> Spec:
    if not isinstance(spec, Mapping) or not spec:
        raise InvalidArgumentError(
            f"tables.{name}.spec must be a non-empty table of fields, got {spec!r}; "
            'e.g. spec = {obs = [4], reward = []} or {obs = {shape = [4], dtype = "float32"}}'
        )
    fields: dict[str, Any] = {}
    for field_name, value in spec.items():
        try:
            if isinstance(value, Mapping):
                fields[field_name] = Spec.from_json(
                    {field_name: dict(value, dtype=value.get("dtype", "float32"))}
                )[field_name]
            elif isinstance(value, list | tuple):
                fields[field_name] = Spec({field_name: tuple(value)})[field_name]
            else:
                raise InvalidArgumentError(
                    f"must be a shape list like [4] or a table with shape and dtype, "
                    f"got {value!r:.80}"
                )
        except (InvalidArgumentError, TypeError, KeyError) as exc:
            raise InvalidArgumentError(f"tables.{name}.spec.{field_name}: {exc}") from exc
    return Spec(fields)


_TABLE_KEYS = {"spec", "capacity", "sampler", "limiter", "sequence_length", "max_times_sampled"}
_TOP_KEYS = {
    "name",
    "address",
    "shards",
    "checkpoint_dir",
    "checkpoint_interval_s",
    "keep",
    "restore",
    "tables",
}


def load_serve_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    r"""Read a ``replaydb serve`` config (``.json`` or ``.toml``) and build its table templates.

    Args:
        path: The config file.

    Returns:
        The config dict, with ``"tables"`` mapped to :class:`~replaydb.table.Table` templates.

    Raises:
        InvalidArgumentError: Naming the first bad or unknown key.

    Example:
        >>> _ = Path("serve.toml").write_text(
        ...     'shards = 2\n[tables.replay]\ncapacity = 100\nspec = {obs = [4]}\n'
        ... )
        >>> load_serve_config("serve.toml")["shards"]
        2
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidArgumentError(f"config file {str(p)!r} does not exist; check the path")
    try:
        text = p.read_bytes()[: 1 << 24].decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(
            f"config file {str(p)!r} is not readable UTF-8 text ({exc})"
        ) from exc
    try:
        if p.suffix == ".toml":
            import tomllib

            raw: Any = tomllib.loads(text)
        else:
            raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidArgumentError(f"config file {str(p)!r} does not parse: {exc}") from exc
    if not isinstance(raw, dict):
        raise InvalidArgumentError(
            f"config file {str(p)!r} must hold a table of settings (a JSON object), "
            f"got {type(raw).__name__}"
        )
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise InvalidArgumentError(
            f"config keys {unknown} are unknown; expected some of {sorted(_TOP_KEYS)}"
        )
    _check_serve_settings(raw)
    tables = raw.get("tables")
    if not isinstance(tables, Mapping) or not tables:
        raise InvalidArgumentError(
            "config needs a non-empty 'tables' section, e.g. [tables.replay] with spec and capacity"
        )
    built: dict[str, Table] = {}
    for name, tc in tables.items():
        if not isinstance(tc, Mapping):
            raise InvalidArgumentError(
                f"tables.{name} must be a table with spec and capacity, got {tc!r:.80}"
            )
        bad = sorted(set(tc) - _TABLE_KEYS)
        if bad:
            raise InvalidArgumentError(
                f"tables.{name}: keys {bad} are unknown; expected some of {sorted(_TABLE_KEYS)}"
            )
        if "capacity" not in tc or "spec" not in tc:
            raise InvalidArgumentError(f"tables.{name} needs 'spec' and 'capacity'")
        spec = _spec_from_config(name, tc["spec"])
        sampler = _from_config(name, "sampler", tc.get("sampler", {"type": "Uniform"}))
        limiter = _from_config(name, "limiter", tc.get("limiter", {"type": "MinSize"}))
        try:
            built[name] = Table(
                spec,
                tc["capacity"],
                sampler=sampler,
                rate_limiter=limiter,
                sequence_length=tc.get("sequence_length", 1),
                max_times_sampled=tc.get("max_times_sampled"),
                name=name,
            )
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"tables.{name}: {exc}") from exc
    out = dict(raw)
    out["tables"] = built
    return out


def _from_config(table: str, key: str, config: Any) -> Any:
    """A sampler or rate limiter from its config; any failure names ``tables.<t>.<key>``."""
    if not isinstance(config, Mapping):
        raise InvalidArgumentError(
            f'tables.{table}.{key} must be a table like {{type = "Uniform"}}, got {config!r:.80}'
        )
    build = sampler_from_config if key == "sampler" else rate_limiter_from_config
    try:
        return build(config)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"tables.{table}.{key}: {exc}") from exc
    except (TypeError, ValueError, KeyError) as exc:
        raise InvalidArgumentError(
            f"tables.{table}.{key} = {dict(config)!r:.120} is invalid ({exc}); give "
            "numbers where numbers are expected"
        ) from exc


def _check_serve_settings(raw: Mapping[str, Any]) -> None:
    """Check the top-level settings' types before anything starts."""
    for key in ("shards", "keep"):
        v = raw.get(key, 1)
        if not is_int(v) or v < 1:
            raise InvalidArgumentError(f"config key {key!r} must be an int >= 1, got {v!r:.80}")
    for key in ("name", "address", "checkpoint_dir"):
        v = raw.get(key)
        if v is not None and not isinstance(v, str):
            raise InvalidArgumentError(f"config key {key!r} must be a string, got {v!r:.80}")
    v = raw.get("checkpoint_interval_s")
    if v is not None and (not is_number(v) or not math.isfinite(v) or v <= 0):
        raise InvalidArgumentError(
            f"config key 'checkpoint_interval_s' must be a number > 0, got {v!r:.80}"
        )
    if not isinstance(raw.get("restore", True), bool):
        raise InvalidArgumentError(
            f"config key 'restore' must be true or false, got {raw.get('restore')!r:.80}"
        )


def _connect_lines(name: str, address: str) -> list[str]:
    """What ``replaydb serve`` prints: the address and a connect line that works as printed."""
    import shlex
    import sys

    token = os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
    where = " (loopback only)" if address.startswith(_LOOPBACK + ":") else ""
    call = f"RayClient.connect({json.dumps(name)}, address={json.dumps(address)})"
    code = f"from replaydb.ray import RayClient; print({call}.tables())"
    env = "RAY_AUTH_MODE=token " if token else ""
    lines = [f"Ray address: {address}{where}"]
    if token:
        lines.append(
            "Ray token authentication is on: a client needs RAY_AUTH_MODE=token in its "
            "environment and this cluster's token (~/.ray/auth_token, or RAY_AUTH_TOKEN)."
        )
    lines += [
        "Connect from a shell on this machine with:",
        f"    {env}{shlex.quote(sys.executable)} -c {shlex.quote(code)}",
        f"or from a Python driver started with {env or 'this environment '}as:",
        f"    {call}",
        f"and from a Ray task or actor of this cluster: RayClient.connect({json.dumps(name)})",
    ]
    return lines


def serve_command(argv: list[str]) -> int:
    """``replaydb serve CONFIG [--for SECONDS]``: run a Ray-backed server until interrupted.

    Args:
        argv: The arguments after ``serve``.

    Returns:
        The exit status (0 on a clean stop, 2 for a bad config).

    Example:
        >>> serve_command(["serve.toml"])  # doctest: +SKIP
    """
    import argparse
    import signal
    import sys

    parser = argparse.ArgumentParser(
        prog="replaydb serve",
        description="Serve replay tables on Ray shard actors (see docs/ray.md for the format).",
    )
    parser.add_argument("config", help="a .toml or .json file describing tables and shards")
    parser.add_argument(
        "--for",
        dest="duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: run until Ctrl-C or SIGTERM)",
    )
    args = parser.parse_args(argv)
    try:
        cfg = load_serve_config(args.config)
        name = str(cfg.get("name", "replaydb"))
        ckpt_dir = cfg.get("checkpoint_dir")
        options: dict[str, Any] = {
            "checkpoint_dir": ckpt_dir,
            "keep": int(cfg.get("keep", 1)),
            "checkpoint_interval_s": cfg.get("checkpoint_interval_s"),
            "address": cfg.get("address") or None,
        }
        shards = int(cfg.get("shards", 1))
        if cfg.get("restore", True) and ckpt_dir and latest_checkpoint(ckpt_dir) is not None:
            server = RayServer.from_checkpoint(ckpt_dir, num_shards=shards, **options)
            origin = f"restored from {latest_checkpoint(ckpt_dir)}"
        else:
            server = RayServer(cfg["tables"], num_shards=shards, **options)
            origin = "empty"
        server.register(name)
    except (InvalidArgumentError, CheckpointError) as exc:
        print(f"replaydb serve: {exc}", file=sys.stderr)
        return 2
    ray = _ray()
    address = str(ray.get_runtime_context().gcs_address)
    print(
        f"replaydb serving {server.tables()} as {name!r} on {shards} shard(s) per table ({origin})"
    )
    for line in _connect_lines(name, address):
        print(line)
    sys.stdout.flush()
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGTERM)
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait(args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
        if ckpt_dir:
            print(f"final checkpoint: {server.checkpoint()}")
        server.close()
    return 0
