"""MetaSchedule tuning on top of the default schedules, with an on-disk database.

``tune`` extracts the TIR functions exactly as the CPU pipeline produces them (channels-
last preparation, legalization, fusion), tunes those without a record in ``work_dir``'s
JSON database, and returns the database. A later compile inside ``with database:`` (or
with ``apply_cpu_schedules(..., database=...)``) uses the tuned schedules for the
functions it has records for and optc's default rules for the rest.
"""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

import tvm
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
from tvm.s_tir import meta_schedule as ms

from optc.errors import UserInputError

from .prep import layout_passes

logger = logging.getLogger(__name__)

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"


def open_database(work_dir: str | Path) -> ms.database.JSONDatabase:
    """The JSON tuning database in ``work_dir`` (created if missing)."""
    path = Path(work_dir)
    path.mkdir(parents=True, exist_ok=True)
    return ms.database.JSONDatabase(
        path_workload=str(path / WORKLOADS), path_tuning_record=str(path / RECORDS)
    )


def legalized(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """``mod`` as the CPU schedules see it: prepared, legalized and fused."""
    with target:
        seq = (
            cpu_generic.library_dispatch_passes(target)
            + layout_passes(target)
            + cpu_generic.legalize_passes(target)
        )
        return tvm.transform.Sequential(seq)(mod)


def _untuned(tasks: list[ms.ExtractedTask], database: ms.Database) -> list[ms.ExtractedTask]:
    """Tasks whose workload is not in ``database`` yet: a workload tuned before is not
    tuned again (even if none of its candidates built, e.g. a trivial transpose)."""
    return [task for task in tasks if not database.has_workload(task.dispatched[0])]


_PROBE = "import tvm; tvm.ir.save_json(tvm.ir.PrimType('int32'))"


def check_serialization() -> None:
    """Raise if TVM cannot serialize TIR, which MetaSchedule's database and builder need.

    apache-tvm 0.27.0.post1 with apache-tvm-ffi 0.1.15 crashes the process (SIGSEGV in
    ``ToJSONGraph``) on any typed TIR node; 0.1.14.post0 works. The probe runs in a child
    process so that the crash cannot take this one down.
    """
    probe = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, timeout=120)
    if probe.returncode != 0:
        import tvm_ffi

        raise UserInputError(
            f"MetaSchedule cannot run here: TVM {tvm.__version__} with apache-tvm-ffi "
            f"{tvm_ffi.__version__} crashes serializing TIR; install apache-tvm-ffi==0.1.14.post0"
        )


BUILD_TIMEOUT_S = 300.0
"""Per-candidate build (and run) timeout. MetaSchedule's default is 30 s, but a build
worker on a slow 2-core VM needs ~50 s for an empty function (worker start-up and
import): with the default every candidate failed as a build error and tuning found
nothing."""


def tune(
    mod: tvm.IRModule,
    target: tvm.target.Target,
    trials: int,
    work_dir: str | Path,
    *,
    trials_per_task: int | None = None,
    seed: int = 0,
) -> ms.Database:
    """Tune the TIR functions of the imported Relax module ``mod`` for ``target``.

    ``trials`` is the global budget of measured candidates, ``trials_per_task`` the cap
    per function (default: the budget split evenly). Functions already in the database
    are skipped, so calling again with the same ``work_dir`` is cheap.
    """
    if target.kind.name != "llvm":
        raise UserInputError(f"optc's CPU tuner needs an llvm target, got {target.kind.name!r}")
    if trials < 1:
        raise UserInputError(f"trials must be >= 1, got {trials}")
    check_serialization()
    database = open_database(work_dir)
    tasks = ms.relax_integration.extract_tasks(legalized(mod, target), target)
    todo = _untuned(tasks, database)
    logger.info("tuning %d of %d tasks (%d trials)", len(todo), len(tasks), trials)
    if not todo:
        return database
    per_task = trials_per_task or max(1, trials // len(todo))
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        extracted_tasks=todo, work_dir=str(work_dir), seed=seed
    )
    return ms.tune.tune_tasks(
        tasks=contexts,
        task_weights=weights,
        work_dir=str(work_dir),
        max_trials_global=trials,
        max_trials_per_task=per_task,
        num_trials_per_iter=min(per_task, 16),
        builder=ms.builder.LocalBuilder(timeout_sec=BUILD_TIMEOUT_S),
        runner=ms.runner.LocalRunner(timeout_sec=BUILD_TIMEOUT_S),
        database=database,
        cost_model=_cost_model(),
    )


def _cost_model() -> str:
    """MetaSchedule's XGBoost cost model when xgboost is installed, else random ranking."""
    if importlib.util.find_spec("xgboost") is None:
        logger.info("xgboost is not installed: candidates are ranked at random")
        return "random"
    return "xgb"
