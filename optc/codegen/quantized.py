"""Lower QDQ and weight-only contractions to integer compute before TVM folds them to float.

TVM 0.27's ONNX importer turns ``DequantizeLinear`` / ``QuantizeLinear`` into
``relax.dequantize`` / ``relax.quantize`` and keeps ``Conv`` / ``MatMul`` / ``Gemm`` in float:
``FoldConstant`` then folds ``dequantize(int8 weight)`` into a float32 constant (the
library stores float weights, bigger than the fp32 model's since the quantize kernels add
code) and the contraction runs in float32 on dequantized activations. This rewrite, run
on the imported module before layout conversion and folding, makes the arithmetic real::

    conv2d(dequantize(xq, sx, zx), dequantize(Wq, sw, 0, axis=0))          # w8a8 / w4a8
  ->
    acc = conv2d(pad(xq, zx), Wq, out_dtype="int32")      # uint8 x int8 -> int32
    y   = astype(acc - zx * sum(Wq), float32) * (sx * sw)  # per output channel

    conv2d(x, astype?(dequantize(Wq, sw, 0, axis=0)))                     # weight-only
  ->
    y = astype?(conv2d(x, Wq, out_dtype=float32) * sw)    # int8 codes read in the kernel

and the same for ``matmul`` (a ``Gemm``'s transposed weight is transposed at compile
time); int8 matmuls that read one quantized activation, as a transformer's Q, K
and V projections do, first become one over their weights concatenated along N, its
result sliced (``_MergeSharedActivation``). A padded conv whose activation has a
non-zero zero point (the float model pads with 0.0, i.e. with the zero point) reads the
shifted activation ``int16(xq) - zx`` with the conv's own zero padding instead, and
needs no correction term (after ReLU the zero point is 0 and uint8 is read as is).
Weights stay int8 constants; the scales multiply the accumulator in the contraction's
fused epilogue.

On CPUs without float16 arithmetic (x86 before AVX512-FP16), a float16 contraction
(an ``fp16`` layer) reads its float16 operands into a float32 accumulator (``_widened``).
On x86 the int8 matmuls and 1x1 convolutions are then packed for ``vpdpbusd`` (AVX-512
VNNI, 16-wide outputs, or 8-wide on 256-bit vectors) or, 8-wide on CPUs without VNNI, AVX2's
``vpmaddubsw`` (weights whose codes are all 7-bit, as ``optc.quant`` emits them for such
CPUs) or ``vpmaddwd`` (any code) (``schedules/vnni_pack.py``). A stem conv (fewer than 8
input channels) stays float32 on those CPUs (``_float_conv``), and a depthwise conv
runs on float32 vectors with the integer result, exactly (``_exact_float_depthwise``).
Activation ``quantize`` / ``dequantize`` left over (per-tensor) become elementwise
Relax ops, which layout conversion and operator fusion understand (TVM has no layout
rule for them: each would otherwise cost two transposes in a channels-last graph).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np
import tvm
from tvm import relax
from tvm.ir import Op
from tvm.ir.expr import GenericConst

from optc.codegen.relax_rewrite import conv2d_like, rewrite_functions

log = logging.getLogger(__name__)

ACC_DTYPE = "int32"
_INT_ACTIVATIONS = ("uint8", "int8")
_QRANGE = {"uint8": (0.0, 255.0), "int8": (-128.0, 127.0)}


@dataclasses.dataclass(frozen=True)
class IntWeight:
    """A constant int8 weight with its float scale; ``axis`` is the axis the scale runs
    along (None: one scale); ``cast`` the float dtype the dequantized weight was cast to."""

    codes: np.ndarray
    scale: np.ndarray
    axis: int | None
    cast: str | None = None

    def channel_scale(self, axis: int) -> np.ndarray | None:
        """Scales per index of ``axis`` (the output channel), None if they run along another."""
        if self.axis is None:
            return np.full(self.codes.shape[axis], float(self.scale.reshape(-1)[0]), np.float32)
        return self.scale.astype(np.float32) if self.axis == axis else None


@dataclasses.dataclass(frozen=True)
class IntActivation:
    """``dequantize(data, scale, zero)`` with one scale and zero point."""

    data: relax.Expr
    scale: float
    zero: int


def _const(expr: relax.Expr) -> np.ndarray | None:
    return expr.value.numpy() if isinstance(expr, GenericConst) else None


def _op_name(expr: relax.Expr) -> str | None:
    if isinstance(expr, relax.Call) and isinstance(expr.op, Op):
        return str(expr.op.name)
    return None


def _per_tensor_qparams(call: relax.Call) -> tuple[float, float] | None:
    """The one constant scale and zero point of a ``quantize`` / ``dequantize`` call, None
    when they are not constants or are per channel."""
    scale, zero = _const(call.args[1]), _const(call.args[2])
    if scale is None or zero is None or scale.size != 1 or zero.size != 1:
        return None
    return float(scale.reshape(-1)[0]), float(zero.reshape(-1)[0])


class _Resolving(relax.PyExprMutator):
    """Shared helpers: follow dataflow variables to their bound expressions."""

    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.mod = mod

    def resolve(self, expr: relax.Expr) -> relax.Expr:
        while isinstance(expr, relax.Var):
            bound = self.lookup_binding(expr)
            if bound is None:
                break
            expr = bound
        return expr

    def scalar(self, expr: relax.Expr) -> float | None:
        """The value of a constant scalar: a constant, or the ONNX importer's Clip bound
        ``where(isnan(c), -inf | inf, c)``."""
        expr = self.resolve(expr)
        value = _const(expr)
        if value is not None:
            return float(value.reshape(-1)[0]) if value.size == 1 else None
        if _op_name(expr) == "relax.where":
            cond = self.resolve(expr.args[0])
            if _op_name(cond) == "relax.isnan":
                tested = self.scalar(cond.args[0])
                if tested is not None:
                    return self.scalar(expr.args[1] if math.isnan(tested) else expr.args[2])
        return None

    def unclipped(self, expr: relax.Expr) -> tuple[relax.Expr, float, float]:
        """``expr`` as ``clip(x, low, high)``: ``x`` under the ReLU / Clip ops with
        constant bounds that produce ``expr`` (the importer's ``call_tir`` maximum /
        minimum included), and the bounds (infinite where none)."""
        low, high = -math.inf, math.inf
        while True:
            found = self.resolve(expr)
            if _op_name(found) == "relax.call_tir":
                from optc.codegen.schedules.lift import lift_call_tir

                lifted = lift_call_tir(found, self.mod)
                found = found if lifted is None else lifted
            name = _op_name(found)
            if name == "relax.nn.relu":
                bounds = (0.0, math.inf)
            elif name in ("relax.maximum", "relax.minimum"):
                bound = self.scalar(found.args[1])
                if bound is None or math.isnan(bound):
                    break
                bounds = (bound, math.inf) if name == "relax.maximum" else (-math.inf, bound)
            else:
                break
            # clip(clip(x, inner), outer) == clip(x, inner & outer) while they overlap
            if max(low, bounds[0]) > min(high, bounds[1]):
                break
            low, high = max(low, bounds[0]), min(high, bounds[1])
            expr = found.args[0]
        return expr, low, high

    def codes(
        self, src: relax.Expr, scale: float, zero: float, out_dtype: str, fdtype: str
    ) -> relax.Expr:
        """``quantize(src, scale, zero)``'s integer codes as ``fdtype`` values
        (``_quantized_codes``), a ReLU / Clip that produces ``src`` folded into the
        codes' clamp.

        ``g(x) = round(x * (1 / scale)) + zero`` is monotonic (a rounded float product
        by a positive constant, round, an exact integer add), so ``clamp(g(clip(x, a,
        b)), lo, hi) == clamp(g(x), max(lo, g(a)), min(hi, g(b)))`` bit for bit: the
        ReLU6 before an activation quantize (every EfficientNet-Lite block, twice) costs
        no max / min of its own in the epilogue. Bounds are evaluated with float32
        numpy, which rounds the product as the kernel does."""
        low, high = _QRANGE[out_dtype]
        if fdtype == "float32":
            inner, clip_low, clip_high = self.unclipped(src)
            reciprocal = np.float32(1.0 / scale)
            with np.errstate(over="ignore", invalid="ignore"):
                code_low, code_high = (
                    float(np.round(np.float32(b) * reciprocal)) + zero
                    for b in (clip_low, clip_high)
                )
            folded = (max(low, code_low), min(high, code_high))
            if inner is not src and folded[0] <= folded[1]:
                src, (low, high) = inner, folded
        return _quantized_codes(self.builder_.emit, src, scale, zero, (low, high), fdtype)


@relax.expr_functor.mutator
class _LowerContractions(_Resolving):
    """Rewrite conv2d / matmul over dequantized int8 operands (see the module docstring);
    with ``widen_fp16``, float16 contractions accumulate in float32, as bfloat16 ones
    always do (``_widened``; ``bf16_dot``: on bfloat16 operands where ``vdpbf16ps`` can
    run them)."""

    def __init__(
        self,
        mod: tvm.IRModule,
        widen_fp16: bool,
        float_stem: bool = False,
        float_depthwise: bool = False,
        bf16_dot: bool = False,
    ) -> None:
        super().__init__(mod)
        self.widen_fp16 = widen_fp16
        self.float_stem = float_stem
        self.float_depthwise = float_depthwise
        self.bf16_dot = bf16_dot

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # TVM visitor name
        call = super().visit_call_(call)
        name = _op_name(call)
        if name not in ("relax.nn.conv2d", "relax.matmul"):
            return call
        lowered = self._conv2d(call) if name == "relax.nn.conv2d" else self._matmul(call)
        if lowered is call and self.bf16_dot:
            lowered = self._on_bf16_values(call)
        if lowered is call:
            return self._widened(call)
        return lowered

    def _on_bf16_values(self, call: relax.Call) -> relax.Expr:
        """``matmul|conv2d(astype(x_bf16, f32), W)`` with ``W`` a float32 constant whose
        values are all bfloat16 -> the same on bfloat16 operands, summed in float32: the
        form ``optc.quant.emit`` writes bfloat16 layers in (valid ONNX at every opset),
        computed exactly as written by ``vdpbf16ps`` (products of bfloat16 numbers are
        exact in float32). Unchanged unless ``_on_bf16_dot``."""
        if not isinstance(call.ty, relax.TensorType) or str(call.ty.dtype) != "float32":
            return call
        data = self.resolve(call.args[0])
        if _op_name(data) != "relax.astype" or str(data.args[0].ty.dtype) != "bfloat16":
            return call
        weight = self._permuted_constant(call.args[1])
        if weight is None or weight.dtype != np.float32 or not _on_bf16_dot(call):
            return call
        if np.any(weight.view(np.uint32) & 0xFFFF):  # not all bfloat16 values
            return call
        half = relax.const(weight.astype(ml_dtypes.bfloat16), "bfloat16")
        return _float32_sum(call, data.args[0], half)

    def _permuted_constant(self, expr: relax.Expr) -> np.ndarray | None:
        """The constant behind ``expr``, through one ``permute_dims`` (a ``Gemm``'s
        transposed weight, as TVM's importer writes it), transposed at compile time."""
        expr = self.resolve(expr)
        if _op_name(expr) != "relax.permute_dims":
            return _const(expr)
        inner = _const(self.resolve(expr.args[0]))
        if inner is None:
            return None
        return np.ascontiguousarray(np.transpose(inner, _permutation(expr, inner.ndim)))

    def _widened(self, call: relax.Call) -> relax.Expr:
        """``conv2d|matmul(x16, w16)`` -> ``astype(conv2d|matmul(x, w, out f32), 16)`` for
        bfloat16 operands, and for float16 ones with ``widen_fp16``.

        A CPU without float16 arithmetic (x86 before AVX512-FP16) makes LLVM round every
        float16 multiply-add through float32 conversions: MiniLM's fp16 layers ran 3x
        slower than fp32. Reading float16 operands into a float32 accumulator keeps the
        halved weight bytes, runs at float32 speed and is more accurate; the result is
        rounded to float16 once, as the layer's output type says.

        No CPU adds bfloat16 numbers: TVM's bfloat16 legalization computes in float32 but
        rounds every partial sum to bfloat16 (a MiniLM-sized matmul: relative error
        4.7e-2, against 3e-3 summed in float32). Where AVX-512 BF16's ``vdpbf16ps`` runs
        the contraction (``bf16_dot``: a matmul, or a one-group conv over an even number
        of channels, ``schedules/vnni_pack``) the operands stay bfloat16; elsewhere both
        become float32 first (the weight's conversion folds at compile time), so that
        optc's float32 kernels run it: bfloat16 loads widened in the generic loop ran a
        matmul 1.8-2.4x slower than float32 (docs/design/bf16-dot-kernels.md). Either
        way a product of two bfloat16 numbers is exact in float32 and the sum float32.
        """
        dtypes = [str(a.ty.dtype) for a in call.args[:2] if isinstance(a.ty, relax.TensorType)]
        half = str(call.ty.dtype) if isinstance(call.ty, relax.TensorType) else ""
        if dtypes != [half, half] or half not in ("bfloat16", "float16"):
            return call
        if half == "float16" and not self.widen_fp16:
            return call
        data, weight = call.args[0], call.args[1]
        if half == "bfloat16" and not (self.bf16_dot and _on_bf16_dot(call)):
            data = self.builder_.emit(relax.op.astype(data, "float32"))
            weight = self.builder_.emit(relax.op.astype(weight, "float32"))
        wide = _float32_sum(call, data, weight)
        return relax.op.astype(self.builder_.emit(wide), half)

    def weight(self, expr: relax.Expr) -> IntWeight | None:
        """The int8 constant behind ``expr`` through astype / permute_dims, if any."""
        expr = self.resolve(expr)
        name = _op_name(expr)
        if name == "relax.astype":
            inner = self.weight(expr.args[0])
            dtype = str(expr.attrs.dtype)
            ok = inner is not None and inner.cast is None and dtype.startswith("float")
            return dataclasses.replace(inner, cast=dtype) if ok else None
        if name == "relax.permute_dims":
            inner = self.weight(expr.args[0])
            if inner is None:
                return None
            axes = _permutation(expr, inner.codes.ndim)
            axis = None if inner.axis is None else axes.index(inner.axis)
            return dataclasses.replace(inner, codes=np.transpose(inner.codes, axes), axis=axis)
        if name != "relax.dequantize":
            return None
        codes, scale, zero = (_const(a) for a in expr.args[:3])
        if codes is None or scale is None or zero is None or codes.dtype != np.int8:
            return None
        if np.any(zero != 0) or str(expr.ty.dtype) != "float32":
            return None  # symmetric weights only (optc's and quantize_static's per-channel)
        axis = None if scale.size == 1 else int(expr.attrs.axis) % codes.ndim
        return IntWeight(codes, scale.reshape(-1), axis)

    def activation(self, expr: relax.Expr) -> IntActivation | None:
        expr = self.resolve(expr)
        if _op_name(expr) != "relax.dequantize" or str(expr.ty.dtype) != "float32":
            return None
        data, qparams = expr.args[0], _per_tensor_qparams(expr)
        if qparams is None:
            return None
        if str(data.ty.dtype) not in _INT_ACTIVATIONS or _const(data) is not None:
            return None
        return IntActivation(data, qparams[0], int(qparams[1]))

    def _conv2d(self, call: relax.Call) -> relax.Expr:
        attrs = call.attrs
        if attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW":
            return call
        weight = self.weight(call.args[1])
        scale = None if weight is None else weight.channel_scale(0)
        if weight is None or scale is None:
            return call
        act = self.activation(call.args[0]) if weight.cast is None else None
        if act is not None and self.float_stem and _stem_conv(call, weight.codes):
            return self._float_conv(call, act, weight)
        data, padding = call.args[0], [int(p) for p in attrs.padding]
        out_dtype = "float32"
        if act is not None:
            unpadded = self._unpadded(act)
            if unpadded is not None:
                act, extra = unpadded
                padding = [p + e for p, e in zip(padding, extra, strict=True)]
            data, out_dtype = act.data, ACC_DTYPE
            if self.float_depthwise and _depthwise(call, weight.codes):
                return self._exact_float_depthwise(call, act, weight, scale, padding)
            if act.zero and any(padding):
                # The float model pads with 0.0, i.e. with the zero point in integer terms:
                # conv(pad_z(xq), W) - z * sum(W) == conv(pad_0(xq - z), W). The shifted
                # activation is int16 (elementwise: fused into the quantize kernel, and
                # channels-last like the conv; an explicit NCHW ``pad`` with the zero
                # point has no layout rule and cost two transposes per layer).
                shifted = self.builder_.emit(relax.op.astype(data, "int16"))
                data = self.builder_.emit(
                    relax.op.subtract(shifted, _scalar(float(act.zero), "int16"))
                )
                act = dataclasses.replace(act, zero=0)
        acc = self.builder_.emit(
            _nchw_conv2d(data, relax.const(weight.codes, "int8"), attrs, padding, out_dtype)
        )
        sums = weight.codes.astype(np.int64).sum(axis=(1, 2, 3))
        return self._rescale(call, acc, act, scale, sums, [1, -1, 1, 1])

    def _exact_float_depthwise(
        self,
        call: relax.Call,
        act: IntActivation,
        weight: IntWeight,
        scale: np.ndarray,
        padding: list[int],
    ) -> relax.Expr:
        """An int8 depthwise conv on float32 vectors, bit for bit the integer result.

        Every product of a uint8 (or zero-point-shifted) activation and an int8 code is
        an integer below 2^16 in magnitude and a 5x5 window sums 25 of them, so every
        partial sum stays below 2^24, where float32 represents integers exactly: the
        float accumulator holds the int32 accumulator's value whatever the order of the
        additions. The conv then takes optc's vectorized float depthwise schedule and
        the requantize is its fused epilogue. The codes' float form is elementwise
        (``_codes_as_float``), so operator fusion puts it in the producer's epilogue: the
        activation between the producer and the depthwise conv is float32 in memory
        (integer values).
        Reading it as uint8 instead moves 4x fewer bytes there but widens in the conv
        (LLVM shares the widening between overlapping taps: 36 ``vpmovzxbd`` +
        ``vcvtdq2ps`` per 106 FMAs, 144 channels 3x3) and measured no gain: EfficientNet-Lite0
        mixed / fp32 with the conv2d reading uint8 0.87 and 0.88 against 0.84 and
        0.68 this way; with a float32 padding stage widening each element (inlined into
        the taps by the depthwise schedule) 0.81 and 0.80 against 0.68 and 0.78 (Zen 3,
        2 threads, interleaved, under heavy load; /tmp/helperC ab.py, 2026-12-07).
        Per kernel the float form runs at the int32 form's speed (0.86-1.20x,
        EfficientNet-Lite0's shapes, host and znver3 code on a Zen 5), but end to end
        EfficientNet-Lite0 all-int8 took 0.70x the time of the int32 form with host code
        and 0.93x with znver3 code, bit for bit the same outputs (/tmp/helperC
        dw_e2e.py, 2026-12-06; not profiled further).
        Figures: ``optc.quant.latency.INT8_DEPTHWISE_*``."""
        data = self._codes_as_float(act.data)
        if act.zero and any(padding):  # pad with the zero point: conv(pad_0(xq - z), W)
            data = self.builder_.emit(relax.op.subtract(data, _scalar(float(act.zero), "float32")))
            act = dataclasses.replace(act, zero=0)
        acc = self.builder_.emit(
            _nchw_conv2d(
                data,
                relax.const(weight.codes.astype(np.float32), "float32"),
                call.attrs,
                padding,
                "float32",
            )
        )
        sums = weight.codes.astype(np.int64).sum(axis=(1, 2, 3))
        return self._rescale(call, acc, act, scale, sums, [1, -1, 1, 1])

    def _codes_as_float(self, data: relax.Expr) -> relax.Expr:
        """The activation's integer codes as float32 values. Where they come from a
        per-tensor ``quantize`` of a float32 value, its rounded and clamped float result
        itself (the same operations ``_ElementwiseQDQ`` lowers the quantize to), not
        ``float32(uint8(q))``: the round trip through uint8 cost the producer's epilogue
        a convert and two packs and this conv a widening per element (EfficientNet-Lite0
        mixed / fp32 0.745 -> 0.718 on one thread, bit-identical outputs; a helper's
        per-kernel profile, 2026-12-07)."""
        found = self.resolve(data)
        if _op_name(found) == "relax.quantize":
            qparams, src, out_dtype = _per_tensor_qparams(found), found.args[0], str(found.ty.dtype)
            if qparams is not None and out_dtype in _QRANGE and str(src.ty.dtype) == "float32":
                return self.codes(src, *qparams, out_dtype, "float32")
        return self.builder_.emit(relax.op.astype(data, "float32"))

    def _float_conv(self, call: relax.Call, act: IntActivation, weight: IntWeight) -> relax.Expr:
        """The QDQ conv computed in float32 on the dequantized operands, as the model says.

        For an image model's stem (3 input channels) on CPUs whose int8 dot products
        (``vnni_pack``) serve only matmuls and 1x1 convs: its int8 form is a generic
        int32 loop over 27 taps (per 8 multiply-adds a widening load, a ``vpmulld`` and
        an add, against one FMA in float32) that read a zero-point-shifted int16 copy of
        the image. EfficientNet-Lite0's int8 stem took 1.04 ms, float 0.59 ms (Zen 3, 2
        threads, kernel minima). The input is quantized from float anyway, so float
        compute costs no memory traffic (depthwise convs keep int8 activations around
        them and compute on float32 vectors exactly: ``_exact_float_depthwise``;
        computing them on dequantized floats made the model ~10% slower end to end, as
        their neighbours then wrote and read float32 activations). The activation stays
        quantized (``quantize`` / ``dequantize`` are elementwise, fused into its
        producer; fidelity is the QDQ model's) and the weight is ``codes * scale`` in
        float32, what ``FoldConstant`` makes of its dequantize. A ``quantize(pad(x))``
        input still folds its pad into the conv's padding: ``dequantize(quantize(0.0))
        == 0.0``."""
        attrs = call.attrs
        padding = [int(p) for p in attrs.padding]
        unpadded = self._unpadded(act)
        data = call.args[0]
        if unpadded is not None:
            act, extra = unpadded
            padding = [p + e for p, e in zip(padding, extra, strict=True)]
            dequantize = self.resolve(call.args[0])
            data = self.builder_.emit(
                relax.Call(dequantize.op, [act.data, *dequantize.args[1:]], dequantize.attrs)
            )
        scale = weight.channel_scale(0)
        real = weight.codes.astype(np.float32) * scale.reshape(-1, 1, 1, 1)
        return _nchw_conv2d(
            data,
            relax.const(real.astype(np.float32), "float32"),
            attrs,
            padding,
            str(call.ty.dtype),
        )

    def _unpadded(self, act: IntActivation) -> tuple[IntActivation, list[int]] | None:
        """``quantize(pad(x, 0.0 on H and W))`` as ``quantize(x)`` and the pad's
        ``[top, left, bottom, right]``, which the conv's own padding takes over.

        Models with explicit "same" padding (EfficientNet-Lite's ``ZeroPad2d`` before
        its strided and depthwise convs) pad the float activation before it is
        quantized; the NCHW ``pad`` kept between quantize and conv has no channels-last
        layout rule and cost two transposes per layer. ``quantize(0.0)`` is the zero
        point, which the shifted activation below pads with."""
        quantize = self.resolve(act.data)
        if _op_name(quantize) != "relax.quantize":
            return None
        pad = self.resolve(quantize.args[0])
        if _op_name(pad) == "relax.call_tir":  # the ONNX importer's Pad
            from optc.codegen.schedules.lift import lift_call_tir

            pad = lift_call_tir(pad, self.mod)
        if (
            _op_name(pad) != "relax.nn.pad"
            or str(pad.attrs.pad_mode) != "constant"
            or float(pad.attrs.pad_value) != 0.0
        ):
            return None
        widths = [int(w) for w in pad.attrs.pad_width]
        if len(widths) != 8 or any(widths[:4]):
            return None
        top, bottom, left, right = widths[4:]
        data = self.builder_.emit(
            relax.Call(quantize.op, [pad.args[0], *quantize.args[1:]], quantize.attrs)
        )
        return dataclasses.replace(act, data=data), [top, left, bottom, right]

    def _matmul(self, call: relax.Call) -> relax.Expr:
        weight = self.weight(call.args[1])
        if weight is None or weight.codes.ndim != 2:
            return call
        scale = weight.channel_scale(1)
        if scale is None:
            return call
        act = self.activation(call.args[0]) if weight.cast is None else None
        data = call.args[0] if act is None else act.data
        acc = self.builder_.emit(
            relax.op.matmul(
                data,
                relax.const(weight.codes, "int8"),
                out_dtype="float32" if act is None else ACC_DTYPE,
            )
        )
        return self._rescale(call, acc, act, scale, weight.codes.astype(np.int64).sum(axis=0), [-1])

    def _rescale(
        self,
        call: relax.Call,
        acc: relax.Expr,
        act: IntActivation | None,
        scale: np.ndarray,
        sums: np.ndarray,
        shape: list[int],
    ) -> relax.Expr:
        """The float result from the accumulator: zero-point correction, then the scales."""
        dtype = str(call.ty.dtype)
        if act is not None:
            integer = str(acc.ty.dtype) == ACC_DTYPE  # else exact float32 (depthwise)
            if act.zero:
                correction = (act.zero * sums).astype(np.int32 if integer else np.float32)
                acc = self.builder_.emit(
                    relax.op.subtract(acc, relax.const(correction.reshape(shape)))
                )
            if integer:
                acc = self.builder_.emit(relax.op.astype(acc, "float32"))
            scale = scale * np.float32(act.scale)
        out = relax.op.multiply(acc, relax.const(scale.astype(np.float32).reshape(shape)))
        if dtype != "float32":
            out = relax.op.astype(self.builder_.emit(out), dtype)
        return out


def _depthwise(call: relax.Call, codes: np.ndarray) -> bool:
    """One input channel per output channel, and few enough taps (at most 256: 255 * 128
    * 256 < 2^24) for float32 to hold the accumulator exactly."""
    groups = int(call.attrs.groups)
    taps = int(np.prod(codes.shape[1:]))
    return groups > 1 and codes.shape[1] == 1 and groups == codes.shape[0] and taps <= 256


def _stem_conv(call: relax.Call, codes: np.ndarray) -> bool:
    """A spatial conv over fewer input channels than a vector holds (an image model's
    stem): its int8 form is a generic int32 loop over the taps (see ``_float_conv``)."""
    return int(call.attrs.groups) == 1 and codes.shape[1] < 8 and codes.shape[2:] != (1, 1)


def _nchw_conv2d(
    data: relax.Expr, weight: relax.Expr, attrs: Any, padding: list[int], out_dtype: str
) -> relax.Expr:
    """An NCHW / OIHW conv2d with ``attrs``' strides, dilation and groups, and ``padding``
    (the original's, or with an absorbed pad added)."""
    return relax.op.nn.conv2d(
        data,
        weight,
        strides=attrs.strides,
        padding=padding,
        dilation=attrs.dilation,
        groups=attrs.groups,
        data_layout="NCHW",
        kernel_layout="OIHW",
        out_dtype=out_dtype,
    )


def _scalar(value: float, dtype: str) -> relax.Expr:
    return relax.const(np.array(value, dtype=dtype), dtype)


@relax.expr_functor.mutator
class _ElementwiseQDQ(_Resolving):
    """Per-tensor activation ``quantize`` / ``dequantize`` as elementwise Relax operators."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # TVM visitor name
        call = super().visit_call_(call)
        name = _op_name(call)
        if name not in ("relax.quantize", "relax.dequantize"):
            return call
        qparams = _per_tensor_qparams(call)
        if qparams is None:
            return call
        if _const(call.args[0]) is not None:
            return call  # a constant weight: FoldConstant folds it
        emit = self.builder_.emit
        scale, z = qparams
        if name == "relax.dequantize":
            dtype = str(call.ty.dtype)
            shifted = emit(relax.op.astype(call.args[0], "int32"))
            if z:  # a ReLU's output has zero point 0: no subtract in the epilogue
                shifted = emit(relax.op.subtract(shifted, _scalar(z, "int32")))
            real = emit(relax.op.astype(shifted, dtype))
            return relax.op.multiply(real, _scalar(scale, dtype))
        out_dtype, src = str(call.ty.dtype), call.args[0]
        if out_dtype not in _QRANGE:
            return call
        fdtype = str(src.ty.dtype)
        # ONNX QuantizeLinear: saturate(round(x / scale) + zero_point), ties to even. The
        # division is a multiply by the reciprocal: a vector divide has ~7x a multiply's
        # reciprocal throughput (Zen 3: 3.5 vs 0.5 cycles), in the epilogue of every int8
        # layer, where a 16-deep 1x1 conv does only 8 multiply-add instructions per output
        # vector. The quotient differs in its last bit at most, which moves a code only
        # where x / scale lies that close to a rounding tie.
        return relax.op.astype(self.codes(src, scale, z, out_dtype, fdtype), out_dtype)


def _quantized_codes(
    emit: Callable[[relax.Expr], relax.Expr],
    src: relax.Expr,
    scale: float,
    zero: float,
    bounds: tuple[float, float],
    fdtype: str,
) -> relax.Expr:
    """``saturate(round(src / scale) + zero)`` in ``fdtype``: the integer codes of ONNX
    QuantizeLinear as float values (exact: integers below 2^24)."""
    q = emit(relax.op.round(emit(relax.op.multiply(src, _scalar(1.0 / scale, fdtype)))))
    if zero:
        q = emit(relax.op.add(q, _scalar(zero, fdtype)))
    low, high = bounds
    return emit(
        relax.op.minimum(emit(relax.op.maximum(q, _scalar(low, fdtype))), _scalar(high, fdtype))
    )


@dataclasses.dataclass(frozen=True)
class _MergedMatmul:
    """Matmuls of one quantized activation whose weights are concatenated along N.

    ``members``: the matmuls' variables in binding order; ``outputs``: the variables
    their slices of the merged result replace (each member's bias add when every member
    has one, else the member itself); ``codes`` / ``scale`` / ``bias``: the concatenated
    weight codes, per-channel scales and biases (None: no bias merged)."""

    members: tuple[relax.Var, ...]
    outputs: tuple[relax.Var, ...]
    widths: tuple[int, ...]
    codes: np.ndarray
    scale: np.ndarray
    bias: np.ndarray | None


def _bound_value(expr: relax.Expr, bound: dict[relax.Var, relax.Expr]) -> relax.Expr:
    """``expr`` with variables replaced by the values ``bound`` gives them, transitively."""
    while isinstance(expr, relax.Var) and expr in bound:
        expr = bound[expr]
    return expr


def _constant_matmul_weight(
    expr: relax.Expr, bound: dict[relax.Var, relax.Expr]
) -> tuple[np.ndarray, np.ndarray] | None:
    """``dequantize(int8 codes [K, N], scale, 0)`` with constant operands, one scale or one
    per output column: the codes and the ``N`` scales."""
    expr = _bound_value(expr, bound)
    if _op_name(expr) != "relax.dequantize" or str(expr.ty.dtype) != "float32":
        return None
    codes, scale, zero = (_const(a) for a in expr.args[:3])
    if codes is None or scale is None or zero is None:
        return None
    if codes.dtype != np.int8 or codes.ndim != 2 or np.any(zero != 0):
        return None
    if scale.size == 1:
        return codes, np.full(codes.shape[1], float(scale.reshape(-1)[0]), np.float32)
    if int(expr.attrs.axis) % 2 != 1 or scale.size != codes.shape[1]:
        return None
    return codes, scale.reshape(-1).astype(np.float32)


def _merge_key(
    call: relax.Expr, bound: dict[relax.Var, relax.Expr]
) -> tuple[tuple[Any, ...], np.ndarray, np.ndarray] | None:
    """For ``matmul(dequantize(xq, s, z), constant int8 weight)``: the key its merge group
    shares (the codes' variable, s, z, K, and whether the codes are 7-bit: a merged
    weight with one 8-bit code would move every member off ``vpmaddubsw``), the codes
    and the scales."""
    if _op_name(call) != "relax.matmul" or str(call.ty.dtype) != "float32":
        return None
    act = _bound_value(call.args[0], bound)
    if _op_name(act) != "relax.dequantize" or str(act.ty.dtype) != "float32":
        return None
    qparams, data = _per_tensor_qparams(act), act.args[0]
    if qparams is None or not isinstance(data, relax.Var):
        return None
    if str(data.ty.dtype) not in _INT_ACTIVATIONS:
        return None
    weight = _constant_matmul_weight(call.args[1], bound)
    if weight is None:
        return None
    codes, scale = weight
    seven_bit = bool(codes.min() >= -64 and codes.max() <= 63)
    return (data, *qparams, codes.shape[0], seven_bit), codes, scale


def _merge_groups(func: relax.Function) -> list[_MergedMatmul]:
    """The merge groups of ``func``'s dataflow blocks: two or more int8 matmuls of one
    block that read the same quantized activation (same codes, scale and zero point)."""
    if not isinstance(func.body, relax.SeqExpr):
        return []
    bound: dict[relax.Var, relax.Expr] = {}
    # the bindings that read each variable; None: the function returns it
    users: dict[relax.Var, list[relax.VarBinding | None]] = {}
    for block in func.body.blocks:
        for binding in block.bindings:
            if isinstance(binding, relax.VarBinding):
                bound[binding.var] = binding.value
                for var in _vars_in(binding.value):
                    users.setdefault(var, []).append(binding)
    for var in _vars_in(func.body.body):
        users.setdefault(var, []).append(None)
    groups = []
    for block in func.body.blocks:
        if not isinstance(block, relax.DataflowBlock):
            continue
        found: list[tuple[tuple[Any, ...], relax.Var, np.ndarray, np.ndarray]] = []
        for binding in block.bindings:
            if isinstance(binding, relax.VarBinding):
                key = _merge_key(binding.value, bound)
                if key is not None:
                    found.append((key[0], binding.var, key[1], key[2]))
        keys: list[tuple[Any, ...]] = []
        for key, *_ in found:
            if not any(_same_key(key, k) for k in keys):
                keys.append(key)
        for key in keys:
            members = [(v, c, s) for k, v, c, s in found if _same_key(k, key)]
            if len(members) < 2:
                continue
            group = _merged(members, users)
            if group is not None:
                groups.append(group)
    return groups


def _vars_in(expr: relax.Expr) -> set[relax.Var]:
    found: set[relax.Var] = set()

    def visit(node: relax.Expr) -> None:
        if isinstance(node, relax.Var):
            found.add(node)

    relax.analysis.post_order_visit(expr, visit)
    return found


def _same_key(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return a[0].same_as(b[0]) and a[1:] == b[1:]


def _merged(
    members: list[tuple[relax.Var, np.ndarray, np.ndarray]],
    users: dict[relax.Var, list[relax.VarBinding | None]],
) -> _MergedMatmul | None:
    """The group of ``members`` (variable, codes, scales), with each member's bias add
    merged too where every member's only user is ``add(member, constant [N])``; None
    where only some members have one."""
    biases, adds = [], []
    for var, codes, _ in members:
        uses = users.get(var, [])
        add = uses[0] if len(uses) == 1 else None
        bias = None
        if add is not None and _op_name(add.value) == "relax.add":
            a, b = add.value.args
            other = b if a.same_as(var) else a if b.same_as(var) else None
            value = None if other is None else _const(other)
            # a bias [N] broadcasts along the last axis only: the add keeps the shape
            if value is not None and value.dtype == np.float32 and value.shape == (
                codes.shape[1],
            ):
                bias = value
        biases.append(bias)
        adds.append(None if bias is None else add.var)
    with_bias = all(b is not None for b in biases)
    if not with_bias and any(b is not None for b in biases):
        # The bias add would leave the matmul's epilogue for the slice's kernel, where
        # it is no longer contracted with the scale multiply into one FMA: a 1-ulp change
        # flipped one later activation code in MiniLM (output off by 0.11 at a scale of
        # 5.8, as much as onnxruntime's basic and full optimization levels differ).
        return None
    outputs = tuple(adds) if with_bias else tuple(v for v, _, _ in members)
    if not all(isinstance(v, relax.DataflowVar) for v in outputs):
        return None  # a slice is a dataflow variable: it cannot replace a block output
    return _MergedMatmul(
        members=tuple(v for v, _, _ in members),
        outputs=outputs,
        widths=tuple(c.shape[1] for _, c, _ in members),
        codes=np.concatenate([c for _, c, _ in members], axis=1),
        scale=np.concatenate([s for _, _, s in members]),
        bias=np.concatenate(biases) if with_bias else None,
    )


@relax.expr_functor.mutator
class _MergeSharedActivation(relax.PyExprMutator):
    """Int8 matmuls that read one quantized activation become one matmul over their
    weights concatenated along N, the members' results slices of it.

    A MiniLM layer's Q, K and V projections read the same quantized LayerNorm output:
    three int8 matmuls, three rescale epilogues and three kernel launches become one
    of each (the slices fuse into their consumers, the reshape / transpose to heads).
    Each output column's arithmetic is unchanged (integer accumulation, then its own
    scale and bias), so the result is bit for bit the unmerged one. The merged weight is
    an ordinary ``dequantize(int8 constant)``: ``_LowerContractions`` lowers it as any
    other.
    MiniLM-L6 mixed (all w7a8, Zen 3): 109 -> 97 kernel launches; Q/K/V kernel minima
    0.74 -> 0.67 ms per run (one 16x384x1152 contraction 105 us against three 384-wide
    39 us); end to end merged / unmerged 0.95-0.99 on 2 threads (null A/B 1.00-1.02),
    0.98 on 1 thread, as the null A/B (paired, under load; /tmp/helperE ab.py,
    2026-12-07)."""

    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.first: dict[relax.Var, _MergedMatmul] = {}
        self.skipped: set[relax.Var] = set()
        for _, func in mod.functions_items():
            if isinstance(func, relax.Function):
                for group in _merge_groups(func):
                    self.first[group.members[0]] = group
                    self.skipped.update(group.members[1:])
                    if group.bias is not None:
                        self.skipped.update(group.outputs)

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:  # TVM visitor name
        group = self.first.get(binding.var)
        if group is not None:
            self._emit_merged(binding, group)
        elif binding.var not in self.skipped:
            super().visit_var_binding_(binding)

    def _emit_merged(self, binding: relax.VarBinding, group: _MergedMatmul) -> None:
        emit = self.builder_.emit
        weight = relax.op.dequantize(
            relax.const(group.codes, "int8"),
            relax.const(group.scale, "float32"),
            _scalar(0, "int8"),
            axis=1,
            out_dtype="float32",
        )
        out = emit(relax.op.matmul(self.visit_expr(binding.value.args[0]), emit(weight)))
        if group.bias is not None:
            out = emit(relax.op.add(out, relax.const(group.bias, "float32")))
        last, start = len(binding.var.ty.shape) - 1, 0
        for var, width in zip(group.outputs, group.widths, strict=True):
            part = emit(relax.op.strided_slice(out, [last], [start], [start + width]))
            self.set_var_remap(var, part)
            start += width


def _permutation(permute: relax.Call, ndim: int) -> list[int]:
    """The axes of the ``permute_dims`` call ``permute`` (none given: reversed)."""
    if permute.attrs.axes is None:
        return list(range(ndim))[::-1]
    return [int(a) for a in permute.attrs.axes]


def _float32_sum(call: relax.Call, data: relax.Expr, weight: relax.Expr) -> relax.Call:
    """The matmul / conv2d ``call`` (same attributes) on ``data`` and ``weight``, with a
    float32 result."""
    if call.op.name == "relax.matmul":
        return relax.op.matmul(data, weight, out_dtype="float32")
    return conv2d_like(call, data, weight, out_dtype="float32")


def _on_bf16_dot(call: relax.Call) -> bool:
    """Whether ``vdpbf16ps`` can run the bfloat16 contraction ``call`` (``vnni_pack``): a
    matmul over a 2-D weight, or a conv2d with one group, whose reduction comes in pairs
    (the instruction's unit: a stem conv over 3 channels runs in float32) and whose
    output width is a multiple of 8 (the 256-bit form's lanes; a 1000-class classifier
    is, a 1001-class one runs in float32)."""
    weight = call.args[1].ty
    if not isinstance(weight, relax.TensorType) or weight.shape is None:
        return False
    dims = [int(d) if isinstance(d, tvm.tirx.IntImm) else -1 for d in weight.shape.values]
    if call.op.name == "relax.matmul":
        return len(dims) == 2 and dims[0] % 2 == 0 and dims[1] > 0 and dims[1] % 8 == 0
    if int(call.attrs.groups) != 1:
        return False
    layout = str(call.attrs.kernel_layout)
    channels, outputs = dims[layout.index("I")], dims[layout.index("O")]
    return channels > 0 and channels % 2 == 0 and outputs > 0 and outputs % 8 == 0


def _apply(mutator: relax.PyExprMutator, mod: tvm.IRModule) -> tvm.IRModule:
    return relax.transform.DeadCodeElimination()(rewrite_functions(mutator, mod))


def lower_quantized(
    widen_fp16: bool,
    float_stem: bool = False,
    float_depthwise: bool = False,
    merge_matmuls: bool = True,
    bf16_dot: bool = False,
) -> tvm.transform.Pass:
    """Integer contractions first (they match on ``dequantize``), then elementwise Q/DQ;
    ``widen_fp16``: float16 contractions accumulate in float32; ``float_stem``: a QDQ
    conv over fewer than 8 input channels computes in float32 (``_float_conv``);
    ``float_depthwise``: int8 depthwise convs run exactly on float32 vectors
    (``_exact_float_depthwise``); ``merge_matmuls``: int8 matmuls of one quantized
    activation run as one (``_MergeSharedActivation``); ``bf16_dot``: bfloat16
    contractions ``vdpbf16ps`` can run keep bfloat16 operands (``_widened``)."""

    @tvm.transform.module_pass(opt_level=0, name="OptcLowerQuantized")
    def _lower(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if merge_matmuls:
            mod = _apply(_MergeSharedActivation(mod), mod)
        mod = _apply(
            _LowerContractions(mod, widen_fp16, float_stem, float_depthwise, bf16_dot), mod
        )
        return _apply(_ElementwiseQDQ(mod), mod)

    return _lower


def native_fp16(target: tvm.target.Target) -> bool:
    """Whether ``target``'s CPU has float16 arithmetic (not only conversions)."""
    from tvm.target import codegen

    for feature in ("avx512fp16", "fullfp16"):
        try:
            if codegen.target_has_features(feature, target):
                return True
        except (RuntimeError, ValueError):  # a feature name another architecture lacks
            continue
    return False


def prepare_quantized(
    mod: tvm.IRModule, target: tvm.target.Target, merge_matmuls: bool = True
) -> tvm.IRModule:
    """The ``prepare`` hook step for CPU targets (``merge_matmuls``: see
    ``lower_quantized``)."""
    from optc.codegen.schedules.hw import has_bf16_dot
    from optc.codegen.schedules.vnni_pack import dot_kernels

    with target:
        x86 = bool(dot_kernels(target))
        return lower_quantized(
            widen_fp16=not native_fp16(target),
            float_stem=x86,
            float_depthwise=x86,
            merge_matmuls=merge_matmuls,
            bf16_dot=has_bf16_dot(target),
        )(mod)
