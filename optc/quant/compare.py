"""Does the dependency augmentation order layers better than the Hessian alone?

``compare_orders`` computes both orders for one precision on calibration data, then
lowers the first ``k`` layers of each for several ``k`` and measures the emitted graphs
on held-out data: at equal numbers of low-bit layers, the better order has the lower
drop (and loss). ``benchmarks/mixed_precision_order.py`` runs it on real models.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from optc.ir.graph import Graph
from optc.quant.calibration import Calibration
from optc.quant.emit import emit
from optc.quant.evaluate import Evaluator, Measure, Metric
from optc.quant.layers import neighbors, quantizable_layers
from optc.quant.numerics import LayerPrecision
from optc.quant.sensitivity import (
    augmented_scores,
    dependency_terms,
    hessian_scores,
    hutchinson_traces,
    sensitivity_order,
)


@dataclasses.dataclass(frozen=True)
class OrderComparison:
    """Held-out measures of the first ``counts[j]`` layers lowered in each order."""

    precision: str
    counts: tuple[int, ...]
    plain_order: tuple[str, ...]
    augmented_order: tuple[str, ...]
    plain: tuple[Measure, ...]
    augmented: tuple[Measure, ...]

    def mean(self, which: str, field: str) -> float:
        rows = self.plain if which == "plain" else self.augmented
        return sum(getattr(m, field) for m in rows) / len(rows)

    def summary(self) -> dict[str, Any]:
        return {
            "precision": self.precision, "counts": list(self.counts),
            "plain_drop": [m.drop for m in self.plain],
            "augmented_drop": [m.drop for m in self.augmented],
            "plain_loss": [m.loss for m in self.plain],
            "augmented_loss": [m.loss for m in self.augmented],
            "mean_drop": {"plain": self.mean("plain", "drop"),
                          "augmented": self.mean("augmented", "drop")},
            "mean_loss": {"plain": self.mean("plain", "loss"),
                          "augmented": self.mean("augmented", "loss")},
            "plain_order": list(self.plain_order),
            "augmented_order": list(self.augmented_order),
        }


def compare_orders(graph: Graph, calibration: Calibration, held_out: Calibration,
                   precision: LayerPrecision, counts: Sequence[int],
                   hutchinson_samples: int = 8, seed: int = 0,
                   metric: Metric = "auto") -> OrderComparison:
    """Plain-Hessian and augmented orders from ``calibration``, measured on ``held_out``."""
    layers = quantizable_layers(graph)
    keys = [layer.key for layer in layers]
    evaluator = Evaluator(graph, calibration, metric)
    ranges = evaluator.value_ranges(graph, sorted({layer.activation for layer in layers}))
    cache: dict = {}

    def loss_of(assignment: Any) -> float:
        return evaluator.measure(emit(graph, layers, assignment, ranges, cache)).loss

    traces = hutchinson_traces(evaluator, graph, layers, hutchinson_samples, seed)
    hessian = hessian_scores(graph, layers, {k: t.value for k, t in traces.items()},
                             precision)
    found = dependency_terms(keys, neighbors(graph, layers), {}, precision, loss_of)
    plain = sensitivity_order(hessian, keys)
    augmented = sensitivity_order(augmented_scores(hessian, found), keys)
    judge = Evaluator(graph, held_out, evaluator.metric)

    def sweep(order: list[str]) -> tuple[Measure, ...]:
        return tuple(judge.measure(emit(graph, layers, {k: precision for k in order[:count]},
                                        ranges, cache)) for count in counts)

    return OrderComparison(precision.label, tuple(counts), tuple(plain), tuple(augmented),
                           sweep(plain), sweep(augmented))
