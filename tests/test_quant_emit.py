"""Emission of a precision assignment as QDQ / Cast ops: golden IR, onnxruntime vs the
reference interpreter vs TVM, smaller params, shared activation quantizers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from pass_support import golden, onnxruntime_runner, run_onnxruntime, run_reference

import optc
from optc.ir import Precision
from optc.ir.graph import Graph
from optc.pipeline import PassContext
from optc.quant import FP16, Calibration, LayerPrecision
from optc.quant.emit import emit
from optc.quant.evaluate import Evaluator
from optc.quant.layers import Layer, neighbors, quantizable_layers
from optc.quant.numerics import dequantize_weight, quantize_weight

MODELS = Path(__file__).resolve().parent.parent / "examples" / "models"
RANGES = {"x": (-1.0, 2.0), "f": (0.0, 3.0)}
GOLDEN_CASES = {
    "qdq": {"c": LayerPrecision(8, 8), "y": LayerPrecision(4, 8)},
    "float16": {"c": FP16, "y": LayerPrecision(4, 16)},
}
ALL_KINDS = (LayerPrecision(8, 8), LayerPrecision(4, 8), FP16, LayerPrecision(4, 16))


@pytest.mark.parametrize("case", list(GOLDEN_CASES))
def test_golden(case: str) -> None:
    before, after = golden("mixed_precision", case)
    graph = optc.parse_graph(before)
    emitted = emit(graph, quantizable_layers(graph), GOLDEN_CASES[case], RANGES)
    optc.verify(emitted, types=True)
    assert optc.print_graph(emitted) == after


@pytest.mark.parametrize("case", list(GOLDEN_CASES))
def test_golden_runs_alike_in_onnxruntime_and_interpreter(case: str) -> None:
    graph = optc.parse_graph(golden("mixed_precision", case)[0])
    emitted = emit(graph, quantizable_layers(graph), GOLDEN_CASES[case], RANGES)
    feeds = {"x": np.random.default_rng(1).uniform(-1, 2, (1, 2, 2, 2)).astype(np.float32)}
    want, got = run_onnxruntime(emitted, feeds)["y"], run_reference(emitted, feeds)["y"]
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)
    # and close to the float model: these are small, well-scaled weights
    np.testing.assert_allclose(got, run_reference(graph, feeds)["y"], rtol=0.1, atol=0.1)


def test_all_fp32_is_the_same_graph() -> None:
    graph = optc.parse_graph(golden("mixed_precision", "qdq")[0])
    assert emit(graph, quantizable_layers(graph), {}, RANGES) is graph


def test_weight_codes_and_scales() -> None:
    weight = np.random.default_rng(0).normal(size=(6, 3, 3, 3)).astype(np.float32)
    for bits, qmax in ((8, 127), (4, 7)):
        q, scale = quantize_weight(weight, bits, axis=0)
        assert q.dtype == np.int8 and scale.shape == (6,)
        assert int(np.abs(q).max()) <= qmax
        error = np.abs(dequantize_weight(q, scale, 0) - weight)
        # within half a step, except values clipped by the MSE-chosen range
        step = scale.reshape(6, 1, 1, 1)
        unclipped = np.abs(weight) <= qmax * step
        assert np.all(error[unclipped] <= step.repeat(27).reshape(6, 3, 3, 3)[unclipped] / 2
                      + 1e-7)


# -- the bundled digits CNN ----------------------------------------------------------------

@pytest.fixture(scope="module")
def digits() -> tuple[Graph, tuple[Layer, ...], dict[str, tuple[float, float]], np.ndarray]:
    from optc.passes.fold_batchnorm import FoldBatchNorm

    graph = FoldBatchNorm().run(optc.load_onnx(MODELS / "digits_cnn.onnx"), PassContext())
    images = np.load(MODELS / "digits_test.npz")["input"]
    layers = quantizable_layers(graph)
    evaluator = Evaluator(graph, Calibration({"input": images[:64]}))
    ranges = evaluator.value_ranges(graph, [layer.activation for layer in layers])
    return graph, layers, ranges, images


def test_digits_layers_and_neighbors(digits: tuple) -> None:
    graph, layers, _, _ = digits
    assert [layer.op for layer in layers] == ["Conv", "Conv", "Conv", "Gemm"]
    chain = [layer.key for layer in layers]
    found = neighbors(graph, layers)
    assert found[chain[0]] == (chain[1],)
    assert found[chain[1]] == (chain[0], chain[2])  # through Relu and MaxPool
    assert found[chain[3]] == (chain[2],)           # through pooling and Flatten


@pytest.mark.parametrize("rotation", range(4))
def test_digits_mixed_graph_matches_onnxruntime(digits: tuple, rotation: int) -> None:
    graph, layers, ranges, images = digits
    kinds = ALL_KINDS[rotation:] + ALL_KINDS[:rotation]
    assignment = {layer.key: kind for layer, kind in zip(layers, kinds, strict=True)}
    emitted = emit(graph, layers, assignment, ranges)
    optc.verify(emitted, types=True)
    batch = images[:32]
    session = onnxruntime_runner(emitted)  # the model has batch 1: one sample per call
    ort = np.concatenate([session({"input": x[None]})["logits"] for x in batch])
    ref = np.concatenate([run_reference(emitted, {"input": x[None]})["logits"] for x in batch])
    # fp16 layers round differently in the two runtimes; a QDQ input that lands on a
    # rounding boundary may move by one step: compare at the scale of the logits
    scale = float(np.abs(ref).max())
    np.testing.assert_allclose(ort, ref, rtol=0, atol=0.01 * scale)
    assert np.mean(ort.argmax(1) == ref.argmax(1)) == 1.0


def test_digits_params_shrink_and_are_annotated(digits: tuple) -> None:
    graph, layers, ranges, _ = digits
    w8 = emit(graph, layers, {layer.key: LayerPrecision(8, 8) for layer in layers}, ranges)
    half = emit(graph, layers, {layer.key: FP16 for layer in layers}, ranges)
    weights = sum(graph.params[layer.weight].nbytes for layer in layers)
    # int8 codes are a quarter of fp32; scales, zero points and biases stay small
    assert graph.param_bytes() - w8.param_bytes() > 0.7 * weights
    assert graph.param_bytes() - half.param_bytes() > 0.45 * weights
    assert not any(layer.weight in w8.params for layer in layers)  # originals dropped
    for layer in layers:
        node = w8.producer(layer.key)
        assert Precision(8, "int", per_channel=True) in node.annotations
        weight_value = w8.value(node.inputs[1])
        assert Precision(8, "int", per_channel=True) in weight_value.annotations
    assert sum(1 for n in w8.nodes if n.op == "QuantizeLinear") == len(layers)


def test_shared_activation_is_quantized_once() -> None:
    graph = optc.parse_graph("""graph twin {
      opset "" = 17
      input %x: float32[1,4]
      param %a: float32[4,2] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
      param %b: float32[4,2] = [-1.0, 0.5, 0.25, 2.0, 1.5, -3.0, 0.75, 1.0]
      %p: float32[1,2] = MatMul(%x, %a)
      %q: float32[1,2] = MatMul(%x, %b)
      %y: float32[1,2] = Add(%p, %q)
      output %y: float32[1,2]
    }""")
    layers = quantizable_layers(graph)
    assert [layer.channel_axis for layer in layers] == [1, 1]
    assignment = {layer.key: LayerPrecision(8, 8) for layer in layers}
    emitted = emit(graph, layers, assignment, {"x": (-1.0, 1.0)})
    optc.verify(emitted, types=True)
    assert sum(1 for n in emitted.nodes if n.op == "QuantizeLinear") == 1
    feeds = {"x": np.array([[0.5, -0.25, 1.0, -1.0]], np.float32)}
    np.testing.assert_allclose(run_reference(emitted, feeds)["y"],
                               run_onnxruntime(emitted, feeds)["y"], rtol=1e-5, atol=1e-5)


def test_tvm_imports_and_runs_the_mixed_graph(digits: tuple) -> None:
    tvm = pytest.importorskip("tvm")
    from tvm import relax

    from optc.codegen.build import build

    graph, layers, ranges, images = digits
    assignment = {layer.key: kind for layer, kind in zip(layers, ALL_KINDS, strict=True)}
    emitted = emit(graph, layers, assignment, ranges)
    machine = relax.VirtualMachine(build(emitted, {"kind": "llvm"}).executable, tvm.cpu())
    x = images[:1]
    got = machine["main"](tvm.runtime.tensor(x, tvm.cpu())).numpy()
    want = run_reference(emitted, {"input": x})["logits"]
    np.testing.assert_allclose(got, want, rtol=0, atol=0.01 * float(np.abs(want).max()))


def test_int8_storage_of_4bit_codes_is_valid_onnx(digits: tuple) -> None:
    graph, layers, ranges, _ = digits
    emitted = emit(graph, layers, {layer.key: LayerPrecision(4, 16) for layer in layers},
                   ranges)
    model = optc.to_onnx(emitted)
    onnx.checker.check_model(model, full_check=True)
    codes = [emitted.params[n.inputs[0]] for n in emitted.nodes
             if n.op == "DequantizeLinear" and n.inputs[0] in emitted.params]
    assert codes and all(c.dtype == np.int8 and np.abs(c).max() <= 7 for c in codes)
