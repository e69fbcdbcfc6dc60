"""Heavy: what TVM really generates for fused graphs, counted in the compiled module.

The kernel count is read from the Relax VM bytecode (``optc.fusion.kernel_count``):
distinct generated PrimFuncs and calls per inference. Run with
``pytest -m heavy tests/test_pass_fuse_tvm.py``.
"""

from __future__ import annotations

from pathlib import Path

import model_zoo
import pytest
from pass_support import assert_outputs_close, op_count, run_onnxruntime

import optc
from optc.codegen import build, host_target, load_artifact, run, write_artifact
from optc.cost.roofline import RooflineModel
from optc.fusion.kernel_count import compare, kernel_calls, kernel_summary
from optc.ir.graph import Graph
from optc.passes.fuse import Fuse
from optc.pipeline import PassContext, parse_pipeline
from optc.target import get_target

pytestmark = pytest.mark.heavy

FOLD = "fold-constants,eliminate-dead-code"
LAYOUT_KERNEL = "transpose"
"""optc's CPU preparation turns the NCHW input image channels-last in one kernel of its
own; the roofline model prices the graph as given and does not see it."""


def prepared(path: Path) -> Graph:
    return parse_pipeline(FOLD).run(optc.load_onnx(path)).graph


def test_efficientnet_kernels_match_the_roofline(tmp_path_factory: pytest.TempPathFactory,
                                                 ) -> None:
    orin = get_target("orin")
    graph = prepared(model_zoo.efficientnet_onnx(tmp_path_factory, dynamo=False))
    after = Fuse().run(graph, PassContext(target=orin))
    # merge=False: the fusion groups themselves, before optc merges small kernels
    found = compare(after, build(after, host_target(), merge=False).executable, orin)
    assert found.difference == found.by_name[LAYOUT_KERNEL]  # the only kernel not predicted
    assert found.predicted < RooflineModel().estimate(graph, orin).launches
    # Every conv kernel TVM generated carries its epilogue, as the groups said.
    assert all("conv2d" in name and "add" in name for name in found.by_name
               if name not in (LAYOUT_KERNEL, "mean") and "matmul" not in name)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_minilm_attention_is_one_kernel(tmp_path_factory: pytest.TempPathFactory,
                                        tmp_path: Path, dynamo: bool) -> None:
    graph = prepared(model_zoo.minilm_onnx(tmp_path_factory, dynamo=dynamo))
    after = Fuse().run(graph, PassContext())
    assert op_count(after, "Attention") == 6
    plain = kernel_summary(build(graph, host_target(), merge=False).executable)
    built = build(after, host_target(), merge=False)
    calls = kernel_calls(built.executable)
    # R.nn.attention becomes one kernel per layer (scores, softmax and context together).
    assert sum(count for name, count in calls.items() if "attention" in name) == 6
    assert sum(calls.values()) < plain["launches"]
    feeds = model_zoo.minilm_inputs()
    outputs = run(load_artifact(write_artifact(built, tmp_path / "artifact")), feeds)
    assert_outputs_close(run_onnxruntime(graph, feeds), outputs)
