"""eliminate-dead-code: drop nodes and params nothing reads."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from optc.ir.graph import Graph, Node, node_reads
from optc.pipeline import Pass, PassContext


@dataclasses.dataclass(frozen=True)
class EliminateDeadCode(Pass):
    """Remove nodes whose outputs are never read, and params nothing reads.

    Exact: only computations that cannot reach a graph output are removed.

    Ordering: none; run it after passes that leave unused values behind
    (``fold-constants``, ``fold-batchnorm``, rewrites that bypass nodes).

    A value is live if it is a graph output or a live node reads it, directly or from
    inside a control-flow body (subgraph captures count as reads). Bodies of live
    control-flow nodes are cleaned the same way, with the body's outputs as roots; a
    body's inputs and the graph's inputs are never removed (they are interfaces).

    Options: none.

    Before -> after::

        input %x
        param %unused = [...]
        %a = Relu(%x)
        %b = Exp(%x)        # nothing reads %b
        output %a
      ->
        input %x
        %a = Relu(%x)
        output %a
    """

    name: ClassVar[str] = "eliminate-dead-code"
    exact: ClassVar[bool] = True

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        after = prune(graph)
        if after is not graph:
            ctx.logger.debug("eliminate-dead-code: %d -> %d nodes, %d -> %d params",
                             len(graph.nodes), len(after.nodes),
                             len(graph.params), len(after.params))
        return after


def prune(graph: Graph) -> Graph:
    """``graph`` without dead nodes and params; the same object when nothing is dead."""
    live = set(graph.output_names)
    kept: list[Node] = []
    for node in reversed(graph.nodes):
        if not any(out.name in live for out in node.outputs if out.name):
            continue
        node = _prune_bodies(node)
        kept.append(node)
        live.update(node_reads(node))
    kept.reverse()
    params = {name: array for name, array in graph.params.items() if name in live}
    # Graph.replace returns ``graph`` itself when the nodes and params are the same objects.
    return graph.replace(nodes=tuple(kept), params=params)


def _prune_bodies(node: Node) -> Node:
    if not any(True for _ in node.subgraphs()):
        return node
    attrs: dict[str, Any] = {}
    for key, value in node.attrs.items():
        if isinstance(value, Graph):
            value = prune(value)
        elif isinstance(value, tuple) and value and isinstance(value[0], Graph):
            value = tuple(prune(body) for body in value)
        attrs[key] = value
    return node.replace(attrs=attrs)
