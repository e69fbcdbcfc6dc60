"""optc IR -> ONNX -> TVM Relax -> compiled Relax VM executable.

The graph goes through TVM's Relax ONNX importer with static input shapes (weights
become constants of the module), then through TVM's default stages for the target
with optc's hooks (``relax_pipeline``). CUDA kernels are compiled ahead of time with
nvcc where it is installed (``cuda.py``). An NPU target's BYOC backend partitions the
module first (``npu.py``); what it does not take runs on the target's host CPU.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tvm

from optc.codegen.cuda import DeviceBinary, compile_cuda_kernels
from optc.codegen.host_cpu import machine_arch, triple_arch
from optc.codegen.importer import first_line, import_graph, input_specs
from optc.codegen.npu import NpuSpec, PartitionReport, partition
from optc.codegen.packing import pack_imports
from optc.codegen.relax_pipeline import (
    ModuleHook,
    default_prepare,
    default_schedule,
    is_gpu,
    relax_pipeline,
)
from optc.codegen.signature import TensorSpec, output_specs
from optc.errors import UserInputError
from optc.ir import Graph

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, eq=False)
class BuiltModule:
    """A compiled model, ready to export: the Relax VM executable and what it was built from.

    ``target`` is the resolved TVM target JSON (``host`` included for device targets);
    ``device_binaries`` the ahead-of-time compiled CUDA kernels (empty for CPUs);
    ``partition`` what an NPU's BYOC backend took (None without one).
    """

    executable: Any = dataclasses.field(repr=False)
    graph: Graph = dataclasses.field(repr=False)
    target: Mapping[str, Any]
    cross_compiler: str | None
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    device_binaries: tuple[DeviceBinary, ...]
    compile_s: float
    partition: PartitionReport | None = None

    @property
    def library_arch(self) -> str:
        """The CPU architecture of the library's host code (``x86_64``, ``aarch64``)."""
        host = self.target.get("host", self.target)
        triple = host.get("mtriple") if host.get("kind") == "llvm" else None
        return triple_arch(triple) if triple else machine_arch()

    def export_library(self, path: str | Path) -> Path:
        """Write the shared library; cross-compiled where the host code is for another CPU."""
        path = Path(path)
        kwargs: dict[str, Any] = {}
        if self.device_binaries:
            kwargs["fpack_imports"] = pack_imports(list(self.device_binaries))
        if self.cross_compiler:
            from tvm.support import cc

            if shutil.which(self.cross_compiler) is None:
                raise UserInputError(
                    f"cross compiler {self.cross_compiler!r} not found on PATH "
                    "(Debian/Ubuntu: apt-get install g++-aarch64-linux-gnu)"
                )
            kwargs["fcompile"] = cc.cross_compiler(self.cross_compiler)
        elif self.library_arch != machine_arch():
            raise UserInputError(
                f"the target's host code is for {self.library_arch}, this "
                f"machine is {machine_arch()}: give a cross compiler"
            )
        try:
            self.executable.export_library(str(path), **kwargs)
        except RuntimeError as exc:  # tvm.support.cc reports compiler failures this way
            detail = str(exc).partition("Compilation error:")[2].strip() or str(exc)
            raise UserInputError(f"linking {path.name} failed: {first_line(detail)}") from exc
        return path


