"""Pad the output channels of each group of a grouped convolution to whole SIMD vectors.

A grouped conv2d reads its input at ``out_channel // group_size``: a SIMD vector of output
channels must stay inside one group. ShuffleNet's groups of 34 or 68 channels allow only
2- or 4-lane vectors. Padding every group's weights with zero filters to a multiple of the
vector width (34 -> 48) computes some zeros but runs on full vectors; the padding is
sliced off right after::

    y = conv2d(x, w, groups=G)            # G groups of F_g channels, NHWC / HWIO
  ->
    y' = conv2d(x, pad(w), groups=G)      # G groups of F_p >= F_g channels
    y = reshape(slice(reshape(y', [.., G, F_p]), [.., :F_g]), [.., G * F_g])
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir import Op
from tvm.ir.expr import GenericConst

from optc.codegen.relax_rewrite import conv2d_like, rewrite_functions

from .hw import cpu_info

# Padding more than this fraction of extra filters costs more than narrow vectors save.
_MAX_PAD_FRACTION = 0.5


def padded_group_size(group_size: int, lanes: int) -> int | None:
    """The padded per-group channel count, or None when padding does not pay."""
    if group_size % lanes == 0 or group_size < lanes // 2:
        return None
    padded = -(-group_size // lanes) * lanes
    return padded if padded - group_size <= _MAX_PAD_FRACTION * group_size else None


@relax.expr_functor.mutator
class _PadGroups(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, lanes: int) -> None:
        super().__init__(mod)
        self.lanes = lanes

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # TVM visitor name
        call = super().visit_call_(call)
        if not (isinstance(call.op, Op) and call.op.name == "relax.nn.conv2d"):
            return call
        attrs = call.attrs
        weight = call.args[1]
        if isinstance(weight, relax.Var):
            bound = self.lookup_binding(weight)
            weight = bound if bound is not None else weight
        groups = int(attrs.groups)
        if (
            groups == 1
            or attrs.data_layout != "NHWC"
            or attrs.kernel_layout != "HWIO"
            or not isinstance(weight, GenericConst)
        ):
            return call
        w = weight.value.numpy()
        kh, kw, cg, f = w.shape
        if cg == 1 and f == groups:  # depthwise: every channel is its own group
            return call
        fg = f // groups
        fp = padded_group_size(fg, self.lanes)
        if fp is None:
            return call
        wp = np.zeros((kh, kw, cg, groups, fp), w.dtype)
        wp[..., :fg] = w.reshape(kh, kw, cg, groups, fg)
        conv = self.builder_.emit(
            conv2d_like(
                call, call.args[0], relax.const(wp.reshape(kh, kw, cg, groups * fp)),
                groups=groups, data_layout="NHWC", kernel_layout="HWIO", out_layout="NHWC",
            )
        )
        n, h, wd, _ = (int(d) for d in call.ty.shape.values)
        split = self.builder_.emit(relax.op.reshape(conv, [n, h, wd, groups, fp]))
        sliced = self.builder_.emit(relax.op.strided_slice(split, axes=[4], begin=[0], end=[fg]))
        return relax.op.reshape(sliced, [n, h, wd, groups * fg])


def pad_groups_pass(target: tvm.target.Target) -> tvm.transform.Pass:
    """Apply :class:`_PadGroups` with the target's vector width (run after ConvertLayout)."""
    lanes = cpu_info(target).lanes(32)

    @tvm.transform.module_pass(opt_level=0, name="OptcPadConvGroups")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return rewrite_functions(_PadGroups(mod, lanes), mod)

    return _pass
