"""The networkx view agrees with the IR's producers and consumers."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import onnx
import pytest

import optc
from optc.ir import Graph, node_reads, to_networkx

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


@pytest.fixture(scope="module", params=["light_inception_v1", "light_densenet121"])
def graph(request: pytest.FixtureRequest) -> Graph:
    return optc.load_onnx(LIGHT / f"{request.param}.onnx")


def test_edges_match_producers_and_consumers(graph: Graph) -> None:
    view = to_networkx(graph)
    assert view.number_of_nodes() == len(graph.nodes)
    index = {id(node): i for i, node in enumerate(graph.nodes)}
    expected = set()
    for i, node in enumerate(graph.nodes):
        assert view.nodes[i]["node"] is node and view.nodes[i]["op"] == node.op
        for name in node_reads(node):
            producer = graph.producer(name)
            if producer is not None:
                expected.add((index[id(producer)], i, name))
    got = {(u, v, data["value"]) for u, v, data in view.edges(data=True)}
    assert got == expected
    for name in {out.name for node in graph.nodes for out in node.outputs}:
        users = {v for _, v, value in view.out_edges(index[id(graph.producer(name))],
                                                      data="value") if value == name}
        assert users == {index[id(n)] for n in graph.consumers(name)}


def test_view_is_acyclic_and_node_order_is_topological(graph: Graph) -> None:
    view = to_networkx(graph)
    assert nx.is_directed_acyclic_graph(view)
    assert all(u < v for u, v in view.edges()), "IR node order is a topological order"
    assert sorted(nx.topological_sort(view)) == list(range(len(graph.nodes)))


def test_ancestors_match_a_walk_over_producers(graph: Graph) -> None:
    view = to_networkx(graph)
    index = {id(node): i for i, node in enumerate(graph.nodes)}
    roots = {index[id(graph.producer(name))] for name in graph.output_names}
    from_view = set(roots).union(*(nx.ancestors(view, r) for r in roots))
    live: set[int] = set()
    pending = list(graph.output_names)
    while pending:  # the same question answered with the IR's own lookups
        node = graph.producer(pending.pop())
        if node is not None and index[id(node)] not in live:
            live.add(index[id(node)])
            pending.extend(node_reads(node))
    assert from_view == live and len(live) > len(graph.nodes) // 2


def test_include_values_adds_inputs_and_params(graph: Graph) -> None:
    view = to_networkx(graph, include_values=True)
    assert view.number_of_nodes() == len(graph.nodes) + len(graph.inputs) + len(graph.params)
    for name in list(graph.input_names) + list(graph.params):
        assert view.nodes[name]["op"] in ("input", "param")
        assert view.out_degree(name) == len(graph.consumers(name))
    assert nx.is_directed_acyclic_graph(view)
    source = graph.input_names[0]
    assert nx.descendants(view, source), "the model input reaches the rest of the graph"
