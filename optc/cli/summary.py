"""A model's vital statistics as a JSON-ready document (``optc show``).

Kept free of presentation so that scripts can call it: ``model_summary(load_onnx(p))``.
"""

from __future__ import annotations

from typing import Any

from optc.ir.graph import Graph, Value

SUMMARY_KEYS = ("model", "graph", "nodes", "subgraph_nodes", "ops", "params", "inputs",
                "outputs", "opsets", "metadata")
"""The keys of ``model_summary``'s document, in order; scripts may rely on them."""


def model_summary(graph: Graph, source: str = "") -> dict[str, Any]:
    """Node count, op histogram, parameter size, typed inputs/outputs and opsets of ``graph``.

    ``nodes`` and ``ops`` count the top-level graph (as ONNX does); nodes inside
    control-flow bodies are counted apart in ``subgraph_nodes``.
    """
    return {
        "model": source,
        "graph": graph.name,
        "nodes": len(graph.nodes),
        "subgraph_nodes": _subgraph_nodes(graph),
        "ops": graph.op_histogram(),
        "params": {
            "tensors": len(graph.params),
            "elements": int(sum(a.size for a in graph.params.values())),
            "bytes": graph.param_bytes(),
        },
        "inputs": [value_document(v) for v in graph.inputs],
        "outputs": [value_document(v) for v in graph.outputs],
        "opsets": {domain or "ai.onnx": int(v) for domain, v in sorted(graph.opsets.items())},
        "metadata": dict(graph.metadata),
    }


def value_document(value: Value) -> dict[str, Any]:
    """``{"name", "dtype", "shape"}``; shape is null when even the rank is unknown."""
    shape = None if value.shape is None else list(value.shape)
    return {"name": value.name, "dtype": value.dtype, "shape": shape}


def _subgraph_nodes(graph: Graph) -> int:
    return sum(len(sub.nodes) + _subgraph_nodes(sub)
               for node in graph.nodes for sub in node.subgraphs())
