"""``replaydb serve CONFIG``: the config is checked, then Ray's ``serve_command`` runs.

:func:`check_serve_config` checks the JSON/TOML shape of the config before Ray
starts, so a bad config is a one-line error; without Ray the command says how
to install it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from replaydb.cli._common import _fail, _UsageError
from replaydb.errors import ReplayError


def run(argv: list[str]) -> int:
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
        >>> import json, tempfile
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
