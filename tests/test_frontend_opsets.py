"""Opsets 13-21: ops whose signatures changed (attribute -> input) round-trip and run the same."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import optc
from optc.ir import parse_graph, print_graph, structurally_equal, tensor_store, verify

X = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)


def const(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def model_for(opset: int) -> onnx.ModelProto:
    """x -> ReduceSum/ReduceMean -> Squeeze -> Split -> Concat, spelled for ``opset``.

    ReduceSum and Squeeze take axes as an input from 13; ReduceMean only from 18;
    Split takes ``split`` as an input from 13 and has ``num_outputs`` from 18.
    """
    inits = [const("axes1", [1]), const("axes2", [2])]
    nodes = [helper.make_node("ReduceSum", ["x", "axes1"], ["s"], keepdims=1)]
    if opset >= 18:
        nodes.append(helper.make_node("ReduceMean", ["x", "axes2"], ["m"], keepdims=0))
    else:
        nodes.append(helper.make_node("ReduceMean", ["x"], ["m"], axes=[2], keepdims=0))
    nodes.append(helper.make_node("Squeeze", ["s", "axes1"], ["sq"]))  # (2, 4)
    if opset >= 18:
        nodes.append(helper.make_node("Split", ["sq"], ["a", "b"], axis=1, num_outputs=2))
    else:
        inits.append(const("halves", [2, 2]))
        nodes.append(helper.make_node("Split", ["sq", "halves"], ["a", "b"], axis=1))
    nodes.append(helper.make_node("Concat", ["b", "a", "m"], ["y"], axis=1))
    graph = helper.make_graph(nodes, f"opset{opset}",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 7])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def run(model: onnx.ModelProto) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString()).run(None, {"x": X})[0]


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_round_trip_runs_the_same(opset: int) -> None:
    model = model_for(opset)
    graph = optc.from_onnx(model)
    assert graph.opsets == {"": opset}
    verify(graph, types=True)
    text = print_graph(graph)
    assert f'opset "" = {opset}' in text
    reparsed = parse_graph(text, tensors=tensor_store(graph))
    assert structurally_equal(reparsed, graph)
    exported = optc.to_onnx(reparsed)
    assert [(o.domain, o.version) for o in exported.opset_import] == [("", opset)]
    onnx.checker.check_model(exported, full_check=True)
    want = run(model)
    np.testing.assert_array_equal(run(exported), want)
    # The reference, independent of ONNX: sum over axis 1, mean over axis 2, halves swapped.
    summed = X.sum(axis=1)
    expected = np.concatenate([summed[:, 2:], summed[:, :2], X.mean(axis=2)], axis=1)
    np.testing.assert_allclose(want, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_inference_types_every_value(opset: int) -> None:
    graph = optc.from_onnx(model_for(opset))
    shapes = {out.name: out.shape for node in graph.nodes for out in node.outputs}
    assert shapes["s"] == (2, 1, 4) and shapes["sq"] == (2, 4) and shapes["m"] == (2, 3)
    assert shapes["a"] == shapes["b"] == (2, 2)
    assert all(out.dtype == "float32" for node in graph.nodes for out in node.outputs)


def test_ir_version_follows_the_opset() -> None:
    assert optc.to_onnx(optc.from_onnx(model_for(13))).ir_version >= 7
    assert optc.to_onnx(optc.from_onnx(model_for(21))).ir_version >= 10
