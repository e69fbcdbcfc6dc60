"""Canonical text form: print -> parse is structurally equal, and the printed form is stable."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import optc
from optc.errors import InvalidModelError
from optc.ir import (
    Annotation,
    Graph,
    Node,
    parse_graph,
    print_graph,
    structurally_equal,
    tensor_store,
    verify,
)

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


@dataclasses.dataclass(frozen=True)
class Note(Annotation):
    """A plugin-style annotation: any Annotation subclass round-trips by its ``kind``."""

    kind: ClassVar[str] = "testnote"
    text: str
    scale: float = 1.0
    dims: tuple[int, ...] = ()


def round_trip(graph: Graph, inline_limit: int | None = 16) -> Graph:
    text = print_graph(graph, inline_limit=inline_limit)
    parsed = parse_graph(text, tensors=tensor_store(graph))
    assert structurally_equal(parsed, graph)
    assert print_graph(parsed, inline_limit=inline_limit) == text  # canonical: a fixed point
    return parsed


@pytest.mark.parametrize("path", sorted(LIGHT.glob("*.onnx")), ids=lambda p: p.stem)
def test_light_models_round_trip(path: Path) -> None:
    graph = optc.load_onnx(path)
    parsed = round_trip(graph)
    assert [n.op for n in parsed.nodes] == [n.op for n in graph.nodes]
    for name, array in graph.params.items():
        np.testing.assert_array_equal(parsed.params[name], array)


def test_inline_everything_needs_no_tensor_store() -> None:
    graph = optc.load_onnx(LIGHT / "light_squeezenet.onnx")
    text = print_graph(graph, inline_limit=None)
    assert "sha256:" not in text
    assert structurally_equal(parse_graph(text), graph)


# Canonical text exercising the whole grammar; printing the parsed graph must give it back.
GOLDEN = "\n".join((
    r'graph "my model" {',
    r'  opset "" = 18',
    r'  opset "com.example" = 1',
    r'  meta "author" = "optc tests \u00e9"',
    r'  input %x: float32[batch,3,"height px",?] @precision(bits=8, dtype="int"'
    r', per_channel=false)',
    r'  input %"weird name:1": ?',
    r'  input %ids: int64[]',
    r'  param %big: float32[5,5] = sha256:DIGEST',
    r'  param %small: float16[2] = [0.5, -0.0]',
    r'  param %words: string[2] = ["a b", "\u00fc"]',
    r'  %y: float32[batch,3,"height px",?] = Relu(%x) @fusion(group="block0") # "relu/1"',
    r'  %z: float32[batch,?,"height px",?], _ = "com.example"::Gelu(%y, _'
    r', %"weird name:1") {alpha=0.5, approx="tanh", blob=b"\u00ff\u0000"'
    r', count=-9223372036854775808, empty=[], floats=[1.0, -2.5e-08, inf, -inf, nan]'
    r', ints=[1, -2], names=["p", "q"], t=tensor<int64[2,2]>[1, 2, 3, 4]'
    r', u=tensor<bool[]>[true]} @routing(layer=3, router="r0") @testnote(text="x"'
    r', scale=0.25, dims=[1, 2])',
    r'  %s: seq(float32) = SequenceConstruct(%z)',
    r'  %o: optional(seq(float32)) = Optional(%s) {type=type<seq(float32)>}',
    r'  () = "nan"(%o)',
    r'  %w: ?[2] = "with-dash"(%big, %small, %words, %ids) {types=[type<float32[2,?]>'
    r', type<int64>]}',
    r'  output %z: float32[batch,?,"height px",?] @timesteps(steps=4)',
    r'  output %w: ?[2]',
    r'}',
)) + "\n"


def golden_graph() -> tuple[str, Graph]:
    big = np.arange(25, dtype=np.float32).reshape(5, 5)
    digest = next(k for k, v in tensor_store(Graph((), (), (), {"big": big})).items())
    text = GOLDEN.replace("DIGEST", digest)
    return text, parse_graph(text, tensors={digest: big})


def test_golden_text_is_canonical() -> None:
    text, graph = golden_graph()
    assert print_graph(graph) == text
    round_trip(graph)
    round_trip(graph, inline_limit=None)


def test_golden_text_parses_to_the_right_values() -> None:
    _, graph = golden_graph()
    assert graph.name == "my model" and graph.opsets == {"": 18, "com.example": 1}
    assert graph.metadata["author"] == "optc tests é"
    x = graph.inputs[0]
    assert x.shape == ("batch", 3, "height px", None)
    assert x.annotations[0].fields() == {"bits": 8, "dtype": "int", "per_channel": False}
    assert graph.inputs[1].name == "weird name:1" and graph.inputs[1].dtype is None
    assert graph.inputs[1].shape is None and graph.inputs[2].shape == ()
    assert graph.params["small"].dtype == np.float16
    assert np.signbit(graph.params["small"][1])  # -0.0 kept
    assert list(graph.params["words"]) == ["a b", "ü"]
    relu, gelu, _, optional, sink, last = graph.nodes
    assert relu.name == "relu/1" and relu.annotations[0].fields() == {"group": "block0"}
    assert gelu.domain == "com.example" and gelu.inputs == ("y", "", "weird name:1")
    assert gelu.output_names == ("z", "")
    attrs = gelu.attrs
    assert attrs["blob"] == b"\xff\x00" and attrs["approx"] == "tanh"
    assert attrs["count"] == -(2 ** 63) and attrs["empty"] == () and attrs["ints"] == (1, -2)
    assert attrs["floats"][:3] == (1.0, -2.5e-08, float("inf")) and np.isnan(attrs["floats"][4])
    assert attrs["names"] == ("p", "q")
    np.testing.assert_array_equal(attrs["t"], [[1, 2], [3, 4]])
    assert attrs["t"].dtype == np.int64 and attrs["u"].shape == () and attrs["u"].dtype == bool
    assert gelu.annotations[1] == Note("x", 0.25, (1, 2))
    assert optional.outputs[0].dtype == "optional(seq(float32))"
    assert optional.attrs["type"].dtype == "seq(float32)"
    assert sink.op == "nan" and sink.outputs == ()
    assert last.op == "with-dash" and last.attrs["types"][0].shape == (2, None)
    assert graph.outputs[0].annotations[0].fields() == {"steps": 4}


def control_flow_model() -> onnx.ModelProto:
    """If + Loop whose bodies capture outer values; built with onnx.helper."""
    f2 = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("t", "e", "x", "z")]
    then_g = helper.make_graph([helper.make_node("Add", ["x", "x"], ["t"])], "then", [], [f2[0]])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [f2[1]])
    body = helper.make_graph(
        [helper.make_node("Add", ["acc", "x"], ["acc_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [2])])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g),
             helper.make_node("Loop", ["n", "", "y"], ["z"], body=body)]
    graph = helper.make_graph(nodes, "control", [f2[2]], [f2[3]], initializer=[
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("n", TensorProto.INT64, [], [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def test_control_flow_round_trips_and_runs() -> None:
    model = control_flow_model()
    graph = optc.from_onnx(model)
    verify(graph, types=True)
    parsed = round_trip(graph)
    if_node, loop = parsed.nodes[2], parsed.nodes[3]
    assert {k for k, v in if_node.attrs.items() if isinstance(v, Graph)} == {"then_branch",
                                                                             "else_branch"}
    assert loop.attrs["body"].input_names == ("i", "cond_in", "acc")
    text = print_graph(graph)
    assert "then_branch=[" in text and "body=[" in text and text.count("graph ") == 4
    for x in (np.array([1.0, -2.0], np.float32), np.array([-5.0, 1.0], np.float32)):
        want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
        got = ort.InferenceSession(optc.to_onnx(parsed).SerializeToString()).run(None, {"x": x})
        np.testing.assert_array_equal(got[0], want[0])


def test_missing_tensor_in_store_is_reported() -> None:
    graph = optc.load_onnx(LIGHT / "light_squeezenet.onnx")
    text = print_graph(graph)
    with pytest.raises(InvalidModelError, match=r"IR text line \d+: tensor sha256:\w+\.\.\. "
                                                r"not in the tensor store"):
        parse_graph(text)


MALFORMED = {
    "unexpected character": ("graph g {\n  input %x: float32[2]\n  $\n}", 3, "unexpected '$"),
    "unclosed graph": ("graph g {\n  input %x: float32[2]\n", 2,
                       "graph 'g' is missing its closing '}'"),
    "unknown dtype": ("graph g {\n\n  input %x: flaot32[2]\n}", 3, "unknown dtype 'flaot32'"),
    "bad dimension": ("graph g {\n  input %x: float32[2, %y]\n}", 2, "bad dimension '%y'"),
    "unknown annotation": ("graph g {\n  input %x: float32 @nosuch(a=1)\n}", 2,
                           "unknown annotation @nosuch"),
    "annotation field": ("graph g {\n  input %x: float32\n  input %y: float32 @precision(bitz=4)"
                         "\n}", 3, "unexpected keyword argument 'bitz'"),
    "tensor size": ("graph g {\n  param %p: float32[3] = [1.0, 2.0]\n}", 2,
                    "cannot reshape array of size 2 into shape (3,)"),
    "symbolic tensor": ("graph g {\n  param %p: float32[n] = [1.0]\n}", 2,
                        "a tensor needs a known dtype and static shape"),
    "duplicate param": ("graph g {\n  param %p: int64[] = [1]\n  param %p: int64[] = [2]\n}",
                        3, "param %p is defined twice"),
    "duplicate attribute": ("graph g {\n  %y: ? = Op() {a=1,\n  a=2}\n}", 3,
                            "attribute 'a' given twice"),
    "bad attribute value": ("graph g {\n  %y: ? = Op() {a=%x}\n}", 2, "bad value '%x'"),
    "missing equals": ("graph g {\n  %y: float32 Relu(%x)\n}", 2, "expected =, got 'Relu'"),
    "text after the graph": ("graph g {\n}\ngraph h {\n}", 3, "unexpected 'graph' after"),
    "fractional opset": ("graph g {\n  opset \"\" = 1.5\n}", 2, "invalid literal for int()"),
    "bad string escape": ("graph g {\n  meta \"k\" = \"\\q\"\n}", 2, "Invalid \\escape"),
    "not a graph": ("model m {}", 1, "expected graph, got 'model'"),
    "empty text": ("", 1, "expected graph, got 'end of text'"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_text_reports_the_line(case: str) -> None:
    text, line, message = MALFORMED[case]
    with pytest.raises(InvalidModelError) as info:
        parse_graph(text)
    assert str(info.value).startswith(f"IR text line {line}: "), str(info.value)
    assert message in str(info.value)


def test_reserved_words_are_quoted() -> None:
    node = Node("inf", ("x",), (optc.Value("y", "float32", ("nan", "_")),), name="n")
    graph = Graph((optc.Value("x", "float32", ("nan", "_")),), (node,), node.outputs,
                  name="inf", opsets={"": 1})
    text = print_graph(graph)
    assert 'graph "inf" {' in text and '= "inf"(%x)' in text and '["nan","_"]' in text
    round_trip(graph)
