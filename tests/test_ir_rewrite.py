"""Edit helpers for passes: each edit verifies, runs the same, and is a no-op when it should be."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import optc
from optc.ir import Graph, Node, Value, parse_graph, verify
from optc.ir.rewrite import (
    drop_unused_params,
    remove_nodes,
    rename_uses,
    replace_nodes,
    sort_nodes,
    unique_name,
)

TEXT = """graph g {
  opset "" = 17
  input %x: float32[2,3]
  param %w: float32[3,3] = [1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 3.0]
  param %unused: float32[1] = [7.0]
  param %zero: float32[] = [0.0]
  %a: float32[2,3] = MatMul(%x, %w)
  %b: float32[2,3] = Identity(%a)
  %c: float32[2,3] = Relu(%b)
  %s: float32[] = ReduceSum(%c) {keepdims=0}
  %p: bool[] = Greater(%s, %zero)
  %y: float32[2,3] = If(%p) {
    else_branch=[
      graph else {
        %e: float32[2,3] = Neg(%b)
        output %e: float32[2,3]
      }
    ],
    then_branch=[
      graph then {
        %t: float32[2,3] = Add(%b, %c)
        output %t: float32[2,3]
      }
    ],
  }
  output %y: float32[2,3]
  output %b: float32[2,3]
}
"""
X = np.array([[1.0, -2.0, 3.0], [-1.0, 0.5, 2.0]], np.float32)
B = X @ np.diag([1.0, 2.0, 3.0]).astype(np.float32)  # the value %b for input X


@pytest.fixture
def graph() -> Graph:
    return verify(parse_graph(TEXT))


def run(graph: Graph, x: np.ndarray = X) -> list[np.ndarray]:
    session = ort.InferenceSession(optc.to_onnx(graph).SerializeToString())
    return session.run(None, {"x": x})


def node(graph: Graph, op: str) -> Node:
    return next(n for n in graph.nodes if n.op == op)


def test_no_op_edits_return_the_same_graph(graph: Graph) -> None:
    assert replace_nodes(graph, {}) is graph
    assert replace_nodes(graph, {n: (n,) for n in graph.nodes}) is graph
    assert remove_nodes(graph, []) is graph
    assert rename_uses(graph, {}) is graph
    assert rename_uses(graph, {"a": "a"}) is graph
    assert rename_uses(graph, {"not-read-anywhere": "x"}) is graph
    assert sort_nodes(graph) is graph
    used = drop_unused_params(graph)
    assert drop_unused_params(used) is used


def test_replace_node_keeps_semantics_where_expected(graph: Graph) -> None:
    relu = node(graph, "Relu")
    edited = replace_nodes(graph, {relu: (relu.replace(op="Abs"),)})
    verify(edited, types=True)
    assert node(edited, "Abs").outputs == relu.outputs
    assert node(graph, "Relu") is relu, "the original graph is untouched"
    assert np.abs(B).sum() > 0  # so the If takes its then branch: b + c
    np.testing.assert_allclose(run(edited)[0], B + np.abs(B), rtol=1e-6)


def test_replace_with_several_nodes(graph: Graph) -> None:
    relu = node(graph, "Relu")
    neg = Node("Neg", ("b",), (Value("nb", "float32", (2, 3)),))
    max_node = Node("Max", ("b", "nb"), (Value("c", "float32", (2, 3)),))
    edited = replace_nodes(graph, {relu: (neg, max_node)})
    verify(edited, types=True)
    np.testing.assert_allclose(run(edited)[0], B + np.abs(B), rtol=1e-6)
    np.testing.assert_allclose(run(graph)[0], B + np.maximum(B, 0), rtol=1e-6)


def test_remove_identity_and_rename_its_uses(graph: Graph) -> None:
    identity = node(graph, "Identity")
    edited = rename_uses(remove_nodes(graph, [identity]), {"b": "a"})
    # b is a graph output: without outputs=True the interface keeps naming b, which
    # nothing produces any more, and the verifier says so.
    with pytest.raises(optc.ir.IRVerificationError, match="output 'b' is never produced"):
        verify(edited)
    edited = rename_uses(remove_nodes(graph, [identity]), {"b": "a"}, outputs=True)
    verify(edited, types=True)
    assert edited.output_names == ("y", "a") and len(edited.nodes) == len(graph.nodes) - 1
    # The If's branches captured b from outside; they now read a.
    branch = node(edited, "If").attrs["else_branch"]
    assert branch.nodes[0].inputs == ("a",)
    for got, want in zip(run(edited), run(graph), strict=True):
        np.testing.assert_array_equal(got, want)


def test_rename_leaves_definitions_and_unrelated_branches(graph: Graph) -> None:
    edited = rename_uses(graph, {"c": "a"})
    then_branch = node(edited, "If").attrs["then_branch"]
    assert then_branch.nodes[0].inputs == ("b", "a")
    assert node(edited, "Relu").output_names == ("c",)
    assert node(edited, "If").attrs["else_branch"] is node(graph, "If").attrs["else_branch"]
    assert node(edited, "MatMul") is node(graph, "MatMul")


def test_drop_unused_params(graph: Graph) -> None:
    dropped = drop_unused_params(graph)
    assert set(graph.params) - set(dropped.params) == {"unused"}
    assert dropped.params["w"] is graph.params["w"]
    # A param read only as a graph output or only inside a body stays.
    as_output = graph.replace(outputs=(*graph.outputs, Value("unused", "float32", (1,))))
    assert drop_unused_params(as_output) is as_output
    verify(dropped, types=True)


def test_sort_nodes_restores_topological_order(graph: Graph) -> None:
    shuffled = graph.replace(nodes=graph.nodes[::-1])
    with pytest.raises(optc.ir.IRVerificationError, match="topological order"):
        verify(shuffled)
    restored = sort_nodes(shuffled)
    verify(restored)
    assert [n.op for n in restored.nodes] == [n.op for n in graph.nodes]
    assert all(a is b for a, b in zip(restored.nodes, graph.nodes, strict=True))


def test_sort_nodes_is_stable_for_independent_nodes() -> None:
    a = Node("Relu", ("x",), (Value("a"),))
    b = Node("Neg", ("x",), (Value("b"),))
    c = Node("Add", ("a", "b"), (Value("c"),))
    graph = Graph((Value("x", "float32", (1,)),), (c, b, a), (Value("c"),), opsets={"": 17})
    assert [n.op for n in sort_nodes(graph).nodes] == ["Neg", "Relu", "Add"]


def test_sort_nodes_refuses_a_cycle() -> None:
    a = Node("Relu", ("b",), (Value("a"),))
    b = Node("Neg", ("a",), (Value("b"),))
    graph = Graph((), (a, b), (Value("b"),), opsets={"": 17})
    with pytest.raises(ValueError, match="is on a cycle"):
        sort_nodes(graph)


def test_unique_name_avoids_every_scope(graph: Graph) -> None:
    assert unique_name(graph, "fresh") == "fresh"
    assert unique_name(graph, "a") == "a_1"
    assert unique_name(graph, "t") == "t_1", "t is defined inside the If's then branch"
    assert unique_name(graph, "w") == "w_1" and unique_name(graph, "x") == "x_1"
    taken = graph.replace(params={**graph.params, "a_1": np.zeros(1, np.float32)})
    assert unique_name(taken, "a") == "a_2"


def test_replace_nodes_refuses_a_foreign_node(graph: Graph) -> None:
    stranger = Node("Relu", ("x",), (Value("q"),))
    with pytest.raises(ValueError, match="not in the graph"):
        replace_nodes(graph, {stranger: ()})
