"""``compile_model`` on real architectures for this CPU: every onnx ``light`` model, MiniLM.

The light models' weights are constants, so their softmax outputs are uniform and
would agree with almost any wrong computation: each model is compiled with three
activations from inside the network as extra outputs, which ``compile_model``'s own
output check compares with the reference interpreter before writing anything. The
artifact's main output on onnx's backend inputs is then compared with the output
shipped beside the model.

Heavy (``pytest -m heavy``), from their time on a busy 2-core CPU with TVM's untuned
CPU code: VGG19 (150 s, a 550 MB library), DenseNet121 (60 s), ResNet50 (35 s: 4 s per
inference) and Inception v2 (30 s). The rest stay in the default job: SqueezeNet and
ShuffleNet 8 s each, ZFNet 15 s, Inception v1 20 s, AlexNet 25 s, MiniLM 20 s (its
torch export included).
"""

from __future__ import annotations

from pathlib import Path

import model_zoo
import numpy as np
import pytest
import torch
from pass_support import with_outputs
from test_codegen_support import probe_values
from test_compile_support import cache_dir  # noqa: F401 (a fixture)

import optc
from optc.codegen import load_artifact, run
from optc.compiler import compile_model

heavy = pytest.mark.heavy
LIGHT = ("squeezenet", "shufflenet", "bvlc_alexnet", "zfnet512", "inception_v1",
         *(pytest.param(name, marks=heavy)
           for name in ("resnet50", "inception_v2", "densenet121", "vgg19")))


@pytest.mark.parametrize("name", LIGHT)
def test_light_model(name: str, tmp_path: Path, cache_dir: Path,  # noqa: F811
                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir))
    path = model_zoo.light_model_path(name)
    graph = optc.load_onnx(path)
    probed = tmp_path / f"{name}.onnx"
    optc.save_onnx(with_outputs(graph, probe_values(graph, 3)), probed)
    result = compile_model(probed, "host", tmp_path / "artifact", repeat=1)
    check = result.report["check"]
    assert check["status"] == "passed"
    assert len(check["outputs"]) == 4
    assert all(o["within_tolerance"] for o in check["outputs"])
    assert result.report["measured"]["median_s"] > 0
    feeds = model_zoo.backend_runner_inputs(path)
    outputs = run(load_artifact(result.artifact), feeds)
    np.testing.assert_allclose(outputs[graph.output_names[0]],
                               model_zoo.light_reference_output(name), rtol=1e-4, atol=1e-7)


def test_minilm(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path,
                cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """A real transformer: the exporter's shape arithmetic is folded by the default pipeline
    (TVM refuses it otherwise), then the tokenized sentence runs as the reference does."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir))
    path = model_zoo.minilm_onnx(tmp_path_factory, dynamo=False)
    result = compile_model(path, "host", tmp_path / "artifact", repeat=1)
    assert result.report["check"]["status"] == "passed"
    assert result.report["optimized"]["nodes"] < result.report["model"]["nodes"]
    feeds = model_zoo.minilm_inputs()
    hidden = run(load_artifact(result.artifact), feeds)["output"]
    with torch.no_grad():
        expected = model_zoo.minilm_module()(
            *(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask"))).numpy()
    np.testing.assert_allclose(hidden, expected, rtol=1e-3,
                               atol=1e-4 * float(np.abs(expected).max()))
