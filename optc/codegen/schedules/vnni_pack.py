"""Pack int8 weights for VNNI: uint8 x int8 matmuls and 1x1 convolutions as one TE kernel.

Runs after layout conversion (a 1x1 conv2d is then NHWC / HWIO: a matmul over the
channel axis) and weight folding, on targets with AVX-512 VNNI. The contraction that
``optc.codegen.quantized`` produced::

    acc = matmul(xq, Wq, out_dtype="int32")            # xq uint8 [..., K], Wq int8 [K, N]
    acc = conv2d(xq, Wq, 1x1, NHWC/HWIO, out_dtype="int32")
  ->
    acc = call_tir(packed_dense, xq, Wp)               # Wp[N/16, K/4, 16, 4], packed here

whose loop nest ``vnni.py`` schedules and tensorizes (with VNNI, output widths that are a
multiple of 8 but not of 16 on 256-bit ``vpdpbusd``, ``Wp[N/8, K/4, 8, 4]``,
``vnni.VNNI_YMM``; on AVX2 without VNNI: ``vpmaddubsw`` on pairs of K-groups,
``Wp[N/8, K/8, 2, 8, 4]``, when every weight code lies in [-32, 32] and K (a spatial
conv's channels) is a multiple of 8, ``vnni.PMADDUBSW_PAIRS``; else ``vpmaddubsw`` on
``Wp[N/8, K/4, 8, 4]`` when every code lies in [-64, 63], ``vnni.PMADDUBSW``; else
``vpmaddwd`` on ``Wp[N/8, K/2, 8, 2]``, ``vnni.AVX2``: the codes of the constant decide,
so any QDQ model stays exact).
Spatial convolutions (3x3, 5x5, strided, padded; one group, input channels a multiple of
4) become implicit GEMMs on the same kernels (``packed_conv``): ``k = (ky * KW + kx) * C
+ c`` runs over the taps, so 4 consecutive k are 4 channels of one pixel of the
zero-padded NHWC activation, materialized once (relax ``conv2d`` pads with 0; a non-zero
activation zero point reaches it as int16, ``optc.codegen.quantized``, and is not packed).
The Fashion-MNIST CNN's 3x3 convs ran at 1.2-1.65x optc's float32 time as the generic
int32 loop, 0.45-0.59x packed with 7-bit codes (Zen 3 target, ``optc.quant.latency``).
The packed kernel stays a contraction TVM fuses with its elementwise epilogue (rescale,
bias, activation, the next layer's quantize). Only uint8 activations qualify:
``vpdpbusd`` multiplies unsigned by signed bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any

import numpy as np
import tvm
from tvm import relax, te, topi
from tvm.ir import Op
from tvm.ir.expr import GenericConst
from tvm.target import codegen

from optc.codegen.relax_rewrite import rewrite_functions

from .hw import has_bf16_dot, has_vnni
from .vnni import (
    AVX2,
    BF16,
    BF16_YMM,
    PAIRS_MIN_K,
    PMADDUBSW,
    PMADDUBSW_PAIRS,
    VNNI,
    VNNI_YMM,
    DotKernel,
)

logger = logging.getLogger(__name__)


def pack_weight(weight: np.ndarray, kernel: DotKernel = VNNI) -> np.ndarray:
    """``W[K, N]`` -> ``Wp[N/L, K/G, L, G]`` with ``Wp[n//L, k//G, n%L, k%G] = W[k, n]``
    (``L, G`` the kernel's lanes and group: 16, 4 for VNNI), in the kernel's weight dtype;
    for a kernel whose tile is stored in ``H`` halves (``PMADDUBSW_PAIRS``: 2)
    ``Wp[N/L, K/G, H, L, G/H]`` with ``Wp[n//L, k//G, k%G // (G/H), n%L, k % (G/H)]``:
    the bytes of ``PMADDUBSW``'s ``[N/8, K/4, 8, 4]`` packing, viewed two K-groups at a
    time."""
    k, n = weight.shape
    lanes, group, halves = kernel.lanes, kernel.group, kernel.halves
    tiles = weight.reshape(k // group, halves, group // halves, n // lanes, lanes)
    packed = tiles.transpose(3, 0, 1, 4, 2).astype(kernel.weight_dtype)
    if halves == 1:
        packed = packed.reshape(n // lanes, k // group, lanes, group)
    return np.ascontiguousarray(packed)


# (activation, weight, accumulator) dtypes of the contractions a dot kernel runs: the
# integer ones ``optc.codegen.quantized`` lowers QDQ layers to, and bfloat16 layers
# widened to float32 sums (``quantized._widened``) for ``vnni.BF16``.
OPERAND_TYPES = (("uint8", "int8", "int32"), ("bfloat16", "bfloat16", "float32"))


def _acc_dtype(packed: te.Tensor) -> str:
    """The accumulator type of a kernel on ``packed`` (``OPERAND_TYPES``: float32 for
    bfloat16 weights, int32 for int8 ones)."""
    return next(acc for _, weight, acc in OPERAND_TYPES if weight == str(packed.dtype))


def _packed_at(packed: te.Tensor, n: Any, k: Any) -> Any:
    """``W[k, n]`` read from a weight packed by ``pack_weight`` (its rank says how)."""
    if len(packed.shape) == 4:
        lanes, group = int(packed.shape[2]), int(packed.shape[3])
        return packed[n // lanes, k // group, n % lanes, k % group]
    halves, lanes, part = (int(d) for d in packed.shape[2:])
    group = halves * part
    return packed[n // lanes, k // group, k % group // part, n % lanes, k % part]


def packed_dense(data: te.Tensor, packed: te.Tensor) -> te.Tensor:
    """``out[..., n] = sum_k acc(data[..., k]) * acc(W[k, n])`` on the packed weight
    (``acc``: int32, or float32 for bfloat16)."""
    depth = data.shape[-1]
    cols = packed.shape[0] * int(packed.shape[-2])
    k = te.reduce_axis((0, depth), name="k")
    acc = _acc_dtype(packed)

    def body(*index: tvm.tirx.Var) -> tvm.tirx.PrimExpr:
        n = index[-1]
        return te.sum(
            data[(*index[:-1], k)].astype(acc) * _packed_at(packed, n, k).astype(acc), axis=k
        )

    return te.compute((*data.shape[:-1], cols), body, name="vnni_dense")


@dataclasses.dataclass(frozen=True)
class SpatialConv:
    """A uint8 x int8 -> int32 NHWC / HWIO conv with one group and a kernel wider than
    1x1 (or padded / strided), as an implicit GEMM over ``k = (ky * KW + kx) * C + c``:
    ``weight`` is ``[KH * KW * C, O]``; ``padding`` is ``[top, left, bottom, right]``."""

    weight: np.ndarray
    kernel: tuple[int, int]
    strides: tuple[int, int]
    padding: tuple[int, int, int, int]


def packed_conv(data: te.Tensor, packed: te.Tensor, conv: SpatialConv) -> te.Tensor:
    """``out[n, y, x, o] = sum_k int32(pad(data)[n, y*sy + ky, x*sx + kx, c]) * W[k, o]``
    on the packed weight, zero-padded (the activation's zero point is 0: after ReLU;
    ``optc.codegen.quantized`` shifts other zero points to int16, which is not packed).
    With ``C % 4 == 0`` each group of 4 consecutive k reads 4 consecutive channels of
    one pixel: the broadcast word of the dot kernels."""
    batch, height, width, channels = (int(d) for d in data.shape)
    (kh, kw), (sy, sx) = conv.kernel, conv.strides
    top, left, bottom, right = conv.padding
    padded = data
    if any(conv.padding) and str(data.dtype) == "bfloat16":
        padded = _padded_bits(data, conv.padding)
    elif any(conv.padding):  # as conv_pack.packed_conv pads the float32 convs
        padded = topi.nn.pad(data, [0, top, left, 0], [0, bottom, right, 0], name="pad_temp")
    out_h = (height + top + bottom - kh) // sy + 1
    out_w = (width + left + right - kw) // sx + 1
    cols = int(packed.shape[0]) * int(packed.shape[-2])
    k = te.reduce_axis((0, kh * kw * channels), name="k")
    acc = _acc_dtype(packed)

    def body(n: Any, y: Any, x: Any, o: Any) -> Any:
        tap = padded[n, y * sy + k // (kw * channels), x * sx + k // channels % kw,
                     k % channels]
        if str(padded.dtype) == "uint16":  # a bfloat16 activation's bits
            tap = tvm.tirx.reinterpret("bfloat16", tap)
        return te.sum(tap.astype(acc) * _packed_at(packed, o, k).astype(acc), axis=k)

    return te.compute((batch, out_h, out_w, cols), body, name="vnni_conv")


def _operands(call: relax.Call) -> np.ndarray | None:
    """The constant weight of a contraction whose operand and result types a dot kernel
    computes (``OPERAND_TYPES``), or None."""
    if not (isinstance(call.op, Op) and isinstance(call.ty, relax.TensorType)):
        return None
    weight = _const(call.args[1])
    if weight is None or not isinstance(call.args[0].ty, relax.TensorType):
        return None
    types = (str(call.args[0].ty.dtype), str(weight.dtype), str(call.ty.dtype))
    return weight if types in OPERAND_TYPES else None


def _padded_bits(data: te.Tensor, padding: tuple[int, int, int, int]) -> te.Tensor:
    """The zero-padded NHWC bfloat16 ``data`` as its bits (uint16; 0 is +0.0): TVM's
    bfloat16 legalization would make a bfloat16 copy allocated in the kernel float32
    (``bf16_dot.intrin_name(lanes, bits=True)``)."""
    top, left, bottom, right = padding
    batch, height, width, channels = (int(d) for d in data.shape)

    def bits(n: Any, y: Any, x: Any, c: Any) -> Any:
        inside = tvm.tirx.all(y >= top, y < top + height, x >= left, x < left + width)
        value = tvm.tirx.reinterpret("uint16", data[n, y - top, x - left, c])
        return tvm.tirx.if_then_else(inside, value, tvm.tirx.const(0, "uint16"))

    shape = (batch, height + top + bottom, width + left + right, channels)
    return te.compute(shape, bits, name="pad_temp")


def _spatial_conv(call: relax.Call) -> SpatialConv | None:
    """The implicit-GEMM form of a uint8 x int8 -> int32 (or bfloat16 -> float32)
    spatial conv, or None."""
    if not (isinstance(call.op, Op) and call.op.name == "relax.nn.conv2d"):
        return None
    weight = _operands(call)
    attrs = call.attrs
    if (
        weight is None
        or weight.ndim != 4
        or attrs.data_layout != "NHWC"
        or attrs.kernel_layout != "HWIO"
        or attrs.out_layout != "NHWC"
        or int(attrs.groups) != 1
        or any(int(v) != 1 for v in attrs.dilation)
        or weight.shape[2] % (2 if weight.dtype != np.int8 else 4)  # channels of a group
    ):
        return None
    kh, kw, channels, outs = weight.shape
    strides = (int(attrs.strides[0]), int(attrs.strides[1]))
    padding = tuple(int(p) for p in attrs.padding)
    if (kh, kw) == (1, 1) and strides == (1, 1) and not any(padding):
        return None  # a plain matmul: ``_dense_weight``
    return SpatialConv(
        weight.reshape(kh * kw * channels, outs), (kh, kw), strides, padding  # type: ignore[arg-type]
    )


def dot_kernels(target: tvm.target.Target) -> tuple[DotKernel, ...]:
    """The packed int8 kernels ``target`` runs, preferred first. With AVX-512 VNNI:
    ``vpdpbusd`` on 16-wide outputs, then on 8-wide ones (256-bit, ``vnni.VNNI_YMM``:
    EfficientNet-Lite0's 24- and 40-channel project convs, which ran on ``vpmaddwd``),
    then AVX2 ``vpmaddwd`` (K a multiple of 2 only). Without it, on AVX2: ``vpmaddubsw``
    on pairs of K-groups (8-wide, weights whose codes all lie in [-32, 32]:
    ``optc.quant``'s 6-bit codes, K a multiple of 8), then ``vpmaddubsw`` (8-wide, 7-bit
    codes, what ``optc.quant`` emits for "8-bit" weights on such targets), then
    ``vpmaddwd`` (8-wide, any code). None off x86. With AVX-512 BF16, ``vnni.BF16`` and
    ``vnni.BF16_YMM`` (8-wide outputs) first, for bfloat16 contractions."""
    if target.kind.name != "llvm":
        return ()
    try:
        avx2 = bool(codegen.target_has_features("avx2", target))
    except (RuntimeError, ValueError):  # an LLVM target of another architecture
        return ()
    # bfloat16 contractions (a kernel of their own dtypes: it never competes with the
    # int8 ones for a constant)
    bf16 = (BF16, BF16_YMM) if has_bf16_dot(target) else ()
    if has_vnni(target):
        # 8-wide outputs on 256-bit ``vpdpbusd`` (``vnni.VNNI_YMM``), any code: the
        # ``vpmaddubsw`` kernels would only add 7- or 6-bit conditions to it (and their
        # packing is VNNI_YMM's: the schedule runs it with ``vpdpbusd`` on VNNI CPUs)
        ymm = (VNNI_YMM,) if codegen.target_has_features("avx512vl", target) else ()
        return (*bf16, VNNI, *ymm, *((AVX2,) if avx2 else ()))
    return (*bf16, PMADDUBSW_PAIRS, PMADDUBSW, AVX2) if avx2 else bf16


def dot_kernel(target: tvm.target.Target) -> DotKernel | None:
    """The preferred packed int8 kernel for ``target`` (``dot_kernels``), if any."""
    return next((k for k in dot_kernels(target) if k.act_dtype == "uint8"), None)


def _const(expr: relax.Expr) -> np.ndarray | None:
    return expr.value.numpy() if isinstance(expr, GenericConst) else None


def _dense_weight(call: relax.Call) -> np.ndarray | None:
    """The ``[K, N]`` weight of a uint8 x int8 -> int32 (or bfloat16 -> float32) matmul
    or 1x1 conv, or None."""
    if not (isinstance(call.op, Op) and call.op.name in ("relax.matmul", "relax.nn.conv2d")):
        return None
    weight = _operands(call)
    if weight is None:
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
        conv = _spatial_conv(call) if weight is None else None
        if conv is not None:
            weight = conv.weight
        if weight is None:
            return call
        # A spatial conv's group of k must be channels of one pixel (one broadcast word
        # per 4 of them): C % group == 0, not only K % group.
        channels = weight.shape[0] // (conv.kernel[0] * conv.kernel[1]) if conv else 0
        act = str(call.args[0].ty.dtype)
        kernel = next(
            (
                k
                for k in self.kernels
                if k.act_dtype == act
                and k.weight_dtype == str(weight.dtype)
                and weight.shape[0] % k.group == 0
                and weight.shape[1] % k.lanes == 0
                and channels % k.group == 0
                and (k is not PMADDUBSW_PAIRS or weight.shape[0] >= PAIRS_MIN_K)
                and k.exact_for(weight)
            ),
            None,
        )
        if kernel is None:
            return call
        packed = relax.const(pack_weight(weight, kernel), kernel.weight_dtype)
        if conv is not None:
            return self.builder_.call_te(
                functools.partial(packed_conv, conv=conv),
                call.args[0],
                packed,
                primfunc_name_hint="vnni_conv",
            )
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
