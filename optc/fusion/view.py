"""What the fusion matchers ask of a graph: constants, sole readers, concrete shapes.

Exporters leave some shapes unknown (``float32[unk__1,16,384]``) even when every
graph input is static; matchers need them (head counts, mask shapes), so shapes are
looked up in a copy sized by ``optc.cost.shapes.complete_shapes`` (one run of the
reference interpreter on ones). The rewritten graph itself keeps its own types.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from optc.ir.graph import Graph, Node
from optc.ir.rewrite import NameSource

DEFAULT_DOMAINS = ("", "ai.onnx")


class GraphView:
    """Read-only questions about one graph, plus a source of fresh value names."""

    def __init__(self, graph: Graph, sized: Graph | None = None) -> None:
        self.graph = graph
        self.sized = sized or graph
        self.outputs = set(graph.output_names)
        self._names = NameSource(graph)

    @property
    def opset(self) -> int:
        """The default-domain opset version (0 when the graph declares none)."""
        opsets = self.graph.opsets
        return int(opsets.get("", opsets.get("ai.onnx", 0)) or 0)

    # -- structure ---------------------------------------------------------------------
    def producer(self, name: str, op: str | None = None) -> Node | None:
        """The default-domain node making ``name`` (of type ``op`` when given), or None."""
        node = self.graph.producer(name) if name else None
        if node is None or node.domain not in DEFAULT_DOMAINS:
            return None
        return node if op is None or node.op == op else None

    def private(self, name: str) -> bool:
        """Whether ``name`` has exactly one reader and is no graph output: a fused
        kernel can keep it to itself."""
        return name not in self.outputs and len(self.graph.consumers(name)) == 1

    def sole_reader(self, name: str, op: str | None = None) -> Node | None:
        """The only reader of ``name`` (of type ``op`` when given) if it is private."""
        if not self.private(name):
            return None
        node = self.graph.consumers(name)[0]
        if node.domain not in DEFAULT_DOMAINS:
            return None
        return node if op is None or node.op == op else None

    # -- constants -----------------------------------------------------------------------
    def constant(self, name: str) -> np.ndarray | None:
        """The value of a param or of a ``Constant`` node's output, else None."""
        if name in self.graph.params:
            return np.asarray(self.graph.params[name])
        node = self.producer(name, "Constant")
        if node is not None and "value" in node.attrs:
            return np.asarray(node.attrs["value"])
        return None

    def scalar(self, name: str) -> float | None:
        """A one-element float constant as a Python float, else None."""
        array = self.constant(name)
        if array is None or array.size != 1 or array.dtype.kind != "f":
            return None
        return float(array.reshape(-1)[0])

    def other_input(self, node: Node, name: str) -> str | None:
        """The other input of a binary ``node`` that reads ``name`` once."""
        if len(node.inputs) != 2 or list(node.inputs).count(name) != 1:
            return None
        return node.inputs[1] if node.inputs[0] == name else node.inputs[0]

    # -- shapes --------------------------------------------------------------------------
    def shape(self, name: str) -> tuple[int, ...] | None:
        """The static shape of ``name`` (sized copy first), else None."""
        for graph in (self.sized, self.graph):
            if graph.has_value(name):
                value = graph.value(name)
                if value.is_static():
                    return tuple(int(d) for d in value.shape)  # type: ignore[union-attr]
        array = self.constant(name)
        return None if array is None else tuple(array.shape)

    def dtype(self, name: str) -> str | None:
        return self.graph.value(name).dtype if self.graph.has_value(name) else None

    # -- names ---------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        return self._names.fresh(base)


def close(value: float | None, want: float, rtol: float = 1e-5) -> bool:
    """``value`` equals ``want`` up to float32 rounding of a computed constant."""
    return value is not None and math.isclose(value, want, rel_tol=rtol)


def claimed(nodes: Iterable[Node], taken: set[int]) -> bool:
    """Whether any of ``nodes`` already belongs to another match (by identity)."""
    return any(id(node) in taken for node in nodes)
