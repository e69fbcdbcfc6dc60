"""The fusion pass's work, step by step: fold, rewrite to fused ops, group, score, annotate.

1. ``batchnorm``: BatchNormalization into the Conv / Gemm before it, by the
   ``fold-batchnorm`` pass itself (``passes/fold_batchnorm.py``).
2. ``gelu`` and ``attention``: decomposed subgraphs become one op (``optc.fusion.gelu``,
   ``optc.fusion.attention``) when the roofline predicts a saving for the subgraph as one
   kernel.
3. ``epilogue`` and ``elementwise``: FuseOps groups (``optc.fusion.groups``) are scored
   and the profitable ones annotated with ``FusionGroup``: groups with a Conv / Gemm /
   MatMul or softmax are epilogues, the others elementwise chains.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from optc.cost.shapes import complete_shapes
from optc.fusion.attention import find_attentions
from optc.fusion.emit import Replacement, apply, attention_nodes
from optc.fusion.gelu import find_gelus, gelu_node
from optc.fusion.groups import ANCHOR_OPS, REDUCE_OPS, fusion_groups
from optc.fusion.score import Score, annotate, score_groups
from optc.fusion.view import GraphView
from optc.interp.rules.contrib import CONTRIB_DOMAIN
from optc.ir.annotations import FusionGroup
from optc.ir.graph import Graph, Node

log = logging.getLogger(__name__)

FAMILIES = ("batchnorm", "gelu", "attention", "epilogue", "elementwise")
DEFAULT_FAMILIES = ("batchnorm", "attention", "epilogue", "elementwise")
"""Without ``gelu``: a decomposed erf GELU is fused anyway, as the MatMul's epilogue, and
TVM then evaluates erf with its fast approximation, while a single ``Gelu`` op lowers
to the exact erf (MiniLM on the host CPU: about 20% slower end to end)."""
CONTRIB_OPSET = 1


@dataclasses.dataclass
class FusionReport:
    """What was fused, for logs and ``report.json``."""

    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    saved_s: float = 0.0
    launches_saved: int = 0
    rejected: int = 0

    def add(self, family: str, score: Score) -> None:
        self.counts[family] = self.counts.get(family, 0) + 1
        self.saved_s += score.saved_s
        self.launches_saved += score.launches_saved


def fuse(graph: Graph, families: Sequence[str], target: Any, min_saving_s: float,
         report: FusionReport) -> Graph:
    """``graph`` with the chosen ``families`` of fusion applied (see the module docstring)."""
    if "batchnorm" in families:
        from optc.passes.fold_batchnorm import FoldBatchNorm  # the pass is the rule
        from optc.pipeline import PassContext

        folded = FoldBatchNorm().run(graph, PassContext())
        if folded is not graph:
            report.counts["batchnorm"] = sum(n.op == "BatchNormalization" for n in graph.nodes) \
                - sum(n.op == "BatchNormalization" for n in folded.nodes)
        graph = folded
    graph = _rewrite(graph, families, target, min_saving_s, report)
    return _group(graph, families, target, min_saving_s, report)


def _rewrite(graph: Graph, families: Sequence[str], target: Any, min_saving_s: float,
             report: FusionReport) -> Graph:
    if "gelu" not in families and "attention" not in families:
        return graph
    view = GraphView(graph, complete_shapes(graph))
    gelus = find_gelus(view) if "gelu" in families else []
    attentions = find_attentions(view) if "attention" in families else []
    matches = [("gelu", m.nodes) for m in gelus] + [("attention", m.nodes) for m in attentions]
    scores = score_groups(graph, [nodes for _, nodes in matches], target)
    replacements: list[Replacement] = []
    for (family, nodes), score, match in zip(matches, scores, [*gelus, *attentions], strict=True):
        if score.saved_s <= min_saving_s:
            report.rejected += 1
            continue
        report.add(family, score)
        if family == "gelu":
            replacements.append((nodes, (gelu_node(match, view.opset),), {}))  # type: ignore[arg-type]
        else:
            replacements.append(attention_nodes(view, match))  # type: ignore[arg-type]
    result = apply(graph, replacements)
    if any(n.domain == CONTRIB_DOMAIN for n in result.nodes) and \
            CONTRIB_DOMAIN not in result.opsets:
        result = result.replace(opsets={**result.opsets, CONTRIB_DOMAIN: CONTRIB_OPSET})
    return result


def _group(graph: Graph, families: Sequence[str], target: Any, min_saving_s: float,
           report: FusionReport) -> Graph:
    if "epilogue" not in families and "elementwise" not in families:
        return graph
    view = GraphView(graph)
    groups = [g for g in fusion_groups(view, set(graph.params))
              if _family(g) in families]
    if not groups:
        return graph
    scores = score_groups(graph, groups, target)
    kept: list[list[Node]] = []
    for group, score in zip(groups, scores, strict=True):
        if score.saved_s <= min_saving_s:
            report.rejected += 1
            continue
        report.add(_family(group), score)
        kept.append(group)
    grouped = {id(node) for group in kept for node in group}
    taken = {a.group for node in graph.nodes if id(node) not in grouped
             for a in node.annotations if isinstance(a, FusionGroup)}
    names = _names(len(kept), taken)
    annotated = annotate(graph, kept, names)
    if annotated.nodes == graph.nodes:
        return graph  # the same groups were already there: unchanged
    return annotated


def _family(group: Sequence[Node]) -> str:
    core = ANCHOR_OPS | REDUCE_OPS
    return "epilogue" if any(n.op in core for n in group) else "elementwise"


def _names(count: int, taken: set[str]) -> list[str]:
    names: list[str] = []
    index = 0
    while len(names) < count:
        name = f"fused{index}"
        if name not in taken:
            names.append(name)
        index += 1
    return names
