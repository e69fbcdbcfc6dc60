"""The Relax compilation pipeline, with hooks where optc's own schedules go.

TVM's default pipeline for a target is four stages: library dispatch, legalization
(Relax operators -> TIR functions, fused), dataflow lowering and finalization. optc runs
the same stages, with two hooks between them:

- ``prepare(mod, target)`` sees the imported, high-level Relax module before
  legalization (layout conversion and other graph-level rewrites belong there);
- ``schedule(mod, target)`` sees the legalized module, whose TIR functions (fused or
  not, see ``fuse``) are still unscheduled; it returns the module with (some)
  functions scheduled.

By default GPU targets get TVM's dlight rules and CPU targets are left to TVM's untuned
code generation; optc's CPU schedules plug in through ``schedule``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType

import tvm
from tvm import relax
from tvm.ir import IRModule
from tvm.s_tir import dlight as dl

from optc.errors import UserInputError

ModuleHook = Callable[[IRModule, tvm.target.Target], IRModule]
"""``(module, target) -> module``; called inside the target's scope."""


# Target kind -> TVM's backend package holding its four pipeline stages.
_BACKENDS = {"llvm": "cpu_generic", "cuda": "cuda", "rocm": "rocm"}


def is_gpu(target: tvm.target.Target) -> bool:
    return "gpu" in target.keys


def keep(mod: IRModule, target: tvm.target.Target) -> IRModule:
    """The identity hook."""
    return mod


def gpu_schedule(mod: IRModule, target: tvm.target.Target) -> IRModule:
    """TVM's dlight default schedules (thread binding is mandatory on GPUs).

    TVM 0.27's CUDA legalization already ends with these same rules; dlight skips
    functions that are scheduled, so applying them here again costs nothing and keeps
    every GPU target (not only CUDA) correct.
    """
    rules = dl.ApplyDefaultSchedule(
        dl.gpu.Matmul(),
        dl.gpu.GEMV(),
        dl.gpu.Reduction(),
        dl.gpu.GeneralReduction(),
        dl.gpu.Fallback(),
    )
    with target:
        return rules(mod)


def cpu_schedule(mod: IRModule, target: tvm.target.Target) -> IRModule:
    """optc's CPU schedules (``optc.codegen.schedules``) on the legalized, fused module.

    Imported here, not at module level: the schedules package is only needed for CPUs.
    """
    from optc.codegen.schedules import apply_cpu_schedules

    return apply_cpu_schedules(mod, target)


def default_prepare(mod: IRModule, target: tvm.target.Target) -> IRModule:
    """CPUs: QDQ / weight-only contractions lowered to integer compute with int8 weight
    constants (``quantized.py``; before folding, which would make the weights float),
    then channels-last layout with weights re-packed at compile time; GPUs: unchanged."""
    if is_gpu(target):
        return mod
    from optc.codegen.quantized import prepare_quantized
    from optc.codegen.schedules import prepare_cpu

    return prepare_cpu(prepare_quantized(mod, target), target)


def default_schedule(mod: IRModule, target: tvm.target.Target) -> IRModule:
    return gpu_schedule(mod, target) if is_gpu(target) else cpu_schedule(mod, target)


def backend_stages(target: tvm.target.Target) -> ModuleType:
    """TVM's pipeline module for ``target`` (``library_dispatch_passes`` ... ``finalize_passes``).

    Taken from the backend package directly: TVM 0.27's ``relax.pipeline.
    dataflow_lower_passes`` looks the stage up on the package, which does not export it.
    """
    name = _BACKENDS.get(target.kind.name) or ("gpu_generic" if is_gpu(target) else None)
    if name is None:
        raise UserInputError(
            f"TVM target kind {target.kind.name!r} is not supported by optc's "
            f"code generator (supported: {sorted(_BACKENDS)} and GPUs)"
        )
    return importlib.import_module(f"tvm.relax.backend.{name}.pipeline")


def legalize_passes(target: tvm.target.Target, fuse: bool) -> list[tvm.transform.Pass]:
    """Library dispatch and legalization; ``fuse`` adds TVM's operator fusion.

    Without fusion every Relax operator becomes its own TIR function, which is what
    ``tvm.compile`` does for CPUs by default; untuned fused functions are slower there
    (SqueezeNet 0.28 s -> 0.56 s per inference on a 2-core EPYC, compile 1.9 s -> 5.3 s).
    """
    stages = backend_stages(target)
    if fuse:
        return stages.library_dispatch_passes(target) + stages.legalize_passes(target)
    return [*stages.library_dispatch_passes(target), relax.transform.LegalizeOps()]


def relax_pipeline(
    target: tvm.target.Target,
    prepare: ModuleHook = default_prepare,
    schedule: ModuleHook = default_schedule,
    fuse: bool | None = None,
    merge: bool = False,
) -> tvm.transform.Pass:
    """A module pass running TVM's default stages for ``target`` with optc's hooks.

    ``fuse=None`` fuses operators when optc's own schedules run (they schedule an
    epilogue inside its producer's tile) and otherwise only on GPUs, as ``tvm.compile``
    does; pass ``schedule=keep`` for TVM's untouched defaults. ``merge`` runs each chain
    of small scheduled kernels as one (``small_kernels.py``: a launch-bound model pays a
    fixed cost per kernel call); off here, so that whoever times or inspects kernels
    (the tuner's in-context check, ``tune_verify.py``) sees one per fused group;
    ``build`` turns it on.
    """
    stages = backend_stages(target)
    if fuse is None:
        fuse = is_gpu(target) or schedule is default_schedule
    legalize = legalize_passes(target, fuse)

    @tvm.transform.module_pass(opt_level=0, name="optc_relax_pipeline")
    def _pipeline(mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
        with target:
            mod = tvm.transform.Sequential(legalize)(prepare(mod, target))
            mod = schedule(mod, target)
            if merge:
                from optc.codegen.small_kernels import merge_small_kernels

                mod = merge_small_kernels(mod)
            return tvm.transform.Sequential(
                stages.dataflow_lower_passes(target) + stages.finalize_passes(target)
            )(mod)

    return _pipeline
