"""Merge chains of small, already scheduled kernels into one kernel each.

A small model is launch-bound: every kernel the Relax VM calls costs a fixed amount
beside its work (the call through the packed-function interface, an ``alloc_tensor``
and a ``null_value`` for its output, the instructions around them), about 0.1-0.16 us
per kernel in a chain on a 2-vCPU Zen 4, against the 0.2-1.5 us most kernels of the
digits CNN take. Measured there (``build`` against ``build(merge=False)`` in one
process, ``timing.paired_ratio``, bit-identical outputs, other jobs running): digits
mixed 0.72-0.75x, digits fp32 0.84-0.88x (one kernel each), Fashion-MNIST mixed 0.96x,
fp32 0.98-0.99x, MiniLM 1.00x fp32 and mixed, EfficientNet-Lite0 fp32 1.00x; the digits
mixed / fp32 ratio of ``benchmarks/quantize_vs_ort.py`` went from 0.52 to 0.47.

How: TVM's own ``FuseOps`` + ``FuseTIR``, run a second time on the scheduled module.
``FuseOps`` groups a dataflow's ``call_tir`` bindings by the ``op_pattern`` of the
functions they call; every small kernel is labelled elementwise for it (any chain of
those forms one group) and every other kernel opaque (never grouped), then the labels
are restored. ``FuseTIR`` concatenates each group's scheduled loop nests into one
function, whose intermediate tensors become buffers of that function (on the stack or
from TVM's per-thread workspace pool, both cheaper than the VM's allocation). The loop
nests are not changed, so the arithmetic is exactly the same.

Small: every tensor the kernel writes is at most ``SMALL_OUTPUT_BYTES`` (and of a type of
8 bits or more, not boolean or bfloat16: ``_tensor_bytes``). The merged
function holds all its intermediates at once (the VM would reuse their memory), so a
group is at most ``MAX_GROUP`` kernels: at most ``MAX_GROUP x SMALL_OUTPUT_BYTES`` live,
within the 1 MiB L2 of the Zen 4 and Zen 5 cores.
"""

from __future__ import annotations

import logging
import math

import tvm
from tvm import ir, relax, tirx

log = logging.getLogger(__name__)

SMALL_OUTPUT_BYTES = 64 * 1024
MAX_GROUP = 16

_SCHEDULED = "tirx.is_scheduled"
_PATTERN = "op_pattern"
_ELEMWISE = 0  # TVM's OpPatternKind kElemWise: fused with any neighbour of its kind
_OPAQUE = 8  # kOpaque: never fused


def merge_small_kernels(
    mod: ir.IRModule, max_bytes: int = SMALL_OUTPUT_BYTES, max_group: int = MAX_GROUP
) -> ir.IRModule:
    """``mod`` with each chain of small kernels (module docstring) called as one kernel.

    Expects the legalized, fused and scheduled module (the ``schedule`` hook's result);
    the merged functions are marked scheduled. Unchanged where no two small kernels are
    neighbours."""
    outputs = _output_bytes(mod)
    small = {gvar for gvar, sizes in outputs.items() if max(sizes) <= max_bytes}
    if len(small) < 2:
        return mod
    original: dict[ir.GlobalVar, tirx.PrimFunc] = {}
    labelled = mod.clone()  # the labels must not reach the caller's module
    for gvar, func in mod.functions_items():
        if isinstance(func, tirx.PrimFunc):
            original[gvar] = func
            labelled[gvar] = func.with_attr(_PATTERN, _ELEMWISE if gvar in small else _OPAQUE)
    try:
        with tvm.transform.PassContext(opt_level=3, config={"relax.FuseOps.max_depth": max_group}):
            merged = tvm.transform.Sequential(
                [
                    relax.transform.FuseOps(fuse_opt_level=2),
                    relax.transform.FuseTIR(),
                    relax.transform.DeadCodeElimination(),
                ]
            )(labelled)
    except (RuntimeError, ValueError, TypeError) as err:  # TVM's C++ errors arrive as these
        # Merging only saves launches: a function FuseTIR cannot concatenate keeps them.
        log.warning("small kernels not merged: %s", str(err).splitlines()[0])
        return mod
    for gvar, func in merged.functions_items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        before = original.get(gvar)
        if before is not None:
            merged[gvar] = before  # its own labels back (untouched by the fusion)
        else:
            merged[gvar] = func.with_attr(_SCHEDULED, True)
    return merged


def _output_bytes(mod: ir.IRModule) -> dict[ir.GlobalVar, list[float]]:
    """Bytes of each tensor written by each ``call_tir`` of the module's Relax functions,
    per called function (all its call sites); a symbolic shape counts as unbounded."""
    call_tir = ir.Op.get("relax.call_tir")
    found: dict[ir.GlobalVar, list[float]] = {}
    for _, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            continue

        def visit(expr: relax.Expr) -> None:
            if isinstance(expr, relax.Call) and expr.op.same_as(call_tir):
                callee = expr.args[0]
                if isinstance(callee, ir.GlobalVar):
                    found.setdefault(callee, []).extend(_tensor_bytes(expr.ty))

        relax.analysis.post_order_visit(func.body, visit)
    return found


def _tensor_bytes(ty: object) -> list[float]:
    """Bytes of the tensor type ``ty``, or of each tensor of a tuple type; ``math.inf``
    stands for a tensor whose shape or dtype is not static."""
    fields = getattr(ty, "fields", None)
    if fields is not None:
        return [size for field in fields for size in _tensor_bytes(field)]
    shape = getattr(ty, "shape", None)
    dtype = getattr(ty, "dtype", None)
    dims = getattr(shape, "values", None)
    if dims is None or dtype is None or not all(isinstance(d, (int, tirx.IntImm)) for d in dims):
        return [math.inf]
    kind = tvm.DataType(str(dtype))
    if kind.is_bool or kind.bits < 8 or str(dtype) == "bfloat16":
        # As a buffer inside the merged function a boolean tensor (MiniLM's attention
        # mask) is lowered to code LLVM rejects (``and <16 x i1>, <16 x i8>``, TVM 0.27),
        # and a bfloat16 one becomes float32 (TVM's bfloat16 legalization), which the
        # ``vdpbf16ps`` kernel reading it as 16-bit pairs cannot take (the build fails in
        # ``VectorizeLoop``): kernels writing one, or a sub-byte type, keep their own call.
        return [math.inf]
    return [float(math.prod(int(d) for d in dims) * kind.itemsize)]
