"""``compile_model(..., budget_s=...)``: the search over candidates, compiled and measured.

The search (``optc.search``) runs every candidate pipeline, prices and scores it, and
asks ``TargetMeasurer`` to compile and time the promising ones, most accurate first.
Each candidate is exported into its own folder in the staging area; the one written
(the choice, or the best point when nothing meets the budget) is checked against the
reference interpreter like any compile and moved into place with a report of the
whole search. A missed budget still writes OUT, then raises ``BudgetNotMetError``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from optc.compiler import checking
from optc.compiler.execution import Execution, run_and_time, why_not_here
from optc.compiler.report import (
    Stopwatch,
    budget_record,
    fusion_record,
    miss_message,
    options_record,
    pass_reports,
    pipeline_record,
    precision_record,
    prediction_record,
    search_report,
    timing_record,
)
from optc.compiler.rpc import RpcTracker
from optc.compiler.staging import Staging
from optc.errors import BudgetNotMetError, OptcError, UnsupportedOpError, UserInputError
from optc.ir.graph import Graph
from optc.pipeline import PassContext, Pipeline, PipelineResult
from optc.search import Candidate, Predictor, Scorer, Settings, search
from optc.target import Target

log = logging.getLogger(__name__)

def _approximate(candidate: Candidate, feeds: Mapping[str, np.ndarray],
                 outputs: Mapping[str, np.ndarray], accuracy_source: str) -> dict[str, Any]:
    """The check record of a lossy candidate outside the float32 tolerance.

    The check's tolerance is float32's; low-precision kernels (fp16 accumulation, int
    requantization) round differently from the interpreter. What vouches for such a
    candidate is the compiled artifact's own accuracy on the calibration data (the
    search's full evaluation), so the mismatch is recorded rather than fatal.
    """
    errors = checking.compare(checking.reference_outputs(candidate.graph, feeds), outputs)
    worst = max(errors, key=lambda e: e.max_abs_error)
    vouched = "accuracy was measured on the compiled model instead" \
        if accuracy_source == "compiled" else \
        "its accuracy was measured by the interpreter only (the model ran remotely)"
    log.log(logging.INFO if accuracy_source == "compiled" else logging.WARNING,
            "output check of a lossy candidate: %s max abs error %.3g; %s", worst.name,
            worst.max_abs_error, vouched)
    return {"status": "approximate",
            "reason": f"max abs error {worst.max_abs_error:.3g} on {worst.name!r} is outside "
                      f"the float32 tolerance, as low-precision kernels round differently; "
                      f"{vouched}",
            "reference": "optc.interp (reference interpreter)", "feeds": checking.FEEDS,
            "rtol": checking.RTOL, "atol_scale": checking.ATOL_SCALE,
            "outputs": [e.to_json() for e in errors]}


class BudgetMissed(BudgetNotMetError):
    """``BudgetNotMetError`` with what was written anyway: its report and graph."""

    def __init__(self, message: str, report: Mapping[str, Any], graph: Graph) -> None:
        super().__init__(message)
        self.report = report
        self.graph = graph


class CandidateBuildError(OptcError):
    """A candidate could not be compiled; the search records it and goes on."""


class TargetMeasurer:
    """Compiles candidates into ``root/candidate-N`` and times them (``optc.search.Measurer``).

    Builds are kept, so a candidate timed on a few runs and then on all of them is
    compiled once, and the written one is not compiled again.
    """

    def __init__(self, root: Path, target: Target, rpc: RpcTracker | None,
                 clock: Stopwatch) -> None:
        self.root = root
        self.target = target
        self.rpc = rpc
        self.clock = clock
        self.unavailable: str | None = None
        self.builds: dict[int, tuple[Any, Path]] = {}
        self.executions: dict[int, Execution] = {}

    def build(self, candidate: Candidate) -> tuple[Any, Path]:
        """``(BuiltModule, artifact folder)`` of ``candidate``, compiled on first use."""
        if candidate.index not in self.builds:
            from optc.codegen import write_artifact
            from optc.compiler.api import build_for

            try:
                with self.clock.stage("build"):
                    built = build_for(candidate.graph, self.target, None)
            except UserInputError:
                raise
            except Exception as exc:  # TVM's own errors: this candidate is out, not the search
                raise CandidateBuildError(f"TVM could not compile {candidate.text}: "
                                          f"{type(exc).__name__}: {exc}") from exc
            folder = self.root / f"candidate-{candidate.index}"
            with self.clock.stage("export"):
                write_artifact(built, folder)
            self.builds[candidate.index] = (built, folder)
        return self.builds[candidate.index]

    def __call__(self, candidate: Candidate, repeat: int) -> float | None:
        if self.unavailable is not None:
            return None
        built, folder = self.build(candidate)
        if self.rpc is None:
            self.unavailable = why_not_here(folder)
            if self.unavailable is not None:
                return None
        feeds = checking.check_feeds(built.inputs)
        with self.clock.stage("run"):
            execution = run_and_time(folder, feeds, self.rpc, repeat=repeat)
        self.executions[candidate.index] = execution
        log.info("search: candidate %d (%s): %.3g s median of %d", candidate.index,
                 candidate.text, execution.timing.median_s, repeat)
        return float(execution.timing.median_s)

    def outputs(self, candidate: Candidate, inputs: Mapping[str, np.ndarray]
                ) -> np.ndarray | None:
        """The first output on every sample, run here in chunks of the model's batch size
        (None on a remote device, or when the samples do not split into batches)."""
        if self.unavailable is not None or self.rpc is not None:
            return None
        from optc.codegen import load_artifact, run

        built, folder = self.build(candidate)
        batch = built.inputs[0].shape[0] if built.inputs and built.inputs[0].shape else 1
        count = len(next(iter(inputs.values())))
        if not isinstance(batch, int) or batch < 1 or count % batch:
            return None
        loaded = load_artifact(folder)
        name = candidate.graph.output_names[0]
        with self.clock.stage("evaluate"):
            parts = [run(loaded, {k: v[start:start + batch] for k, v in inputs.items()})[name]
                     for start in range(0, count, batch)]
        return np.concatenate(parts)

    def final(self, candidate: Candidate, accuracy_source: str = "interpreter") -> tuple[
            Path, Any, dict[str, Any], Mapping[str, Any] | None]:
        """``(artifact folder, built, check record, measured record or None)`` of the
        candidate to write; checked against the reference where it ran.
        ``accuracy_source``: where its accuracy was measured (``compiled``: on the
        artifact itself)."""
        built, folder = self.build(candidate)
        execution = self.executions.get(candidate.index)
        if execution is None:
            reason = self.unavailable or "not timed"
            return folder, built, checking.skipped(f"the model did not run: {reason}"), None
        with self.clock.stage("check"):
            feeds = checking.check_feeds(built.inputs)
            try:
                check = checking.check_outputs(candidate.graph, feeds, execution.outputs)
            except UnsupportedOpError as exc:  # the interpreter lacks a rule TVM has
                log.warning("output check skipped: %s", exc)
                check = checking.skipped(f"no reference: {exc}")
            except checking.OutputMismatchError:
                if candidate.exact:
                    raise
                check = _approximate(candidate, feeds, execution.outputs, accuracy_source)
        return folder, built, check, timing_record(execution.timing)


def compile_with_budget(graph: Graph, pipeline: Pipeline, ctx: PassContext,
                        settings: Settings, *, staging: Staging, target: Target,
                        rpc: RpcTracker | None, clock: Stopwatch,
                        base: Callable[[Graph, Any], dict[str, Any]],
                        calibration_source: str | None = None,
                        pipeline_source: str = "") -> tuple[
                            dict[str, Any], Graph]:
    """Search, then write the chosen (else best) candidate; ``(report, graph)``.

    ``base(graph, built)`` gives the report fields every compile has (model, target).
    Raises ``BudgetNotMetError`` after writing when no candidate meets the budget.
    """
    predictor = Predictor(settings.latency_model, target)
    ctx = ctx.replace(analyses={**ctx.analyses, "latency": predictor.seconds})
    with clock.stage("search.accuracy"):
        scorer = Scorer(graph, ctx.calibration, source=calibration_source)
    measurer = TargetMeasurer(staging.root, target, rpc, clock)
    result = search(graph, pipeline, ctx, predictor, scorer, settings, measurer, clock.stage)
    index = result.best if result.best is not None else 0
    candidate, point = result.candidates[index], result.points[index]
    folder, built, check, measured = measurer.final(candidate, point.score_source)
    folder.rename(staging.artifact)
    prediction = result.predictions[index]
    predicted = None if prediction.breakdown is None else prediction_record(
        prediction.breakdown, predictor.uuid())
    met = result.chosen is not None
    latency = measured["median_s"] if measured else point.predicted_s
    report = {
        **base(candidate.graph, built),
        "pipeline": {**pipeline_record(candidate.text, "search", PipelineResult(
            candidate.graph, candidate.records)), "options": options_record(candidate.pipeline)},
        "predicted": predicted, "predicted_reason": prediction.reason,
        "measured": measured, "measured_reason": None if measured else measurer.unavailable,
        "check": check, "tuning": None, "rpc": None if rpc is None else str(rpc),
        "accuracy": {"metric": scorer.metric, "score": point.score,
                     "baseline": scorer.baseline, "drop": point.drop,
                     "max_drop": settings.max_drop},
        "budget": budget_record(settings.budget_s, met, latency,
                                "measured" if measured else "predicted", predicted),
        "precision": precision_record(candidate.graph),
        "fusion_groups": fusion_record(candidate.graph),
        "pass_reports": pass_reports(candidate.graph),
        "search": {**search_report(result, settings, len(measurer.builds)),
                   "pipeline": {"text": pipeline.text(), "source": pipeline_source}},
    }
    report["stages_s"] = clock.to_json()
    staging.commit(report)
    if not met:
        raise BudgetMissed(miss_message(report), report, candidate.graph)
    return report, candidate.graph
