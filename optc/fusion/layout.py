"""Chains of Reshape / Transpose (and scalar scaling) between attention's pieces.

Exporters split heads in different ways: TorchScript ``Reshape -> Transpose(0,2,3,1)``
for the transposed keys, dynamo ``Transpose -> Reshape -> Transpose(0,2,1) -> Reshape``.
Rather than list spellings, a chain is *run* on an index tensor
(``arange(n).reshape(shape)``) and compared with the layout attention needs: any
chain that moves the same elements to the same places is accepted.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from optc.fusion.view import GraphView
from optc.ir.graph import Node

LAYOUT_OPS = ("Reshape", "Transpose")


@dataclasses.dataclass(frozen=True)
class Chain:
    """Nodes from ``source`` to the chain's end, in graph order; ``factor`` is the
    product of the scalar constants it multiplies (or divides) by."""

    source: str
    nodes: tuple[Node, ...]
    factor: float = 1.0


def back_chain(view: GraphView, end: str, stop: set[str]) -> Chain:
    """Walk from ``end`` towards its producers through private layout ops and scalar
    scalings; stop at a value in ``stop`` or at anything else."""
    nodes: list[Node] = []
    factor = 1.0
    name = end
    while name not in stop:
        node = view.producer(name)
        if node is None or (nodes and not view.private(name)):
            break
        step = _scaling(view, node)
        if node.op in LAYOUT_OPS:
            name = node.inputs[0]
        elif step is not None:
            name, scale = step
            factor *= scale
        else:
            break
        nodes.append(node)
    return Chain(name, tuple(reversed(nodes)), factor)


def forward_chain(view: GraphView, start: str, want: np.ndarray) -> Chain | None:
    """Private layout ops after ``start`` until the index tensor equals ``want``."""
    shape = view.shape(start)
    if shape is None:
        return None
    array = np.arange(int(np.prod(shape))).reshape(shape)
    nodes: list[Node] = []
    name = start
    while not same(array, want):
        node = view.sole_reader(name)
        if node is None or node.op not in LAYOUT_OPS or node.inputs[0] != name:
            return None
        moved = apply(view, node, array)
        if moved is None:
            return None
        array, name = moved, node.outputs[0].name
        nodes.append(node)
    return Chain(start, tuple(nodes)) if nodes else None


def _scaling(view: GraphView, node: Node) -> tuple[str, float] | None:
    """(input, factor) when ``node`` multiplies or divides by a scalar constant."""
    if node.op == "Div" and len(node.inputs) == 2:
        value = view.scalar(node.inputs[1])
        return (node.inputs[0], 1.0 / value) if value else None
    if node.op == "Mul" and len(node.inputs) == 2:
        for mine, other in ((0, 1), (1, 0)):
            value = view.scalar(node.inputs[other])
            if value is not None:
                return node.inputs[mine], value
    return None


def run_chain(view: GraphView, chain: Chain, array: np.ndarray) -> np.ndarray | None:
    """The index tensor after the layout ops of ``chain`` (scalings move nothing)."""
    for node in chain.nodes:
        if node.op in LAYOUT_OPS:
            moved = apply(view, node, array)
            if moved is None:
                return None
            array = moved
    return array


def apply(view: GraphView, node: Node, array: np.ndarray) -> np.ndarray | None:
    """One Reshape or Transpose on a concrete array (ONNX semantics), None if unknown."""
    if node.op == "Transpose":
        perm = node.attr("perm")
        perm = tuple(range(array.ndim))[::-1] if perm is None else tuple(int(p) for p in perm)
        return array.transpose(perm) if len(perm) == array.ndim else None
    target = view.constant(node.inputs[1]) if len(node.inputs) > 1 else None
    if target is None:
        return None
    dims = [int(d) for d in target.reshape(-1)]
    if not int(node.attr("allowzero", 0)):
        dims = [array.shape[i] if d == 0 and i < array.ndim else d for i, d in enumerate(dims)]
    try:
        return array.reshape(dims)
    except ValueError:
        return None


def same(array: np.ndarray, want: np.ndarray) -> bool:
    return array.shape == want.shape and bool(np.array_equal(array, want))
