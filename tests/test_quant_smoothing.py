"""Outlier channels of a matmul input are divided out before the activation is quantized.

MiniLM-L6's encoder layer 0 feeds its FFN output matmul a GELU activation with one
channel near 25 where 99 % of them stay under ~4: a per-tensor uint8 grid over that
range left most channels a handful of codes, and the layer had to stay fp32 for the
model to keep 0.99 cosine. ``optc.quant`` divides such channels down to the 99th
percentile of the channel peaks and multiplies the weight rows instead (the same
product), which must (a) be found on the real activation, (b) leave the float product
unchanged, (c) cut the layer's quantization error, and (d) still compile to a packed
int8 contraction matching onnxruntime on the same QDQ model.
"""

from __future__ import annotations

import model_zoo
import numpy as np
import pytest
from pass_support import onnxruntime_runner

import optc
from optc.ir.graph import Graph, Value
from optc.passes.eliminate_dead_code import EliminateDeadCode
from optc.pipeline import PassContext, parse_pipeline
from optc.quant import Calibration, LayerPrecision
from optc.quant.emit import emit, takes_smoothing
from optc.quant.evaluate import Evaluator
from optc.quant.layers import quantizable_layers
from optc.quant.numerics import SMOOTH_MIN_RATIO, outlier_smoothing, smoothed_range
from optc.quant.plan import activation_ranges

FOLD = "fold-constants,fold-batchnorm,eliminate-dead-code"
W8A8 = LayerPrecision(8, 8)
FFN_OUT = 5  # encoder layer 0: query, key, value, attention output, FFN in, FFN out


@pytest.fixture(scope="module")
def layer0(tmp_path_factory: pytest.TempPathFactory) -> tuple[Graph, dict[str, np.ndarray]]:
    """MiniLM-L6 up to encoder layer 0's FFN output matmul, and a real sentence."""
    full = parse_pipeline(FOLD).run(
        optc.load_onnx(model_zoo.minilm_onnx(tmp_path_factory, dynamo=False))).graph
    key = quantizable_layers(full)[FFN_OUT].key
    value = full.value(key)
    kept = full.replace(outputs=(Value(key, value.dtype, value.shape),))
    return EliminateDeadCode().run(kept, PassContext()), model_zoo.minilm_inputs()


def test_only_outlier_channels_are_divided() -> None:
    peaks = np.linspace(0.5, 1.0, 200)
    assert outlier_smoothing(-peaks, peaks) is None  # no channel stands out
    peaks[17] = 10.0
    divisors = outlier_smoothing(-0.1 * peaks, peaks)
    assert divisors is not None and divisors.dtype == np.float32
    limit = float(np.percentile(peaks, 99))
    assert divisors[17] == pytest.approx(10.0 / limit)
    assert np.all(divisors[peaks <= limit] == 1.0)
    low, high = smoothed_range(-0.1 * peaks, peaks, divisors)
    assert high == pytest.approx(limit) and low == pytest.approx(-0.1 * limit)


def test_minilm_ffn_outlier_is_smoothed_exactly_and_cuts_the_error(
    layer0: tuple[Graph, dict[str, np.ndarray]],
) -> None:
    graph, feeds = layer0
    layers = quantizable_layers(graph)
    evaluator = Evaluator(graph, Calibration(dict(feeds)))
    ranges, smoothing = activation_ranges(evaluator, graph, layers)
    plain, none = activation_ranges(evaluator, graph, layers, smooth=False)
    ffn = layers[FFN_OUT]
    assert not none and ffn.activation in smoothing  # the GELU output
    # (LayerNorm outputs have outlier channels too; every reader takes the divisors)
    assert all(takes_smoothing(graph, layer, smoothing[layer.activation].size)
               for layer in layers if layer.activation in smoothing)
    divisors = smoothing[ffn.activation]
    assert divisors.max() >= SMOOTH_MIN_RATIO and np.count_nonzero(divisors > 1) < 20
    assert ranges[ffn.activation][1] < plain[ffn.activation][1] / SMOOTH_MIN_RATIO

    only_ffn = {ffn.key: W8A8}
    run = onnxruntime_runner
    want = run(graph)(feeds)[ffn.key]
    # the division and the multiplied weight rows: the same float product
    x = run(graph.replace(outputs=(graph.value(ffn.activation),)))(feeds)[ffn.activation]
    weight = graph.params[ffn.weight]
    np.testing.assert_allclose((x / divisors) @ (weight * divisors[:, None]), x @ weight,
                               rtol=1e-4, atol=1e-4)
    smoothed = emit(graph, layers, only_ffn, ranges, smoothing=smoothing)
    assert [n.op for n in smoothed.nodes].count("Mul") == \
        [n.op for n in graph.nodes].count("Mul") + 1
    err = {}  # relative RMS error of the layer's output, 7-bit codes (AVX2 targets)
    for name, (r, s) in {"plain": (plain, None), "smoothed": (ranges, smoothing)}.items():
        got = run(emit(graph, layers, only_ffn, r, int8_code_bits=7, smoothing=s))(feeds)
        err[name] = float(np.sqrt(np.mean((got[ffn.key] - want) ** 2) / np.mean(want ** 2)))
    assert err["smoothed"] < 0.5 * err["plain"], err  # measured 0.0063 against 0.0234


@pytest.mark.heavy  # a TVM build of the layer: ~25 s
def test_smoothed_layer_runs_as_a_packed_int8_contraction(
    layer0: tuple[Graph, dict[str, np.ndarray]],
) -> None:
    """The division fuses into the producer's epilogue ahead of the quantize; the layer
    is still a uint8 x int8 contraction and matches onnxruntime on the same QDQ model."""
    pytest.importorskip("tvm")
    from test_codegen_quantized import compile_and_capture, int8_contractions, run_tvm

    graph, feeds = layer0
    layers = quantizable_layers(graph)
    ranges, smoothing = activation_ranges(
        Evaluator(graph, Calibration(dict(feeds))), graph, layers)
    emitted = emit(graph, layers, {layer.key: W8A8 for layer in layers}, ranges,
                   smoothing=smoothing)
    built, mod = compile_and_capture(emitted)
    # Q, K and V read the same smoothed, quantized activation: one merged contraction
    assert len(int8_contractions(mod)) == len(layers) - 2
    got = run_tvm(built, feeds)
    want = onnxruntime_runner(emitted)(feeds)[emitted.output_names[0]]
    np.testing.assert_allclose(got, want, rtol=0, atol=0.03 * float(np.abs(want).max()))
