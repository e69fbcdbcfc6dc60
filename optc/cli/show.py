"""``optc show MODEL``: what is in a model, at a glance or as JSON or IR text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from optc.cli import render
from optc.cli.failures import EXIT_CODES_HELP
from optc.cli.summary import SUMMARY_KEYS, model_summary
from optc.frontend import load_onnx
from optc.ir import print_graph
from optc.ir.graph import Value


@click.command("show", epilog=EXIT_CODES_HELP)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True,
              help=f"Print one JSON document (keys: {', '.join(SUMMARY_KEYS)}).")
@click.option("--ir", "as_ir", is_flag=True, help="Print the canonical IR text instead.")
def command(model: Path, as_json: bool, as_ir: bool) -> None:
    """Summarize the ONNX model MODEL: ops, node count, parameters, inputs, outputs, opsets."""
    if as_json and as_ir:
        raise click.UsageError("--json and --ir cannot be combined")
    graph = load_onnx(model)
    if as_ir:
        click.echo(print_graph(graph), nl=False)
        return
    summary = model_summary(graph, str(model))
    if as_json:
        render.print_json(summary)
    else:
        print_summary(summary, graph.inputs, graph.outputs)


def print_summary(summary: dict[str, Any], inputs: tuple[Value, ...],
                  outputs: tuple[Value, ...]) -> None:
    params = summary["params"]
    opsets = ", ".join(f"{domain} {version}" for domain, version in summary["opsets"].items())
    nodes = str(summary["nodes"])
    if summary["subgraph_nodes"]:
        nodes += f" (+{summary['subgraph_nodes']} in control-flow bodies)"
    render.print_fields(summary["model"], [
        ("graph", summary["graph"]),
        ("nodes", nodes),
        ("params", f"{render.human_bytes(params['bytes'])} ({params['bytes']} bytes) in "
                   f"{params['tensors']} tensors, {params['elements']} elements"),
        ("opsets", opsets or "none"),
    ])
    for title, values in (("inputs", inputs), ("outputs", outputs)):
        click.echo()
        rows = [(v.name, v.dtype or "?", render.shape_text(v.shape)) for v in values]
        render.print_table(title, ("name", "dtype", "shape"), rows)
    click.echo()
    render.print_table("ops", ("op", "count"), list(summary["ops"].items()))
