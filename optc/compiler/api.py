"""``compile_model``: model -> passes -> prediction -> TVM build -> checked, timed artifact.

Stages, each timed into the report: resolve the target (the host measures itself on
first use), load the model, run the pipeline (the target's default, or the caller's)
under the IR verifier, predict its latency with the roofline model, optionally tune,
build with TVM for the target, export the artifact into a staging folder, run it
once on deterministic feeds and time it (here, or on a device behind an RPC tracker),
compare its outputs with the reference interpreter, and only then move the artifact
into place with its report.

The latency budget (a later issue) plugs in at ``optimize``: a budgeted compile
replaces the fixed pipeline by the search over the passes' candidates, scored by the
same prediction; everything after it is unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optc
from optc.compiler import checking
from optc.compiler.execution import run_and_time, why_not_here
from optc.compiler.report import (
    Stopwatch,
    graph_record,
    pipeline_record,
    prediction_record,
    timing_record,
)
from optc.compiler.rpc import RpcTracker
from optc.compiler.staging import Staging
from optc.errors import UnsupportedOpError, UserInputError
from optc.frontend import load_onnx
from optc.ir.graph import Graph
from optc.pipeline import PassContext, Pipeline, PipelineResult, VerifyInstrument, parse_pipeline
from optc.target import Target, get_target

log = logging.getLogger(__name__)

DEFAULT_REPEAT = 10


@dataclasses.dataclass(frozen=True, eq=False)
class CompileResult:
    """Where the artifact went, its report (as in ``report.json``) and the compiled graph."""

    artifact: Path
    report: Mapping[str, Any]
    graph: Graph = dataclasses.field(repr=False)


def compile_model(model: str | Path | Graph, target: str | Target, out: str | Path, *,
                  passes: str | None = None, tune: int = 0, repeat: int = DEFAULT_REPEAT,
                  rpc: RpcTracker | None = None) -> CompileResult:
    """Compile ``model`` (an ONNX file or a graph) for ``target`` into the artifact ``out``.

    ``passes`` replaces the target's default pipeline; ``tune`` runs that many
    MetaSchedule trials (CPU targets); ``repeat`` timed runs give the measured latency;
    ``rpc`` runs the check and the timing on a remote device. Bad input raises a
    ``UserInputError`` and leaves ``out`` untouched; compiled outputs that disagree
    with the reference interpreter raise ``OutputMismatchError`` (nothing written).
    """
    if repeat < 1:
        raise UserInputError(f"repeat must be at least 1, got {repeat}")
    clock = Stopwatch()
    with clock.stage("target"):
        target = target if isinstance(target, Target) else get_target(target)
    text, source = (passes, "--passes") if passes is not None else (
        target.default_pipeline, f"target {target.name} default")
    pipeline = parse_pipeline(text)  # bad pass names fail before any work
    if tune:
        from optc.compiler.tuning import check_tunable

        check_tunable(target.tvm_target_dict, tune)
    with Staging(Path(out)) as staging:
        with clock.stage("load"):
            graph = model if isinstance(model, Graph) else load_onnx(model)
        with clock.stage("passes"):
            result = optimize(graph, pipeline)
        optimized = result.graph
        with clock.stage("predict"):
            predicted, predicted_reason = predict(optimized, target)
        tuning = None
        if tune:
            from optc.compiler.tuning import tune as run_tuner

            with clock.stage("tune"):
                tuning = run_tuner(optimized, target.tvm_target_dict, tune, staging.root)
        with clock.stage("build"):
            built = build_for(optimized, target, tuning)
        with clock.stage("export"):
            from optc.codegen import write_artifact

            write_artifact(built, staging.artifact)
        check, measured, measured_reason = run_checked(staging.artifact, optimized, built,
                                                       rpc, repeat, clock)
        report = {
            "optc_version": optc.__version__,
            "model": graph_record(graph, None if isinstance(model, Graph) else str(model)),
            "target": {"name": target.name, "description": target.description,
                       "digest": target.digest(), "tvm_target": built.target,
                       "cross_compiler": built.cross_compiler},
            "pipeline": pipeline_record(pipeline.text(), source, result),
            "optimized": graph_record(optimized),
            "predicted": predicted, "predicted_reason": predicted_reason,
            "measured": measured, "measured_reason": measured_reason,
            "check": check, "tuning": tuning, "rpc": None if rpc is None else str(rpc),
            "stages_s": clock.to_json(),
        }
        return CompileResult(staging.commit(report), report, optimized)


def optimize(graph: Graph, pipeline: Pipeline) -> PipelineResult:
    """The graph to compile: ``pipeline`` run under the IR verifier."""
    return pipeline.run(graph, PassContext(), instruments=[VerifyInstrument()])


def predict(graph: Graph, target: Target) -> tuple[dict[str, Any] | None, str | None]:
    """The roofline prediction, or None and why (a missing cost rule never stops a build)."""
    from optc.cost import RooflineModel  # deferred: sizing shapes imports torch

    model = RooflineModel()
    try:
        breakdown = model.breakdown(graph, target)
    except UserInputError as exc:
        log.warning("no latency prediction: %s", exc)
        return None, str(exc)
    return prediction_record(breakdown, model.uuid()), None


def build_for(graph: Graph, target: Target, tuning: Mapping[str, Any] | None) -> Any:
    """``optc.codegen.build`` for the target (cross compiler included), tuned if asked."""
    from optc.codegen import build

    if tuning is None:
        return build(graph, target.tvm_target_dict, cross_compiler=target.cross_compiler)
    from optc.compiler.tuning import open_database

    with open_database(tuning["database"]):
        return build(graph, target.tvm_target_dict, cross_compiler=target.cross_compiler)


def run_checked(artifact: Path, graph: Graph, built: Any, rpc: RpcTracker | None, repeat: int,
                clock: Stopwatch) -> tuple[dict[str, Any], dict[str, Any] | None, str | None]:
    """``(check record, measured record or None, why not measured)``.

    Runs where the artifact can run: on the RPC device when one is given, else here
    when the library is for this machine; otherwise nothing runs and both say why.
    """
    reason = None if rpc is not None else why_not_here(artifact)
    if reason is not None:
        return checking.skipped(f"the model did not run: {reason}"), None, reason
    feeds = checking.check_feeds(built.inputs)
    with clock.stage("run"):
        execution = run_and_time(artifact, feeds, rpc, repeat=repeat)
    with clock.stage("check"):
        try:
            check = checking.check_outputs(graph, feeds, execution.outputs)
        except UnsupportedOpError as exc:  # the interpreter lacks a rule TVM has
            log.warning("output check skipped: %s", exc)
            check = checking.skipped(f"no reference: {exc}")
    return check, timing_record(execution.timing), None
