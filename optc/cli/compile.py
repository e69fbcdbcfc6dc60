"""``optc compile MODEL --target T -o OUT``: optimize, predict, build, check, time, write."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


class Duration(click.ParamType):
    """A duration with its unit (``20ms``), in seconds; a bad one is a usage error (2)."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        from optc.errors import UserInputError
        from optc.search.request import parse_duration

        try:
            return parse_duration(str(value))
        except UserInputError as exc:
            self.fail(str(exc), param, ctx)


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
@click.option("--budget", type=Duration(), metavar="TIME",
              help="Latency budget (20ms, 1.5s, 500us): search the pipeline's candidates "
                   "for the most accurate one whose measured latency fits.")
@click.option("--max-drop", type=click.FloatRange(0, 1), metavar="FRACTION",
              help="With --budget: largest allowed drop of accuracy (with labels) or "
                   "fidelity to the input model  [default: 0.01]")
@click.option("--calib", type=click.Path(path_type=Path), metavar="FILE.npz",
              help="Calibration data: one array per model input (samples first), optional "
                   "integer 'labels' (accuracy is then task accuracy).")
@click.option("--latency-model", metavar="NAME",
              help="With --budget: the cost model that prices candidates before any is "
                   "compiled (an optc.cost_models name)  [default: roofline]")
@rpc_options
@repeat_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
def command(model: Path, target_name: str, output: Path, pipeline_text: str | None, tune: int,
            budget: float | None, max_drop: float | None, calib: Path | None,
            latency_model: str | None,
            rpc_tracker: str | None, rpc_key: str | None, repeat: int, as_json: bool) -> None:
    """Compile the ONNX model MODEL for a target into the artifact folder OUT.

    Runs the target's default pipeline (or --passes) under the IR verifier, predicts
    the latency with the roofline model, builds with TVM, and, where the code can run
    (this machine, or a device behind --rpc-tracker), checks its outputs against the
    reference interpreter and times it. OUT holds the library, the optimized ONNX
    model, manifest.json and report.json.

    With --budget, every candidate the pipeline's passes propose (a lossy pass such
    as mixed-precision is added when the pipeline has none) is priced and scored on
    the calibration data; the most accurate within --max-drop whose measured latency
    fits the budget is written. If none fits, the fastest is written with its report
    and the exit code is 3.

    \b
    Examples:
      optc compile examples/models/digits_cnn.onnx --target host -o out/digits
      optc compile examples/models/digits_cnn.onnx --target host --budget 5ms \\
          --calib examples/models/digits_test.npz -o out/digits
    """
    from optc.compiler import compile_model
    from optc.compiler.rpc import rpc_from_options
    from optc.errors import BudgetNotMetError

    if budget is None and (max_drop is not None or latency_model is not None):
        raise click.UsageError("--max-drop and --latency-model apply to a budgeted compile: "
                               "give --budget too")
    rpc = rpc_from_options(rpc_tracker, rpc_key)
    search = {} if budget is None else {
        "budget_s": budget, "max_drop": 0.01 if max_drop is None else max_drop,
        "latency_model": latency_model or "roofline"}
    try:
        result = compile_model(model, target_name, output, passes=pipeline_text, tune=tune,
                               repeat=repeat, rpc=rpc, calibration=calib, **search)
    except BudgetNotMetError as exc:  # OUT was written anyway: show it, then exit 3
        report = getattr(exc, "report", None)
        if report is not None:
            show(report, output, as_json)
        raise
    show(result.report, result.artifact, as_json)


def show(report: Mapping[str, Any], artifact: Path, as_json: bool) -> None:
    if as_json:
        render.print_json({**report, "artifact": str(artifact)})
        return
    print_summary(report, artifact)
    if "search" in report:
        print_search(report)


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


def print_search(report: Mapping[str, Any]) -> None:
    """The budget's outcome, the accuracy, and every candidate the search evaluated."""
    budget, accuracy, search = report["budget"], report["accuracy"], report["search"]
    click.echo()
    latency = budget["latency_s"]
    render.print_fields("budget", [
        ("budget", render.human_seconds(budget["budget_s"])),
        ("met", "yes" if budget["met"] else
         f"no: {render.human_seconds(latency)} {budget['latency_source']}, "
         f"{budget['miss_ratio']:.2f}x the budget" if latency is not None else "no"),
        (accuracy["metric"], f"{accuracy['score']:.4f} (input model {accuracy['baseline']:.4f}, "
                             f"drop {accuracy['drop']:+.4f}, max {accuracy['max_drop']:g})"),
        ("precision", _precision_text(report["precision"])),
        ("fusion groups", str(len(report["fusion_groups"]))),
        ("candidates", f"{len(search['candidates'])} evaluated, {search['builds']} compiled, "
                       f"{len(search['pareto'])} on the Pareto front"),
    ])
    click.echo()
    render.print_table("candidates (* written, P Pareto front)",
                       ("#", "pipeline", accuracy["metric"], "predicted", "measured", "stage"),
                       [(f"{c['index']}{'*' if c['index'] == search['written'] else ''}"
                         f"{' P' if c['pareto'] else ''}", c["pipeline"] or "(no passes)",
                         f"{c['score']:.4f}", _seconds(c["predicted_s"]),
                         _seconds(c["measured_s"] if c["measured_s"] is not None
                                  else c["quick_s"]), c["stage"])
                        for c in search["candidates"]])


def _precision_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """``3 int4, 1 float16`` (nodes per precision), or that everything stayed float32."""
    counts: dict[str, int] = {}
    for row in rows:
        label = f"{row['dtype']}{row['bits']}"
        counts[label] = counts.get(label, 0) + 1
    return ", ".join(f"{n} {label}" for label, n in sorted(counts.items())) or "all float32"


def _seconds(value: float | None) -> str:
    return "-" if value is None else render.human_seconds(value)


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
