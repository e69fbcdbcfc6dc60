"""The tuner's in-context check (``schedules/tune_verify.py``, ``tune._confirm_in_context``):
a kernel-level winner is kept only where it is faster inside the whole model.

Real measurements: the digits CNN built twice, with optc's untuned schedule of its
biggest convolution and with a deliberately slow one (the same schedule with a 1-row,
1-vector register tile), timed in interleaved rounds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tvm
from test_compile_support import DIGITS
from test_schedules import RUN_TARGET
from tvm import s_tir
from tvm.s_tir import meta_schedule as ms

from optc.codegen.importer import import_graph, input_specs
from optc.codegen.schedules import tune_verify
from optc.codegen.schedules.space import contraction_macs, contraction_space
from optc.codegen.schedules.tune import (
    CONTEXT_LOG,
    Choice,
    Measured,
    Plan,
    _confirm_in_context,
    _records,
    kernel_names,
    legalized,
)
from optc.frontend import load_onnx

ROUNDS = 5


@pytest.fixture(scope="module")
def digits() -> tuple[tvm.IRModule, tvm.IRModule, Choice]:
    """(the imported model, its legalized functions, the biggest convolution's choice:
    untuned schedule, and as the "winner" a much slower one)."""
    graph = load_onnx(DIGITS)
    mod = import_graph(graph, input_specs(graph, None))
    functions = legalized(mod, RUN_TARGET)
    tasks = ms.relax_integration.extract_tasks(functions, RUN_TARGET)
    sized = [(contraction_macs(t.dispatched[0]["main"]), t) for t in tasks]
    macs, task = max(((m, t) for m, t in sized if m is not None), key=lambda item: item[0])
    untuned = ms.TuneContext(
        mod=task.dispatched[0],
        target=RUN_TARGET,
        space_generator=contraction_space(RUN_TARGET),
        task_name=task.task_name,
    ).generate_design_space()[0]
    slow = _smallest_tile(untuned, task.dispatched[0])
    args = ms.arg_info.ArgInfo.from_prim_func(untuned.mod["main"])
    plan = Plan(task, macs, 0)
    # Kernel-level times as if the slow one had won alone (it would not: these only
    # travel into the database's records).
    choice = Choice(plan, Measured(untuned, args, [2e-3]), Measured(slow, args, [1e-3]))
    return mod, functions, choice


def _smallest_tile(sch: s_tir.Schedule, workload: tvm.IRModule) -> s_tir.Schedule:
    """``sch``'s trace replayed with every tile decision at its first candidate (1 row,
    1 vector): a valid kernel, several times slower than optc's tile."""
    trace = sch.trace
    decisions = {i: 0 for i in trace.insts if i.kind.name == "SampleCategorical"}
    assert decisions, "the tile must be a sampled decision"
    replay = s_tir.Schedule(workload)
    s_tir.schedule.Trace(trace.insts, decisions).apply_to_schedule(replay, False)
    return replay


def test_the_tuned_function_is_found_among_the_model_kernels(
    digits: tuple[tvm.IRModule, tvm.IRModule, Choice],
) -> None:
    _, functions, choice = digits
    assert kernel_names(functions, choice.plan) == [choice.plan.task.task_name]


def test_a_kernel_slower_in_the_model_is_not_kept(
    digits: tuple[tvm.IRModule, tvm.IRModule, Choice], tmp_path: Path
) -> None:
    mod, functions, choice = digits
    kept = _confirm_in_context(mod, functions, RUN_TARGET, [choice], tmp_path)
    assert kept[0].winner is None and kept[0].untuned is choice.untuned
    log = json.loads((tmp_path / CONTEXT_LOG).read_text())
    kernel = log["kernels"][choice.plan.task.task_name]
    assert kernel["won_alone"] and not kernel["kept"]
    assert kernel["tuned_s"] > kernel["untuned_s"] > 0  # measured in the model: slower
    assert not log["tuned_model"] and log["model_s"]["tuned"] is None


@pytest.mark.heavy  # two more builds and 5 rounds: ~15 s on a loaded 2-core VM
def test_decisions_on_real_measurements(
    digits: tuple[tvm.IRModule, tvm.IRModule, Choice],
) -> None:
    """The same two builds, each in either role: only the faster build's kernel is kept,
    and the model with the slow kernel is never taken as the faster one."""
    mod, functions, choice = digits
    name = choice.plan.task.task_name
    untuned = _records([choice.without_winner()], RUN_TARGET)
    builds = {
        "untuned": tune_verify.build_with(mod, RUN_TARGET, untuned),
        "slow": tune_verify.build_with(mod, RUN_TARGET, _records([choice], RUN_TARGET)),
    }
    found = tune_verify.measure(builds, tune_verify.feeds_for(mod["main"]), rounds=ROUNDS)
    groups = {name: kernel_names(functions, choice.plan)}
    fast, slow = (tune_verify.summed(found[k], groups) for k in ("untuned", "slow"))
    assert all(len(t.kernels[name]) == ROUNDS * tune_verify.PROFILED_RUNS for t in (fast, slow))
    assert len(fast.model) == len(slow.model) == ROUNDS * tune_verify.MODEL_RUNS
    assert tune_verify.kept_in_context(fast, slow, [name]) == set()
    assert tune_verify.kept_in_context(slow, fast, [name]) == {name}
    assert not tune_verify.model_is_faster(fast, slow)
    # a kernel without measurements in either build is never kept
    assert tune_verify.kept_in_context(fast, tune_verify.Timings(), [name]) == set()
