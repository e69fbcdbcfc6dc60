"""Roofline rules: every interpreter op has one; FLOPs and bytes match hand computations."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from optc.cost import NodeCost, RooflineModel
from optc.cost.rules import RULES
from optc.errors import UnsupportedOpError, UserInputError
from optc.frontend import from_onnx
from optc.interp import supported_ops
from optc.ir.graph import Graph
from optc.target import Target, get_target

F32 = TensorProto.FLOAT


def graph(nodes: Sequence[onnx.NodeProto], inputs: Sequence[tuple[str, int, list]],
          outputs: Sequence[str | tuple[str, int, list]],
          params: dict[str, np.ndarray] | None = None, opset: int = 18) -> Graph:
    """A typed IR graph from ONNX nodes; output types given, or as ONNX infers them."""
    typed = [o for o in outputs if isinstance(o, tuple)]
    named = [o for o in outputs if isinstance(o, str)]
    body = helper.make_graph(
        list(nodes), "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [*(helper.make_empty_tensor_value_info(n) for n in named),
         *(helper.make_tensor_value_info(n, t, s) for n, t, s in typed)],
        [numpy_helper.from_array(v, k) for k, v in (params or {}).items()])
    model = helper.make_model(body, opset_imports=[helper.make_opsetid("", opset)])
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    for output in model.graph.output[:len(named)]:
        output.CopyFrom(inferred[output.name])
    return from_onnx(model)


@pytest.fixture(scope="module")
def orin() -> Target:
    return get_target("orin")


def rows(g: Graph, target: Target) -> dict[str, NodeCost]:
    return {row.name: row for row in RooflineModel().breakdown(g, target).nodes}


def test_every_interpreter_op_has_a_cost_rule() -> None:
    missing = sorted(set(supported_ops()) - set(RULES))
    assert not missing, f"ops without a roofline rule: {missing}"


def test_grouped_dilated_conv(orin: Target) -> None:
    w = np.ones((16, 4, 3, 3), np.float32)
    b = np.ones(16, np.float32)
    g = graph([helper.make_node("Conv", ["x", "w", "b"], ["y"], "conv", group=2,
                                dilations=[2, 2], pads=[2, 2, 2, 2])],
              [("x", F32, [1, 8, 16, 16])], ["y"], {"w": w, "b": b})
    row = rows(g, orin)["conv"]
    outputs = 16 * 16 * 16
    assert row.flops == 2 * outputs * (4 * 3 * 3) + outputs  # MACs x 2 + bias
    assert row.bytes == 4 * (8 * 16 * 16 + w.size + b.size + outputs)
    assert row.op_class == "conv" and row.bound in ("compute", "memory", "launch")


def test_depthwise_conv_has_its_own_class(orin: Target) -> None:
    g = graph([helper.make_node("Conv", ["x", "w"], ["y"], "dw", group=8, pads=[1, 1, 1, 1])],
              [("x", F32, [1, 8, 10, 10])], ["y"], {"w": np.ones((8, 1, 3, 3), np.float32)})
    row = rows(g, orin)["dw"]
    assert row.op_class == "depthwise"
    assert row.flops == 2 * 8 * 100 * 9


def test_conv_transpose(orin: Target) -> None:
    g = graph([helper.make_node("ConvTranspose", ["x", "w"], ["y"], "up", strides=[2, 2])],
              [("x", F32, [1, 4, 5, 5])], ["y"], {"w": np.ones((4, 2, 3, 3), np.float32)})
    assert g.value("y").shape == (1, 2, 11, 11)
    assert rows(g, orin)["up"].flops == 2 * (4 * 25) * (2 * 9)


def test_gemm_with_transposed_b_bias_and_alpha(orin: Target) -> None:
    params = {"b": np.ones((4, 5), np.float32), "c": np.ones(4, np.float32)}
    g = graph([helper.make_node("Gemm", ["a", "b", "c"], ["y"], "gemm", transB=1, alpha=0.5)],
              [("a", F32, [3, 5])], ["y"], params)
    assert rows(g, orin)["gemm"].flops == 2 * 3 * 4 * 5 + 12 + 12  # + beta*C + alpha scaling


def test_batched_broadcast_matmul_and_einsum_agree(orin: Target) -> None:
    g = graph([helper.make_node("MatMul", ["a", "b"], ["y"], "mm")],
              [("a", F32, [2, 1, 3, 5]), ("b", F32, [4, 5, 6])], ["y"])
    assert g.value("y").shape == (2, 4, 3, 6)
    assert rows(g, orin)["mm"].flops == 2 * (2 * 4 * 3 * 6) * 5
    e = graph([helper.make_node("Einsum", ["a", "b"], ["y"], "es", equation="bij,bjk->bik")],
              [("a", F32, [2, 3, 4]), ("b", F32, [2, 4, 5])], ["y"])
    m = graph([helper.make_node("MatMul", ["a", "b"], ["y"], "mm")],
              [("a", F32, [2, 3, 4]), ("b", F32, [2, 4, 5])], ["y"])
    assert rows(e, orin)["es"].flops == rows(m, orin)["mm"].flops == 2 * 2 * 3 * 5 * 4


def test_matmul_integer_uses_the_int8_peak(orin: Target) -> None:
    g = graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"], "qmm")],
              [("a", TensorProto.INT8, [64, 128])], ["y"],
              {"b": np.ones((128, 32), np.int8)})
    row = rows(g, orin)["qmm"]
    assert row.dtype == "int8"
    assert row.flops == 2 * 64 * 32 * 128
    assert row.compute_s == pytest.approx(row.flops / orin.peak("int8"))
    assert row.bytes == 64 * 128 + 128 * 32 + 4 * 64 * 32  # int8 in, int32 out


@pytest.mark.parametrize(("op", "extra"), [("MaxPool", 0), ("AveragePool", 48)])
def test_pooling(orin: Target, op: str, extra: int) -> None:
    g = graph([helper.make_node(op, ["x"], ["y"], "pool", kernel_shape=[2, 2], strides=[2, 2])],
              [("x", F32, [1, 3, 8, 8])], ["y"])
    assert rows(g, orin)["pool"].flops == 48 * 4 + extra


def test_softmax_layernorm_reduce_count_transcendentals(orin: Target) -> None:
    g = graph([helper.make_node("Softmax", ["x"], ["s"], "softmax"),
               helper.make_node("LayerNormalization", ["s", "scale"], ["n"], "ln"),
               helper.make_node("ReduceMean", ["n", "axes"], ["r"], "mean", keepdims=0)],
              [("x", F32, [4, 8])], ["r"],
              {"scale": np.ones(8, np.float32), "axes": np.array([1], np.int64)})
    found = rows(g, orin)
    assert (found["softmax"].flops, found["softmax"].transcendentals) == (4 * 32 + 32, 32)
    assert (found["ln"].flops, found["ln"].transcendentals) == (7 * 32 + 4, 4)
    assert found["mean"].flops == 32 + 4
    weight = 16.0  # an exp costs 16 operations on a GPU (override for kind "cuda")
    assert found["softmax"].compute_s == pytest.approx((4 * 32 + weight * 32) / orin.peak(
        "float32"))


def test_views_are_free_and_shape_arithmetic_is_folded(orin: Target) -> None:
    g = graph([helper.make_node("Shape", ["x"], ["s"], "shape"),
               helper.make_node("Gather", ["s", "zero"], ["n"], "first", axis=0),
               helper.make_node("Concat", ["n", "minus1"], ["new"], "cat", axis=0),
               helper.make_node("Reshape", ["x", "new"], ["r"], "reshape"),
               helper.make_node("Relu", ["r"], ["y"], "relu")],
              [("x", F32, [2, 3, 4])], ["y"],
              {"zero": np.array([0], np.int64), "minus1": np.array([-1], np.int64)})
    found = rows(g, orin)
    assert [found[n].bound for n in ("shape", "first", "cat")] == ["folded"] * 3
    assert found["reshape"].bound == "free" and found["reshape"].bytes == 0
    assert found["relu"].bytes == 2 * 4 * 24 and found["relu"].launches == 1
    unfolded = {r.name: r for r in RooflineModel(fold_constants=False).breakdown(g, orin).nodes}
    assert unfolded["cat"].launches == 1 and unfolded["shape"].bound == "free"


def test_slice_reads_only_what_it_keeps(orin: Target) -> None:
    params = {"starts": np.array([0], np.int64), "ends": np.array([2], np.int64),
              "axes": np.array([0], np.int64)}
    g = graph([helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"], "slice")],
              [("x", F32, [10, 100])], ["y"], params)
    assert rows(g, orin)["slice"].bytes == 800 + 800 + 3 * 8  # kept rows, output, indices


def test_bytes_follow_the_dtype(orin: Target) -> None:
    def add(dtype: int) -> NodeCost:
        g = graph([helper.make_node("Add", ["a", "b"], ["y"], "add")],
                  [("a", dtype, [32, 32]), ("b", dtype, [32])], ["y"])
        return rows(g, orin)["add"]

    single, half = add(F32), add(TensorProto.FLOAT16)
    assert single.bytes == 4 * (1024 + 32 + 1024)  # the broadcast input is read once
    assert half.bytes == single.bytes / 2 and half.dtype == "float16"
    assert half.flops == single.flops == 1024


def test_unknown_dimension_is_a_clear_error(orin: Target) -> None:
    g = graph([helper.make_node("Relu", ["x"], ["y"], "relu")], [("x", F32, ["N", 4])], ["y"])
    with pytest.raises(UserInputError, match=r"Relu node 'relu': value '[xy]' has no static "
                                             r"shape \(\['N', 4\]\)"):
        RooflineModel().estimate(g, orin)


def test_data_dependent_output_uses_an_upper_bound(orin: Target) -> None:
    g = graph([helper.make_node("NonZero", ["x"], ["y"], "nz")], [("x", F32, [3, 5])], ["y"])
    assert not g.value("y").is_static()
    assert rows(g, orin)["nz"].bytes == 4 * 15 + 8 * 2 * 15  # every element non-zero


def test_foreign_domain_op_is_unsupported(orin: Target) -> None:
    node = helper.make_node("FusedGemm", ["a", "b"], ["y"], "fg", domain="com.microsoft")
    model = helper.make_model(
        helper.make_graph([node], "g", [helper.make_tensor_value_info("a", F32, [2, 2]),
                                        helper.make_tensor_value_info("b", F32, [2, 2])],
                          [helper.make_tensor_value_info("y", F32, [2, 2])]),
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])
    with pytest.raises(UnsupportedOpError, match=r"'com\.microsoft::FusedGemm' is not "
                                                 r"supported by the roofline cost model"):
        RooflineModel().estimate(from_onnx(model, infer_shapes=False), orin)
