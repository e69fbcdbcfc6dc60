"""Candidate pipelines: every pass of a pipeline, replaced in turn by the instances its
``candidates(graph, ctx)`` proposes, run on the graph that reaches it.

The expansion is a tree walked pass by pass: each partial candidate (the graph after
the passes chosen so far) branches into the pass as configured, each distinct instance
the pass proposes for that graph, and, for a lossy pass, the pipeline without it (the
most accurate point, which the search needs to be able to pick). Branches that end in
the same graph (compared without metadata: a pass's report may differ while its graph
does not) are merged, keeping the first. The walk is generic over passes: it knows
nothing of what a pass does, only ``Pass.exact`` and ``Pass.candidates``.

Branches share their prefix's graph object, so per-graph analysis caches in the
``PassContext`` (the mixed-precision session, say) serve every sibling.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator

from optc.ir.graph import Graph
from optc.pipeline import Pass, PassContext, PassRecord, Pipeline, VerifyInstrument

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, eq=False)
class Candidate:
    """One candidate: its configured passes, the graph they produce, one record per pass."""

    index: int
    pipeline: Pipeline
    graph: Graph = dataclasses.field(repr=False)
    records: tuple[PassRecord, ...] = dataclasses.field(repr=False)
    same_graph: tuple[str, ...] = ()
    """Other pipelines (texts, up to the pass where they met) that produced this graph."""

    @property
    def exact(self) -> bool:
        """Every pass preserves semantics: the candidate computes what the model computes."""
        return all(p.exact for p in self.pipeline)

    @property
    def text(self) -> str:
        return self.pipeline.text()

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.records)


@dataclasses.dataclass(frozen=True, eq=False)
class _Partial:
    graph: Graph
    passes: tuple[Pass, ...]
    records: tuple[PassRecord, ...]
    same_graph: tuple[str, ...] = ()

    @property
    def exact(self) -> bool:
        return all(p.exact for p in self.passes)

    @property
    def text(self) -> str:
        return Pipeline(self.passes).text()


def pass_options(pass_: Pass, graph: Graph, ctx: PassContext) -> list[Pass | None]:
    """The pass as configured, its distinct proposals for ``graph``, and ``None`` (leave
    the pass out) when it is lossy."""
    found: list[Pass | None] = [pass_]
    for proposal in pass_.candidates(graph, ctx):
        if proposal not in found:
            found.append(proposal)
    if not pass_.exact:
        found.append(None)
    return found


def expand(graph: Graph, pipeline: Pipeline, ctx: PassContext, *,
           limit: int = 24) -> list[Candidate]:
    """At most ``limit`` candidates with distinct graphs, the configured pipeline first."""
    partials = [_Partial(graph, (), ())]
    for pass_ in pipeline:
        grown = list(_distinct(_grow(partial, pass_, ctx) for partial in partials))
        if len(grown) > limit:
            log.warning("search: %d candidates after pass %s; keeping the first %d",
                        len(grown), pass_.name, limit)
            grown = grown[:limit]
        partials = grown
    return [Candidate(i, Pipeline(p.passes), p.graph, p.records, p.same_graph)
            for i, p in enumerate(partials)]


def _grow(partial: _Partial, pass_: Pass, ctx: PassContext) -> Iterator[_Partial]:
    for option in pass_options(pass_, partial.graph, ctx):
        if option is None:
            yield partial
            continue
        result = Pipeline((option,)).run(partial.graph, ctx, instruments=[VerifyInstrument()])
        record = dataclasses.replace(result.records[0], index=len(partial.passes))
        yield _Partial(result.graph, (*partial.passes, option), (*partial.records, record),
                       partial.same_graph)


def _distinct(groups: Iterable[Iterator[_Partial]]) -> Iterator[_Partial]:
    """One partial per distinct graph, in first-seen order. Where a lossy pipeline gave
    the same graph as an exact one (a lossy pass that changed nothing, e.g. no layer was
    worth lowering), the exact one stands for it: the candidate is labelled by what it
    is, and the other pipelines are listed in ``same_graph``."""
    kept: dict[str, list[_Partial]] = {}
    for group in groups:
        for partial in group:
            kept.setdefault(graph_key(partial.graph), []).append(partial)
    for same in kept.values():
        chosen = next((p for p in same if p.exact), same[0])
        others = tuple(p.text for p in same if p is not chosen)
        yield dataclasses.replace(chosen, same_graph=chosen.same_graph + others)


def graph_key(graph: Graph) -> str:
    """Structural hash without metadata (pass reports live there)."""
    return (graph.replace(metadata={}) if graph.metadata else graph).structural_hash()
