"""Which nodes can be quantized, and which quantizable layers feed or read each other.

A layer is a top-level ``Conv``, ``Gemm`` or ``MatMul`` (default domain) whose weight
(input 1) is a float32 param read by no other node, whose data input (input 0) is a
float32 activation, and whose bias (Conv/Gemm input 2), if any, is a param. Everything
else stays fp32. Tied weights are left alone because one param cannot carry two
precisions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from optc.ir.graph import Graph, Node

QUANTIZABLE_OPS = frozenset({"Conv", "Gemm", "MatMul"})


@dataclasses.dataclass(frozen=True)
class Layer:
    """One quantizable layer. ``key`` (its first output's name) identifies it everywhere."""

    key: str
    node_name: str
    op: str
    activation: str
    weight: str
    bias: str
    channel_axis: int  # the weight axis of output channels (per-channel scales)
    macs: int          # multiply-accumulates per sample (0 when shapes are unknown)
    weight_elements: int
    kind: str = "dot"  # how optc's int8 code runs it: see ``int8_kind``
    # Input channels each output reads per tap (MatMul / Gemm: K; Conv: per group; 0:
    # unknown): the 6-bit kernel needs multiples of 8 (``latency.ProxyRates``).
    in_channels: int = 0
    depth: int = 0  # multiply-adds per output (in_channels times the kernel's taps)
    groups: int = 1  # a Conv's groups (1 for MatMul / Gemm)


def quantizable_layers(graph: Graph) -> tuple[Layer, ...]:
    """The quantizable layers of ``graph``, in graph order."""
    layers = []
    for node in graph.nodes:
        layer = _layer(graph, node)
        if layer is not None:
            layers.append(layer)
    return tuple(layers)


def _layer(graph: Graph, node: Node) -> Layer | None:
    if node.op not in QUANTIZABLE_OPS or node.domain not in ("", "ai.onnx"):
        return None
    if len(node.inputs) < 2 or not node.outputs or not node.outputs[0].name:
        return None
    data, weight = node.inputs[0], node.inputs[1]
    if not data or data in graph.params or weight not in graph.params:
        return None
    array = graph.params[weight]
    if array.dtype.name != "float32" or graph.value(data).dtype != "float32":
        return None
    if len(graph.consumers(weight)) != 1 or weight in graph.output_names:
        return None
    bias = node.inputs[2] if len(node.inputs) > 2 else ""
    if bias and bias not in graph.params:
        return None
    axis = _channel_axis(node, array.ndim)
    if axis is None:
        return None
    return Layer(node.outputs[0].name, node.name, node.op, data, weight, bias, axis,
                 _macs(graph, node, array.size, axis, array.shape), int(array.size),
                 int8_kind(node, array.shape),
                 int(array.shape[1] if node.op == "Conv" else array.shape[1 - axis]),
                 int(array.size // array.shape[axis]),
                 int(node.attr("group", 1)) if node.op == "Conv" else 1)


def int8_kind(node: Node, weight_shape: tuple[int, ...]) -> str:
    """Which int8 kernel ``optc.codegen`` gives the layer, which decides its speed:

    - ``"dot"``: matmul, Gemm and 1x1 convolutions with one group — packed int8 weights
      and dot-product instructions (``vpdpbusd`` / ``vpmaddubsw`` / ``vpmaddwd``,
      ``schedules/vnni.py``);
    - ``"depthwise"``: one input channel per group — on x86 with AVX2 computed exactly
      on float32 vectors (``optc.codegen.quantized._exact_float_depthwise``), elsewhere
      a vectorized int32 loop;
    - ``"stem"``: fewer than 8 input channels — computed in float32 on x86 (there is
      nothing to pack; ``optc.codegen.quantized._float_conv``);
    - ``"dot"`` too: a spatial convolution (3x3...) with one group, input channels a
      multiple of 4 and output channels a multiple of 8 — an implicit GEMM on the same
      packed kernels (``schedules/vnni_pack.packed_conv``; its activation's zero point
      must be 0 where it is padded, as after a ReLU, else the next kind);
    - ``"spatial"``: any other convolution — a generic vectorized int32 loop, much
      slower than optc's float32 kernel for it.
    """
    if node.op != "Conv" or len(weight_shape) < 3:
        return "dot"
    groups = int(node.attr("group", 1))
    per_group_in = int(weight_shape[1])
    if groups > 1 and per_group_in == 1:
        return "depthwise"
    if per_group_in * groups < 8:
        return "stem"
    if groups == 1 and all(int(k) == 1 for k in weight_shape[2:]):
        return "dot"
    if groups == 1 and per_group_in % 4 == 0 and int(weight_shape[0]) % 8 == 0:
        return "dot"
    return "spatial"


def _channel_axis(node: Node, rank: int) -> int | None:
    if node.op == "Conv":
        return 0 if rank >= 3 else None
    if rank != 2:
        return None  # batched MatMul weights: not handled
    if node.op == "Gemm":
        return 0 if int(node.attr("transB", 0)) else 1
    return 1  # MatMul: [K, N]


def _macs(graph: Graph, node: Node, weight_size: int, axis: int,
          shape: tuple[int, ...]) -> int:
    """Multiply-accumulates for one sample: weight uses per output position."""
    out = graph.value(node.outputs[0].name)
    if not out.is_static() or not out.shape:
        return 0
    dims = [int(d) for d in out.shape]  # type: ignore[arg-type]  # is_static() checked
    if node.op == "Conv":
        positions = 1
        for d in dims[2:]:
            positions *= d
        return weight_size * positions
    rows = 1
    for d in dims[1:-1]:  # MatMul over a sequence: every row uses the whole weight
        rows *= d
    return weight_size * rows


def with_observed_macs(layers: Sequence[Layer],
                       shapes: Mapping[str, tuple[int, ...]]) -> list[Layer]:
    """Layers whose MACs were unknown (dynamic shapes) counted from observed output shapes:
    every output element of a sample costs ``weight_elements / out_channels`` MACs."""
    found = []
    for layer in layers:
        shape = shapes.get(layer.key)
        if layer.macs or not shape or len(shape) < 2:
            found.append(layer)
            continue
        channels = shape[1] if layer.op == "Conv" else shape[-1]
        macs = layer.weight_elements * math.prod(shape[1:]) // max(1, channels)
        found.append(dataclasses.replace(layer, macs=macs))
    return found


def neighbors(graph: Graph, layers: Sequence[Layer]) -> dict[str, tuple[str, ...]]:
    """Layer key -> keys of the quantizable layers it feeds or is fed by.

    The walk passes through non-quantizable nodes (activations, pooling, residual adds,
    reshapes) and stops at the first quantizable layer on each path, in both directions.
    """
    by_output = {layer.key: layer for layer in layers}
    found: dict[str, set[str]] = {layer.key: set() for layer in layers}
    for layer in layers:
        for other in _downstream(graph, layer.key, by_output):
            found[layer.key].add(other)
            found[other].add(layer.key)
    return {key: tuple(k for k in by_output if k in found[key]) for key in by_output}


def _downstream(graph: Graph, start: str, layers: dict[str, Layer]) -> set[str]:
    """Keys of the first quantizable layers reached from value ``start``."""
    reached: set[str] = set()
    pending, seen = [start], {start}
    while pending:
        name = pending.pop()
        for node in graph.consumers(name):
            key = node.outputs[0].name if node.outputs else ""
            if key in layers and layers[key].activation == name:
                reached.add(key)
                continue
            for out in node.output_names:
                if out and out not in seen:
                    seen.add(out)
                    pending.append(out)
    return reached
