"""The reference interpreter's rules for the contrib ops ``fuse`` emits, against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from pass_support import assert_outputs_close, run_onnxruntime, run_reference

import optc
from optc.errors import InvalidModelError
from optc.interp import has_rule, run
from optc.interp.rules.contrib import CONTRIB_DOMAIN
from optc.ir.graph import Graph, Node, Value

BATCH, SEQ, WIDTH, HEADS = 2, 5, 8, 2


def contrib_graph(node: Node, inputs: tuple[Value, ...], params: dict[str, np.ndarray],
                  out: Value) -> Graph:
    graph = Graph(inputs, (node,), (out,), params, opsets={"": 17, CONTRIB_DOMAIN: 1})
    onnx.checker.check_model(optc.to_onnx(graph), full_check=True)
    return graph


@pytest.mark.parametrize("op", ["Gelu", "FastGelu", "BiasGelu"])
def test_gelu_family(op: str) -> None:
    rng = np.random.default_rng(1)
    x = Value("x", "float32", (BATCH, SEQ, WIDTH))
    out = Value("y", "float32", (BATCH, SEQ, WIDTH))
    params = {} if op == "Gelu" else {"b": rng.normal(size=WIDTH).astype(np.float32)}
    node = Node(op, ("x", *params), (out,), domain=CONTRIB_DOMAIN)
    graph = contrib_graph(node, (x,), params, out)
    feeds = {"x": rng.normal(0, 2, size=x.shape).astype(np.float32)}
    assert_outputs_close(run_onnxruntime(graph, feeds), run_reference(graph, feeds))


def attention_graph(rng: np.random.Generator, attrs: dict[str, object], mask: str | None,
                    bias: bool) -> Graph:
    x = Value("x", "float32", (BATCH, SEQ, WIDTH))
    out = Value("y", "float32", (BATCH, SEQ, WIDTH))
    params = {"w": rng.normal(0, 0.5, size=(WIDTH, 3 * WIDTH)).astype(np.float32),
              "b": rng.normal(0, 0.5, size=3 * WIDTH).astype(np.float32)}
    inputs: list[Value] = [x]
    names = ["x", "w", "b", "", "", ""]
    if mask == "keys":
        inputs.append(Value("m", "int32", (BATCH, SEQ)))
        names[3] = "m"
    if bias:
        inputs.append(Value("bias", "float32", (1, HEADS, SEQ, SEQ)))
        names[5] = "bias"
    while not names[-1]:
        names.pop()
    node = Node("Attention", tuple(names), (out,), {"num_heads": HEADS, **attrs},
                domain=CONTRIB_DOMAIN)
    return contrib_graph(node, tuple(inputs), params, out)


@pytest.mark.parametrize(("attrs", "mask", "bias"), [
    ({}, None, False),
    ({}, "keys", False),
    ({}, None, True),
    ({"mask_filter_value": -1e9}, "keys", True),
    ({"unidirectional": 1}, None, False),
    ({"scale": 0.25}, None, False),
])
def test_attention_matches_onnxruntime(attrs: dict[str, object], mask: str | None,
                                       bias: bool) -> None:
    rng = np.random.default_rng(len(attrs) + bool(mask) + 2 * bias)
    graph = attention_graph(rng, attrs, mask, bias)
    feeds = {"x": rng.normal(size=(BATCH, SEQ, WIDTH)).astype(np.float32)}
    if mask:
        feeds["m"] = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.int32)
    if bias:
        feeds["bias"] = rng.normal(size=(1, HEADS, SEQ, SEQ)).astype(np.float32)
    assert_outputs_close(run_onnxruntime(graph, feeds), run_reference(graph, feeds))


def test_attention_is_differentiable() -> None:
    """Later passes differentiate through the interpreter (Hessians, calibration)."""
    graph = attention_graph(np.random.default_rng(3), {}, None, False)
    weight = torch.tensor(np.asarray(graph.params["w"]), requires_grad=True)
    x = np.random.default_rng(4).normal(size=(BATCH, SEQ, WIDTH)).astype(np.float32)
    out = run(graph, {"x": x}, params={"w": weight})["y"]
    out.square().sum().backward()
    assert weight.grad is not None and float(weight.grad.abs().sum()) > 0


def test_unsupported_attention_inputs_name_the_node() -> None:
    graph = attention_graph(np.random.default_rng(5), {}, None, False)
    past = Value("past", "float32", (2, BATCH, HEADS, 1, WIDTH // HEADS))
    node = graph.nodes[0].replace(inputs=("x", "w", "b", "", "past"))
    graph = graph.replace(inputs=(*graph.inputs, past), nodes=(node,))
    feeds = {"x": np.zeros((BATCH, SEQ, WIDTH), np.float32),
             "past": np.zeros(past.shape, np.float32)}
    with pytest.raises(InvalidModelError, match="past state"):
        run_reference(graph, feeds)


def test_rules_are_registered_for_the_contrib_domain_only() -> None:
    assert has_rule("Attention", CONTRIB_DOMAIN) and has_rule("Gelu", CONTRIB_DOMAIN)
    assert not has_rule("Attention", "")  # the default domain's Attention is opset 23's
    assert not has_rule("Relu", CONTRIB_DOMAIN)
