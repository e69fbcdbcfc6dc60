"""fold-constants: evaluate constant subgraphs once, at compile time."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np

from optc.errors import OptcError
from optc.ir.dtypes import is_tensor_dtype
from optc.ir.graph import Graph, Node, Shape, dtype_name, node_reads
from optc.pipeline import Pass, PassContext

log = logging.getLogger(__name__)

NONDETERMINISTIC = frozenset({
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
    "Multinomial", "Bernoulli",
    # Dropout is random in training mode; inference-mode Dropout is removed by rewrites
    # that know the mode rather than by evaluation.
    "Dropout",
})
"""Default-domain ops whose result differs between runs: never folded."""

KEPT_QUANTIZED = frozenset({"DequantizeLinear"})
"""Never folded: a DequantizeLinear of constant integer codes is how a QDQ model (from
onnxruntime's ``quantize_static`` or optc's ``mixed-precision``) says "this weight is
int8". Folded, it became a float32 constant and the code generator built float32
kernels: an already-quantized ONNX compiled through the default pipeline lost every
int8 kernel (``optc.codegen.quantized`` matches the DequantizeLinear feeding a Conv,
Gemm or MatMul)."""

DEFAULT_MAX_BYTES = 256 << 20


@dataclasses.dataclass(frozen=True)
class FoldConstants(Pass):
    """Evaluate every node whose inputs are all constants and store its results as params.

    Exact: the reference interpreter (``optc.interp``) computes each folded value with
    the node's own semantics, so the graph's outputs do not change.

    Ordering: none required. Run it early (its results feed ``fold-batchnorm``, which
    needs constant BatchNormalization statistics) and follow it with
    ``eliminate-dead-code``: params that only fed folded nodes are left in place.

    Folds ``Constant`` nodes and any node whose inputs are params or folded values,
    except random ops (``RandomNormal``, ``Dropout``, ...), ``DequantizeLinear`` (the
    int8 weights of a QDQ model stay int8: ``KEPT_QUANTIZED``), control flow (nodes with
    subgraphs), nodes producing graph outputs, ops the interpreter has no rule for,
    and results larger than ``max-bytes``.

    Options:
        max-bytes: the largest folded result (all outputs of one node) in bytes; larger
            results, such as a huge ``Expand`` of a scalar, stay computed at run time.
            0 means no limit.

    Before -> after::

        param %shape: int64[2] = [64, 3]
        %w: float32[64,3] = ConstantOfShape(%shape) {value=tensor<float32[1]>[0.02]}
        %y = MatMul(%x, %w)
      ->
        param %w: float32[64,3] = sha256:...      (%shape left for eliminate-dead-code)
        %y = MatMul(%x, %w)
    """

    name: ClassVar[str] = "fold-constants"
    exact: ClassVar[bool] = True

    max_bytes: int = dataclasses.field(default=DEFAULT_MAX_BYTES, metadata={
        "help": "largest folded result in bytes; bigger ones stay computed (0: no limit)"})

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        from optc.interp import graph_opset

        opset = graph_opset(graph)
        constants: dict[str, np.ndarray] = dict(graph.params)
        folded: dict[str, np.ndarray] = {}
        kept: list[Node] = []
        protected = frozenset(graph.output_names)
        for node in graph.nodes:
            results = self._fold(node, constants, opset, protected)
            if results is None:
                kept.append(node)
                continue
            constants.update(results)
            folded.update(results)
        if not folded:
            return graph
        # Keep only folded values something still reads: intermediate results of a
        # folded chain would otherwise bloat the params.
        read = {name for node in kept for name in node_reads(node)}
        params = dict(graph.params)
        params.update({name: array for name, array in folded.items() if name in read})
        ctx.logger.debug("fold-constants: folded %d nodes", len(graph.nodes) - len(kept))
        return graph.replace(nodes=tuple(kept), params=params)

    def _fold(self, node: Node, constants: Mapping[str, np.ndarray], opset: int,
              protected: frozenset[str]) -> dict[str, np.ndarray] | None:
        """The node's results by output name, or None when it must stay a node."""
        if not _foldable(node, constants, protected):
            return None
        from optc.interp import has_rule

        if not has_rule(node.op, node.domain):
            return None
        arrays = [constants[name] if name else None for name in node.inputs]
        try:
            results = _evaluate(node, arrays, opset)
        except OptcError as exc:  # leave it for run time, where the error will surface
            log.debug("fold-constants: cannot evaluate %s node %r: %s", node.op, node.name, exc)
            return None
        if results is None or not self._fits(results, node):
            return None
        return results

    def _fits(self, results: Mapping[str, np.ndarray], node: Node) -> bool:
        size = sum(int(a.nbytes) for a in results.values())
        if self.max_bytes and size > self.max_bytes:
            log.debug("fold-constants: %s node %r would fold to %d bytes (> max-bytes %d)",
                      node.op, node.name, size, self.max_bytes)
            return False
        for value in node.outputs:
            array = results.get(value.name)
            if array is None:
                continue
            got = (dtype_name(array.dtype), tuple(array.shape))
            if not _agrees(value.dtype, value.shape, got):
                # An interpreter bug or a wrong declared type: folding would hide it.
                log.warning("fold-constants: %s node %r output %r is declared %s%s but "
                            "evaluates to %s%s; not folded", node.op, node.name, value.name,
                            value.dtype, value.shape, *got)
                return False
        return True


def _agrees(dtype: str | None, shape: Shape, got: tuple[str, tuple[int, ...]]) -> bool:
    if dtype is not None and dtype != got[0]:
        return False
    if shape is None:
        return True
    if len(shape) != len(got[1]):
        return False
    return all(not isinstance(d, int) or d == g for d, g in zip(shape, got[1], strict=True))


def _foldable(node: Node, constants: Mapping[str, np.ndarray],
              protected: frozenset[str]) -> bool:
    if node.domain in ("", "ai.onnx") and node.op in NONDETERMINISTIC:
        return False
    if node.domain in ("", "ai.onnx") and node.op in KEPT_QUANTIZED:
        return False
    if any(True for _ in node.subgraphs()):
        return False
    if not any(out.name for out in node.outputs):
        return False
    if any(out.dtype is not None and not is_tensor_dtype(out.dtype) for out in node.outputs):
        return False  # sequences and optionals are not tensors: they cannot be params
    if any(out.name in protected for out in node.outputs):
        return False
    for name in node.inputs:
        if name and (name not in constants or constants[name].dtype.kind in "USO"):
            return False  # not constant, or a string tensor the interpreter cannot hold
    return True


def _evaluate(node: Node, arrays: Sequence[np.ndarray | None],
              opset: int) -> dict[str, np.ndarray] | None:
    import torch

    from optc.interp import evaluate_node
    from optc.interp.dtypes import to_numpy, to_tensor

    tensors = [None if a is None else to_tensor(a) for a in arrays]
    outputs = evaluate_node(node, tensors, opset)
    results: dict[str, np.ndarray] = {}
    for value, tensor in zip(node.outputs, outputs, strict=False):
        if not value.name:
            continue
        if not isinstance(tensor, torch.Tensor):
            return None  # a missing output or a sequence value cannot become a param
        results[value.name] = to_numpy(tensor)
    if len(results) != sum(1 for v in node.outputs if v.name):
        return None
    return results
