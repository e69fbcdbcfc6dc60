"""Heavy: more real models through TVM on this CPU, and ResNet50 for Orin's GPU.

Run with ``pytest -m heavy tests/test_codegen_models.py``. EfficientNet-Lite0 and
MiniLM carry real weights; their exports compute padding and shapes with ``Shape``
arithmetic that TVM's importer refuses ("Dynamic pads"), so they go through optc's
fold-constants pipeline first, as ``optc compile`` does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import model_zoo
import numpy as np
import pytest
from pass_support import (
    assert_outputs_close,
    light_model,
    ramp_inputs,
    run_onnxruntime,
    run_reference,
    with_outputs,
)
from test_codegen_support import EM_AARCH64, elf_machine, probe_values

import optc
from optc.codegen import build, host_target, load_artifact, run, write_artifact
from optc.codegen.cuda import fatbin_entries
from optc.ir.graph import Graph
from optc.pipeline import parse_pipeline

pytestmark = pytest.mark.heavy

FOLD = "fold-constants,fold-batchnorm,eliminate-dead-code"
# VGG19 is left out: its 144 M constant weights make a 550 MB library.
LIGHT = ("bvlc_alexnet", "zfnet512", "shufflenet", "inception_v1", "inception_v2",
         "densenet121")


def compile_and_run(graph: Graph, feeds: dict, folder: Path) -> dict[str, np.ndarray]:
    built = build(graph, host_target())
    return run(load_artifact(write_artifact(built, folder / "artifact")), feeds)


@pytest.mark.parametrize("name", LIGHT)
def test_light_model_matches_reference(name: str, tmp_path: Path) -> None:
    graph = light_model(name)
    graph = with_outputs(graph, probe_values(graph, 3))
    feeds = ramp_inputs(graph)
    outputs = compile_and_run(graph, feeds, tmp_path)
    assert_outputs_close(run_reference(graph, feeds), outputs)
    np.testing.assert_allclose(outputs[graph.output_names[0]],
                               model_zoo.light_reference_output(name), rtol=1e-5)


def folded(path: Path) -> Graph:
    return parse_pipeline(FOLD).run(optc.load_onnx(path)).graph


def test_efficientnet_lite0_on_photos(tmp_path_factory: pytest.TempPathFactory,
                                      tmp_path: Path) -> None:
    graph = folded(model_zoo.efficientnet_onnx(tmp_path_factory, dynamo=False))
    built = build(graph, host_target())
    loaded = load_artifact(write_artifact(built, tmp_path / "artifact"))
    for photo in (0, 1):
        feeds = {graph.input_names[0]: model_zoo.sample_photo(photo)}
        outputs, expected = run(loaded, feeds), run_onnxruntime(graph, feeds)
        assert_outputs_close(expected, outputs)
        assert outputs["output"].argmax() == expected["output"].argmax()


def test_minilm(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    graph = folded(model_zoo.minilm_onnx(tmp_path_factory, dynamo=False))
    feeds = model_zoo.minilm_inputs()
    assert_outputs_close(run_onnxruntime(graph, feeds), compile_and_run(graph, feeds, tmp_path))


@pytest.mark.skipif(shutil.which("nvcc") is None or shutil.which("aarch64-linux-gnu-g++") is None,
                    reason="needs nvcc and aarch64-linux-gnu-g++")
def test_resnet50_for_orin(tmp_path: Path) -> None:
    built = build(light_model("resnet50"), "nvidia/jetson-agx-orin-64gb",
                  cross_compiler="aarch64-linux-gnu-g++")
    artifact = write_artifact(built, tmp_path / "orin")
    assert elf_machine(artifact / "model.so") == EM_AARCH64
    assert set(fatbin_entries((artifact / "model.so").read_bytes())) == {
        ("sass", "sm_87"), ("ptx", "sm_87")}
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["target"]["host"]["mcpu"] == "cortex-a78"
