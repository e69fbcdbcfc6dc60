"""The parts of ``report.json``: pipeline records, the roofline prediction, timings.

Everything here is JSON-ready (plain dicts, lists, numbers, strings); ``optc compile
--json`` prints the same document, and the CLI's summary is rendered from it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from optc.ir.graph import Graph
from optc.pipeline import PipelineResult

if TYPE_CHECKING:
    from optc.cost import Breakdown

TOP = 10
"""How many of the slowest nodes and ops the report lists."""


class Stopwatch:
    """Wall time of each named stage, in the order the stages ran."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def to_json(self) -> dict[str, float]:
        total = time.perf_counter() - self.started
        return {**{k: round(v, 4) for k, v in self.seconds.items()}, "total": round(total, 4)}


def graph_record(graph: Graph, source: str | None = None) -> dict[str, Any]:
    record = {"name": graph.name, "nodes": len(graph.nodes),
              "graph_hash": graph.structural_hash()}
    return record if source is None else {"source": source, **record}


def pipeline_record(text: str, source: str, result: PipelineResult) -> dict[str, Any]:
    """The pipeline as run: canonical text, where it came from, one record per pass."""
    return {"text": text, "source": source, "seconds": round(result.seconds, 4),
            "passes": [{**dataclasses.asdict(r), "seconds": round(r.seconds, 4)}
                       for r in result.records]}


def prediction_record(breakdown: Breakdown, cost_model: str) -> dict[str, Any]:
    """Total predicted cost, the slowest nodes, and the time per op type."""
    total = breakdown.total
    latency = total.latency_s

    def share(seconds: float) -> float:
        return round(seconds / latency, 4) if latency else 0.0

    return {
        "cost_model": cost_model,
        "latency_s": latency, "flops": total.flops, "bytes": total.bytes,
        "launches": total.launches,
        "top_nodes": [{"name": n.name, "op": n.op, "bound": n.bound, "latency_s": n.latency_s,
                       "share": share(n.latency_s)} for n in breakdown.top(TOP)],
        "top_ops": [{**op, "share": share(op["latency_s"])} for op in _ops(breakdown)[:TOP]],
    }


def _ops(breakdown: Breakdown) -> list[dict[str, Any]]:
    """Predicted time per op type over all nodes, slowest first (free ops left out)."""
    per_op: dict[str, dict[str, Any]] = {}
    for node in breakdown.nodes:
        if node.latency_s <= 0:
            continue
        entry = per_op.setdefault(node.op, {"op": node.op, "nodes": 0, "latency_s": 0.0})
        entry["nodes"] += 1
        entry["latency_s"] += node.latency_s
    return sorted(per_op.values(), key=lambda e: e["latency_s"], reverse=True)


def timing_record(timing: Any) -> dict[str, Any]:
    """``optc.codegen.Timing`` as the report stores it (``repeat``: the timed runs)."""
    return {**timing.to_json(), "repeat": len(timing.samples_s)}
