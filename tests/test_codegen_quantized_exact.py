"""optc's int8 kernels compute exactly what integer arithmetic says.

uint8 x int8 -> int32 contractions, compiled through optc's CPU pipeline (layout
conversion, AVX2 / VNNI weight packing, schedules), must equal a numpy int64 reference
bit for bit, at the extremes of the operand ranges too (255 x -128: ``vpmaddwd`` on
widened pairs cannot saturate, a ``vpmaddubsw`` formulation would).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402

from optc.codegen.host_cpu import host_target  # noqa: E402
from optc.codegen.relax_pipeline import default_schedule, relax_pipeline  # noqa: E402
from optc.codegen.schedules.vnni import AVX2, VNNI  # noqa: E402
from optc.codegen.schedules.vnni_pack import dot_kernel  # noqa: E402

TARGET = tvm.target.Target(host_target())
HOST_KERNEL = dot_kernel(TARGET)
INSTRUCTION = {VNNI: "vpdpbusd", AVX2: "pmadd.wd"}


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


def compile_module(mod: tvm.IRModule) -> tuple[relax.VirtualMachine, str]:
    """The VM of ``mod`` built by optc's pipeline, and its scheduled TIR as text."""
    seen: dict[str, str] = {}

    def schedule(m: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
        out = default_schedule(m, target)
        seen["tir"] = out.script()
        return out

    pipeline = relax_pipeline(TARGET, schedule=schedule, fuse=True)
    executable = tvm.compile(mod, target=TARGET, relax_pipeline=pipeline)
    return relax.VirtualMachine(executable, tvm.cpu()), seen["tir"]


def single_op(x: np.ndarray, build: Callable[[relax.Expr], relax.Expr]) -> tvm.IRModule:
    """``main(x) = build(x)`` as a Relax module."""
    bb = relax.BlockBuilder()
    data = relax.Var("x", relax.TensorType(x.shape, str(x.dtype)))
    with bb.function("main", [data]):
        with bb.dataflow():
            out = bb.emit_output(build(data))
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize(
    "shape",
    [(37, 24, 40), (16, 384, 64), (49, 192, 96)],
    ids=["odd-rows", "minilm-like", "7x7-pixels"],
)
def test_packed_matmul_equals_integer_reference(shape: tuple[int, int, int]) -> None:
    rows, depth, cols = shape
    x, w = operands(np.random.default_rng(rows), (1, rows, depth), (depth, cols))
    mod = single_op(x, lambda d: relax.op.matmul(d, relax.const(w), out_dtype="int32"))
    vm, tir = compile_module(mod)
    if HOST_KERNEL is not None:
        assert INSTRUCTION[HOST_KERNEL] in tir, "the int8 matmul was not packed"
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    want = x.astype(np.int64) @ w.astype(np.int64)
    np.testing.assert_array_equal(got, want)


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
    if HOST_KERNEL is not None and kernel == 1:
        assert INSTRUCTION[HOST_KERNEL] in tir, "the 1x1 int8 conv was not packed"
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, conv_reference(x, w, stride, pad, groups))
