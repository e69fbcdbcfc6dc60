"""Running pipelines: records, instruments, analyses, errors raised by passes."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import pytest
from pass_support import golden, light_model, op_count

import optc
from optc.errors import InvalidModelError, UnknownNameError
from optc.ir.graph import Graph
from optc.pipeline import (
    IRDumpInstrument,
    Pass,
    PassContext,
    PassError,
    PassVerificationError,
    Pipeline,
    TimingInstrument,
    VerifyInstrument,
    parse_pipeline,
)


@dataclasses.dataclass(frozen=True)
class DropFirstNode(Pass):
    """Deliberately broken: removes the first node without rewiring its readers.

    Claims to be exact, which it is not; the verifier must catch it.
    """

    name: ClassVar[str] = "drop-first-node"
    exact: ClassVar[bool] = True

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        return graph.replace(nodes=graph.nodes[1:])


@dataclasses.dataclass(frozen=True)
class CountOps(Pass):
    """Asks for the ``op-count`` analysis twice per graph and changes nothing.

    Exact. Options: none.
    """

    name: ClassVar[str] = "count-ops"
    exact: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ("op-count",)

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        assert ctx.analysis("op-count", graph) == ctx.analysis("op-count", graph)
        return graph


@dataclasses.dataclass(frozen=True)
class Crash(Pass):
    """Raises a plain exception, as a buggy pass would.

    Exact. Options: none.
    """

    name: ClassVar[str] = "crash"
    exact: ClassVar[bool] = True

    def run(self, graph: Graph, ctx: PassContext) -> Graph:
        raise ZeroDivisionError("boom")


def bn_graph() -> Graph:
    return optc.parse_graph(golden("fold_batchnorm", "conv")[0])


def test_records_and_final_graph() -> None:
    graph = bn_graph()
    result = parse_pipeline("eliminate-dead-code,fold-batchnorm,eliminate-dead-code").run(graph)
    assert [r.name for r in result.records] == [
        "eliminate-dead-code", "fold-batchnorm", "eliminate-dead-code"]
    assert [r.modified for r in result.records] == [False, True, False]
    assert [(r.nodes_before, r.nodes_after) for r in result.records] == [(3, 3), (3, 2), (2, 2)]
    assert all(r.seconds >= 0 for r in result.records)
    assert result.modified and result.graph is not graph
    assert op_count(result.graph, "BatchNormalization") == 0
    assert result.seconds == pytest.approx(sum(r.seconds for r in result.records))


def test_timing_instrument_collects_every_pass() -> None:
    timing = TimingInstrument()
    parse_pipeline("fold-batchnorm,eliminate-dead-code").run(bn_graph(), instruments=[timing])
    assert [r.name for r in timing.records] == ["fold-batchnorm", "eliminate-dead-code"]
    table = timing.table()
    assert "fold-batchnorm" in table and "3->2" in table and "total" in table
    assert timing.total_seconds == pytest.approx(sum(r.seconds for r in timing.records))


def test_verify_instrument_catches_a_broken_pass() -> None:
    pipeline = Pipeline((DropFirstNode(),))
    graph = bn_graph()
    assert pipeline.run(graph).graph is not graph  # unnoticed without the instrument
    with pytest.raises(PassVerificationError, match=r"pass 'drop-first-node' \(#1") as info:
        pipeline.run(graph, instruments=[VerifyInstrument()])
    assert any("reads 'c', which is never defined" in p for p in info.value.problems)


def test_verify_instrument_checks_the_input_first() -> None:
    broken = DropFirstNode().run(bn_graph(), PassContext())
    with pytest.raises(InvalidModelError, match="IR verification failed"):
        parse_pipeline("eliminate-dead-code").run(broken, instruments=[VerifyInstrument()])


def test_verify_with_types_on_a_real_model() -> None:
    graph = light_model("squeezenet")
    result = parse_pipeline("eliminate-dead-code").run(
        graph, instruments=[VerifyInstrument(types=True)])
    assert result.graph is graph


def test_ir_dump_writes_before_and_after(tmp_path: Path) -> None:
    dump = IRDumpInstrument(tmp_path / "ir")
    parse_pipeline("fold-batchnorm,eliminate-dead-code").run(bn_graph(), instruments=[dump])
    names = sorted(p.name for p in (tmp_path / "ir").iterdir())
    assert names == ["01-fold-batchnorm-after.ir", "01-fold-batchnorm-before.ir",
                     "02-eliminate-dead-code-after.ir", "02-eliminate-dead-code-before.ir"]
    before, after = golden("fold_batchnorm", "conv")
    assert (tmp_path / "ir" / "01-fold-batchnorm-before.ir").read_text() == before
    assert (tmp_path / "ir" / "01-fold-batchnorm-after.ir").read_text() == after


def test_ir_dump_only_modified(tmp_path: Path) -> None:
    dump = IRDumpInstrument(tmp_path, only_modified=True)
    parse_pipeline("eliminate-dead-code,fold-batchnorm").run(bn_graph(), instruments=[dump])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "02-fold-batchnorm-after.ir", "02-fold-batchnorm-before.ir"]


def test_analyses_are_computed_once_per_graph() -> None:
    calls: list[Graph] = []

    def op_count_analysis(graph: Graph, ctx: PassContext) -> dict[str, int]:
        calls.append(graph)
        return graph.op_histogram()

    ctx = PassContext(analyses={"op-count": op_count_analysis})
    graph = bn_graph()
    Pipeline((CountOps(), CountOps())).run(graph, ctx)
    assert calls == [graph]
    assert (ctx.cache.misses, ctx.cache.hits) == (1, 3)
    other = optc.parse_graph(optc.print_graph(graph))  # equal structure, another object
    assert ctx.analysis("op-count", other) == {"BatchNormalization": 1, "Conv": 1, "Relu": 1}
    assert calls == [graph, other]


def test_missing_analysis_fails_before_any_pass_runs() -> None:
    ctx = PassContext(analyses={"op-counts": lambda g, c: 0})
    with pytest.raises(UnknownNameError, match=r"requires analysis 'op-count'.*op-counts"):
        Pipeline((Crash(), CountOps())).run(bn_graph(), ctx)


def test_replacing_analyses_gives_a_fresh_cache() -> None:
    ctx = PassContext(analyses={"n": lambda g, c: len(g.nodes)})
    graph = bn_graph()
    assert ctx.analysis("n", graph) == 3
    other = ctx.replace(analyses={"n": lambda g, c: -1})
    assert other.analysis("n", graph) == -1 and other.cache is not ctx.cache
    assert ctx.replace(target="host").cache is ctx.cache


def test_progress_callback_sees_every_pass() -> None:
    seen: list[tuple[str, int, int]] = []
    ctx = PassContext(progress=lambda msg, done, total: seen.append((msg, done, total)))
    parse_pipeline("fold-batchnorm,eliminate-dead-code").run(bn_graph(), ctx)
    assert seen == [("fold-batchnorm", 0, 2), ("eliminate-dead-code", 1, 2), ("done", 2, 2)]


def test_crashing_pass_is_reported_by_name() -> None:
    with pytest.raises(PassError, match="pass 'crash' failed: ZeroDivisionError: boom"):
        Pipeline((Crash(),)).run(bn_graph())


def test_default_candidates_are_empty() -> None:
    for pass_ in parse_pipeline("fold-constants,fold-batchnorm,eliminate-dead-code"):
        assert list(pass_.candidates(bn_graph(), PassContext())) == []


def test_pipeline_is_a_sequence() -> None:
    pipeline = parse_pipeline("fold-constants,fold-batchnorm,eliminate-dead-code")
    assert len(pipeline) == 3 and pipeline[1].name == "fold-batchnorm"
    assert str(pipeline[1:]) == "fold-batchnorm,eliminate-dead-code"
    assert str(pipeline[:1] + pipeline[2:]) == "fold-constants,eliminate-dead-code"
    with pytest.raises(TypeError, match="Pass instances"):
        Pipeline(("fold-constants",))  # type: ignore[arg-type]
