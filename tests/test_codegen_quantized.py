"""optc's quantized layers compile to real low-precision compute with TVM on the CPU.

QDQ layers (w8a8 / w4a8) must become uint8 x int8 -> int32 contractions (but a stem
conv over fewer than 8 input channels, which computes in float32 on x86 CPUs with packed
int8 kernels: ``quantized._float_conv``), weight-only
layers (w4a16) must read their int8 codes inside the float kernel, the library must be
smaller than the fp32 model's, and the outputs must match onnxruntime running the same
QDQ model within quantization tolerance. Real models: the bundled digits CNN, and the
first layers of EfficientNet-Lite0 (on a real photo) and of MiniLM-L6.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import model_zoo
import numpy as np
import pytest
from pass_support import onnxruntime_runner

import optc
from optc.cost.analysis import GraphFacts
from optc.cost.rules import RULES
from optc.ir.graph import Graph, Value
from optc.passes.eliminate_dead_code import EliminateDeadCode
from optc.passes.fold_batchnorm import FoldBatchNorm
from optc.pipeline import PassContext, parse_pipeline
from optc.quant import Calibration, LayerPrecision
from optc.quant.emit import emit
from optc.quant.evaluate import Evaluator
from optc.quant.kernels import int8_code_bits
from optc.quant.layers import Layer, quantizable_layers

tvm = pytest.importorskip("tvm")
from optc.codegen.build import BuiltModule, build  # noqa: E402  (needs TVM)
from optc.codegen.host_cpu import cpu_flags, host_target, host_triple  # noqa: E402
from optc.codegen.relax_pipeline import default_schedule  # noqa: E402
from optc.codegen.schedules.vnni import AVX2, VNNI  # noqa: E402
from optc.codegen.schedules.vnni_pack import dot_kernel  # noqa: E402

HOST_KERNEL = dot_kernel(tvm.target.Target(host_target()))  # VNNI, AVX2 or None
PACKED_INSTRUCTION = {VNNI: "vpdpbusd", AVX2: "pmadd.wd"}

MODELS = Path(__file__).resolve().parent.parent / "examples" / "models"
FOLD = "fold-constants,fold-batchnorm,eliminate-dead-code"
W8A8, W4A8, W4A16 = LayerPrecision(8, 8), LayerPrecision(4, 8), LayerPrecision(4, 16)
# int16: a zero-point-shifted activation (padded convs) or an AVX2-packed int8 weight
INT_OPERANDS = ("int8", "uint8", "int16")


# -- helpers ---------------------------------------------------------------------------------
def compile_and_capture(
    graph: Graph, target: Mapping[str, Any] | None = None
) -> tuple[BuiltModule, Any]:
    """The built model and its scheduled module (TIR before lowering), with fusion on,
    for ``target`` (default: this host)."""
    seen: dict[str, Any] = {}

    def schedule(mod: Any, target: Any) -> Any:
        seen["mod"] = default_schedule(mod, target)
        return seen["mod"]

    built = build(graph, dict(target or host_target()), schedule=schedule, fuse=True)
    return built, seen["mod"]


def _walk(stmt: Any, vectorized: bool = False) -> Iterator[tuple[Any, bool]]:
    """Every statement under ``stmt`` with whether a vectorized loop encloses it (TVM 0.27
    has no Python TIR visitor)."""
    yield stmt, vectorized
    if isinstance(stmt, tvm.tirx.For):
        vectorized = vectorized or int(stmt.kind) == int(tvm.tirx.ForKind.VECTORIZED)
    children = []
    for field in ("body", "block", "then_case", "else_case", "init"):
        child = getattr(stmt, field, None)
        if isinstance(child, tvm.tirx.Stmt):
            children.append(child)
    children.extend(getattr(stmt, "seq", None) or [])
    for child in children:
        yield from _walk(child, vectorized)


def _loads(expr: Any) -> list[Any]:
    """Tensor loads under casts, products, reinterprets, broadcasts and intrinsic calls."""
    if isinstance(expr, tvm.ir.TensorLoad):
        return [expr]
    if isinstance(expr, tvm.tirx.Cast | tvm.tirx.Broadcast):
        return _loads(expr.value)
    if isinstance(expr, tvm.tirx.Mul | tvm.tirx.Add):  # Add: two vpmaddubsw added in int16
        return _loads(expr.a) + _loads(expr.b)
    if isinstance(expr, tvm.ir.Call):
        return [load for arg in expr.args for load in _loads(arg)]
    return []


def _is_vnni(value: Any) -> bool:
    return isinstance(value, tvm.ir.Call) and "call_llvm_pure_intrin" in str(value.op)


def contractions(mod: Any) -> dict[str, tuple[str, tuple[str, ...], bool]]:
    """Function -> (accumulator dtype, operand dtypes, vectorized) of its multiply-
    accumulate: ``acc = acc + a * b``, ``acc = vpdpbusd(acc, a, b)`` (AVX-512 VNNI) or
    ``acc = acc + vpmaddwd(a, b)`` (AVX2)."""
    found = {}
    for gvar, func in mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        for stmt, vectorized in _walk(func.body):
            if not isinstance(stmt, tvm.tirx.BufferStore):
                continue
            value = stmt.value
            if _is_vnni(value):
                # element dtypes: the intrinsic reads its operands as 64-byte vectors
                operands = tuple(
                    str(load.source.dtype).split("x")[0]
                    for load in _loads(value)
                    if not load.source.same_as(stmt.buffer)
                )
                found[gvar.name_hint] = (str(stmt.buffer.dtype).split("x")[0], operands, True)
                continue
            if not isinstance(value, tvm.tirx.Add):
                continue
            acc, product = (
                (value.a, value.b) if isinstance(value.a, tvm.ir.TensorLoad) else (value.b, value.a)
            )
            if not (isinstance(acc, tvm.ir.TensorLoad) and acc.source.same_as(stmt.buffer)):
                continue
            operands = tuple(str(load.source.dtype) for load in _loads(product))
            if len(operands) == 4 and operands[:2] == operands[2:]:
                operands = operands[:2]  # vnni.PMADDUBSW_PAIRS reads both operands twice
            if len(operands) == 2:  # acc + vpmaddwd(a, b) (AVX2) is a vector instruction
                found[gvar.name_hint] = (
                    str(stmt.buffer.dtype),
                    operands,
                    vectorized or _is_vnni(product),
                )
    return found


def int8_contractions(mod: Any, packed_only: bool = False) -> list[str]:
    """The calls of integer x int8 -> int32 contraction kernels (layers of one shape
    share a kernel); with ``packed_only`` those tensorized with a packed dot product
    (``vpdpbusd`` with AVX-512 VNNI, ``vpmaddwd`` with AVX2)."""
    names = {
        name
        for name, (acc, ops, _) in contractions(mod).items()
        if acc == "int32" and len(ops) == 2 and all(op in INT_OPERANDS for op in ops)
    }
    if packed_only:
        names = {
            name
            for name in names
            if any(i in mod[name].script() for i in PACKED_INSTRUCTION.values())
        }
    return [callee for callee in kernel_calls(mod) if callee in names]


def kernel_calls(mod: Any) -> list[str]:
    """The TIR functions ``main`` calls, once per call."""
    calls: list[str] = []

    def visit(expr: Any) -> None:
        if isinstance(expr, tvm.relax.Call) and getattr(expr.op, "name", "") == "relax.call_tir":
            calls.append(expr.args[0].name_hint)

    tvm.relax.analysis.post_order_visit(mod["main"], visit)
    return calls


def constant_bytes(mod: Any) -> dict[str, int]:
    """Bytes of the Relax module's constants (the weights the library stores) by dtype."""
    found: dict[str, int] = {}

    def visit(expr: Any) -> None:
        if isinstance(expr, tvm.ir.expr.GenericConst):
            array = expr.value.numpy()
            found[str(array.dtype)] = found.get(str(array.dtype), 0) + array.nbytes

    for _, func in mod.functions_items():
        if isinstance(func, tvm.relax.Function):
            tvm.relax.analysis.post_order_visit(func, visit)
    return found


