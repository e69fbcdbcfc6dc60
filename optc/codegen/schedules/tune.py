"""MetaSchedule tuning on top of the default schedules, with an on-disk database.

``tune`` extracts the TIR functions exactly as the CPU pipeline produces them (channels-
last preparation, legalization, fusion), tunes those without a record in ``work_dir``'s
JSON database, and returns the database. A later compile inside ``with database:`` (or
with ``apply_cpu_schedules(..., database=...)``) uses the tuned schedules for the
functions it has records for and optc's default rules for the rest.

What is tuned, and how:

- the float contractions holding most of the model's multiply-adds (``plan_trials``);
  everything else keeps optc's deterministic rules;
- in optc's own design space (``space.py``): the contraction schedule with its register
  tile as sampled decisions and its loop order / parallelism as variants;
- starting from optc's untuned schedule, measured and committed first; at the end the
  search's winner and the untuned schedule are measured again, alternately, and the
  winner stays a candidate only where it is ``VERIFY_MARGIN`` faster (``_verify``: the
  search's own records, in ``work_dir/search``, are single measurements minutes apart);
- then the candidates are timed inside the whole model (``tune_verify``): a kernel that
  wins alone, hot in cache and back to back, need not win between the model's other
  kernels, and a tuned ShuffleNet whose every kept kernel had won alone ran 1.43x slower
  than untuned. A winner is kept only where its kernel is faster in the model, and the
  winners only where the whole model is faster; else every function keeps its untuned
  schedule. Only then is anything committed to ``work_dir``'s database, one record per
  tuned function (the winner or the untuned schedule, with its kernel-level times);
- built by ``measure.PersistentBuilder`` (workers kept across batches, no TVMScript
  intrinsics parsed) and run by MetaSchedule's ``LocalRunner`` (one persistent worker).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.utils import cpu_count

from optc.errors import UserInputError

from . import tune_verify
from .measure import PersistentBuilder, preload_tensor_intrin
from .prep import layout_passes
from .space import contraction_macs, contraction_space

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
"""Per-candidate build (and run) timeout. A generous bound on a slow, shared 2-core VM:
a timeout marks a candidate failed, it does not slow the others."""

MIN_TRIALS_PER_TASK = 8
"""Fewer measured candidates than this rarely find anything over the seed."""

COVERED_SHARE = 0.9
"""Tune the biggest contractions until they hold this share of the model's multiply-adds."""

BATCH = 8
"""Candidates built (2 workers) and measured per search iteration."""

SEARCH_DIR = "search"
"""The search's own database, under ``work_dir``; ``work_dir``'s holds the verified winners."""

CONTEXT_LOG = "in_context.json"
"""The last in-context check's times and decisions, under ``work_dir`` (for people and
tests; the database does not depend on it)."""

VERIFY_ROUNDS = 5
"""Alternating measurements of the search winner and the untuned schedule at the end."""

VERIFY_MARGIN = 0.03
"""A tuned schedule must be this much faster than the untuned one to replace it."""


@dataclass(frozen=True)
class Plan:
    """A task to tune and the trials it gets."""

    task: ms.ExtractedTask
    macs: int
    trials: int


