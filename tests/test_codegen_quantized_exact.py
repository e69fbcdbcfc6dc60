"""optc's int8 kernels compute exactly what integer arithmetic says.

uint8 x int8 -> int32 contractions, compiled through optc's CPU pipeline (layout
conversion, AVX2 / VNNI weight packing, schedules), must equal a numpy int64 reference
bit for bit, at the extremes of the operand ranges too (255 x -128: ``vpmaddwd`` on
widened pairs cannot saturate). ``vpmaddubsw`` (int16 pair sums) would saturate on
8-bit codes, so it is used only for weights whose codes are all 7-bit (255 x -64 twice
fits int16), checked here on a Zen 3 target (AVX2, no AVX-512), which this machine runs
when it has AVX2: 7-bit weights take it, one 8-bit code sends the layer back to
``vpmaddwd``, and the library really contains the instruction.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402

from optc.codegen.host_cpu import cpu_flags, host_target, host_triple  # noqa: E402
from optc.codegen.relax_pipeline import default_schedule, relax_pipeline  # noqa: E402
from optc.codegen.schedules.vnni import (  # noqa: E402
    AVX2,
    PMADDUBSW,
    PMADDUBSW_PAIRS,
    VNNI,
    VNNI_YMM,
    DotKernel,
)
from optc.codegen.schedules.vnni_pack import dot_kernels  # noqa: E402

TARGET = tvm.target.Target(host_target())
INSTRUCTION = {
    VNNI: "vpdpbusd.512",
    VNNI_YMM: "vpdpbusd.256",
    AVX2: "pmadd.wd",
    PMADDUBSW: "pmadd.ub.sw",
    PMADDUBSW_PAIRS: "pmadd.ub.sw",
}
# x86 with AVX2 and without AVX-512 VNNI: the target of the vpmaddubsw kernel.
ZEN3 = tvm.target.Target(
    {"kind": "llvm", "mtriple": host_triple(), "mcpu": "znver3", "num-cores": 2}
)
needs_avx2 = pytest.mark.skipif(
    "avx2" not in (cpu_flags() or ()), reason="running Zen 3 code needs an AVX2 CPU"
)


def packed_for(w_kn: np.ndarray, target: tvm.target.Target = TARGET) -> DotKernel | None:
    """The kernel ``vnni_pack`` gives a ``[K, N]`` int8 weight on ``target``: the first
    of ``dot_kernels`` for int8 weights whose shape fits and that is exact for its
    codes."""
    depth, cols = w_kn.shape
    return next(
        (
            k
            for k in dot_kernels(target)
            if k.weight_dtype == "int8"
            and depth % k.group == 0 and cols % k.lanes == 0 and k.exact_for(w_kn)
        ),
        None,
    )


def implicit_gemm(w_oihw: np.ndarray) -> np.ndarray:
    """An OIHW conv weight as the ``[KH * KW * I, O]`` matrix ``vnni_pack`` packs."""
    return w_oihw.transpose(2, 3, 1, 0).reshape(-1, w_oihw.shape[0])


def operands(
    rng: np.random.Generator, x_shape: tuple[int, ...], w_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 activations and int8 weights with their extremes planted."""
    x = rng.integers(0, 256, x_shape).astype(np.uint8)
    w = rng.integers(-128, 128, w_shape).astype(np.int8)
    x.reshape(-1)[: x.size // 4] = 255  # the largest products: 255 x -128 and 255 x 127
    w.reshape(-1)[: w.size // 8] = -128
    w.reshape(-1)[w.size // 8 : w.size // 4] = 127
    return x, w


def build(mod: tvm.IRModule, target: tvm.target.Target) -> tuple[relax.VirtualMachine, str, str]:
    """The VM of ``mod`` built by optc's pipeline for ``target``, its scheduled TIR as
    text and the library's assembly."""
    seen: dict[str, str] = {}

    def schedule(m: tvm.IRModule, t: tvm.target.Target) -> tvm.IRModule:
        out = default_schedule(m, t)
        seen["tir"] = out.script()
        return out

    pipeline = relax_pipeline(target, schedule=schedule, fuse=True)
    executable = tvm.compile(mod, target=target, relax_pipeline=pipeline)
    asm = executable.mod.imports[0].inspect_source("asm")
    return relax.VirtualMachine(executable, tvm.cpu()), seen["tir"], asm


def compile_module(mod: tvm.IRModule) -> tuple[relax.VirtualMachine, str]:
    """The VM of ``mod`` built by optc's pipeline for this host, and its scheduled TIR."""
    vm, tir, _ = build(mod, TARGET)
    return vm, tir


def single_op(x: np.ndarray, build: Callable[[relax.Expr], relax.Expr]) -> tvm.IRModule:
    """``main(x) = build(x)`` as a Relax module."""
    bb = relax.BlockBuilder()
    data = relax.Var("x", relax.TensorType(x.shape, str(x.dtype)))
    with bb.function("main", [data]):
        with bb.dataflow():
            out = bb.emit_output(build(data))
        bb.emit_func_output(out)
    return bb.get()



def int_conv(x: np.ndarray, w: np.ndarray, stride: int) -> tvm.IRModule:
    """``main(x)``: the zero-padded ("same" for odd kernels) integer conv of ``x`` with the
    constant ``w``, accumulating in int32."""
    pad = w.shape[-1] // 2
    return single_op(
        x,
        lambda d: relax.op.nn.conv2d(
            d, relax.const(w), strides=stride, padding=pad, out_dtype="int32"
        ),
    )

@pytest.mark.parametrize(
    "shape",
    [(37, 24, 40), (16, 384, 64), (49, 192, 96), (1, 320, 200)],
    ids=["odd-rows", "minilm-like", "7x7-pixels", "one-row"],
)
def test_packed_matmul_equals_integer_reference(shape: tuple[int, int, int]) -> None:
    rows, depth, cols = shape
    x, w = operands(np.random.default_rng(rows), (1, rows, depth), (depth, cols))
    mod = single_op(x, lambda d: relax.op.matmul(d, relax.const(w), out_dtype="int32"))
    vm, tir = compile_module(mod)
    kernel = packed_for(w)
    if kernel is not None:
        assert INSTRUCTION[kernel] in tir, "the int8 matmul was not packed"
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    want = x.astype(np.int64) @ w.astype(np.int64)
    np.testing.assert_array_equal(got, want)


needs_vnni = pytest.mark.skipif(
    VNNI not in dot_kernels(TARGET), reason="this host has no AVX-512 VNNI"
)


@needs_vnni
@pytest.mark.parametrize(
    ("rows", "depth", "cols"),
    [(3136, 144, 24), (784, 240, 40), (37, 24, 40), (1, 1280, 1000)],
    ids=["effnet-144-24", "effnet-240-40", "odd-rows", "classifier"],
)
def test_eight_wide_outputs_take_256_bit_vpdpbusd(rows: int, depth: int, cols: int) -> None:
    """Output widths that are a multiple of 8 but not of 16 (EfficientNet-Lite0's 24- and
    40-channel project convs) run on 256-bit ``vpdpbusd`` on a VNNI CPU, not on AVX2's
    ``vpmaddwd``: 8-bit codes at their extremes (-128, 127 next to 255) stay exact."""
    x, w = operands(np.random.default_rng(cols), (1, rows, depth), (depth, cols))
    assert packed_for(w) is (VNNI_YMM if cols % 16 else VNNI)
    mod = single_op(x, lambda d: relax.op.matmul(d, relax.const(w), out_dtype="int32"))
    vm, tir, asm = build(mod, TARGET)
    assert INSTRUCTION[packed_for(w)] in tir
    assert "pmadd" not in tir and "vpmaddwd" not in asm
    assert ("ymm" in asm.split("vpdpbusd", 1)[1].split("\n", 1)[0]) == bool(cols % 16)
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, x.astype(np.int64) @ w.astype(np.int64))


def conv_reference(x: np.ndarray, w: np.ndarray, stride: int, pad: int, groups: int) -> np.ndarray:
    """NCHW / OIHW grouped conv in int64."""
    n, _, h, wd = x.shape
    out_c, per_group, kh, kw = w.shape
    padded = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, out_c, oh, ow), np.int64)
    outs_per_group = out_c // groups
    for o in range(out_c):
        g = o // outs_per_group
        for i in range(per_group):
            for r in range(kh):
                for s in range(kw):
                    patch = padded[
                        :,
                        g * per_group + i,
                        r : r + stride * oh : stride,
                        s : s + stride * ow : stride,
                    ]
                    out[:, o] += patch * int(w[o, i, r, s])
    return out


