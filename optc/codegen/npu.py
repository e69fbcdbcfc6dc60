"""NPU partitioning with TVM's BYOC pattern tables (``tvm.relax.backend.contrib.<byoc>``).

The imported Relax module is partitioned the way TVM's BYOC flow does it:
``FuseOpsByPattern(patterns)`` wraps every match of the backend's pattern table in a
composite function, ``MergeCompositeFunctions`` merges neighbouring ones into regions
(functions with a ``Codegen`` attribute), and ``RunCodegen`` hands those to the
backend's code generator (``relax.ext.<byoc>``).

Which calls may go to the NPU is decided by one rule shared with the roofline cost
model (``optc.cost.devices.accelerated``), on the NPU's op set (the target's
``supported_ops``, ONNX names, mapped to the Relax ops they import as) and the dtypes
it computes in: the roofline's picture of the model and the partition agree.

TVM 0.27's wheel has neither ``relax.ext.example_npu`` nor its runtime
(``runtime.ExampleNPUJSONRuntimeCreate``; they need a TVM built with
``USE_EXAMPLE_NPU_CODEGEN`` / ``USE_EXAMPLE_NPU_RUNTIME``), and upstream's runtime only
logs what it would do, it computes nothing. Where the codegen is missing the regions
are built as host code (emulated on the fallback CPU) and the report says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import tvm
from tvm import relax
from tvm.ir import IRModule

from optc.cost.devices import accelerated, computes
from optc.errors import UserInputError

log = logging.getLogger(__name__)

NPU, CPU = "npu", "cpu"

ONNX_TO_RELAX: Mapping[str, tuple[str, ...]] = {
    "Conv": ("relax.nn.conv1d", "relax.nn.conv2d"), "MatMul": ("relax.matmul",),
    "Gemm": ("relax.matmul",), "MaxPool": ("relax.nn.max_pool2d",),
    "AveragePool": ("relax.nn.avg_pool2d",), "BatchNormalization": ("relax.nn.batch_norm",),
    "Softmax": ("relax.nn.softmax",), "Gelu": ("relax.nn.gelu",), "Relu": ("relax.nn.relu",),
    "Sigmoid": ("relax.nn.sigmoid", "relax.sigmoid"), "Tanh": ("relax.nn.tanh", "relax.tanh"),
    "Add": ("relax.add",), "Mul": ("relax.multiply",), "Sub": ("relax.subtract",),
    "Div": ("relax.divide",), "QuantizeLinear": ("relax.quantize",),
    "DequantizeLinear": ("relax.dequantize",),
}
"""The Relax ops TVM's ONNX importer emits for an ONNX op, where a BYOC pattern can match."""

VIEW_OPS = frozenset({"relax.reshape", "relax.squeeze", "relax.expand_dims", "relax.nn.dropout"})
"""Ops that only re-describe memory (dropout: the identity at inference): they stay with
their input, as the roofline's views (Reshape, Flatten, Squeeze, Unsqueeze, Dropout)."""


@dataclasses.dataclass(frozen=True)
class NpuSpec:
    """What the NPU runs: its BYOC backend, op set (ONNX names; None: the whole pattern
    table) and compute dtypes (None: any)."""

    byoc: str
    ops: frozenset[str] | None = None
    dtypes: tuple[str, ...] | None = None

    @classmethod
    def of(cls, target: Any) -> NpuSpec | None:
        """The NPU of an ``optc.target.Target`` (None when it names no BYOC backend).

        The dtypes are the target's peak-figure dtypes: what the roofline's accelerator
        computes in (``optc.cost.devices.main_device``).
        """
        if not target.tvm_byoc:
            return None
        return cls(target.tvm_byoc, target.supported_ops, tuple(target.peak_flops))

    def relax_ops(self) -> frozenset[str] | None:
        if self.ops is None:
            return None
        return frozenset(op for onnx in self.ops for op in ONNX_TO_RELAX.get(onnx, ()))


