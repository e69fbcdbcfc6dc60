"""The budgeted search: expand, predict and score every candidate, then measure few.

Multi-fidelity, cheapest first, so that a search on a small machine takes minutes:

1. every candidate pipeline is run and priced by the cost model (milliseconds) and
   scored on the calibration data (the reference interpreter; free for exact ones);
2. the candidates within ``max_drop`` that may fit the budget by prediction
   (``Prediction.optimistic``) are visited most accurate first; each is compiled and
   timed on ``quick_repeat`` runs, and if that fits (within ``QUICK_MARGIN``), on the
   full ``repeat`` runs; a lossy one that fits is then evaluated in full: the
   compiled artifact itself is run on the calibration data and must stay within
   ``max_drop``. The first that passes is the answer: no candidate after it could be
   more accurate, so none of them is compiled;
3. when nothing fits, the fastest candidate within the drop is looked for by timing
   candidates in full, predicted-fastest first, while their optimistic prediction
   could still beat the fastest measured so far (the "best point", written despite
   the miss, with the report).

Compiling and timing is the caller's ``Measurer``: this module never imports TVM.
When the target cannot run here (cross-compiled, no RPC) the measurer says so and
the choice falls back to predictions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Protocol

import numpy as np

from optc.errors import OptcError
from optc.ir.graph import Graph
from optc.pipeline import PassContext, Pipeline
from optc.search.candidates import Candidate, expand
from optc.search.pareto import Point, accuracy_order, fastest, select
from optc.search.scoring import Prediction, Predictor, Scorer

log = logging.getLogger(__name__)

QUICK_MARGIN = 1.1
"""A quick timing (few runs, noisy) up to 10% over budget still earns the full one."""

StageTimer = Callable[[str], AbstractContextManager[None]]


class Measurer(Protocol):
    """Compiles and times candidates on the target (the compiler provides it)."""

    unavailable: str | None
    """Why candidates cannot be timed (None while they can)."""

    def __call__(self, candidate: Candidate, repeat: int) -> float | None:
        """Median seconds over ``repeat`` runs; None (and ``unavailable`` set) when the
        target cannot run here; an ``OptcError`` when this candidate fails to build."""

    def outputs(self, candidate: Candidate, inputs: Mapping[str, np.ndarray]
                ) -> np.ndarray | None:
        """The compiled candidate's first output on every sample of ``inputs`` (first
        axis: samples), or None when it cannot be run on them."""


@dataclasses.dataclass(frozen=True)
class Settings:
    budget_s: float
    max_drop: float = 0.01
    latency_model: str = "roofline"
    repeat: int = 10
    quick_repeat: int = 3
    max_candidates: int = 24
    max_measured: int = 8
    slack: float = 3.0
    """Factor the roofline may over-predict by (no uncertainty from the model)."""


@dataclasses.dataclass(frozen=True, eq=False)
class SearchResult:
    candidates: tuple[Candidate, ...]
    points: tuple[Point, ...]
    predictions: tuple[Prediction, ...]
    chosen: int | None
    """The candidate that meets the budget, or None."""
    best: int | None
    """The candidate to write: the chosen one, else the fastest within the drop."""
    scorer: Scorer
    predictor: Predictor
    measured_where: str | None
    """None when candidates were timed; else why not (the choice used predictions)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Prepared:
    """The cheap part of a search, independent of the budget: every candidate, its
    prediction and its score. ``choose`` can run on it for several budgets."""

    candidates: tuple[Candidate, ...]
    predictions: tuple[Prediction, ...]
    points: tuple[Point, ...]
    scorer: Scorer
    predictor: Predictor


def search(graph: Graph, pipeline: Pipeline, ctx: PassContext, predictor: Predictor,
           scorer: Scorer, settings: Settings, measurer: Measurer | None,
           stage: StageTimer | None = None) -> SearchResult:
    """Search the candidates of ``pipeline`` on ``graph`` (see the module docstring)."""
    prepared = prepare(graph, pipeline, ctx, predictor, scorer, settings, stage)
    return choose(prepared, settings, measurer, stage)


def prepare(graph: Graph, pipeline: Pipeline, ctx: PassContext, predictor: Predictor,
            scorer: Scorer, settings: Settings, stage: StageTimer | None = None,
            ) -> Prepared:
    """Step 1 of the search: expand, predict and score (no candidate is compiled)."""
    timer = stage or _no_timer
    with timer("search.passes"):
        candidates = expand(graph, pipeline, ctx, limit=settings.max_candidates)
    with timer("search.predict"):
        predictions = [predictor(c.graph) for c in candidates]
    with timer("search.accuracy"):
        points = [_point(c, p, scorer) for c, p in zip(candidates, predictions, strict=True)]
    log.info("search: %d candidates, baseline %s %.4f", len(points), scorer.metric,
             scorer.baseline)
    return Prepared(tuple(candidates), tuple(predictions), tuple(points), scorer, predictor)


