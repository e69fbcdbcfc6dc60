"""The example plugin's ``remove-identity`` pass itself, imported from its source folder."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from pass_support import (
    assert_outputs_close,
    golden,
    light_model,
    op_count,
    ramp_inputs,
    run_onnxruntime,
)

import optc
from optc.ir.graph import Graph
from optc.pipeline import Pass, PassContext, check_registry

SOURCE = (Path(__file__).resolve().parents[1] / "examples" / "optc-example-plugin" / "src"
          / "optc_example_plugin" / "remove_identity.py")


@pytest.fixture(scope="module")
def remove_identity() -> type[Pass]:
    # The plugin is not installed in the test environment (test_plugins.py installs it
    # into a temporary folder); load its module straight from the source file.
    name = "optc_example_plugin_under_test"
    spec = importlib.util.spec_from_file_location(name, SOURCE)
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolves annotations through sys.modules
    spec.loader.exec_module(module)
    cls = module.RemoveIdentity
    check_registry({"remove-identity": cls})
    return cls


def run(cls: type[Pass], graph: Graph, **options: object) -> Graph:
    after = cls.configure(options).run(graph, PassContext())
    optc.verify(after, types=True)
    return after


def test_golden(remove_identity: type[Pass]) -> None:
    before, after = golden("remove_identity", "rewire")
    result = run(remove_identity, optc.parse_graph(before))
    assert optc.print_graph(result) == after


def test_golden_numerics(remove_identity: type[Pass]) -> None:
    graph = optc.parse_graph(golden("remove_identity", "rewire")[0])
    result = run(remove_identity, graph)
    for cond in (True, False):
        feeds = {"x": np.array([-1.5, 2.0], np.float32), "cond": np.array(cond)}
        assert_outputs_close(run_onnxruntime(graph, feeds), run_onnxruntime(result, feeds))


def dropout_graph(training: str = "false", mask_is_output: bool = False) -> Graph:
    mask = ", %m: bool[4]" if mask_is_output else ""
    return optc.parse_graph(f"""graph g {{
      opset "" = 17
      input %x: float32[4]
      param %ratio: float32[] = [0.5]
      param %train: bool[] = [{training}]
      %y: float32[4]{mask} = Dropout(%x, %ratio, %train)
      %z: float32[4] = Relu(%y)
      output %z: float32[4]
      {"output %m: bool[4]" if mask_is_output else ""}
    }}""")


@pytest.mark.parametrize("graph_fn", [
    lambda: dropout_graph(training="true"),
    lambda: dropout_graph(mask_is_output=True),
])
def test_dropout_that_must_stay(remove_identity: type[Pass], graph_fn) -> None:
    graph = graph_fn()
    assert remove_identity().run(graph, PassContext()) is graph


def test_dropout_option_off_keeps_dropout(remove_identity: type[Pass]) -> None:
    graph = dropout_graph()
    assert remove_identity.configure({"dropout": "false"}).run(graph, PassContext()) is graph
    assert op_count(run(remove_identity, graph), "Dropout") == 0


def test_identity_between_interface_values_stays(remove_identity: type[Pass]) -> None:
    graph = optc.parse_graph("""graph g {
      opset "" = 17
      input %x: float32[2]
      %y: float32[2] = Identity(%x)
      output %y: float32[2]
    }""")
    assert remove_identity().run(graph, PassContext()) is graph


def test_real_model_vgg19(remove_identity: type[Pass]) -> None:
    graph = light_model("vgg19")
    result = run(remove_identity, graph)
    assert op_count(graph, "Dropout") == 2 and op_count(result, "Dropout") == 0
    feeds = ramp_inputs(graph)
    assert_outputs_close(run_onnxruntime(graph, feeds), run_onnxruntime(result, feeds))