def plan_trials(tasks: list[ms.ExtractedTask], trials: int) -> list[Plan]:
    """Distribute ``trials`` over the float contractions by their share of the model's
    multiply-adds (calls x MACs per call): the biggest first, each at least
    ``MIN_TRIALS_PER_TASK``, until ``COVERED_SHARE`` of them is covered or the budget is
    spent. The rest, and every non-contraction function, keep optc's rules."""
    sized = []
    for task in tasks:
        macs = contraction_macs(task.dispatched[0]["main"])
        if macs is not None:
            sized.append((task.weight * macs, task, macs))
    sized.sort(key=lambda item: -item[0])
    total = sum(work for work, _, _ in sized)
    chosen, covered = [], 0.0
    for work, task, macs in sized:
        if covered >= COVERED_SHARE * total or len(chosen) >= max(1, trials // MIN_TRIALS_PER_TASK):
            break
        chosen.append((work, task, macs))
        covered += work
    plans = []
    for work, task, macs in chosen:
        share = max(MIN_TRIALS_PER_TASK, round(trials * work / covered))
        plans.append(Plan(task, macs, share))
    # Shares were rounded (up to the minimum): the biggest absorbs the difference.
    target = max(trials, MIN_TRIALS_PER_TASK * len(plans))
    while plans and sum(p.trials for p in plans) != target:
        step = 1 if sum(p.trials for p in plans) < target else -1
        big = max(range(len(plans)), key=lambda i: plans[i].trials)
        plans[big] = Plan(plans[big].task, plans[big].macs, plans[big].trials + step)
    return plans


def tune(
    mod: tvm.IRModule,
    target: tvm.target.Target,
    trials: int,
    work_dir: str | Path,
    *,
    seed: int = 0,
) -> ms.Database:
    """Tune the float contractions of the imported Relax module ``mod`` for ``target``.

    ``trials`` is the budget of measured candidates (``plan_trials`` splits it), besides
    one measurement per tuned function of optc's untuned schedule, committed first to the
    search's database: the search starts from it. The design space is optc's own schedule
    with knobs (``space.py``). A search winner reaches ``work_dir``'s database only where
    it beat the untuned schedule alone (``_verify``) and inside the whole model
    (``_confirm_in_context``). Every function of ``mod`` is then in the database, so
    calling again with the same ``work_dir`` is cheap.
    """
    if target.kind.name != "llvm":
        raise UserInputError(f"optc's CPU tuner needs an llvm target, got {target.kind.name!r}")
    if trials < 1:
        raise UserInputError(f"trials must be >= 1, got {trials}")
    check_serialization()
    database = open_database(work_dir)
    functions = legalized(mod, target)
    tasks = ms.relax_integration.extract_tasks(functions, target)
    todo = _untuned(tasks, database)
    plans = plan_trials(todo, trials)
    logger.info(
        "tuning %d of %d functions: %s",
        len(plans),
        len(tasks),
        ", ".join(f"{p.task.task_name}:{p.trials}" for p in plans),
    )
    if plans:
        search = open_database(Path(work_dir) / SEARCH_DIR)
        chosen = _search(plans, target, work_dir, search, seed)
        chosen = _confirm_in_context(mod, functions, target, chosen, Path(work_dir))
        _commit(chosen, target, database)
    for task in todo:  # tuned or not, every function counts as done for this database
        database.commit_workload(task.dispatched[0])
    return database


@dataclass(frozen=True)
class Measured:
    """A schedule of a planned function and its kernel-level times (seconds per run)."""

    sch: s_tir.Schedule
    args: list[ms.arg_info.ArgInfo]
    times: list[float]


@dataclass(frozen=True)
class Choice:
    """A planned function's untuned schedule and, where it won alone, the search's winner."""

    plan: Plan
    untuned: Measured | None
    winner: Measured | None

    def without_winner(self) -> Choice:
        return Choice(self.plan, self.untuned, None)


def _search(
    plans: list[Plan],
    target: tvm.target.Target,
    work_dir: str | Path,
    database: ms.Database,
    seed: int,
) -> list[Choice]:
    preload_tensor_intrin()  # TuneContext imports it: minutes, done the slow way
    quiet = logging.getLogger("tvm.s_tir.meta_schedule")
    if quiet.level == logging.NOTSET:  # MetaSchedule prints every round on stdout by default;
        quiet.setLevel(logging.WARNING)  # the full logs stay in work_dir/logs
    builder = PersistentBuilder(max_workers=cpu_count(), timeout_sec=BUILD_TIMEOUT_S)
    runner = ms.runner.LocalRunner(
        timeout_sec=BUILD_TIMEOUT_S,
        evaluator_config=ms.runner.EvaluatorConfig(number=1, repeat=3, min_repeat_ms=40),
    )
    try:
        space = contraction_space(target)
        seeds = _seed(plans, target, space, builder, runner, database)
        logger.info("seeded %d untuned schedules", seeds)
        for plan in plans:
            contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                extracted_tasks=[plan.task],
                work_dir=str(work_dir),
                space=space,
                strategy=ms.search_strategy.EvolutionarySearch(
                    population_size=64, init_min_unmeasured=32, genetic_num_iters=2
                ),
                seed=seed,
            )
            ms.tune.tune_tasks(
                tasks=contexts,
                task_weights=weights,
                work_dir=str(work_dir),
                max_trials_global=plan.trials,
                max_trials_per_task=plan.trials,
                num_trials_per_iter=min(plan.trials, BATCH),
                builder=builder,
                runner=runner,
                database=database,
                cost_model=_cost_model(),
            )
        choices = _verify(plans, target, space, builder, runner, database)
        logger.info(
            "%d tuned schedules beat the untuned ones alone",
            sum(c.winner is not None for c in choices),
        )
        return choices
    finally:
        builder.shutdown()


