"""bfloat16 contractions: ``vdpbf16ps`` where the target has AVX-512 BF16, float32 elsewhere.

An ONNX layer wrapped in bfloat16 Casts, or float32 arithmetic on bfloat16 values (the
``mixed-precision`` pass's 16-bit form on such targets), must compile for a Zen 4 target
to a library that really contains ``vdpbf16ps`` (checked on any x86 host: only running
it needs the instruction), and compute what float32 sums of exact bfloat16 products say:
within one bfloat16 step (2**-8 relative) of a float64 reference on the same rounded
operands per rounding the graph has, the step taken of the sum of the products'
magnitudes (TVM's bfloat16 legalization computes a bfloat16 value that never leaves a
kernel in float32 — the sum before a bias is added, an activation cast to bfloat16 and
straight back to float32 for the stem conv —: more exact than the graph, not less; so
the bound is the one of input rounding, not of the result's last bit). A stem conv over
3 channels and every conv on a CPU without the instruction compute in float32 on widened
operands, to the same accuracy.
"""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402

from optc.codegen.build import build  # noqa: E402
from optc.codegen.host_cpu import cpu_flags, host_triple  # noqa: E402
from optc.frontend import from_onnx  # noqa: E402

BF16 = ml_dtypes.bfloat16
ZEN4 = {"kind": "llvm", "mtriple": host_triple(), "mcpu": "znver4", "num-cores": 2}
ZEN3 = {"kind": "llvm", "mtriple": host_triple(), "mcpu": "znver3", "num-cores": 2}
FLAGS = cpu_flags() or frozenset()
x86_only = pytest.mark.skipif(
    not host_triple().startswith("x86_64"), reason="compiles for x86 CPUs"
)
needs_bf16 = pytest.mark.skipif(
    "avx512_bf16" not in FLAGS, reason="running vdpbf16ps needs an AVX-512 BF16 CPU"
)
needs_avx2 = pytest.mark.skipif("avx2" not in FLAGS, reason="running Zen 3 code needs AVX2")


def bf16_model(op: onnx.NodeProto, x_shape: list[int], weight: np.ndarray,
               bias: np.ndarray | None) -> onnx.ModelProto:
    """``y = Cast<float>(op(Cast<bf16>(x), W_bf16[, b_bf16]))``, the pass's 16-bit form."""
    inits = [numpy_helper.from_array(weight.astype(BF16), "w")]
    inputs = ["xb", "w"]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias.astype(BF16), "b"))
        inputs.append("b")
    core = helper.make_node(op.op_type, inputs, ["yb"])
    core.attribute.extend(op.attribute)
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["xb"], to=TensorProto.BFLOAT16),
            core,
            helper.make_node("Cast", ["yb"], ["y"], to=TensorProto.FLOAT),
        ],
        "bf16_layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)


def bf16_values_model(op: onnx.NodeProto, x_shape: list[int], weight: np.ndarray,
                      bias: np.ndarray) -> onnx.ModelProto:
    """``y = op(Cast<float>(Cast<bf16>(x)), Cast<float>(W_bf16), b)``: float32 arithmetic
    on bfloat16 values, the form ``optc.quant.emit`` writes (valid ONNX at opset 17)."""
    core = helper.make_node(op.op_type, ["xv", "wv", "b"], ["y"])
    core.attribute.extend(op.attribute)
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["xb"], to=TensorProto.BFLOAT16),
            helper.make_node("Cast", ["xb"], ["xv"], to=TensorProto.FLOAT),
            helper.make_node("Cast", ["w"], ["wv"], to=TensorProto.FLOAT),
            core,
        ],
        "bf16_values_layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight.astype(BF16), "w"), numpy_helper.from_array(bias, "b")],
    )
    model = onnx.shape_inference.infer_shapes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    onnx.checker.check_model(model, full_check=True)
    return model


