"""optc.interp's public API: feeds, params, outputs, errors, single nodes, control flow."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import optc
from optc.errors import InvalidModelError, UnknownNameError, UnsupportedOpError, UserInputError
from optc.interp import evaluate_node, has_rule, run, run_numpy, supported_ops
from optc.ir import Graph, Node, Value

F32 = TensorProto.FLOAT


def onnx_graph(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
               outputs: list[onnx.ValueInfoProto], opset: int = 17,
               initializers: list[onnx.TensorProto] | None = None) -> Graph:
    model = helper.make_model(
        helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers or []),
        opset_imports=[helper.make_opsetid("", opset)])
    return optc.from_onnx(model)


def linear_relu() -> Graph:
    """y = relu(x @ w + b), z = y * 2, with w and b as params."""
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(3, 2) - 2.5, "w")
    b = numpy_helper.from_array(np.array([0.5, -1.0], np.float32), "b")
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw"]),
             helper.make_node("Add", ["xw", "b"], ["pre"]),
             helper.make_node("Relu", ["pre"], ["y"]),
             helper.make_node("Mul", ["y", "two"], ["z"])]
    return onnx_graph(nodes, [helper.make_tensor_value_info("x", F32, [2, 3])],
                      [helper.make_tensor_value_info("z", F32, [2, 2])],
                      initializers=[w, b, two])


X = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]], np.float32)


def expected_z(w: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum(X @ w + b, 0) * 2


def test_run_returns_graph_outputs_as_tensors() -> None:
    graph = linear_relu()
    result = run(graph, {"x": X})
    assert list(result) == ["z"] and isinstance(result["z"], torch.Tensor)
    np.testing.assert_allclose(result["z"].numpy(),
                               expected_z(graph.params["w"], graph.params["b"]), rtol=1e-6)


def test_outputs_may_name_intermediate_values() -> None:
    graph = linear_relu()
    result = run_numpy(graph, {"x": X}) | {
        k: v.numpy() for k, v in run(graph, {"x": X}, outputs=["pre", "y"]).items()}
    np.testing.assert_allclose(result["pre"], X @ graph.params["w"] + graph.params["b"],
                               rtol=1e-6)
    np.testing.assert_array_equal(result["y"], np.maximum(result["pre"], 0))


def test_param_override_is_used_and_differentiable() -> None:
    graph = linear_relu()
    w = torch.ones(3, 2, requires_grad=True)
    z = run(graph, {"x": X}, params={"w": w})["z"]
    np.testing.assert_allclose(z.detach().numpy(), expected_z(np.ones((3, 2)),
                                                              graph.params["b"]), rtol=1e-6)
    (grad,) = torch.autograd.grad(z.sum(), w)
    active = (X @ np.ones((3, 2)) + graph.params["b"]) > 0  # relu passes these
    np.testing.assert_allclose(grad.numpy(), 2 * X.T @ active.astype(np.float32), rtol=1e-6)


def test_only_nodes_feeding_the_requested_outputs_run() -> None:
    nodes = [helper.make_node("Relu", ["a"], ["ra"]),
             helper.make_node("Neg", ["b"], ["nb"])]
    graph = onnx_graph(nodes, [helper.make_tensor_value_info(n, F32, [2]) for n in "ab"],
                       [helper.make_tensor_value_info(n, F32, [2]) for n in ("ra", "nb")])
    # "b" is not fed: fine, as long as nothing asked for needs it.
    result = run(graph, {"a": np.array([-1.0, 2.0], np.float32)}, outputs=["ra"])
    assert result["ra"].tolist() == [0.0, 2.0]
    with pytest.raises(UserInputError, match="'b'"):
        run(graph, {"a": np.array([-1.0, 2.0], np.float32)})


def test_results_never_alias_graph_params() -> None:
    graph = onnx_graph([helper.make_node("Identity", ["w"], ["y"])], [],
                       [helper.make_tensor_value_info("y", F32, [2])],
                       initializers=[numpy_helper.from_array(np.ones(2, np.float32), "w")])
    y = run(graph, {})["y"]
    y += 1  # the caller owns the result; the graph's read-only param must not change
    assert graph.params["w"].tolist() == [1.0, 1.0]


@pytest.mark.parametrize(("feeds", "kwargs", "error", "match"), [
    ({"x": X, "q": X}, {}, UnknownNameError, "'q'"),
    ({}, {}, UserInputError, "'x' .* not fed"),
    ({"x": X.astype(np.float64)}, {}, UserInputError, "float64, the graph expects float32"),
    ({"x": X[:1]}, {}, UserInputError, r"shape \(1, 3\)"),
    ({"x": X}, {"outputs": ["nope"]}, UnknownNameError, "'nope'"),
    ({"x": X}, {"params": {"nope": torch.ones(1)}}, UnknownNameError, "nope"),
])
def test_bad_calls_raise_one_line_user_errors(feeds: dict, kwargs: dict, error: type,
                                              match: str) -> None:
    with pytest.raises(error, match=match):
        run(linear_relu(), feeds, **kwargs)


def test_missing_rule_is_reported_before_anything_runs() -> None:
    # The first node would fail at run time (x is not fed); the unsupported op is
    # reported first, by name, because the graph is checked before execution.
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Frobnicate", ["r"], ["y"], domain="com.example")]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F32, [2])],
                          [helper.make_tensor_value_info("y", F32, [2])]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    graph = optc.from_onnx(model, infer_shapes=False)
    with pytest.raises(UnsupportedOpError, match=re.escape("'com.example::Frobnicate'")) as info:
        run(graph, {})
    assert info.value.op == "Frobnicate" and info.value.domain == "com.example"
    assert "reference interpreter" in str(info.value)


def test_missing_rule_in_the_default_domain_names_the_op() -> None:
    node = Node("STFT", ("x", "step"), (Value("y"),))
    with pytest.raises(UnsupportedOpError, match="'STFT' is not supported by the reference"):
        evaluate_node(node, [torch.zeros(1, 8), torch.tensor(2)], 17)


def test_rule_failures_name_the_node() -> None:
    nodes = [helper.make_node("MatMul", ["a", "b"], ["y"], name="proj")]
    graph = onnx_graph(nodes, [helper.make_tensor_value_info("a", F32, [2, None]),
                               helper.make_tensor_value_info("b", F32, [None, 2])],
                       [helper.make_tensor_value_info("y", F32, [2, 2])])
    with pytest.raises(InvalidModelError, match="MatMul node 'proj' failed"):
        run(graph, {"a": np.ones((2, 3), np.float32), "b": np.ones((4, 2), np.float32)})


def test_has_rule_and_supported_ops() -> None:
    ops = supported_ops()
    assert ops == sorted(ops) and len(ops) > 100
    assert has_rule("Conv") and has_rule("Conv", "ai.onnx")
    assert not has_rule("Conv", "com.microsoft") and not has_rule("NoSuchOp")


def test_evaluate_node_uses_the_given_opset() -> None:
    # Softmax before opset 13 normalizes over everything after ``axis`` (2-D coercion).
    x = torch.arange(12, dtype=torch.float32).reshape(1, 3, 4)
    node = Node("Softmax", ("x",), (Value("y"),), {"axis": 1})
    (old,) = evaluate_node(node, [x], 11)
    (new,) = evaluate_node(node, [x], 13)
    torch.testing.assert_close(old, torch.softmax(x.reshape(1, 12), 1).reshape(1, 3, 4))
    torch.testing.assert_close(new, torch.softmax(x, 1))


def test_evaluate_node_accepts_numpy_and_returns_every_output() -> None:
    node = Node("TopK", ("x", "k"), (Value("values"), Value("indices")))
    values, indices = evaluate_node(node, [np.array([1.0, 3.0, 3.0, 2.0], np.float32),
                                           np.array([2], np.int64)], 17)
    assert values.tolist() == [3.0, 3.0] and indices.tolist() == [1, 2]


def test_if_and_loop_run_their_bodies_with_outer_values() -> None:
    outer = helper.make_tensor_value_info
    then_body = helper.make_graph([helper.make_node("Add", ["x", "x"], ["t"])], "then", [],
                                  [outer("t", F32, [2])])
    else_body = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [],
                                  [outer("e", F32, [2])])
    # Loop body: acc_out = acc_in + x, run "n" times.
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["acc_in", "x"], ["acc_out"])], "body",
        [outer("i", TensorProto.INT64, []), outer("cond_in", TensorProto.BOOL, []),
         outer("acc_in", F32, [2])],
        [outer("cond_out", TensorProto.BOOL, []), outer("acc_out", F32, [2])])
    nodes = [helper.make_node("If", ["c"], ["picked"], then_branch=then_body,
                              else_branch=else_body),
             helper.make_node("Loop", ["n", "", "zero"], ["total"], body=body)]
    graph = onnx_graph(nodes, [outer("x", F32, [2]), outer("c", TensorProto.BOOL, []),
                               outer("n", TensorProto.INT64, []), outer("zero", F32, [2])],
                       [outer("picked", F32, [2]), outer("total", F32, [2])])
    x = np.array([1.5, -2.0], np.float32)
    feeds = {"x": x, "n": np.array(3), "zero": np.zeros(2, np.float32)}
    taken = run_numpy(graph, feeds | {"c": np.array(True)})
    np.testing.assert_array_equal(taken["picked"], 2 * x)
    np.testing.assert_array_equal(taken["total"], 3 * x)
    np.testing.assert_array_equal(run_numpy(graph, feeds | {"c": np.array(False)})["picked"], -x)


def test_half_precision_round_trips_through_numpy() -> None:
    graph = onnx_graph([helper.make_node("Mul", ["a", "a"], ["y"])],
                       [helper.make_tensor_value_info("a", TensorProto.BFLOAT16, [3])],
                       [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [3])])
    import ml_dtypes

    a = np.array([1.5, -2.0, 3.0], ml_dtypes.bfloat16)
    y = run_numpy(graph, {"a": a})["y"]
    assert y.dtype == ml_dtypes.bfloat16 and y.astype(np.float32).tolist() == [2.25, 4.0, 9.0]


def test_seeded_random_ops_repeat_and_follow_their_distribution() -> None:
    normal = Node("RandomNormal", (), (Value("y"),),
                  {"shape": (4000,), "mean": 2.0, "scale": 0.5, "seed": 7.0})
    uniform = Node("RandomUniformLike", ("x",), (Value("u"),), {"low": -1.0, "high": 3.0})
    (first,), (again,) = evaluate_node(normal, [], 17), evaluate_node(normal, [], 17)
    assert first.dtype == torch.float32 and first.shape == (4000,)
    assert torch.equal(first, again)  # same seed, same draws
    assert abs(float(first.mean()) - 2.0) < 0.05 and abs(float(first.std()) - 0.5) < 0.05
    (u,) = evaluate_node(uniform, [torch.zeros(50, 40, dtype=torch.float64)], 17)
    assert u.dtype == torch.float64 and u.shape == (50, 40)
    assert float(u.min()) >= -1.0 and float(u.max()) <= 3.0 and abs(float(u.mean()) - 1) < 0.1
