"""Compile -> artifact -> load -> run on this CPU, compared with the reference interpreter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from pass_support import (
    LIGHT,
    assert_outputs_close,
    light_model,
    ramp_inputs,
    run_onnxruntime,
    run_reference,
    with_outputs,
)
from test_codegen_support import probe_values, tiny_cnn, tiny_feeds

from optc.codegen import build, host_target, load_artifact, run, write_artifact
from optc.errors import UnsupportedOpError, UserInputError
from optc.ir.graph import Graph, Node, Value


@pytest.fixture(scope="module")
def host() -> dict:
    return host_target()


def compile_and_run(graph: Graph, target: dict, feeds: dict, folder: Path,
                    **options: object) -> dict[str, np.ndarray]:
    built = build(graph, target, **options)
    return run(load_artifact(write_artifact(built, folder / "artifact")), feeds)


@pytest.mark.parametrize("name", ["squeezenet", "resnet50"])
def test_light_model_matches_reference(name: str, host: dict, tmp_path: Path) -> None:
    graph = light_model(name)
    graph = with_outputs(graph, probe_values(graph, 3))
    feeds = ramp_inputs(graph)
    outputs = compile_and_run(graph, host, feeds, tmp_path)
    assert_outputs_close(run_reference(graph, feeds), outputs)
    # The ONNX test suite's expected output too (uniform: the weights are constants).
    expected = numpy_helper.to_array(onnx.load_tensor(str(LIGHT / f"light_{name}_output_0.pb")))
    np.testing.assert_allclose(outputs[graph.output_names[0]], expected, rtol=1e-5)


def test_multiple_outputs_and_int64(host: dict, tmp_path: Path) -> None:
    graph, feeds = tiny_cnn(), tiny_feeds()
    outputs = compile_and_run(graph, host, feeds, tmp_path)
    assert outputs["k"].dtype == np.int64
    assert_outputs_close(run_onnxruntime(graph, feeds), outputs)


def test_symbolic_batch_needs_shapes(host: dict, tmp_path: Path) -> None:
    graph = tiny_cnn(batch="N")
    with pytest.raises(UserInputError, match=r"input 'x' has symbolic shape.*shapes="):
        build(graph, host)
    feeds = tiny_feeds(batch=3)
    outputs = compile_and_run(graph, host, feeds, tmp_path, shapes={"x": [3, 3, 8, 8]})
    assert outputs["y"].shape == (3, 5)
    assert_outputs_close(run_onnxruntime(graph, feeds), outputs)


def test_shapes_for_unknown_input_refused(host: dict) -> None:
    with pytest.raises(UserInputError, match=r"unknown inputs \['image'\]"):
        build(tiny_cnn(), host, shapes={"image": [1, 3, 8, 8]})


def _single_op(op: str, domain: str = "", opsets: dict | None = None) -> Graph:
    x = Value("x", "float32", (2, 8))
    node = Node(op, ("x",), (Value("y", "float32", (2, 8)),), domain=domain)
    return Graph((x,), (node,), (node.outputs[0],), name=op.lower(),
                 opsets=opsets or {"": 17})


def test_op_tvm_cannot_import_is_named(host: dict) -> None:
    with pytest.raises(UnsupportedOpError, match=r"'LpNormalization'.*Relax ONNX") as info:
        build(_single_op("LpNormalization"), host)
    assert info.value.op == "LpNormalization"
    assert "\n" not in str(info.value)


def test_op_of_another_domain_is_named(host: dict) -> None:
    graph = _single_op("QuickGelu", "com.microsoft", {"": 17, "com.microsoft": 1})
    with pytest.raises(UnsupportedOpError, match=r"'com.microsoft::QuickGelu'"):
        build(graph, host)


@pytest.mark.parametrize("target", [{"kind": "no-such-kind"}, {"kind": "llvm", "mcpu": 7}])
def test_bad_target_is_a_user_error(target: dict) -> None:
    with pytest.raises(UserInputError, match=r"TVM refuses the target"):
        build(tiny_cnn(), target)


def test_target_with_host_and_host_argument_refused() -> None:
    target = {"kind": "cuda", "arch": "sm_87", "host": {"kind": "llvm"}}
    with pytest.raises(UserInputError, match=r"already names a host"):
        build(tiny_cnn(), target, host={"kind": "llvm"})


def test_foreign_cpu_library_needs_cross_compiler(tmp_path: Path) -> None:
    built = build(tiny_cnn(), {"kind": "llvm", "mtriple": "aarch64-linux-gnu"})
    assert built.library_arch == "aarch64"
    with pytest.raises(UserInputError, match=r"host code is for aarch64.*cross compiler"):
        built.export_library(tmp_path / "lib.so")
