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
    _assert_confirmed_in_context(database)
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


def _assert_confirmed_in_context(database: Path) -> None:
    """A search winner is in the database only where it was faster inside the whole
    model, and the whole model with the winners faster than untuned (the in-context
    check's log, ``CONTEXT_LOG``, has the times it decided on); a function whose record
    is its untuned schedule was either no winner or not kept."""
    import json

    import tvm
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms

    from optc.codegen.build import make_target
    from optc.codegen.schedules.space import contraction_space
    from optc.codegen.schedules.tune import CONTEXT_LOG
    from optc.codegen.schedules.tune_verify import KERNEL_MARGIN, MODEL_MARGIN
    from optc.compiler.tuning import open_database

    target = make_target(_host_tvm_target(database.parents[1]))
    space = contraction_space(target)
    tuned = 0
    for record in open_database(database).get_all_tuning_records():
        untuned = ms.TuneContext(
            mod=record.workload.mod, target=target, space_generator=space, task_name="f"
        ).generate_design_space()[0]
        applied = tvm.s_tir.Schedule(record.workload.mod)
        record.trace.apply_to_schedule(applied, False)
        tuned += not tvm_ffi.structural_equal(applied.mod, untuned.mod)
    log_path = database / CONTEXT_LOG
    if not log_path.exists():  # no winner alone: nothing was built in context
        assert tuned == 0
        return
    log = json.loads(log_path.read_text())
    kept = [k for k in log["kernels"].values() if k["kept"]]
    assert all(k["won_alone"] for k in kept)
    assert all(k["tuned_s"] < k["untuned_s"] * (1 - KERNEL_MARGIN) for k in kept)
    if log["tuned_model"]:
        model = log["model_s"]
        assert model["tuned"] < model["untuned"] * (1 - MODEL_MARGIN)
        assert tuned == len(kept) > 0
    else:
        assert tuned == 0


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