def float_stems(graph: Graph, layers: tuple[Layer, ...]) -> list[Layer]:
    """The QDQ convs the host computes in float32: spatial convs over fewer than 8 input
    channels, on x86 CPUs with packed int8 kernels (``quantized._float_conv``)."""
    if HOST_KERNEL is None:
        return []
    stems = []
    for layer in layers:
        shape = graph.params[layer.weight].shape  # (out, in / groups, kh, kw)
        node = graph.producer(layer.key)
        if (
            layer.op == "Conv"
            and node is not None
            and int(node.attr("group", 1)) == 1
            and shape[1] < 8
            and shape[2:] != (1, 1)
        ):
            stems.append(layer)
    return stems


def float_depthwise(graph: Graph, layers: tuple[Layer, ...]) -> list[Layer]:
    """The QDQ depthwise convs that run exactly on float32 vectors, on x86 CPUs with
    packed int8 kernels (``quantized._exact_float_depthwise``): their weights are stored
    as float32 codes and their accumulator is float32."""
    if HOST_KERNEL is None:
        return []
    found = []
    for layer in layers:
        shape = graph.params[layer.weight].shape
        node = graph.producer(layer.key)
        groups = int(node.attr("group", 1)) if node is not None else 1
        if layer.op == "Conv" and groups > 1 and shape[1] == 1 and groups == shape[0]:
            found.append(layer)
    return found


