"""The full Relax pipeline for ``llvm`` targets with optc's schedules in it."""

from __future__ import annotations

import tvm
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

from .apply import apply_cpu_schedules
from .prep import layout_passes


def prepare_cpu(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """Graph-level preparation before legalization: channels-last layout, folded weights."""
    with target:
        return tvm.transform.Sequential(layout_passes(target))(mod)


def schedule_pass(target: tvm.target.Target) -> tvm.transform.Pass:
    """``apply_cpu_schedules`` as a module pass."""

    @tvm.transform.module_pass(opt_level=0, name="OptcApplyCpuSchedules")
    def _apply(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return apply_cpu_schedules(mod, target)

    return _apply


def cpu_pipeline(target: tvm.target.Target, channels_last: bool = True) -> tvm.transform.Pass:
    """Relax pipeline: layout prep, legalize, fuse, tuned records (if a MetaSchedule database
    is current), optc schedules for the rest, then TVM's usual lowering.

    Use as ``tvm.compile(mod, target, relax_pipeline=cpu_pipeline(target))``.
    """

    @tvm.transform.module_pass(opt_level=0, name="OptcCpuPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        prep = layout_passes(target) if channels_last else []
        with target:
            seq = tvm.transform.Sequential(
                cpu_generic.library_dispatch_passes(target)
                + prep
                + cpu_generic.legalize_passes(target)
                + [schedule_pass(target)]
                + cpu_generic.dataflow_lower_passes(target)
                + cpu_generic.finalize_passes(target)
            )
            return seq(mod)

    return _pipeline
