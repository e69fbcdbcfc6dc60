"""``compile_model(..., tune=N)``: MetaSchedule tuning with a database cached under the
optc cache and reused by the next compile. Heavy: tuning takes minutes on 2 cores."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_compile_support import DIGITS, cache_dir  # noqa: F401 (a fixture)

from optc.codegen.schedules.tune import SEARCH_DIR
from optc.compiler import compile_model
from optc.compiler.tuning import tuning_dir
from optc.errors import UserInputError

pytestmark = pytest.mark.heavy


@pytest.fixture(autouse=True)
def _metaschedule_works() -> None:
    """Skip, saying why, where this TVM build crashes serializing TIR (MetaSchedule needs it)."""
    from optc.codegen.schedules.tune import check_serialization

    try:
        check_serialization()
    except UserInputError as exc:
        pytest.skip(str(exc))


def test_tuning_database_is_cached_and_reused(
    tmp_path: Path,
    cache_dir: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir))
    first = compile_model(DIGITS, "host", tmp_path / "first", tune=8, repeat=2)
    tuning = first.report["tuning"]
    database = Path(tuning["database"])
    assert database == tuning_dir(_host_tvm_target(cache_dir / "optc"))
    assert database.is_relative_to(cache_dir / "optc" / "tuning")
    assert tuning["records"] > 0 and tuning["trials"] == 8
    assert first.report["check"]["status"] == "passed"  # the tuned build matches the reference
    _assert_measured(database / SEARCH_DIR)
    _assert_verified(database, tuning["records"])
    second = compile_model(DIGITS, "host", tmp_path / "second", tune=8, repeat=2)
    assert second.report["tuning"]["records"] == tuning["records"]  # nothing tuned again
    assert second.report["stages_s"]["tune"] < first.report["stages_s"]["tune"]


def _assert_verified(database: Path, count: int) -> None:
    """The compile's database holds one record per tuned function: the search's winner or
    the untuned schedule, with the times of their alternating re-measurement."""
    import tvm_ffi

    from optc.codegen.schedules.tune import VERIFY_ROUNDS
    from optc.compiler.tuning import open_database

    records = list(open_database(database).get_all_tuning_records())
    assert len(records) == count
    assert len({tvm_ffi.structural_hash(r.workload.mod) for r in records}) == count
    assert all(len(r.run_secs) >= VERIFY_ROUNDS for r in records)


def _assert_measured(database: Path) -> None:
    """Every search record holds real run times (seconds per run of one kernel), and at
    least one function has candidates measured besides the seed (optc's untuned one)."""
    import tvm_ffi

    from optc.compiler.tuning import open_database

    records = list(open_database(database).get_all_tuning_records())
    by_workload: dict[int, list[float]] = {}
    for record in records:
        seconds = [float(s) for s in record.run_secs]
        assert seconds and all(0.0 < s < 1.0 for s in seconds)
        key = tvm_ffi.structural_hash(record.workload.mod)
        by_workload.setdefault(key, []).append(sum(seconds) / len(seconds))
    assert any(len(times) > 1 for times in by_workload.values())  # candidates were measured


def _host_tvm_target(optc_cache: Path) -> dict:
    from optc.target import get_target

    return get_target("host", cache_dir=optc_cache).tvm_target_dict