def library_bytes(built: BuiltModule, tmp_path: Path, name: str) -> int:
    return built.export_library(tmp_path / f"{name}.so").stat().st_size


def run_tvm(built: BuiltModule, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
    machine = tvm.relax.VirtualMachine(built.executable, tvm.cpu())
    args = [tvm.runtime.tensor(feeds[spec.name], tvm.cpu()) for spec in built.inputs]
    out = machine["main"](*args)
    return (out[0] if isinstance(out, tvm.ir.Array) else out).numpy()


def calibrated(
    graph: Graph, feeds: Mapping[str, np.ndarray]
) -> tuple[tuple[Layer, ...], dict[str, tuple[float, float]]]:
    layers = quantizable_layers(graph)
    ranges = Evaluator(graph, Calibration(dict(feeds))).value_ranges(
        graph, [layer.activation for layer in layers]
    )
    return layers, ranges


def folded(path: Path) -> Graph:
    """The exported model with shape computations folded (TVM needs static pads)."""
    return parse_pipeline(FOLD).run(optc.load_onnx(path)).graph


def cut(graph: Graph, output: str) -> Graph:
    """The part of ``graph`` computing ``output`` (a real model's first layers)."""
    value = graph.value(output)
    kept = graph.replace(outputs=(Value(output, value.dtype, value.shape),))
    return EliminateDeadCode().run(kept, PassContext())


def assert_close_to_onnxruntime(
    graph: Graph, got: np.ndarray, feeds: Mapping[str, np.ndarray], tolerance: float
) -> None:
    want = onnxruntime_runner(graph)(feeds)[graph.output_names[0]]
    scale = float(np.abs(want).max())
    # Integer accumulation is exact; a requantized value on a rounding boundary may move
    # by one step between runtimes: compare at the scale of the output.
    np.testing.assert_allclose(got, want, rtol=0, atol=tolerance * scale)


# -- digits CNN ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits() -> tuple[Graph, tuple[Layer, ...], dict[str, tuple[float, float]], np.ndarray]:
    graph = FoldBatchNorm().run(optc.load_onnx(MODELS / "digits_cnn.onnx"), PassContext())
    images = np.load(MODELS / "digits_test.npz")["input"]
    layers, ranges = calibrated(graph, {"input": images[:64]})
    return graph, layers, ranges, images


@pytest.fixture(scope="module")
def digits_fp32_bytes(digits: tuple, tmp_path_factory: pytest.TempPathFactory) -> int:
    built, _ = compile_and_capture(digits[0])
    return library_bytes(built, tmp_path_factory.mktemp("fp32"), "fp32")


@pytest.mark.parametrize("precision", [W8A8, W4A8], ids=["w8a8", "w4a8"])
def test_digits_qdq_runs_as_int8_contractions(
    digits: tuple, digits_fp32_bytes: int, precision: LayerPrecision, tmp_path: Path
) -> None:
    graph, layers, ranges, images = digits
    emitted = emit(graph, layers, {layer.key: precision for layer in layers}, ranges)
    built, mod = compile_and_capture(emitted)
    found = int8_contractions(mod)
    # 3 Conv + 1 Gemm, each uint8 x int8 -> int32, but the first conv (1 input channel)
    # where the host has packed int8 kernels
    assert len(found) == len(layers) - len(float_stems(graph, layers))
    assert all(contractions(mod)[name][2] for name in found), "int8 contraction not vectorized"
    assert library_bytes(built, tmp_path, "q") < digits_fp32_bytes
    for image in images[:8]:
        feeds = {"input": image[None]}
        assert_close_to_onnxruntime(emitted, run_tvm(built, feeds), feeds, 0.02)


def test_digits_weight_only_reads_int8_codes_in_the_kernel(
    digits: tuple, digits_fp32_bytes: int, tmp_path: Path
) -> None:
    graph, layers, ranges, images = digits
    emitted = emit(graph, layers, {layer.key: W4A16 for layer in layers}, ranges)
    built, mod = compile_and_capture(emitted)
    names = {
        name
        for name, (acc, ops, _) in contractions(mod).items()
        if acc.startswith("float") and ops[1] == "int8"
    }
    weight_only = [callee for callee in kernel_calls(mod) if callee in names]
    assert len(weight_only) == len(layers)  # the float kernel reads the int8 codes
    assert not int8_contractions(mod)
    assert library_bytes(built, tmp_path, "w4") < digits_fp32_bytes
    feeds = {"input": images[:1]}
    assert_close_to_onnxruntime(emitted, run_tvm(built, feeds), feeds, 0.02)


def test_roofline_prices_weight_only_as_float_compute(digits: tuple) -> None:
    graph, layers, ranges, _ = digits
    for fold in (False, True):
        for precision, dtype in ((W4A16, "float16"), (W8A8, "int8"), (W4A8, "int8")):
            emitted = emit(graph, layers, {layer.key: precision for layer in layers}, ranges)
            facts = GraphFacts(emitted, RULES, fold, lambda body, outer: None)
            dtypes = {f.node.outputs[0].name: f.dtype for f in facts.facts}
            assert [dtypes[layer.key] for layer in layers[:3]] == [dtype] * 3, (fold, precision)


# -- first layers of real models -------------------------------------------------------------
def test_efficientnet_first_blocks_on_a_photo(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    full = folded(model_zoo.efficientnet_onnx(tmp_path_factory, dynamo=False))
    graph = cut(full, quantizable_layers(full)[5].key)  # stem + blocks 0 and 1
    feeds = {"image": model_zoo.sample_photo(0)}
    layers, ranges = calibrated(
        graph, {"image": np.concatenate([model_zoo.sample_photo(0), model_zoo.sample_photo(1)])}
    )
    emitted = emit(graph, layers, {layer.key: W8A8 for layer in layers}, ranges)
    built, mod = compile_and_capture(emitted)
    stems = float_stems(graph, layers)  # the 3-channel stem, on x86
    depthwise = float_depthwise(graph, layers)  # exact on float32 vectors, on x86
    assert len(int8_contractions(mod)) == len(layers) - len(stems) - len(depthwise)
    # the 1x1 convolutions 32->16, 16->96 and 96->24 all on vpdpbusd where the CPU has
    # VNNI (the 24-channel one 256 bits wide, vnni.VNNI_YMM), on AVX2's vpmaddwd without
    assert len(int8_contractions(mod, packed_only=True)) == (3 if HOST_KERNEL else 0)
    if HOST_KERNEL is VNNI:
        assert (
            sum(
                "vpdpbusd" in mod[name].script()
                for name in set(int8_contractions(mod, packed_only=True))
            )
            == 3
        )
    _, fp32_mod = compile_and_capture(graph)
    # These layers hold 10 k weights: the library is mostly code, so compare the weights
    # it stores (the whole model's library is compared in the benchmark).
    weights, fp32_weights = constant_bytes(mod), constant_bytes(fp32_mod)
    # every weight of an int8 contraction is an integer code: int8, or int16 where
    # packed for AVX2's vpmaddwd; the float-computed ones (stem, depthwise) are float32
    codes = weights.get("int8", 0) + weights.get("int16", 0) // 2
    floats = [layer for layer in layers if layer in stems or layer in depthwise]
    assert codes >= sum(graph.params[layer.weight].size for layer in layers
                        if layer not in floats)
    float_bytes = sum(4 * graph.params[layer.weight].size for layer in floats)
    assert sum(weights.values()) - float_bytes < 0.5 * (
        sum(fp32_weights.values()) - float_bytes)
    assert_close_to_onnxruntime(emitted, run_tvm(built, feeds), feeds, 0.03)


def test_minilm_first_layer(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    full = folded(model_zoo.minilm_onnx(tmp_path_factory, dynamo=False))
    graph = cut(full, quantizable_layers(full)[5].key)  # encoder layer 0
    feeds = model_zoo.minilm_inputs()
    layers, ranges = calibrated(graph, feeds)
    kinds = [W8A8, W8A8, W8A8, W4A8, W8A8, W4A16]  # attention, FFN in, weight-only FFN out
    emitted = emit(
        graph, layers, {layer.key: k for layer, k in zip(layers, kinds, strict=True)}, ranges
    )
    built, mod = compile_and_capture(emitted)
    # Q, K and V read one quantized activation: one contraction (quantized.
    # _MergeSharedActivation), then the output projection and the FFN's first layer
    assert len(int8_contractions(mod)) == 3
    assert len(int8_contractions(mod, packed_only=True)) == (3 if HOST_KERNEL else 0)
    fp32, _ = compile_and_capture(graph)
    assert library_bytes(built, tmp_path, "q") < library_bytes(fp32, tmp_path, "f")
    assert_close_to_onnxruntime(emitted, run_tvm(built, feeds), feeds, 0.03)


@pytest.mark.skipif("avx2" not in (cpu_flags() or ()), reason="Zen 3 code needs AVX2")
def test_minilm_first_layer_seven_bit_codes_on_zen3(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """For x86 without VNNI (here: a Zen 3 target) the quantizer emits 7-bit codes
    (``optc.quant.kernels``), every int8 contraction runs on ``vpmaddubsw``, and the
    compiled layer matches onnxruntime on the same QDQ model."""
    zen3 = {"kind": "llvm", "mtriple": host_triple(), "mcpu": "znver3", "num-cores": 2}
    assert int8_code_bits(zen3) == 7
    full = folded(model_zoo.minilm_onnx(tmp_path_factory, dynamo=False))
    graph = cut(full, quantizable_layers(full)[5].key)  # encoder layer 0
    feeds = model_zoo.minilm_inputs()
    layers, ranges = calibrated(graph, feeds)
    emitted = emit(graph, layers, {layer.key: W8A8 for layer in layers}, ranges,
                   int8_code_bits=7)
    codes = [p for name, p in emitted.params.items() if p.dtype == np.int8]
    assert len(codes) == len(layers) and all(c.min() >= -63 and c.max() <= 63 for c in codes)
    built, mod = compile_and_capture(emitted, zen3)
    packed = int8_contractions(mod, packed_only=True)
    assert len(packed) == len(layers) - 2  # Q, K and V merged into one
    assert all("pmadd.ub.sw" in mod[name].script() for name in set(packed))
    assert_close_to_onnxruntime(emitted, run_tvm(built, feeds), feeds, 0.03)


def _ort_qdq(graph: optc.Graph, images: np.ndarray, folder: Path) -> Path:
    """onnxruntime's static QDQ quantization of ``graph`` (per channel), calibrated on
    the first 32 images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter({"input": x[None]} for x in images[:32])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    optc.save_onnx(graph, folder / "fp32.onnx")
    quantize_static(
        str(folder / "fp32.onnx"),
        str(folder / "qdq.onnx"),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
    )
    return folder / "qdq.onnx"


def test_onnxruntime_quantize_static_model_runs_as_int8(digits: tuple, tmp_path: Path) -> None:
    """onnxruntime's own QDQ model (every op quantized, int32 biases) lowers the same way."""
    graph, _, _, images = digits
    qdq = optc.load_onnx(_ort_qdq(graph, images, tmp_path))
    built, mod = compile_and_capture(qdq)
    assert len(int8_contractions(mod)) == (3 if HOST_KERNEL else 4)  # float stem on x86
    for image in images[32:40]:
        feeds = {"input": image[None]}
        assert_close_to_onnxruntime(qdq, run_tvm(built, feeds), feeds, 0.02)


def test_quantize_static_model_keeps_int8_kernels_through_the_default_pipeline(
    digits: tuple, tmp_path: Path
) -> None:
    """``optc compile qdq.onnx`` runs the target's default pipeline first: its
    fold-constants must leave the weights' DequantizeLinear nodes in place (folded, they
    became float32 constants and every kernel was built in float32)."""
    from optc.compiler.api import optimize
    from optc.pipeline import parse_pipeline
    from optc.target import get_target

    graph, _, _, images = digits
    path = _ort_qdq(graph, images, tmp_path)
    qdq = optc.load_onnx(path)
    pipeline = parse_pipeline(get_target("host").default_pipeline)
    optimized = optimize(qdq, pipeline).graph
    assert sum(node.op == "DequantizeLinear" for node in optimized.nodes) >= 4
    built, mod = compile_and_capture(optimized)
    assert len(int8_contractions(mod)) == (3 if HOST_KERNEL else 4)
    for image in images[32:36]:
        feeds = {"input": image[None]}
        assert_close_to_onnxruntime(qdq, run_tvm(built, feeds), feeds, 0.02)
