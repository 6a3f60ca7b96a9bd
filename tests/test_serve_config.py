"""`replaydb serve` configs: each bad file is one InvalidArgumentError naming the key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from replaydb.errors import InvalidArgumentError
from replaydb.ray import load_serve_config, serve_command

GOOD_TABLE = {"capacity": 10, "spec": {"x": [1]}}


def _write(tmp_path: Path, config: Any) -> Path:
    p = tmp_path / "serve.json"
    p.write_text(json.dumps(config))
    return p


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (5, "must hold a table of settings .* got int"),
        ([1, 2], "must hold a table of settings .* got list"),
        ({"tables": {"t": 5}}, "tables.t must be a table with spec and capacity, got 5"),
        ({"shards": "x", "tables": {"t": GOOD_TABLE}}, "'shards' must be an int >= 1, got 'x'"),
        ({"shards": 0, "tables": {"t": GOOD_TABLE}}, "'shards' must be an int >= 1, got 0"),
        ({"keep": "many", "tables": {"t": GOOD_TABLE}}, "'keep' must be an int >= 1"),
        ({"name": 3, "tables": {"t": GOOD_TABLE}}, "'name' must be a string"),
        ({"restore": "yes", "tables": {"t": GOOD_TABLE}}, "'restore' must be true or false"),
        (
            {"checkpoint_interval_s": "x", "tables": {"t": GOOD_TABLE}},
            "'checkpoint_interval_s' must be a number > 0",
        ),
        (
            {
                "tables": {
                    "t": dict(
                        GOOD_TABLE,
                        limiter={
                            "type": "SampleToInsertRatio",
                            "samples_per_insert": "x",
                            "min_size_to_sample": 1,
                            "error_buffer": 1,
                        },
                    )
                }
            },
            "tables.t.limiter",
        ),
        ({"tables": {"t": dict(GOOD_TABLE, limiter="fast")}}, "tables.t.limiter must be a table"),
        ({"tables": {"t": dict(GOOD_TABLE, sampler={"type": "Nope"})}}, "tables.t.sampler"),
        ({"tables": {"t": {"capacity": "x", "spec": {"x": [1]}}}}, "tables.t: capacity"),
        ({"tables": {"t": {"capacity": 10, "spec": {"x": ["a"]}}}}, "tables.t.spec.x"),
        ({"tables": {"t": {"capacity": 10, "spec": {"x": 4}}}}, "tables.t.spec.x"),
        ({"tables": {"t": {"capacity": 10, "spec": {"x": {"shape": [1], "dtype": 5}}}}}, "x"),
        ({"tables": {"t": dict(GOOD_TABLE, sequence_length="x")}}, "sequence_length"),
    ],
)
def test_bad_configs_name_the_key(tmp_path: Path, config: Any, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        load_serve_config(_write(tmp_path, config))


def test_unreadable_and_unparsable_files(tmp_path: Path) -> None:
    bad = tmp_path / "serve.json"
    bad.write_bytes(b"\xff\xfe{}")
    with pytest.raises(InvalidArgumentError, match="not readable UTF-8 text"):
        load_serve_config(bad)
    bad.write_text("[" * 100_000)
    with pytest.raises(InvalidArgumentError, match="does not parse"):
        load_serve_config(bad)
    toml = tmp_path / "serve.toml"
    toml.write_text("tables = [")
    with pytest.raises(InvalidArgumentError, match="does not parse"):
        load_serve_config(toml)


def test_serve_command_reports_bad_configs_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert serve_command([str(_write(tmp_path, {"shards": "x", "tables": {"t": GOOD_TABLE}}))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["replaydb serve: config key 'shards' must be an int >= 1, got 'x'"]


def test_a_good_config_builds_templates(tmp_path: Path) -> None:
    cfg = load_serve_config(
        _write(tmp_path, {"shards": 2, "keep": 3, "tables": {"t": dict(GOOD_TABLE)}})
    )
    assert cfg["shards"] == 2 and cfg["tables"]["t"].capacity == 10