@dataclasses.dataclass(frozen=True)
class PartitionReport:
    """Where the calls went: counts per Relax op, NPU regions, tensors crossing the link."""

    byoc: str
    npu_ops: Mapping[str, int]
    cpu_ops: Mapping[str, int]
    composites: Mapping[str, int]
    regions: int
    crossings: int
    npu_code: str  # "codegen" (the backend's) or "host-emulation"
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"byoc": self.byoc, "npu_ops": dict(self.npu_ops), "cpu_ops": dict(self.cpu_ops),
                "composites": dict(self.composites), "regions": self.regions,
                "crossings": self.crossings, "npu_code": self.npu_code, "note": self.note}


def load_patterns(byoc: str) -> list[Any]:
    """The backend's registered ``FusionPattern`` s; an unknown backend is one line."""
    from tvm.relax.backend.pattern_registry import get_patterns_with_prefix

    patterns = []
    if byoc.isidentifier():
        # Importing the contrib package registers its table (example_npu, nnapi, ...).
        with contextlib.suppress(ImportError):
            importlib.import_module(f"tvm.relax.backend.contrib.{byoc}")
        patterns = list(get_patterns_with_prefix(byoc))
    if not patterns:
        raise UserInputError(f"unknown BYOC backend {byoc!r}: TVM {tvm.__version__} registers "
                             f"no patterns for it (e.g. 'example_npu')")
    return patterns


def check_op_set(spec: NpuSpec, patterns: list[Any]) -> None:
    """Every declared op must be one the pattern table can take, or the roofline (which
    trusts the declaration) and the partition would disagree."""
    if spec.ops is None:
        return
    matched = set().union(*(_pattern_ops(p.pattern) for p in patterns))
    missing = sorted(op for op in spec.ops if not set(ONNX_TO_RELAX.get(op, ())) & matched)
    if missing:
        raise UserInputError(f"the {spec.byoc} pattern table of TVM {tvm.__version__} cannot "
                             f"offload declared ops {', '.join(missing)}: remove them from "
                             "supported_ops")


def partition(mod: IRModule, spec: NpuSpec | str) -> tuple[IRModule, PartitionReport]:
    """``mod`` with the NPU's calls in ``Codegen`` regions, lowered when TVM can, and a report."""
    spec = NpuSpec(spec) if isinstance(spec, str) else spec
    homes = placement(mod["main"], spec)
    table = load_patterns(spec.byoc)
    check_op_set(spec, table)
    patterns = [_restricted(p, homes) for p in table if _allowed(p, spec.relax_ops())]
    # Composites first, then merged into regions: with annotate_codegen=True every
    # composite would be a region of its own and MergeCompositeFunctions finds nothing.
    parted = relax.transform.FuseOpsByPattern(patterns, bind_constants=False)(mod)
    parted = relax.transform.MergeCompositeFunctions()(parted)
    report = summarize(parted, spec.byoc)
    if tvm.get_global_func(f"relax.ext.{spec.byoc}", True) is None:
        note = (f"TVM {tvm.__version__} has no relax.ext.{spec.byoc} code generator: the NPU "
                "regions are built as host code (emulated on the fallback CPU)")
        log.log(logging.WARNING if report.regions else logging.DEBUG, "%s", note)
        return parted, dataclasses.replace(report, npu_code="host-emulation", note=note)
    return relax.transform.RunCodegen()(parted), report


def placement(func: relax.Function, spec: NpuSpec) -> dict[Any, str | None]:
    """Binding var -> ``npu`` / ``cpu`` (None: computed from constants only, folded)."""
    allowed = spec.relax_ops()

    def decide(call: relax.Call, on_npu: list[bool]) -> str:
        op = call.op.name
        supported = allowed is None or op in allowed
        native = spec.dtypes is None or computes(spec.dtypes, _compute_dtype(call))
        return NPU if accelerated(supported, native, on_npu) else CPU

    return _homes(func, decide)


