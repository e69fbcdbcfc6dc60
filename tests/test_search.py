"""optc.search on real candidates: the digits CNN through fold-batchnorm and mixed-precision,
priced by the roofline of the (quick-calibrated) host, scored on the held-out digits.

Covers the expansion (distinct graphs, the configured pipeline first, the lossy pass
left out as a candidate), the Pareto front, the selection under a budget, and the
budget's text form and the budgeted pipeline.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from test_compile_support import (
    DIGITS,
    DIGITS_TEST,
    cache_dir,  # noqa: F401 (a fixture)
)

import optc
from optc.errors import UserInputError
from optc.pipeline import PassContext, parse_pipeline
from optc.quant import LABELS
from optc.search import (
    Candidate,
    Point,
    Prediction,
    Predictor,
    Scorer,
    Settings,
    choose,
    dominates,
    expand,
    fastest,
    pareto_front,
    prepare,
    search,
    select,
)
from optc.search.candidates import graph_key
from optc.search.request import parse_duration, search_pipeline
from optc.target import get_target

SAMPLES = 150  # of the 450 held-out digits: enough to separate the candidates, quick


@pytest.fixture(scope="module")
def evaluated(cache_dir: Path,  # noqa: F811
              ) -> tuple[list[Candidate], list[Point], Scorer]:
    target = get_target("host", cache_dir=cache_dir / "optc")
    graph = optc.load_onnx(DIGITS)
    data = np.load(DIGITS_TEST)
    calibration = {"input": data["input"][:SAMPLES], LABELS: data["labels"][:SAMPLES]}
    predictor = Predictor("roofline", target)
    # The pass ranks its trials with its own bytes + bit-weighted-MACs proxy here, not the
    # host roofline: the digits CNN is launch-bound, so under a quick calibration taken
    # on a busy machine the roofline may call every quantized trial slower than fp32, the
    # candidates collapse into the float graph, and the expansion has nothing to show.
    ctx = PassContext(calibration=calibration)
    pipeline = parse_pipeline("fold-batchnorm,mixed-precision{calib-samples=64 "
                              "sensitivity-samples=16 hutchinson-samples=2}")
    candidates = expand(graph, pipeline, ctx)
    scorer = Scorer(graph, calibration)
    points = []
    for candidate in candidates:
        measure, prediction = scorer(candidate), predictor(candidate.graph)
        points.append(Point(candidate.index, candidate.text, measure.score, measure.drop,
                            prediction.latency_s))
    return candidates, points, scorer


def test_candidates_are_distinct_verified_graphs(evaluated: tuple) -> None:
    candidates, _, _ = evaluated
    # How many bit sets give distinct graphs depends on the CPU: the pass's proxy skips a
    # width that is not faster here (fp16 without float16 arithmetic; 4-bit weights,
    # stored as int8 codes; int8 3x3 convolutions, a generic int32 loop in optc's code),
    # and such a proposal then yields a graph seen before.
    assert len(candidates) >= 2
    default = "fold-batchnorm,mixed-precision{hutchinson-samples=2 calib-samples=64 " \
              "sensitivity-samples=16}"
    assert default in {c.text for c in candidates} | {t for c in candidates for t in c.same_graph}
    assert len({graph_key(c.graph) for c in candidates}) == len(candidates)
    for candidate in candidates:
        optc.verify(candidate.graph)
        assert [r.name for r in candidate.records] == [p.name for p in candidate.pipeline]
    # the lossy pass left out: the float model with only the exact pass
    exact = [c for c in candidates if c.exact]
    assert [c.text for c in exact] == ["fold-batchnorm"]
    proposals = {p.text() for c in candidates for p in c.pipeline if p.name == "mixed-precision"}
    proposals |= {text for c in candidates for text in c.same_graph}  # merged duplicates
    assert any("bits=16" in text for text in proposals)  # the pass's own candidates
    assert any("act-bits=16" in text for text in proposals)


def test_scores_are_accuracy_on_the_labels(evaluated: tuple) -> None:
    candidates, points, scorer = evaluated
    assert scorer.metric == "accuracy" and scorer.samples == SAMPLES
    assert scorer.baseline > 0.95  # the float model is good: drops mean something
    exact = next(p for p, c in zip(points, candidates, strict=True) if c.exact)
    assert exact.drop == 0.0 and exact.score == scorer.baseline
    lossy = [p for p, c in zip(points, candidates, strict=True) if not c.exact]
    assert all(abs(p.drop) < 0.05 for p in lossy)
    assert all(p.predicted_s is not None and p.predicted_s > 0 for p in points)


def test_pareto_front_on_real_points(evaluated: tuple) -> None:
    _, points, _ = evaluated
    front = pareto_front(points)
    assert front
    assert all(not dominates(q, p) for p in front for q in points)
    for point in points:
        assert point in front or any(dominates(q, point) for q in front)
    latencies = [p.latency_s for p in front]
    assert latencies == sorted(latencies)  # fastest first ...
    scores = [p.score for p in front]
    assert scores == sorted(scores)  # ... so accuracy rises along the front


def test_select_the_most_accurate_that_fits(evaluated: tuple) -> None:
    _, points, _ = evaluated
    slowest = max(p.latency_s for p in points)
    chosen = select(points, slowest, max_drop=1.0)
    assert chosen is not None and chosen.score == max(p.score for p in points)
    quickest = min(p.latency_s for p in points)
    tight = select(points, quickest, max_drop=1.0)
    assert tight is not None and tight.latency_s == quickest
    assert select(points, quickest * 0.99, max_drop=1.0) is None
    # a drop bound of zero keeps only candidates at least as accurate as the model
    strict = select(points, slowest, max_drop=0.0)
    assert strict is not None and strict.drop <= 0.0
    best = fastest(points, max_drop=0.0)
    assert best is not None and best.drop <= 0.0
    assert best.latency_s == min(p.latency_s for p in points if p.drop <= 0.0)


def test_measured_latency_overrides_the_prediction(evaluated: tuple) -> None:
    _, points, _ = evaluated
    slow = max(points, key=lambda p: p.latency_s)
    budget = min(p.latency_s for p in points) * 0.5
    measured = dataclasses.replace(slow, measured_s=budget, stage="measured")
    others = [p for p in points if p.index != slow.index]
    assert select([*others, measured], budget, max_drop=1.0) == measured
    failed = dataclasses.replace(measured, stage="failed")
    assert select([*others, failed], budget, max_drop=1.0) is None
    assert failed not in pareto_front([*others, failed])


def test_one_preparation_serves_several_budgets(cache_dir: Path) -> None:  # noqa: F811
    """``prepare`` once, ``choose`` per budget (what benchmarks/quantize_vs_ort.py does):
    each choice is the one ``search`` makes for that budget, and the preparation is not
    changed by a choice. Without a measurer the choice follows the predictions."""
    target = get_target("host", cache_dir=cache_dir / "optc")
    graph = optc.load_onnx(DIGITS)
    data = np.load(DIGITS_TEST)
    calibration = {"input": data["input"][:64], LABELS: data["labels"][:64]}
    pipeline = parse_pipeline("mixed-precision{calib-samples=64 sensitivity-samples=8 "
                              "hutchinson-samples=1 dependencies=false max-drop=0.05}")
    predictor, scorer = Predictor("roofline", target), Scorer(graph, calibration)
    loose = Settings(budget_s=1.0, max_drop=0.05)
    prepared = prepare(graph, pipeline, PassContext(calibration=calibration), predictor,
                       scorer, loose)
    before = prepared.points
    fitting = [p for p in before if p.drop <= loose.max_drop]
    quickest = min(p.predicted_s for p in fitting)
    for budget in (1.0, quickest, quickest * 0.5):
        settings = dataclasses.replace(loose, budget_s=budget)
        result = choose(prepared, settings, None)
        assert prepared.points == before
        again = search(graph, pipeline, PassContext(calibration=calibration), predictor,
                       scorer, settings, None)
        assert [c.text for c in again.candidates] == [c.text for c in prepared.candidates]
        assert (result.chosen, result.best) == (again.chosen, again.best)
        expected = select(before, budget, loose.max_drop)
        assert result.chosen == (None if expected is None else expected.index)
    assert choose(prepared, loose, None).chosen is not None
    assert choose(prepared, dataclasses.replace(loose, budget_s=quickest * 0.5), None
                  ).chosen is None


def test_a_models_own_spread_replaces_the_slack() -> None:
    """A learned model's ln-latency spread bounds the optimistic latency; the roofline,
    without one, is trusted within a fixed factor."""
    roofline = Prediction(30e-6)
    assert roofline.optimistic(slack=3.0) == pytest.approx(10e-6)
    learned = Prediction(30e-6, ln_std=0.1)
    assert learned.optimistic(slack=3.0) == pytest.approx(30e-6 * math.exp(-0.2))
    assert Prediction(None, reason="no rule").optimistic(3.0) is None


@pytest.mark.parametrize(("text", "seconds"), [("20ms", 0.02), ("1.5s", 1.5), ("500us", 5e-4),
                                               ("500µs", 5e-4), (" 2 ms ", 0.002),
                                               ("1e3ns", 1e-6)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["20", "fast", "20 minutes", "-5ms", "0ms", "ms", "1.2.3s",
                                  ""])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(UserInputError, match="budget"):
        parse_duration(text)


def test_budgeted_pipeline_gets_a_lossy_pass() -> None:
    exact_only = search_pipeline("fold-constants,fold-batchnorm", 0.02)
    assert exact_only.text() == "fold-constants,fold-batchnorm,mixed-precision{max-drop=0.02}"
    explicit = search_pipeline("mixed-precision{max-drop=0.05 bits=8}", 0.02)
    assert explicit.text() == "mixed-precision{max-drop=0.05 bits=8}"  # the user's own wins
    assert search_pipeline("mixed-precision{bits=8}", 0.001).text() == \
        "mixed-precision{max-drop=0.001 bits=8}"
