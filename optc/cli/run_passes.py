"""``optc run-passes MODEL --passes TEXT -o OUT``: run a pipeline and write the result."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from optc.cli import render
from optc.cli.failures import EXIT_CODES_HELP
from optc.errors import UserInputError
from optc.frontend import load_onnx, save_onnx
from optc.ir.graph import Graph
from optc.pipeline import (
    Instrument,
    IRDumpInstrument,
    PassContext,
    PipelineResult,
    TimingInstrument,
    VerifyInstrument,
    parse_pipeline,
)

log = logging.getLogger(__name__)


@click.command("run-passes", epilog=EXIT_CODES_HELP)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--passes", "pipeline_text", required=True, metavar="PIPELINE",
              help="Pass names joined by commas, options in braces: name{option=value} "
                   "(see `optc passes`).")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), metavar="OUTPUT",
              help="Where to write the optimized ONNX model (written atomically).")
@click.option("--verify", is_flag=True, help="Run the IR verifier on the input and after "
              "every pass that changed the graph.")
@click.option("--dump-ir", type=click.Path(path_type=Path), metavar="DIR",
              help="Write the IR text before and after every pass into DIR.")
def command(model: Path, pipeline_text: str, output: Path, verify: bool,
            dump_ir: Path | None) -> None:
    """Run the passes of PIPELINE on MODEL and write the result to OUTPUT.

    Prints one line per pass: whether it changed the graph, its time, and the node
    count before and after.

    \b
    Example:
      optc run-passes model.onnx -o optimized.onnx --verify \\
          --passes "fold-constants,fold-batchnorm,eliminate-dead-code"
    """
    # Everything that can be checked cheaply is checked before the passes run.
    check_output_file(output)
    if dump_ir is not None:
        prepare_dump_folder(dump_ir)
    pipeline = parse_pipeline(pipeline_text)
    graph = load_onnx(model)
    instruments: list[Instrument] = [TimingInstrument()]
    if verify:
        instruments.append(VerifyInstrument())
    if dump_ir is not None:
        instruments.append(IRDumpInstrument(dump_ir))
    result = pipeline.run(graph, PassContext(), instruments=instruments)
    save_onnx(result.graph, output)  # atomic; refusals are UserInputError (exit 2)
    log.info("wrote %s", output)
    print_report(result, graph, output)


def check_output_file(path: Path) -> None:
    """Refuse an output path that cannot be a file, before spending time on the passes.

    ``save_onnx`` checks again, and reports a write the OS refuses, at the end.
    """
    if path.is_dir():
        raise UserInputError(f"{path}: is a folder; give the output model's file name")
    parent = path.parent
    if not parent.is_dir():
        raise UserInputError(f"{path}: output folder {parent} does not exist")


def prepare_dump_folder(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserInputError(f"{path}: cannot create the IR dump folder "
                             f"({exc.strerror or exc})") from exc


def print_report(result: PipelineResult, before: Graph, output: Path) -> None:
    rows = [(r.text, "yes" if r.modified else "no", render.human_seconds(r.seconds),
             f"{r.nodes_before} -> {r.nodes_after}") for r in result.records]
    rows.append(("total", "yes" if result.modified else "no",
                 render.human_seconds(result.seconds),
                 f"{len(before.nodes)} -> {len(result.graph.nodes)}"))
    render.print_table("passes", ("pass", "modified", "time", "nodes"), rows)
    click.echo(f"wrote {output}")