def _seed(
    plans: list[Plan],
    target: tvm.target.Target,
    space: ms.space_generator.SpaceGenerator,
    builder: PersistentBuilder,
    runner: ms.runner.Runner,
    database: ms.Database,
) -> int:
    """Measure and commit optc's untuned schedule (design space 0, default decisions) of
    every planned function; the number committed."""
    schedules = []
    for plan in plans:
        context = ms.TuneContext(
            mod=plan.task.dispatched[0],
            target=target,
            space_generator=space,
            task_name=plan.task.task_name,
        )
        schedules.append(context.generate_design_space()[0])
    built = builder.build([ms.builder.BuilderInput(s.mod, target) for s in schedules])
    inputs, keep = [], []
    for plan, sch, result in zip(plans, schedules, built, strict=True):
        if result.error_msg is not None:
            logger.warning("untuned %s did not build: %s", plan.task.task_name, result.error_msg)
            continue
        args = ms.arg_info.ArgInfo.from_prim_func(sch.mod["main"])
        inputs.append(ms.runner.RunnerInput(result.artifact_path, "cpu", args))
        keep.append((plan, sch, args))
    committed = 0
    for (plan, sch, args), future in zip(keep, runner.run(inputs), strict=True):
        run = future.result()
        if run.error_msg is not None:
            logger.warning("untuned %s did not run: %s", plan.task.task_name, run.error_msg)
            continue
        workload = database.commit_workload(plan.task.dispatched[0])
        database.commit_tuning_record(
            ms.database.TuningRecord(sch.trace, workload, run.run_secs, target, args)
        )
        committed += 1
    return committed


def _verify(
    plans: list[Plan],
    target: tvm.target.Target,
    space: ms.space_generator.SpaceGenerator,
    builder: PersistentBuilder,
    runner: ms.runner.Runner,
    search: ms.Database,
) -> list[Choice]:
    """Each planned function's untuned schedule and, where it beats that one when both
    are measured again, alternately (``VERIFY_ROUNDS`` each), by ``VERIFY_MARGIN``, the
    search's winner. The search measures each candidate once, minutes apart from the
    seed: on a shared machine a candidate measured in a quiet moment beat the seed by
    noise (ResNet-50 tuned with 160 trials ran 1.18x slower than untuned, its kernels
    1.1-1.7x, one thread)."""
    pairs = []
    for plan in plans:
        mod = plan.task.dispatched[0]
        context = ms.TuneContext(
            mod=mod, target=target, space_generator=space, task_name=plan.task.task_name
        )
        untuned = context.generate_design_space()[0]
        best = search.query_schedule(mod, target, workload_name="main")
        if best is None or tvm_ffi.structural_equal(best.mod, untuned.mod):
            best = None
        pairs.append((plan, untuned, best))
    candidates = [(i, sch) for i, (_, *both) in enumerate(pairs) for sch in both if sch is not None]
    built = builder.build([ms.builder.BuilderInput(sch.mod, target) for _, sch in candidates])
    inputs, measured = [], []
    for (_, sch), result in zip(candidates, built, strict=True):
        if result.error_msg is None:
            args = ms.arg_info.ArgInfo.from_prim_func(sch.mod["main"])
            inputs.append(ms.runner.RunnerInput(result.artifact_path, "cpu", args))
            measured.append((sch, args))
    times: dict[int, list[float]] = {}
    args_of = {id(sch): args for sch, args in measured}
    for _ in range(VERIFY_ROUNDS):  # alternately: a change of load hits both alike
        for (sch, _), future in zip(measured, runner.run(inputs), strict=True):
            run = future.result()
            if run.error_msg is None:
                times.setdefault(id(sch), []).extend(float(t) for t in run.run_secs)

    def found(sch: s_tir.Schedule | None) -> Measured | None:
        if sch is None or id(sch) not in times:
            return None
        return Measured(sch, args_of[id(sch)], times[id(sch)])

    choices = []
    for plan, untuned, best in pairs:
        slow, fast = found(untuned), found(best)
        if (
            fast is not None
            and slow is not None
            and _median(fast.times) >= _median(slow.times) * (1 - VERIFY_MARGIN)
        ):
            fast = None
        choices.append(Choice(plan, slow, fast))
    return choices


def _commit(choices: list[Choice], target: tvm.target.Target, final: ms.Database) -> None:
    """One record per function in ``final``: its winner if any, else its untuned schedule
    (a function whose schedules failed to build or run gets none: optc's rules apply)."""
    for choice in choices:
        chosen = choice.winner or choice.untuned
        if chosen is None:
            continue
        workload = final.commit_workload(choice.plan.task.dispatched[0])
        final.commit_tuning_record(
            ms.database.TuningRecord(chosen.sch.trace, workload, chosen.times, target, chosen.args)
        )


def _records(choices: list[Choice], target: tvm.target.Target) -> ms.Database:
    """An in-memory database as ``_commit`` would fill ``work_dir``'s."""
    database = ms.database.MemoryDatabase()
    _commit(choices, target, database)
    return database


