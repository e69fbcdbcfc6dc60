"""from_torch: both exporters give a graph whose ONNX runs in onnxruntime like the module."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch

import optc
from optc.errors import UserInputError
from optc.ir import verify


class SmallNet(torch.nn.Module):
    """conv -> batchnorm -> relu -> pool -> linear -> softmax, with a residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x))) + self.conv(x)
        h = torch.nn.functional.max_pool2d(h, 2)
        return torch.softmax(self.fc(h.flatten(1)), dim=-1)


@pytest.fixture(scope="module")
def module() -> SmallNet:
    torch.manual_seed(0)
    net = SmallNet().eval()
    with torch.no_grad():  # non-trivial running statistics so batchnorm really matters
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    return net


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_from_torch_runs_like_torch(module: SmallNet, dynamo: bool) -> None:
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter deprecation chatter
        graph = optc.from_torch(module, (x,), dynamo=dynamo)
    verify(graph)
    assert graph.inputs[0].shape == (2, 3, 8, 8) and graph.outputs[0].shape == (2, 10)
    assert {"Conv", "Relu", "Add", "MaxPool", "Softmax"} <= set(graph.op_histogram())
    assert all(out.dtype == "float32" for node in graph.nodes for out in node.outputs
               if out.name)
    session = ort.InferenceSession(optc.to_onnx(graph).SerializeToString())
    got = session.run(None, {graph.input_names[0]: x.numpy()})[0]
    with torch.no_grad():
        want = module(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_input_and_output_names_and_dynamic_axes(module: SmallNet) -> None:
    x = torch.randn(1, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = optc.from_torch(module, x, input_names=["image"], output_names=["probs"],
                                dynamic_axes={"image": {0: "batch"}, "probs": {0: "batch"}})
    assert graph.input_names == ("image",) and graph.output_names == ("probs",)
    assert graph.inputs[0].shape == ("batch", 3, 8, 8)
    batch = torch.randn(5, 3, 8, 8)
    got = ort.InferenceSession(optc.to_onnx(graph).SerializeToString()).run(
        None, {"image": batch.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, module(batch).numpy(), rtol=1e-4, atol=1e-6)


def test_not_a_module_is_a_user_error() -> None:
    with pytest.raises(UserInputError, match=r"needs a torch\.nn\.Module, got function"):
        optc.from_torch(lambda x: x, torch.zeros(1))
