"""A networkx view of a graph, for algorithms (blocks, dominators, partitioning).

The view is derived, never the storage: edits happen on the IR and a fresh view is
taken when needed.
"""

from __future__ import annotations

import networkx as nx

from optc.ir.graph import Graph, node_reads


def to_networkx(graph: Graph, include_values: bool = False) -> nx.MultiDiGraph:
    """Nodes are node indices (``node`` attribute holds the IR node); an edge per value read.

    With ``include_values`` graph inputs and params become nodes too (keyed by name),
    so that sources of data appear in the view.
    """
    view = nx.MultiDiGraph(name=graph.name)
    producer_index: dict[str, int] = {}
    for index, node in enumerate(graph.nodes):
        view.add_node(index, node=node, op=node.op)
        for out in node.outputs:
            producer_index[out.name] = index
    if include_values:
        for value in graph.inputs:
            view.add_node(value.name, value=value, op="input")
        for name in graph.params:
            view.add_node(name, value=graph.value(name), op="param")
    for index, node in enumerate(graph.nodes):
        for name in node_reads(node):
            if name in producer_index:
                view.add_edge(producer_index[name], index, value=name)
            elif include_values and view.has_node(name):
                view.add_edge(name, index, value=name)
    return view
