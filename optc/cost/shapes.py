"""Concrete shapes for values ONNX shape inference leaves unknown.

Exporters compute shapes at run time (``Shape -> Gather -> Concat -> Reshape``, pads
built from sizes), and ONNX shape inference gives up on some of them even when every
graph input is static. The cost model needs every size, so such a graph is run once
through the reference interpreter on inputs of ones and the sizes it produces are
written into the values' types.

ASSUMPTION: a size that depends on input *data* (NonZero, Compress) is the one an
input of ones gives, which for those ops is the largest possible. A graph whose
inputs have symbolic dimensions is returned unchanged; the model then names the
first value it cannot size.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from optc.errors import OptcError
from optc.ir.dtypes import is_tensor_dtype
from optc.ir.graph import Graph, Node

log = logging.getLogger(__name__)


def unsized_values(graph: Graph) -> list[str]:
    """Named outputs of top-level nodes whose dtype or shape is not fully known
    (sequences and optionals excepted: they have no shape of their own)."""
    return [v.name for node in graph.nodes for v in node.outputs
            if v.name and (v.dtype is None or is_tensor_dtype(v.dtype)) and not (
                v.dtype and v.is_static())]


def complete_shapes(graph: Graph) -> Graph:
    """``graph`` with unknown output shapes filled in by one run on ones (see module doc)."""
    missing = unsized_values(graph)
    if not missing or not all(v.is_static() and is_tensor_dtype(v.dtype) for v in graph.inputs):
        return graph
    from optc.interp import run  # deferred: the interpreter is only needed here

    feeds = {v.name: np.ones(v.shape, dtype=_numpy_dtype(v.dtype)) for v in graph.inputs}
    try:
        with torch.no_grad():
            tensors = run(graph, feeds, outputs=missing)
    except (OptcError, RuntimeError, ValueError) as exc:
        log.info("could not size %d values of %r by running it: %s", len(missing), graph.name,
                 exc)
        return graph
    log.debug("sized %d values of %r by running it on ones", len(tensors), graph.name)
    return graph.replace(nodes=tuple(_resized(node, tensors) for node in graph.nodes))


def _resized(node: Node, tensors: dict[str, torch.Tensor]) -> Node:
    from optc.interp.dtypes import dtype_name

    outputs = tuple(
        v.with_type(v.dtype or dtype_name(tensors[v.name].dtype),
                    tuple(int(d) for d in tensors[v.name].shape))
        if v.name in tensors else v for v in node.outputs)
    return node.replace(outputs=outputs)


def _numpy_dtype(dtype: str | None) -> np.dtype:
    if dtype == "bfloat16":  # numpy has no bfloat16; the interpreter casts a float32 feed
        return np.dtype(np.float32)
    return np.dtype(dtype or "float32")
