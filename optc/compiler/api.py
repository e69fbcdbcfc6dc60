"""``compile_model``: model -> passes -> prediction -> TVM build -> checked, timed artifact.

Stages, each timed into the report: resolve the target (the host measures itself on
first use), load the model, run the pipeline (the target's default, or the caller's)
under the IR verifier, predict its latency with the roofline model, optionally tune,
build with TVM for the target, export the artifact into a staging folder, run it
once on deterministic feeds and time it (here, or on a device behind an RPC tracker),
compare its outputs with the reference interpreter, and only then move the artifact
into place with its report.

With a latency budget, ``optimize`` and ``predict`` are replaced by the search over
the passes' candidates (``optc.compiler.budget``, ``optc.search``): each candidate is
priced, scored for accuracy, and the promising ones built and timed as above; the
chosen one is checked and written the same way.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

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
from optc.errors import UnknownNameError, UnsupportedOpError, UserInputError
from optc.frontend import load_onnx
from optc.ir.graph import Graph
from optc.pipeline import PassContext, Pipeline, PipelineResult, VerifyInstrument, parse_pipeline
from optc.target import Target, get_target

log = logging.getLogger(__name__)

DEFAULT_REPEAT = 10
DEFAULT_MAX_DROP = 0.01


@dataclasses.dataclass(frozen=True, eq=False)
class CompileResult:
    """Where the artifact went, its report (as in ``report.json``) and the compiled graph."""

    artifact: Path
    report: Mapping[str, Any]
    graph: Graph = dataclasses.field(repr=False)


def compile_model(model: str | Path | Graph, target: str | Target, out: str | Path, *,
                  passes: str | None = None, tune: int = 0, repeat: int = DEFAULT_REPEAT,
                  rpc: RpcTracker | None = None, budget_s: float | None = None,
                  max_drop: float = DEFAULT_MAX_DROP,
                  calibration: str | Path | Mapping[str, np.ndarray] | None = None,
                  latency_model: str = "roofline") -> CompileResult:
    """Compile ``model`` (an ONNX file or a graph) for ``target`` into the artifact ``out``.

    ``passes`` replaces the target's default pipeline; ``tune`` runs that many
    MetaSchedule trials (CPU targets); ``repeat`` timed runs give the measured latency;
    ``rpc`` runs the check and the timing on a remote device; ``calibration`` (an
    ``.npz`` path or arrays named like the inputs, optional ``labels``) goes to the
    passes as ``PassContext.calibration``. Bad input raises a ``UserInputError`` and
    leaves ``out`` untouched; compiled outputs that disagree with the reference
    interpreter raise ``OutputMismatchError`` (nothing written).

    With ``budget_s`` the pipeline's candidates are searched (``optc.search``): the
    most accurate within ``max_drop`` whose measured (else predicted, by the cost model
    ``latency_model``) latency fits is written; if none fits, the fastest is written
    and ``BudgetNotMetError`` (exit code 3) is raised after it, carrying the report.
    """
    if repeat < 1:
        raise UserInputError(f"repeat must be at least 1, got {repeat}")
    clock = Stopwatch()
    with clock.stage("target"):
        target = target if isinstance(target, Target) else get_target(target)
    text, source = (passes, "--passes") if passes is not None else (
        target.default_pipeline, f"target {target.name} default")
    settings = None
    if budget_s is not None:
        from optc.search.request import search_pipeline

        settings = _settings(budget_s, max_drop, latency_model, repeat, tune)
        pipeline = search_pipeline(text, max_drop)  # bad pass names fail before any work
    else:
        pipeline = parse_pipeline(text)
    if tune:
        from optc.compiler.tuning import check_tunable

        check_tunable(target.tvm_target_dict, tune)
    with Staging(Path(out)) as staging:
        with clock.stage("load"):
            graph = model if isinstance(model, Graph) else load_onnx(model)
            ctx = PassContext(calibration=_calibration(calibration, graph))

        def base(optimized: Graph, built: Any) -> dict[str, Any]:
            return {
                "optc_version": optc.__version__,
                "model": graph_record(graph, None if isinstance(model, Graph) else str(model)),
                "target": {"name": target.name, "description": target.description,
                           "digest": target.digest(), "tvm_target": built.target,
                           "cross_compiler": built.cross_compiler},
                "optimized": graph_record(optimized),
                "partition": None if built.partition is None else built.partition.to_json(),
            }

        if settings is not None:
            from optc.compiler.budget import compile_with_budget

            report, optimized = compile_with_budget(
                graph, pipeline, ctx.replace(target=target), settings, staging=staging,
                target=target, rpc=rpc, clock=clock, base=base,
                calibration_source=None if calibration is None or isinstance(
                    calibration, Mapping) else str(calibration), pipeline_source=source)
            return CompileResult(staging.out, report, optimized)
        with clock.stage("passes"):
            result = optimize(graph, pipeline, ctx)
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
            **base(optimized, built),
            "pipeline": pipeline_record(pipeline.text(), source, result),
            "predicted": predicted, "predicted_reason": predicted_reason,
            "measured": measured, "measured_reason": measured_reason,
            "check": check, "tuning": tuning, "rpc": None if rpc is None else str(rpc),
            "stages_s": clock.to_json(),
        }
        return CompileResult(staging.commit(report), report, optimized)


def _settings(budget_s: float, max_drop: float, latency_model: str, repeat: int,
              tune: int) -> Any:
    """The search's ``optc.search.Settings``, every value checked."""
    if not budget_s > 0:
        raise UserInputError(f"the latency budget must be positive, got {budget_s} s")
    if not 0 <= max_drop <= 1:
        raise UserInputError(f"max-drop is a fraction in [0, 1], got {max_drop}")
    if tune:
        raise UserInputError("--tune cannot be combined with --budget yet: tune the chosen "
                             "pipeline afterwards with --passes")
    from optc.cost import cost_models
    from optc.search import Settings

    if latency_model not in cost_models():
        raise UnknownNameError(f"unknown latency model {latency_model!r} "
                               f"(known: {', '.join(cost_models())})")
    return Settings(budget_s=budget_s, max_drop=max_drop, latency_model=latency_model,
                    repeat=repeat, quick_repeat=min(repeat, Settings.quick_repeat))


def _calibration(given: str | Path | Mapping[str, np.ndarray] | None,
                 graph: Graph) -> Mapping[str, np.ndarray] | None:
    """Calibration arrays for ``PassContext``: an ``.npz`` file read and checked against
    the model's inputs (a ``UserInputError`` when missing or invalid), or arrays as given."""
    if given is None or isinstance(given, Mapping):
        return given
    from optc.quant.calibration import load_calibration

    return load_calibration(given, graph).as_mapping()


def optimize(graph: Graph, pipeline: Pipeline, ctx: PassContext | None = None) -> PipelineResult:
    """The graph to compile: ``pipeline`` run under the IR verifier."""
    return pipeline.run(graph, ctx or PassContext(), instruments=[VerifyInstrument()])


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
    """``optc.codegen.build`` for the target (cross compiler, NPU partition), tuned if asked."""
    from optc.codegen import build
    from optc.codegen.npu import NpuSpec

    # An NPU target's op set and dtypes (None for others) drive the BYOC partition.
    options = {"cross_compiler": target.cross_compiler, "byoc": NpuSpec.of(target)}
    if tuning is None:
        return build(graph, target.tvm_target_dict, **options)
    from optc.compiler.tuning import open_database

    with open_database(tuning["database"]):
        return build(graph, target.tvm_target_dict, **options)


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
