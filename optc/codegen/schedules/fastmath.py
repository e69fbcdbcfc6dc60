"""Vectorizable ``exp``/``erf``/``tanh`` for CPUs.

LLVM has no vector ``exp`` or ``erf`` without a vector math library, so TVM's lowering
turns each SIMD lane into a libm call: a GELU or softmax epilogue then costs as much as
the matmul before it. TOPI's polynomial ``fast_exp``/``fast_erf`` vectorize; their error
is below 3e-7 relative (exp) and 2e-7 absolute (erf) over the float32 range.
"""

from __future__ import annotations

import tvm
from tvm import relax, topi
from tvm.ir import Op

from optc.codegen.relax_rewrite import rewrite_functions


@relax.expr_functor.mutator
class _FastSoftmax(relax.PyExprMutator):
    """``nn.softmax`` -> TOPI's ``fast_softmax`` (same max-subtract-exp-sum-divide, fast exp)."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # TVM visitor name
        call = super().visit_call_(call)
        if isinstance(call.op, Op) and call.op.name == "relax.nn.softmax":
            ty = call.args[0].ty
            if isinstance(ty, relax.TensorType) and ty.dtype == "float32":
                return self.builder_.call_te(
                    topi.nn.fast_softmax, call.args[0], int(call.attrs.axis),
                    primfunc_name_hint="fast_softmax",
                )
        return call


@tvm.transform.module_pass(opt_level=0, name="OptcFastSoftmax")
def fast_softmax(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    """Apply :class:`_FastSoftmax` to every Relax function."""
    return rewrite_functions(_FastSoftmax(mod), mod)


def fast_math_passes() -> list[tvm.transform.Pass]:
    """Run after layout conversion: the rewritten calls are opaque ``call_tir``s to it."""
    return [relax.transform.FastMathTransform(), fast_softmax]
