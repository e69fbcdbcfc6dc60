"""The verifier: one broken invariant per case, each named in a clear message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import optc
from optc.errors import EXIT_BAD_INPUT, InvalidModelError
from optc.ir import Graph, IRVerificationError, Node, Value, verify

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
F2 = ("float32", (2,))


def val(name: str, dtype: str | None = "float32", shape: tuple | None = (2,)) -> Value:
    return Value(name, dtype, shape)


def chain(*nodes: Node, outputs: tuple[Value, ...] = (val("y"),), opsets: dict | None = None,
          params: dict | None = None, inputs: tuple[Value, ...] = (val("x"),)) -> Graph:
    return Graph(inputs, nodes, outputs, params or {},
                 opsets={"": 17} if opsets is None else opsets)


def relu(src: str, dst: str, dtype: str | None = "float32", shape: tuple | None = (2,)) -> Node:
    return Node("Relu", (src,), (val(dst, dtype, shape),))


def if_node(src: str, cond: str, out: str, branch_op: str = "Neg", domain: str = "") -> Node:
    def branch(tag: str) -> Graph:
        inner = Node(branch_op, (src,), (val(f"{out}_{tag}"),), domain=domain)
        return Graph((), (inner,), (val(f"{out}_{tag}"),), name=tag)
    return Node("If", (cond,), (val(out),),
                {"then_branch": branch("then"), "else_branch": branch("else")})


BROKEN: dict[str, tuple[Graph, str]] = {
    "duplicate definition": (
        chain(relu("x", "y"), relu("x", "y")),
        "value 'y' defined twice (node #0 Relu and node #1 Relu)"),
    "input redefined by a node": (
        chain(relu("x", "x"), relu("x", "y")),
        "value 'x' defined twice (input and node #0 Relu)"),
    "param shadows an input": (
        chain(relu("x", "y"), params={"x": np.zeros(2, np.float32)}),
        "value 'x' defined twice (param and input)"),
    "use before definition": (
        chain(relu("h", "y"), relu("x", "h")),
        "node #0 Relu reads 'h' before it is defined (nodes are not in topological order)"),
    "undefined read": (
        chain(relu("nope", "y")),
        "node #0 Relu reads 'nope', which is never defined"),
    "undefined output": (
        chain(relu("x", "y"), outputs=(val("y"), val("z"))),
        "output 'z' is never produced"),
    "negative dimension": (
        chain(relu("x", "y", shape=(-1,))),
        "node #0 Relu: value 'y' has bad dimension -1"),
    "bool dimension": (
        chain(relu("x", "y"), inputs=(val("x", shape=(True,)),)),
        "input: value 'x' has bad dimension True"),
    "float dimension": (
        chain(relu("x", "y", shape=(2.0,))),
        "value 'y' has bad dimension 2.0"),
    "unknown dtype": (
        chain(relu("x", "y", dtype="flaot32")),
        "value 'y' has unknown dtype 'flaot32'"),
    "container with a shape": (
        chain(Node("SequenceEmpty", (), (val("s", "seq(float32)", (2,)),)), relu("x", "y")),
        "value 's' of type seq(float32) has a shape"),
    "output dtype disagreement": (
        chain(relu("x", "y"), outputs=(val("y", "float16"),)),
        "output 'y' declared float16, produced as float32"),
    "output shape disagreement": (
        chain(relu("x", "y"), outputs=(val("y", shape=(3,)),)),
        "output 'y' declared shape (3,), produced as (2,)"),
    "output rank disagreement": (
        chain(relu("x", "y"), outputs=(val("y", shape=(2, 1)),)),
        "output 'y' declared shape (2, 1), produced as (2,)"),
    "missing opset for a domain": (
        chain(Node("Gelu", ("x",), (val("y"),), domain="com.example")),
        "domain 'com.example' is used but has no opset version"),
    "no opsets at all": (
        chain(relu("x", "y"), opsets={}),
        "domain 'ai.onnx' is used but has no opset version"),
    "domain used only inside a body": (
        chain(Node("Greater", ("x", "x"), (val("c", "bool"),)),
              if_node("x", "c", "y", branch_op="Gelu", domain="com.example")),
        "domain 'com.example' is used but has no opset version"),
    "problem inside a body": (
        chain(Node("Greater", ("x", "x"), (val("c", "bool"),)), if_node("ghost", "c", "y")),
        "node #1 If body: node #0 Neg reads 'ghost', which is never defined"),
    "object param": (
        chain(relu("x", "y"), params={"p": np.array([{"a": 1}], dtype=object)}),
        "param 'p' holds Python objects, not tensor data"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_verifier_names_the_broken_invariant(case: str) -> None:
    graph, message = BROKEN[case]
    with pytest.raises(IRVerificationError) as info:
        verify(graph)
    assert any(message in problem for problem in info.value.problems), info.value.problems
    assert message in str(info.value) and "\n" not in str(info.value)


def test_valid_variants_pass() -> None:
    # Captures from the outer graph, omitted optional inputs/outputs, unknown and
    # symbolic dims and an explicit "ai.onnx" domain name are all fine.
    nodes = (
        Node("Greater", ("x", "x"), (val("c", "bool"),)),
        if_node("x", "c", "h"),
        Node("Dropout", ("h", "", ""), (val("d", shape=("n",)), Value(""))),
        Node("Relu", ("d",), (val("y", None, None),), domain="ai.onnx"),
    )
    graph = chain(*nodes, opsets={"ai.onnx": 17})
    assert verify(graph) is graph


def test_every_problem_is_listed() -> None:
    graph = chain(relu("x", "y", shape=(-3,)), relu("x", "y"), outputs=(val("y"), val("q")))
    with pytest.raises(IRVerificationError) as info:
        verify(graph)
    assert len(info.value.problems) == 3
    assert isinstance(info.value, InvalidModelError)
    assert info.value.exit_code == EXIT_BAD_INPUT


def test_long_problem_lists_are_cut_in_the_message() -> None:
    nodes = [relu(f"missing{i}", f"y{i}") for i in range(30)]
    graph = chain(*nodes, outputs=(val("y0"),))
    with pytest.raises(IRVerificationError, match=r"\(\+10 more\)") as info:
        verify(graph)
    assert len(info.value.problems) == 30


def test_types_catches_a_wrong_intermediate_dtype() -> None:
    graph = chain(relu("x", "h", dtype="int64"), relu("h", "y"))
    verify(graph)  # structure alone is fine
    with pytest.raises(IRVerificationError, match="Relu output 'h' declared int64, produced as "
                                                  "float32"):
        verify(graph, types=True)


def test_types_catches_a_wrong_declared_shape_and_output_dtype() -> None:
    graph = chain(relu("x", "h", shape=(3,)), relu("h", "y", dtype="int32"),
                  outputs=(val("y", "int32"),))
    with pytest.raises(IRVerificationError) as info:
        verify(graph, types=True)
    problems = " | ".join(info.value.problems)
    assert "Relu output 'h' declared shape (3,), produced as (2,)" in problems
    assert "graph output 'y' declared int32, produced as float32" in problems


def test_types_reports_what_onnx_rejects() -> None:
    graph = chain(Node("MatMul", ("x", "w"), (val("y", shape=None),)),
                  params={"w": np.zeros((3, 3), np.float32)})
    with pytest.raises(IRVerificationError, match="shape inference rejects the graph"):
        verify(graph, types=True)


def test_types_accepts_unknown_declared_types() -> None:
    graph = chain(relu("x", "h", dtype=None, shape=None), relu("h", "y", shape=("n",)))
    assert verify(graph, types=True) is graph


@pytest.mark.parametrize("path", sorted(LIGHT.glob("*.onnx")), ids=lambda p: p.stem)
def test_light_models_verify_with_types(path: Path) -> None:
    graph = optc.load_onnx(path)
    assert verify(graph, types=True) is graph


def test_body_of_a_first_node_inherits_opsets() -> None:
    # No inputs or params: the Loop's body sees an empty outer scope, yet it is a body.
    body = Graph((Value("i", "int64", ()), Value("cond", "bool", ())),
                 (Node("Identity", ("cond",), (Value("cond_out", "bool", ()),)),),
                 (Value("cond_out", "bool", ()),), name="body")
    loop = Node("Loop", ("", ""), (), {"body": body})
    graph = Graph((), (loop,), (), opsets={"": 17})
    assert verify(graph) is graph
