"""eliminate-dead-code: golden rewrite, cases where it must not fire, numerics on real models."""

from __future__ import annotations

import numpy as np
import pytest
from pass_support import (
    assert_outputs_close,
    golden,
    light_model,
    ramp_inputs,
    run_onnxruntime,
    run_reference,
)

import optc
from optc.ir.graph import Graph
from optc.passes.eliminate_dead_code import EliminateDeadCode
from optc.passes.fold_constants import FoldConstants
from optc.pipeline import PassContext


def eliminate(graph: Graph) -> Graph:
    after = EliminateDeadCode().run(graph, PassContext())
    optc.verify(after, types=True)
    return after


def test_golden_control_flow() -> None:
    before, after = golden("eliminate_dead_code", "control_flow")
    assert optc.print_graph(eliminate(optc.parse_graph(before))) == after


@pytest.mark.parametrize("cond", [True, False])
def test_golden_numerics(cond: bool) -> None:
    graph = optc.parse_graph(golden("eliminate_dead_code", "control_flow")[0])
    after = eliminate(graph)
    feeds = {"x": np.array([-1.5, 4.0], np.float32), "cond": np.array(cond)}
    expected = run_onnxruntime(graph, feeds)
    assert_outputs_close(expected, run_onnxruntime(after, feeds))
    assert_outputs_close(expected, run_reference(after, feeds))


def test_all_live_returns_the_same_graph() -> None:
    graph = optc.parse_graph(golden("eliminate_dead_code", "control_flow")[1])
    assert EliminateDeadCode().run(graph, PassContext()) is graph


def test_unused_inputs_stay_and_partly_used_nodes_stay() -> None:
    graph = optc.parse_graph("""graph g {
      opset "" = 17
      input %x: float32[4]
      input %unused: float32[4]
      param %k: int64[1] = [2]
      %values: float32[2], %indices: int64[2] = TopK(%x, %k)
      output %indices: int64[2]
    }""")
    assert EliminateDeadCode().run(graph, PassContext()) is graph


def test_real_model_untouched_when_nothing_is_dead() -> None:
    graph = light_model("inception_v1")
    assert EliminateDeadCode().run(graph, PassContext()) is graph


@pytest.mark.parametrize("model", ["squeezenet", "inception_v1"])
def test_after_folding_real_models(model: str) -> None:
    graph = FoldConstants().run(light_model(model), PassContext())
    after = eliminate(graph)
    shape_params = [n for n in graph.params if n.endswith("__SHAPE")]
    assert shape_params and not any(n in after.params for n in shape_params)
    assert after.nodes == graph.nodes  # every node was live; only the params were dead
    feeds = ramp_inputs(graph)
    expected = run_onnxruntime(light_model(model), feeds)
    assert_outputs_close(expected, run_onnxruntime(after, feeds))
    if model == "squeezenet":
        assert_outputs_close(expected, run_reference(after, feeds))
