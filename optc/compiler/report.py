"""The parts of ``report.json``: pipeline records, the prediction, timings, the search.

Everything here is JSON-ready (plain dicts, lists, numbers, strings); ``optc compile
--json`` prints the same document, and the CLI's summary is rendered from it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from optc.ir.graph import Graph
from optc.pipeline import PipelineResult

if TYPE_CHECKING:
    from optc.cost import Breakdown
    from optc.search import SearchResult, Settings

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


# -- the budgeted search (``optc compile --budget``) ---------------------------------------
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})


def precision_record(graph: Graph) -> list[dict[str, Any]]:
    """Per compute node, the precision quantization gave it (nodes left in fp32 omitted).

    Read from the IR's ``Precision`` annotations, so any lossy pass that annotates
    shows up; the quantize/dequantize nodes carrying the same tag are left out.
    """
    from optc.ir.annotations import Precision

    rows = []
    for node in graph.nodes:
        tag = next((a for a in node.annotations if isinstance(a, Precision)), None)
        if tag is not None and node.op not in QDQ_OPS:
            rows.append({"node": node.name, "op": node.op, **tag.fields()})
    return rows


def fusion_record(graph: Graph) -> dict[str, list[str]]:
    """Fused kernel name -> the nodes placed in it (``FusionGroup`` annotations)."""
    from optc.ir.annotations import FusionGroup

    groups: dict[str, list[str]] = {}
    for node in graph.nodes:
        for tag in node.annotations:
            if isinstance(tag, FusionGroup):
                groups.setdefault(tag.group, []).append(node.name or node.op)
    return groups


def pass_reports(graph: Graph) -> dict[str, Any]:
    """The reports passes left in the graph's metadata (``optc.*`` keys holding JSON,
    e.g. ``optc.mixed_precision``: per-layer precision, sensitivities, trials)."""
    found = {}
    for key, text in graph.metadata.items():
        if key.startswith("optc."):
            try:
                found[key] = json.loads(text)
            except ValueError:
                found[key] = text
    return found


def options_record(pipeline: Any) -> list[dict[str, Any]]:
    """Each pass of a pipeline with every option value, defaults included."""
    return [{"name": p.name, "options": _jsonable(p.option_values(include_defaults=True))}
            for p in pipeline]


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


def budget_record(budget_s: float, met: bool, latency_s: float | None, source: str,
                  predicted: dict[str, Any] | None) -> dict[str, Any]:
    """Whether the written candidate meets the budget, by how much it misses, and what
    dominates its time (the cost model's slowest ops and nodes)."""
    miss = None if latency_s is None or met else latency_s - budget_s
    return {
        "budget_s": budget_s, "met": met, "latency_s": latency_s, "latency_source": source,
        "miss_s": miss, "miss_ratio": None if miss is None else latency_s / budget_s,
        "dominated_by": None if predicted is None else {
            "source": predicted["cost_model"], "top_ops": predicted["top_ops"][:3],
            "top_nodes": predicted["top_nodes"][:3]},
    }


def search_report(result: SearchResult, settings: Settings, builds: int) -> dict[str, Any]:
    """Every evaluated candidate (on the Pareto front or not), the choice, the settings."""
    from optc.search import pareto_front  # deferred: the search imports torch

    front = {p.index for p in pareto_front(result.points)}
    rows = [{**point.to_json(), "pareto": point.index in front,
             "passes": [dataclasses.asdict(r) for r in candidate.records]}
            for point, candidate in zip(result.points, result.candidates, strict=True)]
    return {
        "budget_s": settings.budget_s, "max_drop": settings.max_drop,
        "latency_model": {"name": settings.latency_model, "uuid": result.predictor.uuid(),
                          "slack": settings.slack},
        "repeat": settings.repeat, "quick_repeat": settings.quick_repeat,
        "accuracy": result.scorer.to_json(),
        "candidates": rows, "pareto": sorted(front), "chosen": result.chosen,
        "written": result.best, "measured_where": result.measured_where or "measured",
        "builds": builds,
    }


def miss_message(report: Mapping[str, Any]) -> str:
    """The one-line error of a missed budget: by how much, and where the time goes."""
    budget = report["budget"]
    if budget["latency_s"] is None:
        return (f"no candidate meets the latency budget of {budget['budget_s']:.3g} s "
                "(none could be priced or timed); the report is in the artifact")
    top = (budget["dominated_by"] or {}).get("top_ops") or []
    where = f"; most time goes to {top[0]['op']} ({100 * top[0]['share']:.0f}% predicted)" \
        if top else ""
    return (f"no candidate meets the latency budget of {_human(budget['budget_s'])}: "
            f"the fastest within max-drop {report['accuracy']['max_drop']:g} takes "
            f"{_human(budget['latency_s'])} ({budget['latency_source']}), "
            f"{budget['miss_ratio']:.2f}x the budget{where}; it was written with its report")


def _human(seconds: float) -> str:
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"
