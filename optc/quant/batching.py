"""Run many calibration samples through a model exported for a fixed batch size.

``symbolic_batch`` makes a twin of the graph whose inputs take any number of samples:
the first dimension of every input becomes symbolic, and a ``Reshape`` whose constant
target shape starts with the model's batch size (a flatten before the classifier,
exported as ``[1, -1]`` and kept constant by ``fold-constants``) gets ``0`` there
instead, ONNX's "copy this dimension from the input". The twin is only used to run the
reference interpreter; emitted graphs keep the model's own shapes. ``chunk_size``
checks the twin on a few samples, against running each alone, and falls back to the
model's own batch size when the output's sample count or values come out wrong.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from optc.errors import UserInputError
from optc.interp import run
from optc.ir.graph import Graph, Node, Value
from optc.quant.calibration import Calibration

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 << 20
"""Activation bytes per interpreter call: bounds memory (double backprop keeps ~4x that)."""
MAX_CHUNK = 512
PROBE_SAMPLES = 4
"""Samples the twin is checked on against single-sample runs."""


def symbolic_batch(graph: Graph) -> Graph:
    """The batch-polymorphic twin of ``graph`` (see the module docstring)."""
    batch = model_batch(graph)
    inputs = tuple(_unbatched(v) for v in graph.inputs)
    params = dict(graph.params)
    nodes = tuple(_polymorphic_reshape(node, params, batch) for node in graph.nodes)
    return graph.replace(inputs=inputs, nodes=nodes, params=params)


def model_batch(graph: Graph) -> int | None:
    """The static first dimension shared by the graph inputs, if any."""
    firsts = {v.shape[0] for v in graph.inputs if v.shape}
    first = firsts.pop() if len(firsts) == 1 else None
    return first if isinstance(first, int) else None


def _unbatched(value: Value) -> Value:
    if not value.shape:
        return value
    return value.with_type(value.dtype, ("N", *value.shape[1:]))


def _polymorphic_reshape(node: Node, params: dict[str, np.ndarray], batch: int | None) -> Node:
    if node.op != "Reshape" or batch is None or len(node.inputs) < 2 or \
            int(node.attr("allowzero", 0)) or node.inputs[1] not in params:
        return node
    shape = params[node.inputs[1]]
    if shape.ndim != 1 or not shape.size or int(shape[0]) != batch:
        return node
    name = f"{node.inputs[1]}.any_batch"
    copied = np.array(shape)
    copied[0] = 0  # Reshape: 0 copies the input's dimension
    params[name] = copied
    return node.replace(inputs=(node.inputs[0], name, *node.inputs[2:]))


def chunk_size(graph: Graph, calibration: Calibration) -> int:
    """As many samples as fit ``CHUNK_BYTES`` of activations when the twin runs any number
    of samples at once, else the model's own batch size."""
    probe = calibration.subset(PROBE_SAMPLES)
    output = graph.output_names[0]
    try:
        with torch.no_grad():
            out = run(symbolic_batch(graph), probe.inputs, outputs=[output])
        if out[output].shape[0] == probe.size and _same_as_alone(graph, probe,
                                                                 out[output]):
            return max(1, min(MAX_CHUNK, CHUNK_BYTES // activation_bytes(graph)))
    except (RuntimeError, ValueError, UserInputError) as exc:
        log.debug("symbolic batch failed (%s); running in model batches", exc)
    first = model_batch(graph)
    if first is None or first < 1 or calibration.size % first:
        raise UserInputError(f"the model does not run {probe.size} samples at once and "
                             f"{calibration.size} calibration samples do not split into "
                             f"batches of {first}")
    log.info("running calibration in batches of %d (the model's batch size)", first)
    return first


def _same_as_alone(graph: Graph, probe: Calibration, together: torch.Tensor) -> bool:
    """Whether the twin's outputs on ``probe`` are the model's on each sample alone.

    A right sample count is not enough: MiniLM-L6's TorchScript export builds its
    attention mask with shapes of batch 1, and its twin ran without error on 8 padded
    sentences but mixed their masks (hidden states off by up to 0.43 on real tokens),
    so the search measured and calibrated another computation than batch-1 inference."""
    batch = model_batch(graph)
    if batch not in (None, 1):
        return True  # only batch-1 models are compared sample by sample
    output = graph.output_names[0]
    for index in range(probe.size):
        alone = run(graph, {k: v[index:index + 1] for k, v in probe.inputs.items()},
                    outputs=[output])[output]
        want, got = alone.float(), together[index:index + 1].float()
        if want.shape != got.shape:
            return False
        scale = float(want.abs().max()) or 1.0
        if float((want - got).abs().max()) > 1e-3 * scale:
            log.info("the symbolic-batch twin differs from single-sample runs; running "
                     "calibration one sample at a time")
            return False
    return True


def activation_bytes(graph: Graph) -> int:
    """Bytes of all node outputs for one sample (unknown dimensions count as 1)."""
    total = 0
    for node in graph.nodes:
        for value in node.outputs:
            elements = 1
            for dim in (value.shape or ())[1:]:
                elements *= dim if isinstance(dim, int) else 1
            total += 4 * elements
    return max(total, 1)
