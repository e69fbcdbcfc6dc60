"""``optc profile MODEL --target T``: predicted cost per node, totals, the slowest nodes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import click

from optc.cli import render
from optc.cli.failures import EXIT_CODES_HELP
from optc.cost import Breakdown, NodeCost, get_cost_model
from optc.frontend import load_onnx
from optc.target import Target, get_target

NODE_COLUMNS = ("op", "name", "device", "dtype", "FLOPs", "bytes", "FLOP/B", "bound", "time",
                "%")


@click.command("profile", epilog=EXIT_CODES_HELP)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--target", "-t", "target_name", required=True,
              help="Target name (see `optc targets`).")
@click.option("--cost-model", default="roofline", show_default=True,
              help="Cost model (optc's `roofline`, or one a plugin registers).")
@click.option("--top", "top_count", default=10, show_default=True, type=click.IntRange(0),
              help="How many of the slowest nodes to list.")
@click.option("--all", "show_all", is_flag=True,
              help="Also list nodes computed at compile time (folded constants).")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document: totals, every node, the top nodes.")
def command(model: Path, target_name: str, cost_model: str, top_count: int, show_all: bool,
            as_json: bool) -> None:
    """Predict what running the ONNX model MODEL once costs on a target, node by node.

    Per node: FLOPs, bytes moved, arithmetic intensity, what bounds it (compute,
    memory, launch; free for views, folded for compile-time constants) and its
    predicted time. The host target measures this CPU on first use (seconds, cached).
    """
    target = get_target(target_name)
    graph = load_onnx(model)
    estimator = get_cost_model(cost_model)
    breakdown = estimator.breakdown(graph, target)
    if as_json:
        render.print_json(profile_document(str(model), target, estimator.uuid(), breakdown,
                                           top_count))
        return
    print_profile(str(model), target, breakdown, top_count, show_all)


def profile_document(model: str, target: Target, model_id: str, breakdown: Breakdown,
                     top_count: int) -> dict[str, Any]:
    return {
        "model": model,
        "target": target.name,
        "target_digest": target.digest(),
        "cost_model": model_id,
        "total": {**breakdown.total.as_dict(), "intensity": _finite(breakdown.total.intensity)},
        "bounds": dict(Counter(n.bound for n in breakdown.nodes)),
        "nodes": [n.as_dict() for n in breakdown.nodes],
        "top": [n.name for n in breakdown.top(top_count)],
    }


def print_profile(model: str, target: Target, breakdown: Breakdown, top_count: int,
                  show_all: bool) -> None:
    total = breakdown.total
    shown = [n for n in breakdown.nodes if show_all or n.bound != "folded"]
    render.print_table(f"{model} on {target.name}: per node", NODE_COLUMNS,
                       [node_row(n, total.latency_s) for n in shown])
    click.echo()
    bounds = Counter(n.bound for n in breakdown.nodes)
    render.print_fields("total", [
        ("predicted time", render.human_seconds(total.latency_s)),
        ("FLOPs", render.human_rate(total.flops, "FLOP")),
        ("bytes moved", render.human_bytes(int(total.bytes))),
        ("intensity", _intensity(total.intensity)),
        ("kernel launches", str(total.launches)),
        ("transfers", f"{render.human_bytes(int(total.transfer_bytes))} in "
                      f"{render.human_seconds(total.transfer_s)}"),
        ("nodes", ", ".join(f"{count} {bound}" for bound, count in sorted(bounds.items()))),
    ])
    top = breakdown.top(top_count)
    if top:
        click.echo()
        render.print_table(f"top {len(top)} nodes", NODE_COLUMNS,
                           [node_row(n, total.latency_s) for n in top])


def node_row(node: NodeCost, total_s: float) -> tuple[str, ...]:
    share = f"{100 * node.latency_s / total_s:.1f}" if total_s else "0.0"
    return (node.op, node.name or "-", node.device or "-", node.dtype,
            render.human_rate(node.flops, "FLOP"), render.human_bytes(int(node.bytes)),
            _intensity(node.intensity), node.bound, render.human_seconds(node.latency_s), share)


def _intensity(value: float) -> str:
    return "-" if value == float("inf") else f"{value:.3g}"


def _finite(value: float) -> float | None:
    return None if value == float("inf") else value
