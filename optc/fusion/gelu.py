"""GELU written out as ``x * 0.5 * (1 + erf(x / sqrt(2)))`` -> one ``Gelu`` node.

Both torch exporters write ``F.gelu`` this way below opset 20, with different
association: TorchScript ``Mul(Mul(x, Add(Erf(Div(x, 1.414)), 1)), 0.5)``, dynamo
``Mul(x, Mul(0.5, Add(Erf(Div(x, 1.414)), 1)))``; others scale by ``Mul(x, 0.7071)``
or form ``Mul(x, 0.5)`` first. The matcher starts at ``Erf`` and accepts any of
these. The replacement is the standard ``Gelu`` from opset 20, else onnxruntime's
contrib ``com.microsoft.Gelu`` (same erf formula), which TVM's importer also reads.
"""

from __future__ import annotations

import dataclasses
import math

from optc.fusion.view import GraphView, close
from optc.interp.rules.contrib import CONTRIB_DOMAIN
from optc.ir.graph import Node

STANDARD_GELU_OPSET = 20


@dataclasses.dataclass(frozen=True)
class GeluMatch:
    """The nodes computing ``gelu(x)`` into ``out`` (the last one, ``nodes[-1]``)."""

    x: str
    nodes: tuple[Node, ...]

    @property
    def out(self) -> str:
        return self.nodes[-1].outputs[0].name


def find_gelus(view: GraphView) -> list[GeluMatch]:
    found = []
    for node in view.graph.nodes:
        if node.op == "Erf" and node.domain in ("", "ai.onnx"):
            match = _match(view, node)
            if match is not None:
                found.append(match)
    return found


def _match(view: GraphView, erf: Node) -> GeluMatch | None:
    scaled = view.producer(erf.inputs[0])
    x = _unscaled(view, scaled) if scaled is not None else None
    if x is None or not view.private(scaled.outputs[0].name):  # type: ignore[union-attr]
        return None
    plus_one = view.sole_reader(erf.outputs[0].name, "Add")
    if plus_one is None or not close(view.scalar(_other(view, plus_one, erf)), 1.0):
        return None
    tail = _product_tail(view, plus_one, x)
    if tail is None:
        return None
    assert scaled is not None
    return GeluMatch(x, (scaled, erf, plus_one, *tail))


def _unscaled(view: GraphView, node: Node) -> str | None:
    """``x`` when ``node`` is ``x / sqrt(2)`` or ``x * (1 / sqrt(2))``."""
    if node.op == "Div" and close(view.scalar(node.inputs[1]), math.sqrt(2.0)):
        return node.inputs[0]
    if node.op == "Mul":
        for mine, other in ((0, 1), (1, 0)):
            if close(view.scalar(node.inputs[other]), math.sqrt(0.5)):
                return node.inputs[mine]
    return None


def _other(view: GraphView, node: Node, producer: Node) -> str:
    return view.other_input(node, producer.outputs[0].name) or ""


def _product_tail(view: GraphView, plus_one: Node, x: str) -> tuple[Node, ...] | None:
    """The Mul nodes forming ``x * 0.5 * plus_one`` in any association."""
    first = view.sole_reader(plus_one.outputs[0].name, "Mul")
    if first is None:
        return None
    partner = _other(view, first, plus_one)
    half = view.producer(partner, "Mul")
    if partner == x or close(view.scalar(partner), 0.5):
        # (x * a) * 0.5   or   (0.5 * a) * x
        second = view.sole_reader(first.outputs[0].name, "Mul")
        if second is None:
            return None
        rest = _other(view, second, first)
        want_x = partner != x
        ok = rest == x if want_x else close(view.scalar(rest), 0.5)
        return (first, second) if ok else None
    if half is not None and view.private(partner) and _is_half_of(view, half, x):
        return (half, first)  # (x * 0.5) * a
    return None


def _is_half_of(view: GraphView, node: Node, x: str) -> bool:
    other = view.other_input(node, x)
    return other is not None and close(view.scalar(other), 0.5)


def gelu_node(match: GeluMatch, opset: int) -> Node:
    """The one node replacing ``match``; it keeps the last node's output and name."""
    last = match.nodes[-1]
    domain = "" if opset >= STANDARD_GELU_OPSET else CONTRIB_DOMAIN
    return Node("Gelu", (match.x,), last.outputs, {}, domain=domain,
                name=f"{last.name or match.out}/gelu")
