"""fold-batchnorm: fold inference BatchNormalization into the preceding Conv / Gemm."""

from __future__ import annotations

import dataclasses
import logging
from typing import ClassVar

import numpy as np

from optc.ir.graph import Graph, Node, node_reads
from optc.ir.rewrite import NameSource
from optc.pipeline import Pass, PassContext

log = logging.getLogger(__name__)

FOLDS_INTO = frozenset({"Conv", "ConvTranspose", "Gemm"})
LEGACY_IS_TEST_OPSET = 7   # before opset 7, BatchNormalization trained unless is_test=1
GEMM_MIN_OPSET = 7         # before opset 7, Gemm's C broadcast only with broadcast=1


@dataclasses.dataclass(frozen=True)
class FoldBatchNorm(Pass):
    """Fold an inference-mode BatchNormalization into the Conv, ConvTranspose or Gemm before it.

    Exact up to float rounding: per output channel ``c`` with
    ``s[c] = scale[c] / sqrt(var[c] + epsilon)`` the layer computes
    ``W'[c] = W[c] * s[c]`` and ``b'[c] = (b[c] - mean[c]) * s[c] + bias[c]``
    (float64, then cast back to the weight's dtype), which equals BN(conv(x)).
    A standard rewrite of inference graphs (e.g. Jacob et al., CVPR 2018, sec. 3.2).

    Ordering: the BatchNormalization's scale, bias, mean and var and the layer's
    weight and bias must be params: run ``fold-constants`` first when they are computed
    (the ONNX ``light`` models build them with ConstantOfShape). Params that only the
    folded nodes read are dropped here, so no ``eliminate-dead-code`` is needed after.

    Fires only when the layer's output has no reader but the BatchNormalization and is
    not a graph output, the BatchNormalization is in inference mode (``training_mode``
    0, ``is_test`` 1 before opset 7, ``spatial`` 1) and produces only its first output.

    Options: none.

    Before -> after::

        %c = Conv(%x, %w, %b) {...}
        %y = BatchNormalization(%c, %scale, %bias, %mean, %var) {epsilon=1e-05}
      ->
        %y = Conv(%x, %w.bn, %b.bn) {...}      # w.bn, b.bn: new params
    """

    name: ClassVar[str] = "fold-batchnorm"
    exact: ClassVar[bool] = True

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        opset = int(graph.opsets.get("", graph.opsets.get("ai.onnx", 0)) or 0)
        names = NameSource(graph)
        params = dict(graph.params)
        replaced: dict[int, Node] = {}
        dropped: set[int] = set()
        for bn in graph.nodes:
            layer = _foldable_layer(graph, bn, opset)
            if layer is None:
                continue
            new_layer = _fold(layer, bn, params, names)
            if new_layer is None:
                continue
            replaced[id(layer)] = new_layer
            dropped.add(id(bn))
        if not dropped:
            return graph
        nodes = tuple(replaced.get(id(n), n) for n in graph.nodes if id(n) not in dropped)
        # The old weights and BN statistics go too, unless something else still reads them.
        stale = {name for node in graph.nodes if id(node) in replaced or id(node) in dropped
                 for name in node.inputs[1:] if name}
        read = {name for node in nodes for name in node_reads(node)} | set(graph.output_names)
        params = {k: v for k, v in params.items() if k not in stale or k in read}
        ctx.logger.debug("fold-batchnorm: folded %d BatchNormalization nodes", len(dropped))
        return graph.replace(nodes=nodes, params=params)


