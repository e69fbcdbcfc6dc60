"""Control flow: the cost of a body, priced by the same model (If: the dearer branch)."""

from __future__ import annotations

from optc.cost.work import NodeView, Work
from optc.errors import UserInputError
from optc.ir.graph import Graph, node_reads


def _captures(view: NodeView) -> tuple[tuple[str, float], ...]:
    """The node's inputs and its bodies' outer reads, at no charge of their own: the
    bodies' costs already read them, but their producers must write them."""
    return tuple((name, 0.0) for name in dict.fromkeys(node_reads(view.node)))


def _results(view: NodeView) -> tuple[tuple[str, float], ...]:
    """The node's outputs, written by its bodies (whose costs include the writes)."""
    return tuple((name, 0.0) for name in view.used_outputs())


def if_rule(view: NodeView) -> Work:
    """ASSUMPTION: the condition is unknown before run time, so the dearer branch runs."""
    branches = [view.node.attr("then_branch"), view.node.attr("else_branch")]
    costs = [view.subgraph_cost(b) for b in branches if isinstance(b, Graph)]
    dearer = max(costs, key=lambda c: (c.latency_s, c.flops, c.bytes))  # type: ignore[attr-defined]
    return Work(op_class="other", reads=_captures(view), writes=_results(view), nested=dearer)


def loop_rule(view: NodeView) -> Work:
    """Body cost times the trip count, which must be a compile-time constant."""
    limit = view.constant(view.input(0)) if view.has_input(0) else None
    if limit is None:
        raise UserInputError(f"{view.where}: the trip count is not a constant; the roofline "
                             "model cannot price a data-dependent loop")
    body = view.node.attr("body")
    trips = int(limit.reshape(-1)[0])
    return Work(op_class="other", reads=_captures(view), writes=view.writes(),
                nested=view.subgraph_cost(body).scaled(trips))  # type: ignore[attr-defined]


RULES = {"If": if_rule, "Loop": loop_rule}
