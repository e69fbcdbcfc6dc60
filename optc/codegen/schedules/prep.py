"""Relax-level clean-ups that let the CPU schedules see simple, channels-last operators.

TVM 0.27's ``ConvertLayout`` gives up on two shapes that the ONNX importer emits: the
``(output, mask)`` tuple of ``nn.dropout`` and the 5-D ``sum(stack(...))`` that ONNX ``Sum``
becomes; it also cannot see through the ``call_tir`` functions the importer emits for
``Clip`` and ``Pad`` (see ``lift.py``). All are rewritten here into plain Relax operators
before the layout is converted; an explicit zero ``pad`` before a conv2d becomes the
conv's own padding, and per-channel constants of lower rank (``[C, 1, 1]``) are given the
full rank that ``ConvertLayout`` needs to move them channels-last.
"""

from __future__ import annotations

import logging

import numpy as np
import tvm
import tvm_ffi
from tvm import relax
from tvm.ir import Op
from tvm.ir.expr import GenericConst

from optc.codegen.relax_rewrite import conv2d_like

from .constfold import fold_passes
from .conv_pack import pack_conv_weights_pass
from .fastmath import fast_math_passes
from .groups import pad_groups_pass
from .lift import lift_call_tir
from .vnni_pack import pack_vnni_pass

logger = logging.getLogger(__name__)

# Channels-last for 2-D convolutions: the output channel becomes the innermost, contiguous
# axis, which is what the contraction schedule vectorizes. Weights become HWIO constants.
CHANNELS_LAST = {"relax.nn.conv2d": ["NHWC", "HWIO"]}

_BROADCAST_BINARY = {
    "relax.add": relax.op.add,
    "relax.subtract": relax.op.subtract,
    "relax.multiply": relax.op.multiply,
    "relax.divide": relax.op.divide,
}


def _same_shape(a: relax.Expr, shape: relax.Expr) -> bool:
    ty = a.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return False
    return bool(tvm_ffi.structural_equal(ty.shape, shape))


@relax.expr_functor.mutator
class _Simplify(relax.PyExprMutator):
    """Drop inference no-ops and turn ``sum(stack(xs))`` into an ``add`` chain."""

    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.mod = mod

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # TVM visitor name
        call = super().visit_call_(call)
        if not isinstance(call.op, Op):
            return call
        name = call.op.name
        if name == "relax.call_tir":
            lifted = lift_call_tir(call, self.mod)
            return call if lifted is None else lifted
        if name == "relax.nn.conv2d":
            return self._absorb_pad(call)
        if name == "relax.nn.dropout":
            # Inference-mode dropout is the identity; its mask is all ones.
            x = call.args[0]
            return relax.Tuple([x, relax.op.ones_like(x)])
        if name == "relax.broadcast_to" and _same_shape(call.args[0], call.args[1]):
            return call.args[0]
        if name == "relax.sum":
            return self._stack_sum(call)
        if name in _BROADCAST_BINARY:
            return self._full_rank_constant(call)
        return call

    def _full_rank_constant(self, call: relax.Call) -> relax.Expr:
        """``x * c`` with a constant ``c`` of lower rank than ``x`` (a folded
        BatchNormalization's ``[C, 1, 1]`` scale) -> ``c`` reshaped to ``x``'s rank, as
        broadcasting reads it. ``ConvertLayout`` converts only full-rank operands; a
        ``[C, 1, 1]`` one left every BN of Inception v2 in NCHW between two transposes."""
        args = list(call.args)
        for k in (0, 1):
            const, other = self._resolve(args[k]), args[1 - k]
            ty = other.ty
            if not (isinstance(const, GenericConst) and isinstance(ty, relax.TensorType)):
                continue
            value = const.value.numpy()
            # Only 4-D operands: what ConvertLayout turns channels-last.
            if ty.ndim != 4 or not 0 < value.ndim < ty.ndim:
                continue
            full = value.reshape((1,) * (ty.ndim - value.ndim) + value.shape)
            args[k] = relax.const(np.ascontiguousarray(full), str(value.dtype))
            return _BROADCAST_BINARY[call.op.name](*args)
        return call

    def _absorb_pad(self, conv: relax.Call) -> relax.Expr:
        """``conv2d(pad(x, 0 on H/W), w)`` -> ``conv2d(x, w, padding=...)`` (NCHW only)."""
        attrs = conv.attrs
        if attrs.data_layout != "NCHW":
            return conv
        pad = self._resolve(conv.args[0])
        if not (isinstance(pad, relax.Call) and isinstance(pad.op, Op)):
            return conv
        if pad.op.name != "relax.nn.pad" or pad.attrs.pad_mode != "constant":
            return conv
        widths = [int(w) for w in pad.attrs.pad_width]
        if len(widths) != 8 or any(widths[:4]) or float(pad.attrs.pad_value) != 0.0:
            return conv
        top, bottom, left, right = widths[4:]
        p = [int(v) for v in attrs.padding]
        padding = [p[0] + top, p[1] + left, p[2] + bottom, p[3] + right]
        return conv2d_like(conv, pad.args[0], conv.args[1], padding=padding)

    def _resolve(self, expr: relax.Expr) -> relax.Expr:
        """The expression a dataflow variable is bound to (the variable itself if unbound)."""
        if isinstance(expr, relax.Var):
            bound = self.lookup_binding(expr)
            if bound is not None:
                return bound
        return expr

    def _stack_sum(self, call: relax.Call) -> relax.Expr:
        axis = call.attrs.axis
        if axis is None or len(axis) != 1 or call.attrs.keepdims:
            return call
        src = self._resolve(call.args[0])
        if not (isinstance(src, relax.Call) and isinstance(src.op, Op)):
            return call
        if src.op.name != "relax.stack" or int(src.attrs.axis) != int(axis[0]):
            return call
        parts = self._resolve(src.args[0])
        if not isinstance(parts, relax.Tuple):
            return call
        total = parts.fields[0]
        for field in parts.fields[1:]:
            total = self.builder_.emit(relax.op.add(total, field))
        return total


@tvm.transform.module_pass(opt_level=0, name="OptcSimplifyForLayout")
def simplify_for_layout(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    """Apply :class:`_Simplify` to every Relax function, then clean up dead bindings."""
    mutator = _Simplify(mod)
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mod[gvar] = mutator.visit_expr(func)
    return tvm.transform.Sequential(
        [relax.transform.CanonicalizeBindings(), relax.transform.DeadCodeElimination()]
    )(mod)


def layout_passes(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    """Passes run before legalization: simplify, convert to channels-last, fold weights,
    pack int8 weights for VNNI (where ``target`` has it), pad conv groups to whole vectors
    of ``target``, pack float conv / matmul weights into panels (``conv_pack.py``)."""
    return [
        relax.transform.DecomposeOpsForInference(),
        *fold_passes(),
        simplify_for_layout,
        relax.transform.ConvertLayout(CHANNELS_LAST),
        *fast_math_passes(),
        *fold_passes(),
        pack_vnni_pass(target),
        pad_groups_pass(target),
        pack_conv_weights_pass(target),
        relax.transform.CanonicalizeBindings(),
        relax.transform.DeadCodeElimination(),
    ]
