"""Pack float conv2d and matmul weights into contiguous output-channel panels at compile time.

After layout conversion a conv2d reads its HWIO weight ``W[ky, kx, c, f]`` at a stride of
``F`` floats per reduction step. The register-blocked schedule (``contraction.py``) reads
a ``K x tile`` panel of it for every output tile: with ``F`` a power of two (256, 512)
those rows all map to a handful of cache sets, so the panel never stays in L1/L2 and is
fetched again from L3 for every tile (ResNet-50's 7x7 stage ran at ~15 GFLOP/s). Here the
constant weight is re-laid out once, in numpy, as ``Wp[f // P, ky, kx, c, f % P]``: the
panel of ``P`` output channels a tile reads is one contiguous block walked in order::

    y = conv2d(x, W, NHWC / HWIO)                    # W constant, float, not depthwise
  ->
    y = call_tir(conv2d_packed, x, Wp)               # same loop nest, packed weight

A grouped conv is packed the same way with panels inside one group (AlexNet's groups of
128 and 192). A conv whose output channels no whole vector (on AVX2: no whole cache line)
divides (SqueezeNet's and DenseNet's 1000-class 1x1 convs) gets zero output channels
appended up to whole panels (``padded_channels``, at most 1/16 more work) and the real
ones sliced out in its fused epilogue: unpadded it ran on half-width vectors with an
unpacked weight (SqueezeNet 0.83x with it, one thread, interleaved).

A matmul with a constant ``W[K, N]`` (a fully connected layer, which streams its whole
weight once per inference) becomes ``call_tir(matmul_packed, x, Wp)`` with
``Wp[N / P, K, P]``: a sequential stream instead of one cache line per row.

The kernels keep the shape of a contraction, so TVM fuses their epilogue (bias, BN,
ReLU, residual add) as before, and ``analysis.py`` reads ``f // P`` and ``f % P`` as a
grouped-constant and a contiguous axis (the vector tile divides ``P``).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, topi
from tvm.ir import Op
from tvm.ir.expr import GenericConst

from optc.codegen.relax_rewrite import rewrite_functions

from .hw import CACHE_LINE_BYTES, cpu_info

# Below this many multiply-adds the weights are small enough to stay cached unpacked.
_MIN_MACS = 1_000_000
# A matmul weight is read whole for every few rows, so its size decides, not its MACs:
# beyond the L1 cache (32 KiB) an unpacked ``[K, N]`` weight costs one cache line per row
# of ``K`` for each tile (MiniLM's 16-token 1536x384 matmul ran at 11 GMAC/s unpacked).
_MIN_DENSE_BYTES = 32 * 1024
# Padding output channels up to whole vectors may add at most 1/this of the work.
_MAX_PAD_WASTE = 16
# float32 channels in a cache line: a panel narrower than this reads part lines.
_LINE_FLOATS = CACHE_LINE_BYTES // 4


def panel_width(out_channels: int, lanes: int) -> int | None:
    """Output channels per packed panel: two SIMD vectors (a full 64-byte line with
    8-lane floats, the register tile's width) where they divide ``out_channels``, else
    three, else five, else one; None when not even one vector does (the conv is left
    unpacked).

    Three or five vectors: a group of 72 or 40 output channels (ShuffleNet's grouped
    1x1 convs) or a conv with 24 or 40 (EfficientNet) would otherwise get one-vector
    panels, so a register tile of one vector: 7x1 on a 14-wide map (seven accumulators,
    too few chains for the FMA latency, eight loads per seven FMAs) or 10x1 on a 28-wide
    one (eleven loads per ten FMAs). Three give a 4x3 tile (seven loads per twelve
    FMAs), five a 2x5 one (``contraction.choose_tile``; seven per ten). Interleaved A/B
    on a 2-core Zen 3, one thread, under load: ShuffleNet's 14x14 grouped conv (groups of
    72) 0.79x the time, its 3-channel stem (24 outputs) 0.58x, its 28x28 and 14x14 ones
    with groups of 40 0.57x and 0.75x; EfficientNet-Lite0's 24- and 40-channel convs
    0.51-0.55x, its 1000-class matmul (40-wide panels, a 1x5 tile instead of 1x1) 0.79x."""
    for width in (2 * lanes, 3 * lanes, 5 * lanes, lanes):
        if out_channels % width == 0:
            return width
    return None


def padded_channels(out_channels: int, lanes: int) -> int | None:
    """Output channels to compute for a conv whose ``out_channels`` no whole cache line
    of channels divides (SqueezeNet's 1000 classes): the next multiple of two vectors (at
    least a line), when that wastes at most 1/16 of the work; else None. Unpadded, the
    tile falls back to narrower vectors (8-lane on AVX-512: half the peak) and an
    unpacked weight, or on AVX2 to one-vector panels: half a cache line per weight row,
    and a tile of one vector (7x1), too few accumulators to hide the FMA latency
    (SqueezeNet's last conv, 1000 -> 1008 channels: 0.85x the time, interleaved A/B on a
    2-core Zen 3, one thread, under load, min of 60 rounds)."""
    if out_channels % max(lanes, _LINE_FLOATS) == 0:
        return None
    step = max(2 * lanes, _LINE_FLOATS)
    padded = -(-out_channels // step) * step
    return padded if (padded - out_channels) * _MAX_PAD_WASTE <= out_channels else None


def pack_weight(weight: np.ndarray, width: int) -> np.ndarray:
    """``W[KH, KW, C, F]`` -> ``Wp[F / width, KH, KW, C, width]``."""
    kh, kw, c, f = weight.shape
    panels = weight.reshape(kh, kw, c, f // width, width)
    return np.ascontiguousarray(panels.transpose(3, 0, 1, 2, 4))


def packed_conv2d(
    data: te.Tensor,
    packed: te.Tensor,
    strides: tuple[int, int],
    padding: tuple[int, int, int, int],
    dilation: tuple[int, int],
    group_size: int,
    out_dtype: str,
) -> te.Tensor:
    """NHWC conv2d on a packed weight: ``out[n, y, x, f] = sum data * Wp[f // P, .., f % P]``;
    with ``group_size``, output channel ``f`` reads the input channels of group
    ``f // group_size``."""
    n, h, w, _ = (int(d) for d in data.shape)
    panels, kh, kw, c, width = (int(d) for d in packed.shape)  # c: input channels per group
    top, left, bottom, right = padding
    if any(padding):
        data = topi.nn.pad(data, [0, top, left, 0], [0, bottom, right, 0], name="pad_temp")
    sh, sw = strides
    dh, dw = dilation
    out_h = (h + top + bottom - (kh - 1) * dh - 1) // sh + 1
    out_w = (w + left + right - (kw - 1) * dw - 1) // sw + 1
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    rc = te.reduce_axis((0, c), name="rc")

    def body(
        nn: tvm.tirx.Var, yy: tvm.tirx.Var, xx: tvm.tirx.Var, ff: tvm.tirx.Var
    ) -> tvm.tirx.PrimExpr:
        # A grouped conv reads the input channels of output channel ff's group.
        ci = ff // group_size * c + rc if group_size else rc
        x = data[nn, yy * sh + ry * dh, xx * sw + rx * dw, ci].astype(out_dtype)
        wgt = packed[ff // width, ry, rx, rc, ff % width].astype(out_dtype)
        return te.sum(x * wgt, axis=[ry, rx, rc])

    return te.compute((n, out_h, out_w, panels * width), body, name="conv2d_nhwc")


def _const(expr: relax.Expr, mutator: relax.PyExprMutator) -> np.ndarray | None:
    if isinstance(expr, relax.Var):
        bound = mutator.lookup_binding(expr)
        expr = bound if bound is not None else expr
    return expr.value.numpy() if isinstance(expr, GenericConst) else None


@relax.expr_functor.mutator
class _PackConvWeights(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, lanes: int) -> None:
        super().__init__(mod)
        self.lanes = lanes

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # TVM visitor name
        call = super().visit_call_(call)
        if isinstance(call.op, Op) and call.op.name == "relax.matmul":
            return self._dense(call)
        if not (isinstance(call.op, Op) and call.op.name == "relax.nn.conv2d"):
            return call
        attrs = call.attrs
        if not (
            attrs.data_layout == "NHWC"
            and attrs.kernel_layout == "HWIO"
            and attrs.out_layout == "NHWC"
        ):
            return call
        groups = int(attrs.groups)
        data_ty, out_ty = call.args[0].ty, call.ty
        if not (isinstance(data_ty, relax.TensorType) and isinstance(out_ty, relax.TensorType)):
            return call
        if str(data_ty.dtype) != "float32" or str(out_ty.dtype) != "float32":
            return call
        if data_ty.shape is None or not all(
            isinstance(d, tvm.tirx.IntImm) for d in data_ty.shape.values
        ):
            return call
        weight = _const(call.args[1], self)
        if weight is None or weight.dtype != np.float32 or weight.ndim != 4:
            return call
        kh, kw, c, f = weight.shape
        if groups > 1 and c == 1:  # depthwise: no reduction over channels to block
            return call
        # A panel must not straddle two groups: it divides the channels of one.
        width = panel_width(f // groups, self.lanes)
        n, h, w, _ = (int(d) for d in data_ty.shape.values)
        if n * h * w * kh * kw * c * f < _MIN_MACS:
            return call
        padded = padded_channels(f, self.lanes) if groups == 1 else None
        if padded is not None:
            return self._padded(call, weight, padded)
        if width is None:
            return call
        packed = relax.const(pack_weight(weight, width), "float32")
        return self.builder_.call_te(
            packed_conv2d,
            call.args[0],
            packed,
            strides=tuple(int(s) for s in attrs.strides),
            padding=tuple(int(p) for p in attrs.padding),
            dilation=tuple(int(d) for d in attrs.dilation),
            group_size=f // groups if groups > 1 else 0,
            out_dtype="float32",
            primfunc_name_hint="conv2d_packed",
        )

    def _padded(self, call: relax.Call, weight: np.ndarray, channels: int) -> relax.Expr:
        """The conv on a weight with zero output channels appended up to ``channels``
        (whole panels of full-width vectors), then the real channels sliced out: the
        slice fuses with the epilogue into one pass over the output."""
        attrs = call.attrs
        f = weight.shape[3]
        extra = np.zeros((*weight.shape[:3], channels - f), weight.dtype)
        wide = np.concatenate([weight, extra], axis=3)
        width = panel_width(channels, self.lanes)
        conv = self.builder_.emit(
            self.builder_.call_te(
                packed_conv2d,
                call.args[0],
                relax.const(pack_weight(wide, width), "float32"),  # type: ignore[arg-type]
                strides=tuple(int(s) for s in attrs.strides),
                padding=tuple(int(p) for p in attrs.padding),
                dilation=tuple(int(d) for d in attrs.dilation),
                group_size=0,
                out_dtype="float32",
                primfunc_name_hint="conv2d_packed",
            )
        )
        return relax.op.strided_slice(conv, axes=[3], begin=[0], end=[f])

    def _dense(self, call: relax.Call) -> relax.Expr:
        """``matmul(x, W)`` with a constant ``W[K, N]`` -> ``call_tir(matmul_packed, x, Wp)``:
        a fully connected layer streams its weight once per inference; packed, that stream
        is sequential instead of one cache line per ``N``-float row."""
        if not (_static_float(call.args[0]) and _static_float(call)):
            return call
        weight = _const(call.args[1], self)
        if weight is None or weight.dtype != np.float32 or weight.ndim != 2:
            return call
        depth, cols = weight.shape
        width = panel_width(cols, self.lanes)
        if width is None or call.args[0].ty.ndim < 2 or depth * cols * 4 < _MIN_DENSE_BYTES:
            return call
        packed = pack_weight(weight.reshape(1, 1, depth, cols), width)[:, 0, 0]
        return self.builder_.call_te(
            packed_dense,
            call.args[0],
            relax.const(np.ascontiguousarray(packed), "float32"),
            primfunc_name_hint="matmul_packed",
        )


def _static_float(expr: relax.Expr) -> bool:
    ty = expr.ty
    return (
        isinstance(ty, relax.TensorType)
        and str(ty.dtype) == "float32"
        and ty.shape is not None
        and all(isinstance(d, tvm.tirx.IntImm) for d in ty.shape.values)
    )


def packed_dense(data: te.Tensor, packed: te.Tensor) -> te.Tensor:
    """``out[..., n] = sum_k data[..., k] * Wp[n // P, k, n % P]`` (``Wp``: ``[N/P, K, P]``)."""
    panels, depth, width = (int(d) for d in packed.shape)
    k = te.reduce_axis((0, depth), name="k")

    def body(*index: tvm.tirx.Var) -> tvm.tirx.PrimExpr:
        n = index[-1]
        return te.sum(data[(*index[:-1], k)] * packed[n // width, k, n % width], axis=k)

    return te.compute((*data.shape[:-1], panels * width), body, name="matmul")


def pack_conv_weights_pass(target: tvm.target.Target) -> tvm.transform.Pass:
    """The rewrite as a module pass (run after layout conversion and weight folding)."""
    lanes = cpu_info(target).lanes(32)

    @tvm.transform.module_pass(opt_level=0, name="OptcPackConvWeights")
    def _pack(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        rewritten = rewrite_functions(_PackConvWeights(mod, lanes), mod)
        return relax.transform.DeadCodeElimination()(rewritten)

    return _pack
