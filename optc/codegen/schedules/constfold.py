"""Fold constant subexpressions with numpy instead of compiling each one.

Relax ``FoldConstant`` compiles every foldable call with LLVM before running it: a
BatchNormalization decomposition or a weight transpose costs ~0.1 s each, a minute for
DenseNet-121. The operators that such weight preprocessing uses are evaluated here in
numpy (identical IEEE float32 results for these elementwise ops); anything else is left
to ``FoldConstant``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tvm
from tvm import relax
from tvm.ir import Op
from tvm.ir.expr import GenericConst

from optc.codegen.relax_rewrite import rewrite_functions

_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "relax.add": np.add,
    "relax.subtract": np.subtract,
    "relax.multiply": np.multiply,
    "relax.divide": np.divide,
    "relax.power": np.power,
    "relax.maximum": np.maximum,
    "relax.minimum": np.minimum,
}
_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relax.sqrt": np.sqrt,
    "relax.negative": np.negative,
    "relax.rsqrt": lambda x: 1 / np.sqrt(x),
}


def _shape_values(expr: relax.Expr) -> list[int] | None:
    if isinstance(expr, relax.ShapeExpr):
        values = [v.value if hasattr(v, "value") else None for v in expr.values]
        return None if any(v is None for v in values) else [int(v) for v in values]
    return None


@relax.expr_functor.mutator
class _NumpyFold(relax.PyExprMutator):
    """Replace calls whose tensor arguments are all constants by their value."""

    def _const(self, expr: relax.Expr) -> np.ndarray | None:
        if isinstance(expr, relax.Var):
            bound = self.lookup_binding(expr)
            expr = bound if bound is not None else expr
        if isinstance(expr, GenericConst):
            return expr.value.numpy()
        return None

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # TVM visitor name
        call = super().visit_call_(call)
        if not isinstance(call.op, Op) or not isinstance(call.ty, relax.TensorType):
            return call
        value = self._evaluate(call)
        if value is None:
            return call
        dtype = str(call.ty.dtype)
        return relax.const(np.ascontiguousarray(value).astype(dtype), dtype)

    def _evaluate(self, call: relax.Call) -> np.ndarray | None:
        name = call.op.name
        if name in _BINARY:
            a, b = self._const(call.args[0]), self._const(call.args[1])
            return None if a is None or b is None else _BINARY[name](a, b)
        x = self._const(call.args[0]) if call.args else None
        if x is None:
            return None
        if name in _UNARY:
            return _UNARY[name](x)
        if name == "relax.permute_dims":
            axes = call.attrs.axes
            return np.transpose(x, None if axes is None else [int(a) for a in axes])
        if name in ("relax.reshape", "relax.broadcast_to"):
            shape = _shape_values(call.args[1])
            if shape is None:
                return None
            return x.reshape(shape) if name == "relax.reshape" else np.broadcast_to(x, shape)
        if name == "relax.expand_dims":
            return np.expand_dims(x, tuple(int(a) for a in call.attrs.axis))
        if name == "relax.squeeze":
            axis = call.attrs.axis
            return np.squeeze(x, None if axis is None else tuple(int(a) for a in axis))
        if name == "relax.astype":
            return x.astype(str(call.attrs.dtype))
        return None


@tvm.transform.module_pass(opt_level=0, name="OptcNumpyFoldConstant")
def numpy_fold_constant(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    """Apply :class:`_NumpyFold` to every Relax function."""
    return rewrite_functions(_NumpyFold(mod), mod)


def fold_passes() -> list[tvm.transform.Pass]:
    """numpy folding, then TVM's ``FoldConstant`` for what numpy does not cover."""
    return [numpy_fold_constant, relax.transform.FoldConstant()]