def summarize(mod: IRModule, byoc: str) -> PartitionReport:
    """Count what ``FuseOpsByPattern`` + ``MergeCompositeFunctions`` put where."""
    npu_ops: Counter[str] = Counter()
    composites: Counter[str] = Counter()
    regions = 0

    def region(call: relax.Call, _on_npu: list[bool]) -> str:
        nonlocal regions
        regions += 1
        _count_region(mod[call.op], npu_ops, composites)
        return NPU

    homes = _homes(mod["main"], lambda call, _: CPU, region, mod, byoc)
    cpu_ops = Counter(b.value.op.name for b in _bindings(mod["main"])
                      if homes.get(b.var) == CPU and _is_op_call(b.value))
    return PartitionReport(byoc, dict(npu_ops), dict(cpu_ops), dict(composites), regions,
                           _crossings(mod["main"], homes), "codegen")


def _homes(func: relax.Function, decide: Callable[[relax.Call, list[bool]], str],
           on_region: Callable[[relax.Call, list[bool]], str] | None = None,
           mod: IRModule | None = None, byoc: str | None = None) -> dict[Any, str | None]:
    """Where each binding's value lives, in binding order; inputs live on the CPU."""
    homes: dict[Any, str | None] = {p: CPU for p in func.params}
    for binding in _bindings(func):
        value, var = binding.value, binding.var
        args = _tensor_args(value)
        active = [a for a in args if isinstance(a, relax.Var) and homes.get(a) is not None]
        on_npu = [homes[a] == NPU for a in active]
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.GlobalVar):
            codegen = (mod[value.op].attrs or {}).get("Codegen") if mod is not None else None
            homes[var] = on_region(value, on_npu) if on_region and codegen == byoc else CPU
        elif not active and args and all(_constant(a, homes) for a in args):
            homes[var] = None  # folded at compile time, as the roofline's fold_constants
        elif isinstance(value, relax.TupleGetItem | relax.Var) or (
                _is_op_call(value) and value.op.name in VIEW_OPS):
            homes[var] = homes.get(active[0], CPU) if active else None
        elif _is_op_call(value):
            homes[var] = decide(value, on_npu)
        else:
            homes[var] = CPU
    return homes


def _crossings(func: relax.Function, homes: Mapping[Any, str | None]) -> int:
    """Tensors shipped between NPU and CPU: once per (tensor, destination), plus outputs.

    The roofline's accounting (``optc.cost.kernels.node_traffic``): views are their
    input's memory, graph inputs start on the CPU and outputs end there.
    """
    roots: dict[Any, Any] = {}
    moved: set[tuple[Any, str]] = set()
    for binding in _bindings(func):
        value, var = binding.value, binding.var
        args = [a for a in _tensor_args(value) if isinstance(a, relax.Var)
                and homes.get(a) is not None]
        if (_is_op_call(value) and value.op.name in VIEW_OPS) or isinstance(value, relax.Var):
            roots[var] = roots.get(args[0], args[0]) if args else var
            continue
        if isinstance(value, relax.TupleGetItem):
            # An element is a tensor of its own (a region returning two tensors ships
            # two), unless the tuple is a view's (dropout's output is its input).
            if value.tuple_value in roots:
                roots[var] = roots[value.tuple_value]
            continue
        if homes.get(var) is None:
            continue
        for arg in args:
            root = roots.get(arg, arg)
            if homes.get(root) != homes[var]:
                moved.add((root, str(homes[var])))
    output = func.body.body
    out_root = roots.get(output, output)
    return len(moved) + int(homes.get(out_root) == NPU)


def _count_region(func: relax.Function, ops: Counter[str], composites: Counter[str]) -> None:
    """Count per call site: identical composites are one local function called twice."""
    local: dict[Any, relax.Function] = {}
    for binding in _bindings(func):
        value = binding.value
        if isinstance(value, relax.Function):
            local[binding.var] = value
        elif isinstance(value, relax.Call) and value.op in local:
            composite = local[value.op]
            composites[str(composite.attrs["Composite"])] += 1
            relax.analysis.post_order_visit(
                composite.body, lambda e: ops.update([e.op.name]) if _is_op_call(e) else None)