def kernel_names(functions: tvm.IRModule, plan: Plan) -> list[str]:
    """The names of ``functions``' PrimFuncs that are ``plan``'s workload (a record in
    the database applies to each of them), at least the task's own name."""
    func = plan.task.dispatched[0]["main"].without_attr("global_symbol")
    names = [
        gvar.name_hint
        for gvar, other in functions.functions_items()
        if isinstance(other, tirx.PrimFunc)
        and tvm_ffi.structural_equal(other.without_attr("global_symbol"), func)
    ]
    return names or [plan.task.task_name]


def _confirm_in_context(
    mod: tvm.IRModule,
    functions: tvm.IRModule,
    target: tvm.target.Target,
    choices: list[Choice],
    work_dir: Path,
) -> list[Choice]:
    """``choices`` with the winners that are not faster inside the whole model dropped,
    and all of them dropped unless the whole model is faster (``tune_verify``)."""
    if all(c.winner is None for c in choices):
        return choices
    untuned = [c.without_winner() for c in choices]
    try:
        feeds = tune_verify.feeds_for(mod["main"])
    except ValueError as exc:  # symbolic shapes: cannot be run, so cannot be shown faster
        logger.warning("untuned schedules kept: the model cannot be timed (%s)", exc)
        return untuned
    try:
        return _check_in_context(mod, functions, target, choices, feeds, work_dir)
    except (RuntimeError, ValueError, TypeError) as exc:  # TVM's C++ errors arrive as these
        # A model the check cannot build or run gets the schedules it is built with anyway.
        logger.warning("untuned schedules kept: the in-context check failed: %s", exc)
        return untuned


def _check_in_context(
    mod: tvm.IRModule,
    functions: tvm.IRModule,
    target: tvm.target.Target,
    choices: list[Choice],
    feeds: list[np.ndarray],
    work_dir: Path,
) -> list[Choice]:
    """``_confirm_in_context`` once ``feeds`` exist; writes ``CONTEXT_LOG``. Where some
    winners are dropped, the model with the others is built and measured again: the
    whole-model decision is on what would be committed."""
    winners = [c for c in choices if c.winner is not None]
    untuned = [c.without_winner() for c in choices]
    names = {id(c): kernel_names(functions, c.plan) for c in choices}
    baseline = tune_verify.build_with(mod, target, _records(untuned, target))
    tuned = tune_verify.build_with(mod, target, _records(choices, target))
    found = tune_verify.measure({"untuned": baseline, "tuned": tuned}, feeds)
    per_task = {
        key: tune_verify.summed(found[key], {c.plan.task.task_name: names[id(c)] for c in choices})
        for key in found
    }
    faster = tune_verify.kept_in_context(
        per_task["untuned"], per_task["tuned"], [c.plan.task.task_name for c in winners]
    )
    kept = [c if c.plan.task.task_name in faster else c.without_winner() for c in choices]
    final = found
    if faster and len(faster) < len(winners):
        tuned = tune_verify.build_with(mod, target, _records(kept, target))
        final = tune_verify.measure({"untuned": baseline, "tuned": tuned}, feeds)
    model = bool(faster) and tune_verify.model_is_faster(final["untuned"], final["tuned"])
    log = {
        "kernels": {
            c.plan.task.task_name: {
                "untuned_s": per_task["untuned"].kernel_median(c.plan.task.task_name),
                "tuned_s": per_task["tuned"].kernel_median(c.plan.task.task_name),
                "tuned_over_untuned": tune_verify.kernel_ratio(
                    per_task["untuned"], per_task["tuned"], c.plan.task.task_name
                ),
                "won_alone": c.winner is not None,
                "kept": c.plan.task.task_name in faster,
            }
            for c in choices
        },
        "model_s": {
            "untuned": final["untuned"].model_median(),
            "tuned": final["tuned"].model_median() if faster else None,
        },
        "model_tuned_over_untuned": (
            tune_verify.model_ratio(final["untuned"], final["tuned"]) if faster else None
        ),
        "tuned_model": model,
    }
    (work_dir / CONTEXT_LOG).write_text(json.dumps(log, indent=2))
    logger.info(
        "in the model: %d of %d winners faster, whole model %s",
        len(faster),
        len(winners),
        "faster: kept" if model else "not faster: untuned schedules kept",
    )
    return kept if model else untuned


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _cost_model() -> str:
    """MetaSchedule's XGBoost cost model when xgboost is installed, else random ranking."""
    if importlib.util.find_spec("xgboost") is None:
        logger.info("xgboost is not installed: candidates are ranked at random")
        return "random"
    return "xgb"