def choose(prepared: Prepared, settings: Settings, measurer: Measurer | None,
           stage: StageTimer | None = None) -> SearchResult:
    """Steps 2 and 3 of the search for ``settings.budget_s`` and ``settings.max_drop``.
    ``prepared`` is not changed, so one preparation serves several budgets (a measurer
    that keeps its builds then compiles each candidate once)."""
    timer = stage or _no_timer
    candidates, predictions = list(prepared.candidates), list(prepared.predictions)
    run = _Run(candidates, list(prepared.points), settings, measurer, prepared.scorer)
    with timer("search.measure"):
        chosen = run.visit(predictions)
        best = chosen if chosen is not None else run.best_effort(predictions)
    where = None if measurer is not None and measurer.unavailable is None else (
        measurer.unavailable if measurer is not None else "no measurer")
    return SearchResult(tuple(candidates), tuple(run.points), tuple(predictions),
                        chosen, best, prepared.scorer, prepared.predictor, where)


def _point(candidate: Candidate, prediction: Prediction, scorer: Scorer) -> Point:
    measure = scorer(candidate)
    return Point(candidate.index, candidate.text, measure.score, measure.drop,
                 prediction.latency_s, prediction.ln_std, note=prediction.reason or "",
                 same_graph=candidate.same_graph)


class _Run:
    """The measuring part of one search: its points, updated as candidates are timed."""

    def __init__(self, candidates: list[Candidate], points: list[Point], settings: Settings,
                 measurer: Measurer | None, scorer: Scorer) -> None:
        self.candidates = candidates
        self.scorer = scorer
        self.points = points
        self.settings = settings
        self.measurer = measurer
        self.builds = 0

    @property
    def can_measure(self) -> bool:
        return self.measurer is not None and self.measurer.unavailable is None

    def visit(self, predictions: list[Prediction]) -> int | None:
        """The most accurate candidate that fits the budget (measured where possible)."""
        s = self.settings
        plausible = [p for p in self.points if p.drop <= s.max_drop and _may_fit(
            predictions[p.index], s.budget_s, s.slack)]
        for point in accuracy_order(plausible):
            if not self.can_measure or self.builds >= s.max_measured:
                break
            timed = self.time(point.index)
            fits = timed.measured_s is not None and timed.measured_s <= s.budget_s
            if fits and self.evaluate(timed.index).drop <= s.max_drop:
                return timed.index
        if self.can_measure:
            return None
        chosen = select(self.points, s.budget_s, s.max_drop)  # predictions only
        return None if chosen is None else chosen.index

    def time(self, index: int) -> Point:
        """Quick timing, then the full one if the quick one is close enough to the budget."""
        point = self._measure(index, self.settings.quick_repeat, "quick")
        if point.quick_s is not None and point.quick_s <= self.settings.budget_s * QUICK_MARGIN:
            point = self._measure(index, self.settings.repeat, "measured")
        return point

    def evaluate(self, index: int) -> Point:
        """The full evaluation: a lossy candidate's accuracy measured on the compiled
        artifact (TVM's low-precision arithmetic is not the interpreter's)."""
        point = self.points[index]
        if self.candidates[index].exact or self.measurer is None:
            return point
        outputs = self.measurer.outputs(self.candidates[index], self.scorer.inputs)
        measure = None if outputs is None else self.scorer.from_outputs(outputs)
        if measure is not None:
            log.info("search: candidate %d compiled: %s %.4f (interpreter %.4f)", index,
                     self.scorer.metric, measure.score, point.score)
            point = dataclasses.replace(point, score=measure.score, drop=measure.drop,
                                        score_source="compiled")
            self.points[index] = point
        return point

    def best_effort(self, predictions: list[Prediction]) -> int | None:
        """The fastest candidate within the drop. Where the target runs, candidates are
        timed in full, predicted-fastest first, while their optimistic prediction could
        still beat the fastest measured so far (predictions rank, measurements decide)."""
        s = self.settings
        pool = [p.index for p in self.points if p.drop <= s.max_drop] or \
            [p.index for p in self.points]
        for index in sorted(pool, key=lambda i: (predictions[i].latency_s is None,
                                                 predictions[i].latency_s or 0.0)):
            if not self.can_measure or self.builds >= s.max_measured:
                break
            current = fastest([self.points[i] for i in pool
                               if self.points[i].stage == "measured"], s.max_drop)
            optimistic = predictions[index].optimistic(s.slack)
            if current is not None and optimistic is not None and \
                    current.latency_s is not None and optimistic > current.latency_s:
                continue
            if self.points[index].stage not in ("measured", "failed"):
                self._measure(index, s.repeat, "measured")
        measured = [p for p in self.points if p.stage == "measured"]
        best = fastest(measured, s.max_drop) or fastest(self.points, s.max_drop)
        return None if best is None else self.evaluate(best.index).index

    def _measure(self, index: int, repeat: int, stage: str) -> Point:
        point = self.points[index]
        assert self.measurer is not None
        self.builds += point.stage == "predicted"
        try:
            seconds = self.measurer(self.candidates[index], repeat)
        except OptcError as exc:
            log.warning("search: candidate %d (%s) failed: %s", index, point.pipeline, exc)
            point = dataclasses.replace(point, stage="failed", note=str(exc))
        else:
            if seconds is not None:
                field = "quick_s" if stage == "quick" else "measured_s"
                point = dataclasses.replace(point, stage=stage, **{field: seconds})
        self.points[index] = point
        return point


def _may_fit(prediction: Prediction, budget_s: float, slack: float) -> bool:
    optimistic = prediction.optimistic(slack)
    return optimistic is None or optimistic <= budget_s


@contextlib.contextmanager
def _no_timer(_name: str) -> Iterator[None]:
    yield
