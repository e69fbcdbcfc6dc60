"""The IR's data model: frozen records, read-only tensors, edits that build new graphs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from optc.ir import Graph, Node, Precision, TypeAttr, Value, print_graph, verify


def small_graph() -> Graph:
    """y = Relu(x @ w + b), with an If whose branches read ``h`` from outside."""
    then_branch = Graph((), (Node("Neg", ("h",), (Value("t", "float32", (1, 4)),)),),
                        (Value("t", "float32", (1, 4)),), name="then")
    else_branch = Graph((), (Node("Identity", ("h",), (Value("e", "float32", (1, 4)),)),),
                        (Value("e", "float32", (1, 4)),), name="else")
    nodes = (
        Node("MatMul", ("x", "w"), (Value("mm", "float32", (1, 4)),)),
        Node("Add", ("mm", "b"), (Value("h", "float32", (1, 4)),)),
        Node("Relu", ("h",), (Value("y", "float32", (1, 4)),)),
        Node("ReduceSum", ("y",), (Value("s", "float32", ()),), {"keepdims": 0}),
        Node("Greater", ("s", "zero"), (Value("c", "bool", ()),)),
        Node("If", ("c",), (Value("z", "float32", (1, 4)),),
             {"then_branch": then_branch, "else_branch": else_branch}),
    )
    params = {"w": np.arange(12, dtype=np.float32).reshape(3, 4),
              "b": np.ones(4, np.float32), "zero": np.zeros((), np.float32)}
    return Graph((Value("x", "float32", (1, 3)),), nodes,
                 (Value("y", "float32", (1, 4)), Value("z", "float32", (1, 4))), params,
                 opsets={"": 17})


def test_small_graph_is_valid() -> None:
    graph = small_graph()
    assert verify(graph, types=True) is graph


@pytest.mark.parametrize("record", [
    Value("x", "float32", (1,)),
    Node("Relu", ("x",), (Value("y"),)),
    small_graph(),
    TypeAttr("float32", (2,)),
])
def test_records_are_frozen(record: object) -> None:
    field = dataclasses.fields(record)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(record, field, "changed")


def test_params_attrs_and_metadata_are_read_only() -> None:
    graph = small_graph()
    with pytest.raises(ValueError, match="read-only"):
        graph.params["w"][0, 0] = 42.0
    with pytest.raises(TypeError):
        graph.params["extra"] = np.zeros(1)  # type: ignore[index]
    with pytest.raises(TypeError):
        graph.opsets["custom"] = 1  # type: ignore[index]
    node = graph.nodes[3]
    with pytest.raises(TypeError):
        node.attrs["keepdims"] = 1  # type: ignore[index]


def test_node_normalizes_mutable_attribute_values() -> None:
    tensor = np.arange(3, dtype=np.int64)
    node = Node("Op", ("x",), (Value("y"),),
                {"axes": [0, 1], "alpha": np.float32(0.5), "count": np.int64(3), "t": tensor})
    assert node.attrs["axes"] == (0, 1)
    assert type(node.attrs["alpha"]) is float and node.attrs["alpha"] == 0.5
    assert type(node.attrs["count"]) is int
    assert not node.attrs["t"].flags.writeable
    assert tensor.flags.writeable, "the caller's own array is left alone"


def test_value_normalizes_shape() -> None:
    value = Value("x", "float32", [np.int64(2), "batch", None])  # type: ignore[arg-type]
    assert value.shape == (2, "batch", None)
    assert type(value.shape) is tuple and type(value.shape[0]) is int
    assert hash(value) == hash(Value("x", "float32", (2, "batch", None)))
    assert value.rank == 3 and not value.is_static()
    assert Value("s", "float32", ()).is_static() and Value("u").rank is None


def test_unchanged_edits_return_the_same_object() -> None:
    graph = small_graph()
    assert graph.replace() is graph
    assert graph.replace(nodes=tuple(graph.nodes)) is graph
    assert graph.replace(nodes=list(graph.nodes), outputs=tuple(graph.outputs)) is graph
    assert graph.replace(params=dict(graph.params), name="main") is graph
    node = graph.nodes[3]
    assert node.replace(inputs=("y",), attrs={"keepdims": 0}) is node
    value = graph.outputs[0]
    assert value.with_type("float32", (1, 4)) is value


def test_edit_builds_a_new_graph_and_leaves_the_old_one() -> None:
    graph = small_graph()
    before = print_graph(graph)
    relu = graph.nodes[2]
    sigmoid = relu.replace(op="Sigmoid")
    edited = graph.replace(nodes=tuple(sigmoid if n is relu else n for n in graph.nodes))
    assert edited is not graph and sigmoid is not relu
    assert print_graph(graph) == before
    assert edited.producer("y").op == "Sigmoid" and graph.producer("y").op == "Relu"
    # Untouched nodes and parameters are shared by reference, not copied.
    assert edited.nodes[0] is graph.nodes[0]
    assert edited.params["w"] is graph.params["w"]
    verify(edited)


def test_equal_looking_nodes_are_still_distinct() -> None:
    a = Node("Relu", ("x",), (Value("y"),))
    b = Node("Relu", ("x",), (Value("y"),))
    assert a != b and a.replace(op="Relu") is a
    graph = Graph((Value("x", "float32", (1,)),), (a,), (Value("y"),), opsets={"": 17})
    assert graph.replace(nodes=(b,)) is not graph


def test_lookups() -> None:
    graph = small_graph()
    assert graph.producer("h").op == "Add"
    assert graph.producer("x") is None and graph.producer("w") is None
    # The If reads h through its branches (a capture), so it is a consumer of h.
    assert [n.op for n in graph.consumers("h")] == ["Relu", "If"]
    assert graph.consumers("nothing") == ()
    assert graph.value("w") == Value("w", "float32", (3, 4))
    assert graph.value("x") is graph.inputs[0]
    assert graph.value("c").dtype == "bool"
    assert graph.has_value("zero") and not graph.has_value("t")  # t lives in a branch
    with pytest.raises(KeyError):
        graph.value("t")
    assert graph.input_names == ("x",) and graph.output_names == ("y", "z")
    assert graph.param_bytes() == 12 * 4 + 4 * 4 + 4
    assert graph.op_histogram()["MatMul"] == 1


def test_omitted_optional_output_is_not_a_value() -> None:
    node = Node("Dropout", ("x",), (Value("y", "float32", (2,)), Value("")))
    graph = Graph((Value("x", "float32", (2,)),), (node, Node("Relu", ("y",), (Value("z"),))),
                  (Value("z"),), opsets={"": 17})
    verify(graph)
    assert not graph.has_value("") and graph.producer("") is None


def test_annotations_travel_with_copies() -> None:
    node = Node("Conv", ("x", "w"), (Value("y", annotations=[Precision(8)]),),
                annotations=(Precision(4, per_channel=True),))
    copy = node.replace(name="conv0")
    assert copy.annotations == (Precision(4, "int", True),)
    assert copy.outputs[0].annotations == (Precision(8),)
    assert type(node.outputs[0].annotations) is tuple
