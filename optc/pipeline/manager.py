"""The pass manager: ``Pipeline`` (an ordered list of configured passes) and its run.

``Pipeline.parse("fold-constants,fold-batchnorm,eliminate-dead-code")`` builds one from
text (see ``optc.pipeline.grammar``); ``str(pipeline)`` gives the canonical text back.
``pipeline.run(graph, ctx, instruments=[...])`` applies the passes in order and returns
the final graph with one ``PassRecord`` per pass.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

from optc.errors import OptcError, UnknownNameError
from optc.ir.graph import Graph
from optc.pipeline.base import Pass
from optc.pipeline.context import PassContext, unknown_analysis_message
from optc.pipeline.discovery import PassRegistry, available_passes, check_registry, lookup_pass
from optc.pipeline.errors import PassError
from optc.pipeline.grammar import split_pipeline
from optc.pipeline.instruments import InstrumentLike


@dataclasses.dataclass(frozen=True)
class PassRecord:
    """What happened in one pass: ``modified`` is ``after is not before``."""

    index: int
    name: str
    text: str
    modified: bool
    seconds: float
    nodes_before: int
    nodes_after: int


@dataclasses.dataclass(frozen=True, eq=False)
class PipelineResult:
    graph: Graph
    records: tuple[PassRecord, ...]

    @property
    def modified(self) -> bool:
        return any(r.modified for r in self.records)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.records)


@dataclasses.dataclass(frozen=True)
class Pipeline(Sequence[Pass]):
    """An explicit, ordered list of configured passes."""

    passes: tuple[Pass, ...] = ()

    def __post_init__(self) -> None:
        passes = tuple(self.passes)
        for p in passes:
            if not isinstance(p, Pass):
                raise TypeError(f"a Pipeline holds Pass instances, got {p!r}")
        object.__setattr__(self, "passes", passes)

    @classmethod
    def parse(cls, text: str, registry: PassRegistry | None = None) -> Pipeline:
        return parse_pipeline(text, registry)

    # -- sequence ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.passes)

    @overload
    def __getitem__(self, index: int) -> Pass: ...

    @overload
    def __getitem__(self, index: slice) -> Pipeline: ...

    def __getitem__(self, index: int | slice) -> Pass | Pipeline:
        if isinstance(index, slice):
            return Pipeline(self.passes[index])
        return self.passes[index]

    def __iter__(self) -> Iterator[Pass]:
        return iter(self.passes)

    def __add__(self, other: Pipeline | Iterable[Pass]) -> Pipeline:
        return Pipeline(self.passes + tuple(other))

    def text(self, include_defaults: bool = False) -> str:
        return ",".join(p.text(include_defaults) for p in self.passes)

    def __str__(self) -> str:
        return self.text()

    def to_toml(self) -> str:
        from optc.pipeline.toml_form import pipeline_to_toml

        return pipeline_to_toml(self)

    # -- running -------------------------------------------------------------------
    def run(self, graph: Graph, ctx: PassContext | None = None,
            instruments: Iterable[InstrumentLike] = ()) -> PipelineResult:
        """Apply every pass in order; instruments see each step."""
        ctx = ctx or PassContext()
        instruments = list(instruments)
        self.check_analyses(ctx)
        records: list[PassRecord] = []
        total = len(self.passes)
        for index, pass_ in enumerate(self.passes):
            ctx.report_progress(pass_.name, index, total)
            for inst in instruments:
                inst.before_pass(index, pass_, graph, ctx)
            start = time.perf_counter()
            after = run_pass(pass_, graph, ctx)
            record = PassRecord(index, pass_.name, pass_.text(), after is not graph,
                                time.perf_counter() - start, len(graph.nodes), len(after.nodes))
            ctx.logger.debug("pass %s: %s in %.3f s", record.text,
                             "modified" if record.modified else "unchanged", record.seconds)
            for inst in instruments:
                inst.after_pass(record, pass_, graph, after, ctx)
            records.append(record)
            graph = after
        ctx.report_progress("done", total, total)
        return PipelineResult(graph, tuple(records))

    def check_analyses(self, ctx: PassContext) -> None:
        """Fail before running anything if a pass requires an unregistered analysis."""
        for pass_ in self.passes:
            for name in ctx.missing_analyses(pass_.requires):
                raise UnknownNameError(f"pass {pass_.name!r} requires "
                                       + unknown_analysis_message(name, ctx.analyses))


def run_pass(pass_: Pass, graph: Graph, ctx: PassContext) -> Graph:
    """Run one pass, turning a crash or a wrong return type into a ``PassError``."""
    try:
        after = pass_.run(graph, ctx)
    except OptcError:
        raise
    except Exception as exc:  # a pass bug: report it with the pass's name
        raise PassError(f"pass {pass_.text()!r} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(after, Graph):
        raise PassError(f"pass {pass_.text()!r} returned {type(after).__name__}, not a Graph")
    return after


def parse_pipeline(text: str, registry: PassRegistry | None = None) -> Pipeline:
    """Build a ``Pipeline`` from pipeline text; ``registry`` defaults to the installed passes."""
    registry = _registry(registry)
    passes = []
    for raw in split_pipeline(text):
        cls = lookup_pass(raw.name, registry)
        passes.append(cls.configure(raw.options))
    return Pipeline(tuple(passes))


def pipeline_from_specs(specs: Sequence[tuple[str, Mapping[str, Any]]],
                        registry: PassRegistry | None = None) -> Pipeline:
    """Build a ``Pipeline`` from ``(name, options)`` pairs (TOML values or text values)."""
    registry = _registry(registry)
    return Pipeline(tuple(lookup_pass(name, registry).configure(options)
                          for name, options in specs))


def _registry(registry: PassRegistry | None) -> PassRegistry:
    if registry is None:
        return available_passes()
    check_registry(registry)
    return registry
