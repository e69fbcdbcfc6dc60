"""Rule lookup, the supported-op list, and single-node evaluation (constant folding)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

from optc.errors import InvalidModelError, OptcError, UnsupportedOpError
from optc.interp.context import Rule, RuleCall, SubgraphRunner
from optc.interp.dtypes import to_tensor
from optc.interp.rules import DEFAULT_DOMAIN_RULES
from optc.interp.rules.contrib import CONTRIB_DOMAIN
from optc.interp.rules.contrib import RULES as CONTRIB_RULES
from optc.ir.graph import Graph, Node

WHERE = "the reference interpreter"
DEFAULT_DOMAINS = ("", "ai.onnx")
DEFAULT_OPSET = 17
"""Assumed when a graph declares no default-domain opset (optc's ONNX export default)."""


def has_rule(op: str, domain: str = "") -> bool:
    """Whether the interpreter can evaluate ``op`` of ``domain``."""
    if domain == CONTRIB_DOMAIN:  # the onnxruntime contrib ops the fuse pass emits
        return op in CONTRIB_RULES
    return domain in DEFAULT_DOMAINS and op in DEFAULT_DOMAIN_RULES


def supported_ops() -> list[str]:
    """Every op type of the default ONNX domain with a rule, sorted."""
    return sorted(DEFAULT_DOMAIN_RULES)


def rule_for(node: Node) -> Rule:
    if not has_rule(node.op, node.domain):
        raise UnsupportedOpError(node.op, WHERE, node.domain)
    return (CONTRIB_RULES if node.domain == CONTRIB_DOMAIN else DEFAULT_DOMAIN_RULES)[node.op]


def graph_opset(graph: Graph) -> int:
    """The graph's default-domain opset version ("" and "ai.onnx" are the same domain)."""
    for domain in DEFAULT_DOMAINS:
        if domain in graph.opsets:
            return int(graph.opsets[domain])
    return DEFAULT_OPSET


def check_supported(nodes: Iterable[Node]) -> None:
    """Raise ``UnsupportedOpError`` for the first node (subgraphs included) with no rule."""
    for node in nodes:
        rule_for(node)
        for sub in node.subgraphs():
            check_supported(sub.nodes)


def evaluate_node(node: Node, inputs: Sequence[torch.Tensor | np.ndarray | None], opset: int,
                  ) -> list[torch.Tensor | None]:
    """Evaluate one node on concrete inputs ('' inputs as None): one tensor per output
    (None only for an unnamed optional output the rule does not make).

    Control-flow bodies run with their own inputs and params only: a body reading a
    value of the enclosing graph cannot be evaluated in isolation.
    """
    tensors = [None if t is None else to_tensor(t) for t in inputs]
    call = RuleCall(node, tensors, opset, _isolated_runner(opset))
    return apply_rule(rule_for(node), call)


def apply_rule(rule: Rule, call: RuleCall) -> list[torch.Tensor | None]:
    """Run ``rule``: one tensor per node output, None only for an unnamed ('') output."""
    node = call.node
    try:
        results = list(rule(call))
    except OptcError:
        raise
    except (RuntimeError, ValueError, IndexError, TypeError, KeyError, ArithmeticError) as exc:
        # torch reports bad shapes and dtypes deep inside; name the node instead.
        first = (str(exc).strip() or type(exc).__name__).splitlines()[0][:300]
        raise InvalidModelError(f"{node.op} node {node.name!r} failed: {first}") from exc
    aligned: list[torch.Tensor | None] = []
    for index, value in enumerate(node.outputs):
        tensor = results[index] if index < len(results) else None
        if value.name and tensor is None:
            raise InvalidModelError(
                f"{node.op} node {node.name!r}: output {index} ({value.name!r}) is not "
                f"produced by {WHERE} (opset {call.opset})")
        aligned.append(tensor)
    return aligned


def _isolated_runner(opset: int) -> SubgraphRunner:
    def run_body(body: Graph, feeds: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        from optc.interp.run import run_subgraph

        return run_subgraph(body, feeds, outer={}, opset=opset)

    return run_body
