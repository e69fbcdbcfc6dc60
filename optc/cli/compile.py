"""``optc compile MODEL --target T -o OUT``: optimize, predict, build, check, time, write."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from optc.cli import render
from optc.cli.failures import EXIT_CODES_HELP


def rpc_options(function: Any) -> Any:
    """``--rpc-tracker HOST:PORT --rpc-key KEY`` (shared with ``optc measure``)."""
    function = click.option("--rpc-key", metavar="KEY",
                            help="Key the device's RPC server registered under.")(function)
    return click.option("--rpc-tracker", metavar="HOST:PORT",
                        help="Run on a remote device through this TVM RPC tracker "
                             "(with --rpc-key).")(function)


def repeat_option(function: Any) -> Any:
    return click.option("--repeat", default=10, show_default=True, type=click.IntRange(1),
                        metavar="N", help="Timed runs (after warm-up); median and 90th "
                                          "percentile are reported.")(function)


@click.command("compile", epilog=EXIT_CODES_HELP)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--target", "-t", "target_name", required=True,
              help="Target name (see `optc targets`).")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), metavar="OUT",
              help="Artifact folder to write (replaced atomically; left intact on failure).")
@click.option("--passes", "pipeline_text", metavar="PIPELINE",
              help="Pipeline to run instead of the target's default (see `optc passes`).")
@click.option("--tune", default=0, show_default=True, type=click.IntRange(0), metavar="N",
              help="MetaSchedule trials (CPU targets); the tuning database is cached and "
                   "reused by later compiles.")
@rpc_options
@repeat_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
def command(model: Path, target_name: str, output: Path, pipeline_text: str | None, tune: int,
            rpc_tracker: str | None, rpc_key: str | None, repeat: int, as_json: bool) -> None:
    """Compile the ONNX model MODEL for a target into the artifact folder OUT.

    Runs the target's default pipeline (or --passes) under the IR verifier, predicts
    the latency with the roofline model, builds with TVM, and, where the code can run
    (this machine, or a device behind --rpc-tracker), checks its outputs against the
    reference interpreter and times it. OUT holds the library, the optimized ONNX
    model, manifest.json and report.json.

    \b
    Example:
      optc compile examples/models/digits_cnn.onnx --target host -o out/digits
    """
    from optc.compiler import compile_model
    from optc.compiler.rpc import rpc_from_options

    rpc = rpc_from_options(rpc_tracker, rpc_key)
    result = compile_model(model, target_name, output, passes=pipeline_text, tune=tune,
                           repeat=repeat, rpc=rpc)
    if as_json:
        render.print_json({**result.report, "artifact": str(result.artifact)})
        return
    print_summary(result.report, result.artifact)


def print_summary(report: Mapping[str, Any], artifact: Path) -> None:
    """Predicted vs measured latency, the output check, where the time goes, the stages."""
    predicted, measured = report["predicted"], report["measured"]
    render.print_fields(f"{report['model'].get('source') or report['model']['name']} "
                        f"for {report['target']['name']}", [
        ("pipeline", report["pipeline"]["text"] or "(no passes)"),
        ("nodes", f"{report['model']['nodes']} -> {report['optimized']['nodes']}"),
        ("predicted", render.human_seconds(predicted["latency_s"]) + " (roofline)"
         if predicted else f"none: {report['predicted_reason']}"),
        ("measured", measured_text(measured) if measured
         else f"not measured: {report['measured_reason']}"),
        ("measured/predicted", f"{measured['median_s'] / predicted['latency_s']:.3g}x"
         if measured and predicted and predicted["latency_s"] else "-"),
        ("output check", check_text(report["check"]) if measured or report["check"]["status"]
         == "passed" else "skipped (the model did not run, see above)"),
        ("artifact", str(artifact)),
    ])
    if predicted and predicted["top_nodes"]:
        click.echo()
        render.print_table("where the time goes (predicted): top nodes",
                           ("op", "name", "bound", "time", "%"),
                           [(n["op"], n["name"] or "-", n["bound"],
                             render.human_seconds(n["latency_s"]), f"{100 * n['share']:.1f}")
                            for n in predicted["top_nodes"]])
        click.echo()
        render.print_table("by op (predicted)", ("op", "nodes", "time", "%"),
                           [(o["op"], o["nodes"], render.human_seconds(o["latency_s"]),
                             f"{100 * o['share']:.1f}") for o in predicted["top_ops"]])
    click.echo()
    render.print_table("stages", ("stage", "time"),
                       [(name, render.human_seconds(seconds))
                        for name, seconds in report["stages_s"].items()])


def measured_text(measured: Mapping[str, Any]) -> str:
    return (f"{render.human_seconds(measured['median_s'])} median, "
            f"{render.human_seconds(measured['p90_s'])} p90 ({measured['repeat']} runs, "
            f"{measured['where']})")


def check_text(check: Mapping[str, Any]) -> str:
    if check["status"] != "passed":
        return f"{check['status']}: {check['reason']}"
    worst = max(o["max_abs_error"] for o in check["outputs"]) if check["outputs"] else 0.0
    count = len(check["outputs"])
    return (f"passed ({count} output{'s' * (count != 1)} vs the reference interpreter, "
            f"max abs error {worst:.3g}, rtol {check['rtol']:g})")
