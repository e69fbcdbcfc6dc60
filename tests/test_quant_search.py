"""The bisection search and the latency models, on explicit drop and latency functions."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import pytest

import optc
from optc.pipeline import PassContext
from optc.quant import FP16, FP32, LayerPrecision
from optc.quant.evaluate import Measure
from optc.quant.latency import (
    INT8_DEPTHWISE_AVX2,
    INT8_DEPTHWISE_VNNI,
    INT8_SPATIAL,
    host_rates,
    latency_model,
    proxy_latency,
)
from optc.quant.layers import quantizable_layers
from optc.quant.search import Trial, bisect_ladder, longest_feasible_prefix

W8 = LayerPrecision(8, 8)
W6 = LayerPrecision(6, 8)
W4 = LayerPrecision(4, 8)
W4A16 = LayerPrecision(4, 16)
KEYS = [f"layer{i}" for i in range(13)]
COST = {FP16: 0.001, W8: 0.004, W4: 0.02}  # drop contributed per layer at each precision


def additive(max_drop: float, calls: list[Mapping[str, LayerPrecision]]):
    """Drop adds up per lowered layer; latency falls with every narrower layer."""
    def evaluate(assignment: Mapping[str, LayerPrecision]) -> Trial:
        calls.append(dict(assignment))
        drop = sum(COST[p] for p in assignment.values())
        latency = sum(p.weight_bits for p in assignment.values()) + 32 * (
            len(KEYS) - len(assignment))
        return Trial(assignment, Measure(drop, 1 - drop, drop), latency, drop <= max_drop)

    return evaluate


def graph_order(precision: LayerPrecision, keys: Sequence[str],
                current: Mapping[str, LayerPrecision]) -> list[str]:
    return list(keys)


def test_prefix_bisection_is_logarithmic() -> None:
    calls: list = []
    count, trials = longest_feasible_prefix(KEYS, W4, {}, additive(0.1, calls))
    assert count == 5  # 5 * 0.02 = 0.1 fits, 6 do not
    assert len(trials) <= math.ceil(math.log2(len(KEYS)))


def test_ladder_lowers_step_by_step() -> None:
    calls: list = []
    result = bisect_ladder(KEYS, [FP16, W8, W4], graph_order, additive(0.05, calls))
    chosen = result.chosen.assignment
    # fp16 everywhere fits (0.013); int8 everywhere costs 0.052 > 0.05: 12 layers take
    # int8 (0.049); int4 adds 0.016 per layer over int8: none fits (0.049 + 0.016 > 0.05)
    assert sum(p == W8 for p in chosen.values()) == 12
    assert sum(p == FP16 for p in chosen.values()) == 1
    assert result.chosen.feasible and result.chosen.measure.drop <= 0.05
    assert result.chosen.latency_s == min(t.latency_s for t in result.trials if t.feasible)
    assert "fp16" not in result.orders  # fp16 fit at once: no order was needed
    assert list(result.orders["w8a8"]) == KEYS


def test_a_step_skips_layers_it_would_not_speed_up() -> None:
    """``eligible`` keeps layers out of a step (6-bit codes on a depthwise conv, which the
    6-bit kernel does not run): they stay at the width above, and never go lower."""
    skip = set(KEYS[:3])
    result = bisect_ladder(KEYS, [W8, W4], graph_order, additive(1.0, []),
                           lambda p, k: p != W4 or k not in skip)
    chosen = result.chosen.assignment
    assert all(chosen[k] == (W8 if k in skip else W4) for k in KEYS)


def test_nothing_fits() -> None:
    result = bisect_ladder(KEYS, [W4], graph_order, additive(0.0, []))
    assert result.chosen.assignment == {}
    assert all(not t.feasible for t in result.trials[1:])


def test_proxy_latency_follows_the_host() -> None:
    graph = optc.load_onnx(optc.__path__[0] + "/../examples/models/digits_cnn.onnx")
    layers = quantizable_layers(graph)
    assert all(layer.macs > 0 for layer in layers)
    every = {bits: {layer.key: bits for layer in layers}
             for bits in (FP16, W8, W6, W4, W4A16)}
    # A CPU with float16 arithmetic and VNNI: float16 is faster, and 4-bit codes are
    # stored as int8, so w4a8 costs what w8a8 does.
    native = proxy_latency(layers, host_rates({"avx512_fp16", "avx512_vnni"}))
    fp32 = native(graph, {})
    assert fp32 > native(graph, every[FP16])
    assert native(graph, every[W4]) == native(graph, every[W8])
    # Zen 3 (AVX2 only): float16 runs on float32 units, converted: slower than fp32.
    plain = proxy_latency(layers, host_rates({"avx2", "f16c", "fma"}))
    assert plain(graph, {}) == fp32
    assert plain(graph, every[FP16]) > fp32 > plain(graph, every[W4A16])
    # ... and codes of at most 6 bits run on the faster vpmaddubsw-pairs kernel (4-bit
    # ones too: stored as int8, no faster than 6-bit).
    assert plain(graph, every[W4]) == plain(graph, every[W6]) < plain(graph, every[W8])
    assert native(graph, every[W6]) == native(graph, every[W8])
    fn, name = latency_model(PassContext(), layers, graph)
    assert name == "proxy" and fn(graph, {}) == fp32


@pytest.mark.parametrize("flags", [{"avx512_vnni"}, {"avx2"}])
def test_int8_priced_by_the_kernel_optc_gives_the_layer(flags: set[str]) -> None:
    """The digits CNN: a 1-channel stem (computed in float32), two 3x3 convolutions
    (16 -> 32 and 32 -> 64 channels: implicit GEMMs on the packed dot-product kernels)
    and a Linear layer (packed); all-int8 is faster than float32, as measured
    (``optc.quant.latency``). A convolution left to the generic int32 loop (grouped, or
    channels not multiples of 4 in / 8 out) is priced slower than float32."""
    graph = optc.load_onnx(optc.__path__[0] + "/../examples/models/digits_cnn.onnx")
    layers = quantizable_layers(graph)
    assert [layer.kind for layer in layers] == ["stem", "dot", "dot", "dot"]
    rates = host_rates(flags)
    for layer in layers:
        fp32, int8 = rates.layer_seconds(layer, FP32), rates.layer_seconds(layer, W8)
        assert int8 == pytest.approx(fp32 if layer.kind == "stem" else fp32 * rates.int8_factor)
        assert (int8 < fp32) == (layer.kind == "dot")
        generic = dataclasses.replace(layer, kind="spatial")
        assert rates.layer_seconds(generic, W8) == pytest.approx(fp32 * INT8_SPATIAL)
        assert INT8_SPATIAL > 1
        # a depthwise conv runs on float32 vectors (exact), about float32's speed
        depthwise = dataclasses.replace(layer, kind="depthwise")
        factor = INT8_DEPTHWISE_VNNI if "avx512_vnni" in flags else INT8_DEPTHWISE_AVX2
        assert rates.layer_seconds(depthwise, W8) == pytest.approx(fp32 * factor)
        assert 0.8 < factor < 1.1
    plain = proxy_latency(layers, rates)
    assert plain(graph, {layer.key: W8 for layer in layers}) < plain(graph, {})


def test_ladder_skips_a_width_that_is_not_faster() -> None:
    """fp16 priced like fp32 (no float16 arithmetic) and int4 like int8 (int8 codes):
    neither step is taken, and int8 is tried on every layer from fp32."""
    calls: list = []
    costs = {FP16: 32, W8: 8, W4: 8}

    def evaluate(assignment: Mapping[str, LayerPrecision]) -> Trial:
        calls.append(dict(assignment))
        drop = sum(COST[p] for p in assignment.values())
        latency = sum(costs[p] for p in assignment.values()) + 32 * (len(KEYS) - len(assignment))
        return Trial(assignment, Measure(drop, 1 - drop, drop), latency, drop <= 0.05)

    result = bisect_ladder(KEYS, [FP16, W8, W4], graph_order, evaluate)
    chosen = result.chosen.assignment
    assert sum(p == W8 for p in chosen.values()) == 12  # 12 * 0.004 fits, 13 do not
    assert all(p == W8 for p in chosen.values())
    assert "fp16" not in result.orders and "w4a8" not in result.orders
    assert sum(W4 in a.values() for a in calls) == 1  # only the all-at-once probe


def test_latency_from_a_context_analysis() -> None:
    graph = optc.load_onnx(optc.__path__[0] + "/../examples/models/digits_cnn.onnx")
    layers = quantizable_layers(graph)

    def nodes_as_seconds(g: optc.Graph, ctx: PassContext) -> float:
        return 1e-3 * len(g.nodes)

    ctx = PassContext(analyses={"latency": nodes_as_seconds})
    fn, name = latency_model(ctx, layers, graph)
    assert name == "ctx.analyses['latency']"
    assert fn(graph, {}) == pytest.approx(1e-3 * len(graph.nodes))


def test_latency_from_the_roofline_model() -> None:
    pytest.importorskip("optc.cost.roofline")
    from optc.target import get_target

    graph = optc.load_onnx(optc.__path__[0] + "/../examples/models/digits_cnn.onnx")
    layers = quantizable_layers(graph)
    fn, name = latency_model(PassContext(target=get_target("orin", calibrate=False)),
                             layers, graph)
    assert name == "roofline(orin)"
    assert fn(graph, {}) > 0
