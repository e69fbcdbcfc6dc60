"""The tuner's design space (``schedules/space.py``): its default decisions are optc's
untuned schedule, and other decisions give different kernels with the same results."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
import tvm_ffi
from test_schedules import RUN_TARGET, randomized_light_model
from tvm import s_tir, tirx
from tvm.relax.frontend.onnx import from_onnx
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.dlight.analysis import normalize_prim_func

from optc.codegen.schedules.apply import schedule_prim_func
from optc.codegen.schedules.contraction import PARALLEL_MIN_MACS
from optc.codegen.schedules.depthwise import as_depthwise
from optc.codegen.schedules.hw import cpu_info
from optc.codegen.schedules.space import contraction_macs, contraction_space, variants
from optc.codegen.schedules.tune import MIN_TRIALS_PER_TASK, legalized, plan_trials


@pytest.fixture(scope="module")
def squeezenet() -> tvm.IRModule:
    model = randomized_light_model("squeezenet")
    return legalized(from_onnx(model, keep_params_in_input=False), RUN_TARGET)


def _conv(mod: tvm.IRModule, min_macs: int) -> tirx.PrimFunc:
    """The first convolution (with its fused bias + ReLU) of at least ``min_macs``."""
    for gvar, func in mod.functions_items():
        if isinstance(func, tirx.PrimFunc) and gvar.name_hint.startswith("fused_conv2d"):
            macs = contraction_macs(func)
            if macs is not None and macs >= min_macs:
                return func
    raise AssertionError("squeezenet has no such convolution")


def _spaces(func: tirx.PrimFunc) -> list[s_tir.Schedule]:
    context = ms.TuneContext(
        mod=tvm.IRModule({"main": func}),
        target=RUN_TARGET,
        space_generator=contraction_space(RUN_TARGET),
        task_name="conv",
    )
    return context.generate_design_space()


def _run(func: tirx.PrimFunc, seed: int = 0) -> np.ndarray:
    """Build ``func`` for this host and run it on random inputs; its output."""
    lib = tvm.tirx.build(
        tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), RUN_TARGET
    )
    rng = np.random.default_rng(seed)
    args = []
    for info in ms.arg_info.ArgInfo.from_prim_func(func):
        shape = [int(d) for d in info.shape]
        args.append(tvm.runtime.tensor(rng.standard_normal(shape).astype(str(info.dtype))))
    lib["main"](*args)
    return args[-1].numpy()


def _resampled(sch: s_tir.Schedule, func: tirx.PrimFunc) -> tirx.PrimFunc:
    """``sch``'s trace replayed with every sampled decision moved to another candidate."""
    trace = sch.trace
    decisions = {}
    for inst in trace.insts:
        if inst.kind.name == "SampleCategorical":
            candidates = [int(c) for c in inst.attrs[0]]
            current = int(trace.decisions[inst])
            decisions[inst] = (current + 1) % len(candidates)
    assert decisions, "the tile must be a sampled decision"
    replay = s_tir.Schedule(func)
    tvm.s_tir.schedule.Trace(trace.insts, decisions).apply_to_schedule(replay, False)
    return replay.mod["main"]


def test_default_decisions_reproduce_the_untuned_schedule(squeezenet: tvm.IRModule) -> None:
    for min_macs in (1, 10_000_000):  # a serial and a parallel convolution
        func = _conv(squeezenet, min_macs)
        spaces = _spaces(func)
        assert len(spaces) >= 2  # optc's loop order, and rows outside the weight panels
        untuned = schedule_prim_func(func, RUN_TARGET)
        assert tvm_ffi.structural_equal(spaces[0].mod["main"], untuned)


def test_other_decisions_give_other_kernels_with_equal_results(
    squeezenet: tvm.IRModule,
) -> None:
    func = _conv(squeezenet, 10_000_000)
    spaces = _spaces(func)
    default = spaces[0].mod["main"]
    expected = _run(default)
    for candidate in (_resampled(spaces[0], func), spaces[1].mod["main"]):
        assert not tvm_ffi.structural_equal(candidate, default)
        np.testing.assert_allclose(_run(candidate), expected, rtol=1e-5, atol=1e-4)


def test_trials_go_to_the_biggest_contractions(squeezenet: tvm.IRModule) -> None:
    tasks = ms.relax_integration.extract_tasks(squeezenet, RUN_TARGET)
    plans = plan_trials(tasks, 64)
    assert sum(p.trials for p in plans) == 64
    assert all(p.trials >= MIN_TRIALS_PER_TASK for p in plans)
    work = [p.task.weight * p.macs for p in plans]
    assert work == sorted(work, reverse=True)
    everything = [t.weight * m for t in tasks if (m := contraction_macs(t.dispatched[0]["main"]))]
    assert min(work) >= sorted(everything, reverse=True)[len(plans) - 1]
    assert len(plans) == 64 // MIN_TRIALS_PER_TASK or sum(work) >= 0.9 * sum(everything)


def test_depthwise_convs_are_left_to_their_own_rule() -> None:
    """ShuffleNet's depthwise convs are scheduled by ``depthwise.py``: the tuner must not
    put contraction schedules for them in the database (they would replace that rule)."""
    mod = legalized(
        from_onnx(randomized_light_model("shufflenet"), keep_params_in_input=False), RUN_TARGET
    )
    depthwise, contractions = 0, 0
    for _, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        reductions = [i for i in infos or [] if not i.is_injective()]
        if len(reductions) != 1:
            continue
        if as_depthwise(sch, reductions[0]) is not None:
            depthwise += 1
            assert contraction_macs(func) is None
        elif contraction_macs(func) is not None:
            contractions += 1
    # How many distinct packed conv functions remain depends on the vector width (convs
    # whose padded weight panels coincide share one function): 9 with AVX-512, 10+ AVX2.
    assert depthwise >= 3 and contractions >= 8


def test_parallel_kernels_get_no_serial_variant() -> None:
    """A serial variant of a parallel kernel wins only while the machine is busy (the
    parallel one waits for a preempted thread; ``space.py``): the space never offers it.
    Serial kernels near the threshold may try the parallel structure."""
    cpu = cpu_info(RUN_TARGET)
    for macs in (PARALLEL_MIN_MACS, 4 * PARALLEL_MIN_MACS, 100 * PARALLEL_MIN_MACS):
        assert {k.parallel for k in variants(macs, cpu)} == {True}
    near = {k.parallel for k in variants(PARALLEL_MIN_MACS // 2, cpu)}
    assert near == ({False, True} if cpu.cores > 1 else {False})
    assert {k.parallel for k in variants(1000, cpu)} == {False}
