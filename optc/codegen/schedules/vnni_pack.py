"""Pack int8 weights for VNNI: uint8 x int8 matmuls and 1x1 convolutions as one TE kernel.

Runs after layout conversion (a 1x1 conv2d is then NHWC / HWIO: a matmul over the
channel axis) and weight folding, on targets with AVX-512 VNNI. The contraction that
``optc.codegen.quantized`` produced::

    acc = matmul(xq, Wq, out_dtype="int32")            # xq uint8 [..., K], Wq int8 [K, N]
    acc = conv2d(xq, Wq, 1x1, NHWC/HWIO, out_dtype="int32")
  ->
    acc = call_tir(packed_dense, xq, Wp)               # Wp[N/16, K/4, 16, 4], packed here

whose loop nest ``vnni.py`` schedules and tensorizes (for ``vpmaddwd`` on AVX2, where
VNNI is missing or the output width is not a multiple of 16: ``Wp[N/8, K/2, 8, 2]``,
``vnni.AVX2``).
The packed kernel stays a contraction TVM fuses with its elementwise epilogue (rescale,
bias, activation, the next layer's quantize). Only uint8 activations qualify:
``vpdpbusd`` multiplies unsigned by signed bytes.
"""

from __future__ import annotations

import logging

import numpy as np
import tvm
from tvm import relax, te
from tvm.ir import Op
from tvm.ir.expr import GenericConst
from tvm.target import codegen

from optc.codegen.relax_rewrite import rewrite_functions

from .hw import has_vnni
from .vnni import AVX2, VNNI, DotKernel

logger = logging.getLogger(__name__)


def pack_weight(weight: np.ndarray, kernel: DotKernel = VNNI) -> np.ndarray:
    """``W[K, N]`` -> ``Wp[N/L, K/G, L, G]`` with ``Wp[n//L, k//G, n%L, k%G] = W[k, n]``
    (``L, G`` the kernel's lanes and group: 16, 4 for VNNI), in the kernel's weight dtype."""
    k, n = weight.shape
    lanes, group = kernel.lanes, kernel.group
    tiles = weight.reshape(k // group, group, n // lanes, lanes)
    return np.ascontiguousarray(tiles.transpose(2, 0, 3, 1).astype(kernel.weight_dtype))


def packed_dense(data: te.Tensor, packed: te.Tensor) -> te.Tensor:
    """``out[..., n] = sum_k int32(data[..., k]) * int32(W[k, n])`` on the packed weight."""
    depth = data.shape[-1]
    lanes, group = int(packed.shape[2]), int(packed.shape[3])
    cols = packed.shape[0] * lanes
    k = te.reduce_axis((0, depth), name="k")

    def body(*index: tvm.tirx.Var) -> tvm.tirx.PrimExpr:
        n = index[-1]
        return te.sum(
            data[(*index[:-1], k)].astype("int32")
            * packed[n // lanes, k // group, n % lanes, k % group].astype("int32"),
            axis=k,
        )

    return te.compute((*data.shape[:-1], cols), body, name="vnni_dense")


def dot_kernels(target: tvm.target.Target) -> tuple[DotKernel, ...]:
    """The packed int8 kernels ``target`` runs, preferred first: VNNI (16-wide outputs),
    then AVX2 ``vpmaddwd`` (8-wide: EfficientNet's 24- and 40-channel layers on a VNNI
    CPU too, whose AVX2 instructions remain); none off x86."""
    if target.kind.name != "llvm":
        return ()
    try:
        avx2 = bool(codegen.target_has_features("avx2", target))
    except (RuntimeError, ValueError):  # an LLVM target of another architecture
        return ()
    return (*((VNNI,) if has_vnni(target) else ()), *((AVX2,) if avx2 else ()))


def dot_kernel(target: tvm.target.Target) -> DotKernel | None:
    """The preferred packed int8 kernel for ``target`` (``dot_kernels``), if any."""
    kernels = dot_kernels(target)
    return kernels[0] if kernels else None


def _const(expr: relax.Expr) -> np.ndarray | None:
    return expr.value.numpy() if isinstance(expr, GenericConst) else None


def _dense_weight(call: relax.Call) -> np.ndarray | None:
    """The ``[K, N]`` int8 weight of a uint8 x int8 -> int32 matmul or 1x1 conv, or None."""
    if not (isinstance(call.op, Op) and isinstance(call.ty, relax.TensorType)):
        return None
    if call.op.name not in ("relax.matmul", "relax.nn.conv2d"):
        return None
    if str(call.ty.dtype) != "int32" or str(call.args[0].ty.dtype) != "uint8":
        return None
    weight = _const(call.args[1])
    if weight is None or weight.dtype != np.int8:
        return None
    if call.op.name == "relax.matmul" and weight.ndim == 2 and call.args[0].ty.ndim >= 2:
        return weight
    if call.op.name != "relax.nn.conv2d":
        return None
    attrs = call.attrs
    plain = (
        attrs.data_layout == "NHWC"
        and attrs.kernel_layout == "HWIO"
        and attrs.out_layout == "NHWC"
        and int(attrs.groups) == 1
        and all(int(v) == 1 for v in [*attrs.strides, *attrs.dilation])
        and not any(int(p) for p in attrs.padding)
    )
    return weight[0, 0] if plain and weight.shape[:2] == (1, 1) else None


@relax.expr_functor.mutator
class _PackForVnni(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, kernels: tuple[DotKernel, ...] = (VNNI,)) -> None:
        super().__init__(mod)
        self.kernels = kernels

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # TVM visitor name
        call = super().visit_call_(call)
        weight = _dense_weight(call)
        if weight is None:
            return call
        kernel = next(
            (
                k
                for k in self.kernels
                if weight.shape[0] % k.group == 0 and weight.shape[1] % k.lanes == 0
            ),
            None,
        )
        if kernel is None:
            return call
        packed = relax.const(pack_weight(weight, kernel), kernel.weight_dtype)
        return self.builder_.call_te(
            packed_dense, call.args[0], packed, primfunc_name_hint="vnni_dense"
        )


def pack_vnni_pass(target: tvm.target.Target) -> tvm.transform.Pass:
    """The rewrite as a module pass; the identity on targets with neither VNNI nor AVX2."""

    @tvm.transform.module_pass(opt_level=0, name="OptcPackVnni")
    def _pack(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        kernels = dot_kernels(target)
        if not kernels:
            return mod
        rewritten = rewrite_functions(_PackForVnni(mod, kernels), mod)
        return relax.transform.DeadCodeElimination()(rewritten)

    return _pack