@pytest.mark.parametrize(
    ("channels", "out_channels", "kernel", "stride", "groups"),
    [
        (32, 32, 3, 1, 32),  # depthwise 3x3 (EfficientNet-Lite's blocks)
        (24, 24, 5, 2, 24),  # depthwise 5x5, strided
        (16, 40, 1, 1, 1),  # 1x1: packed for vpmaddwd / vpdpbusd
        (32, 64, 3, 1, 1),  # 3x3, padded: an implicit GEMM on the packed kernel
        (16, 24, 3, 2, 1),  # 3x3, strided
    ],
)
def test_int8_convs_equal_integer_reference(
    channels: int, out_channels: int, kernel: int, stride: int, groups: int
) -> None:
    pad = kernel // 2
    x, w = operands(
        np.random.default_rng(channels + kernel),
        (1, channels, 14, 14),
        (out_channels, channels // groups, kernel, kernel),
    )
    mod = single_op(
        x,
        lambda d: relax.op.nn.conv2d(
            d, relax.const(w), strides=stride, padding=pad, groups=groups, out_dtype="int32"
        ),
    )
    vm, tir = compile_module(mod)
    packed = packed_for(implicit_gemm(w)) if groups == 1 else None
    if packed is not None:
        assert INSTRUCTION[packed] in tir, "the int8 conv was not packed"
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, conv_reference(x, w, stride, pad, groups))


