"""Self-attention (MatMul - scale - mask - Softmax - MatMul) -> one ``Attention`` node.

The match starts at a ``Softmax`` over the last axis and walks out: an additive
mask (``Add``), the score ``MatMul`` of queries and transposed keys (scaled by
constants anywhere on either side), the head split of the Q / K / V projections
``x @ W + b`` of one shared ``x``, the exporters' NaN guard after the softmax
(``Where(IsNaN(p), 0, p)``), the ``MatMul`` with the values and the head merge back
to ``[batch, seq, hidden]``. Head layouts are checked by running the chains on index
tensors (``optc.fusion.layout``), so both torch exporters' spellings match.

The replacement is onnxruntime's contrib ``com.microsoft.Attention`` (packed QKV
weights), which TVM's Relax importer turns into one ``R.nn.attention``. TVM's
converter takes no ``scale`` attribute, so only the standard ``1 / sqrt(head_size)``
scaling matches; anything else is left alone.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from optc.fusion.layout import Chain, back_chain, forward_chain, run_chain, same
from optc.fusion.view import GraphView
from optc.ir.graph import Node

SCALE_RTOL = 1e-5
SOFTMAX_LAST_AXIS_OPSET = 13


@dataclasses.dataclass(frozen=True)
class Projection:
    """``x @ weight (+ bias)``: the MatMul and its bias Add (None without bias)."""

    matmul: Node
    add: Node | None
    weight: str
    bias: str | None

    @property
    def nodes(self) -> tuple[Node, ...]:
        return (self.matmul,) if self.add is None else (self.matmul, self.add)

    @property
    def out(self) -> str:
        return (self.add or self.matmul).outputs[0].name


@dataclasses.dataclass(frozen=True)
class AttentionMatch:
    x: str
    heads: int
    q: Projection
    k: Projection
    v: Projection
    mask: str | None          # additive bias on the scores
    guard_zero: str | None    # the 0 of the exporters' NaN guard, when there is one
    nodes: tuple[Node, ...]   # everything the fused op replaces; nodes[-1] makes the output

    @property
    def out(self) -> str:
        return self.nodes[-1].outputs[0].name


def find_attentions(view: GraphView) -> list[AttentionMatch]:
    found = []
    for node in view.graph.nodes:
        if node.op == "Softmax" and node.domain in ("", "ai.onnx"):
            match = _match(view, node)
            if match is not None:
                found.append(match)
    return found


def _match(view: GraphView, softmax: Node) -> AttentionMatch | None:
    scores_shape = view.shape(softmax.outputs[0].name)
    # Before opset 13 Softmax's axis defaulted to 1 (and flattened from it on).
    axis = softmax.attr("axis", -1 if view.opset >= SOFTMAX_LAST_AXIS_OPSET else 1)
    if scores_shape is None or len(scores_shape) != 4 or int(axis) not in (-1, 3):
        return None
    if not view.private(softmax.inputs[0]):
        return None
    pre, mask = _unmasked(view, softmax.inputs[0])
    scores = back_chain(view, pre, set())  # scalings after the MatMul
    qk = view.producer(scores.source, "MatMul")
    if qk is None or any(n.op != "Mul" and n.op != "Div" for n in scores.nodes) or \
            not view.private(qk.outputs[0].name):
        return None
    guard, probs = _guarded(view, softmax)
    pv = view.sole_reader(probs, "MatMul")
    if pv is None or pv.inputs[0] != probs:
        return None
    parts = _heads(view, qk, pv)
    if parts is None:
        return None
    (q, qc), (k, kc), (v, vc) = parts.sides
    head_size = parts.hidden // parts.heads
    scale = scores.factor * qc.factor * kc.factor
    if vc.factor != 1.0 or not math.isclose(scale, 1 / math.sqrt(head_size), rel_tol=SCALE_RTOL):
        return None
    add = [view.producer(softmax.inputs[0])] if mask is not None else []
    nodes = (*q.nodes, *k.nodes, *v.nodes, *qc.nodes, *kc.nodes, *vc.nodes, qk,
             *scores.nodes, *add, softmax, *guard[0], pv, *parts.merge.nodes)
    position = {id(node): index for index, node in enumerate(view.graph.nodes)}
    ordered = tuple(sorted(nodes, key=lambda node: position[id(node)]))
    return AttentionMatch(parts.x, parts.heads, q, k, v, mask, guard[1], ordered)


def _unmasked(view: GraphView, name: str) -> tuple[str, str | None]:
    """(scores, mask) when ``name`` is ``scores + mask`` with the scores private."""
    add = view.producer(name, "Add")
    if add is None or not view.private(name):
        return name, None
    for mine, other in ((0, 1), (1, 0)):
        producer = view.producer(add.inputs[mine])
        if producer is not None and producer.op in ("MatMul", "Mul", "Div") and \
                view.private(add.inputs[mine]):
            return add.inputs[mine], add.inputs[other]
    return name, None


def _guarded(view: GraphView, softmax: Node) -> tuple[tuple[tuple[Node, ...], str | None], str]:
    """((guard nodes, the guard's zero), probabilities) for ``Where(IsNaN(p), 0, p)``."""
    p = softmax.outputs[0].name
    readers = view.graph.consumers(p)
    if p in view.outputs or len(readers) != 2:
        return ((), None), p
    isnan = next((n for n in readers if n.op == "IsNaN"), None)
    where = next((n for n in readers if n.op == "Where"), None)
    if isnan is None or where is None or not view.private(isnan.outputs[0].name):
        return ((), None), p
    if where.inputs[0] != isnan.outputs[0].name or where.inputs[2] != p or \
            view.scalar(where.inputs[1]) != 0.0:
        return ((), None), p
    return ((isnan, where), where.inputs[1]), where.outputs[0].name


@dataclasses.dataclass(frozen=True)
class _Heads:
    """The Q, K, V projections with their head-split chains, and the head merge."""

    sides: tuple[tuple[Projection, Chain], ...]
    x: str
    heads: int
    hidden: int
    merge: Chain


def _heads(view: GraphView, qk: Node, pv: Node) -> _Heads | None:
    """None unless every head split and the merge are the standard layouts."""
    q_side = _projected(view, qk.inputs[0])
    k_side = _projected(view, qk.inputs[1])
    v_side = _projected(view, pv.inputs[1])
    if q_side is None or k_side is None or v_side is None:
        return None
    x = q_side[0].matmul.inputs[0]
    if any(side[0].matmul.inputs[0] != x for side in (k_side, v_side)):
        return None
    x_shape, qv_shape = view.shape(x), view.shape(qk.inputs[0])
    if x_shape is None or len(x_shape) != 3 or qv_shape is None or len(qv_shape) != 4:
        return None
    batch, seq, _ = x_shape
    heads = qv_shape[1]
    sides = (q_side, k_side, v_side)
    widths = {int(view.constant(side[0].weight).shape[1]) for side in sides}  # type: ignore
    hidden = widths.pop()
    if widths or hidden % heads:
        return None
    base = np.arange(batch * seq * hidden).reshape(batch, seq, hidden)
    split = base.reshape(batch, seq, heads, hidden // heads)
    wants = (split.transpose(0, 2, 1, 3), split.transpose(0, 2, 3, 1), split.transpose(0, 2, 1, 3))
    for (_, chain), want in zip(sides, wants, strict=True):
        moved = run_chain(view, chain, base)
        if moved is None or not same(moved, want):
            return None
    per_head = np.arange(base.size).reshape(batch, heads, seq, hidden // heads)
    merge = forward_chain(view, pv.outputs[0].name,
                          per_head.transpose(0, 2, 1, 3).reshape(batch, seq, hidden))
    if merge is None:
        return None
    return _Heads(sides, x, heads, hidden, merge)


def _projected(view: GraphView, name: str) -> tuple[Projection, Chain] | None:
    """The projection feeding ``name`` through a private chain of layout ops."""
    if not view.private(name):
        return None
    chain = back_chain(view, name, set())
    proj = _projection(view, chain.source)
    if proj is None or not view.private(proj.out) or not chain.nodes:
        return None
    return proj, chain


def _projection(view: GraphView, name: str) -> Projection | None:
    node = view.producer(name)
    bias = None
    add = None
    if node is not None and node.op == "Add":
        for mine, other in ((0, 1), (1, 0)):
            matmul = view.producer(node.inputs[mine], "MatMul")
            constant = view.constant(node.inputs[other])
            if matmul is not None and constant is not None and constant.ndim == 1 and \
                    view.private(node.inputs[mine]):
                add, bias, node = node, node.inputs[other], matmul
                break
    if node is None or node.op != "MatMul":
        return None
    weight = view.constant(node.inputs[1])
    if weight is None or weight.ndim != 2 or weight.dtype != np.float32:
        return None
    if bias is not None and view.constant(bias).shape != (weight.shape[1],):  # type: ignore
        return None
    return Projection(node, add, node.inputs[1], bias)
