"""Import runs ONNX shape inference so that intermediate values carry types."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

import optc

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
LIGHT = DATA / "light"


@pytest.mark.parametrize("name", ["light_resnet50", "light_inception_v2", "light_shufflenet"])
def test_every_node_output_is_typed(name: str) -> None:
    graph = optc.load_onnx(LIGHT / f"{name}.onnx")
    outputs = [out for node in graph.nodes for out in node.outputs if out.name]
    assert outputs
    assert {out.dtype for out in outputs} == {"float32"}  # only float ops in these CNNs
    assert all(out.shape is not None and all(isinstance(d, int) for d in out.shape)
               for out in outputs), "static model: every shape is known"


def test_without_inference_only_declared_types_remain() -> None:
    bare = optc.load_onnx(LIGHT / "light_resnet50.onnx", infer_shapes=False)
    untyped = [out for node in bare.nodes for out in node.outputs
               if out.name not in bare.output_names]
    assert untyped and all(out.dtype is None and out.shape is None for out in untyped)
    typed = optc.load_onnx(LIGHT / "light_resnet50.onnx")
    conv = next(n for n in typed.nodes if n.op == "Conv")
    assert conv.outputs[0].shape == (1, 64, 112, 112)


def test_sequence_values_are_typed() -> None:
    graph = optc.load_onnx(DATA / "simple" / "test_sequence_model1" / "model.onnx")
    dtypes = {out.name: out.dtype for node in graph.nodes for out in node.outputs}
    assert "seq(float32)" in dtypes.values()
    assert all(out.shape is None for node in graph.nodes for out in node.outputs
               if out.dtype == "seq(float32)")