def _foldable_layer(graph: Graph, bn: Node, opset: int) -> Node | None:
    """The Conv/ConvTranspose/Gemm ``bn`` can fold into, or None."""
    if bn.op != "BatchNormalization" or bn.domain not in ("", "ai.onnx") or len(bn.inputs) < 5:
        return None
    if int(bn.attr("training_mode", 0)) != 0 or int(bn.attr("spatial", 1)) != 1:
        return None
    if opset < LEGACY_IS_TEST_OPSET and int(bn.attr("is_test", 0)) != 1:
        return None
    if any(out.name for out in bn.outputs[1:]):
        return None  # running mean/var outputs exist only in training
    if not all(name in graph.params for name in bn.inputs[1:5]):
        return None
    source = bn.inputs[0]
    layer = graph.producer(source)
    if layer is None or layer.op not in FOLDS_INTO or layer.domain not in ("", "ai.onnx"):
        return None
    if layer.op == "Gemm" and opset < GEMM_MIN_OPSET:
        return None
    if source in graph.output_names or len(graph.consumers(source)) != 1:
        return None
    if len(layer.inputs) < 2 or layer.inputs[1] not in graph.params:
        return None
    if len(layer.inputs) > 2 and layer.inputs[2] and layer.inputs[2] not in graph.params:
        return None
    return layer


def _fold(layer: Node, bn: Node, params: dict[str, np.ndarray],
          names: NameSource) -> Node | None:
    scale, shift, mean, var = (params[n].astype(np.float64) for n in bn.inputs[1:5])
    weight = params[layer.inputs[1]]
    if weight.dtype.kind != "f" or scale.ndim != 1 or \
            any(a.shape != scale.shape for a in (shift, mean, var)):
        return None
    factor = scale / np.sqrt(var + float(bn.attr("epsilon", 1e-5)))
    bias_name = layer.inputs[2] if len(layer.inputs) > 2 else ""
    bias = params[bias_name].astype(np.float64) if bias_name else None
    if layer.op == "Gemm":
        folded = _fold_gemm(layer, weight, bias, factor, mean, shift)
    else:
        folded = _fold_conv(layer, weight, bias, factor, mean, shift)
    if folded is None:
        return None
    new_weight, new_bias = folded
    weight_name = names.fresh(f"{layer.inputs[1]}.bn")
    bias_name = names.fresh(f"{bias_name}.bn" if bias_name else f"{bn.outputs[0].name}.bias")
    params[weight_name] = new_weight.astype(weight.dtype)
    params[bias_name] = new_bias.astype(weight.dtype)
    extra = tuple(a for a in bn.annotations if a not in layer.annotations)
    attrs = dict(layer.attrs)
    if layer.op == "Gemm":
        attrs["beta"] = 1.0  # the new C already carries the old beta
    return layer.replace(inputs=(layer.inputs[0], weight_name, bias_name),
                         outputs=(bn.outputs[0],), attrs=attrs,
                         annotations=layer.annotations + extra)


def _fold_conv(layer: Node, weight: np.ndarray, bias: np.ndarray | None, factor: np.ndarray,
               mean: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    w = weight.astype(np.float64)
    channels = factor.shape[0]
    kernel_ones = (1,) * (w.ndim - 2)
    if layer.op == "Conv":
        if w.shape[0] != channels:
            return None
        w = w * factor.reshape((channels, 1, *kernel_ones))
    else:  # ConvTranspose: weight is [C_in, C_out / group, k...]
        group = int(layer.attr("group", 1))
        per_group = w.shape[1]
        if per_group * group != channels or w.shape[0] % group:
            return None
        grouped = w.reshape((group, w.shape[0] // group, per_group, *w.shape[2:]))
        scaled = grouped * factor.reshape((group, 1, per_group, *kernel_ones))
        w = scaled.reshape(w.shape)
    b = np.zeros(channels) if bias is None else bias
    if b.shape != (channels,):
        return None
    return w, (b - mean) * factor + shift


def _fold_gemm(layer: Node, weight: np.ndarray, bias: np.ndarray | None, factor: np.ndarray,
               mean: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    w = weight.astype(np.float64)
    channels = factor.shape[0]
    trans_b = int(layer.attr("transB", 0))
    if w.ndim != 2 or w.shape[1 - trans_b] != channels:
        return None
    w = w * (factor[:, None] if trans_b else factor[None, :])
    beta = float(layer.attr("beta", 1.0))
    c = np.zeros(channels) if bias is None else beta * bias
    try:
        new_c = (c - mean) * factor + shift
    except ValueError:  # C does not broadcast against the channel axis
        return None
    return w, new_c
