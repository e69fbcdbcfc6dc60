"""fold-batchnorm: golden rewrite, cases where it must not fire, numerics on real models."""

from __future__ import annotations

import numpy as np
import pytest
from pass_support import (
    assert_outputs_close,
    golden,
    light_model,
    op_count,
    ramp_inputs,
    run_onnxruntime,
    run_reference,
    with_outputs,
)

import optc
from optc.ir.graph import Graph, Node, Value
from optc.passes.fold_batchnorm import FoldBatchNorm
from optc.pipeline import PassContext, parse_pipeline


def fold(graph: Graph) -> Graph:
    after = FoldBatchNorm().run(graph, PassContext())
    optc.verify(after, types=True)
    return after


def test_golden_conv() -> None:
    before, after = golden("fold_batchnorm", "conv")
    assert optc.print_graph(fold(optc.parse_graph(before))) == after


def test_golden_numerics() -> None:
    graph = optc.parse_graph(golden("fold_batchnorm", "conv")[0])
    feeds = {"x": np.random.default_rng(0).normal(size=(1, 2, 4, 4)).astype(np.float32)}
    after = fold(graph)
    expected = run_onnxruntime(graph, feeds)
    assert_outputs_close(expected, run_onnxruntime(after, feeds))
    assert_outputs_close(expected, run_reference(after, feeds))


# -- must not fire -------------------------------------------------------------------------

NO_FIRE = {
    "conv output has another reader": """
      %c: float32[1,3,4,4] = Conv(%x, %w, %b) {kernel_shape=[1, 1]}
      %y: float32[1,3,4,4] = BatchNormalization(%c, %scale, %shift, %mean, %var)
      %z: float32[1,3,4,4] = Add(%y, %c)
      output %z: float32[1,3,4,4]""",
    "conv output is a graph output": """
      %c: float32[1,3,4,4] = Conv(%x, %w, %b) {kernel_shape=[1, 1]}
      %y: float32[1,3,4,4] = BatchNormalization(%c, %scale, %shift, %mean, %var)
      output %y: float32[1,3,4,4]
      output %c: float32[1,3,4,4]""",
    "statistics are not constant": """
      %m2: float32[3] = Relu(%mean)
      %c: float32[1,3,4,4] = Conv(%x, %w, %b) {kernel_shape=[1, 1]}
      %y: float32[1,3,4,4] = BatchNormalization(%c, %scale, %shift, %m2, %var)
      output %y: float32[1,3,4,4]""",
    "training mode": """
      %c: float32[1,3,4,4] = Conv(%x, %w, %b) {kernel_shape=[1, 1]}
      %y: float32[1,3,4,4], %rm: float32[3], %rv: float32[3] = BatchNormalization(
          %c, %scale, %shift, %mean, %var) {training_mode=1}
      output %y: float32[1,3,4,4]""",
    "weight is computed": """
      %w2: float32[3,2,1,1] = Neg(%w)
      %c: float32[1,3,4,4] = Conv(%x, %w2, %b) {kernel_shape=[1, 1]}
      %y: float32[1,3,4,4] = BatchNormalization(%c, %scale, %shift, %mean, %var)
      output %y: float32[1,3,4,4]""",
    "producer is not a conv": """
      %c: float32[1,2,4,4] = Relu(%x)
      %y: float32[1,2,4,4] = BatchNormalization(%c, %s2, %s2, %s2, %s2)
      output %y: float32[1,2,4,4]""",
}

PARAMS = """
  param %w: float32[3,2,1,1] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
  param %b: float32[3] = [0.5, -0.5, 1.0]
  param %scale: float32[3] = [1.0, 2.0, 3.0]
  param %shift: float32[3] = [0.0, 1.0, -1.0]
  param %mean: float32[3] = [1.0, 0.0, 2.0]
  param %var: float32[3] = [3.0, 0.0, 8.0]
  param %s2: float32[2] = [1.0, 2.0]
"""


@pytest.mark.parametrize("case", list(NO_FIRE))
def test_must_not_fire(case: str) -> None:
    graph = optc.parse_graph('graph g {\n  opset "" = 15\n  input %x: float32[1,2,4,4]\n'
                             + PARAMS + NO_FIRE[case] + "\n}")
    optc.verify(graph, types=True)
    assert FoldBatchNorm().run(graph, PassContext()) is graph


# -- ConvTranspose and Gemm, random weights ------------------------------------------------

def bn_after(layer: Node, channels: int, rng: np.random.Generator,
             params: dict[str, np.ndarray], out: Value) -> Node:
    params.update({
        "scale": rng.uniform(0.5, 1.5, channels).astype(np.float32),
        "shift": rng.normal(0, 0.5, channels).astype(np.float32),
        "mean": rng.normal(0, 0.5, channels).astype(np.float32),
        "var": rng.uniform(0.1, 2.0, channels).astype(np.float32),
    })
    return Node("BatchNormalization", (layer.outputs[0].name, "scale", "shift", "mean", "var"),
                (out,), {"epsilon": 1e-3})


def check_folds(graph: Graph, feeds: dict[str, np.ndarray]) -> None:
    after = fold(graph)
    assert op_count(after, "BatchNormalization") == 0
    assert len(after.params) == 2  # statistics gone; only the new weight and bias remain
    expected = run_onnxruntime(graph, feeds)
    assert_outputs_close(expected, run_onnxruntime(after, feeds))
    assert_outputs_close(expected, run_reference(after, feeds))


