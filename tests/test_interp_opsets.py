"""Op semantics that changed across opsets (6-21), or where ONNX and torch differ,
checked one node at a time against onnxruntime.

Every case is a single-node model whose inputs are all graph inputs (so onnxruntime
cannot fold anything away) run at the opset named in the case.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import optc
from optc.interp import run_numpy

RNG = np.random.default_rng(0)


def f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def i64(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


class Case(NamedTuple):
    op: str
    opset: int
    inputs: dict[str, np.ndarray | None]  # None: an omitted optional input ('')
    attrs: dict[str, Any]
    outputs: int = 1
    # The expected outputs in numpy, for what onnxruntime does not implement (opset-6
    # broadcasting, even LRN sizes); None: onnxruntime is the reference.
    expect: Callable[..., list[np.ndarray]] | None = None


def lrn(x: np.ndarray, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    """ONNX's LRN formula, summing squares over [c - (size-1)//2, c + ceil((size-1)/2)]."""
    squares = np.zeros_like(x)
    channels = x.shape[1]
    for c in range(channels):
        low, high = max(0, c - (size - 1) // 2), min(channels - 1, c + size // 2)
        squares[:, c] = (x[:, low:high + 1] ** 2).sum(axis=1)
    return x / (bias + alpha / size * squares) ** beta


X3 = f32(2, 3, 4)
X4 = f32(1, 3, 5, 6)
IMG = f32(1, 2, 4, 5)
NEG = np.array([[-7, 7, -3], [5, -6, 4]], np.int32)
DIV = np.array([[2, -2, 2], [-3, 4, -4]], np.int32)

CASES: dict[str, Case] = {
    # softmax family: 2-D coercion before 13, one axis from 13
    "softmax-11-axis1": Case("Softmax", 11, {"x": X3}, {"axis": 1}),
    "softmax-11-default": Case("Softmax", 11, {"x": X3}, {}),
    "softmax-13-axis1": Case("Softmax", 13, {"x": X3}, {"axis": 1}),
    "logsoftmax-9-axis0": Case("LogSoftmax", 9, {"x": X3}, {"axis": 0}),
    "hardmax-11": Case("Hardmax", 11, {"x": X3}, {"axis": 1}),
    # reductions: axes attribute, then input (ReduceSum 13, the others 18)
    "reducesum-11-attr": Case("ReduceSum", 11, {"x": X3}, {"axes": [0, 2], "keepdims": 0}),
    "reducesum-13-input": Case("ReduceSum", 13, {"x": X3, "axes": i64(-1)}, {}),
    "reducesum-13-noop": Case("ReduceSum", 13, {"x": X3, "axes": i64()},
                              {"noop_with_empty_axes": 1}),
    "reducemean-13-attr": Case("ReduceMean", 13, {"x": X3}, {"axes": [1]}),
    "reducemean-18-input": Case("ReduceMean", 18, {"x": X3, "axes": i64(1, 2)}, {}),
    "reducemax-18-all": Case("ReduceMax", 18, {"x": X3}, {"keepdims": 0}),
    "reducel2-18": Case("ReduceL2", 18, {"x": X3, "axes": i64(0)}, {}),
    "reducelogsumexp-13": Case("ReduceLogSumExp", 13, {"x": X3}, {"axes": [2]}),
    "argmax-12-last": Case("ArgMax", 12, {"x": np.array([[1, 3, 3], [2, 2, 0]], np.float32)},
                           {"axis": 1, "select_last_index": 1}),
    # clip: attributes before 11, inputs from 11
    "clip-6-attrs": Case("Clip", 6, {"x": X3}, {"min": -0.5, "max": 0.25}),
    "clip-11-inputs": Case("Clip", 11, {"x": X3, "min": np.float32(-0.5), "max": None}, {}),
    "clip-13-ints": Case("Clip", 13, {"x": NEG, "min": np.int32(-4), "max": np.int32(4)}, {}),
    # slice: attributes before 10; inputs, steps and clamping from 10
    "slice-9-attrs": Case("Slice", 9, {"x": X3}, {"starts": [1, -3], "ends": [99, -1],
                                                  "axes": [1, 2]}),
    "slice-13-steps": Case("Slice", 13, {"x": X3, "starts": i64(-1, 0), "ends": i64(-99, 99),
                                         "axes": i64(2, 1), "steps": i64(-2, 2)}, {}),
    # split: attribute before 13, input from 13, num_outputs (uneven) from 18
    "split-11-attr": Case("Split", 11, {"x": X3}, {"axis": 2, "split": [1, 3]}, 2),
    "split-13-input": Case("Split", 13, {"x": X3, "split": i64(2, 1)}, {"axis": 1}, 2),
    "split-18-uneven": Case("Split", 18, {"x": f32(7, 2)}, {"num_outputs": 3}, 3),
    # (un)squeeze: attribute before 13, input from 13
    "squeeze-11-attr": Case("Squeeze", 11, {"x": f32(1, 3, 1, 2)}, {"axes": [0, -2]}),
    "squeeze-13-all": Case("Squeeze", 13, {"x": f32(1, 3, 1, 2)}, {}),
    "unsqueeze-11-attr": Case("Unsqueeze", 11, {"x": X3}, {"axes": [0, -1]}),
    "unsqueeze-13-input": Case("Unsqueeze", 13, {"x": X3, "axes": i64(3, 1)}, {}),
    # pad: attributes before 11, inputs from 11, axes from 18, modes
    "pad-7-attrs": Case("Pad", 7, {"x": IMG}, {"pads": [0, 0, 1, 2, 0, 0, 2, 1],
                                                "value": 1.5}),
    "pad-11-negative": Case("Pad", 11, {"x": IMG, "pads": i64(0, 0, -1, 2, 0, 0, 1, -2)}, {}),
    "pad-13-reflect": Case("Pad", 13, {"x": IMG, "pads": i64(0, 0, 2, 3, 0, 0, 1, 3)},
                           {"mode": "reflect"}),
    "pad-18-edge-axes": Case("Pad", 18, {"x": IMG, "pads": i64(2, 1, 3, 0), "value": None,
                                         "axes": i64(-1, 2)}, {"mode": "edge"}),
    "pad-19-wrap": Case("Pad", 19, {"x": IMG, "pads": i64(0, 0, 1, 2, 0, 0, 2, 1)},
                        {"mode": "wrap"}),
    # resampling: Upsample (scales attribute, then input), Resize 10 / 11+
    "upsample-7-nearest": Case("Upsample", 7, {"x": IMG}, {"scales": [1.0, 1.0, 2.0, 3.0]}),
    "upsample-9-linear": Case("Upsample", 9, {"x": IMG, "scales": np.array(
        [1, 1, 2, 1.5], np.float32)}, {"mode": "linear"}),
    "resize-10-nearest": Case("Resize", 10, {"x": IMG, "scales": np.array(
        [1, 1, 0.5, 1.5], np.float32)}, {"mode": "nearest"}),
    "resize-13-cubic": Case("Resize", 13, {"x": IMG, "roi": None, "scales": np.array(
        [1, 1, 1.5, 0.6], np.float32)}, {"mode": "cubic"}),
    "resize-18-linear-antialias": Case("Resize", 18, {"x": X4, "roi": None, "scales": None,
                                                      "sizes": i64(1, 3, 3, 2)},
                                       {"mode": "linear", "antialias": 1}),
    "resize-19-nearest-sizes": Case("Resize", 19, {"x": IMG, "roi": None, "scales": None,
                                                   "sizes": i64(1, 2, 7, 3)},
                                    {"mode": "nearest", "nearest_mode": "floor",
                                     "coordinate_transformation_mode": "asymmetric"}),
    # normalization / dropout / LRN (ONNX divides alpha by size; even size is asymmetric)
    "batchnorm-7-spatial0": Case("BatchNormalization", 7, {
        "x": IMG, "s": f32(2, 4, 5), "b": f32(2, 4, 5), "m": f32(2, 4, 5),
        "v": np.abs(f32(2, 4, 5)) + 0.5}, {"spatial": 0, "epsilon": 1e-3}),
    "batchnorm-15": Case("BatchNormalization", 15, {
        "x": IMG, "s": f32(2), "b": f32(2), "m": f32(2), "v": np.abs(f32(2)) + 0.5}, {}),
    # (onnxruntime leaves Dropout-7's float mask all zero; optc says every element is kept)
    "dropout-7": Case("Dropout", 7, {"x": X3}, {"ratio": 0.3}),
    "dropout-12-ratio": Case("Dropout", 12, {"x": X3, "ratio": np.float32(0.2)}, {}, 2),
    "lrn-even-size": Case("LRN", 13, {"x": X4}, {"size": 4, "alpha": 0.3, "beta": 0.6,
                                                 "bias": 2.0},
                          expect=lambda x: [lrn(x, 4, 0.3, 0.6, 2.0)]),
    "lrn-odd-size": Case("LRN", 13, {"x": X4}, {"size": 3, "alpha": 0.3, "beta": 0.6,
                                                "bias": 2.0}),
    "layernorm-17-axis1": Case("LayerNormalization", 17, {"x": X3, "s": f32(3, 4),
                                                          "b": f32(3, 4)}, {"axis": 1}, 3),
    "instancenorm-6": Case("InstanceNormalization", 6, {"x": IMG, "s": f32(2), "b": f32(2)},
                           {}),
    # gemm / broadcasting before opset 7
    "gemm-6-broadcast": Case("Gemm", 6, {"a": f32(4, 3), "b": f32(5, 4), "c": f32(5)},
                             {"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0,
                              "broadcast": 1},
                             expect=lambda a, b, c: [0.5 * a.T @ b.T + 2.0 * c]),
    "gemm-13-no-c": Case("Gemm", 13, {"a": f32(2, 3), "b": f32(3, 4)}, {"alpha": 3.0}),
    "add-6-axis": Case("Add", 6, {"a": X3, "b": f32(3)}, {"broadcast": 1, "axis": 1},
                       expect=lambda a, b: [a + b[:, None]]),
    "mul-6-suffix": Case("Mul", 6, {"a": X3, "b": f32(4)}, {"broadcast": 1},
                         expect=lambda a, b: [a * b]),
    # integer arithmetic, casts, indexing
    "div-13-int-truncates": Case("Div", 13, {"a": NEG, "b": DIV}, {}),
    "mod-13-int": Case("Mod", 13, {"a": NEG, "b": DIV}, {}),
    "mod-13-fmod": Case("Mod", 13, {"a": NEG, "b": DIV}, {"fmod": 1}),
    "pow-15-int-exponent": Case("Pow", 15, {"a": X3, "b": np.int64(3)}, {}),
    "cast-13-to-bool": Case("Cast", 13, {"x": np.array([0.0, -0.5, 2.0, np.nan], np.float32)},
                            {"to": 9}),
    "cast-13-float-to-int": Case("Cast", 13, {"x": np.array([-2.7, 2.7, 0.5], np.float32)},
                                 {"to": 6}),
    "gather-13-negative": Case("Gather", 13, {"x": X3, "i": i64(-1, 0, -2)}, {"axis": 2}),
    "gatherelements-13": Case("GatherElements", 13, {"x": X3, "i": np.array(
        [[[0], [-1], [2]], [[1], [0], [-3]]], np.int64)}, {"axis": 1}),
    "gathernd-13-batch": Case("GatherND", 13, {"x": X3, "i": np.array(
        [[[1, 2]], [[-1, 0]]], np.int64)}, {"batch_dims": 1}),
    "scatternd-16-add": Case("ScatterND", 16, {"x": X3, "i": np.array([[0, 1], [0, 1]],
                                                                      np.int64),
                                               "u": f32(2, 4)}, {"reduction": "add"}),
    "where-16-broadcast": Case("Where", 16, {"c": np.array([[True], [False]]), "a": f32(3),
                                             "b": f32(2, 1)}, {}),
    "expand-13-both-ways": Case("Expand", 13, {"x": f32(3, 1), "s": i64(2, 1, 4)}, {}),
    "range-11-float": Case("Range", 11, {"s": np.float32(0.5), "l": np.float32(3.2),
                                         "d": np.float32(0.7)}, {}),
    "flatten-13-axis0": Case("Flatten", 13, {"x": X3}, {"axis": 0}),
    "flatten-13-negative": Case("Flatten", 13, {"x": X3}, {"axis": -1}),
    "reshape-14-zero-copy": Case("Reshape", 14, {"x": X3, "s": i64(0, -1)}, {}),
    "reshape-14-allowzero": Case("Reshape", 14, {"x": f32(0, 3), "s": i64(3, 0)},
                                 {"allowzero": 1}),
    "topk-9-attr": Case("TopK", 9, {"x": X3}, {"k": 2}, 2),
    "topk-11-smallest": Case("TopK", 11, {"x": X3, "k": i64(3)},
                             {"largest": 0, "axis": 1}, 2),
    "cumsum-14-exclusive-reverse": Case("CumSum", 14, {"x": X3, "a": np.int64(2)},
                                        {"exclusive": 1, "reverse": 1}),
    "onehot-11-negative": Case("OneHot", 11, {"i": i64(0, -1, 2), "d": np.int64(4),
                                              "v": np.array([-1, 5], np.float32)},
                               {"axis": 0}),
    "erf-13": Case("Erf", 13, {"x": X3}, {}),
    "prelu-6-channel": Case("PRelu", 6, {"x": IMG, "s": np.array([0.1, -2], np.float32)}, {},
                            expect=lambda x, s: [np.where(x < 0, x * s[:, None, None], x)]),
    "prelu-9-numpy": Case("PRelu", 9, {"x": IMG, "s": f32(5)}, {}),
    "selu-6": Case("Selu", 6, {"x": X3}, {"alpha": 1.5, "gamma": 0.9}),
    "hardswish-14": Case("HardSwish", 14, {"x": X3 * 4}, {}),
    "gelu-20-tanh": Case("Gelu", 20, {"x": X3}, {"approximate": "tanh"}),
    # pools and convolutions with ONNX-only padding rules
    "maxpool-12-indices": Case("MaxPool", 12, {"x": X4},
                               {"kernel_shape": [2, 3], "strides": [2, 2], "pads": [0, 1, 1, 0],
                                "ceil_mode": 1, "storage_order": 1}, 2),
    "maxpool-10-dilated": Case("MaxPool", 10, {"x": X4}, {"kernel_shape": [2, 2],
                                                          "dilations": [2, 1]}),
    "avgpool-19-ceil-pads": Case("AveragePool", 19, {"x": X4},
                                 {"kernel_shape": [3, 2], "strides": [2, 2],
                                  "pads": [1, 0, 0, 1], "ceil_mode": 1,
                                  "count_include_pad": 1}),
    "avgpool-7-same-lower": Case("AveragePool", 7, {"x": X4},
                                 {"kernel_shape": [2, 3], "auto_pad": "SAME_LOWER"}),
    "lppool-18": Case("LpPool", 18, {"x": X4}, {"kernel_shape": [2, 2], "p": 3,
                                                "pads": [1, 0, 0, 1]}),
    "conv-11-same-upper": Case("Conv", 11, {"x": X4, "w": f32(4, 3, 2, 3)},
                               {"auto_pad": "SAME_UPPER", "strides": [2, 1]}),
    "conv-11-asymmetric-group": Case("Conv", 11, {"x": f32(1, 4, 6, 5), "w": f32(6, 2, 3, 2),
                                                  "b": f32(6)},
                                     {"pads": [0, 1, 2, 0], "group": 2, "dilations": [1, 2]}),
    "convtranspose-11-output-shape": Case("ConvTranspose", 11, {
        "x": f32(1, 2, 3, 4), "w": f32(2, 3, 3, 3)},
        {"strides": [2, 3], "output_shape": [6, 11]}),
    "convtranspose-11-pads": Case("ConvTranspose", 11, {"x": f32(1, 2, 3, 4),
                                                        "w": f32(2, 2, 2, 3), "b": f32(4)},
                                  {"strides": [2, 2], "pads": [1, 0, 0, 2], "group": 2,
                                   "output_padding": [1, 0]}),
    # recurrent layers
    "lstm-14-bidirectional": Case("LSTM", 14, {
        "x": f32(4, 2, 3), "w": f32(2, 8, 3), "r": f32(2, 8, 2), "b": f32(2, 16),
        "lens": np.array([4, 2], np.int32), "h0": f32(2, 2, 2), "c0": f32(2, 2, 2),
        "p": f32(2, 6)}, {"hidden_size": 2, "direction": "bidirectional", "clip": 2.0}, 3),
    "gru-14-linear-before-reset": Case("GRU", 14, {
        "x": f32(3, 2, 3), "w": f32(1, 9, 3), "r": f32(1, 9, 3), "b": f32(1, 18)},
        {"hidden_size": 3, "linear_before_reset": 1}, 2),
    "rnn-7-reverse-relu": Case("RNN", 7, {"x": f32(5, 1, 2), "w": f32(1, 3, 2),
                                          "r": f32(1, 3, 3)},
                               {"hidden_size": 3, "direction": "reverse",
                                "activations": ["Relu"]}, 2),
    "depthtospace-13-crd": Case("DepthToSpace", 13, {"x": f32(1, 8, 2, 3)},
                                {"blocksize": 2, "mode": "CRD"}),
    "quantize-13-axis": Case("QuantizeLinear", 13, {"x": X4, "s": np.array(
        [0.01, 0.02, 0.05], np.float32), "z": np.array([0, 10, -5], np.int8)}, {"axis": 1}),
    "dequantize-13": Case("DequantizeLinear", 13, {"x": np.array([0, 3, 255], np.uint8),
                                                   "s": np.float32(0.5),
                                                   "z": np.uint8(128)}, {}),
}


def single_node_model(case: Case, results: list[np.ndarray] | None = None,
                      ) -> onnx.ModelProto:
    """The case as a model; outputs typed from ``results`` (rank only) when given."""
    names = [name if value is not None else "" for name, value in case.inputs.items()]
    present = {k: np.asarray(v) for k, v in case.inputs.items() if v is not None}
    outputs = [f"out{i}" for i in range(case.outputs)]
    node = helper.make_node(case.op, names, outputs, **case.attrs)
    inputs = [helper.make_tensor_value_info(
        name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape)
        for name, value in present.items()]
    if results is None:
        declared = [helper.make_empty_tensor_value_info(o) for o in outputs]
    else:
        declared = [helper.make_tensor_value_info(
            o, helper.np_dtype_to_tensor_dtype(r.dtype), [None] * r.ndim)
            for o, r in zip(outputs, results, strict=True)]
    graph = helper.make_graph([node], case.op, inputs, declared)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)])
    model.ir_version = 7  # an IR version every opset here is valid with
    return model


def reference_outputs(case: Case, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    if case.expect is not None:
        return [np.asarray(r, dtype=next(iter(feeds.values())).dtype)
                for r in case.expect(*feeds.values())]
    session = ort.InferenceSession(single_node_model(case).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@pytest.mark.parametrize("case_id", list(CASES))
def test_matches_onnxruntime(case_id: str) -> None:
    case = CASES[case_id]
    feeds = {k: np.asarray(v) for k, v in case.inputs.items() if v is not None}
    want = reference_outputs(case, feeds)
    got = run_numpy(optc.from_onnx(single_node_model(case, want)), feeds)
    for index, expected in enumerate(want):
        actual = got[f"out{index}"]
        assert actual.shape == expected.shape, f"output {index}"
        assert actual.dtype == expected.dtype, f"output {index}"
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6,
                                   err_msg=f"{case_id} output {index}")


def test_cases_span_the_supported_opsets() -> None:
    opsets = {case.opset for case in CASES.values()}
    assert min(opsets) == 6 and max(opsets) >= 20
