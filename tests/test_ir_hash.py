"""Structural hash: equal exactly when the graphs are structurally equal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import optc
from optc.ir import Graph, Precision, parse_graph, print_graph, structurally_equal, tensor_store

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


@pytest.fixture(scope="module")
def resnet() -> Graph:
    return optc.load_onnx(LIGHT / "light_resnet50.onnx")


def with_param(graph: Graph, name: str, array: np.ndarray) -> Graph:
    return graph.replace(params={**graph.params, name: array})


def test_same_structure_same_hash(resnet: Graph) -> None:
    again = optc.load_onnx(LIGHT / "light_resnet50.onnx")
    assert again is not resnet
    assert again.structural_hash() == resnet.structural_hash()
    assert structurally_equal(again, resnet)
    reparsed = parse_graph(print_graph(resnet), tensors=tensor_store(resnet))
    assert reparsed.structural_hash() == resnet.structural_hash()
    assert len(resnet.structural_hash()) == 64 and resnet.structural_hash() == \
        resnet.structural_hash()


def test_one_weight_element_changes_the_hash(resnet: Graph) -> None:
    name = max(resnet.params, key=lambda k: resnet.params[k].size)  # printed as a digest
    array = resnet.params[name].copy()
    same = with_param(resnet, name, array.copy())  # equal contents, another array object
    assert same.structural_hash() == resnet.structural_hash()
    array.flat[array.size // 2] += 1
    changed = with_param(resnet, name, array)
    assert changed.structural_hash() != resnet.structural_hash()
    assert not structurally_equal(changed, resnet)


def test_dtype_of_a_weight_changes_the_hash(resnet: Graph) -> None:
    name = next(iter(resnet.params))
    array = resnet.params[name]
    view = array.view(np.uint8).reshape(-1)  # same bytes, other dtype and shape
    assert with_param(resnet, name, view).structural_hash() != resnet.structural_hash()


@pytest.mark.parametrize("edit", ["attr", "op", "annotation", "wiring", "output type",
                                  "node name", "opset"])
def test_any_structural_edit_changes_the_hash(resnet: Graph, edit: str) -> None:
    conv = next(n for n in resnet.nodes if n.op == "Conv")
    relu = next(n for n in resnet.nodes if n.op == "Relu")
    changes = {
        "attr": lambda: (conv, conv.replace(attrs={**conv.attrs, "group": 1})),
        "op": lambda: (relu, relu.replace(op="Sigmoid")),
        "annotation": lambda: (conv, conv.replace(annotations=(Precision(8),))),
        "wiring": lambda: (conv, conv.replace(inputs=conv.inputs[1::-1] + conv.inputs[2:])),
        "output type": lambda: (relu, relu.replace(
            outputs=(relu.outputs[0].with_type("float16", None),))),
        "node name": lambda: (relu, relu.replace(name="renamed")),
    }
    if edit == "opset":
        edited = resnet.replace(opsets={"": 10})
    else:
        old, new = changes[edit]()
        edited = resnet.replace(nodes=tuple(new if n is old else n for n in resnet.nodes))
    assert edited is not resnet
    assert edited.structural_hash() != resnet.structural_hash()


def test_hash_is_computed_once(resnet: Graph) -> None:
    first = resnet.structural_hash()
    assert resnet.structural_hash() is first  # cached on the immutable graph