def seven_bit_operands(
    rng: np.random.Generator, x_shape: tuple[int, ...], w_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 activations and 7-bit weight codes, the largest pair sums planted:
    255 x -64 + 255 x -64 = -32640 and 255 x 63 twice, next to int16's limits."""
    return planted_operands(rng, x_shape, w_shape, -64, 63)


def planted_operands(
    rng: np.random.Generator,
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    low: int,
    high: int,
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 activations and weight codes in [``low``, ``high``], the extremes planted: a
    quarter of the activations 255, an eighth of the weights ``low`` and an eighth
    ``high``, the rest random."""
    x = rng.integers(0, 256, x_shape).astype(np.uint8)
    w = rng.integers(low, high + 1, w_shape).astype(np.int8)
    x.reshape(-1)[: x.size // 4] = 255
    w.reshape(-1)[: w.size // 8] = low
    w.reshape(-1)[w.size // 8 : w.size // 4] = high
    return x, w


@needs_avx2
@pytest.mark.parametrize(
    ("shape", "kernel"),
    [
        ((37, 24, 40), PMADDUBSW),
        ((16, 384, 64), PMADDUBSW),  # MiniLM-like
        ((16, 1536, 384), PMADDUBSW),  # MiniLM's FFN down-projection
        # a classifier's matrix-vector product (EfficientNet-Lite0's 1280 -> 1000): no
        # row axis is left after normalization, once the generic loop at 800x the time
        ((1, 1280, 1000), PMADDUBSW),
        ((5, 42, 24), AVX2),  # K = 2 mod 4: no 4-deep groups, vpmaddwd pairs
        ((3, 27, 16), None),  # odd K: the generic int32 loop
    ],
    ids=["odd-rows", "minilm-like", "minilm-ffn", "classifier", "k-tail-2", "k-odd"],
)
def test_pmaddubsw_matmul_equals_integer_reference(
    shape: tuple[int, int, int], kernel: object
) -> None:
    rows, depth, cols = shape
    x, w = seven_bit_operands(np.random.default_rng(depth), (1, rows, depth), (depth, cols))
    mod = single_op(x, lambda d: relax.op.matmul(d, relax.const(w), out_dtype="int32"))
    vm, tir, asm = build(mod, ZEN3)
    assert ("pmadd.ub.sw" in tir) == (kernel is PMADDUBSW)
    assert ("vpmaddubsw" in asm) == (kernel is PMADDUBSW)
    if kernel is AVX2:
        assert "pmadd.wd" in tir
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, x.astype(np.int64) @ w.astype(np.int64))


@needs_avx2
@pytest.mark.parametrize(
    ("channels", "out_channels", "size"),
    [(16, 40, 14), (144, 24, 28), (1152, 192, 7)],  # EfficientNet-Lite0 1x1 convs
)
def test_pmaddubsw_1x1_conv_equals_integer_reference(
    channels: int, out_channels: int, size: int
) -> None:
    x, w = seven_bit_operands(
        np.random.default_rng(channels), (1, channels, size, size), (out_channels, channels, 1, 1)
    )
    mod = single_op(x, lambda d: relax.op.nn.conv2d(d, relax.const(w), out_dtype="int32"))
    vm, tir, asm = build(mod, ZEN3)
    assert "pmadd.ub.sw" in tir and "vpmaddubsw" in asm
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, conv_reference(x, w, 1, 0, 1))


@needs_avx2
@pytest.mark.parametrize(
    ("channels", "out_channels", "size", "kernel", "stride", "seven_bit"),
    [
        (32, 64, 14, 3, 1, True),  # Fashion-MNIST CNN's second conv
        (64, 128, 7, 3, 1, True),  # and its third
        (16, 24, 15, 3, 2, True),  # strided, odd size
        (32, 16, 12, 5, 1, True),  # 5x5
        (32, 64, 14, 3, 1, False),  # 8-bit codes: vpmaddwd
        (6, 16, 8, 3, 1, False),  # channels not a multiple of 4: the generic loop
    ],
)
def test_spatial_conv_as_implicit_gemm_equals_integer_reference(
    channels: int, out_channels: int, size: int, kernel: int, stride: int, seven_bit: bool
) -> None:
    """Zero-padded 3x3 / 5x5 convs (after a ReLU, the zero point is 0) on the packed
    kernels, over ``k = (ky * KW + kx) * C + c``."""
    make = seven_bit_operands if seven_bit else operands
    x, w = make(
        np.random.default_rng(channels + kernel),
        (1, channels, size, size),
        (out_channels, channels, kernel, kernel),
    )
    vm, tir, asm = build(int_conv(x, w, stride), ZEN3)
    # 4 consecutive k must be 4 channels of one pixel: C % 4 == 0
    expected = None if channels % 4 else packed_for(implicit_gemm(w), ZEN3)
    assert expected is (None if channels % 4 else PMADDUBSW if seven_bit else AVX2)
    assert ("vnni_conv" in tir) == (expected is not None)
    assert ("vpmaddubsw" in asm) == (expected is PMADDUBSW)
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, conv_reference(x, w, stride, kernel // 2, 1))


@needs_avx2
@pytest.mark.parametrize("code", [64, -65, -128])
def test_an_8bit_code_falls_back_to_pmaddwd(code: int) -> None:
    """One weight code outside [-64, 63] would saturate ``vpmaddubsw`` next to 255s:
    the layer is packed for ``vpmaddwd`` instead, and stays exact."""
    x, w = seven_bit_operands(np.random.default_rng(7), (1, 16, 64), (64, 32))
    w[1, 5] = code
    x[0, :, :] = 255
    mod = single_op(x, lambda d: relax.op.matmul(d, relax.const(w), out_dtype="int32"))
    vm, tir, asm = build(mod, ZEN3)
    assert "pmadd.ub.sw" not in tir and "vpmaddubsw" not in asm
    assert "pmadd.wd" in tir
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, x.astype(np.int64) @ w.astype(np.int64))


def qdq_depthwise(x: np.ndarray, w: np.ndarray, zero: int, stride: int, pad: int) -> tvm.IRModule:
    """``conv2d(dequantize(x, 1, zero), dequantize(W, 1))``, depthwise: with unit scales
    the float result is the integer accumulator itself, as the lowering computes it."""
    channels = w.shape[0]
    return single_op(
        x,
        lambda d: relax.op.nn.conv2d(
            relax.op.dequantize(d, relax.const(1.0, "float32"), relax.const(zero, "uint8"), axis=1),
            relax.op.dequantize(
                relax.const(w),
                relax.const(np.ones(channels, np.float32)),
                relax.const(np.zeros(channels, np.int8)),
                axis=0,
            ),
            strides=stride,
            padding=pad,
            groups=channels,
        ),
    )


@pytest.mark.parametrize(
    ("channels", "size", "kernel", "stride", "zero"),
    [
        (32, 14, 3, 1, 0),  # after a ReLU: zero point 0
        (24, 15, 5, 2, 0),  # 5x5, strided, odd size: the largest window (25 taps)
        (40, 12, 3, 1, 97),  # a zero point: the float model pads with it
        (20, 9, 5, 1, 255),  # the largest shift: every activation 0 - 255
    ],
)
@pytest.mark.parametrize(
    "target", [TARGET, pytest.param(ZEN3, marks=needs_avx2)], ids=["host", "znver3"]
)
def test_qdq_depthwise_on_float_vectors_is_exact(
    channels: int, size: int, kernel: int, stride: int, zero: int, target: tvm.target.Target
) -> None:
    """An int8 depthwise conv runs on float32 vectors (``quantized._exact_float_depthwise``):
    every partial sum is an integer below 2^24, so the result is the integer one bit for
    bit, at the extremes of the operands too (255 x -128 on 25 taps)."""
    x, w = operands(
        np.random.default_rng(channels + kernel + zero),
        (1, channels, size, size),
        (channels, 1, kernel, kernel),
    )
    x.reshape(-1)[-x.size // 4 :] = 0  # the most negative shifted activations
    pad = kernel // 2
    vm, tir, _ = build(qdq_depthwise(x, w, zero, stride, pad), target)
    assert "int32" not in tir  # no integer accumulator: the float depthwise kernel
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    shifted = x.astype(np.int64) - zero  # padded with the zero point = 0 after the shift
    reference = conv_reference(shifted, w, stride, pad, channels)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.astype(np.int64), reference)


@pytest.mark.parametrize("zero", [0, 97])
def test_depthwise_reads_a_quantize_as_float_codes_bit_for_bit(zero: int) -> None:
    """A depthwise conv fed by ``quantize`` of a float value computes on that quantize's
    rounded and clamped float result (``quantized._codes_as_float``): no uint8 round trip
    in between, and bit for bit the result of the same conv on the uint8 codes."""
    channels, size, scale = 24, 14, np.float32(0.05)
    rng = np.random.default_rng(zero)
    real = (rng.standard_normal((1, channels, size, size)) * 4).astype(np.float32)
    _, w = operands(rng, (1, channels, size, size), (channels, 1, 3, 3))

    def conv(data: relax.Expr) -> relax.Expr:
        return relax.op.nn.conv2d(
            relax.op.dequantize(data, relax.const(scale), relax.const(zero, "uint8"), axis=1),
            relax.op.dequantize(
                relax.const(w),
                relax.const(np.ones(channels, np.float32)),
                relax.const(np.zeros(channels, np.int8)),
                axis=0,
            ),
            padding=1,
            groups=channels,
        )

    def quantized(d: relax.Expr) -> relax.Expr:
        return conv(relax.op.quantize(d, relax.const(scale), relax.const(zero, "uint8"),
                                      axis=1, out_dtype="uint8"))

    from_float, tir, _ = build(single_op(real, quantized), TARGET)
    assert "uint8" not in tir  # the codes never go through uint8
    # ONNX QuantizeLinear, as the lowering computes it: times the reciprocal, ties to even
    codes = np.clip(np.round(real * (np.float32(1) / scale)) + zero, 0, 255).astype(np.uint8)
    from_codes, _, _ = build(single_op(codes, conv), TARGET)
    got = from_float["main"](tvm.runtime.tensor(real)).numpy()
    want = from_codes["main"](tvm.runtime.tensor(codes)).numpy()
    np.testing.assert_array_equal(got, want)
