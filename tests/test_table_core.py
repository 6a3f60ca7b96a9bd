"""The Table core after its split: one verb per job, one validation module, one set of codes.

``restore_steps`` is the one way back in (plain steps or ``live_steps`` output),
``items(fields=())`` lists keys and priorities without gathering data, the verbs they
replace still work for one release with a ``DeprecationWarning``, and the core
modules stay small enough to read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from replaydb._constants import (
    END_NONE,
    END_TERMINATED,
    END_TRUNCATED,
    NUMPY_DTYPES,
    end_code,
)
from replaydb._validate import check_int, check_unit_interval, priority_column, stream_column
from replaydb.errors import InvalidArgumentError, InvalidTypeError, SpecMismatchError
from replaydb.rate_limiters import SampleToInsertRatio
from replaydb.samplers import Prioritized
from replaydb.spec import Spec
from replaydb.storage import END_TRUNCATED as STORAGE_END_TRUNCATED
from replaydb.table import LiveSteps, Sample, Table, TableInfo

SRC = Path(__file__).resolve().parents[1] / "src" / "replaydb"
#: Modules the table helper owns: each stays under the limit.
CORE_MODULES = (
    "table.py",
    "spec.py",
    "nest.py",
    "nstep.py",
    "checkpoint.py",
    "errors.py",
    "_items.py",
    "_waiting.py",
    "_table_checks.py",
    "_links.py",
    "_sampling.py",
    "_table_state.py",
    "_records.py",
    "_validate.py",
    "_constants.py",
    "_casting.py",
)
#: Modules still over the limit, being shrunk elsewhere; table.py holds every verb's
#: docstring (about 520 lines of the file) with one- or two-line bodies.
OVER_LIMIT: dict[str, int] = {}
LIMIT = 650


def _table(capacity: int = 8, **kwargs: object) -> Table:
    return Table(Spec({"x": ()}), capacity, **kwargs)  # type: ignore[arg-type]


#: Modules of other areas still over the limit, being split by their owners.
SHRINKING: set[str] = set()


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


@pytest.mark.parametrize("name", CORE_MODULES)
def test_core_modules_stay_small(name: str) -> None:
    lines = _lines(SRC / name)
    assert lines <= OVER_LIMIT.get(name, LIMIT), f"{name} has {lines} lines"


def test_no_other_module_over_the_limit() -> None:
    over = (
        {str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if _lines(p) > LIMIT}
        - SHRINKING
        - set(OVER_LIMIT)
    )
    assert not over, f"split these modules along their seams (limit {LIMIT} lines): {over}"


def test_records_keep_their_public_home() -> None:
    for record in (Sample, TableInfo, LiveSteps):
        assert record.__module__ == "replaydb.table"


def test_numpy_ints_are_welcome_and_stored_as_ints(tmp_path: Path) -> None:
    t = Table(
        Spec({"x": ()}),
        np.int64(8),
        sequence_length=np.int32(2),
        max_times_sampled=np.int64(3),
        path=tmp_path / "t",
    )
    config = t.config()
    assert type(config["sequence_length"]) is int and type(config["max_times_sampled"]) is int
    t.extend({"x": torch.arange(4.0)})
    assert t.checkpoint() == 4 and Table.open(tmp_path / "t").sequence_length == 2


# ----------------------------------------------------------------- restore_steps
def test_restore_steps_of_plain_steps_counts_inserts_and_takes_max_priority() -> None:
    t = _table(sampler=Prioritized(alpha=1.0))
    t.extend({"x": torch.zeros(2)}, priorities=torch.tensor([5.0, 1.0]))
    assert t.restore_steps({"x": torch.ones(3)}) == 5
    assert t.info().inserts == 5
    keys = t.items(fields=()).keys.tolist()
    assert keys == [0, 1, 2, 3, 4]
    assert t.items(fields=()).priorities.tolist() == [5.0, 1.0, 5.0, 5.0, 5.0]


def test_restore_steps_past_a_limiter_that_would_block() -> None:
    t = _table(rate_limiter=SampleToInsertRatio(1.0, 1, 2.0))
    assert t.restore_steps({"x": torch.arange(6.0)}) == 6  # extend would block
    assert t.info().inserts == 6


def test_restore_steps_with_total_places_keys_as_they_were() -> None:
    t = _table(4)
    assert t.restore_steps({"x": torch.arange(3.0)}, total_steps_written=9) == 3
    assert t.total_steps_written == 9
    assert sorted(t.items().keys.tolist()) == [6, 7, 8]
    assert t.storage.fields["x"][[2, 3, 0]].tolist() == [0.0, 1.0, 2.0]


def test_restore_steps_with_total_rejects_without_writing() -> None:
    t = _table(4)
    with pytest.raises(SpecMismatchError):
        t.restore_steps({"y": torch.zeros(2)}, total_steps_written=5)
    with pytest.raises(InvalidArgumentError, match="total_steps_written must be an int >= 3"):
        t.restore_steps({"x": torch.zeros(3)}, total_steps_written=2)
    with pytest.raises(InvalidArgumentError, match="capacity 4"):
        t.restore_steps({"x": torch.zeros(5)}, total_steps_written=5)
    with pytest.raises(InvalidArgumentError, match="total_steps_written must be an int"):
        t.restore_steps({"x": torch.zeros(1)}, total_steps_written=True)  # type: ignore[arg-type]
    assert t.total_steps_written == 0 and len(t) == 0
    t.extend({"x": torch.zeros(1)})
    with pytest.raises(InvalidArgumentError, match="needs an empty table"):
        t.restore_steps({"x": torch.zeros(1)}, total_steps_written=4)
    assert t.total_steps_written == 1 and len(t) == 1
    seq = _table(8, sequence_length=2)
    with pytest.raises(InvalidArgumentError, match="single-step tables"):
        seq.restore_steps({"x": torch.zeros(2)}, total_steps_written=2)
    assert seq.total_steps_written == 0


def test_restore_steps_of_plain_steps_into_a_sequence_table() -> None:
    seq = _table(8, sequence_length=3)
    assert seq.restore_steps({"x": torch.arange(4.0)}) == 2
    assert seq.items()["x"].tolist() == [[0.0, 1.0, 2.0], [1.0, 2.0, 3.0]]


def test_restore_steps_rejects_bad_counters_untouched() -> None:
    src = _table()
    src.extend({"x": torch.arange(3.0)})
    live = src.live_steps()
    dst = _table()
    for bad in (-1, 1.0, True):
        with pytest.raises(InvalidArgumentError, match=r"steps\.inserts must be an int >= 0"):
            dst.restore_steps(
                LiveSteps(live.data, live.streams, live.ends, live.priorities, bad, 0)  # type: ignore[arg-type]
            )
    assert dst.total_steps_written == 0 and dst.info().inserts == 0


# ------------------------------------------------------------------- items(fields)
def test_items_fields_gathers_only_what_is_asked() -> None:
    t = Table(Spec({"x": (2,), "y": ()}), 8, sequence_length=2)
    t.extend({"x": torch.arange(10.0).reshape(5, 2), "y": torch.arange(5.0)})
    full = t.items()
    none = t.items(fields=())
    only_y = t.items(fields=["y"])
    assert none.data == {} and set(only_y.data) == {"y"}
    assert torch.equal(only_y["y"], full["y"]) and only_y["y"].shape == (4, 2)
    assert torch.equal(none.keys, full.keys) and torch.equal(none.priorities, full.priorities)


def test_items_fields_rejects_unknown_names_and_a_bare_string() -> None:
    t = _table()
    with pytest.raises(InvalidArgumentError, match=r"fields \['z'\] are not in the spec"):
        t.items(fields=["z"])
    with pytest.raises(InvalidArgumentError, match=r"pass \['x'\]"):
        t.items(fields="x")


# ---------------------------------------------------------------- deprecated verbs
def test_restore_live_steps_is_deprecated_and_still_works() -> None:
    src = _table()
    src.extend({"x": torch.arange(3.0)})
    with pytest.warns(DeprecationWarning, match="use Table.restore_steps"):
        assert _table().restore_live_steps(src.live_steps()) == 3


def test_item_priorities_is_deprecated_and_still_works() -> None:
    t = _table(sampler=Prioritized())
    t.extend({"x": torch.zeros(3)}, priorities=torch.tensor([1.0, 2.0, 3.0]))
    with pytest.warns(DeprecationWarning, match=r"items\(fields=\(\)\)"):
        keys, priorities = t.item_priorities()
    assert keys.tolist() == [0, 1, 2] and priorities.tolist() == [1.0, 2.0, 3.0]


# ------------------------------------------------------------- validation, codes
@pytest.mark.parametrize("value", [True, 1.0, "3", None, np.float64(2.0)])
def test_check_int_refuses_non_ints(value: object) -> None:
    with pytest.raises(InvalidArgumentError, match="n must be an int >= 0"):
        check_int("n", value, 0)


def test_check_int_takes_numpy_ints_and_names_the_bound() -> None:
    assert check_int("n", np.int64(3), 1) == 3 and type(check_int("n", np.int32(3))) is int
    with pytest.raises(InvalidArgumentError, match=r"k must be an int >= 1 \(frames\), got 0"):
        check_int("k", 0, 1, hint=" (frames)")


@pytest.mark.parametrize("value", [-0.1, 1.5, True, "0.5", float("nan")])
def test_check_unit_interval(value: object) -> None:
    with pytest.raises(InvalidArgumentError, match="gamma must be a number in"):
        check_unit_interval("gamma", value)
    assert check_unit_interval("gamma", 1) == 1.0


def test_priority_and_stream_columns() -> None:
    assert priority_column(2.0, 3).tolist() == [2.0, 2.0, 2.0]
    with pytest.raises(InvalidArgumentError, match="at most 4"):
        priority_column([1.0, 5.0], 2, limit=4.0)
    with pytest.raises(InvalidTypeError):
        priority_column("high", 1)
    with pytest.raises(InvalidArgumentError, match="streams must be >= 0, got -2"):
        stream_column("streams", [0, -2], 2, torch.device("cpu"))
    assert stream_column("streams", None, 2, torch.device("cpu")).tolist() == [0, 0]


def test_one_set_of_end_codes() -> None:
    assert (END_NONE, END_TERMINATED, END_TRUNCATED) == (0, 1, 2)
    assert STORAGE_END_TRUNCATED is END_TRUNCATED
    assert [end_code(v) for v in (None, False, True, 0, 1, 2, np.int64(2))] == [0, 0, 1, 0, 1, 2, 2]
    assert [end_code(v) for v in (3, -1, 1.0, "done")] == [None] * 4
    assert Table.validate_ends([False, True, 2], 3).tolist() == [0, 1, 2]


def test_numpy_dtypes_match_torch() -> None:
    for dt, npdt in NUMPY_DTYPES.items():
        assert torch.empty(0, dtype=dt).numpy().dtype == np.dtype(npdt)
