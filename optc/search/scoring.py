"""The two cheap scores of a candidate: predicted latency and accuracy (or fidelity).

Latency comes from any registered cost model (``optc.cost.get_cost_model(name)``).
A model may also say how sure it is, in either of two optional forms:

- ``predict(graph) -> (latency_s, ln_std)``: the spread as a standard deviation of
  ``ln(latency)`` (the learned model, ``optc.cost.learned``);
- ``predict_with_uncertainty(graph, target) -> (mean_s, std_s)``: an absolute spread.

The search then treats a candidate as possibly within budget while
``latency * exp(-SIGMAS * ln_std) <= budget`` (an absolute ``std_s`` counts as
``ln_std = std_s / mean_s``); a model without either (the roofline) gets a fixed
``slack`` factor instead (``latency / slack <= budget``), because its error on a
real device is a factor, not a known spread.

Accuracy is ``optc.quant.evaluate.Evaluator`` on the calibration set, against the
input model: task accuracy with labels, else top-1 agreement (logits) or cosine
similarity. A candidate made only of exact passes computes the same function, so it
is given the baseline score without running it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from optc.errors import UserInputError
from optc.ir.graph import Graph
from optc.quant.calibration import resolve_calibration
from optc.quant.evaluate import Evaluator, Measure, Metric
from optc.search.candidates import Candidate
from optc.target import Target

log = logging.getLogger(__name__)

SIGMAS = 2.0
"""How many standard deviations below its mean a prediction may still turn out."""


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Predicted latency (None when the model cannot price the graph, with the reason)."""

    latency_s: float | None
    ln_std: float | None = None
    """Standard deviation of ``ln(latency)`` when the model gives one (0.1 ~ 10 %)."""
    breakdown: Any = dataclasses.field(default=None, repr=False, compare=False)
    reason: str | None = None

    def optimistic(self, slack: float) -> float | None:
        """The lowest latency the candidate plausibly has on the device."""
        if self.latency_s is None:
            return None
        if self.ln_std is not None:
            return self.latency_s * math.exp(-SIGMAS * self.ln_std)
        return self.latency_s / slack


class Predictor:
    """Prices graphs with the cost model ``name`` on ``target`` (or with ``model``, an
    instance not registered under a name, e.g. one just adapted to a device)."""

    def __init__(self, name: str, target: Target, model: Any = None) -> None:
        from optc.cost import get_cost_model  # deferred: sizing shapes imports torch

        self.model = model if model is not None else get_cost_model(name)
        self.name = name
        self.target = target

    def uuid(self) -> str:
        return self.model.uuid()

    def __call__(self, graph: Graph) -> Prediction:
        try:
            breakdown = self.model.breakdown(graph, self.target)
            latency, ln_std = self._uncertainty(graph)
        except UserInputError as exc:  # a missing cost rule: measurement still decides
            log.warning("search: %s cannot price %s: %s", self.name, graph.name, exc)
            return Prediction(None, reason=str(exc))
        return Prediction(breakdown.total.latency_s if latency is None else latency, ln_std,
                          breakdown)

    def _uncertainty(self, graph: Graph) -> tuple[float | None, float | None]:
        """``(latency_s, ln_std)`` from a model that reports its spread, else Nones."""
        absolute = getattr(self.model, "predict_with_uncertainty", None)
        if callable(absolute):
            mean, std = absolute(graph, self.target)
            return float(mean), float(std) / float(mean) if mean > 0 else None
        relative = getattr(self.model, "predict", None)
        if callable(relative):
            found = relative(graph)
            if isinstance(found, tuple) and len(found) == 2:
                return float(found[0]), float(found[1])
        return None, None

    def seconds(self, graph: Graph, _ctx: Any = None) -> float:
        """Predicted seconds (the ``latency`` analysis lossy passes rank assignments by)."""
        return self.model.estimate(graph, self.target).latency_s


class Scorer:
    """Accuracy of candidates on the calibration data, relative to ``reference``."""

    def __init__(self, reference: Graph, calibration: Mapping[str, np.ndarray] | None,
                 metric: Metric = "auto", samples: int = 1 << 30, source: str | None = None,
                 ) -> None:
        data = resolve_calibration(reference, calibration, samples)
        self.evaluator = Evaluator(reference, data, metric)
        self.source = source if source and not data.synthetic else data.source
        self.synthetic = data.synthetic
        self.samples = data.size
        self._exact = Measure(float(self.evaluator.loss(self.evaluator.reference)),
                              self.evaluator.baseline, 0.0)

    @property
    def metric(self) -> str:
        return self.evaluator.metric

    @property
    def baseline(self) -> float:
        return self.evaluator.baseline

    def __call__(self, candidate: Candidate) -> Measure:
        if candidate.exact:
            return self._exact
        return self.evaluator.measure(candidate.graph)

    @property
    def inputs(self) -> Mapping[str, np.ndarray]:
        """The calibration inputs, by graph input name."""
        return self.evaluator.calibration.inputs

    def from_outputs(self, outputs: np.ndarray) -> Measure | None:
        """Score the first output of a compiled candidate on every calibration sample
        (None when it does not cover them all)."""
        out = torch.from_numpy(np.ascontiguousarray(outputs)).float()
        if tuple(out.shape) != tuple(self.evaluator.reference.shape):
            return None
        with torch.no_grad():
            loss = float(self.evaluator.loss(out))
        score = self.evaluator.score(out)
        return Measure(loss, score, self.baseline - score)

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "baseline": self.baseline, "calibration": self.source,
                "synthetic_calibration": self.synthetic, "samples": self.samples}
