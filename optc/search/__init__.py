"""Budget-constrained search over the candidates the passes of a pipeline propose.

``search(graph, pipeline, ctx, predictor, scorer, settings, measurer)`` returns every
evaluated candidate (``Point``: accuracy, predicted and measured latency), the one
chosen (the most accurate within the accuracy drop whose measured, else predicted,
latency fits the budget) and the best point when none fits. ``optc.compiler`` wires it
to TVM builds and timings (``compile_model(..., budget_s=...)``). ``prepare`` (the
candidates, predicted and scored) and ``choose`` (the measured choice for one budget)
are its two halves, for callers that ask for several budgets over the same candidates.
"""

from optc.search.candidates import Candidate, expand, pass_options
from optc.search.driver import (
    Measurer,
    Prepared,
    SearchResult,
    Settings,
    choose,
    prepare,
    search,
)
from optc.search.pareto import Point, dominates, fastest, pareto_front, select
from optc.search.scoring import Prediction, Predictor, Scorer

__all__ = ["Candidate", "Measurer", "Point", "Prediction", "Predictor", "Prepared", "Scorer",
           "SearchResult", "Settings", "choose", "dominates", "expand", "fastest",
           "pareto_front", "pass_options", "prepare", "search", "select"]
