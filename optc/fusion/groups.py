"""Which nodes run as one kernel: the fusion rules of TVM's FuseOps, on optc's IR.

TVM ("TVM: An Automated End-to-End Optimizing Compiler", Chen et al., OSDI 2018,
sec. 3) classifies operators as *out-elementwise-fusable* (conv, matmul), *reduction*
(softmax, layer norm), *injective* (reshape, transpose) or *elementwise*, and fuses:

- an anchor (Conv / Gemm / MatMul) with the elementwise ops after it (bias, activation,
  residual add), but not with layout ops after it;
- a reduction with the elementwise ops after it (softmax and the NaN guard);
- chains of injective and elementwise ops with each other;
- a zero ``Pad`` into the Conv it feeds (TVM's importer folds it into the conv padding).

A value stays inside a group only when every reader is in the group and it is no
graph output, so a group never recomputes anything. Two anchors never share a group.
The groups found here are what optc's roofline prices as one kernel each
(``FusionGroup`` annotations, ``optc.cost.kernels``); ``tests/test_pass_fuse_tvm.py``
compares them with the kernels TVM really emits.
"""

from __future__ import annotations

from collections.abc import Iterable

from optc.fusion.view import GraphView
from optc.ir.graph import Node

ANCHOR, REDUCE, INJECTIVE, ELEMWISE = "anchor", "reduce", "injective", "elementwise"

ANCHOR_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
REDUCE_OPS = frozenset({"Softmax", "LogSoftmax"})
INJECTIVE_OPS = frozenset({"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
                           "Expand", "Identity", "Pad"})
ELEMWISE_OPS = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Neg", "Abs", "Sqrt", "Exp", "Log",
    "Reciprocal", "Erf", "Tanh", "Sigmoid", "Relu", "LeakyRelu", "Elu", "Selu", "Celu",
    "PRelu", "Clip", "HardSigmoid", "HardSwish", "Softplus", "Gelu", "Mish", "Where",
    "IsNaN", "IsInf", "Not", "And", "Or", "Xor", "Equal", "Less", "LessOrEqual", "Greater",
    "GreaterOrEqual", "Cast", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos",
})
CONTRIB_ELEMWISE = frozenset({"Gelu", "FastGelu", "BiasGelu"})
MAX_REGION = 32
"""Most nodes searched for where the readers of a shared value meet again."""


def pattern(node: Node) -> str | None:
    """The node's FuseOps class, or None for ops that are kernels of their own."""
    if node.domain == "com.microsoft":
        return ELEMWISE if node.op in CONTRIB_ELEMWISE else None
    if node.domain not in ("", "ai.onnx"):
        return None
    for kind, ops in ((ANCHOR, ANCHOR_OPS), (REDUCE, REDUCE_OPS),
                      (INJECTIVE, INJECTIVE_OPS), (ELEMWISE, ELEMWISE_OPS)):
        if node.op in ops:
            return kind
    return None


def _absorbs(group_kind: str, kind: str) -> bool:
    """Whether a group of ``group_kind`` takes a following node of ``kind``."""
    if kind == ELEMWISE:
        return group_kind in (ANCHOR, REDUCE, INJECTIVE, ELEMWISE)
    if kind == INJECTIVE:
        return group_kind in (INJECTIVE, ELEMWISE)
    return False


class _Groups:
    """Union-find over node indices, with each group's kind and anchor count."""

    def __init__(self, kinds: list[str | None]) -> None:
        self.parent = list(range(len(kinds)))
        self.kind = list(kinds)
        self.anchors = [int(k == ANCHOR) for k in kinds]

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, keep: int, other: int) -> None:
        keep, other = self.find(keep), self.find(other)
        if keep == other:
            return
        self.parent[other] = keep
        self.anchors[keep] += self.anchors[other]
        if self.kind[keep] in (INJECTIVE, ELEMWISE) and self.kind[other] in (ANCHOR, REDUCE):
            self.kind[keep] = self.kind[other]


