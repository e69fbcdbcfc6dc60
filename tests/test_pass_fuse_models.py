"""fuse on real models: MiniLM (both exporters), EfficientNet-Lite0 (both exporters) and
onnx's ``light`` CNNs, checked against onnxruntime and the reference interpreter."""

from __future__ import annotations

from pathlib import Path

import model_zoo
import numpy as np
import pytest
from pass_support import (
    assert_outputs_close,
    op_count,
    ramp_inputs,
    run_onnxruntime,
    run_reference,
)

import optc
from optc.cost.roofline import RooflineModel
from optc.fusion import FAMILIES
from optc.ir.annotations import FusionGroup
from optc.ir.graph import Graph
from optc.passes.fuse import Fuse
from optc.pipeline import PassContext, parse_pipeline
from optc.target import get_target

FOLD = "fold-constants,eliminate-dead-code"
EXPORTERS = pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])


def prepared(path: Path) -> Graph:
    return parse_pipeline(FOLD).run(optc.load_onnx(path)).graph


def fused(graph: Graph, target: object = None) -> Graph:
    after = Fuse(families=FAMILIES).run(graph, PassContext(target=target))
    optc.verify(after, types=True)
    return after


def group_count(graph: Graph) -> int:
    return len({a.group for n in graph.nodes for a in n.annotations if isinstance(a, FusionGroup)})


def padded(feeds: dict[str, np.ndarray], keep: int) -> dict[str, np.ndarray]:
    """The same tokens with every key after ``keep`` masked out (padding)."""
    mask = feeds["attention_mask"].copy()
    mask[:, keep:] = 0
    return {**feeds, "attention_mask": mask}


@EXPORTERS
def test_minilm(tmp_path_factory: pytest.TempPathFactory, dynamo: bool) -> None:
    graph = prepared(model_zoo.minilm_onnx(tmp_path_factory, dynamo=dynamo))
    after = fused(graph)
    assert op_count(after, "Attention") == 6  # one per layer
    assert op_count(after, "Gelu") == 6
    for gone in ("Softmax", "Erf", "Transpose"):
        assert op_count(after, gone) == 0, gone
    feeds = model_zoo.minilm_inputs()
    for case in (feeds, padded(feeds, 10)):
        expected = run_onnxruntime(graph, case)
        assert_outputs_close(expected, run_onnxruntime(after, case))
        assert_outputs_close(expected, run_reference(after, case))


@EXPORTERS
def test_efficientnet_lite0(tmp_path_factory: pytest.TempPathFactory, dynamo: bool) -> None:
    graph = prepared(model_zoo.efficientnet_onnx(tmp_path_factory, dynamo=dynamo))
    after = fused(graph, get_target("orin"))
    # Every ReLU6 (Clip), residual Add and explicit Pad (TorchScript) joins a Conv.
    grouped = {n.op for n in after.nodes if n.annotations}
    loose = {n.op for n in after.nodes if not n.annotations}
    assert {"Clip", "Add"} <= grouped and not {"Clip", "Add", "Pad"} & loose
    # One group per expand / depthwise conv (with its ReLU6) and per residual projection.
    assert group_count(after) == op_count(after, "Clip") + op_count(after, "Add")
    feeds = {graph.input_names[0]: model_zoo.sample_photo(1)}
    expected = run_onnxruntime(graph, feeds)
    assert_outputs_close(expected, run_onnxruntime(after, feeds))
    assert_outputs_close(expected, run_reference(after, feeds))


def test_roofline_sees_the_groups(tmp_path_factory: pytest.TempPathFactory) -> None:
    """On Orin's figures the fused groups save launches and traffic, as the pass scored."""
    orin = get_target("orin")
    graph = prepared(model_zoo.efficientnet_onnx(tmp_path_factory, dynamo=True))
    before = RooflineModel().estimate(graph, orin)
    after = RooflineModel().estimate(fused(graph, orin), orin)
    assert after.launches == op_count(graph, "Conv") + 2  # + GlobalAveragePool + Gemm
    assert before.launches > after.launches
    assert after.bytes < before.bytes and after.latency_s < before.latency_s


HEAVY = pytest.mark.heavy  # big constant weights: 10-20 s each on two cores
LIGHT = ("resnet50", "inception_v2", "densenet121", "shufflenet", "squeezenet",
         pytest.param("inception_v1", marks=HEAVY), pytest.param("bvlc_alexnet", marks=HEAVY),
         pytest.param("zfnet512", marks=HEAVY))


@pytest.mark.parametrize("name", LIGHT)
def test_light_models(name: str) -> None:
    graph = prepared(model_zoo.light_model_path(name))
    after = fused(graph)
    assert op_count(after, "BatchNormalization") < op_count(graph, "BatchNormalization") or \
        op_count(graph, "BatchNormalization") == 0
    assert group_count(after) > 0
    feeds = ramp_inputs(graph)
    assert_outputs_close(run_onnxruntime(graph, feeds), run_onnxruntime(after, feeds))


@pytest.mark.heavy
@pytest.mark.parametrize("name", ["resnet50", "squeezenet"])
def test_light_models_reference(name: str) -> None:
    graph = prepared(model_zoo.light_model_path(name))
    feeds = ramp_inputs(graph)
    assert_outputs_close(run_onnxruntime(graph, feeds), run_reference(fused(graph), feeds))


def test_roofline_prices_fused_minilm(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The fused attention is priced as one kernel (``optc.cost.rules.contrib``), and the
    pass scored its decisions with the roofline model, not the nominal fallback."""
    from optc.fusion.score import score_groups

    orin = get_target("orin")
    graph = prepared(model_zoo.minilm_onnx(tmp_path_factory, dynamo=True))
    after = fused(graph, orin)
    before_cost, after_cost = (RooflineModel().estimate(g, orin) for g in (graph, after))
    assert after_cost.launches < before_cost.launches / 3
    assert after_cost.bytes < before_cost.bytes
    attention = [n for n in after.nodes if n.op == "Attention"][:1]
    assert score_groups(after, [attention], orin)[0].method == "roofline"
