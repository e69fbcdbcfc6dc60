"""Target-independent facts the roofline model needs about a graph.

- which values are compile-time constants (params, ``Constant``, and with folding on,
  everything computed from constants only: the compiler folds it before code runs);
- each node's ``Work`` from the rule table;
- aliases: a view's output is its input's memory, so traffic is charged to the root;
- consumers through views, to tell intermediates a fused kernel keeps to itself;
- each node's compute dtype: the rule's (integer ops), an activation's ``Precision``
  annotation, else its first float input's (a weight's ``Precision`` only narrows the
  bytes read: weight-only layers compute in their activations' float dtype).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np

from optc.cost.rules import Rule
from optc.cost.rules.recurrent import RANDOM
from optc.cost.work import NodeView, Work
from optc.errors import UnsupportedOpError
from optc.ir.annotations import Precision
from optc.ir.graph import Graph, Node, Value

WHERE = "the roofline cost model"
DEFAULT_DOMAINS = ("", "ai.onnx")
_FLOAT_BITS = {4: "float4_e2m1fn", 8: "float8_e4m3fn", 16: "float16", 32: "float32",
               64: "float64"}

Lookup = Callable[[str], Value]


@dataclasses.dataclass(frozen=True)
class NodeFacts:
    node: Node
    work: Work | None  # None: folded into a constant at compile time
    dtype: str


class GraphFacts:
    """Works, constants, aliases and consumers of one graph (a body sees its outer scope)."""

    def __init__(self, graph: Graph, rules: Mapping[str, Rule], fold_constants: bool,
                 subgraph_cost: Callable[[Graph, Lookup], object],
                 outer: Lookup | None = None) -> None:
        self.graph = graph
        self._outer = outer
        self._subgraph_cost = subgraph_cost
        self.constants: set[str] = set(graph.params)
        # Values computed from weights only (folded or not): their Precision is storage.
        self.weights: set[str] = set(graph.params)
        self.roots: dict[str, str] = {}
        self.facts: list[NodeFacts] = []
        for node in graph.nodes:
            self.facts.append(self._analyze(node, rules, fold_constants))
        self.consumers = self._consumers()
        self.output_roots = {self.root(v.name) for v in graph.outputs}

    # -- lookups ---------------------------------------------------------------------
    def lookup(self, name: str) -> Value:
        if self.graph.has_value(name):
            return self.graph.value(name)
        if self._outer is not None:
            return self._outer(name)
        raise KeyError(name)

    def array(self, name: str) -> np.ndarray | None:
        """The value of a constant given in the graph (a param or a ``Constant``)."""
        if name in self.graph.params:
            return np.asarray(self.graph.params[name])
        producer = self.graph.producer(name)
        if producer is not None and producer.op == "Constant" and "value" in producer.attrs:
            return np.asarray(producer.attrs["value"])
        return None

    def root(self, name: str) -> str:
        """The value whose memory ``name`` is (through chains of views)."""
        return self.roots.get(name, name)

    def producer(self, name: str) -> Node | None:
        return self.graph.producer(name)

    def view(self, node: Node) -> NodeView:
        return NodeView(node, self.lookup, self.array, self.constants.__contains__,
                        lambda body: self._subgraph_cost(body, self.lookup))

    # -- analysis ------------------------------------------------------------------
    def _analyze(self, node: Node, rules: Mapping[str, Rule], fold: bool) -> NodeFacts:
        names = [n for n in node.inputs if n]
        if names and all(n in self.weights for n in names):
            self.weights.update(node.output_names)
        key = node.op if node.domain in DEFAULT_DOMAINS else f"{node.domain}::{node.op}"
        if key not in rules:
            raise UnsupportedOpError(node.op, WHERE, node.domain)
        if self._folds(node, fold):
            self.constants.update(node.output_names)
            return NodeFacts(node, None, self._first_dtype(node))
        view = self.view(node)
        work = rules[key](view)
        if work.kind == "view" and node.inputs and node.inputs[0]:
            for out in node.output_names[:1]:
                self.roots[out] = self.root(node.inputs[0])
        return NodeFacts(node, work, self._dtype(node, work))

    def _folds(self, node: Node, fold: bool) -> bool:
        if node.op == "Constant":
            return True
        if not fold or node.op in RANDOM or any(True for _ in node.subgraphs()):
            return False
        if node.op in ("Shape", "Size"):  # known once the input's shape is static
            return bool(node.inputs) and self.lookup(node.inputs[0]).is_static()
        names = [n for n in node.inputs if n]
        return bool(names) and all(n in self.constants for n in names)

    def _consumers(self) -> dict[str, list[int]]:
        """Root value -> indices of the kernel nodes reading it (directly or via views)."""
        readers: dict[str, list[int]] = {}
        for index, fact in enumerate(self.facts):
            if fact.work is None or fact.work.kind != "kernel":
                continue
            for name, _ in fact.work.reads:
                readers.setdefault(self.root(name), []).append(index)
        return readers

    # -- dtypes ----------------------------------------------------------------------
    def _dtype(self, node: Node, work: Work) -> str:
        """The compute dtype: the rule's (integer ops), else the activation's precision.

        A ``Precision`` annotation on a node, or on a value computed from weights only
        (a weight's DequantizeLinear output), describes the *weights* (bytes only): a
        weight-only layer (w4a16) computes in its activation's float dtype, since the
        codes are widened in the kernel. Integer compute comes from an annotated
        activation (a quantized input, ``Precision(8)`` on its DequantizeLinear output),
        which optc's CPU code generator runs as an int8 x int8 -> int32 contraction
        (``optc.codegen.quantized``). A float op between DequantizeLinear and
        QuantizeLinear without one computes in float (an integer accelerator runs the
        region in its own dtype, ``optc.cost.devices``).
        """
        if work.dtype:
            return work.dtype
        for name in node.inputs:
            if name and name not in self.constants and name not in self.weights:
                precision = _precision_of(self._safe_value(name))
                if precision is not None:
                    return _precision_dtype(precision)
        return self._first_dtype(node)

    def _first_dtype(self, node: Node) -> str:
        dtypes = [self._safe_dtype(n) for n in node.inputs if n]
        dtypes += [v.dtype for v in node.outputs if v.name]
        known = [d for d in dtypes if d]
        floats = [d for d in known if "float" in d]
        return (floats or known or ["float32"])[0]

    def _safe_dtype(self, name: str) -> str | None:
        value = self._safe_value(name)
        return None if value is None else value.dtype

    def _safe_value(self, name: str) -> Value | None:
        try:
            return self.lookup(name)
        except KeyError:
            return None


def _precision_of(value: Value | None) -> Precision | None:
    if value is None:
        return None
    return next((a for a in value.annotations if isinstance(a, Precision)), None)


def _precision_dtype(precision: Precision) -> str:
    if precision.dtype == "bfloat":
        return "bfloat16"
    if precision.dtype == "float":
        return _FLOAT_BITS.get(precision.bits, "float32")
    return f"int{precision.bits}"