def build(
    graph: Graph,
    tvm_target: Mapping[str, Any] | str,
    host: Mapping[str, Any] | None = None,
    cross_compiler: str | None = None,
    *,
    shapes: Mapping[str, Sequence[int]] | None = None,
    prepare: ModuleHook = default_prepare,
    schedule: ModuleHook = default_schedule,
    fuse: bool | None = None,
    byoc: str | NpuSpec | None = None,
    merge: bool | None = None,
    exec_mode: str = "bytecode",
) -> BuiltModule:
    """Compile ``graph`` for ``tvm_target`` (a TVM target JSON dict, or a TVM tag name).

    ``host`` is the host target of a device target (it may also sit in the dict under
    ``"host"``); ``cross_compiler`` links the library for another CPU (e.g.
    ``"aarch64-linux-gnu-g++"``). ``shapes`` fixes symbolic input dimensions;
    ``prepare`` / ``schedule`` / ``fuse`` / ``merge`` configure the Relax pipeline
    (``relax_pipeline``); ``merge=None`` runs chains of small kernels as one kernel
    (``small_kernels.py``) on CPUs with the default schedule, so that a custom hook
    (``benchmarks/profile_kernels.py``, tests that inspect the scheduled kernels) sees
    and times one kernel per fused group.
    ``byoc`` partitions for an NPU first: a TVM BYOC backend name (its whole pattern
    table) or an ``NpuSpec`` (``NpuSpec.of(target)``: the target's op set and dtypes).
    Where TVM has no code generator for the backend, the NPU regions are built as host
    code and ``BuiltModule.partition`` says so. ``exec_mode`` is the Relax VM's:
    ``"compiled"`` makes ``main`` a function of the library (no interpreter, no
    instrument hook) but costs more than it saves where ``vm["main"]`` is looked up per
    call, as ``run`` and the benchmarks do: the merged digits CNN 0.96-0.98x with the
    function held, 2.1-3.1x with a lookup per call (in-memory executable, 2-vCPU Zen 4).
    """
    target = make_target(tvm_target, host)
    inputs = input_specs(graph, shapes)
    started = time.perf_counter()
    mod = import_graph(graph, inputs)
    outputs = output_specs(graph.output_names, mod["main"].ret_ty)
    report = None
    if byoc is not None:
        mod, report = _partitioned(mod, byoc)
    chosen = merge if merge is not None else not is_gpu(target) and schedule is default_schedule
    try:
        try:
            executable = _compile(
                mod, target, relax_pipeline(target, prepare, schedule, fuse, chosen), exec_mode
            )
        except (RuntimeError, ValueError, TypeError) as exc:
            if merge is not None or not chosen:
                raise
            # The merge only saves launches: a merged function TVM fails to lower (as
            # it did a boolean buffer, small_kernels.py) must not fail the model.
            log.warning("compiling without merged small kernels: %s", first_line(exc))
            executable = _compile(
                mod, target, relax_pipeline(target, prepare, schedule, fuse), exec_mode
            )
    except (RuntimeError, ValueError, TypeError) as exc:  # TVM's C++ errors arrive as these
        raise UserInputError(
            f"TVM could not compile {graph.name!r} for {target.kind.name}: {first_line(exc)}"
        ) from exc
    binaries = compile_cuda_kernels(executable, target) if target.kind.name == "cuda" else ()
    elapsed = time.perf_counter() - started
    log.info("compiled %r for %s in %.1f s", graph.name, target.kind.name, elapsed)
    return BuiltModule(
        executable,
        graph,
        json.loads(str(target)),
        cross_compiler,
        inputs,
        outputs,
        binaries,
        elapsed,
        report,
    )


def _compile(
    mod: tvm.IRModule, target: tvm.target.Target, pipeline: tvm.transform.Pass, exec_mode: str
) -> Any:
    """The Relax VM executable of ``mod`` (TVM's errors propagate)."""
    return tvm.relax.build(mod, target, relax_pipeline=pipeline, exec_mode=exec_mode)


def _partitioned(mod: tvm.IRModule, byoc: str | NpuSpec) -> tuple[tvm.IRModule, PartitionReport]:
    """The module to compile and the partition report.

    Without the backend's code generator the partitioned regions cannot be lowered; the
    unpartitioned module is the same computation, so it is compiled instead (the
    emulation upstream's example_npu runtime stands for).
    """
    try:
        parted, report = partition(mod, byoc)
    except (RuntimeError, ValueError, TypeError) as exc:  # TVM's C++ errors arrive as these
        name = byoc if isinstance(byoc, str) else byoc.byoc
        raise UserInputError(
            f"TVM could not partition the model for {name}: {first_line(exc)}"
        ) from exc
    log.info(
        "%s partition: %d regions, %d tensors crossing, NPU ops %s",
        report.byoc,
        report.regions,
        report.crossings,
        dict(report.npu_ops),
    )
    return (parted if report.npu_code == "codegen" else mod), report


def make_target(
    tvm_target: Mapping[str, Any] | str, host: Mapping[str, Any] | None = None
) -> tvm.target.Target:
    """A ``tvm.target.Target``; TVM's refusal becomes a one-line ``UserInputError``."""
    if isinstance(tvm_target, Mapping) and host is not None and "host" in tvm_target:
        raise UserInputError("the TVM target already names a host; do not pass host as well")
    spec = tvm_target if isinstance(tvm_target, str) else dict(tvm_target)
    try:
        return tvm.target.Target(spec, host=None if host is None else dict(host))
    except (ValueError, TypeError, RuntimeError) as exc:
        raise UserInputError(
            f"TVM refuses the target {json.dumps(spec)}: {first_line(exc)}"
        ) from exc
