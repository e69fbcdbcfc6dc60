"""Score fusion decisions with the target's cost model.

A candidate group is a set of nodes that would run as one kernel. Its score is the
time the roofline model (``optc.cost.roofline``) predicts for those nodes as separate
kernels minus the time as one fused kernel (the ``FusionGroup`` annotation makes the
roofline price them together): the intermediates no longer written and read back,
and the launches saved. Both breakdowns are computed once for all candidates: the
roofline prices each kernel on its own, so per-group differences add up.

Without a target (``ctx.target`` is None), or where the roofline cannot price the
graph (an op it has no rule for), the score falls back to the same two terms at a
nominal bandwidth and launch cost, so a decision is always made and logged.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from optc.errors import OptcError
from optc.ir.annotations import FusionGroup
from optc.ir.graph import Graph, Node

log = logging.getLogger(__name__)

NOMINAL_BANDWIDTH = 20e9
"""Bytes/s for the target-free fallback (a DDR4 channel); it only orders decisions."""
NOMINAL_LAUNCH_S = 5e-6
"""Seconds per kernel launch for the target-free fallback."""
_BITS = {"float64": 64, "int64": 64, "float32": 32, "int32": 32, "float16": 16,
         "bfloat16": 16, "int8": 8, "uint8": 8, "bool": 8}


@dataclasses.dataclass(frozen=True)
class Score:
    """Predicted seconds saved by fusing one group, and how it was predicted."""

    saved_s: float
    launches_saved: int
    bytes_saved: float
    method: str  # "roofline" or "nominal"


def annotate(graph: Graph, groups: Sequence[Sequence[Node]], names: Sequence[str]) -> Graph:
    """``graph`` with each node of ``groups[i]`` carrying ``FusionGroup(names[i])``."""
    label = {id(node): name for group, name in zip(groups, names, strict=True)
             for node in group}
    if not label:
        return graph
    nodes = tuple(_relabel(node, label[id(node)]) if id(node) in label else node
                  for node in graph.nodes)
    return graph.replace(nodes=nodes)


def _relabel(node: Node, group: str | None) -> Node:
    """``node`` in fusion group ``group`` (None: in none)."""
    kept = tuple(a for a in node.annotations if not isinstance(a, FusionGroup))
    return node.replace(annotations=kept if group is None else (*kept, FusionGroup(group)))


def score_groups(graph: Graph, groups: Sequence[Sequence[Node]], target: Any) -> list[Score]:
    """One ``Score`` per group (see the module docstring)."""
    if target is not None:
        try:
            return _roofline_scores(graph, groups, target)
        except OptcError as exc:  # e.g. an op without a cost rule: fall back, say why
            log.info("fusion scored without the roofline model: %s", exc)
    return [_nominal(graph, group) for group in groups]


def _roofline_scores(graph: Graph, groups: Sequence[Sequence[Node]], target: Any,
                     ) -> list[Score]:
    from optc.cost.roofline import RooflineModel  # deferred: the cost package is large

    model = RooflineModel()
    names = [f"candidate{i}" for i in range(len(groups))]
    apart = model.breakdown(_without_groups(graph), target).nodes
    fused = model.breakdown(annotate(graph, groups, names), target).nodes
    position = {id(node): i for i, node in enumerate(graph.nodes)}
    scores = []
    for group in groups:
        rows = [position[id(node)] for node in group]
        before = [apart[i] for i in rows]
        after = [fused[i] for i in rows]
        scores.append(Score(
            saved_s=sum(r.latency_s for r in before) - sum(r.latency_s for r in after),
            launches_saved=sum(r.launches for r in before) - sum(r.launches for r in after),
            bytes_saved=sum(r.bytes for r in before) - sum(r.bytes for r in after),
            method="roofline"))
    return scores


def _without_groups(graph: Graph) -> Graph:
    if not any(isinstance(a, FusionGroup) for node in graph.nodes for a in node.annotations):
        return graph
    return graph.replace(nodes=tuple(_relabel(node, None) for node in graph.nodes))


def _nominal(graph: Graph, group: Sequence[Node]) -> Score:
    """Intermediates the group keeps to itself are neither written nor read back."""
    inside = {id(node) for node in group}
    outputs = set(graph.output_names)
    saved_bytes = 0.0
    for node in group:
        for value in node.outputs:
            readers = graph.consumers(value.name) if value.name else ()
            if value.name and value.name not in outputs and readers and \
                    all(id(r) in inside for r in readers):
                # one write and a read by each reader kernel, none of which happen now
                saved_bytes += (1 + len(readers)) * _nbytes(value.shape, value.dtype)
    launches = len(group) - 1
    return Score(saved_bytes / NOMINAL_BANDWIDTH + launches * NOMINAL_LAUNCH_S, launches,
                 saved_bytes, "nominal")


def _nbytes(shape: tuple[int | str | None, ...] | None, dtype: str | None) -> float:
    if shape is None or not all(isinstance(d, int) for d in shape):
        return 0.0
    count = 1
    for dim in shape:
        count *= int(dim)  # type: ignore[arg-type]
    return count * _BITS.get(dtype or "float32", 32) / 8