def _allowed(pattern: Any, ops: frozenset[str] | None) -> bool:
    """Whether every op the pattern matches is in the NPU's op set."""
    return ops is None or _pattern_ops(pattern.pattern) <= ops


def _pattern_ops(pattern: Any) -> set[str]:
    from tvm.relax.dpl.pattern import CallPattern, ExprPattern

    if not isinstance(pattern, CallPattern):
        return set()
    found = {pattern.op.expr.name} if isinstance(pattern.op, ExprPattern) else set()
    for arg in pattern.args or ():
        found |= _pattern_ops(arg)
    return found


def _restricted(pattern: Any, homes: Mapping[Any, str | None]) -> Any:
    """The pattern, matching only where every matched call was placed on the NPU.

    A root call pattern with fewer operands than its op takes is padded with wildcards:
    TVM 0.27's example_npu quantize/dequantize patterns match one operand while
    ``relax.quantize`` / ``relax.dequantize`` take three (data, scale, zero point), so as
    shipped they never match and every QDQ boundary would fall back to the CPU.
    """
    check = pattern.check
    root, annotations = _full_arity(pattern.pattern, pattern.annotation_patterns)

    def npu_only(context: Any) -> bool:
        if any(homes.get(var) != NPU for var in context.matched_bindings):
            return False
        return check is None or bool(check(context))

    return relax.transform.FusionPattern(pattern.name, root, annotations, npu_only,
                                         pattern.attrs_getter)


def _full_arity(root: Any, annotations: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    from tvm.relax.dpl.pattern import CallPattern, ExprPattern, wildcard

    annotations = dict(annotations or {})
    if not (isinstance(root, CallPattern) and isinstance(root.op, ExprPattern)):
        return root, annotations
    missing = int(root.op.expr.num_inputs) - len(root.args)
    if missing <= 0:
        return root, annotations
    padded = CallPattern(root.op, [*root.args, *(wildcard() for _ in range(missing))])
    log.debug("padded the %s pattern with %d wildcard operands", root.op.expr.name, missing)
    return padded, {k: padded if v.same_as(root) else v for k, v in annotations.items()}


def _compute_dtype(call: relax.Call) -> str:
    """As the roofline: quantize computes in its output type, dequantize in its input's,
    other ops in their first float operand's (else first known) type."""
    if call.op.name == "relax.quantize":
        return _dtype(call) or "float32"
    if call.op.name == "relax.dequantize":
        return _dtype(call.args[0]) or "float32"
    known = [d for d in (_dtype(e) for e in [*call.args, call]) if d]
    floats = [d for d in known if "float" in d]
    return (floats or known or ["float32"])[0]


def _dtype(expr: Any) -> str | None:
    ty = getattr(expr, "ty", None)
    dtype = getattr(ty, "dtype", None) if isinstance(ty, relax.TensorType) else None
    return str(dtype) if dtype is not None and str(dtype) else None


def _bindings(func: relax.Function) -> list[Any]:
    return [b for block in func.body.blocks for b in block.bindings]


def _tensor_args(value: Any) -> list[Any]:
    """The vars and constants a binding reads (tuple operands flattened: concat's inputs)."""
    if isinstance(value, relax.Call):
        return [a for arg in value.args for a in _tensor_args(arg)]
    if isinstance(value, relax.Tuple):
        return [a for field in value.fields for a in _tensor_args(field)]
    if isinstance(value, relax.TupleGetItem):
        return [value.tuple_value]
    return [value] if isinstance(value, relax.Var | tvm.ir.expr.Constant) else []


def _constant(arg: Any, homes: Mapping[Any, str | None]) -> bool:
    return isinstance(arg, tvm.ir.expr.Constant) or (arg in homes and homes[arg] is None)


def _is_op_call(expr: Any) -> bool:
    return isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op)