def fusion_groups(view: GraphView, constants: set[str]) -> list[list[Node]]:
    """Groups of two or more nodes that run as one kernel, in graph order.

    ``constants``: values known at compile time (params and what is computed from them
    only); nodes computing constants are folded by the compiler and never grouped.
    """
    nodes = view.graph.nodes
    index = {id(node): i for i, node in enumerate(nodes)}
    kinds = [None if _is_constant(n, constants) else pattern(n) for n in nodes]
    groups = _Groups(kinds)
    for i, node in enumerate(nodes):
        if kinds[i] == ANCHOR:
            _take_pad(view, node, i, groups, index)
        if kinds[i] not in (ELEMWISE, INJECTIVE):
            continue
        for name in _data_inputs(node, constants):
            producer = view.graph.producer(name)
            if producer is None or kinds[index[id(producer)]] is None:
                continue
            p = index[id(producer)]
            if not _absorbs(groups.kind[groups.find(p)], kinds[i]) or \
                    not _closed(view, name, node, index):
                continue
            if groups.anchors[groups.find(p)] + groups.anchors[groups.find(i)] > 1:
                continue
            groups.join(p, i)
    members: dict[int, list[Node]] = {}
    for i, node in enumerate(nodes):
        if kinds[i] is not None:
            members.setdefault(groups.find(i), []).append(node)
    return [group for group in members.values() if len(group) > 1]


def _take_pad(view: GraphView, conv: Node, i: int, groups: _Groups,
              index: dict[int, int]) -> None:
    """A zero ``Pad`` feeding only a Conv becomes the conv's padding (TVM folds it)."""
    pad = view.producer(conv.inputs[0], "Pad") if conv.op == "Conv" else None
    if pad is None or not view.private(conv.inputs[0]) or pad.attr("mode", "constant") not in (
            "constant", b"constant"):
        return
    value = view.scalar(pad.inputs[2]) if len(pad.inputs) > 2 and pad.inputs[2] else 0.0
    p = index[id(pad)]
    if value == 0.0 and groups.kind[groups.find(p)] == INJECTIVE and not groups.anchors[
            groups.find(p)]:
        groups.join(p, i)


def _is_constant(node: Node, constants: set[str]) -> bool:
    names = [n for n in node.inputs if n]
    if node.op == "Constant" or (names and all(n in constants for n in names)):
        constants.update(node.output_names)
        return True
    return False


def _data_inputs(node: Node, constants: set[str]) -> Iterable[str]:
    return dict.fromkeys(n for n in node.inputs if n and n not in constants)


def _closed(view: GraphView, name: str, reader: Node, position: dict[int, int]) -> bool:
    """Whether ``name`` can stay inside the producer's group once ``reader`` joins it: no
    graph output, and either ``reader`` is its only reader or all its readers lead,
    through elementwise / injective ops only, to one node where they meet (TVM's
    post-dominator rule: the softmax NaN guard, a residual diamond)."""
    if name in view.outputs:
        return False
    readers = view.graph.consumers(name)
    if len(readers) == 1:
        return True
    region = _converging(view, readers, position)
    return region is not None and id(reader) in region


def _converging(view: GraphView, readers: Iterable[Node], position: dict[int, int],
                ) -> set[int] | None:
    """Ids of the nodes from ``readers`` to the first node all their paths reach, or None
    when a path leaves through a node that cannot fuse, a graph output or the limit."""
    pending = {id(node): node for node in readers}
    region: set[int] = set()
    while pending and len(region) < MAX_REGION:
        key = min(pending, key=position.__getitem__)  # topological order
        node = pending.pop(key)
        if pattern(node) not in (ELEMWISE, INJECTIVE):
            return None
        region.add(key)
        if not pending:
            return region  # every path arrived here: the post-dominator
        for value in node.outputs:
            if value.name in view.outputs:
                return None
            for later in view.graph.consumers(value.name) if value.name else ():
                pending[id(later)] = later
    return None