def conv_reference(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """NCHW / OIHW conv in float64 (the operands already bfloat16 values)."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    kh, kw = w.shape[2:]
    out_h = (x.shape[2] - kh) // stride + 1
    out_w = (x.shape[3] - kw) // stride + 1
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride][:, :, :out_h, :out_w]
    return np.einsum("nchwij,ocij->nohw", windows, w)


def rounded(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32).astype(BF16).astype(np.float64)


Case = tuple[onnx.ModelProto, np.ndarray, np.ndarray, np.ndarray]
"""A model, its input, the float64 result on bfloat16 operands, and the same computed on
the operands' magnitudes (what one rounding step is relative to)."""


def run_and_check(case: Case, target: dict, roundings: int) -> None:
    """The compiled layer is within ``roundings`` bfloat16 steps of the reference."""
    model, x, reference, magnitude = case
    built = build(from_onnx(model), target)
    vm = relax.VirtualMachine(built.executable, tvm.cpu())
    y = vm["main"](tvm.runtime.tensor(x)).numpy()
    assert y.shape == reference.shape
    error = np.abs(y - reference)
    assert np.all(error <= roundings * 2.0**-8 * magnitude), (error / magnitude).max()


def library_asm(model: onnx.ModelProto, target: dict) -> str:
    built = build(from_onnx(model), target)
    return built.executable.mod.imports[0].inspect_source("asm")


RNG = np.random.default_rng(7)
MATMUL_W = RNG.standard_normal((384, 256)).astype(np.float32) * 0.05
CONV_W = RNG.standard_normal((32, 16, 3, 3)).astype(np.float32) * 0.1
CONV_B = RNG.standard_normal(32).astype(np.float32)
STEM_W = RNG.standard_normal((16, 3, 3, 3)).astype(np.float32) * 0.1


def matmul_case(cols: int = 256) -> Case:
    """A bfloat16 matmul 16 x 384 -> ``cols`` (256: the zmm kernel; 24: the 256-bit one;
    1001: not a multiple of 8, float32)."""
    x = RNG.standard_normal((16, 384)).astype(np.float32)
    weight = MATMUL_W if cols == MATMUL_W.shape[1] else \
        RNG.standard_normal((384, cols)).astype(np.float32) * 0.05
    model = bf16_model(helper.make_node("MatMul", [], []), [16, 384], weight, None)
    return (model, x, rounded(x) @ rounded(weight),
            np.abs(rounded(x)) @ np.abs(rounded(weight)))


def gemm_values_case() -> Case:
    """A classifier in the pass's form: ``Gemm(transB=1)`` on bfloat16 values, 1 x 1280 ->
    1000 (the weight reaches the code generator transposed)."""
    weight = RNG.standard_normal((1000, 1280)).astype(np.float32) * 0.03
    bias = RNG.standard_normal(1000).astype(np.float32)
    node = helper.make_node("Gemm", [], [], transB=1)
    x = RNG.standard_normal((1, 1280)).astype(np.float32)
    model = bf16_values_model(node, [1, 1280], weight, bias)
    product = rounded(x) @ rounded(weight).T
    size = np.abs(rounded(x)) @ np.abs(rounded(weight)).T
    return model, x, product + bias[None], size + np.abs(bias)[None]


def conv_case(stride: int) -> Case:
    """A padded 3x3 conv with a bias (the padded copy is made inside the kernel)."""
    node = helper.make_node("Conv", [], [], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                            strides=[stride, stride])
    x = RNG.standard_normal((1, 16, 14, 14)).astype(np.float32)
    model = bf16_model(node, [1, 16, 14, 14], CONV_W, CONV_B)
    bias = rounded(CONV_B)[None, :, None, None]
    conv = conv_reference(rounded(x), rounded(CONV_W), stride, 1)
    size = conv_reference(np.abs(rounded(x)), np.abs(rounded(CONV_W)), stride, 1)
    return model, x, conv + bias, size + np.abs(bias)


def values_case() -> Case:
    """The pass's form of a padded 3x3 conv with a float32 bias."""
    node = helper.make_node("Conv", [], [], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    x = RNG.standard_normal((1, 16, 14, 14)).astype(np.float32)
    model = bf16_values_model(node, [1, 16, 14, 14], CONV_W, CONV_B)
    bias = CONV_B.astype(np.float64)[None, :, None, None]
    conv = conv_reference(rounded(x), rounded(CONV_W), 1, 1)
    size = conv_reference(np.abs(rounded(x)), np.abs(rounded(CONV_W)), 1, 1)
    return model, x, conv + bias, size + np.abs(bias)


def stem_case() -> Case:
    node = helper.make_node("Conv", [], [], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    x = RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)
    model = bf16_model(node, [1, 3, 16, 16], STEM_W, None)
    return (model, x, conv_reference(rounded(x), rounded(STEM_W), 1, 1),
            conv_reference(np.abs(rounded(x)), np.abs(rounded(STEM_W)), 1, 1))


CASES = {"matmul": matmul_case, "matmul-8-wide": lambda: matmul_case(24),
         "conv": lambda: conv_case(1), "conv-stride-2": lambda: conv_case(2),
         "bf16-values": values_case, "gemm-values": gemm_values_case, "stem": stem_case,
         "matmul-1001": lambda: matmul_case(1001)}


@x86_only
@pytest.mark.parametrize(
    ("case", "register"),
    [("matmul", "zmm"), ("matmul-8-wide", "ymm"), ("conv", "zmm"), ("conv-stride-2", "zmm"),
     ("bf16-values", "zmm"), ("gemm-values", "ymm")],
)
def test_bf16_contractions_compile_to_vdpbf16ps_on_zen4(case: str, register: str) -> None:
    """On ``register``s: 16 outputs per instruction, or 8 where the width is a multiple
    of 8 but not of 16 (the 1000-class classifier, EfficientNet's 24-channel convs)."""
    model = CASES[case]()[0]
    asm = library_asm(model, ZEN4)
    assert any("vdpbf16ps" in line and f"%{register}" in line for line in asm.splitlines())
    assert "vdpbf16ps" not in library_asm(model, ZEN3)  # widened to float32 there


@x86_only
def test_a_width_not_a_multiple_of_8_computes_in_float32() -> None:
    assert "vdpbf16ps" not in library_asm(matmul_case(1001)[0], ZEN4)


@x86_only
def test_a_stem_conv_over_three_channels_computes_in_float32() -> None:
    asm = library_asm(stem_case()[0], ZEN4)
    assert "vdpbf16ps" not in asm
    assert "vfmadd" in asm


@needs_bf16
@pytest.mark.parametrize("case", list(CASES))
def test_bf16_layers_on_zen4_sum_exact_products_in_float32(case: str) -> None:
    run_and_check(CASES[case](), ZEN4, 2 if case.startswith("conv") else 1)


@needs_avx2
@pytest.mark.parametrize("case", ["matmul", "conv"])
def test_bf16_layers_without_the_instruction_compute_in_float32(case: str) -> None:
    made = {"matmul": matmul_case, "conv": lambda: conv_case(1)}[case]()
    run_and_check(made, ZEN3, 2 if case == "conv" else 1)


@x86_only
def test_bf16_weights_stay_bfloat16_in_the_library(tmp_path: Path) -> None:
    """The library holds the packed weight in 2 bytes per element: a 384 x 1536 matmul's
    library is at least 1 MiB smaller than the float32 model's (2.25 MiB of weights)."""
    weight = RNG.standard_normal((384, 1536)).astype(np.float32)
    half = bf16_model(helper.make_node("MatMul", [], []), [16, 384], weight, None)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "fp32_layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 384])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16, 1536])],
        [numpy_helper.from_array(weight, "w")],
    )
    full = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sizes = []
    for name, model in (("half", half), ("full", full)):
        path = tmp_path / f"{name}.so"
        build(from_onnx(model), ZEN4).executable.export_library(str(path))
        sizes.append(path.stat().st_size)
    assert sizes[1] - sizes[0] >= 1 << 20, sizes