@pytest.mark.parametrize(("group", "bias"), [(1, True), (2, False), (3, True)])
def test_conv_transpose(group: int, bias: bool) -> None:
    rng = np.random.default_rng(group)
    c_in, c_out = 6, 12
    params = {"w": rng.normal(size=(c_in, c_out // group, 3, 3)).astype(np.float32)}
    inputs = ["x", "w"]
    if bias:
        params["b"] = rng.normal(size=c_out).astype(np.float32)
        inputs.append("b")
    hidden = Value("c", "float32", (1, c_out, 9, 9))
    layer = Node("ConvTranspose", tuple(inputs), (hidden,),
                 {"group": group, "strides": (2, 2), "pads": (1, 1, 1, 1)})
    out = Value("y", "float32", (1, c_out, 9, 9))
    bn = bn_after(layer, c_out, rng, params, out)
    graph = Graph((Value("x", "float32", (1, c_in, 5, 5)),), (layer, bn), (out,), params,
                  opsets={"": 17})
    check_folds(graph, {"x": rng.normal(size=(1, c_in, 5, 5)).astype(np.float32)})


@pytest.mark.parametrize(("trans_b", "c_shape", "beta"), [
    (0, None, 1.0), (1, (7,), 0.5), (1, (1, 7), 2.0), (0, (3, 7), 1.0)])
def test_gemm(trans_b: int, c_shape: tuple[int, ...] | None, beta: float) -> None:
    rng = np.random.default_rng(trans_b + (len(c_shape) if c_shape else 0))
    params = {"w": rng.normal(size=(7, 5) if trans_b else (5, 7)).astype(np.float32)}
    inputs = ["x", "w"]
    if c_shape is not None:
        params["b"] = rng.normal(size=c_shape).astype(np.float32)
        inputs.append("b")
    hidden = Value("c", "float32", (3, 7))
    layer = Node("Gemm", tuple(inputs), (hidden,), {"transB": trans_b, "beta": beta,
                                                   "alpha": 0.75})
    out = Value("y", "float32", (3, 7))
    bn = bn_after(layer, 7, rng, params, out)
    graph = Graph((Value("x", "float32", (3, 5)),), (layer, bn), (out,), params,
                  opsets={"": 17})
    check_folds(graph, {"x": rng.normal(size=(3, 5)).astype(np.float32)})


# -- real models ---------------------------------------------------------------------------

def bn_after_conv(graph: Graph) -> list[str]:
    """Outputs of the BatchNormalization nodes that directly follow a Conv."""
    found = []
    for node in graph.nodes:
        producer = graph.producer(node.inputs[0]) if node.inputs else None
        if node.op == "BatchNormalization" and producer is not None and producer.op == "Conv":
            found.append(node.outputs[0].name)
    return found


@pytest.mark.parametrize("model", ["resnet50", "inception_v2", "densenet121", "shufflenet"])
def test_light_models(model: str) -> None:
    graph = parse_pipeline("fold-constants,eliminate-dead-code").run(light_model(model)).graph
    watched = bn_after_conv(graph)
    assert watched, "the model has BatchNormalization after Conv"
    # Compare every folded BatchNormalization's output, not just the final softmax, which
    # the light models' constant weights make insensitive.
    graph = with_outputs(graph, watched)
    after = fold(graph)
    assert bn_after_conv(after) == []
    others = op_count(graph, "BatchNormalization") - len(watched)
    assert op_count(after, "BatchNormalization") == others  # DenseNet's BN after pooling
    feeds = ramp_inputs(graph)
    assert_outputs_close(run_onnxruntime(graph, feeds), run_onnxruntime(after, feeds))


def test_resnet50_with_random_weights_and_statistics() -> None:
    """Per-channel values differ here (every light-model weight is 0.02)."""
    graph = parse_pipeline("fold-constants,eliminate-dead-code").run(light_model("resnet50")).graph
    graph = with_outputs(randomized(graph, np.random.default_rng(50)), bn_after_conv(graph))
    after = fold(graph)
    assert op_count(after, "BatchNormalization") == 0
    feeds = ramp_inputs(graph)
    expected = run_onnxruntime(graph, feeds)
    assert_outputs_close(expected, run_onnxruntime(after, feeds))
    assert_outputs_close(expected, run_reference(after, feeds))


def randomized(graph: Graph, rng: np.random.Generator) -> Graph:
    """He-initialized weights and plausible BatchNormalization statistics."""
    params = dict(graph.params)
    for node in graph.nodes:
        if node.op in ("Conv", "Gemm"):
            weight = params[node.inputs[1]]
            transposed = node.op == "Gemm" and not node.attr("transB", 0)
            fan_in = weight.shape[0] if transposed else int(np.prod(weight.shape[1:]))
            params[node.inputs[1]] = rng.normal(0, np.sqrt(2 / fan_in), weight.shape).astype(
                np.float32)
        if node.op == "BatchNormalization":
            scale, shift, mean, var = node.inputs[1:5]
            n = params[scale].shape[0]
            params[scale] = rng.uniform(0.5, 1.5, n).astype(np.float32)
            params[shift] = rng.normal(0, 0.1, n).astype(np.float32)
            params[mean] = rng.normal(0, 0.1, n).astype(np.float32)
            params[var] = rng.uniform(0.5, 1.5, n).astype(np.float32)
    return graph.replace(params=params)
